"""A job's record (keys.job: its state, charge, outputs, provenance, executions) and its place in the user's list of
jobs, read and written for one user, one writer of a job's record at a time (jobs.py runs jobs, remote_answers.py
finishes those run on a provider; job_answers.py shapes what a run leaves in it, job_outputs.py stores its outputs,
job_retention.py forgets it)."""

from __future__ import annotations

from typing import Any, Callable

from .. import codec, keys
from ..db import Database, Rows
from ..storage.core.capability import Capability
from ..tasks import Locks
from . import lineage as lineage_, provenance

CURSOR_BYTES = 16  # a job's place in the list of jobs, as a page's cursor: when it began (8), its id's first 8


class JobRecords:
    def __init__(self, db: Database, user: bytes) -> None:
        self.db, self.user = db, user
        self._one_at_a_time: Locks[str] = Locks()  # job id -> held while a run of it is under way

    def load(self, jid: str) -> dict[str, Any] | None:
        raw = self.db.get(record_key(self.user, jid))
        return None if raw is None else codec.loads(raw)

    def save(self, jid: str, job: dict[str, Any]) -> None:
        with self.db.write_batch(sync=True) as batch:
            for key, value in self.entries(jid, job):
                batch.put(key, value)

    def entries(self, jid: str, job: dict[str, Any]) -> Rows:
        """The job's record, and what the list of jobs shows of it, as writes of a batch (that may publish more)."""
        return record_entries(self.user, jid, job)

    def began(self, jid: str, job: dict[str, Any]) -> bytes:
        """The key of the user's job `jid` in the list of its jobs, by when its latest run began (keys.job_began)."""
        return keys.job_began(self.user, provenance.timestamp_ns(job.get("created")), bytes.fromhex(jid))

    def begin(self, jid: str, job: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """A run's record as it begins, in one synced write with its place in the user's list of jobs (the place an
        earlier run of it had, gone): the list never names a job twice nor misses one."""
        with self.db.write_batch(sync=True) as batch:
            if previous is not None:
                batch.delete(self.began(jid, previous))
            batch.put(self.began(jid, job), b"")
            for key, value in self.entries(jid, job):
                batch.put(key, value)

    def list_unlisted(self) -> int:
        """Once per user: give each of the user's job records that has no place in the list of its jobs (one written
        before the list was kept) its place, by when it began, in one write with the mark that it was done (every
        record written since has its place written with it); how many there were."""
        done = keys.jobs_listed(self.user)
        if self.db.get(done) is not None:
            return 0
        unlisted = []
        with self.db.iterator(prefix=keys.JOBS + self.user) as records:
            for _, raw in records:
                job = codec.loads(raw)
                if self.db.get(self.began(job["id"], job)) is None:
                    unlisted.append(self.began(job["id"], job))
        with self.db.write_batch(sync=True) as batch:
            for key in unlisted:
                batch.put(key, b"")
            batch.put(done, b"")
        return len(unlisted)

    def page(self, limit: int, before: bytes | None) -> tuple[list[dict[str, Any]], bytes | None]:
        """What the list shows of the user's jobs (`summary`), newest first (by when their latest run began), `limit`
        at most, those listed after the one whose place is `before`; and the place of the last one listed when more
        follow it.  A place is when the job began and the first 8 bytes of its id (CURSOR_BYTES): short enough to be
        typed, and two jobs begun in the same microsecond whose ids begin alike are beyond chance.  Each job's
        summary is read, not its record; a record written before summaries were kept is summarised as it is read."""
        prefix = keys.jobs_began(self.user)
        span = {"prefix": prefix} if before is None else {"start": prefix, "stop": prefix + before}
        found: list[dict[str, Any]] = []
        last = None
        with self.db.iterator(reverse=True, include_value=False, **span) as listed:
            for key in listed:
                began, jid = keys.split_job_began(key)
                job = self._summary(jid)
                if job is None or provenance.timestamp_ns(job.get("started")) != began:
                    continue  # not where its latest run put it
                if len(found) == limit:
                    return found, last
                found.append(job)
                last = key[len(prefix):len(prefix) + CURSOR_BYTES]
        return found, None

    def _summary(self, jid: bytes) -> dict[str, Any] | None:
        raw = self.db.get(keys.job_summary(self.user, jid))
        if raw is not None:
            return codec.loads(raw)
        raw = self.db.get(keys.job(self.user, jid))
        return None if raw is None else summary(codec.loads(raw))

    def finished(self, job: dict[str, Any], signed: dict[str, Any]) -> None:
        """In one write: the job done, the provider's signed record of its run kept by its id (the job's record
        keeps only its latest run's), and each output's link to it."""
        provenance_id = signed["record"]["id"]
        with self.db.write_batch(sync=True) as batch:
            for key, value in self.entries(job["id"], job):
                batch.put(key, value)
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

    def under_way(self, jid: str) -> bool:
        """Whether a run (or resumption) of job `jid` is under way now."""
        return self._one_at_a_time.locked(jid)



def summary(job: dict[str, Any]) -> dict[str, Any]:
    """What the list of jobs shows of a job (keys.job_summary): small, whatever its record holds."""
    guarantee = job.get("guarantee") or {}
    return {"id": job["id"], "state": job.get("state"), "started": job.get("created"), "charge": job.get("charge", 0),
            "charge_total": job.get("charge_total", job.get("charge", 0)), "module": job.get("module"),
            "replicas": guarantee.get("replicas", 1), "executions": job.get("executions", 0)}


def record_key(user: bytes, jid: str) -> bytes:
    """Where the record of `user`'s job `jid` (hex) is kept (keys.job)."""
    return keys.job(user, bytes.fromhex(jid))


def record_entries(user: bytes, jid: str, job: dict[str, Any]) -> Rows:
    """A job's record and its summary, written together: the list never shows what its record does not say."""
    return ((record_key(user, jid), codec.dumps(job)),
            (keys.job_summary(user, bytes.fromhex(jid)), codec.dumps(summary(job))))




def made(user: str, jid: str, stored: list[dict[str, Any]], provenance_id: str
         ) -> Rows:
    """Each stored output's link to the run that wrote it, written with that run's job record: a lineage walk
    holds a file to the record of its own run, not to the job's latest (which wrote other files)."""
    return tuple((keys.job_output(Capability.parse(o["capability"]).storage_index),
                  codec.dumps({"job": jid, "user": user, "provenance": provenance_id, "name": o["name"],
                               "sha256": o["sha256"]})) for o in stored)



__all__ = ["CURSOR_BYTES", "JobRecords", "made", "record_entries", "record_key", "summary"]
