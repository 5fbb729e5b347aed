"""Dashboard login: one-time login links, session cookies and CSRF tokens (pure: no I/O; clocks are passed in).

The flow (docs/dashboard.md):
1. `xsc ui` asks the node (with the API token) for a login link: `/ui/login?link=<id>.<expires>.<mac>`,
   an HMAC under the node's *link key*, valid for LINK_SECONDS and usable once.
2. Opening it checks the MAC and the expiry, marks the id used (`UsedLinks`), sets the session cookie
   (`<id>.<expires>.<mac>` under the *session key*; HttpOnly, SameSite=Strict), and redirects to
   `/ui/#key=<the session's CSRF token>`: a fragment is never sent to a server.  The page moves the token to
   its origin's localStorage (scheme, host and port: a service on another port of the host, which receives the
   cookie, cannot read it), takes it out of the address, and sends it in the `X-XSC-CSRF` header of every
   request.
3. The user API accepts the session cookie where it accepts the token, with that header on every request;
   for methods other than GET and HEAD it also wants this node's Origin.

Keys come from the node's API token (`derive_keys`): rotating the token logs every session out.  The link
key also mixes in a per-process nonce, so a link minted before a restart cannot be used after it (the set
of used links lives in memory)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from ...units import is_whole_number

LINK_SECONDS = 120  # a login link is good for two minutes
SESSION_SECONDS = 12 * 3600  # a session lasts a working day
CSRF_HEADER = "X-XSC-CSRF"
MAX_USED_LINKS = 10_000  # a bound on what UsedLinks remembers (links expire long before it fills)


@dataclass(frozen=True)
class Keys:
    link: bytes
    session: bytes


def derive_keys(api_token: str, boot_nonce: bytes) -> Keys:
    """The link key (this process only) and the session key (lasts while the token does)."""
    root = hashlib.sha256(b"xsc/ui/v1\0" + api_token.encode()).digest()
    return Keys(link=hmac.new(root, b"link\0" + boot_nonce, hashlib.sha256).digest(),
                session=hmac.new(root, b"session", hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(key: bytes, purpose: str, ident: str, expires: int) -> str:
    return _b64(hmac.new(key, f"{purpose}\0{ident}\0{expires}".encode(), hashlib.sha256).digest()[:24])


def _sign(key: bytes, purpose: str, expires: int) -> str:
    ident = _b64(secrets.token_bytes(16))
    return f"{ident}.{expires}.{_mac(key, purpose, ident, expires)}"


def _check(key: bytes, purpose: str, value: str, now: float) -> tuple[str, int] | None:
    """(id, expires) of a valid, unexpired signed value; None otherwise."""
    if not isinstance(value, str) or len(value) > 200:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not is_whole_number(parts[1]) or len(parts[1]) > 12:
        return None
    ident, expires, mac = parts[0], int(parts[1]), parts[2]
    if not hmac.compare_digest(mac.encode(), _mac(key, purpose, ident, expires).encode()):
        return None
    if expires <= now:
        return None
    return ident, expires


def new_link(keys: Keys, now: float, seconds: int = LINK_SECONDS) -> str:
    """A fresh login link value (the `link` query parameter of /ui/login)."""
    return _sign(keys.link, "link", int(now) + seconds)


def check_link(keys: Keys, value: str, now: float) -> tuple[str, int] | None:
    return _check(keys.link, "link", value, now)


def new_session(keys: Keys, now: float, seconds: int = SESSION_SECONDS) -> str:
    return _sign(keys.session, "session", int(now) + seconds)


def check_session(keys: Keys, value: str | None, now: float) -> tuple[str, int] | None:
    return None if not value else _check(keys.session, "session", value, now)


def csrf_token(keys: Keys, session: str) -> str:
    """The CSRF token that goes with a session (derived: nothing to store)."""
    ident = session.split(".", 1)[0]
    return _b64(hmac.new(keys.session, b"csrf\0" + ident.encode(), hashlib.sha256).digest()[:24])


def check_csrf(keys: Keys, session: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), csrf_token(keys, session).encode())


def cookie_name(port: int | None) -> str:
    """The session cookie's name: cookies are per host, not per port, so each node on a host (a devnet)
    gets its own instead of overwriting another node's."""
    return f"xsc_session_{port}" if port else "xsc_session"


def origin_ok(origin: str | None, scheme: str, host: str) -> bool:
    """A state-changing request of a dashboard session must come from a page of this node: its Origin, sent."""
    return origin is not None and origin == f"{scheme}://{host}"


class UsedLinks:
    """Ids of login links already used, kept until they expire (a link works once)."""

    def __init__(self, limit: int = MAX_USED_LINKS) -> None:
        self._used: dict[str, int] = {}
        self._limit = limit

    def use(self, ident: str, expires: int, now: float) -> bool:
        """Mark the link used; False if it was used already (or too many live links to remember one more)."""
        if len(self._used) >= self._limit // 2:
            self._used = {i: e for i, e in self._used.items() if e > now}
        if ident in self._used:
            return False
        if len(self._used) >= self._limit:
            return False  # refuse rather than forget a used link that is still valid
        self._used[ident] = expires
        return True

    def __len__(self) -> int:
        return len(self._used)


class Sessions:
    """A node's dashboard logins: mints links, turns a link into a session once, checks sessions and CSRF."""

    def __init__(self, api_token: str, *, port: int | None = None, boot_nonce: bytes | None = None) -> None:
        self.cookie = cookie_name(port)
        self.keys = derive_keys(api_token, boot_nonce if boot_nonce is not None else secrets.token_bytes(16))
        self.used = UsedLinks()

    def link(self, now: float) -> tuple[str, int]:
        """(link value, expiry in seconds since the epoch)."""
        value = new_link(self.keys, now)
        return value, int(value.split(".")[1])

    def login(self, link: str, now: float) -> str | None:
        """The new session for a valid link never used before; None for a bad, expired or used link."""
        checked = check_link(self.keys, link, now)
        if checked is None or not self.used.use(*checked, now):
            return None
        return new_session(self.keys, now)

    def valid(self, session: str | None, now: float) -> bool:
        return check_session(self.keys, session, now) is not None

    def csrf(self, session: str) -> str:
        return csrf_token(self.keys, session)

    def csrf_ok(self, session: str, given: str | None) -> bool:
        return check_csrf(self.keys, session, given)
