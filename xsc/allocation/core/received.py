"""What each need slot receives, summed over the providers' published states."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Iterable, Iterator

from .models import AllocationState, NeedKey


class ReceivedIndex:
    """Units each need slot (owner, id) gets from each provider's latest state.

    `excluding(p)` is what `compute_allocation` wants for provider p: the totals minus p's own
    part, so p's last answer does not count against the need it is answering again."""

    def __init__(self, states: Iterable[AllocationState]) -> None:
        self.totals: dict[NeedKey, int] = {}
        self.by_provider: dict[str, dict[NeedKey, int]] = {}
        for s in states:
            if s.provider in self.by_provider:
                raise ValueError(f"two allocation states of {s.provider!r}")
            mine = self.by_provider[s.provider] = {}
            for a in s.slot_allocations:
                key = (a.recipient, a.need_slot)
                mine[key] = mine.get(key, 0) + a.quantity
                self.totals[key] = self.totals.get(key, 0) + a.quantity

    def excluding(self, provider: str) -> Mapping[NeedKey, int]:
        return _Excluding(self.totals, self.by_provider.get(provider, {}))

    def of_recipient(self, recipient: str) -> dict[str, int]:
        """need slot id -> units received from all providers (what `update_damping` takes)."""
        return {nid: q for (owner, nid), q in self.totals.items() if owner == recipient}


class _Excluding(Mapping):
    def __init__(self, totals: dict[NeedKey, int], own: dict[NeedKey, int]) -> None:
        self._totals, self._own = totals, own

    def __getitem__(self, key: NeedKey) -> int:
        return self._totals[key] - self._own.get(key, 0)

    def get(self, key, default=0):
        total = self._totals.get(key)
        return default if total is None else total - self._own.get(key, 0)

    def __iter__(self) -> Iterator[NeedKey]:
        return iter(self._totals)

    def __len__(self) -> int:
        return len(self._totals)
