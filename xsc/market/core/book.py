"""Signed market commitments and the replicated book (pure: no I/O).

A `MarketCommitment` is what a participant publishes: its asks, its bids and its recognition
weights, stamped with an Interval Tree Clock and signed with its node key (Ed25519).  The
signature covers `signed_bytes`: the tag line ``XSC-MARKET-COMMITMENT-1`` and the sorted, compact
JSON of every field but the signature (stamps as the hex of their encoding, decimals as text).
Anyone may pass a commitment on; only the participant's key makes it valid.

The `Book` holds the newest known commitment of every participant, accepted by the allocator's
causality rule (`xsc.allocation.receive`), with one twist: a stored commitment must stay exactly
as it was signed (its signature covers its stamp), so where the allocator rewrites the kept
copy's stamp on a merge, the book keeps the signed commitment intact and tracks the joined
stamp beside it, as the participant's *seen* stamp:

  - incoming.stamp <= seen: stale, ignored (an older or equal copy, or a replay);
  - seen <= incoming.stamp: newer, it replaces the held commitment and seen = its stamp;
  - concurrent: the commitment with the larger (timestamp, encoded stamp, signature) is kept
    (the same choice on every node, so merging commutes) and seen = join(seen, peek(incoming)),
    after both, so a later replay of either is stale.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ... import codec
from ...allocation.core.causality import Outcome
from ...itc import Stamp
from ...allocation.core.models import TimestampMs, Weight
from ...allocation.core.records import BoundedStamp
from ...errors import BadRequest, InvalidMarketCommitment, XscError, from_validation
from ...identity import Identity, parse_public_id, verify
from .auction import Order
from .models import Ask, Bid
from .orders import market_orders

MAX_ORDERS = 10_000
"""Asks plus bids one commitment may carry."""
MAX_RECOGNITION = 10_000
"""Recognition entries one commitment may carry."""
DEFAULT_BUCKET_SECONDS = 3600

_TAG = b"XSC-MARKET-COMMITMENT-1\n"
_SIGNATURE_HEX = 128


class _Fields(BaseModel):
    """Every field of a commitment but its signature, with the book's rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    participant: Annotated[str, Field(min_length=1, max_length=200)]
    asks: tuple[Ask, ...] = ()
    bids: tuple[Bid, ...] = ()
    recognition: dict[Annotated[str, Field(min_length=1, max_length=200)], Weight] = {}
    stamp: BoundedStamp  # as an allocation record's: decoding a peer's stamp costs its size
    timestamp: TimestampMs

    @field_validator("participant")
    @classmethod
    def _node_id(cls, v: str) -> str:
        try:
            parse_public_id(v)
        except BadRequest:
            raise ValueError(f"the participant must be a node id (its public key), not {v[:60]!r}") from None
        return v

    @model_validator(mode="after")
    def _rules(self) -> "_Fields":
        if len(self.asks) + len(self.bids) > MAX_ORDERS:
            raise ValueError(f"{len(self.asks) + len(self.bids)} orders in one commitment (at most {MAX_ORDERS})")
        if len(self.recognition) > MAX_RECOGNITION:
            raise ValueError(f"{len(self.recognition)} recognition entries (at most {MAX_RECOGNITION})")
        for side, orders in (("ask", self.asks), ("bid", self.bids)):
            seen: set[str] = set()
            for o in orders:
                if o.slot.owner != self.participant:
                    raise ValueError(f"the slot of {side} {o.slot.id!r} is owned by {o.slot.owner!r}, "
                                     f"not by the participant")
                if o.slot.id in seen:
                    raise ValueError(f"two {side}s share the slot id {o.slot.id!r}")
                seen.add(o.slot.id)
        return self


