"""This node's ITC id for its allocation records: forked from a peer, given to peers, stored, rejoined after a restart.

A node without an id asks a peer to fork its own (`ensure`, `POST /v1/peer/allocation/fork`): the peer keeps one
half, answers the other, and stores its half before answering (`fork`).  A node that got no fork within its fork wait
(`market.allocation_fork_wait`, 3 s) seeds the whole id when it knows no peer and was given none to join (the first
node of a network), or has the smallest node id of the peers it knows (none of which has an id yet: they all started
at once); the others fork from it on their next try.  A node given peers to join waits for one of them, however long
it takes.  A restarted node *rejoins*: it forks a fresh id from a live peer and gives its stored one back in the
same request (`"retire"`: the peer joins it into its own before forking, so the id space does not fragment); with no
peer to rejoin through within its fork wait it goes on with its stored id (nobody else owns it).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .. import keys
from ..db import Database
from ..errors import InvalidArgument, PeerError, XscError
from ..itc import ItcError, Stamp
from ..tasks import Quota
from .core.records import MAX_STAMP_HEX, Held

log = logging.getLogger(__name__)

FORK_PATH = "/v1/peer/allocation/fork"
# Each fork halves this node's share of the ITC id space for good (and deepens the id every record carries), so a
# known peer gets FORK_BURST at once and one more every 1 / FORK_RATE s: a joining node needs one, a restarted one
# gives its old id back with the one it takes.  A stranger gets none.
FORK_BURST = 2
FORK_RATE = 1 / 600
# Decoding refuses event counters wider than 64 bits, and join adds counters along a path: a peer's stamp near that
# bound, folded into ours, would make every stamp we publish after it (and the one we store) unreadable.  A stamp
# higher than this is not folded; our own events would take 2**62 rounds to close the gap that remains.
FOLD_HEIGHT = 1 << 62
# A record's stamp is at most MAX_STAMP_HEX hex digits: this node folds no more than half of that into its own, so its
# events (which grow the tree only along its id) never take it past what a peer accepts.
FOLD_HEX = MAX_STAMP_HEX // 2
FORK_ANSWER = FOLD_HEX + 1024  # bytes of a fork's answer read at most: a stamp of FOLD_HEX hex digits, and "retired"


class ItcIds:
    """The owner of this node's allocation ITC stamp (`keys.MARKET_ALLOCATION`)."""

    def __init__(self, *, me: str, db: Database, peers: Any, held: tuple[Held, ...], targets: Callable[[], list],
                 joins: bool, forks: Quota | None, fork_wait: float = 3.0) -> None:
        self.me = me
        self.held = held  # the allocation records held (states, receipts): a new event and a fork are after them
        self.db = db
        self.peers = peers  # a PeerView (None: a node on its own)
        self.targets = targets  # the peers that are up, to fork from
        self.joins = joins  # started with peers to join (peers.urls): it forks its id, never seeds one alone
        self.forks = forks  # per peer, the forks it may take (FORK_BURST, FORK_RATE); None: no bound
        self.fork_wait = fork_wait  # seconds without a fork before it seeds an id, or keeps its stored one
        raw = db.get(keys.MARKET_ALLOCATION)
        # A restarted node's id, until it rejoins through a peer (`ensure`): it publishes nothing before.
        self.retiring: Stamp | None = Stamp.decode(bytes.fromhex(raw.decode())) if raw else None
        self.stamp: Stamp | None = None
        self.forked_from: str | None = None
        self.rejoined = False  # this run got its id by giving its stored one back to a peer
        self._started = time.monotonic()

    def _keep(self, stamp: Stamp, *, sync: bool) -> Stamp:
        self.stamp = stamp
        self.db.put(keys.MARKET_ALLOCATION, stamp.encode().hex().encode(), sync=sync)
        return stamp

    def event(self) -> Stamp:
        """This node's next ITC event, after every stamp it received (but those that would make its own unreadable
        to peers: higher than FOLD_HEIGHT, or growing it past FOLD_HEX)."""
        seens = [seen for records in self.held for owner in records.owners()
                 if owner != self.me and _foldable(seen := records.seen(owner))]
        stamp = self.stamp
        for seen in seens:
            stamp = stamp.join(seen.peek())
        if len(stamp.encode()) * 2 > FOLD_HEX:
            # Event trees join as unions: peers' stamps, each within bounds, can add up past what a record may carry.
            # Fold the smallest first, each only while the whole stays within bounds.
            stamp = self.stamp
            for seen in sorted(seens, key=lambda s: len(s.encode())):
                stamp = _fold(stamp, seen.peek())
        return self._keep(stamp.event(), sync=False)

    def fork(self, peer: str, body: Any) -> dict:
        """Give a joining peer (already checked to be known) half of this node's id, stored before it is answered,
        within its quota of forks (QuotaExceeded).

        A returning peer sends the id it had (`{"retire": HEX}`): it is joined into this node's own first
        (ITC's retire: the id space stays whole) when it is disjoint from ours and within the id of the
        newest record we hold of that peer (if any); the half given is after everything we hold of it."""
        if self.stamp is None:
            raise InvalidArgument("this node has no ITC id yet to fork", hint="ask another peer")
        if self.forks is not None:
            self.forks.check(peer, time.monotonic(), "ITC forks")
        stamp, retired = self.stamp, False
        old = _retired_stamp(body)
        if old is not None and not old.is_anonymous and _disjoint(old.id, stamp.id):
            latest = [s for s in (records.seen(peer) for records in self.held)
                      if s is not None and not s.is_anonymous]  # (a merge of concurrent copies keeps no id)
            if all(_within(old.id, s.id) for s in latest):
                joined = _fold(stamp, old)
                stamp, retired = joined, joined is not stamp
        for records in self.held:
            seen = records.seen(peer)
            if seen is not None:
                stamp = _fold(stamp, seen.peek())  # its next records must be newer than all we hold of it
        try:
            keep, give = stamp.fork()
        except ItcError as err:
            raise InvalidArgument(f"cannot fork this node's ITC id: {err}", hint="ask another peer") from None
        self._keep(keep, sync=True)
        log.info("forked half of the allocation ITC id for %s%s", peer, " (its old id given back)" if retired else "")
        return {"stamp": give.encode().hex(), "retired": retired}

    async def ensure(self) -> bool:
        """Fork an id from a peer (or seed one when no peer was known for `fork_wait` s); a restarted node forks a
        fresh one and gives its stored id back (or keeps it when no peer answered for `fork_wait` s)."""
        if self.stamp is not None:
            return True
        old = self.retiring
        ask = {} if old is None else {"retire": old.encode().hex()}
        for d in self.targets():
            try:
                response = await self.peers.request(d.url, "POST", FORK_PATH, json=ask, to=d.id, max_size=FORK_ANSWER)
                text = response.json()["stamp"]
                if len(text) > FOLD_HEX:  # it would be this node's own, in every record it publishes
                    raise ValueError(f"a forked stamp of {len(text)} hex digits (at most {FOLD_HEX})")
                stamp = Stamp.decode(bytes.fromhex(text))
            except (PeerError, XscError, ValueError, KeyError, TypeError) as err:
                log.debug("no ITC fork from %s: %s", d.id, err)
                continue
            if stamp.is_anonymous or not _foldable(stamp):
                continue
            if old is not None:
                stamp = stamp.join(old.peek())  # after every event of its own before the restart
                self.rejoined, self.retiring = True, None
            self.forked_from = d.id
            self._keep(stamp, sync=True)
            return True
        waited = time.monotonic() - self._started >= self.fork_wait
        targets = self.targets()
        if old is not None and (waited or not targets):
            self.stamp, self.retiring = old, None  # no peer to rejoin through: the stored id is still ours alone
            return True
        # Nobody gave one: the first node of a network (no peer), or every peer is as new as this one
        # (then the smallest node id seeds and the others fork from it).
        alone = not targets and not self.joins
        smallest = bool(targets) and self.me < min(d.id for d in targets)
        if waited and (alone or smallest):
            self._keep(Stamp.seed(), sync=True)
            return True
        return False


