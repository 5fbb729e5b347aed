"""What the hash table holds, and the checks a value passes before it is stored or believed (pure: no I/O).

A key is 20 bytes (the table's id space).  Three kinds of record live under keys:

- a node record, under `node_key(node_id)`: that node's signed descriptor (xsc.peers.core.descriptors), so a node is
  found by its id without knowing it beforehand;
- a holders record, under `holders_key(si)`: the placement of a file's shares, signed by the node that placed
  them, so a capability is read from a node that never stored it;
- a provider record, under `providers_key(kind, slot)`: a node that offers a kind of capacity, signed by it.  The
  providers of a kind are spread over PROVIDER_SLOTS keys (a node's slot is a hash of its id), so no one key holds
  them all: a lookup of a few random slots finds a sample of them, as many as a put needs.

A value is a bundle: a JSON list of records, at most MAX_RECORDS, at most MAX_VALUE bytes in canonical form (it
travels in one datagram).  A bundle is merged, never replaced: a stranger who stores under a key adds its own
record beside the others; it cannot remove theirs.  Per signer only the newest record is kept, and when a bundle is
full the oldest records leave.  Nothing a record says is trusted beyond its signature: a holders record only says
where to ask, and every share found there is checked against the capability as any share is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ... import codec
from ...errors import BadRequest, InvalidDescriptor, XscError
from ...identity import Identity, id_difficulty, parse_public_id, verify
from ...peers.core.descriptors import NodeDescriptor, parse_descriptor

KEY_BYTES = 20
MAX_RECORDS = 8  # records one key keeps (distinct signers)
MAX_VALUE = 6_000  # bytes of a bundle: it must fit one datagram (rpcudp refuses more than 8 KiB)
MAX_FUTURE_MS = 10 * 60_000  # a record dated further ahead is refused: it would win every merge that long
SHARES = 6  # shares a holders record places (erasure.N)
PROVIDER_SLOTS = 64  # keys the providers of one kind are spread over
KINDS = ("storage", "compute")
_HOLDERS_TAG = b"XSC-DHT-HOLDERS-1\n"
_PROVIDER_TAG = b"XSC-DHT-PROVIDER-1\n"


class InvalidRecord(BadRequest):
    """A value offered to the hash table that is not a bundle of valid records for its key."""


def node_key(node_id: str) -> bytes:
    return hashlib.sha256(b"xsc-dht-node\n" + parse_public_id(node_id)).digest()[:KEY_BYTES]


def holders_key(si: bytes) -> bytes:
    return hashlib.sha256(b"xsc-dht-holders\n" + si).digest()[:KEY_BYTES]


def provider_slot(node_id: str) -> int:
    return int.from_bytes(hashlib.sha256(b"xsc-dht-slot\n" + parse_public_id(node_id)).digest()[:4], "big") \
        % PROVIDER_SLOTS


def providers_key(kind: str, slot: int) -> bytes:
    return hashlib.sha256(f"xsc-dht-providers\n{kind}\n{slot}".encode()).digest()[:KEY_BYTES]


def table_id(node_id: str) -> bytes:
    """A node's id in the table's 160-bit space (the same hash as its node record's key: the node that *is* a
    node record's subject is among the nodes closest to it)."""
    return node_key(node_id)


@dataclass(frozen=True)
class Holders:
    si: bytes
    placement: tuple[str, ...]  # share -> node id
    by: str  # the node that placed them and signed this
    at: int  # ms since the epoch, when it signed
    signature: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": "holders", "si": self.si.hex(), "placement": list(self.placement), "by": self.by,
                "at": self.at, "signature": self.signature}


@dataclass(frozen=True)
class Provider:
    kind: str  # what it offers: storage or compute
    node: str  # the node, which signed this
    url: str  # where it answers (its descriptor, found by node_key, says the same, signed too)
    at: int
    signature: str

    @property
    def by(self) -> str:
        return self.node

    def to_json(self) -> dict[str, Any]:
        return {"kind": "provider", "offers": self.kind, "node": self.node, "url": self.url, "at": self.at,
                "signature": self.signature}


def _provider_bytes(kind: str, node: str, url: str, at: int) -> bytes:
    return _PROVIDER_TAG + codec.canonical({"offers": kind, "node": node, "url": url, "at": at})


