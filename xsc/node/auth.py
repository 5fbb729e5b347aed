"""Who may call what: the user API needs the token, peers sign, anyone gets /health, /metrics and /openapi.json.

Requests with the token (or a dashboard session) share one rate limit, `node.user_rate_limit` (429 with
Retry-After past it): a leaked token or a runaway script cannot starve the node's peers.  Failed authentications (a
wrong or missing token, a forged or expired session, a login link that does not work) are limited per client address,
`node.auth_failure_limit` (`guarded`): a stranger cannot guess freely, nor lock out a user at another address."""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Iterator

from aiohttp import web

from ..errors import Forbidden, Unauthorized
from ..net.addresses import address_key
from ..ui.core.session import CSRF_HEADER, origin_ok
from .appkeys import AUTH_FAILURES, TOKEN, UI_SESSIONS, USER_LIMITS
from .limits import RateLimiter

PUBLIC_PATHS = frozenset({"/health", "/metrics", "/openapi.json"})
PEER_PREFIX = "/v1/peer/"  # authenticated by request signatures, not the token
FAILURE_BURST = 30  # failed authentications one address may make at once (a mistyped token, a script's stale one)


@web.middleware
async def token_middleware(request: web.Request, handler):
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PEER_PREFIX) or not path.startswith("/v1/"):
        return await handler(request)
    with guarded(request):
        check_token(request)
    # Only once the token checked out: nobody without it can use up the user's rate.
    request.app[USER_LIMITS].check("user", time.monotonic(), "the user's token")
    return await handler(request)


@contextlib.contextmanager
def guarded(request: web.Request, failures: web.AppKey[RateLimiter] = AUTH_FAILURES,
            counted: tuple[type[Exception], ...] = (Unauthorized, Forbidden)) -> Iterator[None]:
    """An authentication whose failure (`counted`: a wrong credential, 401, or a session's without its CSRF key or
    Origin, 403) counts against its client's address (an IPv6 one's /64) in `failures`.  One past its failures is
    refused (429, Retry-After) before its credentials are looked at: a right guess among wrong ones would otherwise
    get in, so its own user at that address waits too; another address does not."""
    limiter, key, now = request.app[failures], address_key(request.remote), time.monotonic()
    limiter.require(key, now, f"address {request.remote}", 1)
    try:
        yield
    except counted:
        limiter.take_up_to(key, now, 1)
        raise


def check_token(request: web.Request) -> None:
    """Raise Unauthorized unless the request carries the node's API token (or a dashboard session)."""
    header = request.headers.get("Authorization", "")
    if not header and check_session(request):
        return
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("this API needs the node's token",
                           hint="send 'Authorization: Bearer <token>' with the token from <data dir>/api-token")
    if not hmac.compare_digest(given.strip().encode(), request.app[TOKEN].encode()):
        raise Unauthorized("wrong API token", hint="use the token from the node's <data dir>/api-token")


def session_cookie(request: web.Request) -> str | None:
    """The dashboard's session cookie of this node, if the request carries one."""
    sessions = request.app.get(UI_SESSIONS)
    return None if sessions is None else request.cookies.get(sessions.cookie)


def check_session(request: web.Request) -> bool:
    """Is the request from a logged-in dashboard? (False without a session cookie.)

    The cookie alone is not enough: cookies are per host, not per port, so a service on another port of this
    host receives it too.  Every request also carries the session's key (CSRF_HEADER), which the login gave
    the page in its address's fragment and the page keeps in its own origin's storage (scheme, host and port:
    nothing else can read it); a request that changes state also comes with this node's Origin."""
    session = session_cookie(request)
    if session is None:
        return False
    sessions = request.app[UI_SESSIONS]
    if not sessions.valid(session, time.time()):
        raise Unauthorized("the dashboard session has expired or is not this node's",
                           hint="log in again with `xsc ui`")
    given = request.headers.get(CSRF_HEADER)
    if not given:
        raise Unauthorized(f"a dashboard request needs the {CSRF_HEADER} header of its session",
                           hint="log in again with `xsc ui`")
    if not sessions.csrf_ok(session, given):
        raise Forbidden(f"the {CSRF_HEADER} header is not this session's", hint="log in again with `xsc ui`")
    if request.method not in ("GET", "HEAD", "OPTIONS") \
            and not origin_ok(request.headers.get("Origin"), request.scheme, request.host):
        raise Forbidden("a change needs the Origin of this node's dashboard", hint="use the dashboard served by this node")
    return True
