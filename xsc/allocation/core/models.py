"""The allocator's data: slots, commitments and the allocation state a provider publishes.

All quantities are integers in the slot's unit (bytes for storage, fuel units for compute, ...),
so every sum can be checked to the unit.  Recognition weights and damping factors are Decimals
(exact); time windows are integer seconds, timestamps integer milliseconds.  Every model is
frozen: the allocator is a pure function from these values to an `AllocationState`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ... import codec
from ...itc import Stamp

# Bounds of every number a commitment may carry.  Commitments come from strangers: a weight such as
# 1E+20000000 is a valid Decimal that takes seconds to turn into a fraction, and an integer has no
# size at all, so each number is bounded (value and written digits) when it is parsed.
# Every integer a record publishes is at most 2^53 - 1 (codec.MAX_JSON_INT).
MAX_JSON_INT = codec.MAX_JSON_INT
MAX_QUANTITY = MAX_JSON_INT  # units of a slot (8 PiB of storage, 9 * 10^15 fuel)
MAX_TIME = 2**40  # seconds since the epoch of a slot's window (year ~36,800): anything beyond is no window
MAX_TIMESTAMP_MS = MAX_JSON_INT  # a commitment's or a sample's timestamp, in milliseconds
MAX_WEIGHT = Decimal(10**6)  # a raw recognition weight (weights are normalised: only their ratios matter)
MAX_DECIMAL_DIGITS = 40  # digits a decimal may be written with ...
MAX_DECIMAL_PLACES = 40  # ... and how many of them after the point (Decimal division keeps 28)


def bounded_decimal(value: Decimal) -> Decimal:
    """A decimal written with at most MAX_DECIMAL_DIGITS digits, MAX_DECIMAL_PLACES after the point.

    The value is kept as written (its text is signed), only refused when its form is too long."""
    _, digits, exponent = value.as_tuple()
    if len(digits) > MAX_DECIMAL_DIGITS or not isinstance(exponent, int) or exponent < -MAX_DECIMAL_PLACES:
        raise ValueError(f"a decimal may have at most {MAX_DECIMAL_DIGITS} digits, {MAX_DECIMAL_PLACES} after the "
                         f"point, not {str(value)[:40]}")
    return value


Id = Annotated[str, Field(min_length=1, max_length=200)]
Kind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY, strict=True)]
Time = Annotated[int, Field(ge=0, le=MAX_TIME, strict=True)]
TimestampMs = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP_MS, strict=True)]
Weight = Annotated[Decimal, Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False), AfterValidator(bounded_decimal)]
Fraction01 = Annotated[Decimal, Field(ge=0, le=1, allow_inf_nan=False), AfterValidator(bounded_decimal)]

ANY = "any"
"""The location that matches every location."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SlotFilter(_Frozen):
    """Which counterparts a slot accepts.  The empty filter accepts every counterpart.

    A counterpart slot passes when its owner is in `allow` (if `allow` is given), its owner is
    not in `deny`, and it carries every tag of `require_tags`."""

    allow: Annotated[tuple[Id, ...], Field(max_length=1000)] | None = None
    deny: Annotated[tuple[Id, ...], Field(max_length=1000)] = ()
    require_tags: Annotated[tuple[Annotated[str, Field(max_length=200)], ...], Field(max_length=64)] = ()

    def is_empty(self) -> bool:
        return self.allow is None and not self.deny and not self.require_tags


_NO_FILTER = SlotFilter()