def make_provider(identity: Identity, kind: str, url: str, at: int) -> Provider:
    return Provider(kind, identity.id, url, at, identity.sign(_provider_bytes(kind, identity.id, url, at)).hex())


def _parse_provider(obj: dict, key: bytes, now_ms: int, min_difficulty: int) -> Provider:
    if set(obj) != {"kind", "offers", "node", "url", "at", "signature"}:
        raise InvalidRecord("a provider record has exactly kind, offers, node, url, at and signature")
    kind, node, url, at, signature = obj["offers"], obj["node"], obj["url"], obj["at"], obj["signature"]
    if not (kind in KINDS and isinstance(node, str) and isinstance(url, str) and len(url) <= 200
            and type(at) is int and isinstance(signature, str) and len(signature) == 128):
        raise InvalidRecord("a provider record's fields have the wrong types or sizes")
    try:
        signer_key, sig = parse_public_id(node), bytes.fromhex(signature)
    except (ValueError, XscError):
        raise InvalidRecord("a provider record names something that is not a node id or hex") from None
    if providers_key(kind, provider_slot(node)) != key:
        raise InvalidRecord("a provider record stored under another slot's key")
    if at > now_ms + MAX_FUTURE_MS:
        raise InvalidRecord("a provider record dated in the future")
    if id_difficulty(signer_key) < min_difficulty:
        raise InvalidRecord(f"a provider record of an id without {min_difficulty} bits of work")
    record = Provider(kind, node, url, at, sig.hex())
    _canonical(obj, record)
    if not verify(signer_key, sig, _provider_bytes(kind, node, url, at)):
        raise InvalidRecord("a provider record not signed by the node it names")
    return record


def _holders_bytes(si: bytes, placement: tuple[str, ...], by: str, at: int) -> bytes:
    return _HOLDERS_TAG + codec.canonical({"si": si.hex(), "placement": list(placement), "by": by, "at": at})


def make_holders(identity: Identity, si: bytes, placement: list[str], at: int) -> Holders:
    shares = tuple(placement)
    return Holders(si, shares, identity.id, at, identity.sign(_holders_bytes(si, shares, identity.id, at)).hex())


def _parse_holders(obj: dict, key: bytes, now_ms: int, min_difficulty: int) -> Holders:
    if set(obj) != {"kind", "si", "placement", "by", "at", "signature"}:
        raise InvalidRecord("a holders record has exactly kind, si, placement, by, at and signature")
    si_text, placement, by, at, signature = obj["si"], obj["placement"], obj["by"], obj["at"], obj["signature"]
    if not (isinstance(si_text, str) and len(si_text) == 64 and isinstance(by, str) and type(at) is int
            and isinstance(signature, str) and len(signature) == 128
            and isinstance(placement, list) and len(placement) == SHARES
            and all(isinstance(n, str) for n in placement)):
        raise InvalidRecord("a holders record's fields have the wrong types or sizes")
    try:
        si, signer, sig = bytes.fromhex(si_text), parse_public_id(by), bytes.fromhex(signature)
        for node in placement:
            parse_public_id(node)
    except (ValueError, XscError):
        raise InvalidRecord("a holders record names something that is not a node id or hex") from None
    if holders_key(si) != key:
        raise InvalidRecord("a holders record stored under another file's key")
    if at > now_ms + MAX_FUTURE_MS:
        raise InvalidRecord("a holders record dated in the future")
    if id_difficulty(signer) < min_difficulty:  # a fresh key per record would push the placer's out cheaply
        raise InvalidRecord(f"a holders record signed by an id without {min_difficulty} bits of work")
    record = Holders(si, tuple(placement), by, at, sig.hex())
    _canonical(obj, record)
    if not verify(signer, sig, _holders_bytes(si, tuple(placement), by, at)):
        raise InvalidRecord("a holders record not signed by the node it names as its signer")
    return record


def _canonical(obj: dict, record: Holders | Provider) -> None:
    """Refuse a record not spelled as its signer writes it (hex in capitals, ...): the same meaning and signature in
    other bytes would be a second record of one signer, kept beside or instead of the first."""
    form = record.to_json()
    if obj != form:  # every field's type is checked already: equal is the same spelling
        raise InvalidRecord(f"a {obj['kind']} record not in the one form its signature covers: "
                            f"{codec.respelled(obj, form)}")


