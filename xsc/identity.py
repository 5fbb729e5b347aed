"""Ed25519 identities: key files, signing, verifying, the text form of public keys, request signatures."""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import hmac
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .codec import base32
from .errors import (BadRequest, BadRequestSignature, MalformedHeader, MisaddressedRequest, QuotaExceeded,
                     ReplayedRequest, StaleRequest, UnsignedRequest, quoted_id)

NODE_KEY_FILE = "node.key"
CLIENT_KEY_FILE = "client.key"  # the local user's account key, distinct from the node's


def public_id(public_key: bytes) -> str:
    """The short, copyable text form of a public key: unpadded base32, lower case."""
    return _public_id(bytes(public_key))


def parse_public_id(text: str) -> bytes:
    return _parse_public_id(text) if type(text) is str else _parse_public_id.__wrapped__(text)


# Both memoized (bounded): every signed peer request and paid call names the same few ids over and over, and
# base32 is slow Python.  A malformed id raises each time (an exception is never cached).
@functools.lru_cache(maxsize=8192)
def _public_id(public_key: bytes) -> str:
    return base32(public_key)


@functools.lru_cache(maxsize=8192)
def _parse_public_id(text: str) -> bytes:
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (ValueError, base64.binascii.Error) as e:
        raise BadRequest(f"not an account or node id: {quoted_id(text)}") from e
    if len(raw) != 32:
        raise BadRequest(f"not an account or node id: {quoted_id(text)} (must encode 32 bytes)")
    return raw


class Identity:
    """A private key with the operations XSC needs from it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes_raw()
        self.id: str = public_id(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def mint(cls, difficulty: int = 0, progress: Callable[[int], None] | None = None) -> Identity:
        """A fresh identity whose id has at least `difficulty` bits of proof of work (id_difficulty):
        about 2**difficulty keys are tried.  `progress(tried)` is called every PROGRESS_EVERY keys."""
        tried = 0
        while True:
            key = Ed25519PrivateKey.generate()
            if id_difficulty.__wrapped__(key.public_key().public_bytes_raw()) >= difficulty:
                return cls(key)
            tried += 1
            if progress is not None and tried % PROGRESS_EVERY == 0:
                progress(tried)

    @classmethod
    def load_or_create(cls, path: Path, difficulty: int = 0,
                       progress: Callable[[int], None] | None = None) -> Identity:
        """Load a raw 32-byte private key file, creating it (mode 0600) if missing: minted with
        `difficulty` bits of proof of work (an existing key is kept whatever its difficulty)."""
        if path.exists():
            return cls(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))
        identity = cls.mint(difficulty, progress)
        write_secret(path, identity._key.private_bytes_raw())
        return identity

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def private_key(self) -> Ed25519PrivateKey:
        """The key itself: for the node's TLS certificate (xsc/net/tls.py) only."""
        return self._key


# --- proof-of-work node ids (as Storj's: a node id costs work to make, so strangers cannot mint thousands) ----
_POW_TAG = b"XSC-NODE-ID-POW-1\n"
MAX_DIFFICULTY = 40  # bits; 2**40 keys is years of one core's work
PROGRESS_EVERY = 4096


@functools.lru_cache(maxsize=8192)  # every signed request is admitted by its sender's id: the same few, over and over
def id_difficulty(public_key: bytes) -> int:
    """The proof of work of a node id: the leading zero bits of SHA-256(tag || public key)."""
    digest = int.from_bytes(hashlib.sha256(_POW_TAG + public_key).digest(), "big")
    return 256 - digest.bit_length()


# --- grid secrets (closed networks: a peer proves it knows the secret with an HMAC of what it signs) ----------
def grid_proof(secret: str, message: bytes) -> str:
    """HMAC-SHA256 of a signed message under the grid secret, hex."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def check_grid_proof(secret: str, message: bytes, proof: object) -> bool:
    return isinstance(proof, str) and hmac.compare_digest(grid_proof(secret, message), proof)


_PUBLIC_KEYS: dict[bytes, Ed25519PublicKey] = {}  # parsed key objects: a node meets few keys, verifies often
_MAX_PUBLIC_KEYS = 4096


def _public_key(public_key: bytes) -> Ed25519PublicKey:
    key = _PUBLIC_KEYS.get(public_key)
    if key is None:
        key = Ed25519PublicKey.from_public_bytes(public_key)
        if len(_PUBLIC_KEYS) >= _MAX_PUBLIC_KEYS:
            _PUBLIC_KEYS.clear()
        _PUBLIC_KEYS[bytes(public_key)] = key
    return key


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        _public_key(public_key).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def write_secret(path: Path, data: bytes) -> None:
    """Create a file only its owner can read, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- request signatures between nodes ------------------------------------------