def _foldable(stamp: Stamp | None) -> bool:
    return stamp is not None and stamp.height <= FOLD_HEIGHT


def _fold(stamp: Stamp, other: Stamp) -> Stamp:
    """`stamp.join(other)`, or `stamp` itself when the join would take it past FOLD_HEIGHT or FOLD_HEX."""
    if not _foldable(other):
        return stamp
    joined = stamp.join(other)
    return joined if len(joined.encode()) * 2 <= FOLD_HEX else stamp


def _retired_stamp(body: Any) -> Stamp | None:
    """The id a returning peer gives back with its fork request ({"retire": HEX}), or None."""
    text = body.get("retire") if isinstance(body, dict) else None
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > MAX_STAMP_HEX:
        raise InvalidArgument(f"retire must be the hex of an ITC stamp of at most {MAX_STAMP_HEX} digits")
    try:
        return Stamp.decode(bytes.fromhex(text))
    except ValueError:
        raise InvalidArgument("retire must be the hex of an ITC stamp") from None


def _disjoint(a: Any, b: Any) -> bool:
    """ITC ids `a` and `b` own no part of the interval in common."""
    if a == 0 or b == 0:
        return True
    if a == 1 or b == 1:
        return False
    return _disjoint(a[0], b[0]) and _disjoint(a[1], b[1])


def _within(a: Any, b: Any) -> bool:
    """Every part of the interval id `a` owns, id `b` owns too."""
    if a == 0 or b == 1:
        return True
    if a == 1 or b == 0:
        return False  # a normal id other than 1 never owns the whole interval
    return _within(a[0], b[0]) and _within(a[1], b[1])
