"""A provider's ask policy: the ask rises with utilization, from a floor to a ceiling.

    ask(used, capacity) = floor + ceil((ceiling - floor) x (used / capacity) ** exponent)

computed on integers (the fraction raised to the power exactly, rounded up once), so the ask is
monotone non-decreasing in `used`, equals `floor` when empty and `ceiling` when full.  `used` is
clamped to [0, capacity]; a provider with no capacity asks the ceiling.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ...errors import MarketError, from_validation


class PricingPolicy(BaseModel):
    """Bounds and curve of the ask, in micro-credits per price unit of the slot's kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    floor: Annotated[int, Field(ge=0, strict=True)]
    ceiling: Annotated[int, Field(ge=0, strict=True)]
    exponent: Annotated[int, Field(ge=1, le=8, strict=True)] = 2

    @model_validator(mode="after")
    def _bounds(self) -> "PricingPolicy":
        if self.ceiling < self.floor:
            raise ValueError(f"the ceiling ({self.ceiling}) must not be below the floor ({self.floor})")
        return self

    @classmethod
    def of(cls, *, floor: int, ceiling: int, exponent: int = 2) -> "PricingPolicy":
        """The policy, or a MarketError saying which bound is wrong (for config and user input)."""
        try:
            return cls(floor=floor, ceiling=ceiling, exponent=exponent)
        except ValidationError as exc:
            raise from_validation(exc, MarketError, "bad pricing policy: ", where="policy",
                                  hint="0 <= floor <= ceiling, 1 <= exponent <= 8 (integers)") from None


def ask_price(policy: PricingPolicy, used: int, capacity: int) -> int:
    """The ask at `used` of `capacity` units (see the module docstring)."""
    if capacity <= 0:
        return policy.ceiling
    used = min(max(used, 0), capacity)
    span = policy.ceiling - policy.floor
    num = span * used**policy.exponent
    den = capacity**policy.exponent
    return policy.floor + -(-num // den)
