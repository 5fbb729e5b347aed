"""Where a file's shares go: weighted rendezvous hashing of (storage index, node id).

Every node ranks candidates the same way from the same facts, without coordination:
node j's score for a file is  -w_j / ln(u_j),  where u_j in (0, 1) is taken from
SHA-256("xsc:placement:v1:" || storage index || node id) and w_j > 0 is the node's weight
(availability x free capacity, as the caller computes it).  The highest scores win.  This is
the weighted form of highest-random-weight hashing: node j comes first with probability
w_j / sum(w), and removing a node only moves the shares it held.

With at least N eligible nodes the N shares go to N distinct nodes; with fewer they are
dealt round the ranked nodes, so the counts differ by at most one.

A put never leaves a file less safe than keeping it at home: with fewer than N providers, K shares stay on
the user's own node (`home_shares`), so the loss of any other nodes leaves it readable.  `survival` says how
many node losses a placement survives: of any nodes, and of nodes other than the user's own.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass

from .erasure import K, N

_TAG = b"xsc:placement:v1:"
# The node of a share a search found no node holding, in a check's or verify's report (what the CLI tells apart).
NONE_FOUND = "(none found)"


def unreadable(node: str, why: object) -> str:
    """Why a share could not be read, for a report: on which node, unless no node was found holding it (`why` says
    then which nodes could not be asked)."""
    return f"unreadable: {why}" if node == NONE_FOUND else f"unreadable on node {node}: {why}"


@dataclass(frozen=True)
class Candidate:
    node_id: str
    weight: float  # > 0: availability x free capacity; a node with no room is left out by the caller
    free: int  # bytes of block space it reported free


def score(storage_index: bytes, candidate: Candidate) -> float:
    digest = hashlib.sha256(_TAG + storage_index + candidate.node_id.encode()).digest()
    u = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64  # strictly inside (0, 1)
    return -candidate.weight / math.log(u)


def rank(storage_index: bytes, candidates: list[Candidate], share_bytes: int) -> list[Candidate]:
    """Candidates with room for a share, best first (ties broken by node id, so the order is total)."""
    eligible = [c for c in candidates if c.weight > 0 and c.free >= share_bytes]
    return sorted(eligible, key=lambda c: (-score(storage_index, c), c.node_id))


def place_shares(storage_index: bytes, candidates: list[Candidate], share_bytes: int,
                 shares: int = N) -> list[str]:
    """The node id holding each share (index = share number)."""
    ranked = rank(storage_index, candidates, share_bytes)
    if not ranked:
        raise ValueError("no candidate node has room for a share")
    return [ranked[i % len(ranked)].node_id for i in range(shares)]


def home_shares(providers: int, home_offers: bool, asked_to_spread: bool) -> int:
    """How many of a put's N shares stay on the user's own node whatever the market says: K while there are
    fewer than N providers (counting this node), unless this node offers no storage or the user asked to spread."""
    if not home_offers or asked_to_spread or providers >= N:
        return 0
    return K


def peer_failures_survived(placement: list[str], me: str, needed: int = K) -> int:
    """How many of the *other* nodes holding shares may be lost, whichever they are, with this node up: all
    of them when this node keeps `needed` shares."""
    others = [node for node in placement if node != me]
    return node_failures_survived(others, needed - (len(placement) - len(others)))


def node_failures_survived(placement: list[str], needed: int = K) -> int:
    """How many node failures the file survives whichever nodes fail: the most f such that
    losing the f nodes holding the most shares still leaves `needed` shares."""
    counts = sorted(Counter(placement).values(), reverse=True)
    if needed <= 0:
        return len(counts)
    lost, survived = 0, 0
    for count in counts:
        lost += count
        if len(placement) - lost < needed:
            break
        survived += 1
    return survived


# What spreads the shares of a file that one node's loss loses: no repair moves a share that is there (it rebuilds
# missing ones onto other nodes), a put with more nodes offering storage places them anew.
SPREAD_IT = ("add nodes with `xsc peers add URL`, then put the file again to spread its shares, and `xsc store rm` "
             "this capability")


def single_points(placement: list[str], me: str, needed: int = K) -> str:
    """What to warn of a placement that one other node's loss loses (empty when none does): those nodes, named.
    Shares piled on this node are not warned of: that is home's safety, as a put promises it (any other node may
    go, not this one)."""
    heavy = sorted({node for node in placement if node != me and len(placement) - placement.count(node) < needed})
    return "; ".join(f"{placement.count(node)} shares are on node {node}: its loss loses the file" for node in heavy) \
        + (f" ({SPREAD_IT})" if heavy else "")

