"""Which peers a node's derived recognition names (pure): docs/market.md, "Recognition".

Once some peer that is up has earned anything (money exchanged with this node), only such peers, the most money
first; while none has (bootstrapping), a sample of the peers that are up, mutual from both ends of a pair.  The
node side, which reads the peers' health and the money counters, is `xsc.market.recognition`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from decimal import Decimal

EQUALS = Decimal("0.5")  # bootstrapping: derived weights this close to the best are equals when the bound picks peers


def pair_rank(me: str, peer: str) -> str:
    """A peer's place among equals while bootstrapping: different on every node (nodes that see the same equal peers
    each keep a sample of their own, so the whole network stays connected), and the same from both ends of a pair,
    so the peers a node recognises mostly recognise it too: a node subscribes to and hears from those it recognises
    and those that recognise it, about `at_most` peers in all rather than twice as many."""
    return hashlib.sha256(":".join(sorted((me, peer))).encode()).hexdigest()


def rank_derived(me: str, up: Mapping[str, Decimal], earned: Mapping[str, int], failed: Collection[str],
                 at_most: int, secret: bytes) -> list[str]:
    """The peers whose derived weight is published, best first (pure).

    `up`: peer -> its derived weight, for the peers proven up; `earned`: peer -> micro-credits exchanged with it;
    `failed`: peers whose last audit failed; `secret`: this node's own, never published.  When some peer in `up`
    has earned anything, only such peers are kept: most money first (a failed last audit after every clean one),
    equal sums in an order no id can be ground for (SHA-256 under `secret`, which no other node knows).  Otherwise
    (bootstrapping) the weights within EQUALS of the best are equals, ranked by the pair alone (`pair_rank`), then
    the rest by weight."""
    earning = [p for p in up if p != me and earned.get(p, 0) > 0]
    if earning:
        def tie(p: str) -> str:
            return hashlib.sha256(secret + p.encode()).hexdigest()
        return sorted(earning, key=lambda p: (p in failed, -earned[p], tie(p)))[:at_most]
    # By weight, every node would keep the same few most available peers, and those would carry the whole network's
    # subscriptions; by tenths, a probe that happened to fail (a peer probed a few times has 0.5 for one failure)
    # made two nodes rank a pair differently, so fewer choices were mutual and each node's neighbourhood grew.
    candidates = {p: w for p, w in up.items() if p != me and w > 0}
    near = max(candidates.values(), default=Decimal(0)) - EQUALS
    return sorted(candidates, key=lambda p: (0, Decimal(0), pair_rank(me, p)) if candidates[p] >= near
                  else (1, -candidates[p], pair_rank(me, p)))[:at_most]