# Every node-to-node request carries these headers; docs/peers.md describes the format.
HEADER_NODE = "X-Xsc-Node"  # the sender's public id
HEADER_TO = "X-Xsc-To"  # the receiver's public id, or "*" while the sender does not know it yet
HEADER_TIMESTAMP = "X-Xsc-Timestamp"  # milliseconds since the Unix epoch
HEADER_NONCE = "X-Xsc-Nonce"  # 16 random bytes, hex
HEADER_CONTENT_SHA256 = "X-Xsc-Content-Sha256"  # SHA-256 of the body, hex
HEADER_SIGNATURE = "X-Xsc-Signature"  # Ed25519 over canonical_request(...), hex
HEADER_GRID = "X-Xsc-Grid"  # on closed networks: grid_proof(grid secret, canonical_request(...))
SIGNATURE_WINDOW_MS = 60_000  # a request is fresh while |receiver's clock - its timestamp| <= this
ANY_RECEIVER = "*"
_REQUEST_TAG = b"XSC-PEER-REQUEST-1"
_NONCE_CHARS = frozenset("0123456789abcdef")


def body_digest(body: bytes | Sequence[bytes]) -> str:
    """The SHA-256 of a body in hex; of a body given as its parts, of the parts one after the other."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return hashlib.sha256(body).hexdigest()
    digest = hashlib.sha256()
    for part in body:
        digest.update(part)
    return digest.hexdigest()


def canonical_request(sender: str, receiver: str, method: str, target: str, digest: str, timestamp: int,
                      nonce: str) -> bytes:
    """The bytes a request signature covers; `target` is the raw path with its query string."""
    fields = (sender, receiver, method.upper(), target, digest, str(timestamp), nonce)
    if any("\n" in f for f in fields):
        raise BadRequestSignature("a signed request field contains a line break")
    return b"\n".join([_REQUEST_TAG, *(f.encode() for f in fields)])


def sign_request(identity: Identity, method: str, target: str, body: bytes | Sequence[bytes] = b"", *,
                 receiver: str | None = None, now_ms: int | None = None, nonce: str | None = None,
                 grid_secret: str = "") -> dict[str, str]:
    """The headers that make a request to a peer verifiable (receiver: its id, when the sender knows it);
    with a grid secret, also the proof that the sender knows it (HEADER_GRID)."""
    timestamp = int(time.time() * 1000) if now_ms is None else now_ms
    nonce = nonce or os.urandom(16).hex()
    receiver = receiver or ANY_RECEIVER
    digest = body_digest(body)
    message = canonical_request(identity.id, receiver, method, target, digest, timestamp, nonce)
    headers = {HEADER_NODE: identity.id, HEADER_TO: receiver, HEADER_TIMESTAMP: str(timestamp), HEADER_NONCE: nonce,
               HEADER_CONTENT_SHA256: digest, HEADER_SIGNATURE: identity.sign(message).hex()}
    if grid_secret:
        headers[HEADER_GRID] = grid_proof(grid_secret, message)
    return headers


def channel_request(identity: Identity, method: str, target: str, *, receiver: str | None = None,
                    grid_secret: str = "") -> dict[str, str]:
    """The headers of a request sent on a connection where identity's client certificate proves the sender
    (xsc/net/tls.py): who sends, to whom, and on a closed network the grid proof; nothing per request to sign."""
    receiver = receiver or ANY_RECEIVER
    headers = {HEADER_NODE: identity.id, HEADER_TO: receiver}
    if grid_secret:
        headers[HEADER_GRID] = grid_proof(grid_secret, canonical_request(identity.id, receiver, method, target,
                                                                         "", 0, ""))
    return headers


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request signature proves: who sent it, to whom, when, and which body."""

    sender: str
    sender_key: bytes
    receiver: str
    timestamp: int
    nonce: str
    digest: str
    method: str = ""
    target: str = ""
    channel: bool = False  # proven by the connection's client certificate: no signature, nonce or digest

    def message(self) -> bytes:
        """The canonical bytes its signature covers (what a grid proof covers too)."""
        return canonical_request(self.sender, self.receiver, self.method, self.target, self.digest, self.timestamp,
                                 self.nonce)


