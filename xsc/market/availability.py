"""The peers' availability as the market's matchings weigh it, kept up with the peers' changes (the shell around
`core.availability.KeptAvailability`)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from ..tasks import now_ms
from .core.availability import KeptAvailability


class PeerAvailability:
    """Every participant's availability (`map`), those at 0 (`down`) and the versions a deal's answer rests on, set
    again only for the peers whose descriptor or probe history changed (`PeerService.availability_changed_since`)
    and, when the 5-minute bucket moves on, for those whose ratio the clock can move (`KeptAvailability.partial`);
    made whole only when those changes are no longer all remembered, the clock was set back, or the peers keep no
    such record (a test's view: made whole whenever its state changed)."""

    def __init__(self, me: str, peers: Any) -> None:
        self.peers = peers  # a PeerView (None: a node on its own)
        self._kept = KeptAvailability(me)
        self._of: tuple | None = None  # the peers' availability_version() it was kept at
        self._down: tuple[int, frozenset[str]] = (-1, frozenset())  # (its down_version, down())

    def kept(self) -> KeptAvailability:
        kept, peers = self._kept, self.peers
        if peers is None:
            return kept
        version = peers.availability_version() if hasattr(peers, "availability_version") \
            else ("all", peers.state_version(), 0)
        was = self._of
        if version == was:
            return kept
        changed = None
        if was is not None and was[0] != "all" and version[2] >= was[2]:
            changed = peers.availability_changed_since(was)
        now = now_ms()
        if changed is None:
            kept.make(((d.id, peers.availability(d.id)) for d in peers.peers()), now)
        else:
            if version[2] != was[2]:
                changed |= kept.partial
            kept.update(changed, lambda p: peers.availability(p) if peers.get(p) is not None else None, now)
        self._of = version
        return kept

    def map(self) -> dict[str, Decimal]:
        """participant -> availability (a copy: a matching in the pool reads it while the loop goes on keeping it)."""
        return dict(self.kept().values)

    def of(self, participants: Iterable[str]) -> dict[str, Decimal]:
        """`map()` of `participants` alone (those it holds): all a matching of their asks reads of it."""
        values = self.kept().values
        return {p: values[p] for p in participants if p in values}

    def down(self) -> frozenset[str]:
        """The participants at availability 0 (their last probe failed): they take part in no clearing."""
        kept = self.kept()
        if self._down[0] != kept.down_version:
            self._down = (kept.down_version, frozenset(kept.down))
        return self._down[1]

    def versions(self) -> tuple[int, int]:
        """(one that grows whenever who is at 0 changed, one that grows whenever any participant's availability did)."""
        kept = self.kept()
        return kept.down_version, kept.version
