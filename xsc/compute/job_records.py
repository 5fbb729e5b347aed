"""A job's record (keys.job: its state, charge, outputs, provenance, executions), read and written for one user,
one writer of a job's record at a time, and the shapes a run leaves it in and answers with (jobs.py runs jobs,
remote_answers.py finishes those run on a provider)."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import codec, keys
from ..db import Database
from ..errors import JobNotFound, OverCap, Trap, XscError
from ..storage.core.capability import Capability
from ..tasks import Locks, in_pool
from .job_sandbox import MAX_OUTPUTS, UNPRINTABLE
from . import lineage as lineage_, provenance
from .lineage import verify_hash as _verify_hash
from .out_bound import MAX_DEPTH, MAX_ENTRIES, UNREADABLE, UNREADABLE_HINT

log = logging.getLogger(__name__)

CHUNK = 1 << 20
KEPT_STREAMS = 1 << 20  # a deterministic job's stdout and stderr kept with its record for replays, at most
UNFINISHED = ("running", "storing")  # the states a job's record is in while it runs, as a stop may leave it
REPLACING = ("done", "failed")  # the states of a run that replaces the outputs of the run before: it ran
_PROVENANCE_ID = re.compile(r"[0-9a-f]{32}")
CURSOR_BYTES = 16  # a job's place in the list of jobs, as a page's cursor: when it began (8), its id's first 8
FORGET_AT_ONCE = 256  # job records (each with its links and runs), and loose links and runs, deleted a pass at most


@dataclass
class Forgettable:
    """What a pass of the retention sweep found nothing needs any more (`JobRecords.forgettable`): each job's (id,
    key, SHA-256 of its record as read, the keys of its output links and runs), and links and runs no job record
    holds; and the provenance ids of every run a job record or link names (their provenance records stay)."""

    jobs: list[tuple[str, bytes, bytes, list[bytes]]] = field(default_factory=list)
    loose: list[bytes] = field(default_factory=list)
    runs: set[bytes] = field(default_factory=set)


class JobRecords:
    def __init__(self, db: Database, user: bytes) -> None:
        self.db, self.user = db, user
        self._one_at_a_time: Locks[str] = Locks()  # job id -> held while a run of it is under way

    def load(self, jid: str) -> dict[str, Any] | None:
        raw = self.db.get(keys.job(self.user, bytes.fromhex(jid)))
        return None if raw is None else codec.loads(raw)

    def save(self, jid: str, job: dict[str, Any]) -> None:
        with self.db.write_batch(sync=True) as batch:
            for key, value in self.entries(jid, job):
                batch.put(key, value)

    def entries(self, jid: str, job: dict[str, Any]) -> tuple[tuple[bytes, bytes], ...]:
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

    def forgettable(self, before_ns: int, held: Callable[[bytes], bool], owing: set[str], most: int) -> Forgettable:
        """The records of ended jobs that began before `before_ns` and that nothing needs any more, `most` at most.

        A job's record, the links of the files its runs wrote (`c/o/`) and the records its providers signed of those
        runs (`c/r/`) go together, and stay while anything needs one of them: the job is running or storing (a start
        resumes it), a tab it was run under is still pending (`owing`: a start pays it what the record says), or a
        file it wrote is still `held` by this node (its lineage, and a deterministic job's replay, read them), or is
        read by a job whose record stays (the lineage of that job's files passes through it: a chain of jobs goes
        one job a pass, from its last).  Links and runs no job record holds go once their files are not held.  Each
        pass reads every job record and link once, and finds `most` of each kind at most."""
        before = provenance.timestamp(before_ns)
        kept: set[tuple[str, str]] = set()  # (user, job) of a file still held
        kept_runs: set[str] = set()  # the runs that wrote files still held
        dead: dict[tuple[str, str], list[tuple[bytes, str]]] = {}  # (user, job) -> its links of files not held
        with self.db.iterator(prefix=keys.JOB_OUTPUTS) as links:
            for key, raw in links:
                made_by = codec.loads(raw)
                link, run = (made_by.get("user", ""), made_by.get("job", "")), made_by.get("provenance", "")
                if held(key[len(keys.JOB_OUTPUTS):]):
                    kept.add(link)
                    kept_runs.add(run)
                else:
                    dead.setdefault(link, []).append((key, run))
        fed: set[str] = set()  # the storage indexes (hex) of the files jobs read
        runs: set[str] = set(kept_runs)  # the runs a record or a link names
        present: set[tuple[str, str]] = set()
        # (key, id, SHA-256 of the record as read, user, its run, the storage indexes of its files): not the record,
        # which may be a MiB (a deterministic job's streams), and every job ended long ago may be one
        candidates: list[tuple[bytes, str, bytes, str, str, set[str]]] = []
        with self.db.iterator(prefix=keys.JOBS) as records:
            for key, raw in records:
                job = codec.loads(raw)
                user = key[len(keys.JOBS):len(keys.JOBS) + 32].hex()
                present.add((user, job["id"]))
                runs.add(job.get("provenance") or "")
                runs.update(r for _, r in dead.get((user, job["id"]), []))
                fed.update(h.split(":")[0] for item in [*job.get("inputs", []), job.get("stdin")]
                           if isinstance(item, dict) for h in str(item.get("verify_hash", "")).split(","))
                if job.get("state") in UNFINISHED or job.get("created", "") >= before or (user, job["id"]) in kept \
                        or any(a in owing for a in _tabs(job)) \
                        or any(held(Capability.parse(o["capability"]).storage_index) for o in _files(job)):
                    continue
                candidates.append((key, job["id"], hashlib.sha256(raw).digest(), user, job.get("provenance") or "",
                                   {Capability.parse(o["capability"]).storage_index.hex() for o in _files(job)}))
        found = Forgettable()
        for key, jid, digest, user, run, named in candidates:
            links = dead.get((user, jid), [])
            if (named | {k[len(keys.JOB_OUTPUTS):].hex() for k, _ in links}) & fed:
                continue
            its_runs = ({run} | {r for _, r in links}) - kept_runs - {""}
            found.jobs.append((jid, key, digest, [k for k, _ in links] + [_run_key(r) for r in its_runs]))
            if len(found.jobs) >= most:
                break
        for link, dead_links in dead.items():  # links whose job's record is gone
            if link in present:
                continue
            for key, _ in dead_links:
                if len(found.loose) < most and key[len(keys.JOB_OUTPUTS):].hex() not in fed:
                    found.loose.append(key)
        with self.db.iterator(start=keys.JOB_RUNS, stop=keys.job_run(before_ns.to_bytes(8, "big")),
                              include_value=False) as kept_by_id:  # runs no record nor link names
            for key in kept_by_id:
                if len(found.loose) >= most:
                    break
                if key[len(keys.JOB_RUNS):].hex() not in runs:
                    found.loose.append(key)
        found.runs = {bytes.fromhex(run) for run in runs if _PROVENANCE_ID.fullmatch(run)}
        return found

    def forget(self, key: bytes, digest: bytes, others: list[bytes]) -> bool:
        """Delete a job's record, if it is still as found (`digest`: not run again since), with `others` (its links
        and runs), in one write: a kill -9 leaves all or none of them, and the next pass finds what is left.
        Its caller holds the job (`alone`)."""
        raw = self.db.get(key)
        if raw is None or hashlib.sha256(raw).digest() != digest:
            return False
        job = codec.loads(raw)
        with self.db.write_batch() as batch:
            batch.delete(key)
            batch.delete(keys.job_summary(key[len(keys.JOBS):len(keys.JOBS) + 32], bytes.fromhex(job["id"])))
            batch.delete(keys.job_began(key[len(keys.JOBS):len(keys.JOBS) + 32],
                                        provenance.timestamp_ns(job.get("created")), bytes.fromhex(job["id"])))
            for other in others:
                batch.delete(other)
        return True

    def forget_loose(self, found: list[bytes]) -> None:
        with self.db.write_batch() as batch:
            for key in found:
                batch.delete(key)

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
        key = keys.job(self.user, bytes.fromhex(job["id"]))
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
                await self.storage.finish_removals(replaced)
        except BaseException:
            raw = self.db.get(key)
            recorded = codec.loads(raw) if raw is not None else {**job, "outputs": []}
            await self.remove([o["capability"] for o in recorded["outputs"]])
            job["outputs"] = []
            with self.db.write_batch(sync=True) as batch:
                for k, value in record_entries(self.user, job["id"], {**recorded, "outputs": []}):
                    batch.put(k, value)
            raise
        return stored

    async def replace(self, jid: str) -> None:
        """The outputs of the run before (`replacing`) of a job whose run ended without publishing any of its own
        (failed, or it left none) taken out of the listing and out of its record, in one synced write, then
        removed: the record names one run's outputs, its latest's.  A run refused before it ran, or cut short by a
        stop, replaces nothing.  Its caller holds the job (`JobRecords.alone`)."""
        raw = self.db.get(keys.job(self.user, bytes.fromhex(jid)))
        job = None if raw is None else codec.loads(raw)
        if job is None or not job.get("replacing") or job.get("state") not in REPLACING:
            return
        caps = [Capability.parse(o["capability"]) for o in job.pop("replacing")]
        await self.storage.begin_removals(caps, int(time.time()), dict(record_entries(self.user, jid, job)))
        await self.storage.finish_removals(caps)

    async def remove(self, caps: list[str]) -> None:
        for text in caps:
            try:
                await self.storage.remove(Capability.parse(text))
            except XscError as err:
                log.warning("could not remove output %s of an unfinished job: %s", text[:32], err)


class _Recorded:
    """A job's output added to the job's record by the synced write that publishes the output's file
    (share_store.Rider), the outputs of the run before it replaces taken out of the listing in that write."""

    def __init__(self, lock: threading.Lock, user: bytes, jid: str, storage: Any, output: dict[str, Any]) -> None:
        self.lock, self.user, self.jid, self.storage, self.output = lock, user, jid, storage, output
        self.replaced: list[Capability] = []  # the files whose removal its write began
        self.wrote = False

    def entries(self, read: Callable[[bytes], bytes | None]) -> dict[bytes, bytes | None]:
        raw = read(keys.job(self.user, bytes.fromhex(self.jid)))
        if raw is None:
            raise JobNotFound("the job's record is gone: its output is not stored", hint="run the job again")
        job = codec.loads(raw)
        outputs = [o for o in job.get("outputs", []) if o["name"] != self.output["name"]]
        written: dict[bytes, bytes | None] = {}
        self.replaced = [Capability.parse(o["capability"]) for o in job.pop("replacing", [])]
        for cap in self.replaced:
            written.update(self.storage.removal_entries(read, cap, int(time.time())))
        written.update(record_entries(self.user, self.jid, {**job, "state": "storing",
                                                            "outputs": [*outputs, self.output]}))
        self.wrote = True
        return written


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """What the list of jobs shows of a job (keys.job_summary): small, whatever its record holds."""
    guarantee = job.get("guarantee") or {}
    return {"id": job["id"], "state": job.get("state"), "started": job.get("created"), "charge": job.get("charge", 0),
            "charge_total": job.get("charge_total", job.get("charge", 0)), "module": job.get("module"),
            "replicas": guarantee.get("replicas", 1), "executions": job.get("executions", 0)}


def record_entries(user: bytes, jid: str, job: dict[str, Any]) -> tuple[tuple[bytes, bytes], ...]:
    """A job's record and its summary, written together: the list never shows what its record does not say."""
    return ((keys.job(user, bytes.fromhex(jid)), codec.dumps(job)),
            (keys.job_summary(user, bytes.fromhex(jid)), codec.dumps(summary(job))))