def verify_request(headers: Mapping[str, str], method: str, target: str, *, receiver: str,
                   now_ms: int | None = None) -> SignedRequest:
    """Check a request's signature headers (not its body: compare `digest` with the body read).

    Raises UnsignedRequest, BadRequestSignature, MisaddressedRequest or StaleRequest; the replay
    check is the caller's (ReplayGuard), since only it knows which nonces it has seen."""
    names = (HEADER_NODE, HEADER_TO, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_CONTENT_SHA256, HEADER_SIGNATURE)
    missing = [n for n in names if not headers.get(n)]
    if len(missing) == len(names):
        raise UnsignedRequest("peer requests must be signed",
                              hint="sign with the sender node's key; see docs/peers.md", missing=missing)
    if missing:
        raise UnsignedRequest(f"the request signature lacks {', '.join(missing)}", missing=missing)
    sender, to, stamp, nonce, digest, signature = (headers[n] for n in names)
    try:
        sender_key = parse_public_id(sender)
    except BadRequest:
        raise BadRequestSignature(f"{HEADER_NODE} is not a node id: {sender[:80]!r}") from None
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 16:  # "²".isdigit() is True
        raise MalformedHeader(f"{HEADER_TIMESTAMP} must be milliseconds since the epoch in ASCII digits, "
                              f"not {stamp[:40]!r}", hint="send int(time.time() * 1000) as decimal ASCII")
    if not 16 <= len(nonce) <= 64 or not set(nonce) <= _NONCE_CHARS:
        raise BadRequestSignature(f"{HEADER_NONCE} must be 16 to 64 lower-case hex digits")
    if len(digest) != 64 or not set(digest) <= _NONCE_CHARS:
        raise BadRequestSignature(f"{HEADER_CONTENT_SHA256} must be 64 lower-case hex digits")
    try:
        raw_signature = bytes.fromhex(signature)
    except ValueError:
        raise BadRequestSignature(f"{HEADER_SIGNATURE} is not hex") from None
    timestamp = int(stamp)
    if not verify(sender_key, raw_signature, canonical_request(sender, to, method, target, digest, timestamp, nonce)):
        raise BadRequestSignature(f"the request signature does not verify under the key of node {sender}",
                                  hint="the signature covers method, path with query, body digest, timestamp "
                                       "and nonce; see docs/peers.md")
    if to not in (ANY_RECEIVER, receiver):
        raise MisaddressedRequest(f"this request was signed for node {to}, not for this node ({receiver})")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - timestamp) > SIGNATURE_WINDOW_MS:
        raise StaleRequest(f"the request timestamp is {abs(now - timestamp) / 1000:.1f} s away from this node's "
                           f"clock (at most {SIGNATURE_WINDOW_MS // 1000} s allowed)",
                           hint="sign each request when sending it, and keep node clocks in sync (NTP)")
    return SignedRequest(sender, sender_key, to, timestamp, nonce, digest, method, target)


def verify_peer_request(headers: Mapping[str, str], method: str, target: str, *, receiver: str,
                        channel: str | None, now_ms: int | None = None) -> SignedRequest:
    """Who sent a peer request: the node whose client certificate its connection presented (`channel`), or
    the node that signed it.  A connection with a certificate never speaks for another node, signed or not."""
    if channel is not None and HEADER_SIGNATURE not in headers:
        return verify_channel_request(headers, method, target, receiver=receiver, channel=channel)
    verified = verify_request(headers, method, target, receiver=receiver, now_ms=now_ms)
    if channel is not None and verified.sender != channel:
        raise BadRequestSignature(f"the request is signed by node {verified.sender}, but its connection's "
                                  f"certificate is node {channel}",
                                  hint="send each node's requests on connections with its own client certificate")
    return verified


