"""Signed allocation records: what a node publishes of its allocation rounds (pure: no I/O).

A provider publishes a `StateRecord` (its `AllocationState`: the allocations of its capacity slots to
need slots, the need slots it `wanted` more of, whether it converged and its last denominator change);
a recipient publishes a `ReceiptRecord` (its `Receipt`: per need slot the quantity, the total received,
each provider's part and the providers asking for more, with its over-allocation and damping factor).
Each carries the publisher's Interval Tree Clock stamp and timestamp and is signed with its node key
(Ed25519) over a tag line and the sorted compact JSON of every other field, as market commitments are
(`xsc.market.core.book`).

Every record comes from the network, so every field is bounded when it is parsed: ids <= 200
characters, at most MAX_ALLOCATIONS allocations, MAX_WANTED requests, MAX_NEEDS need slots and
MAX_PROVIDERS providers per need slot, quantities and totals in [0, 2^53), a receipt's total equal to
the sum of its parts, a damping factor in (0, 1] and a denominator change in [0, 10^6] with at most 40
digits, the stamp's text at most MAX_STAMP_HEX hex digits, timestamps < 2^53 ms and never more than
`max_future_ms` ahead.  The checks against the publisher's commitment (an allocation of a capacity
slot it does not offer, or beyond its quantity) are `check_state`.

`Held` keeps the newest record of each publisher by the allocator's causality rule, keeping each
signed record intact (its signature covers its stamp) and the joined stamp beside it, exactly as the
market's `Book` does: stale ignored, newer replaces, concurrent merged (the larger (timestamp, stamp,
signature) kept, the seen stamp joined).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Iterable, Literal, Mapping

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from ... import codec
from ...errors import BadRequest, InvalidAllocationRecord, XscError, from_validation
from ...identity import Identity, parse_public_id, verify
from .causality import Outcome
from ...itc import Stamp
from .models import (
    MAX_QUANTITY,
    AllocationState,
    Commitment,
    ConvergenceSample,
    Id,
    Quantity,
    SlotAllocation,
    TimestampMs,
    bounded_decimal,
)
from .rounds import Receipt, ReceiptEntry

MAX_ALLOCATIONS = 10_000
"""Allocations one state may carry (a capacity slot to a need slot each)."""
MAX_WANTED = 10_000
"""Need slots one state may ask more for."""
MAX_NEEDS = 10_000
"""Need slots one receipt may carry (a commitment carries at most 10,000 orders)."""
MAX_PROVIDERS = 1_001
"""Providers one need slot of a receipt may name (one per peer the directory can hold, and this node)."""
MAX_STAMP_HEX = 8_192
"""Hex digits of a record's stamp (4 KiB encoded: far beyond what a network of thousands of nodes forks)."""
MAX_DELTA = Decimal(10**6)

_STATE_TAG = b"XSC-ALLOCATION-STATE-1\n"
_RECEIPT_TAG = b"XSC-ALLOCATION-RECEIPT-1\n"


def _node_id(v: str) -> str:
    try:
        parse_public_id(v)
    except BadRequest:
        raise ValueError(f"must be a node id (its public key), not {v[:60]!r}") from None
    return v


def _short_stamp(v: Any) -> Any:
    if isinstance(v, str) and len(v) > MAX_STAMP_HEX:
        raise ValueError(f"a stamp of {len(v)} hex digits (at most {MAX_STAMP_HEX})")
    if isinstance(v, (bytes, bytearray)) and len(v) > MAX_STAMP_HEX // 2:
        raise ValueError(f"a stamp of {len(v)} bytes (at most {MAX_STAMP_HEX // 2})")
    return v


def _at_most(n: int):
    """A collection's length checked before any of its items is validated (a long list costs nothing)."""
    def check(v: Any) -> Any:
        if isinstance(v, (list, tuple, dict)) and len(v) > n:
            raise ValueError(f"{len(v)} items (at most {n})")
        return v
    return BeforeValidator(check)


