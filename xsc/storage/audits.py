"""Storage audits of the shares this node placed on other nodes, damage reports, automatic repair.

Gateway side.  Every `audit.interval` seconds (varied by +-audit.jitter of itself) the node picks
`audit.blocks_per_round` shares it placed on other nodes (holders at random, then a share of each: `by_holder`),
asks each holder for a random block with its Merkle path (`RemoteHolder.audit`) and checks it against the share
root of the file's manifest (`check_audit`).  A verdict is kept with the holder's probe history
(`HealthService.record_audit`, shown by `xsc health status`); a failed one also marks the share
damaged in this node's records, so a repair rebuilds it elsewhere.

Automatic repair: when a holder has failed its last audit, or has missed `audit.repair_after_failures`
probes in a row, every file with a share on it is queued for repair (StorageService.repair); so is a
file whose holder reported a damaged share (POST /v1/peer/damage, sent by holders' scrubbers), a file a put published
with shares lost (as the put answers: `shares_lost`, set by the storage service), and a share whose
holder, up by its probes, refused `repair_after_failures` audits of it in a row (it is not blamed).
One repair runs at a time; a failed one is retried later, backing off.

Containment (as Storj's): an audit sent to a holder up by its probes that gets no answer in time does not let the
holder off.  The same share is audited again first in the next rounds, and after `audit.timeouts_before_failure`
audits of it in a row that got no answer it is a failed audit (the holder is struck, its share rebuilt elsewhere):
a holder that answers its probes but lets every audit time out would otherwise keep its deals and its pay.  Any
answer (a verdict or a refusal) ends the containment; so does the holder going down (its outage is the probes').
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timezone
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from ..config import AuditSection
from ..errors import (Forbidden, InvalidArgument, NotFound, PeerError, PeerMisbehaved, PeerNotFound, PeerRefused,
                      PeerUnreachable, XscError)
from ..units import counted
from ..tasks import in_pool, periodic
from .core import leases
from .core.capability import Capability
from .files import LOCAL
from .gateway import Gateway
from .core.wire import check_audit

log = logging.getLogger(__name__)

RETRY_MAX = 3600.0  # seconds: the longest wait before a failed repair is tried again
RECENT = 20  # repairs kept for the status
MAX_REASON = 600  # characters of a damage mark's reason (it may quote what a holder answered)
# Answers that say nothing about the share: the holder could not or would not check the request.
_NO_VERDICT_STATUSES = frozenset({401, 403, 429})


# --- pure parts ----------------------------------------------------------------------
def remote_shares(records: Iterable[dict], me: str) -> list[tuple[dict, int, str]]:
    """(file record, share, node) of every share placed on another node."""
    return [(record, share, node) for record in records
            for share, node in enumerate(record.get("placement") or []) if node not in (me, LOCAL)]


def files_on(records: Iterable[dict], node: str) -> list[bytes]:
    """Storage indexes of the files with a share on that node."""
    return [bytes.fromhex(r["storage_index"]) for r in records if node in (r.get("placement") or [])]


def by_holder(candidates: list[tuple[dict, int, str]], n: int) -> list[tuple[dict, int, str]]:
    """Up to `n` of `candidates` (file record, share, node): a holder first, each at random, then one share of it at
    random; more shares at random once every holder has one.  A holder's pay waits for an audit of it, and it drops
    shares left unpaid (`storage.unpaid_grace`): among shares picked alike, one holding a few of many would wait
    for days."""
    on: dict[str, list[tuple[dict, int, str]]] = {}
    for candidate in candidates:
        on.setdefault(candidate[2], []).append(candidate)
    picked = [random.choice(on[node]) for node in random.sample(sorted(on), min(n, len(on)))]
    chosen = {(c[0]["storage_index"], c[1]) for c in picked}
    rest = [c for c in candidates if (c[0]["storage_index"], c[1]) not in chosen]
    return picked + random.sample(rest, min(n - len(picked), len(rest)))


def is_verdict(err: PeerError) -> bool:
    """Whether a failed audit request proves the share is not intact (rather than that nobody answered).

    A holder that answers "no such share/block" (404, 416) or with something that is not an audit
    answer has failed; no answer, a refused signature or a server error prove nothing about the share."""
    if isinstance(err, PeerUnreachable):
        return False
    status = err.details.get("peer_status")
    if status is None:
        return isinstance(err, PeerRefused)  # the holder answered, with a malformed audit
    return status < 500 and status not in _NO_VERDICT_STATUSES


def _in_a_row(row: dict[tuple[str, int], tuple[str, int]], key: tuple[str, int], node: str, needed: int) -> int | None:
    """One more audit of a share on `node` that came to nothing, counted in `row` (share -> (holder, audits in a
    row); a share moved to another holder counts from one again): how many in a row once they reach `needed` (the
    count forgotten then, so the next begins anew), else None."""
    seen, times = row.get(key, (node, 0))
    times = times + 1 if seen == node else 1
    if times < needed:
        row[key] = (node, times)
        return None
    row.pop(key, None)
    return times


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- the service -----------------------------------------------------------------------
class AuditService:
    def __init__(self, *, config: AuditSection, probe_interval: float, me: str, gateway: Gateway, pool: Executor,
                 peers: Any | None, holder_for: Callable[[str, str], Any],
                 on_audit: Callable[[str, bool, str, bool], None], repair: Callable[[Capability], Awaitable[dict]],
                 shares_lost: asyncio.Event | None = None) -> None:
        self.config = config
        self.probe_interval = probe_interval
        self.me = me
        self.gateway = gateway
        self.pool = pool
        self.peers = peers  # xsc.peers.PeerService (None: a node on its own has nothing to audit)
        self.holder_for = holder_for  # (node id, url) -> the RemoteHolder there
        # (node, ok, detail, struck): kept with its health, deciding its storage payments, and a strike against the node
        # unless `struck` (its answer was struck already, net/peer_client.py: one answer is one misbehaviour)
        self.on_audit = on_audit
        self.repair = repair
        self.shares_lost = shares_lost  # set by the storage service when a put published a file with shares lost
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued: set[bytes] = set()
        self._retry: dict[bytes, tuple[float, int]] = {}  # si -> (not before, failed attempts)
        self._seen_audit: dict[str, int] = {}  # node -> time of the failed audit already acted on
        self._seen_outage: dict[str, int | None] = {}  # node -> its last_ok when its outage was acted on
        self._up: dict[str, bool | None] = {}  # node -> up at the last watch
        # (storage index hex, share) -> (its node, audits in a row that node left without a verdict while it was up)
        self._unanswered: dict[tuple[str, int], tuple[str, int]] = {}
        # (storage index hex, share) -> (its node, audits of it in a row that node, up, did not answer in time)
        self._contained: dict[tuple[str, int], tuple[str, int]] = {}
        self._started_ms = int(time.time() * 1000)
        self.counts = {"audits_ok": 0, "audits_failed": 0, "audits_unanswered": 0, "shares_unanswered": 0,
                       "damage_reports": 0, "repairs": 0, "repairs_failed": 0}
        self.last_round: dict | None = None
        self.repairing: str | None = None
        self._touched: set[bytes] = set()  # files whose repair began or ended since the watch began reading marks
        self.recent: deque[dict] = deque(maxlen=RECENT)

    def _record_audit(self, node: str, ok: bool, detail: str, struck: bool = False) -> None:
        self.on_audit(node, ok, detail, struck)

    async def _run(self, fn, *args):
        return await in_pool(self.pool, fn, *args)

    async def _records(self) -> list[dict]:
        return await self._run(lambda: list(self.gateway.store.files()))

    # --- audits -------------------------------------------------------------------------
    async def audit_round(self) -> dict:
        """Audit up to blocks_per_round random shares placed on other nodes that are not known down."""
        peers = self.peers
        start = time.perf_counter()
        records = await self._records()
        # A share already known damaged waits for its repair: auditing it again would tell nothing new (and a
        # passing block of it must not hide the failure from the holder's health).
        damaged = await self._run(lambda: {(r["storage_index"], s) for r in records
                                           for s in self.gateway.store.damaged(bytes.fromhex(r["storage_index"]))})
        # A share whose lease ended is its holder's to drop (after its grace, which is the holder's to choose): an
        # audit of it would blame an honest holder, and a repair would place again what nobody renewed.
        now = int(time.time())
        placed = [(record, share, node) for record, share, node in remote_shares(records, self.me)
                  if share in leases.live_shares(record, now)]
        candidates = [] if peers is None else [
            (record, share, node) for record, share, node in placed
            if peers.directory.get(node) is not None and peers.availability(node).up is not False
            and (record["storage_index"], share) not in damaged]
        here = {(record["storage_index"], share, node) for record, share, node in placed}
        self._unanswered = {k: v for k, v in self._unanswered.items() if (*k, v[0]) in here}
        self._contained = {k: v for k, v in self._contained.items() if (*k, v[0]) in here}
        # A share whose last audit got no verdict is audited again first, so a holder that answers its probes but
        # never its audits is found within a few rounds rather than when chance picks that share again.
        n = self.config.blocks_per_round
        pending = self._unanswered.keys() | self._contained.keys()
        again = [c for c in candidates if (c[0]["storage_index"], c[1]) in pending][:n]
        rest = [c for c in candidates if (c[0]["storage_index"], c[1]) not in pending]
        picked = again + by_holder(rest, n - len(again))
        verdicts = await asyncio.gather(*(self.audit_share(*target) for target in picked))
        self.last_round = {"time": _now_iso(), "seconds": round(time.perf_counter() - start, 3),
                           "audited": len(picked), "ok": sum(v is True for v in verdicts),
                           "failed": sum(v is False for v in verdicts)}
        return self.last_round

    async def audit_share(self, record: dict, share: int, node: str) -> bool | None:
        """Audit one random block of one share on another node: True (intact), False (not), None (no verdict)."""
        si = bytes.fromhex(record["storage_index"])
        try:
            cap = Capability.parse(record["capability"])
            manifest = await self._run(self.gateway.manifest, cap)
        except XscError as err:
            log.error("cannot audit %s: its manifest here is unusable: %s", si.hex(), err)
            return None
        segment = random.randrange(manifest.segment_count)
        what = f"block {segment} of share {share} of {si.hex()}"
        try:
            holder = self.holder_for(node, self.peers.peer(node).url)
            block, path = await holder.audit(si, share, segment, manifest)
        except PeerNotFound:
            return None  # forgotten meanwhile (`xsc peers rm`)
        except PeerError as err:
            if not is_verdict(err):
                self.counts["audits_unanswered"] += 1
                log.info("audit of %s on node %s got no verdict: %s", what, node, err)
                if isinstance(err, PeerUnreachable) and err.details.get("sent"):
                    return await self._timed_out(si, share, node, what, err)
                self._contained.pop((si.hex(), share), None)  # it answered
                return await self._unanswered_audit(si, share, node, err)
            self._unanswered.pop((si.hex(), share), None)
            self._contained.pop((si.hex(), share), None)
            struck = isinstance(err, PeerMisbehaved) and err.struck  # its answer was: one misbehaviour, not two
            return await self._failed(si, share, node, f"{what}: {err}", struck=struck)
        self._unanswered.pop((si.hex(), share), None)
        self._contained.pop((si.hex(), share), None)
        ok = await self._run(check_audit, block, path, manifest.share_root(share), segment, manifest.segment_count)
        if not ok:
            return await self._failed(si, share, node, f"{what} does not match the share root")
        if not await self._still_there(si, share, node):
            return None  # a repair moved the share away meanwhile: this pass says nothing of the node now
        self.counts["audits_ok"] += 1
        self._record_audit(node, True, what)
        return True

    async def _failed(self, si: bytes, share: int, node: str, detail: str, *, struck: bool = False) -> bool | None:
        if not await self._still_there(si, share, node):
            return None  # a repair moved the share away while it was audited
        self.counts["audits_failed"] += 1
        log.warning("node %s failed an audit: %s", node, detail)
        self._record_audit(node, False, detail, struck)
        await self._run(self.gateway.store.mark_damaged, si, share, f"failed an audit on node {node}: {detail}", node)
        self.queue(si, f"share {share} failed an audit")
        # Acted on here, not when the watch sees it: an audit passed meanwhile would hide it from the watch.
        audit = self.peers.availability(node).last_audit if self.peers else None
        if audit:
            self._seen_audit[node] = audit["time"]
        await self._queue_files_on([(node, f"it failed an audit ({detail})")])
        return False

    async def _timed_out(self, si: bytes, share: int, node: str, what: str, err: PeerError) -> bool | None:
        """An audit sent to `node` that got no answer in time: the share stays contained (audited again first), and
        the `timeouts_before_failure`-th in a row while the node is up by its probes is a failed audit."""
        key = (si.hex(), share)
        if self.peers is None or self.peers.availability(node).up is not True:
            self._contained.pop(key, None)  # down: its outage is the probes' to act on
            return None
        times = _in_a_row(self._contained, key, node, self.config.timeouts_before_failure)
        if times is None:
            return None
        return await self._failed(si, share, node, f"{what}: {times} audits of it in a row got no answer while the "
                                                   f"node answered its probes (the last: {err})")

    async def _unanswered_audit(self, si: bytes, share: int, node: str, err: PeerError) -> None:
        """An audit of a share that got no verdict.  Its holder is not blamed (a node busy is no liar), but a share
        whose audits it refuses (a 5xx, 401, 403 or 429) `repair_after_failures` times in a row while it answers its
        probes is not one this node can count on: it is marked damaged and rebuilt elsewhere.  An audit with no
        answer in time is `_timed_out`'s, and one the holder could not be reached for (nothing sent) the probes'."""
        if isinstance(err, PeerUnreachable) or self.peers is None or self.peers.availability(node).up is not True:
            return None  # no answer, or down: its outage is the probes' to act on
        times = _in_a_row(self._unanswered, (si.hex(), share), node, self.config.repair_after_failures)
        if times is None:
            return None
        if not await self._still_there(si, share, node):
            return None
        self.counts["shares_unanswered"] += 1
        reason = (f"node {node} refused {times} audits in a row of share {share} while it answered its probes "
                  f"(the last: {err})")
        log.warning("share %d of %s: %s; rebuilding it elsewhere", share, si.hex(), reason)
        await self._run(self.gateway.store.mark_damaged, si, share, reason[:MAX_REASON], node)
        self.queue(si, f"share {share}: its holder answers no audit")
        return None

    async def _still_there(self, si: bytes, share: int, node: str) -> bool:
        """Whether the file still has that share on that node (a repair may have moved it meanwhile)."""
        record = await self._run(self.gateway.store.file_record, si)
        placement = (record or {}).get("placement") or []
        return share < len(placement) and placement[share] == node

    # --- damage reports -------------------------------------------------------------------
    async def damage_reported(self, si: bytes, share: int, segments: list[int], node: str) -> None:
        """A holder found bad blocks in a share this node placed on it: mark the share, repair the file."""
        record = await self._run(self.gateway.store.file_record, si)
        if record is None:
            raise NotFound(f"this node placed no file with storage index {si.hex()}",
                           hint="report damage to the node that placed the share (its uploader)")
        placement = record.get("placement") or []
        holder = placement[share] if share < len(placement) else None
        if holder == LOCAL:
            holder = self.me
        if holder != node:
            raise Forbidden(f"node {node} does not hold share {share} of {si.hex()} for this node",
                            hint="only a share's holder may report it damaged")
        manifest = await self._run(self.gateway.manifest, Capability.parse(record["capability"]))
        if segments[-1] >= manifest.segment_count:
            raise InvalidArgument(f"share {share} has {manifest.segment_count} blocks: no block {segments[-1]}",
                                  segment_count=manifest.segment_count)
        self.counts["damage_reports"] += 1
        shown = segments[:20]
        more = f" and {len(segments) - len(shown)} more" if len(segments) > len(shown) else ""
        reason = f"its holder {node} reports bad or missing blocks in segments {shown}{more}"
        log.warning("share %d of %s: %s", share, si.hex(), reason)
        await self._run(self.gateway.store.mark_damaged, si, share, reason, None if node == self.me else node)
        self.queue(si, f"share {share} reported damaged by its holder")

    # --- automatic repair -------------------------------------------------------------------
    def queue(self, si: bytes, why: str) -> None:
        # A file being repaired is queued again: the damage may have been found after that repair looked.
        if si in self._queued:
            return
        log.info("repair of %s queued: %s", si.hex(), why)
        self._queued.add(si)
        self._queue.put_nowait(si)

    async def watch(self) -> None:
        """Queue the files of holders that failed their last audit or missed too many probes in a row,
        and failed repairs whose retry is due."""
        peers = self.peers
        failing: list[tuple[str, str]] = []
        back = False
        known = peers.peers() if peers else []
        # What is kept of each node is of the nodes in the directory now: those pushed out (a stranger's fake nodes
        # pass through it, never answering a probe) leave nothing, however many came and went.
        ids = {d.id for d in known}
        for kept in (self._up, self._seen_audit, self._seen_outage):
            for node in [n for n in kept if n not in ids]:
                del kept[node]
        for descriptor in known:
            node = descriptor.id
            availability = peers.availability(node)
            back |= self._up.get(node) is False and availability.up is True
            self._up[node] = availability.up
            audit = availability.last_audit
            if audit and not audit["ok"] and self._seen_audit.get(node) != audit["time"]:
                self._seen_audit[node] = audit["time"]
                failing.append((node, f"it failed its last audit ({audit['detail']})"))
            # Probe counts kept from before this node started are stale until the peer is probed again.
            if availability.consecutive_failures >= self.config.repair_after_failures \
                    and (availability.last_probe or 0) >= self._started_ms:
                # One outage is acted on once: it is known by the last probe that succeeded before it.
                if node not in self._seen_outage or self._seen_outage[node] != availability.last_ok:
                    self._seen_outage[node] = availability.last_ok
                    failing.append((node, f"it missed its last {availability.consecutive_failures} probes"))
        if failing:
            await self._queue_files_on(failing)
        # A get, a verify or this node's scrubber that found bad blocks marked the share damaged: nothing else queues
        # its file (a marked share is audited no more).  One waiting to be retried keeps to its time.  One whose
        # repair is under way, or began or ended while the marks were read, is passed over: its marks are that
        # repair's to clear, and a repair again right after it finds nothing to do but a holder that happens to be
        # restarting, whose share it would move.  A mark that repair leaves is seen by the next watch.
        self._touched.clear()
        marked = await self._run(self.gateway.store.damaged_files)
        for si in marked:
            if si not in self._retry and si not in self._touched and si.hex() != self.repairing:
                self.queue(si, "a share of it is marked damaged")
        now = time.monotonic()
        for si, (due, _) in list(self._retry.items()):
            # A node back up may hold the shares a failed repair lacked: retry at once rather than at the due time.
            if due <= now or back:
                self.queue(si, "retrying a failed repair" + (" (a node is back up)" if back and due > now else ""))

    async def _queue_files_on(self, failing: list[tuple[str, str]]) -> None:
        records = await self._records()
        for node, why in failing:
            files = files_on(records, node)
            if files:
                log.warning("node %s: %s; repairing the %s with a share on it", node, why, counted(len(files), "file"))
            for si in files:
                self.queue(si, f"node {node}: {why}")

    async def repair_one(self, si: bytes) -> dict | None:
        self.repairing = si.hex()  # from the moment it leaves the queue (see `watch`)
        self._touched.add(si)
        try:
            return await self._repair_one(si)
        finally:
            self.repairing = None
            self._touched.add(si)

    async def _repair_one(self, si: bytes) -> dict | None:
        record = await self._run(self.gateway.store.file_record, si)
        if record is None or leases.file_expired(record, int(time.time())):
            self._retry.pop(si, None)
            return None  # removed meanwhile, or every lease of it ended: nothing to keep whole
        entry: dict[str, Any] = {"time": _now_iso(), "storage_index": si.hex(), "name": record.get("name", "")}
        try:
            result = await self.repair(Capability.parse(record["capability"]))
        except Exception as err:
            attempts = self._retry.get(si, (0.0, 0))[1] + 1
            wait = min(RETRY_MAX, self.config.interval * 2 ** (attempts - 1))
            self._retry[si] = (time.monotonic() + wait, attempts)
            self.counts["repairs_failed"] += 1
            if isinstance(err, XscError):
                log.warning("repair of %s failed (attempt %d, next in %.0f s): %s", si.hex(), attempts, wait, err)
            else:
                log.exception("repair of %s failed (attempt %d, next in %.0f s)", si.hex(), attempts, wait)
            self.recent.append({**entry, "ok": False, "error": str(err)[:300]})
            return None
        self._retry.pop(si, None)
        repaired = result.get("repaired") or []
        before, after = record.get("placement") or [], result.get("placement") or []
        moved = {s: [before[s], after[s]] for s in range(min(len(before), len(after))) if before[s] != after[s]}
        if repaired:
            self.counts["repairs"] += 1
            moves = "".join(f"; share {s} moved from node {a} to node {b}" for s, (a, b) in moved.items())
            log.warning("repaired shares %s of %s (%s)%s", repaired, si.hex(), record.get("name") or "unnamed",
                        moves)
        else:
            log.info("repair of %s: nothing to do", si.hex())
        self.recent.append({**entry, "ok": True, "repaired": repaired, "moved": moved,
                            "healthy": result.get("healthy")})
        return result

    # --- schedules ---------------------------------------------------------------------------
    def start(self) -> None:
        pass

    def loops(self) -> dict[str, Any]:
        jitter = self.config.jitter
        # Probe results change at the probe rate: looking more often finds nothing new.
        loops = {"repairs": self._repairs,
                 "repair-watch": periodic("repair-watch", min(self.config.interval, self.probe_interval), self.watch,
                                          jitter=jitter)}
        if self.shares_lost is not None:
            loops["repair-lost"] = self._lost
        if self.config.blocks_per_round:
            loops["audits"] = periodic("audits", self.config.interval, self.audit_round, jitter=jitter)
        return loops

    def close(self) -> None:
        pass

    async def _repairs(self) -> None:
        # A damage mark outlives the repair it queued (a restart, a kill -9 before or during that repair), and a
        # share marked damaged is audited no more: its file is queued again here, or it would wait for its owner.
        for si in await self._run(self.gateway.store.damaged_files):
            self.queue(si, "a share was marked damaged before this node started")
        while True:
            si = await self._queue.get()
            self._queued.discard(si)
            await self.repair_one(si)

    async def _lost(self) -> None:
        """The files a put published with shares lost (marked damaged in its write) queued as it answers, rather
        than at the next watch: until they are rebuilt, the file survives one share's loss fewer."""
        while True:
            await self.shares_lost.wait()
            self.shares_lost.clear()
            try:
                for si in await self._run(self.gateway.store.damaged_files):
                    if si not in self._retry:
                        self.queue(si, "a put lost a share of it")
            except Exception:  # a failed round must never end the loop (the watch finds them in time)
                log.exception("repair-lost failed")

    def status(self) -> dict:
        return {**self.counts, "interval": self.config.interval, "blocks_per_round": self.config.blocks_per_round,
                "last_round": self.last_round, "repair_queue": len(self._queued), "repairing": self.repairing,
                "retrying": len(self._retry), "recent_repairs": list(self.recent), "watched": len(self._up)}


__all__ = ["AuditService", "files_on", "is_verdict", "remote_shares"]