def replacing(previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The outputs a job's next run replaces: those of its run before, and those that run had not replaced yet."""
    if previous is None:
        return []
    return [*previous.get("replacing", []), *previous.get("outputs", [])]


def ended(job: dict[str, Any], run: dict[str, Any], stored: list[dict[str, Any]], refusal: str | None,
          trap: dict[str, Any] | None, **where: Any) -> dict[str, str]:
    """The job's record as its run left it (not written yet: it is written once, in the write that ends the run, so
    its `charge_total` counts this run once); its stdout and stderr."""
    failed = refusal or (trap["message"] if trap else None)
    job.update(state="failed" if failed else "done", executions=job["executions"] + 1, charge=run["charge"],
               charge_total=job.get("charge_total", 0) + run["charge"],
               provenance=run["provenance"], outputs=stored, exit_code=run.get("exit_code"),
               fuel_consumed=run["fuel_consumed"], cost=run["cost"], **where)
    if failed:
        job["error"] = failed
        hint = _refusal_hint(refusal) if refusal else (trap or {}).get("hint") or rerun_hint(job)
        if hint:  # the command that fixes it, shown with the error as any refusal's
            job["error_hint"] = hint
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
        hint = _refusal_hint(refusal)
        raise OverCap(f"{the_job(job, hint)} ran, but {refusal}: nothing of its outputs is stored", hint=hint,
                      **answered)
    if trap is not None:
        raise Trap(f"{the_job(job, trap.get('hint'))} failed: {trap['message']}", kind=trap.get("kind"),
                   hint=trap.get("hint"), **answered)
    return answered


def unstored_answer(job: dict[str, Any], streams: dict[str, str], charge: int, err: XscError) -> XscError:
    """What a run of the job answers when its own node could not store its outputs (no room on the market, too
    little credit for the puts): the put's error, of its kind (its status, its code), naming the job, with what its
    record says to do (the put's fix, then the job run again) and the run's answer as its details."""
    answered = {**err.details, **job, **streams, "replayed": False, "charged": charge}
    answered.pop("signed", None)
    failed = type(err).__new__(type(err))
    XscError.__init__(failed, f"{the_job(job, job.get('error_hint'))} ran, but {job['error']}",
                      hint=job.get("error_hint"), **answered)
    return failed


def the_job(job: dict[str, Any], hint: str | None) -> str:
    """How a job's error names it: by its id only if its hint's command does not (an id of 64 hex digits twice in a
    line of the CLI is three hundred characters saying one thing)."""
    return "the job" if hint and job["id"] in hint else f"the job {job['id']}"


def rerun_hint(job: dict[str, Any], **guarantee: int) -> str:
    """The command that runs a job a stop cut short (or a failure with no fix of its own) again; `guarantee`: with
    other `replicas` or `agree`, as `xsc compute rerun` and `xsc compute run` both take them."""
    again = job.get("again") or {}
    if again.get("stdin") == "-":  # its stdin came with its request and was not kept
        asked = {**job.get("guarantee", {}), **guarantee}
        if "agree" not in guarantee and "replicas" in guarantee:
            asked.pop("agree", None)  # as `rerun` takes other replicas alone: agreeing by their majority
        if "run" in job and asked.get("replicas") == 1 and "replicas" not in guarantee:
            asked = {"replicas": 1}  # asked of one other node: never run on the user's own
        elif asked.get("replicas", 1) == 1:
            asked = {}
        flags = " --deterministic" * bool(again.get("deterministic")) \
            + "".join(f" --{name} {asked[name]}" for name in ("replicas", "agree") if name in asked)
        return f"run it again with its stdin: ... | xsc compute run {job.get('module')} --stdin -{flags}"
    return f"run it again with: xsc compute rerun {job['id']}" + "".join(f" --{k} {v}" for k, v in guarantee.items())


def run_id(job: dict[str, Any]) -> str:
    """The id its providers know a job's runs by: its own, unless it was asked with a guarantee
    (jobspec.asked_id)."""
    return job.get("run", job["id"])


def made(user: str, jid: str, stored: list[dict[str, Any]], provenance_id: str
         ) -> tuple[tuple[bytes, bytes], ...]:
    """Each stored output's link to the run that wrote it, written with that run's job record: a lineage walk
    holds a file to the record of its own run, not to the job's latest (which wrote other files)."""
    return tuple((keys.job_output(Capability.parse(o["capability"]).storage_index),
                  codec.dumps({"job": jid, "user": user, "provenance": provenance_id, "name": o["name"],
                               "sha256": o["sha256"]})) for o in stored)


def _files(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The files a job's record names: its latest run's outputs, and those of the run before until replaced."""
    return [*job.get("outputs", []), *job.get("replacing", [])]


def _tabs(job: dict[str, Any]) -> list[str]:
    """The authorizations of the tabs a job's record says it owes or waits on (remote_answers.tabs_to_hold)."""
    return [t.get("authorization", "") for t in job.get("answered", {}).get("pays", []) + job.get("paid_on", [])
            if isinstance(t, dict)]


def _run_key(provenance_id: str) -> bytes:
    return keys.job_run(bytes.fromhex(provenance_id))


def _refusal_hint(refusal: str) -> str:
    if refusal.startswith(UNPRINTABLE):
        return "name the files it leaves in /out with printable characters"
    if refusal.startswith("storing its"):  # the fuel its outputs' bytes cost (job_sandbox.run_program)
        return "ask for more with --fuel, up to the node's compute.fuel, or write less"
    if refusal.startswith(UNREADABLE):  # out_bound.py: a path under /out the node cannot read
        return UNREADABLE_HINT
    if refusal.startswith(("it made", "it left more than")):  # out_bound.py's bounds on /out's tree, MAX_OUTPUTS
        return (f"make at most {MAX_ENTRIES:,} files and directories in /out, {MAX_DEPTH} deep, and leave at most "
                f"{MAX_OUTPUTS} (many files in one archive are one)")
    if refusal.startswith("its stderr"):  # job_sandbox: stderr past its cap, which --bytes-out does not raise
        return "ask for more with --stderr-cap, or write less"
    return "ask for more with --bytes-out (or --stdout-cap), or write less"


__all__ = ["CURSOR_BYTES", "FORGET_AT_ONCE", "Forgettable", "JobOutputs", "JobRecords", "KEPT_STREAMS", "REPLACING",
           "UNFINISHED", "answer", "ended", "made", "record_entries", "replacing", "rerun_hint", "run_id", "summary",
           "the_job", "unstored_answer"]
