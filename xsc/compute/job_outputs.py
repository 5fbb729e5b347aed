"""A job's outputs stored through the node's put, each named in the job's record by the write that publishes its
file, and the outputs of the run before replaced by them (jobs.py and remote_answers.py store through it)."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .. import codec
from ..db import Database
from ..errors import JobNotFound
from ..storage.core.capability import Capability
from ..tasks import in_pool
from .job_answers import REPLACING
from .job_records import record_entries, record_key
from .lineage import verify_hash as _verify_hash


CHUNK = 1 << 20


class JobOutputs:
    """A job's outputs stored through the node's put (at the market's storage bid), or removed; and the outputs of
    the run before replaced by them."""

    def __init__(self, storage: Any, db: Database, user: bytes, bid: int) -> None:
        self.storage, self.db, self.user, self.bid = storage, db, user, bid
        self.lock = threading.Lock()  # held by a publication writing a job's output into its record

    async def store(self, files: list[tuple[str, Path, int]], job: dict[str, Any]) -> list[dict[str, Any]]:
        """Store each output through the node's put, after those `job` has stored already; all of them, or (one
        failing) none.  Each output goes into the job's record in the synced write that publishes its file
        (`_Recorded`): whatever a kill -9 cuts short, every file the job stored is one its record names, and only
        those are removed (a file of the user's with the same name is none of the job's).  The first one published
        takes the outputs of the run before (the record's `replacing`) out of the listing and out of the record in
        that write; their removal is finished once it is written (or at the next start)."""
        stored: list[dict[str, Any]] = job["outputs"]
        seconds = self.storage.lease_seconds(None)
        try:
            for name, path, size in files:
                digest, md5 = hashlib.sha256(), hashlib.md5()  # the MD5: its ETag, when it becomes an S3 object
                riders: list[_Recorded] = []
                with open(path, "rb") as f:
                    async def read(n: int, f=f) -> bytes:
                        chunk = await in_pool(None, f.read, min(n, CHUNK))
                        digest.update(chunk)
                        md5.update(chunk)
                        return chunk

                    def riding(cap: str, name=name, size=size, digest=digest, md5=md5, riders=riders) -> _Recorded:
                        riders.append(_Recorded(self.lock, self.user, job["id"], self.storage, {
                            "name": name, "size": size, "sha256": digest.hexdigest(), "md5": md5.hexdigest(),
                            "capability": cap, "verify_hash": _verify_hash(Capability.parse(cap))}))
                        return riders[-1]

                    answer = await self.storage.put(read, size, f"job:{job['id']}:{name}", seconds,
                                                    self.bid, riding=riding)
                stored.append(riding(answer["capability"]).output)
                job.update(outputs=stored)
                replaced = [cap for rider in riders for cap in rider.replaced]
                if any(rider.wrote for rider in riders):
                    job.pop("replacing", None)
                await self.storage.removals.finish(replaced)
        except BaseException:
            await self.unstore(job)
            raise
        return stored

    async def unstore(self, job: dict[str, Any], record: dict[str, Any] | None = None) -> None:
        """The job's record written naming no outputs (`record`, else the record on disk as it stands) in one synced
        write that takes every output it named (on disk, or in `job`: one published whose answer never came back)
        out of the listing, then their removal finished.  A removal that cannot finish now (a holder away) is
        finished at the next start, as any a crash cut short: whatever fails or a kill -9 cuts short, no file the
        job stored is listed while its record does not name it."""
        raw = self.db.get(record_key(self.user, job["id"]))
        on_disk = None if raw is None else codec.loads(raw)
        named = [*(on_disk or {}).get("outputs", []), *job.get("outputs", [])]
        caps = list({o["capability"]: Capability.parse(o["capability"]) for o in named}.values())
        written = {**(record if record is not None else on_disk if on_disk is not None else job), "outputs": []}
        job["outputs"] = []
        await self.storage.removals.begin(caps, int(time.time()), dict(record_entries(self.user, job["id"], written)))
        await self.storage.removals.finish(caps)

    async def replace(self, jid: str) -> None:
        """The outputs of the run before (`replacing`) of a job whose run ended without publishing any of its own
        (failed, or it left none) taken out of the listing and out of its record, in one synced write, then
        removed: the record names one run's outputs, its latest's.  A run refused before it ran, or cut short by a
        stop, replaces nothing.  Its caller holds the job (`JobRecords.alone`)."""
        raw = self.db.get(record_key(self.user, jid))
        job = None if raw is None else codec.loads(raw)
        if job is None or not job.get("replacing") or job.get("state") not in REPLACING:
            return
        caps = [Capability.parse(o["capability"]) for o in job.pop("replacing")]
        await self.storage.removals.begin(caps, int(time.time()), dict(record_entries(self.user, jid, job)))
        await self.storage.removals.finish(caps)


class _Recorded:
    """A job's output added to the job's record by the synced write that publishes the output's file
    (share_store.Rider), the outputs of the run before it replaces taken out of the listing in that write."""

    def __init__(self, lock: threading.Lock, user: bytes, jid: str, storage: Any, output: dict[str, Any]) -> None:
        self.lock, self.user, self.jid, self.storage, self.output = lock, user, jid, storage, output
        self.replaced: list[Capability] = []  # the files whose removal its write began
        self.wrote = False

    def entries(self, read: Callable[[bytes], bytes | None]) -> dict[bytes, bytes | None]:
        raw = read(record_key(self.user, self.jid))
        if raw is None:
            raise JobNotFound("the job's record is gone: its output is not stored", hint="run the job again")
        job = codec.loads(raw)
        outputs = [o for o in job.get("outputs", []) if o["name"] != self.output["name"]]
        written: dict[bytes, bytes | None] = {}
        self.replaced = [Capability.parse(o["capability"]) for o in job.pop("replacing", [])]
        for cap in self.replaced:
            written.update(self.storage.removals.removal_entries(read, cap, int(time.time())))
        written.update(record_entries(self.user, self.jid, {**job, "state": "storing",
                                                            "outputs": [*outputs, self.output]}))
        self.wrote = True
        return written


__all__ = ["JobOutputs"]
