"""A job's record (keys.job: its state, charge, outputs, provenance, executions), read and written for one user,
one writer of a job's record at a time, and the shapes a run leaves it in and answers with (jobs.py runs jobs,
remote_answers.py finishes those run on a provider)."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from .. import codec, keys
from ..db import Database
from ..errors import JobNotFound, OverCap, Trap, XscError
from ..storage.core.capability import Capability
from ..tasks import Locks, in_pool
from .job_sandbox import MAX_OUTPUTS, UNPRINTABLE
from . import lineage as lineage_
from .lineage import verify_hash as _verify_hash
from .out_bound import MAX_DEPTH, MAX_ENTRIES

log = logging.getLogger(__name__)

CHUNK = 1 << 20
KEPT_STREAMS = 1 << 20  # a deterministic job's stdout and stderr kept with its record for replays, at most
UNFINISHED = ("running", "storing")  # the states a job's record is in while it runs, as a stop may leave it


class JobRecords:
    def __init__(self, db: Database, user: bytes) -> None:
        self.db, self.user = db, user
        self._one_at_a_time: Locks[str] = Locks()  # job id -> held while a run of it is under way

    def load(self, jid: str) -> dict[str, Any] | None:
        raw = self.db.get(keys.job(self.user, bytes.fromhex(jid)))
        return None if raw is None else codec.loads(raw)

    def save(self, jid: str, job: dict[str, Any]) -> None:
        self.db.put(keys.job(self.user, bytes.fromhex(jid)), codec.dumps(job), sync=True)

    def entry(self, jid: str, job: dict[str, Any]) -> tuple[bytes, bytes]:
        """The job's record as a write of a batch that publishes more with it."""
        return keys.job(self.user, bytes.fromhex(jid)), codec.dumps(job)

    def finished(self, job: dict[str, Any], signed: dict[str, Any]) -> None:
        """In one write: the job done, the provider's signed record of its run kept by its id (the job's record
        keeps only its latest run's), and each output's link to it."""
        provenance_id = signed["record"]["id"]
        with self.db.write_batch(sync=True) as batch:
            batch.put(*self.entry(job["id"], job))
            batch.put(keys.job_run(bytes.fromhex(provenance_id)), codec.dumps(signed))
            for key, value in made(self.user.hex(), job["id"], job["outputs"], provenance_id):
                batch.put(key, value)

    def by_prefix(self, text: str) -> dict[str, Any] | None:
        """The user's job whose id starts with the hex digits `text`, if there is one."""
        start = keys.JOBS + self.user + bytes.fromhex(text[:len(text) // 2 * 2])
        with self.db.iterator(prefix=start) as records:
            for _, value in records:
                found = codec.loads(value)
                if found["id"].startswith(text):
                    return found
        return None

    def lineage(self, provenance: Callable[[str], Any]) -> lineage_.Records:
        """What a lineage walk reads: an output's link to its run, any user's job, a provider's record of a run."""
        def read(key: bytes) -> dict[str, Any] | None:
            raw = self.db.get(key)
            return None if raw is None else codec.loads(raw)

        return lineage_.Records(
            lambda si: read(keys.job_output(si)),
            lambda user, jid: read(keys.job(bytes.fromhex(user), bytes.fromhex(jid))),
            lambda pid: read(keys.job_run(bytes.fromhex(pid))), provenance)

    def all_jobs(self) -> list[dict[str, Any]]:
        """Every job record (any user's)."""
        with self.db.iterator(prefix=keys.JOBS) as found:
            return [codec.loads(value) for _, value in found]

    def alone(self, jid: str):
        """No other run (nor resumption) of job `jid` under way meanwhile."""
        return self._one_at_a_time.one(jid)


class JobOutputs:
    """A job's outputs stored through the node's put (at the market's storage bid), or removed."""

    def __init__(self, storage: Any, db: Database, user: bytes, bid: int) -> None:
        self.storage, self.db, self.user, self.bid = storage, db, user, bid
        self.lock = threading.Lock()  # held by a publication writing a job's output into its record

    async def store(self, files: list[tuple[str, Path, int]], job: dict[str, Any]) -> list[dict[str, Any]]:
        """Store each output through the node's put, after those `job` has stored already; all of them, or (one
        failing) none.  Each output goes into the job's record in the synced write that publishes its file
        (`_Recorded`): whatever a kill -9 cuts short, every file the job stored is one its record names, and only
        those are removed (a file of the user's with the same name is none of the job's)."""
        stored: list[dict[str, Any]] = job["outputs"]
        seconds = self.storage.lease_seconds(None)
        key = keys.job(self.user, bytes.fromhex(job["id"]))
        try:
            for name, path, size in files:
                digest, md5 = hashlib.sha256(), hashlib.md5()  # the MD5: its ETag, when it becomes an S3 object
                with open(path, "rb") as f:
                    async def read(n: int, f=f) -> bytes:
                        chunk = await in_pool(None, f.read, min(n, CHUNK))
                        digest.update(chunk)
                        md5.update(chunk)
                        return chunk

                    def riding(cap: str, name=name, size=size, digest=digest, md5=md5) -> _Recorded:
                        return _Recorded(self.lock, key, {
                            "name": name, "size": size, "sha256": digest.hexdigest(), "md5": md5.hexdigest(),
                            "capability": cap, "verify_hash": _verify_hash(Capability.parse(cap))})

                    answer = await self.storage.put(read, size, f"job:{job['id']}:{name}", seconds,
                                                    self.bid, riding=riding)
                stored.append(riding(answer["capability"]).output)
                job.update(outputs=stored)
        except BaseException:
            raw = self.db.get(key)
            recorded = codec.loads(raw) if raw is not None else {**job, "outputs": []}
            await self.remove([o["capability"] for o in recorded["outputs"]])
            job["outputs"] = []
            self.db.put(key, codec.dumps({**recorded, "outputs": []}), sync=True)
            raise
        return stored

    async def remove(self, caps: list[str]) -> None:
        for text in caps:
            try:
                await self.storage.remove(Capability.parse(text))
            except XscError as err:
                log.warning("could not remove output %s of an unfinished job: %s", text[:32], err)


class _Recorded:
    """A job's output added to the job's record by the synced write that publishes the output's file
    (share_store.Rider)."""

    def __init__(self, lock: threading.Lock, key: bytes, output: dict[str, Any]) -> None:
        self.lock, self.key, self.output = lock, key, output

    def entries(self, read: Callable[[bytes], bytes | None]) -> dict[bytes, bytes | None]:
        raw = read(self.key)
        if raw is None:
            raise JobNotFound("the job's record is gone: its output is not stored", hint="run the job again")
        job = codec.loads(raw)
        outputs = [o for o in job.get("outputs", []) if o["name"] != self.output["name"]]
        return {self.key: codec.dumps({**job, "state": "storing", "outputs": [*outputs, self.output]})}


def ended(job: dict[str, Any], run: dict[str, Any], stored: list[dict[str, Any]], refusal: str | None,
          trap: dict[str, Any] | None, **where: Any) -> dict[str, str]:
    """The job's record as its run left it (not written yet); its stdout and stderr."""
    failed = refusal or (trap["message"] if trap else None)
    job.update(state="failed" if failed else "done", executions=job["executions"] + 1, charge=run["charge"],
               provenance=run["provenance"], outputs=stored, exit_code=run.get("exit_code"),
               fuel_consumed=run["fuel_consumed"], cost=run["cost"], **where)
    if failed:
        job["error"] = failed
    streams = {"stdout": run.get("stdout", ""), "stderr": run.get("stderr", "")}
    if job["spec"]["deterministic"]:  # answered again by a replay (a longer stream: a replay runs it again)
        job.update(streams)
        if len(streams["stdout"]) + len(streams["stderr"]) > KEPT_STREAMS:
            job.update(stdout="", stderr="", replayable=False)
    return streams


def answer(job: dict[str, Any], streams: dict[str, str], charge: int, refusal: str | None,
           trap: dict[str, Any] | None) -> dict[str, Any]:
    """What a run of the job answers: its record and streams, or its refusal (OverCap) or trap (Trap)."""
    answered = {**job, **streams, "replayed": False, "charged": charge}
    answered.pop("signed", None)
    if refusal is not None:
        raise OverCap(f"the job {job['id']} ran, but {refusal}: nothing of its outputs is stored",
                      hint=_refusal_hint(refusal), **answered)
    if trap is not None:
        raise Trap(f"the job {job['id']} failed: {trap['message']}", kind=trap.get("kind"),
                   hint=trap.get("hint"), **answered)
    return answered


def made(user: str, jid: str, stored: list[dict[str, Any]], provenance_id: str
         ) -> tuple[tuple[bytes, bytes], ...]:
    """Each stored output's link to the run that wrote it, written with that run's job record: a lineage walk
    holds a file to the record of its own run, not to the job's latest (which wrote other files)."""
    return tuple((keys.job_output(Capability.parse(o["capability"]).storage_index),
                  codec.dumps({"job": jid, "user": user, "provenance": provenance_id, "name": o["name"],
                               "sha256": o["sha256"]})) for o in stored)


def _refusal_hint(refusal: str) -> str:
    if refusal.startswith(UNPRINTABLE):
        return "name the files it leaves in /out with printable characters"
    if refusal.startswith(("it made", "it left more than")):  # out_bound.py's bounds on /out's tree, MAX_OUTPUTS
        return (f"make at most {MAX_ENTRIES:,} files and directories in /out, {MAX_DEPTH} deep, and leave at most "
                f"{MAX_OUTPUTS} (many files in one archive are one)")
    return "ask for more with --bytes-out (or --stdout-cap), or write less"


__all__ = ["JobOutputs", "JobRecords", "KEPT_STREAMS", "UNFINISHED", "answer", "ended", "made"]