def _parse_node(obj: dict, key: bytes, now_ms: int, min_difficulty: int) -> NodeDescriptor:
    try:
        descriptor = parse_descriptor({k: v for k, v in obj.items() if k != "kind"}, now_ms=now_ms)
    except InvalidDescriptor as err:
        raise InvalidRecord(f"a node record that is not a valid descriptor: {err.message}") from None
    if node_key(descriptor.id) != key:
        raise InvalidRecord("a node record stored under another node's key")
    if id_difficulty(descriptor.key) < min_difficulty:
        raise InvalidRecord(f"a node record of an id without {min_difficulty} bits of work")
    return descriptor


Record = Holders | Provider | NodeDescriptor


def signer(record: Record) -> str:
    return record.id if isinstance(record, NodeDescriptor) else record.by


def signed_at(record: Record) -> int:
    return record.timestamp if isinstance(record, NodeDescriptor) else record.at


def _form(record: Record) -> dict[str, Any]:
    return {"kind": "node", **record.to_json()} if isinstance(record, NodeDescriptor) else record.to_json()


def encode(records: list[Record]) -> bytes:
    return codec.canonical([_form(r) for r in records])


def checked_index(checked: Iterable[Record]) -> dict[bytes, Record]:
    """Records checked already under one key, by their canonical form: `parse_bundle`'s `checked`, made once for
    many values."""
    return {codec.canonical(_form(r)): r for r in checked}


def parse_bundle(value: Any, key: bytes, *, now_ms: int, min_difficulty: int,
                 checked: list[Record] | tuple | dict[bytes, Record] = ()) -> list[Record]:
    """The records of a value offered under `key`, each checked; InvalidRecord for anything else (one bad record
    refuses the whole value: its sender signed or relayed it).  A record identical to one of `checked` (held under
    `key`, checked when it came; or a `checked_index` of such records) is not checked again: a bundle signed once
    can be stored again and again under any source address, and would cost up to eight signature checks each
    time."""
    if not isinstance(value, bytes) or len(value) > MAX_VALUE:
        raise InvalidRecord(f"a value is at most {MAX_VALUE} bytes")
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise InvalidRecord(f"a key is {KEY_BYTES} bytes")
    try:
        items = codec.loads(value)
    except ValueError:
        raise InvalidRecord("a value is a JSON list of records") from None
    if not isinstance(items, list) or not 0 < len(items) <= MAX_RECORDS or not all(isinstance(i, dict)
                                                                                   for i in items):
        raise InvalidRecord(f"a value is a list of 1 to {MAX_RECORDS} records")
    held = checked if isinstance(checked, dict) else checked_index(checked)
    out: list[Record] = []
    for item in items:
        try:
            same = held.get(codec.canonical(item)) if held else None
        except ValueError:
            raise InvalidRecord("a record is JSON without NaN") from None
        if same is not None:
            out.append(same)
            continue
        kind = item.get("kind")
        if kind == "holders":
            out.append(_parse_holders(item, key, now_ms, min_difficulty))
        elif kind == "node":
            out.append(_parse_node(item, key, now_ms, min_difficulty))
        elif kind == "provider":
            out.append(_parse_provider(item, key, now_ms, min_difficulty))
        else:
            raise InvalidRecord("a record's kind is holders, node or provider")
    return out


def merge(held: list[Record], offered: list[Record]) -> list[Record]:
    """The bundle a key keeps: the newest record of each signer, the newest MAX_RECORDS of those, and no more
    than MAX_VALUE bytes (oldest leave first).  Order-independent: the same records give the same bundle."""
    newest: dict[str, Record] = {}
    for record in [*held, *offered]:
        kept = newest.get(signer(record))
        if kept is None or (signed_at(record), encode([record])) > (signed_at(kept), encode([kept])):
            newest[signer(record)] = record
    bundle = sorted(newest.values(), key=lambda r: (-signed_at(r), signer(r)))[:MAX_RECORDS]
    while len(encode(bundle)) > MAX_VALUE:
        bundle.pop()
    return bundle


def newest(records: list[Record], wanted: Callable[[Record], bool]) -> Record | None:
    """The newest record that `wanted` accepts."""
    return max((r for r in records if wanted(r)), key=signed_at, default=None)
