"""This node's ITC id for its allocation records: forked from a peer, given to peers, stored, rejoined after a restart.

A node without an id asks a peer to fork its own (`ensure`, `POST /v1/peer/allocation/fork`): the peer keeps one
half, answers the other, and stores its half before answering (`fork`).  A node given peers to join never seeds an
id: it waits for a fork, however long it takes, and says so in what it asks (`"joins": true`).  One given none (the
first node of a network) that got no fork within its fork wait (`market.allocation_fork_wait`, 3 s) seeds the whole id
when it knows no peer that may seed one too, or has the smallest node id of those it knows (none of which has an id
yet: they all started at once); the others fork from it on their next try.  A joining node that seeded as the
smallest of the few peers it knew yet would overlap the first node's seed: on a loaded machine, a network learns of
itself slower than the fork wait.  A restarted node *rejoins*: it forks a fresh id from a live peer and gives its
stored one back in the same request (`"retire"`: the peer joins it into its own before forking, so the id space does
not fragment); with no peer to rejoin through within its fork wait it goes on with its stored id (nobody else owns it).

Each fork is asked under a name kept before it is asked (`core/forks.py`): a peer whose answer was lost on the way gives
the same half again when asked again under that name, so the ids of the network still add up to the whole.  A node
asks again the peers it asked before it asks others; once it has an id it still asks them again, now and then
(`fork_wait`), and joins what they answer into its own.  It never seeds an id while a fork it asked may have been
given, nor goes on with its stored id while a peer it gave that id back to may have taken it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from .. import keys
from ..db import Database
from ..errors import ForkNotGiven, InvalidArgument, PeerError, PeerRefused, PeerUnreachable, XscError
from ..identity import parse_public_id, public_id
from ..itc import ItcError, Stamp
from ..net.peer_client import PeerResponse
from ..tasks import Quota, woken_loop
from .core.forks import NAME_HEX, Asked, decode_asked, encode_asked, fork_name, given_answer, given_record, taken
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
# The forks given that are kept to be given again: one per peer (its latest named request), for as many peers as the
# directory holds (peers.service.MAX_PEERS) and more; past that the oldest is forgotten.  Each is a stamp of at most
# FOLD_HEX hex digits on disk; only its name is held in memory.
MAX_GIVEN = 1024
# The forks this node asked and has no answer to, each kept until its peer answers: past this many, a new one forgets
# the oldest (but the one giving back the stored id), whose half, if it was given, is lost.
MAX_ASKED = 16


class ItcIds:
    """The owner of this node's allocation ITC stamp (`keys.MARKET_ALLOCATION`), of the forks it asked peers for
    (`keys.MARKET_FORKS_ASKED`) and of those it gave them (`keys.MARKET_FORKS_GIVEN`)."""

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
        self.asked = decode_asked(db.get(keys.MARKET_FORKS_ASKED))  # forks asked, not answered yet (oldest first)
        self.given = _Given(db)
        # Peers that said, asking this node for a fork, that they join and never seed (one entry per known peer): the
        # first node does not wait for them to seed.
        self.never_seed: set[str] = set()
        self._started = time.monotonic()
        self._asking = asyncio.Event()  # a fork asked: the loop asking again (`settling`), asleep while none was, wakes

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
        within its quota of forks (QuotaExceeded).  A request named as the peer's last one (`{"name": HEX}`) is
        answered as that one was, whatever this node holds now: its answer was lost on the way.  A peer that says it
        joins (`{"joins": true}`) never seeds an id: this node, the first of a network, need not wait for it to.

        A returning peer sends the id it had (`{"retire": HEX}`): it is joined into this node's own first
        (ITC's retire: the id space stays whole) when it is disjoint from ours and within the id of the
        newest record we hold of that peer (if any); the half given is after everything we hold of it."""
        name = fork_name(body)
        if isinstance(body, dict) and body.get("joins") is True:
            self.never_seed.add(peer)
        again = None if name is None else self.given.answer(peer, name)
        if again is not None:
            log.info("gave %s the half of the allocation ITC id it was given before under that name", peer)
            return again
        if self.stamp is None:
            raise ForkNotGiven("this node has no ITC id yet to fork", hint="ask another peer")
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
            raise ForkNotGiven(f"cannot fork this node's ITC id: {err}", hint="ask another peer") from None
        answer = {"stamp": give.encode().hex(), "retired": retired}
        with self.db.write_batch(sync=True) as batch:  # the half kept and the half given, together
            batch.put(keys.MARKET_ALLOCATION, keep.encode().hex().encode())
            if name is not None:
                self.given.remember(batch, peer, name, answer)
        self.stamp = keep
        log.info("forked half of the allocation ITC id for %s%s", peer, " (its old id given back)" if retired else "")
        return answer

    async def ensure(self) -> bool:
        """Fork an id from a peer, the peers asked before first (or seed one when no peer was known for `fork_wait`
        s); a restarted node forks a fresh one and gives its stored id back (or keeps it when no peer answered for
        `fork_wait` s and none it gave it back to may have taken it)."""
        if self.stamp is not None:
            return True
        old, targets = self.retiring, self.targets()
        asked = {a.peer: a for a in self.asked}
        for d in sorted(targets, key=lambda d: d.id not in asked):
            if await self._ask(d, asked.get(d.id) or self._ask_anew(d.id)):
                return True
        waited = time.monotonic() - self._started >= self.fork_wait
        if old is not None:
            if (waited or not targets) and not self.retire_asked():
                self.stamp, self.retiring = old, None  # no peer to rejoin through: the stored id is still ours alone
                return True
            return False
        # Nobody gave one: the first node of a network (no peer that may seed), or every peer is as new as this one
        # (then the smallest node id seeds and the others fork from it).  Not while a peer may have given one: the
        # seed would overlap its half.  A node given peers to join never seeds: one of them, or the node they joined,
        # does.
        if self.joins:
            return False
        rivals = [d.id for d in targets if d.id not in self.never_seed]
        if waited and (not rivals or self.me < min(rivals)) and not self.asked:
            self._keep(Stamp.seed(), sync=True)
            return True
        return False

    async def settle(self) -> None:
        """Ask again, under the same names, the peers that may have given this node a fork whose answer it never
        got, and join what they answer into its id (their halves would be nobody's otherwise)."""
        if self.stamp is None or not self.asked:
            return
        up = {d.id: d for d in self.targets()}
        for asked in list(self.asked):
            if asked.peer in up:
                await self._ask(up[asked.peer], asked)

    def settling(self) -> Callable[[], Awaitable[None]]:
        """The loop asking again every `fork_wait` s (`settle`), apart from the rounds: a peer may take a request's
        whole time to answer.  While no fork asked is unanswered (a node whose id is settled) it sleeps until one is
        asked (`_ask_anew`), rather than waking every `fork_wait` s to find none."""
        return woken_loop("allocation forks", self._asking, lambda: self.fork_wait if self.asked else None, self.settle,
                          wait_first=True)

    async def _ask(self, d: Any, asked: Asked) -> bool:
        """Ask `d` for the fork `asked`: True when its answer was taken."""
        try:
            body = {**asked.body(), "joins": True} if self.joins else asked.body()
            response = await self.peers.request(d.url, "POST", FORK_PATH, json=body, to=d.id,
                                                max_size=FORK_ANSWER)
            give = _given(response, d.id)
        except PeerUnreachable as err:
            log.debug("no ITC fork from %s: %s", d.id, err)
            if err.details.get("sent") is False and not asked.reached:
                self._forget(asked)  # it never reached the peer: nothing was given under its name
            else:
                asked.reached = True
            return False
        except PeerRefused as err:
            log.debug("no ITC fork from %s: %s", d.id, err)
            status = err.details.get("peer_status")
            # The peer keeps what it gave a name and answers that again: it says it gave none under this one, or it
            # refused the only request that may have reached it (or answered one too large to read, or one that is
            # no fork, both struck: one this node would never take).  Else (a peer that does not know this node now,
            # or is past its rate) ask again.
            if status is None or err.details.get("peer_code") == ForkNotGiven.code or \
                    not asked.reached and status < 500:
                self._forget(asked)
            else:
                asked.reached = True
            return False
        except PeerError as err:
            log.debug("no ITC fork from %s: %s", d.id, err)
            asked.reached = True
            return False
        except (XscError, ValueError) as err:
            log.debug("an ITC fork from %s not taken: %s", d.id, err)
            self._forget(asked)  # answered with one it would answer again, and this node would not take again
            return False
        self._take(give, asked)
        return self.stamp is not None

    def _ask_anew(self, peer: str) -> Asked:
        """A fork to ask `peer` for, kept before it is asked; it gives the stored id back unless one asked does."""
        old = self.retiring
        retire = None if old is None or self.retire_asked() else old.encode().hex()
        asked = Asked(peer, secrets.token_hex(NAME_HEX // 2), retire, reached=False)
        if len(self.asked) >= MAX_ASKED:
            kept = old.encode().hex() if old is not None else None
            oldest = next((a for a in self.asked if a.retire is None or a.retire != kept), self.asked[0])
            log.warning("forgot the ITC fork asked of %s: %d asked and unanswered", oldest.peer, len(self.asked))
            self.asked.remove(oldest)
        self.asked.append(asked)
        self.db.put(keys.MARKET_FORKS_ASKED, encode_asked(self.asked), sync=True)
        self._asking.set()
        return asked

    def asked_of(self) -> list[str]:
        """The peers that may hold a fork whose answer this node never got (it asks them again)."""
        return [a.peer for a in self.asked]

    def retire_asked(self) -> bool:
        """A fork asked and not answered gives the stored id back: the peer asked may have joined it into its own."""
        return self.retiring is not None and self.retiring.encode().hex() in {a.retire for a in self.asked}

    def _forget(self, asked: Asked) -> None:
        if asked in self.asked:
            self.asked.remove(asked)
            # (unsynced: one lost comes back as asked, and is asked again)
            self.db.put(keys.MARKET_FORKS_ASKED, encode_asked(self.asked), sync=False)

    def _take(self, give: Stamp, asked: Asked) -> None:
        """This node's id with the half `asked` was answered with, kept with that fork no longer asked."""
        if asked not in self.asked:
            # Taken already: the round's loop, a caller of ensure_id and `settle` may ask the same peer under the same
            # name at once, and it answers each alike (taken twice, the half would be joined into the id again).
            return
        first, retire_asked = self.stamp is None, self.retire_asked()
        self.asked.remove(asked)
        stamp = taken(self.stamp, give, asked, self.retiring, retire_asked)
        with self.db.write_batch(sync=True) as batch:
            batch.put(keys.MARKET_ALLOCATION, stamp.encode().hex().encode())
            batch.put(keys.MARKET_FORKS_ASKED, encode_asked(self.asked))
        if first:
            self.forked_from = asked.peer
            self.rejoined = asked.retire is not None and self.retiring is not None \
                and asked.retire == self.retiring.encode().hex()
        else:
            log.info("joined the half of an ITC fork %s answered late into this node's id", asked.peer)
        self.stamp, self.retiring = stamp, None


class _Given:
    """The fork this node gave each peer's latest named request, kept (`keys.MARKET_FORKS_GIVEN`) to answer that name
    again; MAX_GIVEN peers at most, the oldest forgotten.  Only names are held in memory."""

    def __init__(self, db: Database) -> None:
        self.db = db
        kept = []
        with db.iterator(prefix=keys.MARKET_FORKS_GIVEN) as given:
            for key, raw in given:
                name, at, _ = given_answer(raw)
                kept.append((at, public_id(keys.split_market_fork_given(key)), name))
        self.names: OrderedDict[str, str] = OrderedDict((peer, name) for _, peer, name in sorted(kept))
        self._at = max((at for at, _, _ in kept), default=0)

    def answer(self, peer: str, name: str) -> dict | None:
        if self.names.get(peer) != name:
            return None
        raw = self.db.get(keys.market_fork_given(parse_public_id(peer)))
        return None if raw is None else given_answer(raw)[2]

    def remember(self, batch: Any, peer: str, name: str, answer: dict) -> None:
        self._at += 1
        batch.put(keys.market_fork_given(parse_public_id(peer)), given_record(name, answer, self._at))
        self.names.pop(peer, None)
        self.names[peer] = name
        while len(self.names) > MAX_GIVEN:
            oldest, _ = self.names.popitem(last=False)
            batch.delete(keys.market_fork_given(parse_public_id(oldest)))


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


def _given(response: PeerResponse, peer: str) -> Stamp:
    """The half a peer's answer to a fork gives: within what this node may carry in every record it publishes.  An
    answer that is no fork (no stamp, or one with no id: a fork of an id is never empty) is struck against its node
    (net/peer_client.py); a stamp this node would not carry (too long, too high) is only not taken."""
    answer = response.json()
    text = answer.get("stamp") if isinstance(answer, dict) else None
    if isinstance(text, str) and len(text) > FOLD_HEX:  # it would be this node's own, in every record it publishes
        raise ValueError(f"a forked stamp of {len(text)} hex digits (at most {FOLD_HEX})")
    try:
        stamp = Stamp.decode(bytes.fromhex(text)) if isinstance(text, str) else None
    except ValueError:  # not hex, or no stamp's encoding (MalformedStamp)
        stamp = None
    if stamp is None or stamp.is_anonymous:
        raise response.shapeless(f"node {peer} answered a fork of its ITC id without a stamp that has an id")
    if not _foldable(stamp):
        raise ValueError("a forked stamp too high to fold")
    return stamp
