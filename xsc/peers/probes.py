"""Health probes of peers: the schedule and the history in LevelDB (`h/`).  Routes: node/http/health.py.

Every `health.probe_interval` seconds (varied by +-probe_jitter of itself, so that nodes started
together do not probe in lockstep) this node challenges its neighbours and a sample of the other peers
(`HealthService._due`); each answer must be signed by the peer's key (xsc.health.core.challenge).  The
statistics are xsc.health.core.stats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timezone
from typing import Any


from ..config import HealthSection
from ..db import Database
from ..errors import PeerError
from ..health import Availability, PeerHistory, availability, reachable_status, record_audit, record_probe
from ..health.core.stats import (DAY_MS, HOUR_MS, MAX_ERROR, ask_again, bucket_start, last_probe_ok, probe_due,
                                 sparkline)
from ..identity import parse_public_id, public_id
from ..tasks import Pacer, at_most, every, now_ms, stop
from .core.changes import ChangeFeed
from .core.descriptors import NodeDescriptor
from .service import PeerDirectory
from .store import PeerStore, PeerWrites

log = logging.getLogger(__name__)
RECORD_BATCH = 64  # probe results recorded (a history and its JSON each) before the event loop is let go
REPROBE_AFTER = 5.0  # seconds: a peer counted as down that keeps sending requests is probed at most this often
# Probes in flight at once.  Each keeps some 40 objects alive while it runs (coroutines, its task and timer, an
# aiohttp request): a round of 1,000 peers all at once kept ~40,000, and every full garbage collection during the
# round scanned them (a stranger's 1,000 fake peers made those 95-165 ms of CPU).  A round of peers
# that do not answer takes probe_timeout per PROBES_AT_ONCE of them.
PROBES_AT_ONCE = 64
# Probes begun a second.  A probe of an address that refuses at once is ~0.65 ms of the loop's CPU: a round over a
# stranger's 1,000 fake peers, 64 at a time, kept the loop busy for a second in turns of ~15 ms, and a /health
# request (some five turns) waited behind them.  A round of MAX_PEERS takes 2.5 s of it.
PROBE_STARTS = 400
# Scheduled rounds a peer outside the neighbourhood stays in the sample of others probed every round.  A probe of
# a peer with no connection open is a TCP and TLS handshake on both nodes: with two new others a round, an idle
# node of 64 opened or took 35 connections a minute (0.87% of a core); with the sample kept for a minute, whose
# connections are reused, 12 (0.73%).  Each other is still probed in turn.
OTHERS_KEPT = 6
Challenge = Callable[[str, str, float], Awaitable[dict]]


class HealthService:
    def __init__(self, *, db: Database, directory: PeerDirectory, challenge: Challenge, config: HealthSection,
                 neighbours: Callable[[], Collection[str]] = frozenset) -> None:
        self._store = PeerStore(db)
        self.directory = directory  # the known peers (the peer service adds and removes them)
        self.challenge = challenge  # (url, node id, timeout) -> the peer's signed answer (peers/service.py)
        # Told of what probes learn (the peer service watches): a fresh descriptor in an answer, a first answer.
        self._on_descriptor: list[Callable[[list], Any]] = []
        self._on_first_answer: list[Callable[[str], Any]] = []
        self.config = config
        self.neighbours = neighbours  # the peers probed every round (those the node recognises); others in turn
        self._histories: dict[str, PeerHistory] = {}
        for node_key, value in self._store.histories():
            try:
                self._histories[public_id(node_key)] = PeerHistory.from_json(value)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("skipping the unreadable probe history of %s", node_key.hex())
        self.last_round: dict | None = None
        self.version = 0  # grows at every probe or audit recorded, and every history forgotten
        self.flips = ChangeFeed()  # the peers that came up or went down (or were forgotten), each a step of `ups`
        self.probed = ChangeFeed()  # the peers whose history changed: a probe or audit recorded, a history forgotten
        self._reachable: tuple[tuple[int, int], list[bool | None]] | None = None  # check_reachable's, and its state
        # table()'s figures of a peer, kept while its history and now's 5-minute bucket are the same (they
        # depend on nothing else): id -> (history, bucket start, figures).  The dashboard polls the table.
        self._figures: dict[str, tuple[PeerHistory, int, dict]] = {}
        self._available: dict[str, tuple[PeerHistory, int, Availability]] = {}  # the same for availability()
        self._round_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._reprobed: dict[str, float] = {}  # id -> when a request of that down peer last had it probed
        self._unreached: dict[str, float] = {}  # id -> when a request to that up peer, unanswered, last had it probed
        self._probing: set[str] = set()  # the peers whose probe is under way
        self._reprobes: set[asyncio.Task] = set()
        # Nodes learned of -> their first probe, until it is made; a node that leaves the directory takes its probe
        # with it (`forget`), so no more wait than the directory holds, however many nodes came and went.
        self._first: dict[str, asyncio.Task] = {}
        self._others: dict[str, int] = {}  # the sample of others probed every round: id -> rounds left after this
        self._in_flight = asyncio.Semaphore(PROBES_AT_ONCE)  # probes at once, whatever asked for them
        self._forget_gone()
        self._starts = Pacer(PROBE_STARTS, PROBES_AT_ONCE // 4)  # ... and begun a second
        self.asked_again = 0  # probes made twice (`ask_again`) since the node started
        self.last_asked_again: str | None = None  # the first attempt's error of the last of them

    # --- what the rest of the node uses ---------------------------------------------
    @property
    def ups(self) -> int:
        """Grows whenever a peer may have come up or gone down: what a kept invoke deal rests on."""
        return self.flips.version

    def availability(self, node_id: str) -> Availability:
        """A peer's availability, made once per history and 5-minute bucket (it depends on nothing else): the
        market, gossip and matching ask it of every peer, and a full directory's took ~0.2 s of CPU on the loop."""
        history = self._histories.get(node_id)
        if history is None:
            return availability(PeerHistory(), now_ms())
        now = now_ms()
        bucket = bucket_start(now)
        kept = self._available.get(node_id)
        if kept is not None and kept[0] is history and kept[1] == bucket:
            return kept[2]
        made = availability(history, now)
        if history.buckets and history.buckets[-1].start > bucket:  # a clock set back: now counts, keep nothing
            self._available.pop(node_id, None)
        else:
            self._available[node_id] = (history, bucket, made)
        return made

    def record_audit(self, node_id: str, ok: bool, detail: str = "") -> None:
        """Keep the result of a storage audit of that peer with its probe history."""
        history = record_audit(self._histories.get(node_id, PeerHistory()), now_ms(), ok, detail)
        self._histories[node_id] = history
        self.version += 1
        self.probed.step(node_id)  # (its availability's last audit changed: the market's recognition reads it)
        self._store.history(parse_public_id(node_id), history.to_json())

    def heard_from(self, node_id: str) -> None:
        """A peer's signed request checked out.  If that peer is counted as down, probe it now rather than
        at the next round: a node that just restarted is then placed on again at once, where a put meanwhile
        would double its shares up on the other nodes (6 shares on 5 nodes survive 1 node failure, not 2)."""
        peer = self.directory.get(node_id)
        if peer is None or self._task is None or self.availability(node_id).up is not False:
            return
        self._probe_out_of_turn(peer, self._reprobed)

    def unreached(self, node_id: str) -> None:
        """A request to that peer found no answer.  If it is counted as up, probe it now rather than at the next
        round (at most every REPROBE_AFTER s): a node stopped a moment ago is not shown up (`xsc peers ls`), nor
        placed on, for up to a probe interval after this node already failed to reach it."""
        peer = self.directory.get(node_id)
        if (peer is None or self._task is None or node_id in self._probing
                or self.availability(node_id).up is not True):
            return  # unknown, stopping, its probe under way (whose own failure this may be), or not counted up
        self._probe_out_of_turn(peer, self._unreached)

    def _probe_out_of_turn(self, peer: NodeDescriptor, last: dict[str, float]) -> None:
        """Probe `peer` now, unless `last` (id -> when a probe of this cause was last started) says one was started
        within REPROBE_AFTER s."""
        now = time.monotonic()
        if now - last.get(peer.id, -REPROBE_AFTER) < REPROBE_AFTER:
            return
        last[peer.id] = now
        task = asyncio.create_task(self._reprobe(peer), name="xsc-reprobe")
        self._reprobes.add(task)
        task.add_done_callback(self._reprobes.discard)

    def answered(self, peer: NodeDescriptor, latency_ms: float) -> None:
        """`peer` answered a signed challenge made outside the probes (the user added it): a probe that succeeded."""
        self._record(self._store, peer, now_ms(), (True, latency_ms, None))

    async def _reprobe(self, peer: NodeDescriptor) -> None:
        self._record(self._store, peer, now_ms(), await self._probe_in_turn(peer))

    async def _probe_in_turn(self, peer: NodeDescriptor) -> tuple[bool, float | None, str | None]:
        """`probe`, with at most PROBES_AT_ONCE in flight, whatever asked for it (a round, a request, learning)."""
        async with self._in_flight:
            await self._starts.start()
            return await self.probe(peer)

    def learned(self, peers: list[NodeDescriptor]) -> None:
        """Nodes just learned of are probed at once, PROBES_AT_ONCE at a time.  Until a probe answers, the market
        and the allocation count a node as perhaps up, and pulled from and subscribed at each one every round: a
        stranger's messages of fake descriptors (16 new nodes each) made this node contact dead addresses
        hundreds of times a second."""
        if self._task is None:
            return
        for peer in peers:
            if peer.id not in self._histories and peer.id not in self._first:
                task = self._first[peer.id] = asyncio.create_task(self._first_probe(peer), name="xsc-first-probe")
                task.add_done_callback(lambda done, node_id=peer.id: self._first.pop(node_id, None)
                                       if self._first.get(node_id) is done else None)

    async def _first_probe(self, peer: NodeDescriptor) -> None:
        async with self._in_flight:
            await self._starts.start()
            if peer.id in self._histories:  # a round probed it while this one waited its turn
                return
            result = await self.probe(peer)
        self._record(self._store, peer, now_ms(), result)

    def _record(self, writes: PeerWrites, peer: NodeDescriptor, at: int,
                result: tuple[bool, float | None, str | None]) -> None:
        """Add one probe's result to the peer's history, in memory and in `writes` (the store or a batch)."""
        if self.directory.get(peer.id) is None:
            return  # removed while we probed it
        before = self._histories.get(peer.id, PeerHistory())
        history = record_probe(before, at, *result)
        self._histories[peer.id] = history
        if result[0] and before.last_ok is None:
            for told in self._on_first_answer:
                told(peer.id)
        self.version += 1
        self.probed.step(peer.id)
        if last_probe_ok(history) != last_probe_ok(before):
            self.flips.step(peer.id)
        writes.history(peer.key, history.to_json())

    def watch(self, *, descriptor: Callable[[list], Any], first_answer: Callable[[str], Any]) -> None:
        """Be told of each fresh descriptor a probe's answer carries, and of each peer's first answer."""
        self._on_descriptor.append(descriptor)
        self._on_first_answer.append(first_answer)

    def forget(self, node_id: str) -> None:
        first = self._first.pop(node_id, None)
        if first is not None:
            first.cancel()
        self.version += 1
        self.flips.step(node_id)
        self.probed.step(node_id)
        self._reprobed.pop(node_id, None)
        self._unreached.pop(node_id, None)
        self._histories.pop(node_id, None)
        self._available.pop(node_id, None)
        self._store.forget_history(parse_public_id(node_id))

    def _forget_gone(self) -> None:
        """At start, forget the histories of nodes no longer in the directory (a node pushed out of a full
        directory is forgotten as it goes, `PeerService._forget`; one whose forgetting a stop cut short is here)."""
        gone = [node_id for node_id in self._histories if self.directory.get(node_id) is None]
        if not gone:
            return
        with self._store.batch() as batch:
            for node_id in gone:
                batch.forget_history(parse_public_id(node_id))
        for node_id in gone:
            self._reprobed.pop(node_id, None)
            self._unreached.pop(node_id, None)
            self._histories.pop(node_id, None)
            self._available.pop(node_id, None)
        self.version += 1
        self.flips.step(*gone)
        self.probed.step(*gone)

    def table(self) -> list[dict]:
        """Every peer's availability, with the last hour's and the last day's as sparkline points (oldest first:
        12 five-minute and 24 one-hour success ratios, None where no probe was made) for the dashboard."""
        now = now_ms()
        bucket = bucket_start(now)
        rows, figures = [], {}
        for d in self.directory.all():
            history = self._histories.get(d.id, PeerHistory())
            kept = self._figures.get(d.id)
            if kept is not None and kept[0] is history and kept[1] == bucket:
                shown = kept[2]
            else:
                shown = {**availability(history, now).to_json(), "sparkline_1h": sparkline(history, now, HOUR_MS, 12),
                         "sparkline_24h": sparkline(history, now, DAY_MS, 24)}
            if not history.buckets or history.buckets[-1].start <= bucket:  # else (a clock set back) now counts
                figures[d.id] = (history, bucket, shown)
            rows.append({"id": d.id, "url": d.url, **shown})
        self._figures = figures
        return rows

    # --- probes -----------------------------------------------------------------------------
    async def probe(self, peer: NodeDescriptor) -> tuple[bool, float | None, str | None]:
        """(ok, latency in ms, error) of one signed challenge to the peer; one that found no answer is made once
        more at once if the peer was up (`ask_again`): one lost packet does not mark a peer down."""
        self._probing.add(peer.id)
        try:
            return await self._challenge(peer)
        finally:
            self._probing.discard(peer.id)

    async def _challenge(self, peer: NodeDescriptor) -> tuple[bool, float | None, str | None]:
        start = time.perf_counter()
        try:
            reply = await self.challenge(peer.url, peer.id, self.config.probe_timeout)
        except PeerError as err:
            if not ask_again(self._histories.get(peer.id, PeerHistory()), err):
                return False, None, str(err)[:MAX_ERROR]
            self.asked_again += 1
            self.last_asked_again = str(err)[:MAX_ERROR]
            log.info("no answer to a probe of peer %s (%s): asking again", peer.id, err)
            start = time.perf_counter()  # the latency is the answered attempt's
            try:
                reply = await self.challenge(peer.url, peer.id, self.config.probe_timeout)
            except PeerError as again:
                return False, None, str(again)[:MAX_ERROR]
        latency = (time.perf_counter() - start) * 1000
        # Its own descriptor only: another node's would add a node past the budget a message of descriptors draws on.
        if isinstance(reply.get("descriptor"), dict) and reply["descriptor"].get("id") == peer.id:
            try:  # the answer carries the peer's fresh descriptor: its free space, without waiting for gossip
                for told in self._on_descriptor:
                    told([reply["descriptor"]])
            except Exception as err:  # a bad descriptor does not undo a good answer
                log.info("peer %s sent a bad descriptor with its answer: %s", peer.id, err)
        return True, latency, None

    async def probe_round(self, due_only: bool = False) -> dict:
        """Probe every known peer (PROBES_AT_ONCE at a time), or only those due (`probe_due`: the rounds the
        node schedules itself); record and persist the results."""
        async with self._round_lock:
            peers = self.directory.all()
            if due_only:
                peers = self._due(peers)
            start = time.perf_counter()
            # The peers last seen up first, so that peers that do not answer never delay them.
            peers = sorted(peers, key=lambda p: self.availability(p.id).up is not True)
            results = await at_most(PROBES_AT_ONCE, (self._probe_in_turn(p) for p in peers))
            seconds = time.perf_counter() - start
            at = now_ms()
            done = list(zip(peers, results))
            for first in range(0, len(done), RECORD_BATCH):  # the loop is let go between batches
                if first:
                    await asyncio.sleep(0)
                with self._store.batch() as batch:
                    for peer, result in done[first:first + RECORD_BATCH]:
                        self._record(batch, peer, at, result)
            this_round = {"time": at, "seconds": seconds, "peers": len(peers), "ok": sum(r[0] for r in results)}
            # A scheduled round with no peer due (those down are probed less often) asked no one: the round before
            # still tells how the peers answered (`xsc health status`), where this one would say "0 of 0".
            if peers or not due_only:
                self.last_round = this_round
            return {**this_round, "results": [{"id": p.id, "url": p.url, "ok": ok, "latency_ms": latency,
                                               "error": error} for p, (ok, latency, error) in zip(peers, results)]}

    def _due(self, peers: list[NodeDescriptor]) -> list[NodeDescriptor]:
        """The peers a scheduled round probes: the neighbours due, and a sample of `probe_others` of the others
        due, each kept for OTHERS_KEPT rounds, then replaced by the other probed longest ago (each in turn): a
        round costs the same however many peers the node knows, and its probes of others go on connections kept
        from the round before, not on a new one (a TLS handshake each) per probe."""
        now, interval, none = now_ms(), int(self.config.probe_interval * 1000), PeerHistory()
        near = set(self.neighbours())
        due = [p for p in peers if probe_due(self._histories.get(p.id, none), now, interval)]
        others = {p.id: p for p in due if p.id not in near}
        sample = {i: left - 1 for i, left in self._others.items() if i in others and left > 0}
        for p in sorted((p for i, p in others.items() if i not in sample),
                        key=lambda p: self._histories.get(p.id, none).last_probe or 0):
            if len(sample) >= self.config.probe_others:
                break
            sample[p.id] = OTHERS_KEPT - 1
        self._others = sample
        return [p for p in due if p.id in near] + [others[i] for i in sample]

    def start(self) -> None:
        self._task = every("probes", self.config.probe_interval, lambda: self.probe_round(due_only=True),
                           jitter=self.config.probe_jitter)

    async def close(self) -> None:
        task, self._task = self._task, None  # no probe is started any more (learned, heard_from)
        await stop(task, *self._reprobes, *self._first.values())

    def view(self) -> dict:
        return {"peers": self.table(), "last_round": self.last_round, "probe_interval": self.config.probe_interval,
                "probes_asked_again": self.asked_again, "last_asked_again": self.last_asked_again}

    async def check_reachable(self) -> dict:
        """The `peers:reachable` check of /health."""
        # From the histories alone (availability() of each of 1,000 peers cost ~8 ms per /health), and counted
        # again only after a probe, an audit or the directory changed (a pass over 1,000 peers was still ~2 ms).
        state = (self.directory.version, self.version)
        if self._reachable is None or self._reachable[0] != state:
            none = PeerHistory()
            self._reachable = (state, [last_probe_ok(self._histories.get(d.id, none)) for d in self.directory.all()])
        ups = self._reachable[1]
        up, probed = sum(u is True for u in ups), sum(u is not None for u in ups)
        return {"componentType": "component", "observedValue": up, "observedUnit": "peers up",
                "status": reachable_status(ups), "output": f"{up} of {probed} probed peers up ({len(ups)} known)",
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


__all__ = ["HealthService"]