NodeId = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_node_id)]
BoundedStamp = Annotated[Stamp, BeforeValidator(_short_stamp)]
Signature = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]
Part = Annotated[int, Field(gt=0, le=MAX_QUANTITY, strict=True)]
Allocation = tuple[Id, NodeId, Id, Quantity, Literal[1, 2]]
"""(capacity slot, recipient, need slot, units, tier)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _StateFields(_Frozen):
    provider: NodeId
    allocations: Annotated[tuple[Allocation, ...], Field(max_length=MAX_ALLOCATIONS), _at_most(MAX_ALLOCATIONS)] = ()
    wanted: Annotated[tuple[tuple[NodeId, Id], ...], Field(max_length=MAX_WANTED), _at_most(MAX_WANTED)] = ()
    converged: bool
    delta: Annotated[Decimal, Field(ge=0, le=MAX_DELTA, allow_inf_nan=False), AfterValidator(bounded_decimal)]
    stamp: BoundedStamp
    timestamp: TimestampMs

    @model_validator(mode="after")
    def _rules(self) -> "_StateFields":
        seen: set[tuple[str, str, str]] = set()
        for c, r, n, _, _ in self.allocations:
            if (c, r, n) in seen:
                raise ValueError(f"two allocations of capacity slot {c!r} to need slot {n!r} of {r}")
            seen.add((c, r, n))
        if len(set(self.wanted)) != len(self.wanted):
            raise ValueError("a need slot is wanted twice")
        return self


class StateRecord(_StateFields):
    """A provider's signed allocation state (see the module docstring)."""

    signature: Signature

    @property
    def owner(self) -> str:
        return self.provider

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_state(self) -> AllocationState:
        """The pure `AllocationState` the round functions read (allocations, requests, stamp, time)."""
        return AllocationState.model_construct(
            provider=self.provider, slot_denominators={}, unallocated={}, recipient_totals={},
            slot_allocations=tuple(SlotAllocation(c, n, r, q, t) for c, r, n, q, t in self.allocations),
            converged=self.converged,
            convergence_history=(ConvergenceSample.model_construct(delta=self.delta, timestamp=self.timestamp),),
            stamp=self.stamp, timestamp=self.timestamp, wanted=self.wanted)

    def used(self) -> dict[str, int]:
        """capacity slot id -> units it gives in total."""
        out: dict[str, int] = {}
        for c, _, _, q, _ in self.allocations:
            out[c] = out.get(c, 0) + q
        return out


class _Entry(_Frozen):
    quantity: Quantity
    total: Quantity
    by_provider: Annotated[dict[NodeId, Part], Field(max_length=MAX_PROVIDERS), _at_most(MAX_PROVIDERS)] = {}
    wanting: Annotated[tuple[NodeId, ...], Field(max_length=MAX_PROVIDERS), _at_most(MAX_PROVIDERS)] = ()

    @model_validator(mode="after")
    def _sums(self) -> "_Entry":
        if sum(self.by_provider.values()) != self.total:
            raise ValueError(f"the total {self.total} is not the sum of the providers' parts")
        if list(self.wanting) != sorted(set(self.wanting)):
            raise ValueError("the providers asking for more must be sorted, each once")
        return self


class _ReceiptFields(_Frozen):
    recipient: NodeId
    needs: Annotated[dict[Id, _Entry], Field(max_length=MAX_NEEDS), _at_most(MAX_NEEDS)] = {}
    over_allocation: Quantity
    damping_factor: Annotated[Decimal, Field(gt=0, le=1, allow_inf_nan=False), AfterValidator(bounded_decimal)]
    stamp: BoundedStamp
    timestamp: TimestampMs


class ReceiptRecord(_ReceiptFields):
    """A recipient's signed receipt (see the module docstring)."""

    signature: Signature

    @property
    def owner(self) -> str:
        return self.recipient

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_receipt(self) -> Receipt:
        return Receipt.model_construct(
            recipient=self.recipient, over_allocation=self.over_allocation, damping_factor=self.damping_factor,
            stamp=self.stamp, timestamp=self.timestamp,
            needs={nid: ReceiptEntry.model_construct(quantity=e.quantity, total=e.total,
                                                     by_provider=dict(e.by_provider), wanting=e.wanting)
                   for nid, e in self.needs.items()})


def _signed_bytes(tag: bytes, fields: BaseModel) -> bytes:
    body = fields.model_dump(mode="json", exclude={"signature"})
    return tag + codec.canonical(body)


def _invalid(exc: ValidationError, what: str) -> XscError:
    return from_validation(exc, InvalidAllocationRecord, f"invalid allocation {what}: ", where=what, more=True,
                           hint="see docs/allocation.md, 'On the nodes'")


def sign_state(identity: Identity, state: AllocationState, *, stamp: Stamp, timestamp: int) -> StateRecord:
    """`state` (computed by `provider_round` for `identity`'s node) as a signed record."""
    history = state.convergence_history
    delta = min(history[-1].delta, MAX_DELTA) if history else Decimal(1)
    try:
        fields = _StateFields(
            provider=identity.id, converged=state.converged, delta=delta, stamp=stamp, timestamp=timestamp,
            allocations=tuple((a.capacity_slot, a.recipient, a.need_slot, a.quantity, a.tier)
                              for a in state.slot_allocations),
            wanted=tuple(state.wanted))
    except ValidationError as exc:
        raise _invalid(exc, "state") from None
    return StateRecord.model_construct(**dict(fields), signature=identity.sign(_signed_bytes(_STATE_TAG, fields)).hex())


def sign_receipt(identity: Identity, receipt: Receipt, *, stamp: Stamp, timestamp: int) -> ReceiptRecord:
    """`receipt` (from `recipient_round` of `identity`'s node) as a signed record."""
    try:
        fields = _ReceiptFields(
            recipient=identity.id, over_allocation=receipt.over_allocation, damping_factor=receipt.damping_factor,
            stamp=stamp, timestamp=timestamp,
            needs={nid: {"quantity": e.quantity, "total": e.total, "by_provider": dict(e.by_provider),
                         "wanting": tuple(e.wanting)} for nid, e in receipt.needs.items()})
    except ValidationError as exc:
        raise _invalid(exc, "receipt") from None
    return ReceiptRecord.model_construct(**dict(fields),
                                         signature=identity.sign(_signed_bytes(_RECEIPT_TAG, fields)).hex())


