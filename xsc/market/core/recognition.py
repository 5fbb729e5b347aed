"""Which peers a node's derived recognition names (pure): docs/market.md, "Recognition".

Once some peer that is up has earned anything (money exchanged with this node), only such peers, the most recent
money first; while none has (bootstrapping), a sample of the peers that are up, mutual from both ends of a pair,
one per network, those seen up longer first.
The node side, which reads the peers' health and the money counters, is `xsc.market.recognition`.

Money counts less as it ages: a receipt of `amount` at time t is worth `amount * 2^-(now - t)/half_life` at `now`.
A peer's worth is kept as one running `Decayed` (its value as of the newest receipt), folded one receipt at a time
(`fold`) and read at any later time (`worth`): a constant cost per receipt and per read, whatever the history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal
from typing import NamedTuple


class Decayed(NamedTuple):
    """Money exchanged with one peer, each receipt decayed to `as_of_ms` (the newest receipt's time)."""

    value: float
    as_of_ms: int


def _aged(value: float, ms: int, half_life: float) -> float:
    return value * 2.0 ** (-ms / (half_life * 1000)) if ms > 0 else value


def fold(counter: Decayed | None, amount: int, at_ms: int, half_life: float) -> Decayed:
    """`counter` with a receipt of `amount` at `at_ms` added.  Receipts folded in any order give the same worth
    (up to float rounding): one older than the counter is decayed to it, a newer one moves the counter to its time."""
    if counter is None:
        return Decayed(float(amount), at_ms)
    if at_ms >= counter.as_of_ms:
        return Decayed(_aged(counter.value, at_ms - counter.as_of_ms, half_life) + amount, at_ms)
    return Decayed(counter.value + _aged(float(amount), counter.as_of_ms - at_ms, half_life), counter.as_of_ms)


def worth(counter: Decayed | None, now_ms: int, half_life: float) -> float:
    """What `counter` is worth at `now_ms` (0 for none; a clock set back does not raise it)."""
    return 0.0 if counter is None else _aged(counter.value, now_ms - counter.as_of_ms, half_life)

DEFAULT_HALF_LIFE = 30 * 86400.0  # seconds after which money exchanged counts half (market.recognition_half_life)

EQUALS = Decimal("0.5")  # bootstrapping: derived weights this close to the best are equals when the bound picks peers
# Bootstrapping: a peer seen up for this long ranks before any seen up for less (an id minted a minute ago comes
# after peers up for hours).  One class, not a rank by age: by age every node would keep the same oldest few, and
# two nodes that learned of each other about together see each other settled at about the same time.
SETTLED_MS = 3_600_000


def pair_rank(me: str, peer: str) -> str:
    """A peer's place among equals while bootstrapping: different on every node (nodes that see the same equal peers
    each keep a sample of their own, so the whole network stays connected), and the same from both ends of a pair,
    so the peers a node recognises mostly recognise it too: a node subscribes to and hears from those it recognises
    and those that recognise it, about `at_most` peers in all rather than twice as many."""
    return hashlib.sha256(":".join(sorted((me, peer))).encode()).hexdigest()


def rank_derived(me: str, up: Mapping[str, Decimal], earned: Mapping[str, float], failed: Collection[str],
                 at_most: int, secret: bytes, *, networks: Mapping[str, str] | None = None,
                 settled: Collection[str] = ()) -> list[str]:
    """The peers whose derived weight is published, best first (pure).

    `up`: peer -> its derived weight, for the peers proven up; `earned`: peer -> micro-credits exchanged with it
    (as `worth` reads them: recent money counts more);
    `failed`: peers whose last audit failed; `secret`: this node's own, never published.  When some peer in `up`
    has earned anything, only such peers are kept: most money first (a failed last audit after every clean one),
    equal sums in an order no id can be ground for (SHA-256 under `secret`, which no other node knows).  Otherwise
    (bootstrapping) the peers in `settled` (seen up for SETTLED_MS or more) before the others, the weights within
    EQUALS of the best as equals, ranked by the pair alone (`pair_rank`), then the rest by weight; and at most one
    place per network (`networks`: peer -> `net.addresses.url_network` of its URL; a peer not in it is a network
    of its own)."""
    earning = [p for p in up if p != me and earned.get(p, 0) > 0]
    if earning:
        def tie(p: str) -> str:
            return hashlib.sha256(secret + p.encode()).hexdigest()
        return sorted(earning, key=lambda p: (p in failed, -earned[p], tie(p)))[:at_most]
    # By weight, every node would keep the same few most available peers, and those would carry the whole network's
    # subscriptions; by tenths, a probe that happened to fail (a peer probed a few times has 0.5 for one failure)
    # made two nodes rank a pair differently, so fewer choices were mutual and each node's neighbourhood grew.
    # The pair's hash is not keyed with this node's secret: the peer could not rank the pair the same, and the
    # choices would stop being mutual.  An id ground against this node's takes a place only as the one of its
    # network, and after every peer seen up for longer.
    candidates = {p: w for p, w in up.items() if p != me and w > 0}
    near = max(candidates.values(), default=Decimal(0)) - EQUALS
    settled = frozenset(settled)
    ranked = sorted(candidates, key=lambda p: sample_key(me, p, candidates[p], near, p in settled))
    return one_per_network(ranked, networks or {}, at_most)


def sample_key(me: str, peer: str, weight: Decimal, near: Decimal, settled: bool) -> tuple:
    """A bootstrapping peer's place (`rank_derived`): settled first; then those within EQUALS of the best (`near`) as
    equals, by the pair alone; then the rest by weight."""
    if weight >= near:
        return (not settled, 0, Decimal(0), pair_rank(me, peer))
    return (not settled, 1, -weight, pair_rank(me, peer))


def one_per_network(ranked: Iterable[str], networks: Mapping[str, str], at_most: int) -> list[str]:
    """The first `at_most` peers of `ranked`, one per network (a peer not in `networks` is a network of its own)."""
    kept: list[str] = []
    placed: set[str] = set()
    for p in ranked:
        network = networks.get(p, "peer:" + p)
        if network in placed:
            continue
        placed.add(network)
        kept.append(p)
        if len(kept) >= at_most:
            break
    return kept
