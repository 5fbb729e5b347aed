"""The retention sweep's reads and deletes of job records (jobs.py's `forget_ended` runs it): which ended jobs, with
the links of the files their runs wrote and the records their providers signed, nothing needs any more, and their
deletion, each job in one write."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable

from .. import codec, keys
from ..db import Database
from ..storage.core.capability import Capability
from . import provenance
from .job_answers import UNFINISHED
from .job_payments import paid_rows, rows_of, tabs_of, unnamed

_PROVENANCE_ID = re.compile(r"[0-9a-f]{32}")
FORGET_AT_ONCE = 256  # job records (each with its links and runs), and loose links and runs, deleted a pass at most


@dataclass
class Forgettable:
    """What a pass of the retention sweep found nothing needs any more (`JobRetention.forgettable`): each job's (id,
    key, SHA-256 of its record as read, the keys of its output links and runs), and links and runs no job record
    holds; and the provenance ids of every run a job record or link names (their provenance records stay)."""

    jobs: list[tuple[str, bytes, bytes, list[bytes]]] = field(default_factory=list)
    loose: list[bytes] = field(default_factory=list)
    runs: set[bytes] = field(default_factory=set)



class JobRetention:
    def __init__(self, db: Database) -> None:
        self.db = db

    def forgettable(self, before_ns: int, held: Callable[[bytes], bool], owing: set[str], most: int) -> Forgettable:
        """The records of ended jobs that began before `before_ns` and that nothing needs any more, `most` at most.

        A job's record, its files' links (`c/o/`), its providers' signed runs (`c/r/`) and what its tabs were paid
        (`c/jp`) go together, and stay while anything needs one: the job is running or storing (a start resumes it), a
        tab it was run under is still pending (`owing`: a start pays it what the record says), or a file it wrote is
        still `held` by this node (its lineage, and a deterministic job's replay, read them), or is read by a job whose
        record stays (a lineage from that job's files passes through it: a chain of jobs goes a job a pass, from its
        last).  Links, runs and what tabs were paid that no job record holds go once their files are not held.  Each
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
        rows, named_tabs = paid_rows(self.db), set()  # what tabs were paid (read before the records), the tabs named
        # (key, id, SHA-256 of the record as read, user, its run, its files' storage indexes, its tabs' paid rows): not
        # the record, which may be a MiB (a deterministic job's streams), and every job ended long ago may be one
        candidates: list[tuple[bytes, str, bytes, str, str, set[str], list[bytes]]] = []
        with self.db.iterator(prefix=keys.JOBS) as records:
            for key, raw in records:
                job = codec.loads(raw)
                user = key[len(keys.JOBS):len(keys.JOBS) + 32].hex()
                present.add((user, job["id"]))
                named_tabs.update(tabs_of(job))
                runs.add(job.get("provenance") or "")
                runs.update(r for _, r in dead.get((user, job["id"]), []))
                fed.update(h.split(":")[0] for item in [*job.get("inputs", []), job.get("stdin")]
                           if isinstance(item, dict) for h in str(item.get("verify_hash", "")).split(","))
                if job.get("state") in UNFINISHED or job.get("created", "") >= before or (user, job["id"]) in kept \
                        or any(a in owing for a in tabs_of(job)) \
                        or any(held(Capability.parse(o["capability"]).storage_index) for o in _files(job)):
                    continue
                candidates.append((key, job["id"], hashlib.sha256(raw).digest(), user, job.get("provenance") or "",
                                   {Capability.parse(o["capability"]).storage_index.hex() for o in _files(job)},
                                   rows_of(tabs_of(job), rows)))
        found = Forgettable()
        for key, jid, digest, user, run, named, paid in candidates:
            links = dead.get((user, jid), [])
            if (named | {k[len(keys.JOB_OUTPUTS):].hex() for k, _ in links}) & fed:
                continue
            its_runs = ({run} | {r for _, r in links}) - kept_runs - {""}
            found.jobs.append((jid, key, digest, [k for k, _ in links] + [_run_key(r) for r in its_runs] + paid))
            if len(found.jobs) >= most:
                break
        for link, dead_links in dead.items():  # links whose job's record is gone
            if link in present:
                continue
            for key, _ in dead_links:
                if len(found.loose) < most and key[len(keys.JOB_OUTPUTS):].hex() not in fed:
                    found.loose.append(key)
        found.loose += unnamed(rows, named_tabs, most - len(found.loose))
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


def _files(job: dict) -> list[dict]:
    """The files a job's record names: its latest run's outputs, and those of the run before until replaced."""
    return [*job.get("outputs", []), *job.get("replacing", [])]


def _run_key(provenance_id: str) -> bytes:
    return keys.job_run(bytes.fromhex(provenance_id))



__all__ = ["FORGET_AT_ONCE", "Forgettable", "JobRetention"]