def verify_channel_request(headers: Mapping[str, str], method: str, target: str, *, receiver: str,
                           channel: str) -> SignedRequest:
    """A request without a signature on a connection whose client certificate proved node `channel`: it must
    claim that node as its sender (a connection cannot change who speaks on it).  Raises UnsignedRequest,
    BadRequestSignature or MisaddressedRequest."""
    sender, to = headers.get(HEADER_NODE), headers.get(HEADER_TO)
    if not sender or not to:
        raise UnsignedRequest(f"a peer request names its sender ({HEADER_NODE}) and receiver ({HEADER_TO})",
                              hint="see docs/peers.md", missing=[n for n in (HEADER_NODE, HEADER_TO)
                                                                 if not headers.get(n)])
    if sender != channel:
        raise BadRequestSignature(f"the request claims to come from node {sender[:80]}, but its connection's "
                                  f"certificate is node {channel}",
                                  hint="send each node's requests on connections with its own client certificate")
    if to not in (ANY_RECEIVER, receiver):
        raise MisaddressedRequest(f"this request was sent for node {to}, not for this node ({receiver})")
    # Timestamp 0, no nonce, no digest: what its grid proof covers (channel_request).
    return SignedRequest(sender, parse_public_id(sender), to, 0, "", "", method, target, channel=True)


REPLAY_CAPACITY = 200_000  # nonces remembered in all
REPLAY_PER_SENDER = 20_000  # nonces one sender may have remembered at once (~330 requests/s over the window)


class _Sender:
    """What the guard remembers of one sender: its fresh nonces, the oldest first, and its floor."""

    __slots__ = ("nonces", "oldest", "floor")

    def __init__(self) -> None:
        self.nonces: dict[str, int] = {}  # nonce -> timestamp
        self.oldest: list[tuple[int, str]] = []  # a heap of (timestamp, nonce); may hold forgotten ones
        self.floor = -1  # requests stamped at or before it are refused: their nonces may have been forgotten

    def pop_oldest(self) -> tuple[int, str] | None:
        while self.oldest:
            timestamp, nonce = heapq.heappop(self.oldest)
            if self.nonces.get(nonce) == timestamp:
                return timestamp, nonce
        return None

    def peek_oldest(self) -> int | None:
        while self.oldest and self.nonces.get(self.oldest[0][1]) != self.oldest[0][0]:
            heapq.heappop(self.oldest)
        return self.oldest[0][0] if self.oldest else None


