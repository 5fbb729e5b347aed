"""Every participant's availability as matching weighs it, kept up with the peers whose availability changed (pure).

Matching reads a provider's availability twice: at 0 (its last probe failed) it takes no part, and a need's
`min_availability` leaves out the providers below it (core/matching.py).  The map is made whole once, then set again
only for the peers the caller says may have changed (a probe recorded, a descriptor taken or dropped, a history
forgotten) and, when the 5-minute bucket the ratios are counted in moves on, for those whose last hour held a failed
probe (`partial`): an hour of answered probes counts 1 whichever of its buckets the window still holds, and a peer
never probed counts 1 too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

ONE = Decimal(1)
ZERO = Decimal(0)


def weighed(availability: Any) -> Decimal:
    """A peer's availability (xsc.health.Availability) as matching weighs it: 0 when its last probe failed."""
    if availability.up is False:
        return ZERO
    return Decimal(str(round(availability.ratio_1h, 4))) if availability.ratio_1h is not None else ONE


class KeptAvailability:
    """participant -> `weighed` availability (this node's 1), those at 0 (`down`), and two versions: `version` grows
    whenever an entry changed, `down_version` whenever who is at 0 did (a deal's answer rests on the one or the
    other: `Dealing._shape_of`)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.values: dict[str, Decimal] = {me: ONE}
        self.down: set[str] = set()
        # Peers whose entry the clock may move without a probe: a failed probe in the window, or a probe the clock
        # was set back behind (its bucket comes into the window again as the clock catches up).
        self.partial: set[str] = set()
        self.version = 0
        self.down_version = 0

    def make(self, peers: Iterable[tuple[str, Any]], now: int) -> None:
        """Made whole from (peer, its availability) of every known peer, at `now` (ms)."""
        old_values, old_down = self.values, self.down
        self.values, self.down, self.partial = {self.me: ONE}, set(), set()
        for p, a in peers:
            if p != self.me:
                self._set(p, a, now)
        if self.values != old_values:
            self.version += 1
        if self.down != old_down:
            self.down_version += 1

    def update(self, changed: Iterable[str], availability_of: Callable[[str], Any | None], now: int) -> None:
        """Set again the entries of `changed` (a peer no longer known: `availability_of` gives None) at `now` (ms)."""
        moved = down_moved = False
        for p in changed:
            if p == self.me:
                continue
            was, was_down = self.values.get(p), p in self.down
            self.values.pop(p, None)
            self.down.discard(p)
            self.partial.discard(p)
            a = availability_of(p)
            if a is not None:
                self._set(p, a, now)
            moved |= self.values.get(p) != was
            down_moved |= (p in self.down) != was_down
        self.version += moved
        self.down_version += down_moved

    def _set(self, p: str, a: Any, now: int) -> None:
        value = self.values[p] = weighed(a)
        if value == 0:
            self.down.add(p)
        last_probe = getattr(a, "last_probe", None)
        if a.ratio_1h is not None and a.ratio_1h < 1 or last_probe is not None and last_probe > now:
            self.partial.add(p)
