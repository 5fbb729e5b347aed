"""Check, verify and repair: which shares of a file are present (metadata only), which hold every block intact
(each block read and hashed), and the broken ones rebuilt from any K good ones, here or on another node."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial

from ..errors import IntegrityError, MarketNoDeal, NotEnoughShares, PeerError, ShareNotFound, XscError
from ..units import counted
from ..identity import public_id
from .core import erasure, layout
from .core.capability import Capability
from .gateway_core import GatewayCore
from .core.merkle import block_hash, root
from .core.placement import unreadable
from .remote import Holder, RemoteShareReader, RemoteShareWriter, gather_or_raise
from .share_store import ShareMeta

log = logging.getLogger(__name__)
_NOT_OURS = ("share-not-found", "forbidden")  # a holder's answers that leave no copy of ours to release there
# Why a share of `away` is not rebuilt here, unless the caller says more.
NOT_HERE = ("the put kept no share on this node (--spread, this node in --avoid, or it offers no storage or no room "
            "for one)")

# (share, nodes already used, node -> how it failed the share) -> where a repaired share goes instead (None: here)
Relocator = Callable[[int, set, dict], "Awaitable[tuple[str, Holder] | None]"]
# Told how a long check of a file goes (verify, repair), on the event loop: {"stage", "done", "total"} and, as each
# share is found, its "share" and "status" (Tally).
Progress = Callable[[dict], None]
# Writes a file's new placement (storage index, placement before, after, the lease of the shares rebuilt) with what
# must change with it, in one synced write (in the pool); without one, the placement alone is written.
Placed = Callable[[bytes, list, list, int], None]


@dataclass
class ShareReport:
    share: int
    status: str  # ok | missing | corrupt
    detail: str = ""
    bad_blocks: list[int] = field(default_factory=list)


class Tally:
    """How far a walk over a file's blocks or segments is, told to `progress` now and then (each `every`-th of the
    total, and each share's outcome), from the event loop or from a pool thread; no `progress`: nothing told."""

    STEPS = 64  # at most this many tellings a stage, beside each share's outcome

    def __init__(self, progress: Progress | None, stage: str, total: int) -> None:
        self.progress, self.stage, self.total, self.done, self.told = progress, stage, total, 0, 0
        self.every = max(1, total // self.STEPS)
        self.loop = asyncio.get_running_loop()
        self.tell()

    def add(self, n: int = 1, **outcome) -> None:
        self.done += n
        if outcome or self.done - self.told >= self.every:
            self.tell(**outcome)

    def tell(self, **outcome) -> None:
        if self.progress is None:
            return
        self.told = self.done
        event = {"stage": self.stage, "done": self.done, "total": self.total, **outcome}
        try:
            running = asyncio.get_running_loop() is self.loop
        except RuntimeError:  # a pool thread
            running = False
        if running:
            self.progress(event)
        else:
            self.loop.call_soon_threadsafe(self.progress, event)


async def check(gateway: GatewayCore, cap: Capability, holders: Mapping[int, Holder] | None = None,
                names: list[str] | None = None, manifest: bytes | None = None) -> list[ShareReport]:
    """Which shares are present and not known to be damaged: metadata only (see verify).  Shares in
    `holders` are on other nodes: their metadata is checked against the manifest (an unreachable
    holder counts as missing)."""
    holders = dict(holders or {})
    names = list(names or ["this node"] * erasure.N)
    fetched = manifest
    manifest, metas, bad = await gateway.run(gateway.load, cap, frozenset(holders), fetched)
    _, remote_bad = await gateway.remote_metas(cap, manifest, holders, names)
    damaged = _marks_of(await gateway.run(gateway.store.damage_marks, cap.storage_index), holders, names)
    bad.update({s: f"corrupt: {damaged[s]}" for s in holders if s in damaged})  # reported by audits and scrubbers
    bad.update(remote_bad)
    return [ShareReport(s, "ok" if s not in bad else "corrupt" if bad[s].startswith("corrupt")
                        or "do not match" in bad[s] else "missing", bad.get(s, "")) for s in range(erasure.N)]


def _verify_here(gateway: GatewayCore, cap: Capability, remote: frozenset[int] = frozenset(),
                 fetched: bytes | None = None, tally: Tally | None = None) -> list[ShareReport]:
    """Read and hash every block of every share here (not those in `remote`); record what is bad.  Each block read,
    and each share's outcome, is added to `tally` (a share that is not here: its blocks at once)."""
    manifest, metas, bad = gateway.load(cap, remote, fetched)
    si = cap.storage_index
    count = manifest.segment_count
    add = tally.add if tally is not None else lambda n=1, **outcome: None
    reports = []
    for s in range(erasure.N):
        if s in remote:
            continue
        if s not in metas:
            reports.append(ShareReport(s, "missing" if bad[s] == "missing" else "corrupt", bad[s]))
            add(count, share=s, status=reports[-1].status)
            continue
        wrong = []
        for i in range(count):
            if (b := gateway.store.get_block(si, s, i)) is None or block_hash(b) != metas[s].block_hashes[i]:
                wrong.append(i)
            add()
        if wrong:
            gateway.store.mark_damaged(si, s, f"bad or missing blocks in segments {wrong[:20]}")
            reports.append(ShareReport(s, "corrupt", counted(len(wrong), "bad block"), wrong))
        else:
            reports.append(ShareReport(s, "ok"))
        add(0, share=s, status=reports[-1].status)
    return reports


async def verify(gateway: GatewayCore, cap: Capability, holders: Mapping[int, Holder] | None = None,
                 names: list[str] | None = None, manifest: bytes | None = None,
                 progress: Progress | None = None) -> list[ShareReport]:
    """Read and hash every block of every share, those on other nodes (`holders`) downloaded; record
    what is bad.  `progress`: told the blocks read of all the shares' (Tally), and each share's outcome."""
    holders = dict(holders or {})
    names = list(names or ["this node"] * erasure.N)
    si = cap.storage_index
    fetched = manifest
    manifest, _, _ = await gateway.run(gateway.load, cap, frozenset(holders), fetched)
    count = manifest.segment_count
    tally = Tally(progress, "verify", erasure.N * count)
    reports = {r.share: r for r in await gateway.run(_verify_here, gateway, cap, frozenset(holders), fetched, tally)}
    metas, bad = await gateway.remote_metas(cap, manifest, holders, names)
    for s in holders:
        if s in bad:
            reports[s] = ShareReport(s, "corrupt" if "do not match" in bad[s] else "missing", bad[s])
            tally.add(count, share=s, status=reports[s].status)
            continue
        reader = RemoteShareReader(holders[s], si, s, manifest, gateway.remote_timeout)
        wrong = []
        try:
            for i in range(count):
                if (b := await reader.get(i)) is None or block_hash(b) != metas[s].block_hashes[i]:
                    wrong.append(i)
                tally.add()
        finally:
            await reader.close()
        if reader.failed is not None:
            reports[s] = ShareReport(s, "missing", unreadable(names[s], reader.failed))
        elif wrong:
            await gateway.run(gateway.store.mark_damaged, si, s, f"bad blocks in segments {wrong[:20]}", names[s])
            reports[s] = ShareReport(s, "corrupt", f"{counted(len(wrong), 'bad block')} on node {names[s]}", wrong)
        else:
            reports[s] = ShareReport(s, "ok")
        tally.add(0, share=s, status=reports[s].status)
    return [reports[s] for s in range(erasure.N)]


class _OneRepair:
    """One repair under way: what is broken here and on other nodes, the K good shares it reads from, where each
    rebuilt share goes (rewritten in place, rebuilt here, or moved to another node) and the block hashes rebuilt."""

    def __init__(self, gateway: GatewayCore, cap: Capability, holders: dict[int, Holder], names: list[str],
                 me: str, fetched: bytes | None, placed: Placed | None = None,
                 progress: Progress | None = None, away: Collection[int] = (), not_here: str = "") -> None:
        self.gateway, self.cap, self.si, self.progress = gateway, cap, cap.storage_index, progress
        self.away, self.not_here = frozenset(away), not_here or NOT_HERE
        self.holders, self.names, self.me, self.fetched = holders, names, me, fetched
        self.placed = placed or (lambda si, before, after, lease: gateway.store.set_placement(si, after))
        self.new_names = list(names)
        self.moved: dict[int, RemoteShareWriter] = {}
        self.upload = None
        self.bad_sources: list[tuple[int, int]] = []  # (share, segment) of the blocks read that failed their hashes

    async def assess(self) -> bool:
        """Find what is broken; whether anything is."""
        gateway, holders = self.gateway, self.holders
        self.manifest, self.local_metas, _ = await gateway.run(gateway.load, self.cap, frozenset(holders),
                                                               self.fetched)
        tally = Tally(self.progress, "check", (erasure.N - len(holders)) * self.manifest.segment_count)
        local_reports = await gateway.run(_verify_here, gateway, self.cap, frozenset(holders), self.fetched, tally)
        self.remote_metas, self.remote_bad = await gateway.remote_metas(self.cap, self.manifest, holders,
                                                                        self.names)
        marks = await gateway.run(gateway.store.damage_marks, self.si)
        damaged = _marks_of(marks, holders, self.names)
        for s in holders:
            if s in damaged and s not in self.remote_bad:
                self.remote_bad[s] = f"corrupt: {damaged[s]}"
        self.broken_local = {r.share: r for r in local_reports if r.status != "ok"}
        # A share here marked damaged whose every block was just read and found intact is not, nor is a share
        # marked on a node that no longer holds it: were their marks kept, `check` would call them corrupt while a
        # repair finds nothing to do (or moves a good share again).
        for s in marks:
            untrue = s not in damaged if s in holders else s not in self.broken_local
            if untrue:
                await gateway.run(gateway.store.clear_damage, self.si, s)
        return bool(self.broken_local or self.remote_bad)

    def good_shares(self) -> dict[int, ShareMeta]:
        """The intact shares, here and elsewhere: at least K, or the file cannot be repaired."""
        good = {**{s: m for s, m in self.local_metas.items() if s not in self.broken_local},
                **{s: m for s, m in self.remote_metas.items() if s not in self.remote_bad}}
        if len(good) < erasure.K:
            broken = sorted(set(self.broken_local) | set(self.remote_bad))
            raise NotEnoughShares(f"only {len(good)} of {erasure.N} shares are intact and {erasure.K} are needed: "
                                  f"{_where(broken, self.holders, self.names)} are missing, unreachable or corrupt; "
                                  "nothing was changed", missing_shares=broken,
                                  hint="run `xsc store repair` again when the nodes holding its shares are back; "
                                  "`xsc health status` shows them")
        return good

    async def destination(self, relocate: Relocator, share: int, nodes: set[str],
                          failed: dict) -> tuple[str, Holder] | None:
        """Where `relocate` places a share again, avoiding `nodes`.  One of `away` never comes here: it goes to a
        node that holds no share of the file, or else, as a put places its shares on fewer nodes than shares, to one
        that holds some."""
        if share not in self.away:
            return await relocate(share, nodes, failed)
        return await relocate(share, nodes | {self.me}, failed) or \
            await relocate(share, {self.me} | set(failed), failed)

    async def plan(self, relocate: Relocator | None) -> None:
        """Where each broken share goes: local ones rewritten or rebuilt here, remote ones, and missing ones of
        `away` (shares lost during a put that keeps none here), to where `relocate` says (here if it names no node;
        never here for one of `away`: the repair fails, to be tried again, rather than keep it here)."""
        self.rewrite_here = {s: r.bad_blocks for s, r in self.broken_local.items() if s in self.local_metas}
        missing = [s for s in self.broken_local if s not in self.local_metas]
        self.rebuild_here = [s for s in missing if s not in self.away]
        for s in [*sorted(self.remote_bad), *sorted(set(missing) & self.away)]:
            destination = await self.destination(relocate, s, set(self.new_names), {}) if relocate else None
            if destination is None and s in self.away:
                raise MarketNoDeal(f"no other node takes share {s} of this file, and it is not rebuilt here: "
                                   f"{self.not_here}; nothing was changed",
                                   hint="add nodes that offer storage with `xsc peers add URL`, then run "
                                   "`xsc store repair` again", share=s)
            if destination is None:
                self.rebuild_here.append(s)
                self.new_names[s] = self.me
            else:
                self.new_names[s] = destination[0]
                self.moved[s] = RemoteShareWriter(destination[1], destination[0], self.si, s)

    async def rebuild(self, good: dict[int, ShareMeta], relocate: Relocator | None) -> int:
        """Re-encode every segment a broken share needs from the good ones and write it where `plan` said; once each
        matches the manifest, commit those on other nodes, record the new placement, publish those here.  The lease
        they carry."""
        gateway, si, manifest = self.gateway, self.si, self.manifest
        share_bytes = layout.share_bytes(manifest.size, manifest.segment_size)
        lease = max(m.lease_expiry for m in good.values())
        readers = {s: RemoteShareReader(self.holders[s], si, s, manifest, gateway.remote_timeout)
                   for s in good if s in self.holders}
        order = sorted(good, key=lambda s: (s >= erasure.K, s in readers, s))
        read = gateway.segment_source(si, manifest, good, order, readers, self.names, self.bad_sources)
        rebuilt: dict[int, list[bytes]] = {s: [] for s in (*self.rebuild_here, *self.moved)}
        try:
            if self.rebuild_here:
                self.upload = await gateway.begin_here(si, tuple(self.rebuild_here),
                                                       share_bytes * len(self.rebuild_here))
            # A destination that cannot take its share (down, or refusing) is swapped for another one.
            new_names = self.new_names
            replace = (lambda share, failed: self.destination(relocate, share, set(new_names) | set(failed), failed)) \
                if relocate else None
            await gateway.start_remote(self.moved, new_names, replace, partial(self.begin, lease=lease))
            await self._write_segments(read, rebuilt)
            for s, hashes in rebuilt.items():
                if root(hashes) != manifest.share_root(s):
                    raise IntegrityError(f"rebuilt share {s} does not match the manifest")
            encoded = manifest.encode()
            if self.moved:  # a kill from here until the placement is written leaves copies no placement names
                await gateway.run(gateway.store.note_strays, si, {s: r.node for s, r in self.moved.items()},
                                  lease)
            await gather_or_raise([r.commit(rebuilt[s], encoded) for s, r in self.moved.items()],
                                  [(r.node, s) for s, r in self.moved.items()])
            # The new placement before the shares rebuilt here are published (which clears their damage marks): a
            # crash between the two leaves the placement naming this node for a share not here yet, which the next
            # repair finds missing and rebuilds; the other way round it named the bad holder, unmarked, for good.
            if self.new_names != self.names:
                await gateway.run(self.placed, si, self.names, self.new_names, lease)
            if self.upload is not None:
                metas = [ShareMeta(s, manifest.segment_count, share_bytes, lease, gateway.node_key, tuple(rebuilt[s]))
                         for s in self.rebuild_here]
                await gateway.publisher.publish(self.upload, metas, encoded)  # another node's file too
        except BaseException:
            await asyncio.gather(*(r.undo() for r in self.moved.values()))
            if self.upload is not None:
                await gateway.run(gateway.store.abort, self.upload)
            raise
        finally:
            await asyncio.gather(*(r.close() for r in readers.values()))
            if self.bad_sources:  # a holder that sent bad blocks while it was read from: its share is damaged too
                await gateway.run(gateway.record_damage, si, self.bad_sources,
                                  {s: self.names[s] for s in self.holders})
        return lease

    async def begin(self, writer: RemoteShareWriter, lease: int) -> None:
        """Begin a moved share's upload on its holder; one that holds that very share already counts as placed there
        (`_held_there`), nothing sent."""
        try:
            await writer.begin(self.manifest.size, self.manifest.segment_size, lease)
        except PeerError as err:
            if not await self._held_there(writer, err, lease):
                raise
            writer.held()

    async def _held_there(self, writer: RemoteShareWriter, err: PeerError, lease: int) -> bool:
        """Whether a holder that refused a share's begin as `share-exists` holds that very share, read back: placed by
        this node, its hashes the manifest's (a copy an earlier repair committed and never recorded); its lease is
        renewed then.  Else (another node's share of this storage index, placed first: a stranger's squat, which the
        holder cannot tell from the file's) the refusal stands, and the share goes to another holder."""
        if (err.details or {}).get("peer_code") != "share-exists":
            return False
        try:
            held = await writer.holder.meta(self.si, writer.share, self.manifest.segment_count)
            if held["uploader"] != public_id(self.gateway.node_key) or \
                    root(list(held["block_hashes"])) != self.manifest.share_root(writer.share):
                return False
            await writer.holder.renew(self.si, writer.share, lease)
        except PeerError:
            return False
        log.info("share %d of %s: node %s holds it already; counted as placed there", writer.share, self.si.hex(),
                 writer.node)
        return True

    async def _write_segments(self, read: Callable[[int], Awaitable[bytes]], rebuilt: dict[int, list[bytes]]) -> None:
        gateway = self.gateway
        tally = Tally(self.progress, "rebuild", self.manifest.segment_count)
        for index in range(self.manifest.segment_count):
            fix = [s for s, segments in self.rewrite_here.items() if index in segments]
            tally.add()
            if not rebuilt and not fix:
                continue
            blocks = await gateway.run(erasure.encode, await read(index))
            for s in rebuilt:
                rebuilt[s].append(block_hash(blocks[s]))
            if self.upload is not None:
                await gateway.run(self.upload.put_blocks, index, {s: blocks[s] for s in self.rebuild_here})
            if fix:
                await gateway.run(_rewrite_blocks, gateway, self.si, index, {s: blocks[s] for s in fix},
                                  self.local_metas)
            for s, share in self.moved.items():
                await share.add(blocks[s])

    async def settle(self) -> None:
        """Clear the damage marks (the new placement is written: `rebuild`), drop moved corrupt shares where they
        were.  A crash before the marks are cleared leaves a mark on a share rebuilt meanwhile: the next repair looks
        at it again."""
        gateway, si, names, new_names = self.gateway, self.si, self.names, self.new_names
        for s in {*self.rewrite_here, *self.remote_bad, *self.moved}:
            await gateway.run(gateway.store.clear_damage, si, s)
        # A corrupt share on a holder that still answers is dropped there (best effort: a lease ends it too).
        stale = [self.holders[s].delete(si, s) for s in self.remote_bad
                 if s in self.remote_metas and new_names[s] != names[s]]
        await asyncio.gather(*stale, return_exceptions=True)


async def release_strays(gateway: GatewayCore, holder_of: Callable[[str], Holder], si: bytes) -> int:
    """Copies of a file's shares on other nodes noted to delete (`note_strays`): those repairs committed and never
    placed (cut short between the commits and the new placement), those a put committed and never recorded (cut
    short before its file was published), those a removal could not delete.  Each one that
    the file's placement does not name (a removed file has none) is deleted there, unpaid as it is; one the
    placement names is kept; a put under way keeps its own (`GatewayCore.putting`: it places them, or takes them back
    if it fails).  `si`: this file's only (the caller holds its repair lock).  A note whose
    copies are all settled goes; one with a holder that cannot be reached now stays for the next time, until the
    copies' lease ends (the holder's lease GC drops them then).  Returns how many copies were deleted."""
    deleted = 0
    for found, shares, lease_expiry in await gateway.run(gateway.store.strays):
        if found != si or found in gateway.putting:
            continue
        placement = await gateway.run(gateway.store.placement_of, found) or []
        settled = True
        # Once their lease ended, the holders' lease GC drops them (on a node never reached again, too).
        for share, node in shares.items() if lease_expiry >= time.time() else ():
            if share < len(placement) and placement[share] == node:
                continue  # placed after all: the placement and its deal hold it
            try:
                await holder_of(node).delete(found, share)
                deleted += 1
            except XscError as err:
                if isinstance(err, ShareNotFound) or err.details.get("peer_code") in _NOT_OURS:
                    continue  # never committed there, or taken back by the repair's undo
                settled = False
                log.info("share %d of %s to delete stays on node %s for now: %s", share, found.hex(), node, err)
        if settled:
            await gateway.run(gateway.store.strays_settled, found)
    return deleted


def _marks_of(marks: Mapping[int, tuple[str, str | None]], holders: Mapping[int, Holder],
              names: list[str]) -> dict[int, str]:
    """The damage marks that hold: those of shares here, and those of shares on other nodes found damaged where
    they are now."""
    return {s: reason for s, (reason, node) in marks.items()
            if s not in holders or node is None or s < len(names) and node == names[s]}


def _where(shares: list[int], holders: Mapping[int, Holder], names: list[str]) -> str:
    """"share 2 here, shares 0, 1 on node <id>": the shares grouped by where they are, node ids whole."""
    by_place: dict[str, list[int]] = {}
    for s in shares:
        node = names[s] if s < len(names) else ""
        place = "here" if s not in holders else f"on node {node}" if node and not node.startswith("(") \
            else "on no node found"
        by_place.setdefault(place, []).append(s)
    return ", ".join(f"{'shares' if len(group) > 1 else 'share'} {', '.join(map(str, group))} {place}"
                     for place, group in by_place.items())


def _rewrite_blocks(gateway: GatewayCore, si: bytes, index: int, blocks: dict[int, bytes],
                    metas: dict[int, ShareMeta]) -> None:
    for s, block in blocks.items():
        if block_hash(block) != metas[s].block_hashes[index]:
            raise IntegrityError(f"rebuilt block {index} of share {s} does not match its hash")
    gateway.store.put_repaired_blocks(si, index, blocks)


async def repair(gateway: GatewayCore, cap: Capability, holders: Mapping[int, Holder] | None = None,
                 names: list[str] | None = None, relocate: Relocator | None = None,
                 me: str = "this node", fetched: bytes | None = None, placed: Placed | None = None,
                 progress: Progress | None = None, away: Collection[int] = (), not_here: str = "") -> dict:
    """Rebuild missing and corrupt shares from any K good ones; never makes things worse.

    Local shares are rebuilt here (corrupt blocks rewritten in place).  A broken share on another
    node goes to the node `relocate(share, nodes already used, nodes that failed it)` names, or here
    if it names none; the file's placement record follows, written by `placed` (`fetched`: another node's file's
    manifest).  `away`: shares lost during a put that kept none here (or every share, of a file whose put named this
    node in --avoid), placed by `relocate` when missing here or broken elsewhere, never rebuilt here (`not_here`: why,
    as the repair says when no other node takes one).  `progress`: told how each pass goes, its blocks here read
    ("check"), then its segments rebuilt."""
    names = list(names or [me] * erasure.N)
    holders = dict(holders or {})
    repaired: set[int] = set()
    lease = None
    # A share read as a source that gave bad blocks is marked damaged and rebuilt by the next pass; each pass that
    # goes round again found one more such share, so there are at most N.
    for _ in range(erasure.N):
        one = _OneRepair(gateway, cap, holders, names, me, fetched, placed, progress, away, not_here)
        if not await one.assess():
            break
        good = one.good_shares()
        await one.plan(relocate)
        lease = await one.rebuild(good, relocate)
        await one.settle()
        repaired |= set(one.broken_local) | set(one.remote_bad)
        holders = {s: h for s, h in holders.items() if one.new_names[s] == names[s]} | \
            {s: w.holder for s, w in one.moved.items()}
        names = one.new_names
        if not one.bad_sources:
            break
    if not repaired:
        return {"repaired": [], "placement": names}
    return {"repaired": sorted(repaired), "placement": names, "lease_expiry": lease}