class _Slot(_Frozen):
    id: Id
    owner: Id
    kind: Kind
    quantity: Quantity
    start: Time
    end: Time
    location: Annotated[str, Field(max_length=200)] | Annotated[tuple[Annotated[str, Field(max_length=200)], ...],
                                                                Field(max_length=64)] = ANY
    tags: Annotated[tuple[Annotated[str, Field(max_length=200)], ...], Field(max_length=64)] = ()
    filters: SlotFilter = SlotFilter()

    @model_validator(mode="after")
    def _window(self) -> "_Slot":
        if self.end <= self.start:
            raise ValueError(f"slot {self.id!r}: the window must end after it starts ({self.start} >= {self.end})")
        return self

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: SlotFilter) -> SlotFilter:
        # Filters are frozen: every slot without one shares one empty filter, rather than keeping its own (two
        # models and a set for the garbage collector to scan, per slot of every commitment in the book).
        return _NO_FILTER if v.is_empty() else v

    @field_validator("location")
    @classmethod
    def _location(cls, v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if isinstance(v, tuple):
            if not v or any(not t for t in v):
                raise ValueError("a location list must hold at least one non-empty tag")
            if ANY in v:
                return ANY
        elif not v:
            raise ValueError("a location is a non-empty tag, 'any', or a list of tags")
        return v

    def locations(self) -> frozenset[str] | None:
        """The set of acceptable location tags, None for any."""
        if self.location == ANY:
            return None
        return frozenset((self.location,) if isinstance(self.location, str) else self.location)


class CapacitySlot(_Slot):
    """Capacity a provider offers: `quantity` units of `kind` during [start, end) at `location`.

    `filters` restrict which need slots it may serve (their owners and tags)."""


class NeedSlot(_Slot):
    """Capacity a recipient needs: `quantity` units of `kind` during [start, end), at `location`
    (a tag, 'any', or a list of acceptable tags); `filters` restrict which capacity slots may serve it."""


class DampingSample(_Frozen):
    """One computation of a recipient's over-allocation: units received beyond its stated need."""

    over_allocation: Quantity
    timestamp: TimestampMs


NeedKey = tuple[str, str]
"""(owner, need slot id): need slot ids are unique per owner."""


class Commitment(_Frozen):
    """What a participant declares and publishes: its slots, whom it recognises, its damping state.

    `recognition` holds raw non-negative weights; the allocator normalises them to sum to 1
    (an entry for the participant itself is ignored)."""

    participant: Id
    capacity_slots: tuple[CapacitySlot, ...] = ()
    need_slots: tuple[NeedSlot, ...] = ()
    recognition: dict[Id, Weight] = {}
    damping_factor: Annotated[Decimal, Field(gt=0, le=1, allow_inf_nan=False), AfterValidator(bounded_decimal)] = \
        Decimal(1)
    damping_history: tuple[DampingSample, ...] = ()
    stamp: Stamp
    timestamp: TimestampMs

    @model_validator(mode="after")
    def _slots_are_mine(self) -> "Commitment":
        for group, slots in (("capacity", self.capacity_slots), ("need", self.need_slots)):
            seen: set[str] = set()
            for s in slots:
                if s.owner != self.participant:
                    raise ValueError(f"{group} slot {s.id!r} is owned by {s.owner!r}, not by {self.participant!r}")
                if s.id in seen:
                    raise ValueError(f"two {group} slots share the id {s.id!r}")
                seen.add(s.id)
        return self


@dataclass(frozen=True, slots=True)
class SlotAllocation:
    """`quantity` units of capacity slot `capacity_slot` given to need slot `need_slot` of `recipient`.

    A plain frozen dataclass rather than a model: a provider may record ten thousand of them in
    one computation, and pydantic still validates them whenever an AllocationState is parsed."""

    capacity_slot: Id
    need_slot: Id
    recipient: Id
    quantity: Quantity
    tier: Literal[1, 2]


_FIELD_SETTERS = tuple(getattr(SlotAllocation, f).__set__
                       for f in ("capacity_slot", "need_slot", "recipient", "quantity", "tier"))


def slot_allocations(fields: list) -> tuple[SlotAllocation, ...]:
    """SlotAllocations from a flat list: capacity_slot, need_slot, recipient, quantity, tier, then
    the same for the next record, and so on.

    The same objects `SlotAllocation(...)` makes, for records the allocator already checked: the
    frozen dataclass's __init__ goes through object.__setattr__ once per field in Python, which
    for ten thousand records costs more than dividing the capacity; here the instances and each
    field column are filled by C-level map() loops over the slot descriptors."""
    out = tuple(map(object.__new__, repeat(SlotAllocation, len(fields) // 5)))
    for f, set_field in enumerate(_FIELD_SETTERS):
        deque(map(set_field, out, fields[f::5]), maxlen=0)
    return out


_set = object.__setattr__


def built(cls: type, values: dict):
    """`cls.model_construct(**values)` for `values` holding every field of `cls` in declaration
    order (trusted values, no validation): the same object (its `__dict__`, fields set, no extra,
    no private), without model_construct's per-field loop over aliases and defaults, which costs
    more than the allocator's own work for the small models it makes by the thousand."""
    m = cls.__new__(cls)
    _set(m, "__dict__", values)
    _set(m, "__pydantic_fields_set__", set(values))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m


def replaced(model, update: dict):
    """`model.model_copy(update=update)` (shallow; no validation) without its generic steps."""
    cls = model.__class__
    m = cls.__new__(cls)
    values = model.__dict__.copy()
    values.update(update)
    _set(m, "__dict__", values)
    fields = set(model.__pydantic_fields_set__)
    fields.update(update)
    _set(m, "__pydantic_fields_set__", fields)
    extra = model.__pydantic_extra__
    _set(m, "__pydantic_extra__", None if extra is None else dict(extra))
    _set(m, "__pydantic_private__", None)
    return m


class SlotDenominator(_Frozen):
    """D of each tier for one capacity slot (see `compute_allocation`)."""

    mutual: Decimal
    non_mutual: Decimal


class ConvergenceSample(_Frozen):
    """The largest relative move of a slot denominator in one computation."""

    delta: Decimal
    timestamp: int


class AllocationState(_Frozen):
    """What a provider publishes after dividing its capacity slots.

    `unallocated` is, per capacity slot, what neither tier took: the open tier for the market.
    `recipient_totals` is recipient -> kind -> units, so that units of different kinds never add."""

    provider: Id
    slot_denominators: dict[Id, SlotDenominator]
    slot_allocations: tuple[SlotAllocation, ...]
    unallocated: dict[Id, Quantity]
    recipient_totals: dict[Id, dict[str, Annotated[int, Field(ge=0, strict=True)]]]  # sums: past MAX_QUANTITY
    converged: bool
    convergence_history: tuple[ConvergenceSample, ...]
    stamp: Stamp
    timestamp: int
    wanted: tuple[tuple[Id, Id], ...] = ()
    """Need slots (owner, id) p would give more if its grant were larger (see `xsc.allocation.core.rounds`)."""