def _parse(cls, tag: bytes, what: str, obj: Any, now_ms: int | None, max_future_ms: int):
    if not isinstance(obj, Mapping):
        raise InvalidAllocationRecord(f"an allocation {what} must be a JSON object")
    try:
        record = cls.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc, what) from None
    form = record.model_dump(mode="json", exclude={"signature"})
    body = codec.canonical(form)
    wrong = codec.respelled({k: v for k, v in obj.items() if k != "signature"}, form, body)
    if wrong is not None:
        raise InvalidAllocationRecord(f"invalid allocation {what}: {wrong}",
                                      hint="a signed record comes in the one form its signature covers (integers "
                                           "as integers, booleans as true or false, decimals as text, every field "
                                           "written); see docs/allocation.md, 'On the nodes'")
    if not verify(parse_public_id(record.owner), bytes.fromhex(record.signature), tag + body):
        raise InvalidAllocationRecord(f"the allocation {what} of {record.owner} is not signed by that node's key",
                                      hint="a record is signed by its publisher; see docs/allocation.md")
    if now_ms is not None and record.timestamp > now_ms + max_future_ms:
        raise InvalidAllocationRecord(f"the allocation {what} of {record.owner} is dated "
                                      f"{(record.timestamp - now_ms) // 1000} s in the future",
                                      hint="keep node clocks in sync (NTP)")
    return record


def parse_state(obj: Any, *, now_ms: int | None = None, max_future_ms: int = 10 * 60_000) -> StateRecord:
    """A valid, verified StateRecord from its JSON form, or InvalidAllocationRecord saying what is wrong."""
    return _parse(StateRecord, _STATE_TAG, "state", obj, now_ms, max_future_ms)


def parse_receipt(obj: Any, *, now_ms: int | None = None, max_future_ms: int = 10 * 60_000) -> ReceiptRecord:
    """A valid, verified ReceiptRecord from its JSON form, or InvalidAllocationRecord saying what is wrong."""
    return _parse(ReceiptRecord, _RECEIPT_TAG, "receipt", obj, now_ms, max_future_ms)


def check_state(record: StateRecord, commitment: Commitment | None) -> None:
    """Refuse a state that allocates capacity its provider does not offer (a slot its commitment does
    not carry, or beyond that slot's quantity) or to itself."""
    if commitment is None:
        raise InvalidAllocationRecord(f"no commitment of {record.provider} to check its allocation state against")
    slots = {c.id: c.quantity for c in commitment.capacity_slots}
    for slot, units in record.used().items():
        if slot not in slots:
            raise InvalidAllocationRecord(f"the allocation state of {record.provider} gives capacity slot "
                                          f"{slot!r}, which it does not offer")
        if units > slots[slot]:
            raise InvalidAllocationRecord(f"the allocation state of {record.provider} gives {units} units of "
                                          f"capacity slot {slot!r}, which holds {slots[slot]}")
    if any(r == record.provider for _, r, _, _, _ in record.allocations):
        raise InvalidAllocationRecord(f"the allocation state of {record.provider} allocates to itself")


def _merge_key(record) -> tuple:
    return (record.timestamp, record.stamp.encode(), record.signature)


class Held:
    """The newest record of each publisher (see the module docstring).  `receive` trusts its argument:
    parse records from the network first."""

    def __init__(self) -> None:
        self._held: dict[str, Any] = {}
        self._seen: dict[str, Stamp] = {}

    def receive(self, record) -> Outcome:
        p = record.owner
        held = self._held.get(p)
        if held is None:
            self._held[p], self._seen[p] = record, record.stamp
            return Outcome.NEW
        seen = self._seen[p]
        if record.stamp.leq(seen):
            return Outcome.STALE
        if seen.leq(record.stamp):
            self._held[p], self._seen[p] = record, record.stamp
            return Outcome.NEW
        if _merge_key(record) > _merge_key(held):
            self._held[p] = record
        self._seen[p] = seen.peek().join(record.stamp.peek())
        return Outcome.MERGED

    def get(self, owner: str):
        return self._held.get(owner)

    def seen(self, owner: str) -> Stamp | None:
        return self._seen.get(owner)

    def forget(self, owner: str) -> bool:
        self._seen.pop(owner, None)
        return self._held.pop(owner, None) is not None

    def owners(self) -> list[str]:
        return sorted(self._held)

    def items(self) -> Iterable[tuple[str, Any]]:
        return sorted(self._held.items())

    def __len__(self) -> int:
        return len(self._held)


def refusal_reason(err: XscError) -> str:
    """Why a record or message was refused, as the allocation's status counts it."""
    text = str(err)
    if "not signed" in text:
        return "bad signature"
    if "future" in text:
        return "future-dated"
    if "gives" in text or "allocates to itself" in text or "no commitment" in text:
        return "beyond its offer"
    return "invalid"
