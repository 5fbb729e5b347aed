"""The provenance journal: records of finished runs written in groups, each group one signed batch and one
synced write (group commit, as the ledger writes its settlements).

A run's caller answers only once the record is on disk (fsynced): what it acknowledged survives a power
loss.  A lone call's worker writes its record itself (`write_now`: parse, run and record in one worker,
no second thread hop); records that arrive while a write is under way are `append`ed and form the next
group, written by the journal's thread.  Per group:
each record gets its link to the previous record of the same module on this node (`previous`: a per-module
chain, so a module's lineage can be walked), the Merkle root of the group's canonical records is signed
once, and the stored records, the modules' invocation counts and chain heads, and whatever the callers add
(`puts`: what a paid run owes, ledger/tabs.py) go in one synced LevelDB write batch.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from typing import Any

import plyvel

from .. import keys
from ..identity import Identity
from ..tasks import Workers
from . import provenance

MAX_GROUP = 512


class Journal:
    def __init__(self, db: plyvel.DB, identity: Identity) -> None:
        self._db = db
        self.identity = identity
        self._writer = Workers(1, "xsc-provenance-writer")
        self._lock = threading.Lock()  # one write at a time (the chain heads and counts are in its order)
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._counts: dict[bytes, int] = {}  # module hash -> invocations (touched under _lock only)
        self._heads: dict[bytes, str | None] = {}  # module hash -> id of its newest record (under _lock only)
        self.groups = 0

    async def append(self, record: dict[str, Any], module_hash: bytes,
                     puts: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Write `record` (its `previous` link is filled in here) durably, with `puts`, in the next group."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(((record, module_hash, puts), future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        await asyncio.shield(future)

    def write_now(self, record: dict[str, Any], module_hash: bytes, puts: tuple[tuple[bytes, bytes], ...] = ()) -> bool:
        """From the worker that ran the call: write its record at once if no other write is under way (no
        second thread hop for a lone call); False if one is, and the caller then `append`s it to the group."""
        if self._pending or not self._lock.acquire(blocking=False):
            return False
        try:
            self._write_locked([(record, module_hash, puts)])
        finally:
            self._lock.release()
        return True

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            try:
                await self._writer.run(self._write, [item for item, _ in group])
                error = None
            except Exception as exc:  # nothing of the group was stored
                error = exc
            for _, future in group:
                if not future.done():
                    future.set_exception(error) if error is not None else future.set_result(None)

    def _write(self, items: list[tuple[dict, bytes, tuple]]) -> None:
        with self._lock:
            self._write_locked(items)

    def _write_locked(self, items: list[tuple[dict, bytes, tuple]]) -> None:
        counts: dict[bytes, int] = {}
        heads: dict[bytes, str] = {}
        for record, module_hash, _ in items:
            if module_hash not in heads:
                heads[module_hash] = self._head(module_hash)
                counts[module_hash] = self._count(module_hash)
            record["previous"] = heads[module_hash]
            heads[module_hash] = record["id"]
            counts[module_hash] += 1
        stored = provenance.sign_batch(self.identity, [provenance.canonical(r) for r, _, _ in items])
        with self._db.write_batch(sync=True) as batch:
            for (record, _, puts), data in zip(items, stored):
                batch.put(keys.provenance(bytes.fromhex(record["id"])), data)
                for key, value in puts:
                    batch.put(key, value)
            for module_hash, head in heads.items():
                batch.put(keys.provenance_head(module_hash), bytes.fromhex(head))
                batch.put(keys.invocations(module_hash), struct.pack(">Q", counts[module_hash]))
        self._heads.update(heads)
        self._counts.update(counts)
        self.groups += 1

    def _head(self, module_hash: bytes) -> str | None:
        if module_hash not in self._heads:
            data = self._db.get(keys.provenance_head(module_hash))
            self._heads[module_hash] = data.hex() if data else None
        return self._heads[module_hash]

    def _count(self, module_hash: bytes) -> int:
        if module_hash not in self._counts:
            data = self._db.get(keys.invocations(module_hash))
            self._counts[module_hash] = struct.unpack(">Q", data)[0] if data else 0
        return self._counts[module_hash]

    async def close(self) -> None:
        while self._drainer is not None and not self._drainer.done():
            await self._drainer
        self._writer.shutdown(wait=True)


__all__ = ["Journal"]
