"""Providers found through the hash table when the book is short of them.

A node's book holds the commitments of its neighbourhood (those it recognises and those that recognise it, about
`market.recognised_at_most` peers), not of the whole network.  When a put, an invoke or a replicated job needs
more distinct providers of a kind than the book holds, the providers the hash table knows of that kind (their
signed provider records, `xsc.dht`) are asked for their commitments, each from itself, and those join the book
for the matching: a commitment is checked as any peer's (signed, of a known peer, within the sender's quota).  A
lookup is a few datagrams to a few nodes; it runs at most every LOOKUP_EVERY seconds per kind (sooner once the
first of the offers it left the book counting lapses: one it pulled lapses `market.freshness` after it was signed,
as its provider pushes the newer ones to its neighbourhood only; sooner for more providers than the last one
wanted: a failover wants one more than the invoke before it; and after one that failed or ran out of time), and
only when a peer this node knows is up, missing from the book, not among the providers
that just failed the caller and not offering nothing (in a small network the book already holds every provider, one
that failed cannot be the more a failover wants, and one that said it leaves, its offer of nothing in the book, may
still be up to its probes).  A busy node's lookup may outlast its caller's wait (or fail): the providers it found
by then are asked all the same, and so are a few of the up peers the book lacks, at random (else a put would deal
its shares round the few providers its book holds); the next caller (a CHECK_EVERY later) may look again.  Once the
table has answered, the book is counted again: an offer it held as the lookup began (one a node announced at start
reaches every peer, then only its neighbourhood) may have lapsed meanwhile, or lapse while the found are asked, and
such a provider is asked again with those the book lacks rather than counted as held and missing from the matching.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..tasks import now_ms

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between two counts of one kind's providers in the book (a put asks before each quote)
LOOKUP_EVERY = 30.0  # seconds between two lookups of one kind's providers


def providers_in(book: Any, active: Callable[[str], bool], kind: str) -> set[str]:
    """The participants, this node among them, whose current offer in `book` has capacity of `kind`."""
    return {a.slot.owner for a in book.asks() if a.slot.kind == kind and active(a.slot.owner)}


def _lately(last: tuple[float, int] | None, now: float, wanted: int) -> bool:
    """Whether `last` (until when it holds, providers wanted) still holds at `now` and wanted at least as many."""
    return last is not None and now < last[0] and wanted <= last[1]


class ProviderLookup:
    def __init__(self, *, replication: Any, peers: Any, active: Callable[[str, float], bool],
                 find: Callable[[str, int], Awaitable[list[Any]]], freshness: float) -> None:
        self.replication = replication  # the book, and pulls a peer's commitment from it (BookReplication)
        self.peers = peers  # the peers this node knows (PeerView)
        # (participant, seconds) -> whether it may be matched now (its offer current, it not down), its offer still
        # current that many seconds from now
        self.active = active
        self.find = find  # (kind, wanted, found) puts the provider records (with .node) the hash table knows in found
        self.freshness = freshness  # seconds an offer is current after it was signed (`market.freshness`)
        # kind -> (until when (monotonic) it holds off the next, providers wanted) of its last count, and lookup
        self._checked: dict[str, tuple[float, int]] = {}
        self._looked_up: dict[str, tuple[float, int]] = {}
        self.found = 0  # providers whose commitments a lookup brought into the book (status)

    def providers(self, kind: str, within: float = 0.0) -> set[str]:
        """The providers of `kind` the book holds whose offers are current, and still `within` seconds from now."""
        return providers_in(self.replication.book, lambda p: self.active(p, within), kind)

    def _current_for(self, providers: set[str]) -> float:
        """Seconds until the first of the offers of `providers` in the book lapses (LOOKUP_EVERY if none does)."""
        book, now = self.replication.book, now_ms()
        offers = [o for p in providers if (o := book.get(p)) is not None]
        return min((self.freshness - (now - o.timestamp) / 1000 for o in offers), default=LOOKUP_EVERY)

    def _offering_nothing(self) -> set[str]:
        """The up peers whose offer in the book is of nothing: one that leaves publishes so as it stops (its probes
        may say up a while longer), a full one until it has room.  Their newest offer is the book's already: a
        lookup cannot bring them in."""
        book = self.replication.book
        return {d.id for d in self.peers.up_peers() if (offer := book.get(d.id)) is not None and not offer.asks}

    async def fill(self, kind: str, wanted: int, timeout: float, exclude: frozenset[str] = frozenset(),
                   needed: float = 0.0) -> None:
        """If the book holds fewer than `wanted` providers of `kind` and the known peers could offer more: the
        commitments of the providers the hash table knows, pulled within `timeout` seconds.  `exclude`: providers
        that just failed the caller, which cannot be the more it wants (nor can a peer that offers nothing now).
        `needed`: seconds the caller's deal goes on once this returns (a put matches again after each round of
        asking strangers their terms, `storage.quotes.TERMS_SECONDS`): an offer that lapses within them counts as
        lacking.  At most half of `market.freshness`: an offer pushed as its provider re-signs it (every third) stays
        current longer, and one just pulled too."""
        needed = min(needed, self.freshness / 2)
        now = time.monotonic()
        if _lately(self._checked.get(kind), now, wanted):
            return
        self._checked[kind] = (now + CHECK_EVERY, wanted)
        held = self.providers(kind, needed)
        exclude = exclude | self._offering_nothing()
        # Only an up peer the book lacks can be brought in: with none (a small network whose every other provider
        # is held, down, leaving or just failed), a lookup would only wait out its timeout on datagrams to nodes
        # that cannot answer.
        if len(held) >= wanted or not {d.id for d in self.peers.up_peers()} - held - exclude or \
                _lately(self._looked_up.get(kind), now, wanted):
            return
        self._looked_up[kind] = (now + LOOKUP_EVERY, wanted)
        found: dict[str, Any] = {}  # node id -> its provider record, as the lookup finds them
        cut_short = False
        try:
            await asyncio.wait_for(self.find(kind, wanted, found), timeout)
        except Exception as exc:  # noqa: BLE001 -- a lookup only adds to the book: its caller goes on with the book
            cut_short = True
            del self._looked_up[kind]  # (the next caller may look again, a CHECK_EVERY later)
            if isinstance(exc, asyncio.TimeoutError):
                log.info("looking up providers of %s in the hash table took over %.1f s (%d found by then)", kind,
                         timeout, len(found))
            else:
                log.warning("looking up providers of %s in the hash table failed", kind, exc_info=True)
        # Held are the offers that outlast the asking (the caller matches as it ends), not those held as it began.
        lasting = self.providers(kind, timeout + needed)
        lacking = {d.id: d for d in self.peers.up_peers() if d.id not in lasting and d.id not in exclude}
        asked = [lacking[i] for i in found if i in lacking]
        if cut_short:
            # The table left the caller short: up peers the book lacks are asked directly, twice as many as it
            # lacks at most (one that offers no `kind` answers with a commitment that brings none).
            rest = [d for i, d in lacking.items() if i not in found]
            asked += random.sample(rest, min(len(rest), max(0, 2 * (wanted - len(lasting)) - len(asked))))
        if asked:
            await self.replication.pull_own(asked, timeout)
        counted = self.providers(kind, needed)
        if not cut_short:
            # Held off no longer than the book counts what the lookup left it: past the first of those offers to
            # lapse (one it pulled is pushed no newer), the book is short again and only a lookup brings it back.
            until = min(now + LOOKUP_EVERY, time.monotonic() + self._current_for(counted) - needed)
            self._looked_up[kind] = (until, wanted)
        if not asked:
            return
        brought = len(counted - lasting)
        self.found += brought
        log.info("found %d providers of %s through the hash table (the book held %d as it began, %d lasting once the "
                 "table answered)", brought, kind, len(held), len(lasting))
