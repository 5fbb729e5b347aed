"""Signed node descriptors: who a node is, where it listens and what it offers (pure: no I/O).

A descriptor is self-certifying: its `id` is the node's public key, and only that key's
signature makes it valid, so descriptors can be passed on by anyone without being forged.
When two valid descriptors of one node meet, the newer timestamp wins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import codec
from ...config import normalize_peer_url
from ...errors import BadRequest, InvalidDescriptor
from ...identity import Identity, grid_proof, parse_public_id, verify

_TAG = b"XSC-NODE-DESCRIPTOR-1\n"
MAX_FUTURE_MS = 10 * 60_000  # a descriptor dated further ahead is refused: it would win every merge for that long
MAX_TEXT = 200
FIELDS = ("id", "url", "capacity", "free", "version", "timestamp")


@dataclass(frozen=True)
class NodeDescriptor:
    id: str  # the node's public key, in its text form
    url: str  # where the node answers: http://HOST:PORT
    capacity: int  # bytes of block data it offers to hold
    free: int  # of which not yet used, when it signed this
    version: str  # its software version
    timestamp: int  # when it signed this, ms since the epoch
    signature: str  # Ed25519 over signed_bytes(), hex
    grid: str = ""  # on a closed network: HMAC-SHA256 of signed_bytes() under the grid secret, hex (else absent)

    @property
    def key(self) -> bytes:
        return parse_public_id(self.id)

    def to_json(self) -> dict[str, Any]:
        # Spelled out rather than dataclasses.asdict (which deep-copies every field): a gossip message holds up to
        # 1,000 of these, made on the event loop.
        out = {"id": self.id, "url": self.url, "capacity": self.capacity, "free": self.free, "version": self.version,
               "timestamp": self.timestamp, "signature": self.signature}
        if self.grid:
            out["grid"] = self.grid
        return out

    def encode(self) -> bytes:
        return codec.canonical(self.to_json())


def signed_bytes(fields: dict[str, Any]) -> bytes:
    """The canonical form a descriptor's signature covers: its fields (not the signature) as sorted, compact JSON."""
    return _TAG + codec.canonical({k: fields[k] for k in FIELDS})


def make_descriptor(identity: Identity, *, url: str, capacity: int, free: int, version: str,
                    timestamp: int, grid_secret: str = "") -> NodeDescriptor:
    fields = {"id": identity.id, "url": url, "capacity": capacity, "free": free, "version": version,
              "timestamp": timestamp}
    message = signed_bytes(fields)
    return NodeDescriptor(**fields, signature=identity.sign(message).hex(),
                          grid=grid_proof(grid_secret, message) if grid_secret else "")


def _int(value: Any, name: str) -> int:
    # Peers are listed in JSON (GET /v1/peers, the dashboard): a reader holding numbers as doubles reads a larger
    # integer as another number.
    if type(value) is not int or not 0 <= value <= codec.MAX_JSON_INT:
        raise InvalidDescriptor(f"descriptor field {name} must be a non-negative integer of at most "
                                f"{codec.MAX_JSON_INT:,} (2^53 - 1)")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or not value.isascii() \
            or not value.isprintable():
        raise InvalidDescriptor(f"descriptor field {name} must be printable ASCII of 1 to {MAX_TEXT} characters")
    return value


def parse_descriptor(obj: Any, *, now_ms: int) -> NodeDescriptor:
    """A valid descriptor from its JSON form, or InvalidDescriptor saying what is wrong."""
    if not isinstance(obj, dict):
        raise InvalidDescriptor("a descriptor must be a JSON object")
    extra = set(obj) - {*FIELDS, "signature", "grid"}
    missing = [f for f in (*FIELDS, "signature") if f not in obj]
    if missing or extra:
        raise InvalidDescriptor(f"descriptor fields missing: {missing}, unknown: {sorted(extra)}",
                                hint=f"a descriptor has exactly {', '.join(FIELDS)} and signature (and grid, on "
                                     "a closed network)")
    node_id = _text(obj["id"], "id")
    try:
        key = parse_public_id(node_id)
    except BadRequest:
        raise InvalidDescriptor(f"descriptor id is not a node id: {node_id[:60]!r}") from None
    url = _text(obj["url"], "url")
    try:
        if normalize_peer_url(url) != url:
            raise ValueError(url)
    except ValueError:
        raise InvalidDescriptor(f"descriptor of node {node_id} has a bad url {url!r}",
                                hint="use http://HOST:PORT, without a trailing slash") from None
    capacity, free, timestamp = _int(obj["capacity"], "capacity"), _int(obj["free"], "free"), \
        _int(obj["timestamp"], "timestamp")
    version = _text(obj["version"], "version")
    try:
        signature = bytes.fromhex(_text(obj["signature"], "signature"))
    except ValueError:
        raise InvalidDescriptor(f"descriptor of node {node_id} has a signature that is not hex") from None
    if timestamp > now_ms + MAX_FUTURE_MS:
        raise InvalidDescriptor(f"descriptor of node {node_id} is dated {(timestamp - now_ms) // 1000} s in the future",
                                hint="keep node clocks in sync (NTP)", node=node_id)
    if free > capacity:
        raise InvalidDescriptor(f"descriptor of node {node_id} claims more free space than capacity")
    grid = obj.get("grid", "")
    try:
        grid = bytes.fromhex(grid).hex() if isinstance(grid, str) and len(grid) in (0, 64) else None
    except ValueError:
        grid = None
    if grid is None:
        raise InvalidDescriptor(f"descriptor of node {node_id} has a grid proof that is not 64 hex digits")
    descriptor = NodeDescriptor(id=node_id, url=url, capacity=capacity, free=free, version=version,
                                timestamp=timestamp, signature=signature.hex(), grid=grid)
    form = descriptor.to_json()
    if obj != form:  # every field's type is checked already: equal is the same spelling
        raise InvalidDescriptor(f"descriptor of node {node_id}: {codec.respelled(obj, form)}",
                                hint="a signed descriptor comes in the one form its node writes (hex in lower case, "
                                     "a grid field only with a proof in it); see docs/peers.md", node=node_id)
    if not verify(key, signature, signed_bytes(obj)):
        raise InvalidDescriptor(f"descriptor of node {node_id} is not signed by that node's key",
                                hint="a descriptor's id must be the public key that signed it", node=node_id)
    return descriptor


def newer(a: NodeDescriptor, b: NodeDescriptor | None) -> bool:
    """Does `a` replace `b`?  Newest timestamp wins; ties go to the larger signature, so every node agrees."""
    if b is None:
        return True
    return (a.timestamp, a.signature) > (b.timestamp, b.signature)


def newsworthy(a: NodeDescriptor, b: NodeDescriptor | None) -> bool:
    """Worth passing on at once: a node not known before, or one that moved.  (A mere re-signing is not.)"""
    return b is None or a.url != b.url


__all__ = ["NodeDescriptor", "make_descriptor", "parse_descriptor", "newer", "newsworthy", "signed_bytes"]
