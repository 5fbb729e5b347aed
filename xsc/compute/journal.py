"""The provenance journal: records of finished runs written durably in groups (group commit, as the ledger
writes its settlements), then signed in batches.

A run's caller answers only once its record is on disk (fsynced): what it acknowledged survives a power
loss.  Group commit with a leader: a record comes from the worker that ran its call (`commit`: parse, run,
record and write in one worker, one hop per call) or from the loop (`append`, a call run inline); if no
group is being written, the caller leads one at once (a worker writes it itself; for the loop, which never
writes, the journal's thread does): every record waiting goes in it.  Records that come during a write wait
for the next group, and their workers are free at once: the leader answers each caller on its loop when
its group is on disk (or failed), and the journal's thread writes the next group, once as many records wait as
the group just answered had (the callers it answered send their next calls meanwhile), or GATHER after it was
answered: under load, fewer and larger groups (each costs a synced write and a signature), and a lone record, or
one that comes while nothing is written, is never held, unless nobody waits for it (`append(awaited=False)`: a
web function's caller is answered before its record is written): such records start a group once LAZY of them
wait or LAZY_AFTER after the first, so that under load their groups are large.  Per group, in one synced
LevelDB write batch: the records in their canonical form, each with its link to the previous record of the
same module on this node (`previous`: a per-module chain, so a module's lineage can be walked), the modules'
invocation counts and chain heads, whatever the callers add (`puts`: what a paid run owes, ledger/tabs.py), and
for each record an `unsigned` mark; or, for a group of SIGN_IN_GROUP records or more (under load), the records
already signed as one batch (below): one signature costs such a group less than writing each record twice.

A peer's batch of calls is usually one such group (its calls run on the loop one after the other, and its gateway
waits for all of them), so it is signed in its own write too: signing it after its answer would cost the provider
a second write of every record and a second wake of the journal's thread per batch.  A smaller group's signing
waits for no caller: within SIGN_DELAY of a write, the journal's thread signs every record written since its last
batch at once (one Ed25519 signature over the Merkle root of their canonical records; each record gets the root,
the signature, its place and its inclusion proof, so it verifies alone) and rewrites them, dropping their marks,
without a sync of its own.  So a lone caller does not wait for a signature, and under load one signature covers every record of SIGN_DELAY.  A record is never
read unsigned: a read that finds one has the pending batch signed first (`sign_pending`).  After a crash, the
records still marked (their content was durable; the signature, a function of that content and the node's key, may
not have been) are signed when the journal opens.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from typing import Any


from .. import keys
from ..db import Database
from ..identity import Identity
from ..tasks import Workers
from ..units import counted
from . import provenance

log = logging.getLogger(__name__)

MAX_GROUP = 512
GATHER = 0.001  # seconds the next group waits at most for as many records as the group before it had
LAZY, LAZY_AFTER = 16, 0.005  # records nobody waits for start a group once this many wait, or this long after
# A record waiting for its group: (record, module hash, puts, loop, future, result to set once it is durable).
_Entry = tuple
SIGN_DELAY = 0.02  # seconds a durable record may wait for its batch signature
SIGN_IN_GROUP = 4  # records of a group from which it is signed as it is written (not after)
MAX_SIGN_BATCH = 4096  # records one signature covers at most (a proof of 12 hashes)
UNSIGNED_HEAD = b'{"record":'  # the stored form of a record awaiting its signature: {"record": <canonical>}
# Modules whose chain head and count are kept in memory (read from disk again past it): the modules run here are
# whoever a gateway pushes.
MODULES_KEPT = 4096


class Journal:
    def __init__(self, db: Database, identity: Identity) -> None:
        self._db = db
        self.identity = identity
        self._writer = Workers(1, "xsc-provenance-writer")
        self._lock = threading.Lock()  # one write at a time (the chain heads and counts are in its order)
        self._queue = threading.Lock()  # the records waiting for a group, and whether a leader writes them
        self._pending: list[_Entry] = []
        self._leading = False  # a thread is writing groups (the leader): it takes every record waiting
        self._counts: dict[bytes, int] = {}  # module hash -> invocations (touched under _lock only)
        self._heads: dict[bytes, str | None] = {}  # module hash -> id of its newest record (under _lock only)
        self._sign_lock = threading.Lock()  # one signing at a time; held while a batch is signed and rewritten
        self._unsigned: list[tuple[bytes, bytes]] = []  # (id, canonical record) durable, awaiting a signature
        self._signer: asyncio.TimerHandle | None = None
        self._gathering: asyncio.TimerHandle | None = None  # the next group waits for more records (on the loop)
        self._gather_for = 0  # ... until this many wait
        self._lazy: asyncio.TimerHandle | None = None  # a group of records nobody waits for starts (on the loop)
        self._urgent = False  # a record waiting for a group is awaited (under _queue)
        self._last: asyncio.Future | None = None  # the future of the last record appended (on the loop)
        self._signing: set[asyncio.Future] = set()
        self.groups = 0
        self.signed_batches = 0
        self._recover()

    @property
    def modules_kept(self) -> int:
        """Modules whose chain head is kept in memory (tests)."""
        return len(self._heads)

    @property
    def waiting(self) -> int:
        """Records waiting for the next group write."""
        with self._queue:
            return len(self._pending)

    def append(self, record: dict[str, Any], module_hash: bytes,
               puts: tuple[tuple[bytes, bytes | None], ...] = (), *, awaited: bool = True) -> asyncio.Future:
        """On the loop: write `record` (its `previous` link is filled in here) durably, with `puts` (a value of
        None deletes its key), in the next
        group; the future is done once it is on disk (or failed, if the group's write failed).  The loop never
        writes: with no group being written, the journal's thread leads the next one (it takes every record
        waiting when it starts: those the loop appends meanwhile go in it too).  A record whose caller does not
        wait for it (`awaited` false: a web function's, answered before its record is written) starts a group
        only once LAZY records wait or LAZY_AFTER has passed (an awaited one starts it at once): under load,
        groups of many records, each signed as it is written."""
        loop = asyncio.get_running_loop()
        future = self._last = loop.create_future()
        with self._queue:
            self._pending.append((record, module_hash, puts, loop, future, None))
            self._urgent = self._urgent or awaited
            waiting, leading = len(self._pending), self._leading
            lead = not leading and (awaited or waiting >= LAZY)
            if lead:
                self._leading = True
        if lead:
            if self._lazy is not None:
                self._lazy.cancel()
                self._lazy = None
            self._writer.submit(self._lead)
        elif not leading:
            if self._lazy is None:
                self._lazy = loop.call_later(LAZY_AFTER, self._lazy_lead)
        elif self._gathering is not None and (waiting >= self._gather_for or awaited):
            self._gathering.cancel()  # the next group has what it waited for (or someone waits for it now)
            self._gathered()
        return future

    async def flush(self) -> None:
        """On the loop: once every record appended so far is written (or failed); those nobody waits for are
        written now, not once more come (a tab closed must count the runs answered under it)."""
        last = self._last
        if last is None or last.done():
            return
        with self._queue:
            self._urgent = self._urgent or bool(self._pending)
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy_lead()
        if self._gathering is not None:
            self._gathering.cancel()
            self._gathered()
        await asyncio.wait([last])

    def _lazy_lead(self) -> None:
        """On the loop, LAZY_AFTER after a record nobody waits for: the records waiting are the next group (unless
        one is being written already: they go in the one after it)."""
        self._lazy = None
        with self._queue:
            if self._leading or not self._pending:
                return
            self._leading = True
        self._writer.submit(self._lead)

    def commit(self, record: dict[str, Any], module_hash: bytes, puts: tuple[tuple[bytes, bytes | None], ...],
               loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any) -> None:
        """From the worker that ran a call (parse, run, record and write in one worker: one hop per call): write
        its record durably in a group, then set `result` on `future` (of `loop`).  With no group being written,
        this worker writes one at once (every record waiting, its own among them: it leads the group); else its
        record joins the next group and the worker is free at once: that group's leader answers it."""
        with self._queue:
            self._pending.append((record, module_hash, puts, loop, future, result))
            self._urgent = True
            if self._leading:
                return
            self._leading = True
            group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            self._urgent = bool(self._pending)
        self._lead(group)

    def _lead(self, group: list[_Entry] | None = None) -> None:
        """Write one group (`group`, or every record waiting, up to MAX_GROUP) in one synced batch; then answer
        its callers on their loop.  Records that came during the write form the next group, which the journal's
        thread writes once the loop has answered these (by then more have come: fewer, larger groups)."""
        if group is None:
            with self._queue:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                self._urgent = self._urgent and bool(self._pending)
        try:
            self._write([entry[:3] for entry in group])
            error = None
        except Exception as exc:  # nothing of the group was stored: each of its callers gets the error
            log.error("writing %s failed: %s", counted(len(group), "provenance record"), exc)
            error = exc
        with self._queue:
            self._leading = hand_on = bool(self._pending)  # still leading: the next group is handed on below
        loop = group[0][3]
        parts = [(loop, group)] if all(entry[3] is loop for entry in group) else _by_loop(group)
        for loop, entries in parts:
            try:
                loop.call_soon_threadsafe(self._answer, entries, error, hand_on)
                hand_on = False
            except RuntimeError:  # the loop is closed: nobody waits for these
                pass
        if hand_on:  # no loop took the next group on
            self._writer.submit(self._lead)

    def _answer(self, entries: list[_Entry], error: Exception | None, hand_on: bool) -> None:
        """On the loop: a group is on disk (or failed): its callers go on, and the next group is written."""
        for _, _, _, _, future, result in entries:
            if not future.done():
                future.set_exception(error) if error is not None else future.set_result(result)
        if hand_on:  # the next group: at once if as many records wait as these were, else once they do (or GATHER);
            # records nobody waits for: once LAZY wait (or LAZY_AFTER)
            wanted = len(entries) if self._urgent else max(len(entries), LAZY)
            if len(self._pending) >= wanted:
                self._writer.submit(self._lead)
            else:
                self._gather_for = wanted
                self._gathering = asyncio.get_running_loop().call_later(GATHER if self._urgent else LAZY_AFTER,
                                                                        self._gathered)
        if error is None:
            self.sign_soon()

    def _gathered(self) -> None:
        """On the loop: the records waiting are the next group: the journal's thread writes it."""
        self._gathering = None
        self._writer.submit(self._lead)

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
        written = [(bytes.fromhex(record["id"]), provenance.canonical(record)) for record, _, _ in items]
        # A large group is signed as it is written: one signature for the group costs its records less than
        # being written twice (unsigned with a mark, then signed); a small one is answered without waiting for it.
        signed = provenance.sign_batch(self.identity, [body for _, body in written]) \
            if len(written) >= SIGN_IN_GROUP else None
        with self._db.write_batch(sync=True) as batch:
            for i, ((record_id, body), (_, _, puts)) in enumerate(zip(written, items)):
                if signed is None:
                    batch.put(keys.provenance(record_id), UNSIGNED_HEAD + body + b"}")
                    batch.put(keys.unsigned(record_id), b"")
                else:
                    batch.put(keys.provenance(record_id), signed[i])
                for key, value in puts:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
            for module_hash, head in heads.items():
                batch.put(keys.provenance_head(module_hash), bytes.fromhex(head))
                batch.put(keys.invocations(module_hash), struct.pack(">Q", counts[module_hash]))
        if len(self._heads) + len(heads) > MODULES_KEPT:  # what is on disk is read again as needed
            self._heads.clear()
            self._counts.clear()
        self._heads.update(heads)
        self._counts.update(counts)
        self.groups += 1
        if signed is not None:
            self.signed_batches += 1
            return
        with self._sign_lock:
            self._unsigned.extend(written)

    # --- signatures ------------------------------------------------------------------------------------
    def sign_soon(self) -> None:
        """On the loop, after a write: have the records written since the last batch signed within SIGN_DELAY."""
        if self._signer is None:
            self._signer = asyncio.get_running_loop().call_later(SIGN_DELAY, self._sign_in_writer)

    def _sign_in_writer(self) -> asyncio.Future:
        self._signer = None
        future = self._writer.run(self.sign_pending)
        self._signing.add(future)
        future.add_done_callback(self._signed)
        return future

    def _signed(self, future: asyncio.Future) -> None:
        self._signing.discard(future)
        if not future.cancelled() and future.exception() is not None:  # still marked: signed by a later batch
            log.error("signing provenance records failed: %s", future.exception())

    def sign_pending(self) -> int:
        """Sign every record written and not yet signed (in batches of MAX_SIGN_BATCH) and store them signed;
        returns how many.  Any thread; a caller that finds a record unsigned calls it before reading again."""
        with self._sign_lock:
            done = 0
            while self._unsigned:
                batch, rest = self._unsigned[:MAX_SIGN_BATCH], self._unsigned[MAX_SIGN_BATCH:]
                self._store_signed(batch)
                self._unsigned = rest
                done += len(batch)
            return done

    def _store_signed(self, records: list[tuple[bytes, bytes]]) -> None:
        stored = provenance.sign_batch(self.identity, [body for _, body in records])
        with self._db.write_batch() as batch:  # no sync: until this is on disk, the marks say what to sign again
            for (record_id, _), data in zip(records, stored):
                batch.put(keys.provenance(record_id), data)
                batch.delete(keys.unsigned(record_id))
        self.signed_batches += 1

    def _recover(self) -> None:
        """Sign the records a crash left unsigned (written durably; their signature was not)."""
        found = []
        with self._db.iterator(prefix=keys.UNSIGNED, include_value=False) as marks:
            for key in marks:
                record_id = key[len(keys.UNSIGNED):]
                data = self._db.get(keys.provenance(record_id))
                if data is not None and unsigned(data):
                    found.append((record_id, data[len(UNSIGNED_HEAD):-1]))
        if found:
            with self._sign_lock:
                self._unsigned.extend(found)
            log.info("signing %d provenance records written before the last stop", self.sign_pending())

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
        if self._lazy is not None:  # records nobody waits for: written now
            self._lazy.cancel()
            self._lazy_lead()
        if self._gathering is not None:  # the next group waits for more: none will come now
            self._gathering.cancel()
            self._gathered()
        while self._leading:  # a group is being written: its callers are answered first
            await asyncio.sleep(0.005)
        if self._signer is not None:
            self._signer.cancel()
            self._signer = None
        if self._signing:
            await asyncio.gather(*self._signing, return_exceptions=True)
        self._writer.shutdown(wait=True)
        self.sign_pending()


def _by_loop(group: list[_Entry]) -> list[tuple[asyncio.AbstractEventLoop, list[_Entry]]]:
    loops: dict[asyncio.AbstractEventLoop, list[_Entry]] = {}
    for entry in group:
        loops.setdefault(entry[3], []).append(entry)
    return list(loops.items())


def unsigned(data: bytes) -> bool:
    """Whether a stored record awaits its signature (see Journal.sign_pending)."""
    return data.startswith(UNSIGNED_HEAD) and data.endswith(b"}}")


__all__ = ["Journal", "unsigned"]