class MarketCommitment(_Fields):
    """A participant's signed asks, bids and recognition weights (see the module docstring).

    Build one with `sign_commitment`; accept one from the network with `parse_commitment`, which
    checks the signature (constructing the model directly does not)."""

    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def signed_bytes(fields: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: a tag line, then the sorted compact JSON of the commitment's
    JSON form without its signature."""
    body = {k: v for k, v in fields.items() if k != "signature"}
    return _TAG + codec.canonical(body)


def _canonical(fields: _Fields) -> bytes:
    return signed_bytes(fields.model_dump(mode="json", exclude={"signature"}))


def _invalid(exc: ValidationError, what: str) -> XscError:
    return from_validation(exc, InvalidMarketCommitment, "invalid market commitment: ", where=what, more=True,
                           hint="see docs/market.md for the commitment's fields and rules")


def sign_commitment(identity: Identity, *, asks: Iterable[Ask] = (), bids: Iterable[Bid] = (),
                    recognition: Mapping[str, Decimal] | None = None, stamp: Stamp,
                    timestamp: int) -> MarketCommitment:
    """A commitment of `identity`'s node, signed by it.  Raises InvalidMarketCommitment when the
    fields break a rule (foreign slots, duplicate slot ids, too many orders, ...)."""
    try:
        fields = _Fields(participant=identity.id, asks=tuple(asks), bids=tuple(bids),
                         recognition=dict(recognition or {}), stamp=stamp, timestamp=timestamp)
    except ValidationError as exc:
        raise _invalid(exc, "commitment") from None
    signature = identity.sign(_canonical(fields)).hex()
    # The fields are already checked: build without validating them all again.
    return MarketCommitment.model_construct(**dict(fields), signature=signature)


def parse_commitment(obj: Any, *, now_ms: int | None = None, max_future_ms: int = 10 * 60_000) -> MarketCommitment:
    """A valid, verified commitment from its JSON form (or a MarketCommitment), or
    InvalidMarketCommitment saying what is wrong.  With `now_ms`, a commitment dated more than
    `max_future_ms` ahead is refused too (it would win every concurrent merge for that long)."""
    if isinstance(obj, MarketCommitment):
        obj = obj.to_json()
    if not isinstance(obj, Mapping):
        raise InvalidMarketCommitment("a market commitment must be a JSON object")
    try:
        mc = MarketCommitment.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc, "commitment") from None
    form = mc.model_dump(mode="json", exclude={"signature"})
    body = codec.canonical(form)
    wrong = codec.respelled({k: v for k, v in obj.items() if k != "signature"}, form, body)
    if wrong is not None:
        raise InvalidMarketCommitment(f"invalid market commitment: {wrong}", participant=mc.participant,
                                      hint="a signed commitment comes in the one form its signature covers "
                                           "(integers as integers, decimals as text, every field written); "
                                           "see docs/market.md")
    key = parse_public_id(mc.participant)
    if not verify(key, bytes.fromhex(mc.signature), _TAG + body):
        raise InvalidMarketCommitment(f"the market commitment of {mc.participant} is not signed by that node's key",
                                      hint="a commitment is signed by its participant over signed_bytes(...); "
                                           "see docs/market.md", participant=mc.participant)
    if now_ms is not None and mc.timestamp > now_ms + max_future_ms:
        raise InvalidMarketCommitment(f"the market commitment of {mc.participant} is dated "
                                      f"{(mc.timestamp - now_ms) // 1000} s in the future",
                                      hint="keep node clocks in sync (NTP)", participant=mc.participant)
    return mc


def _merge_key(mc: MarketCommitment) -> tuple:
    return (mc.timestamp, mc.stamp.encode(), mc.signature)


class Book:
    """The newest known commitment of every participant (in memory, pure).

    `receive` trusts its argument: parse commitments from the network with `parse_commitment`
    first.  `bucket_seconds` is the width of the call markets' time buckets (for `orders`)."""

    def __init__(self, bucket_seconds: int = DEFAULT_BUCKET_SECONDS) -> None:
        if type(bucket_seconds) is not int or bucket_seconds <= 0:
            raise InvalidMarketCommitment(f"the bucket width must be a positive number of seconds, "
                                          f"not {bucket_seconds!r}")
        self.bucket_seconds = bucket_seconds
        self._held: dict[str, MarketCommitment] = {}
        self._seen: dict[str, Stamp] = {}
        # What is made of the held commitments, kept until they change: a put asked for the asks, the bids and the
        # sorted commitments of a 1,000-participant book several times over.
        self._made: dict[str, Any] = {}

    def receive(self, mc: MarketCommitment) -> Outcome:
        """Accept `mc` by its stamp (see the module docstring): NEW, STALE or MERGED."""
        p = mc.participant
        held = self._held.get(p)
        if held is None:
            self._held[p], self._seen[p] = mc, mc.stamp
            self._made.clear()
            return Outcome.NEW
        seen = self._seen[p]
        if mc.stamp.leq(seen):
            return Outcome.STALE
        if seen.leq(mc.stamp):
            self._held[p], self._seen[p] = mc, mc.stamp
            self._made.clear()
            return Outcome.NEW
        if _merge_key(mc) > _merge_key(held):
            self._held[p] = mc
            self._made.clear()
        self._seen[p] = seen.peek().join(mc.stamp.peek())
        return Outcome.MERGED

    def forget(self, participant: str) -> bool:
        """Drop a participant (a removed node): its commitments leave the book; returns whether it was there."""
        self._seen.pop(participant, None)
        self._made.clear()
        return self._held.pop(participant, None) is not None

    def seen(self, participant: str) -> Stamp | None:
        """The join of every stamp accepted for `participant` (what newer commitments must exceed)."""
        return self._seen.get(participant)

    def get(self, participant: str) -> MarketCommitment | None:
        return self._held.get(participant)

    def __len__(self) -> int:
        return len(self._held)

    def _kept(self, what: str, make):
        """make(), kept until a held commitment changes (what it returns must not be changed by callers)."""
        made = self._made.get(what)
        if made is None:
            made = self._made[what] = make()
        return made

    def commitments(self) -> list[MarketCommitment]:
        """Every held commitment, by participant."""
        return list(self._kept("commitments", lambda: tuple(self._held[p] for p in sorted(self._held))))

    def asks(self) -> list[Ask]:
        return list(self._kept("asks", lambda: tuple(a for mc in self.commitments() for a in mc.asks)))

    def most_offered(self, kind: str, but: str | None = None) -> int:
        """The largest quantity one ask of `kind` offers (0 when none does), of a participant other than `but`."""
        return self._kept(f"most:{kind}:{but}", lambda: max(
            (a.slot.quantity for a in self.asks() if a.slot.kind == kind and a.slot.owner != but), default=0))

    def bids(self) -> list[Bid]:
        return list(self._kept("bids", lambda: tuple(b for mc in self.commitments() for b in mc.bids)))

    def recognition(self) -> dict[str, dict[str, Decimal]]:
        """participant -> its recognition weights (what `match_needs` takes)."""
        return {p: dict(mc.recognition) for p, mc in sorted(self._held.items())}

    def orders(self) -> list[Order]:
        """Every ask and bid as auction Orders, per (kind, bucket) (see xsc.market.core.orders)."""
        return market_orders(self.asks(), self.bids(), self.bucket_seconds)

    def digest(self) -> str:
        """Hex SHA-256 over the sorted (participant, signature) pairs: two books with the same
        digest hold the same signed commitments."""
        return self._kept("digest", self._digest)

    def _digest(self) -> str:
        h = hashlib.sha256(b"XSC-MARKET-BOOK-1\n")
        for p in sorted(self._held):
            h.update(f"{p} {self._held[p].signature}\n".encode())
        return h.hexdigest()