class ReplayGuard:
    """The nonces of fresh requests, per sender, each kept until its timestamp leaves the window.

    A request is accepted at most once: its nonce is remembered for as long as its timestamp
    would pass the freshness check, so afterwards the stale check refuses it instead.

    Memory is bounded, and no sender can lock others out:
    - one sender has at most `per_sender` nonces remembered; past that it gets QuotaExceeded
      (429, with the seconds until its oldest nonce is forgotten) and the others go on;
    - all senders together have at most `capacity`; when it is full, the sender holding the most
      gives up its oldest nonce, and its *floor* rises to that nonce's timestamp: its requests
      stamped at or before the floor are refused, so forgetting a nonce never lets it be replayed.
      Senders whose last nonce was forgotten keep only their floor; past `capacity` of those, their
      floors fold into one floor for every sender (the oldest first)."""

    def __init__(self, window_ms: int = SIGNATURE_WINDOW_MS, capacity: int = REPLAY_CAPACITY,
                 per_sender: int = REPLAY_PER_SENDER) -> None:
        if capacity < 1 or per_sender < 1:
            raise ValueError("the replay guard needs room for at least one nonce per sender")
        self.window_ms = window_ms
        self.capacity = capacity
        self.per_sender = per_sender
        self._senders: dict[str, _Sender] = {}
        self._size = 0
        self._expiry: list[tuple[int, str, str, int]] = []  # a heap of (expiry, sender, nonce, timestamp)
        self._by_count: dict[int, set[str]] = {}  # how many nonces -> the senders holding that many
        self._most = 0
        self._floor_only: dict[str, None] = {}  # senders that hold only a floor, the oldest first
        self._floor = -1  # the floor of every sender

    def __len__(self) -> int:
        return self._size

    def check(self, sender: str, nonce: str, timestamp: int, now_ms: int) -> None:
        """Remember (sender, nonce); raise ReplayedRequest if it is already remembered (or may have been),
        QuotaExceeded if the sender has its quota of nonces remembered."""
        self._evict(now_ms)
        record = self._senders.get(sender)
        if timestamp <= self._floor or (record is not None and timestamp <= record.floor):
            raise ReplayedRequest("this request is older than requests this node had to forget under load, "
                                  "so it may be a replay", hint="sign the request afresh and send it again")
        if record is not None and nonce in record.nonces:
            raise ReplayedRequest("this request was already received (its nonce was seen within the window)",
                                  hint="sign every request afresh, with a new random nonce")
        if record is not None and len(record.nonces) >= self.per_sender:
            oldest = record.peek_oldest()
            wait_ms = (oldest if oldest is not None else timestamp) + self.window_ms - now_ms
            retry = max(1, -(-wait_ms // 1000))
            raise QuotaExceeded(f"node {sender} sent {len(record.nonces)} signed requests within the last "
                                  f"{self.window_ms // 1000} s, its quota here", retry_after=retry,
                                  hint=f"slow down; retry in {retry} s")
        self._floor_only.pop(sender, None)  # about to hold a nonce again: its floor is not folded away
        while self._size >= self.capacity:
            self._forget_one()  # (which may be this sender's own oldest nonce)
        self._floor_only.pop(sender, None)
        record = self._senders.get(sender)
        if record is None:
            record = self._senders[sender] = _Sender()
        self._recount(sender, len(record.nonces), len(record.nonces) + 1)
        record.nonces[nonce] = timestamp
        heapq.heappush(record.oldest, (timestamp, nonce))
        heapq.heappush(self._expiry, (timestamp + self.window_ms, sender, nonce, timestamp))
        self._size += 1
        if len(self._expiry) > 2 * self.capacity + 1024:
            self._compact()

    def _recount(self, sender: str, before: int, after: int) -> None:
        if before:
            group = self._by_count[before]
            group.discard(sender)
            if not group:
                del self._by_count[before]
        if after:
            self._by_count.setdefault(after, set()).add(sender)
            self._most = max(self._most, after)

    def _remove(self, sender: str, record: _Sender, nonce: str) -> None:
        count = len(record.nonces)
        del record.nonces[nonce]
        self._recount(sender, count, count - 1)
        self._size -= 1

    def _forget_one(self) -> None:
        """Make room: the sender holding the most nonces forgets its oldest, and its floor rises to it."""
        while self._most and self._most not in self._by_count:
            self._most -= 1
        sender = next(iter(self._by_count[self._most]))
        record = self._senders[sender]
        oldest = record.pop_oldest()
        assert oldest is not None
        timestamp, nonce = oldest
        record.floor = max(record.floor, timestamp)
        self._remove(sender, record, nonce)
        if not record.nonces:
            self._keep_floor(sender)

    def _keep_floor(self, sender: str) -> None:
        """`sender` holds no nonce any more, only its floor; past `capacity` of those, the oldest folds
        into the floor of every sender."""
        self._floor_only[sender] = None
        if len(self._floor_only) > self.capacity:
            folded = next(iter(self._floor_only))
            del self._floor_only[folded]
            self._floor = max(self._floor, self._senders.pop(folded).floor)

    def _evict(self, now_ms: int) -> None:
        while self._expiry and self._expiry[0][0] < now_ms:
            _, sender, nonce, timestamp = heapq.heappop(self._expiry)
            record = self._senders.get(sender)
            if record is None:
                continue
            if record.nonces.get(nonce) == timestamp:
                self._remove(sender, record, nonce)
            if record.nonces:
                continue
            if record.floor + self.window_ms < now_ms:
                del self._senders[sender]  # its floor is older than the window: the stale check covers it
                self._floor_only.pop(sender, None)
            elif sender not in self._floor_only:
                record.oldest.clear()
                self._keep_floor(sender)

    def _compact(self) -> None:
        self._expiry = [(t + self.window_ms, s, n, t) for s, r in self._senders.items() for n, t in r.nonces.items()]
        heapq.heapify(self._expiry)
        for record in self._senders.values():
            record.oldest = [(t, n) for n, t in record.nonces.items()]
            heapq.heapify(record.oldest)
