"""The removal of the files this node's user stores: one (`xsc store rm`), many at once (an S3 DeleteObjects), or those
a job's new run replaces (begun in its record's batch, then finished).

A removal takes the file out of the listing first, in one synced write (`ShareStore.begin_removal`): from then on it
is being removed, and a crash, a full disk or a holder that does not answer only delays the rest.  The rest is
finished under the file's repair lock: its shares deleted on every holder that answers, its deals ended, then its
shares deleted here, last (until then a start finishes it).  The holders that did not answer are noted and asked
again each round of the storage-strays loop until their lease ends (gateway_repair.release_strays).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from .. import db
from ..errors import DiskFull, NotFound, ShareNotFound, XscError
from ..tasks import Locks, at_most, in_pool, periodic
from ..units import counted
from . import gateway_repair, share_store
from .core import leases
from .core.capability import Capability
from .deals import StorageDeals
from .gateway import Gateway

log = logging.getLogger(__name__)

REMOVING_AT_ONCE = 16  # files of a batch removal whose shares are deleted on their holders at once
FINISHED_AT_ONCE = 1000  # removals a start finishes together: each batch one synced write of each kind, its locks held


@dataclass
class Removed:
    """What a removal of many files did (`Removals.remove_all`): the files it removed, and those it took out of the
    listing but could not finish removing now, each with why (the node finishes them later: `finish_cut_short`)."""

    finished: list[Capability]
    unfinished: dict[Capability, str]


class Removals:
    """The removals of the user's files, begun and finished; those a crash or a full disk cut short finished at the
    start and each round of the storage-strays loop.  A file's repair and its removal take the same lock
    (`repair_locks`, the storage service's): a repair under way finishes first."""

    def __init__(self, *, gateway: Gateway, deals: StorageDeals, peers: Any | None, pool: Executor,
                 holder: Callable[..., Any], holders_of: Callable[[dict | None], tuple[dict, list[str] | None]],
                 repair_locks: Locks[bytes], forget_unplaced: Callable[[bytes], None],
                 strays_interval: float = 600.0) -> None:
        self.gateway = gateway
        self.store = gateway.store
        self.deals = deals
        self.peers = peers  # xsc.peers.PeerService, or None for a node on its own
        self.pool = pool
        self.holder = holder  # node id -> the share holder on that node (StorageService.holder)
        self.holders_of = holders_of  # a file record -> its holders on other nodes, and its nodes' names
        self.repair_locks = repair_locks
        self.forget_unplaced = forget_unplaced  # a file removed: what its last repair could not place is forgotten
        self.strays_interval = strays_interval  # seconds between attempts to delete the copies noted (note_strays)
        self._finishing: asyncio.Future | None = None  # start(): removals a crash cut short

    def start(self) -> None:
        self._finishing = asyncio.ensure_future(self.finish_cut_short())

    def loops(self) -> dict[str, Any]:
        return {"storage-strays": periodic("storage-strays", self.strays_interval, self.finish_cut_short)}

    async def close(self) -> None:
        if self._finishing is not None:
            self._finishing.cancel()
            await asyncio.gather(self._finishing, return_exceptions=True)

    async def remove(self, cap: Capability) -> dict:
        si = cap.storage_index
        record = await in_pool(self.pool, self.store.file_record, si)
        # A removal that began and stopped short (its records' write refused by a full disk) is finished by the
        # user's rm again, as its refusal said: the file is no longer listed, its record kept under `removing`.
        pending = {r["storage_index"]: r for r in await in_pool(self.pool, self.store.removals)}.get(si.hex())
        if (record or pending or {}).get("capability") != str(cap):
            raise NotFound("this node holds no file with that capability",
                           hint="`xsc store ls` lists the files this node uploaded")
        try:
            left = await self.delete_everywhere(cap) if record else await self._finish_one(si)
        except db.Error as err:
            if not db.disk_full(err):
                raise
            listed = await in_pool(self.pool, self.store.file_record, si) is not None
            raise DiskFull("the data dir's disk is full: " + ("nothing was removed" if listed else "the file is no "
                           "longer listed, but not all of it is deleted yet"), hint="free disk space, then run the "
                           "same xsc store rm again") from err
        return {"removed": str(cap), "not_deleted_on": left or {}}

    async def delete_everywhere(self, cap: Capability) -> dict[str, str]:
        """Remove a file: unlisted at once (durably), then its shares deleted on every holder that answers and
        here, and its deals ended; returns the nodes that did not answer."""
        # A repair of the file under way finishes first: what it rebuilt is then in the placement and here, and is
        # deleted with the rest (removed while it ran, it would publish or place a share of a file that is gone).
        si = cap.storage_index
        self.forget_unplaced(si)
        async with self.repair_locks.one(si):
            record = await in_pool(self.pool, self.store.begin_removal, si, int(time.time()))
            return (await self._finish_all([record]))[0]

    @staticmethod
    def removal_entries(read: Callable[[bytes], bytes | None], cap: Capability, at: int) -> dict[bytes, bytes | None]:
        """What takes the file `cap` out of the listing, for a publication's rider to write in its batch
        (share_store.removal_entries); `finish` finishes the removal once it is written."""
        return share_store.removal_entries(read, cap.storage_index, at)

    async def begin(self, caps: list[Capability], at: int, also: dict[bytes, bytes | None]) -> None:
        """Take the files `caps` out of the listing in one synced write with `also` (records of another owner's that
        change with them); `finish` finishes their removal."""
        await in_pool(self.pool, self.store.begin_removals, [cap.storage_index for cap in caps], at, also)

    async def remove_all(self, caps: list[Capability]) -> Removed:
        """`remove` of each file of `caps` this node's user has, listed or its removal cut short (one it has not:
        nothing), its synced writes per batch, not per file: taken out of the listing in one write, then finished
        together (`finish`).  What it did with those it had, once each: removed, or no longer listed and to be
        finished, and why not now."""
        listed, pending = await in_pool(self.pool, _held, self.store, caps)
        if listed:
            await self._unlist(listed)
        held = [*listed, *pending]
        unfinished = await self.finish(held)
        return Removed([cap for cap in held if cap not in unfinished], unfinished)

    async def finish(self, caps: list[Capability]) -> dict[Capability, str]:
        """Finish the removal of files taken out of the listing (`removal_entries`, `begin`): their shares deleted on
        every holder that answers and here, their synced writes together; a file not being removed is left alone.
        Those that fail are finished later, as any removal a crash or a full disk cut short (`finish_cut_short`):
        returned, each with why it is not finished now."""
        try:
            await self._finish_together([cap.storage_index for cap in caps])
        except Exception as err:  # noqa: BLE001 - finished later
            return await self._unfinished(caps, err)
        return {}

    async def _unlist(self, caps: list[Capability]) -> None:
        """Take the listed files `caps` out of the listing in one synced write (`begin`), or none of them: a full disk
        refuses them whole (DiskFull)."""
        for cap in caps:
            self.forget_unplaced(cap.storage_index)
        try:
            await self.begin(caps, int(time.time()), {})
        except db.Error as err:
            if not db.disk_full(err):
                raise
            raise DiskFull("the data dir's disk is full: nothing was removed",
                           hint="free disk space, then remove the files again") from err

    async def _unfinished(self, caps: list[Capability], err: Exception) -> dict[Capability, str]:
        """Of `caps`, whose removals `err` cut short, those still being removed, each with why in a line its caller
        can be told: the disk's being full, or the refusal's words; a fault of another kind is the log's."""
        _log_cut_short(len(set(caps)), err)
        if db.disk_full(err):
            why = "the data dir's disk is full"
        else:
            why = err.message if isinstance(err, XscError) else f"this node failed ({type(err).__name__}: see its log)"
        try:
            being_removed = {r["storage_index"] for r in await in_pool(self.pool, self.store.removals)}
        except Exception:  # noqa: BLE001 - the removals unread: none is said finished
            return {cap: why for cap in caps}
        return {cap: why for cap in caps if cap.storage_index.hex() in being_removed}

    async def _finish_one(self, si: bytes) -> dict[str, str] | None:
        """Finish the removal of the file `si` if it is still being removed (`_finish_together`); the nodes that did
        not answer, or None if there was nothing to finish."""
        records, left = await self._finish_together([si])
        return left[0] if records else None

    async def finish_cut_short(self) -> None:
        """Finish the removals that stopped short: cut by a crash (at the start) or by a full disk (each round of the
        storage-strays loop, the blocks such a disk kept too), so that the space comes back once the disk has room.
        They are finished together, FINISHED_AT_ONCE at a time, their synced writes per batch (`_finish_together`): a
        kill -9 during a removal of many files together (a DeleteObjects) leaves them all being removed."""
        sis = [bytes.fromhex(r["storage_index"]) for r in await in_pool(self.pool, self.store.removals)]
        for i in range(0, len(sis), FINISHED_AT_ONCE):
            batch = sis[i:i + FINISHED_AT_ONCE]
            try:
                records, left = await self._finish_together(batch)
            except Exception as err:  # noqa: BLE001 - the next round tries again
                _log_cut_short(len(batch), err)
                continue
            if records:
                log.info("finished removing %s cut short", counted(len(records), "file"))
            for record, nodes in zip(records, left):
                if nodes:
                    log.info("file %s is not deleted on %s yet (asked again until they answer)",
                             record["storage_index"], nodes)
        await in_pool(self.pool, self.store.kept.free)
        await self.release_strays()

    async def _finish_together(self, sis: list[bytes]) -> tuple[list[dict], list[dict[str, str]]]:
        """Finish the removals of those of `sis` still being removed, together (`_finish_all`), under each file's
        repair lock (an rm of one may finish it meanwhile: they are looked up once the locks are held).  Their
        records, and per file the nodes that did not answer."""
        wanted = {si.hex() for si in sis}
        async with self.repair_locks.many(sis):
            records = [r for r in await in_pool(self.pool, self.store.removals) if r["storage_index"] in wanted]
            return records, await self._finish_all(records)

    async def _finish_all(self, records: list[dict]) -> list[dict[str, str]]:
        """The removals of `records` (begun: `begin`) finished: each file's shares deleted on its holders, then the
        deals of all ended in one synced write, then all deleted here in one (last: until then a restart finishes
        them).  Returns, per file, the nodes that did not answer."""
        if not records:
            return []
        left = await at_most(REMOVING_AT_ONCE, (self._delete_held(record) for record in records))
        await in_pool(self.pool, self.deals.removed_all, {bytes.fromhex(r["storage_index"]): r["removed_at"]
                                                          for r in records})
        await in_pool(self.pool, self.store.delete_files, [bytes.fromhex(r["storage_index"]) for r in records])
        return left

    async def _delete_held(self, record: dict) -> dict[str, str]:
        """A file being removed: its shares deleted on every holder that answers, those that did not noted; returns
        them."""
        si = bytes.fromhex(record["storage_index"])
        # Copies a repair committed and could not place (the file's removal began while it ran) go with the rest.
        await gateway_repair.release_strays(self.gateway, self.holder, si)
        holders, names = self.holders_of(record)
        results = await asyncio.gather(*(h.delete(si, s) for s, h in holders.items()), return_exceptions=True)
        # A holder without the share (lost, collected, never committed there) has nothing of the file left to delete.
        results = [None if _share_gone(r) else r for r in results]
        left = {s: names[s] for s, r in zip(holders, results) if isinstance(r, BaseException)}
        if left:  # asked again at each start and every storage.gc_interval until their lease ends (release_strays)
            await in_pool(self.pool, self.store.note_strays, si, left, leases.latest(record, int(time.time())))
        return {names[s]: str(r) for s, r in zip(holders, results) if isinstance(r, BaseException)}

    async def release_strays(self) -> None:
        """The copies of shares on other nodes noted to delete (gateway_repair.release_strays), each file's under its
        repair lock (a repair of it may be under way: what it notes is its own).  A note whose holders were all found
        down by their last probe waits for a probe to find one up: a node gone for good would otherwise be asked
        again each round for every file moved off it, a request timeout each where its address drops what it is
        sent."""
        peers = self.peers
        for si, shares, _ in await in_pool(self.pool, self.store.strays):
            if peers is not None and shares and all(peers.availability(node).up is False for node in shares.values()):
                continue
            try:
                async with self.repair_locks.one(si):
                    released = await gateway_repair.release_strays(self.gateway, self.holder, si)
                if released:
                    log.info("deleted %d copies of shares of %s that no placement holds", released, si.hex())
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("could not delete the copies of shares of %s that no placement holds", si.hex())


def _held(store: share_store.ShareStore, caps: list[Capability]) -> tuple[list[Capability], list[Capability]]:
    """Of `caps`, each once: the files this node's user has listed, and those whose removal was cut short (which an rm
    of them again finishes, as `remove` does)."""
    cut_short = {r["storage_index"]: r.get("capability") for r in store.removals()}
    listed, pending = [], []
    for cap in dict.fromkeys(caps):
        record = store.file_record(cap.storage_index)
        if record is not None and record["capability"] == str(cap):
            listed.append(cap)
        elif cut_short.get(cap.storage_index.hex()) == str(cap):
            pending.append(cap)
    return listed, pending


def _log_cut_short(files: int, err: Exception) -> None:
    """A removal of `files` files that `err` cut short, logged: a full disk as what it is, any other fault whole."""
    if db.disk_full(err):
        log.warning("could not finish removing %s yet: the data dir's disk is full", counted(files, "file"))
    else:
        log.exception("could not finish removing %s", counted(files, "file"))


def _share_gone(result: object) -> bool:
    """Whether a holder's answer to a delete says it holds no such share (here, or a peer's 404 share-not-found)."""
    if isinstance(result, ShareNotFound):
        return True
    return isinstance(result, XscError) and (result.details or {}).get("peer_code") == ShareNotFound.code


__all__ = ["FINISHED_AT_ONCE", "REMOVING_AT_ONCE", "Removals", "Removed"]
