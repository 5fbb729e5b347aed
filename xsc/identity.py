"""Ed25519 identities: key files, signing, verifying, the text form of public keys, request signatures."""

from __future__ import annotations

import base64
import hashlib
import heapq
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import (BadRequest, BadRequestSignature, MisaddressedRequest, ReplayCacheFull, ReplayedRequest,
                     StaleRequest, UnsignedRequest)

NODE_KEY_FILE = "node.key"
CLIENT_KEY_FILE = "client.key"  # the local user's account key, distinct from the node's


def public_id(public_key: bytes) -> str:
    """The short, copyable text form of a public key: unpadded base32, lower case."""
    return base64.b32encode(public_key).decode().rstrip("=").lower()


def parse_public_id(text: str) -> bytes:
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (ValueError, base64.binascii.Error) as e:
        raise BadRequest(f"not an account or node id: {text!r}") from e
    if len(raw) != 32:
        raise BadRequest(f"not an account or node id: {text!r} (must encode 32 bytes)")
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
    def load_or_create(cls, path: Path) -> Identity:
        """Load a raw 32-byte private key file, creating it (mode 0600) if missing."""
        if path.exists():
            return cls(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))
        identity = cls.generate()
        write_secret(path, identity._key.private_bytes_raw())
        return identity

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


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
SIGNATURE_WINDOW_MS = 60_000  # a request is fresh while |receiver's clock - its timestamp| <= this
ANY_RECEIVER = "*"
_REQUEST_TAG = b"XSC-PEER-REQUEST-1"
_NONCE_CHARS = frozenset("0123456789abcdef")


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(sender: str, receiver: str, method: str, target: str, digest: str, timestamp: int,
                      nonce: str) -> bytes:
    """The bytes a request signature covers; `target` is the raw path with its query string."""
    fields = (sender, receiver, method.upper(), target, digest, str(timestamp), nonce)
    if any("\n" in f for f in fields):
        raise BadRequestSignature("a signed request field contains a line break")
    return b"\n".join([_REQUEST_TAG, *(f.encode() for f in fields)])


def sign_request(identity: Identity, method: str, target: str, body: bytes = b"", *, receiver: str | None = None,
                 now_ms: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """The headers that make a request to a peer verifiable (receiver: its id, when the sender knows it)."""
    timestamp = int(time.time() * 1000) if now_ms is None else now_ms
    nonce = nonce or os.urandom(16).hex()
    receiver = receiver or ANY_RECEIVER
    digest = body_digest(body)
    message = canonical_request(identity.id, receiver, method, target, digest, timestamp, nonce)
    return {HEADER_NODE: identity.id, HEADER_TO: receiver, HEADER_TIMESTAMP: str(timestamp), HEADER_NONCE: nonce,
            HEADER_CONTENT_SHA256: digest, HEADER_SIGNATURE: identity.sign(message).hex()}


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request signature proves: who sent it, to whom, when, and which body."""

    sender: str
    sender_key: bytes
    receiver: str
    timestamp: int
    nonce: str
    digest: str


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
    if not stamp.isdigit() or len(stamp) > 16:
        raise BadRequestSignature(f"{HEADER_TIMESTAMP} must be milliseconds since the epoch, not {stamp[:40]!r}")
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
    return SignedRequest(sender, sender_key, to, timestamp, nonce, digest)


class ReplayGuard:
    """The nonces of fresh requests, each kept until its timestamp leaves the window.

    A request is accepted at most once: its nonce is remembered for as long as its timestamp
    would pass the freshness check, so afterwards the stale check refuses it instead.  Memory
    is bounded by the request rate over two windows, and by `capacity` in any case."""

    def __init__(self, window_ms: int = SIGNATURE_WINDOW_MS, capacity: int = 200_000) -> None:
        self.window_ms = window_ms
        self.capacity = capacity
        self._expiry: dict[tuple[str, str], int] = {}
        self._queue: list[tuple[int, tuple[str, str]]] = []  # a heap of (expiry, key)

    def __len__(self) -> int:
        return len(self._expiry)

    def check(self, sender: str, nonce: str, timestamp: int, now_ms: int) -> None:
        """Remember (sender, nonce); raise ReplayedRequest if it is already remembered."""
        self._evict(now_ms)
        key = (sender, nonce)
        if key in self._expiry:
            raise ReplayedRequest("this request was already received (its nonce was seen within the window)",
                                  hint="sign every request afresh, with a new random nonce")
        if len(self._expiry) >= self.capacity:
            raise ReplayCacheFull("too many signed requests within the replay window",
                                  hint=f"retry in a few seconds; at most {self.capacity} per "
                                       f"{self.window_ms // 1000} s are remembered")
        expiry = timestamp + self.window_ms
        self._expiry[key] = expiry
        heapq.heappush(self._queue, (expiry, key))

    def _evict(self, now_ms: int) -> None:
        while self._queue and self._queue[0][0] < now_ms:
            _, key = heapq.heappop(self._queue)
            self._expiry.pop(key, None)
