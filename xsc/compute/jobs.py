"""Jobs: a WASI program run over bytes and stored files, its outputs stored, its run paid and recorded.

A job's stdin (the request's body, or a stored file) and its inputs (stored files, mounted read-only at /in/NAME)
are streamed to a work directory on disk (never held in memory), each hashed as it comes, within the job's
`bytes_in`; the program runs with nothing else of the host visible (wasi_io.py); every file it leaves in /out
(and its stdout, with `stdout_to_store`) is stored as an XSC file through the node's normal put (encrypted,
RS(4,2), placed and paid like any put) unless they are over `bytes_out`: then nothing of them is.  The run is
paid like an invoke on this node (its budget held first, its charge on the payer's tab), and its signed
provenance record names each input's content hash and capability verify-hash and each output's hash.

The job's record (keys.job: state, charge, outputs, provenance, executions) is written before it runs and once
it is done, and each output goes into it in the synced write that publishes the output's file; so kill -9
leaves either a finished job or one marked interrupted at the next start, whose outputs stored so far (those
its record names, no others) are removed then.  A job run on a provider is the exception once its answer came:
the answer is written down before its outputs are fetched, and the checked answer, what it owes and its outputs
before they are stored, and a start finishes fetching or storing them and pays the provider what the record
says, once, rather than run it again (docs/compute.md has each step).  A deterministic
job's outputs are kept by its id for the user who ran it: the same spec over the same bytes answers them again
without running (`replayed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from .. import codec, keys
from ..db import Database
from ..errors import (BodyTimeout, ForgedResult, IntegrityError, InvalidArgument, JobNotFound, NotFound, OverCap,
                      PayloadTooLarge, PeerRefused, PeerUnreachable, ReplicasDisagree, Trap, XscError)
from ..identity import Identity
from ..storage.core.capability import Capability
from ..tasks import in_pool
from . import lineage, provenance
from .jobspec import MAX_SPEC_BYTES, JobSpec, job_id, parse_job
from .lineage import verify_hash as _verify_hash
from .service import ComputeService, InvokeCall
from .hosted_jobs import PER_SENDER
from .job_sandbox import MAX_OUTPUTS, UNPRINTABLE, file_sha256, record_and_owe, remove_tree, run_program
from .out_bound import MAX_DEPTH, MAX_ENTRIES
from .sent_jobs import Returned
from .wasi_io import io_fuel

log = logging.getLogger(__name__)

ReadFn = Callable[[int], Awaitable[bytes]]
CHUNK = 1 << 20
JOB_STREAM = "application/x-xsc-job"  # a request body: the spec's JSON on one line, then the program's stdin
JOB_HINT = 'send {"module": ID, "argv": [...], "inputs": ["CAP:/in/NAME"], ...}'
STDIN_STALL = 60.0  # seconds a job's stdin may send nothing before the job is refused
MAX_FAILOVERS = 3  # providers left out, one after the other, when they fail a job before it can run
KEPT_STREAMS = 1 << 20  # a deterministic job's stdout and stderr kept with its record for replays, at most
UNFINISHED = ("running", "storing")  # the states a job's record is in while it runs, as a stop may leave it
RESUME_FOR = 1800.0  # seconds a start keeps trying to store a checked remote answer (its tab lives TAB_TTL)


@dataclass
class Staged:
    """A job's bytes on disk: stdin's path and hash, each input's hash and the verify-hash of its capability."""

    work: Path
    stdin: Path | None = None
    stdin_sha256: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    bytes_in: int = 0


class JobService:
    def __init__(self, *, compute: ComputeService, storage: Any, ledger: Any, tabs: Any, payer: Identity,
                 node: Identity, db: Database, work_dir: Path, bids: tuple[int, int], dealing: Any, sent: Any,
                 objects: Callable[[str, str], list[str]] | None = None) -> None:
        self.compute = compute
        self.dealing = dealing  # xsc.market.dealing.Dealing: who runs a job, at what price
        self.sent = sent  # xsc.compute.sent_jobs.SentJobs: a job run on another node
        self.storage = storage  # xsc.storage.files.StorageService: open and put, as `xsc store` does (watches too)
        self.ledger = ledger
        self.tabs = tabs
        self.payer = payer
        self.node = node
        self.db = db
        self.work_dir = work_dir
        self.default_bid, storage_bid = bids  # the market's compute and storage bids (per million fuel, per put)
        self.inputs = _Inputs(storage, objects)
        self.outputs = _Outputs(storage, db, payer.public_key, storage_bid)

        self._placed_on: Counter[str] = Counter()  # provider -> this node's jobs running there now
        self._finished = asyncio.Condition()  # a job on a provider ended: a place there may be free
        self._one_at_a_time: dict[str, list] = {}  # job id -> [a lock held while a run of it is under way, users]

    def start(self) -> None:
        """The work directories of jobs a stop cut short (their stdin, their outputs not yet fetched): nothing reads
        them again, and each may hold up to its bytes_in and bytes_out.  The tabs of remote runs checked and not
        paid yet are kept from the payment retry until `recover` pays each what its job's record says it owes
        (before any loop runs: the retry alone would pay up to their caps)."""
        for stale in self.work_dir.glob("job-*"):
            remove_tree(stale)
        for job in _records(self.db):
            fetching = [job["fetching"]] if job.get("state") in UNFINISHED and "fetching" in job else []
            for tab in job.get("answered", {}).get("pays", []) + job.get("paid_on", []) + fetching:
                self.sent.hold_off(tab["authorization"])

    def loops(self) -> dict[str, Any]:
        return {"jobs-recover": self.recover}  # once, at start: it ends by itself

    def close(self) -> None:
        pass

    # --- running ---------------------------------------------------------------------------
    async def run(self, body: Any, stdin: ReadFn | None = None, *, fresh: bool = False) -> dict[str, Any]:
        """Run a job for the local user; its answer (state, exit code, outputs, charge, provenance).  `fresh`: run
        a deterministic job even if its outputs are kept (they were removed since)."""
        spec = parse_job(body)
        if spec.stdin == "-" and stdin is None:
            raise InvalidArgument("the job reads stdin from the request, but none was sent",
                                  hint="pipe it in: ... | xsc compute run MODULE --stdin -")
        call = InvokeCall(spec.module, spec.entrypoint, list(spec.argv), spec.fuel, spec.memory, spec.timeout, True)
        limits = self.compute.limits(call)
        prepared, signature = self.compute.program(spec.module, spec.entrypoint)
        rate = self.default_bid if spec.max_price is None else min(self.default_bid, spec.max_price)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="job-", dir=self.work_dir))
        try:
            staged = await self.inputs.stage(spec, stdin, work, limits.fuel)
            jid = job_id(spec, staged.stdin_sha256, [i["sha256"] for i in staged.inputs])
            # One run of a job at a time: a second waits, then replays it or runs after it (the job's record,
            # its executions and its outputs are one run's, never two runs' written over each other).
            async with self._alone(jid):
                return await self._run_staged(spec, call, prepared, signature, limits, rate, staged, jid, fresh)
        finally:
            await in_pool(None, remove_tree, work)

    @contextlib.asynccontextmanager
    async def _alone(self, jid: str):
        """No other run (nor resumption) of job `jid` under way meanwhile."""
        held = self._one_at_a_time.setdefault(jid, [asyncio.Lock(), 0])
        held[1] += 1  # runs of it holding or waiting for the lock: the last one out forgets it
        try:
            async with held[0]:
                yield
        finally:
            held[1] -= 1
            if not held[1]:
                del self._one_at_a_time[jid]

    async def _run_staged(self, spec: JobSpec, call: InvokeCall, prepared, signature, limits, rate: int,
                          staged: Staged, jid: str, fresh: bool) -> dict[str, Any]:
        """The staged job run (or replayed) while no other run of it is under way."""
        user = self.payer.public_key
        previous = self._load(user, jid)
        if previous is not None and previous.get("state") in UNFINISHED and "fetching" in previous \
                and not self._resumable(previous):  # a stop cut its fetch short: fetched again, not run again
            with contextlib.suppress(XscError):  # its outputs never came (not paid): it runs
                return await self._refetched(previous)
            previous = self._load(user, jid)
        if previous is not None and self._resumable(previous):  # its answer is here, checked: not run again
            try:
                return await self._resumed(previous)
            except IntegrityError:
                await self._interrupted(self._load(user, jid) or previous)
                previous = self._load(user, jid)
        if spec.deterministic and previous is not None and previous.get("state") == "done" \
                and previous.get("replayable", True) and not fresh:
            previous["replays"] = previous.get("replays", 0) + 1  # not run: its executions stay as they were
            self._save(user, jid, previous)
            return {**previous, "replayed": True, "charged": 0}
        prepaid = _affordable(staged.bytes_in, limits.fuel)
        executions = (previous or {}).get("executions", 0)
        job = {"id": jid, "state": "running", "module": spec.module, "entrypoint": spec.entrypoint,
               "spec": spec.canonical(), "executions": executions, "outputs": [], "inputs": staged.inputs,
               "created": provenance.timestamp(time.time_ns())}
        self._save(user, jid, job)
        try:
            return await self._placed(spec, call, prepared, signature, limits, rate, staged, job, prepaid)
        except XscError as err:
            job.pop("fetching", None)  # its outputs never came (or were not the ones signed): not paid
            if job["state"] == "running":  # refused before it ran (the node busy, too little credit)
                job.update(state="refused", error=err.message)
                self._save(user, jid, job)
            raise

    async def run_streamed(self, read: ReadFn) -> dict[str, Any]:
        """Run a job whose request body is its spec's JSON on one line, then its stdin (read as the job reads it)."""
        head = bytearray()
        while b"\n" not in head:
            chunk = await read(64 * 1024)
            if not chunk:
                break
            head += chunk
            if len(head) > MAX_SPEC_BYTES and b"\n" not in head[:MAX_SPEC_BYTES + 1]:
                raise PayloadTooLarge(f"a job's spec is at most {MAX_SPEC_BYTES:,} bytes", hint="send a smaller spec")
        line, _, rest = bytes(head).partition(b"\n")
        try:
            spec = codec.loads(line)
        except ValueError:
            raise InvalidArgument("the job's first line is not JSON", hint=JOB_HINT) from None
        left = [rest]

        async def stdin(n: int) -> bytes:
            if left and (first := left.pop()):
                return first
            try:  # a sender that stops mid-body does not hold the job (nor its work directory) open
                async with asyncio.timeout(STDIN_STALL):
                    return await read(n)
            except TimeoutError:
                raise BodyTimeout(f"the job's stdin stalled: no bytes for {STDIN_STALL:g} s",
                                  hint="send it again") from None

        return await self.run(spec, stdin)

    async def _placed(self, spec: JobSpec, call: InvokeCall, prepared, signature, limits, bid: int, staged: Staged,
                      job: dict[str, Any], prepaid: int) -> dict[str, Any]:
        """Run the job where the market says: here, or on a provider that is sent its bytes.  A provider already
        running as many of this node's jobs as it takes from one sender (hosted_jobs.PER_SENDER) is left out
        while it does, so many jobs at once spread over the providers the market offers, and wait when all are
        full.  A provider that fails a job before its result came back (unreachable, busy, full, or outputs it
        did not sign) is left out and the next one is asked, MAX_FAILOVERS times at most."""
        if spec.replicas > 1:
            return await self._replicated(spec, call, limits, bid, staged, job)
        placed = await self._on_provider(spec, call, limits, bid, staged, job, here=True)
        if isinstance(placed, Returned):
            return await self._returned(job, placed)
        return await self._execute(spec, call, prepared, signature, limits, placed.price, staged, job, prepaid)

    async def _on_provider(self, spec: JobSpec, call: InvokeCall, limits, bid: int, staged: Staged,
                           job: dict[str, Any], *, here: bool) -> Returned | Any:
        """The job run on the provider the market offers and checked (not paid yet); or, if the market offers this
        node and `here`, its assignment (the caller runs it).  See `_placed` for how providers are left out."""
        jid = job["id"]
        failed: set[str] = set() if here else {self.node.id}
        last: XscError | None = None
        while True:
            full = frozenset(p for p, n in self._placed_on.items() if n >= PER_SENDER)
            try:
                assignment = await self.dealing.compute_deal(limits.fuel, bid, frozenset(failed) | full)
            except XscError:
                if full - failed:  # every other provider is busy with this node's jobs: wait for one to finish
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0), self._finished:
                            await self._finished.wait()
                    continue
                if last is None:
                    raise
                raise last from None  # no other provider: what the last one did is the job's failure
            if assignment.provider == self.node.id:
                return assignment
            if self._placed_on[assignment.provider] >= PER_SENDER:
                continue  # other jobs filled it while this one was being placed: it is left out now
            deal = {"need": assignment.need_id, "provider": assignment.provider, "price": assignment.price,
                    "allocated": assignment.allocated, "job": jid}
            self._placed_on[assignment.provider] += 1
            try:
                returned = await self.sent.unsettled(assignment.provider, assignment.price, spec, call, staged, jid,
                                                     deal, self._believed(job))
            except (ForgedResult, PeerRefused, PeerUnreachable) as err:
                if not _next_provider(err) or len(failed) >= MAX_FAILOVERS + (not here):
                    raise
                log.warning("job %s: provider %s failed it (%s): trying another", jid,
                            assignment.provider, err.message)
                failed.add(assignment.provider)
                last = err
                continue
            finally:
                self._placed_on[assignment.provider] -= 1
                async with self._finished:
                    self._finished.notify_all()
            self.dealing.invoked(assignment, returned.run["fuel_consumed"])
            return returned

    async def _replicated(self, spec: JobSpec, call: InvokeCall, limits, bid: int, staged: Staged,
                          job: dict[str, Any]) -> dict[str, Any]:
        """Run a deterministic job on `spec.replicas` other nodes at once, each on its own tab.  The replicas whose
        outputs, fuel, exit and engine agree (sent_jobs.Returned.agreement) are paid if there are `spec.agree` of
        them; the others are refused and struck.  With no such agreement nothing is paid or stored."""
        chosen: list[Any] = []
        for _ in range(spec.replicas):
            taken = frozenset(a.provider for a in chosen) | {self.node.id}
            try:
                chosen.append(await self.dealing.compute_deal(limits.fuel, bid, taken, providers=spec.replicas + 1))
            except XscError:
                break
        if len(chosen) < spec.replicas:
            raise ReplicasDisagree(f"the market offers {len(chosen)} other provider(s) for this job; {spec.replicas} "
                                   "replicas need as many", hint="ask for fewer with --replicas")
        answers = await asyncio.gather(*(self.sent.unsettled(
            a.provider, a.price, spec, call, staged, job["id"],
            {"need": a.need_id, "provider": a.provider, "price": a.price, "allocated": a.allocated, "job": job["id"]})
            for a in chosen), return_exceptions=True)
        returned = [r for r in answers if not isinstance(r, BaseException)]
        groups: dict[tuple, list[Any]] = {}
        for r in returned:
            groups.setdefault(r.agreement, []).append(r)
        agreed = max(groups.values(), key=len, default=[])
        if len(agreed) < spec.agree:
            for r in returned:
                await self.sent.refuse(r, None)
            raise ReplicasDisagree(f"{len(agreed)} of the job's {spec.replicas} replicas agree, fewer than the "
                                   f"{spec.agree} it asks: nothing is paid or stored",
                                   hint="run it again (other providers)", replicas=_replicas(chosen, answers, []))
        for r in returned:
            if r not in agreed:
                await self.sent.refuse(r, f"provider {r.provider} answered job {job['id']} unlike "
                                          f"{len(agreed)} other replicas: not paid")
        for a, r in zip(chosen, answers):
            if not isinstance(r, BaseException):
                self.dealing.invoked(a, r.run["fuel_consumed"])
        job["replicas"] = _replicas(chosen, answers, agreed)
        return await self._returned(job, agreed[0], agreed)

    def _believed(self, job: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        """What writes down a provider's answer once it holds to the job, before its outputs are fetched: a kill -9
        while they are fetched is finished at the start by fetching them again (`_refetched`), not run again."""
        def believed(fetching: dict[str, Any]) -> None:
            answer = fetching["answer"]
            if len(answer.get("stdout", "")) + len(answer.get("stderr", "")) > KEPT_STREAMS:
                answer = {**answer, "stdout": "", "stderr": "", "run": {**answer["run"], "stdout": "", "stderr": ""}}
            job["fetching"] = {**fetching, "answer": answer}
            self._save(self.payer.public_key, job["id"], job)
        return believed

    async def _returned(self, job: dict[str, Any], returned: Returned, paying: list[Returned] | None = None, *,
                        owed: dict[str, Any] | None = None) -> dict[str, Any]:
        """A job run on a provider, checked (sent_jobs.py): its outputs stored here, as if it had run here, then
        its provider paid (`paying`: each replica that agreed with it; `owed`: the tab a restart left, and its
        charge).  Before a byte is stored, the checked answer and what it owes are written down and its outputs
        kept where a start does not remove them: a kill -9 from then on is resumed (`_resumed`), never run and
        paid again."""
        paying = paying or [returned]
        pays = [owed] if owed is not None else [{"provider": r.provider, "authorization": r.tab.auth.id.hex(),
                                                 "charge": r.run["charge"]} for r in paying]

        def pay() -> None:
            if owed is not None:
                self.sent.owed_after_restart(owed["provider"], owed["authorization"], owed["charge"])
            for r in paying if owed is None else []:
                self.sent.pay(r)

        answer = returned.answer
        job.pop("fetching", None)
        kept = self._kept(job["id"])
        await in_pool(None, _keep, [path for _, path, _ in returned.files], kept)
        run = {**returned.run, "charge": sum(r.run["charge"] for r in paying)}
        long = len(run.get("stdout", "")) + len(run.get("stderr", "")) > KEPT_STREAMS
        job.update(state="storing", outputs=[], answered={
            "provider": returned.provider, "run": {**run, "stdout": "", "stderr": ""} if long else run,
            "signed": returned.signed, "outputs": answer["outputs"], "refusal": answer.get("refusal"),
            "trap": answer.get("trap"), "pays": pays})
        self._save(self.payer.public_key, job["id"], job)
        try:
            ended = await self._store_answered(job, run)
        except XscError as err:  # this node could not store what was answered: the provider is owed all the same
            if owed is not None:
                raise  # at a start: stored later (`recover`)
            pay()
            await in_pool(None, remove_tree, kept)
            job.pop("answered", None)
            job.update(state="failed", outputs=[], error=f"its outputs could not be stored: {err.message}")
            self._save(self.payer.public_key, job["id"], job)
            raise
        pay()
        return _answer(job, *ended)

    async def _store_answered(self, job: dict[str, Any], run: dict[str, Any]) -> tuple:
        """A checked answer's outputs not stored yet stored from where they are kept, and the job written done in
        one write with the provider's signed record and each output's link to it; what `_answer` takes."""
        answered, kept = job["answered"], self._kept(job["id"])
        stored = {o["name"] for o in job["outputs"]}
        await self.outputs.store([(o["name"], kept / str(i), o["size"]) for i, o in enumerate(answered["outputs"])
                                  if o["name"] not in stored], job)
        refusal, trap = answered["refusal"], answered["trap"]
        streams = _ended(job, run, job["outputs"], refusal, trap, provider=answered["provider"],
                         signed=answered["signed"])
        job.pop("answered")
        job["paid_on"] = answered["pays"]  # a restart before they are paid pays each its charge, not its cap
        # One write: the job done, the provider's signed record kept by its id (the job's record keeps only its
        # latest run's), and each output's link to it.
        provenance_id = answered["signed"]["record"]["id"]
        with self.db.write_batch(sync=True) as batch:
            batch.put(keys.job(self.payer.public_key, bytes.fromhex(job["id"])), codec.dumps(job))
            batch.put(keys.job_run(bytes.fromhex(provenance_id)), codec.dumps(answered["signed"]))
            for key, value in _made(self.payer.public_key.hex(), job["id"], job["outputs"], provenance_id):
                batch.put(key, value)
        await in_pool(None, remove_tree, kept)
        return streams, run["charge"], refusal, trap

    async def _execute(self, spec: JobSpec, call: InvokeCall, prepared, signature, limits, rate: int,
                       staged: Staged, job: dict[str, Any], prepaid: int) -> dict[str, Any]:
        budget = self.compute.budget(call, rate)
        await self.ledger.hold(self.payer, budget)
        try:
            ran = await run_program(self.compute, spec, prepared, signature, limits, staged.work, stdin=staged.stdin,
                                    job_id=job["id"], prepaid=prepaid)
        except BaseException:
            self.ledger.release(self.payer, budget)
            raise
        outcome, started, argv, refusal = ran.outcome, ran.started, ran.argv, ran.refusal
        stored: list[dict[str, Any]] = []
        if ran.succeeded:
            stored = await self.outputs.store(ran.files, job)
        run, record = self.compute.job_run(spec.module, spec.entrypoint, signature, argv, limits, outcome, started,
                                           self.payer.id, rate, {"job": job["id"]},
                                           {"id": job["id"], "inputs": staged.inputs, "stdin": staged.stdin_sha256,
                                            # never an output's capability: a record is shown to whoever asks
                                            "outputs": [{k: o[k] for k in ("name", "size", "sha256", "verify_hash")}
                                                        for o in stored]})
        trap = {"kind": outcome.trap_kind, "message": outcome.message, "hint": outcome.hint} \
            if outcome.trap_kind else None
        streams = _ended(job, run.to_json(), stored, refusal, trap, provider=self.node.id)
        # The job's record goes with the run's record and what it owes, in one group commit: after a kill -9 the
        # job is either not run (and runs again) or done and paid, never paid and run again.
        await record_and_owe(self.compute, self.ledger, self.tabs, self.payer, self.node, run, record,
                             prepared.module_hash, budget,
                             ((keys.job(self.payer.public_key, bytes.fromhex(job["id"])), codec.dumps(job)),
                              *_made(self.payer.public_key.hex(), job["id"], stored, run.provenance_id)))
        return _answer(job, streams, run.charge, refusal, trap)

    # --- after a restart ------------------------------------------------------------------------
    def _kept(self, jid: str) -> Path:
        """Where a job's checked remote outputs wait to be stored (a start leaves them: `_resumed` needs them)."""
        return self.work_dir / f"answered-{jid}"

    def _resumable(self, job: dict[str, Any]) -> bool:
        return job.get("state") == "storing" and "answered" in job and self._kept(job["id"]).is_dir()

    async def _resumed(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job whose checked answer a stop left storing: what is left of its outputs stored from where
        they are kept (each first held to the hash its provider signed), then its providers paid what the record
        says they are owed; its answer, as `_returned`'s.  Not run again, so not paid again."""
        answered, kept = job["answered"], self._kept(job["id"])
        for i, output in enumerate(answered["outputs"]):
            if await in_pool(None, file_sha256, kept / str(i)) != output["sha256"]:
                raise IntegrityError(f"the job {job['id']}'s kept output {output['name']!r} is not the one "
                                     "its provider signed", hint="run the job again")
        ended = await self._store_answered(job, answered["run"])
        for pay in answered["pays"]:
            self.sent.owed_after_restart(pay["provider"], pay["authorization"], pay["charge"])
        return _answer(job, *ended)

    async def recover(self) -> None:
        """At start: a remote job whose checked answer a stop left storing is finished (its outputs stored, its
        provider paid once); any other job a stop cut short is marked interrupted and the outputs it had stored
        are removed.  A remote run checked and not paid yet is paid what its job's record says it owes."""
        records = _records(self.db)
        for job in records:  # done, its providers' receipts not paid yet: paid what the record says they are owed
            if job.get("state") not in UNFINISHED:
                for pay in job.get("paid_on", []):
                    self.sent.owed_after_restart(pay["provider"], pay["authorization"], pay["charge"])
        # The jobs to finish last: storing may have to wait for the market, and the others' tabs are held meanwhile.
        for job in sorted((j for j in records if j.get("state") in UNFINISHED),  # fetches before resumptions,
                          key=lambda j: 2 if self._resumable(j) else "fetching" in j):  # which may wait long
            if "fetching" in job and not self._resumable(job):
                try:
                    async with self._alone(job["id"]):
                        await self._refetched(job)
                except (Trap, OverCap):
                    pass  # finished: the job's answer is its trap or its refusal
                except XscError as err:
                    log.warning("job %s: its outputs could not be fetched or stored again (%s)", job["id"], err)
                job = self._load(self.payer.public_key, job["id"]) or job
                if job.get("state") not in UNFINISHED:
                    continue
            if self._resumable(job):
                try:
                    await self._resume_in_time(job)
                    continue
                except XscError as err:
                    log.error("job %s: its checked answer could not be stored (%s): marked interrupted",
                              job["id"], err)
                    job = self._load(self.payer.public_key, job["id"]) or job
            await self._interrupted(job)
        for stale in self.work_dir.glob("answered-*"):  # a job finished, or marked, just before a stop removed them
            job = self._load(self.payer.public_key, stale.name.removeprefix("answered-"))
            if job is None or not self._resumable(job):
                await in_pool(None, remove_tree, stale)

    async def _refetched(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job a stop cut short while its believed answer's outputs were fetched: fetched again from its
        provider (which keeps them a while), then stored and paid as `_returned` does.  Outputs that never come
        (the provider gone, or their bytes not the ones it signed) are not paid."""
        fetching = job["fetching"]
        answer = fetching["answer"]
        into = Path(tempfile.mkdtemp(prefix="job-", dir=self.work_dir))
        try:
            try:
                files = await self.sent.refetched(fetching["provider"], fetching["job"], answer["outputs"], into)
            except XscError:
                await self.sent.unanswered_after_restart(fetching["authorization"])
                job.pop("fetching")
                raise
            returned = Returned(fetching["provider"], answer["run"], answer["provenance"], files,
                                [o["sha256"] for o in answer["outputs"]], answer)
            return await self._returned(job, returned, owed={"provider": fetching["provider"],
                                                             "authorization": fetching["authorization"],
                                                             "charge": answer["run"]["charge"]})
        finally:
            await in_pool(None, remove_tree, into)

    async def _interrupted(self, job: dict[str, Any]) -> None:
        """A job a stop cut short, not resumed: marked interrupted, the outputs it had stored removed, and its
        provider paid if its answer was checked (it is owed it, stored or not), not if its outputs never came.
        A remote run cut short before its answer came is the payment retry's: its provider countersigns what it
        ran, at most its cap."""
        await self.outputs.remove([o["capability"] for o in job.get("outputs", [])])
        for pay in job.get("answered", {}).get("pays", []):
            self.sent.owed_after_restart(pay["provider"], pay["authorization"], pay["charge"])
        if "fetching" in job:  # its outputs never came here
            await self.sent.unanswered_after_restart(job["fetching"]["authorization"])
        for k in ("answered", "fetching"):
            job.pop(k, None)
        job.update(state="interrupted", outputs=[], error="the node stopped while the job ran")
        self._save(self.payer.public_key, job["id"], job)
        await in_pool(None, remove_tree, self._kept(job["id"]))

    async def _resume_in_time(self, job: dict[str, Any]) -> None:
        """`_resumed`, tried again while the node's storage is not ready to store (its market still filling after
        the start), until RESUME_FOR seconds have passed: its tab must be closed before its authorization expires."""
        delay, deadline = 1.0, time.monotonic() + RESUME_FOR
        while True:
            async with self._alone(job["id"]):
                current = self._load(self.payer.public_key, job["id"])
                if current is None or not self._resumable(current):
                    return  # a run of the same job resumed it meanwhile
                try:
                    await self._resumed(current)
                    return
                except (Trap, OverCap):
                    return  # resumed: the job's answer is its trap or its refusal
                except IntegrityError:
                    raise
                except XscError as err:
                    if time.monotonic() + delay > deadline:
                        raise
                    log.warning("job %s: storing its checked answer failed (%s): trying again", job["id"], err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    # --- records -----------------------------------------------------------------------------
    def _load(self, user: bytes, jid: str) -> dict[str, Any] | None:
        raw = self.db.get(keys.job(user, bytes.fromhex(jid)))
        return None if raw is None else codec.loads(raw)

    def _save(self, user: bytes, jid: str, job: dict[str, Any]) -> None:
        self.db.put(keys.job(user, bytes.fromhex(jid)), codec.dumps(job), sync=True)

    def job(self, jid: str) -> dict[str, Any]:
        """The local user's job `jid` (a prefix of at least 8 hex digits will do)."""
        text = jid.strip().lower()
        if not 8 <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
            raise InvalidArgument(f"not a job id: {jid[:70]!r}", hint="a job id is the 64 hex digits `compute run` printed")
        prefix = keys.JOBS + self.payer.public_key
        start = prefix + bytes.fromhex(text[:len(text) // 2 * 2])
        with self.db.iterator(prefix=start) as records:
            for _, value in records:
                found = codec.loads(value)
                if found["id"].startswith(text):
                    return found
        raise JobNotFound(f"no job {jid} on this node", hint="run one with: xsc compute run SPEC.toml")

    # --- lineage -----------------------------------------------------------------------------
    def lineage(self, cap_text: str) -> dict[str, Any]:
        """From a stored file back through the runs of the jobs that made it to the files they read (lineage.py)."""
        def read(key: bytes) -> dict[str, Any] | None:
            raw = self.db.get(key)
            return None if raw is None else codec.loads(raw)

        return lineage.walk(lineage.Records(
            lambda si: read(keys.job_output(si)), lambda user, jid: self._load(bytes.fromhex(user), jid),
            lambda pid: read(keys.job_run(bytes.fromhex(pid))), self.compute.provenance), Capability.parse(cap_text))


class _Inputs:
    """A job's stdin and inputs streamed to its work directory, hashed as they come, within its bytes_in."""

    def __init__(self, storage: Any, objects: Callable[[str, str], list[str]] | None) -> None:
        self.storage, self.objects = storage, objects

    async def stage(self, spec: JobSpec, stdin: ReadFn | None, work: Path, fuel: int) -> Staged:
        opened: list = []  # the stored files read, closed however staging ends: no range asked stays in flight
        try:
            return await self._staged(spec, stdin, work, opened, fuel)
        finally:
            await asyncio.gather(*(plaintext.aclose() for plaintext in opened))

    async def _staged(self, spec: JobSpec, stdin: ReadFn | None, work: Path, opened: list, fuel: int) -> Staged:
        staged = Staged(work)
        room = spec.bytes_in
        # What the job reads is priced (4 fuel a byte) before a byte of it is fetched: the sizes of the stored
        # files it names are in their capabilities.
        parts = [[Capability.parse(text) for text in await self._parts(item, f"input /in/{item.name}")]
                 for item in spec.inputs]
        named = [] if spec.stdin in (None, "-") else [Capability.parse(spec.stdin)]
        _affordable(sum(cap.size for cap in [*named, *(cap for caps in parts for cap in caps)]), fuel)
        if spec.stdin is not None:
            staged.stdin = work / "stdin"
            source = stdin if spec.stdin == "-" else await self._opened(spec.stdin, "stdin", opened)
            size, staged.stdin_sha256 = await self._copy(source, staged.stdin, room, "stdin")
            room -= size
            staged.bytes_in += size
        (work / "in").mkdir()
        for item, caps in zip(spec.inputs, parts):
            what = f"input /in/{item.name}"
            if sum(cap.size for cap in caps) > room:
                raise OverCap(f"{what} is {sum(cap.size for cap in caps):,} bytes, over what is left of the job's "
                              f"bytes_in ({room:,})", hint="ask for more with --bytes-in")
            read = await self._chained(caps, what, opened)
            size, digest = await self._copy(read, work / "in" / item.name, room, what)
            room -= size
            staged.bytes_in += size
            staged.inputs.append({"path": item.path, "sha256": digest, "size": size,
                                  "verify_hash": ",".join(_verify_hash(cap) for cap in caps),
                                  **({"s3": "s3://" + "/".join(item.s3)} if item.s3 else {})})
        os.chmod(work / "in", 0o555)
        return staged

    async def _parts(self, item, what: str) -> list[str]:
        """The capabilities an input reads, in order: its own, or its S3 object's parts."""
        if item.s3 is None:
            return [item.cap]
        if self.objects is None:
            raise InvalidArgument(f"{what}: this node has no S3 bucket index", hint="give the object's capability")
        try:
            return await in_pool(None, self.objects, *item.s3)
        except NotFound as err:
            raise NotFound(f"{what} cannot be read: {err.message}", hint=err.hint) from None

    async def _chained(self, caps: list[Capability], what: str, opened: list) -> ReadFn:
        """The plaintext of several stored files, one after the other, as one read function."""
        readers = [await self._opened(str(cap), what, opened) for cap in caps[:1]]
        rest = list(caps[1:])

        async def read(n: int) -> bytes:
            while readers:
                chunk = await readers[0](n)
                if chunk:
                    return chunk
                readers.pop(0)
                if rest:  # the next part is opened once the one before it is read to its end
                    readers.append(await self._opened(str(rest.pop(0)), what, opened))
            return b""

        return read

    async def _opened(self, cap_text: str, what: str, opened: list) -> ReadFn:
        """A stored file's plaintext as a read function (whole chunks, b"" at its end), added to `opened`."""
        cap = Capability.parse(cap_text)
        try:
            _, chunks = await self.storage.open(cap)
        except NotFound as err:
            raise NotFound(f"{what} cannot be read: {err.message}", hint=err.hint) from None
        opened.append(chunks)
        iterator = chunks.__aiter__()

        async def read(n: int) -> bytes:
            try:
                return await iterator.__anext__()
            except StopAsyncIteration:
                return b""

        return read

    async def _copy(self, read: ReadFn, path: Path, room: int, what: str) -> tuple[int, str]:
        """Stream `read` to `path` (never more than `room` bytes), hashing it; its size and SHA-256."""
        digest = hashlib.sha256()
        size = 0
        with open(path, "wb") as out:
            while chunk := await read(CHUNK):
                size += len(chunk)
                if size > room:
                    raise OverCap(f"{what} is over the job's bytes_in ({room:,} bytes left)",
                                  hint="ask for more with --bytes-in")
                digest.update(chunk)
                await in_pool(None, out.write, chunk)
        return size, digest.hexdigest()


class _Outputs:
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


def _keep(paths: list[Path], kept: Path) -> None:
    """On a worker: the fetched outputs moved to `kept` (named by their index), on disk before the record that
    says they are there is written."""
    remove_tree(kept)
    kept.mkdir(parents=True)
    for i, path in enumerate(paths):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.rename(path, kept / str(i))
    fd = os.open(kept, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _records(db: Database) -> list[dict[str, Any]]:
    """Every job record (any user's)."""
    with db.iterator(prefix=keys.JOBS) as found:
        return [codec.loads(value) for _, value in found]


def _ended(job: dict[str, Any], run: dict[str, Any], stored: list[dict[str, Any]], refusal: str | None,
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

def _answer(job: dict[str, Any], streams: dict[str, str], charge: int, refusal: str | None,
            trap: dict[str, Any] | None) -> dict[str, Any]:
    answer = {**job, **streams, "replayed": False, "charged": charge}
    answer.pop("signed", None)
    if refusal is not None:
        raise OverCap(f"the job {job['id']} ran, but {refusal}: nothing of its outputs is stored",
                      hint=_refusal_hint(refusal), **answer)
    if trap is not None:
        raise Trap(f"the job {job['id']} failed: {trap['message']}", kind=trap.get("kind"),
                   hint=trap.get("hint"), **answer)
    return answer


def _made(user: str, jid: str, stored: list[dict[str, Any]], provenance_id: str
          ) -> tuple[tuple[bytes, bytes], ...]:
    """Each stored output's link to the run that wrote it, written with that run's job record: a lineage walk
    holds a file to the record of its own run, not to the job's latest (which wrote other files)."""
    return tuple((keys.job_output(Capability.parse(o["capability"]).storage_index),
                  codec.dumps({"job": jid, "user": user, "provenance": provenance_id, "name": o["name"],
                               "sha256": o["sha256"]})) for o in stored)


def _replicas(chosen: list[Any], answers: list[Any], agreed: list[Any]) -> list[dict[str, Any]]:
    """Each replica of a job: where it ran, whether it was paid (it agreed), or why it failed."""
    out = []
    for a, r in zip(chosen, answers):
        if isinstance(r, BaseException):
            out.append({"provider": a.provider, "paid": False, "error": str(r)[:300]})
        else:
            out.append({"provider": a.provider, "paid": r in agreed, "provenance": r.run["provenance"],
                        "charge": r.run["charge"] if r in agreed else 0, "fuel_consumed": r.run["fuel_consumed"]})
    return out


def _refusal_hint(refusal: str) -> str:
    if refusal.startswith(UNPRINTABLE):
        return "name the files it leaves in /out with printable characters"
    if refusal.startswith(("it made", "it left more than")):  # out_bound.py's bounds on /out's tree, MAX_OUTPUTS
        return (f"make at most {MAX_ENTRIES:,} files and directories in /out, {MAX_DEPTH} deep, and leave at most "
                f"{MAX_OUTPUTS} (many files in one archive are one)")
    return "ask for more with --bytes-out (or --stdout-cap), or write less"


def _affordable(nbytes: int, fuel: int) -> int:
    """The fuel reading `nbytes` of input costs, if the job's fuel limit covers it; else InvalidArgument."""
    prepaid = io_fuel(nbytes)
    if prepaid >= fuel:
        raise InvalidArgument(f"reading its {nbytes:,} bytes of input costs {prepaid:,} fuel, more than its fuel "
                              f"limit ({fuel:,})", hint="ask for more --fuel")
    return prepaid


def _next_provider(err: XscError) -> bool:
    """Whether a provider's failure leaves the job to another provider: it went away (a run whose result never
    came is not paid: sent_jobs.py), it had no room, or what it answered cannot be trusted."""
    if isinstance(err, (ForgedResult, PeerUnreachable)):
        return True
    return err.details.get("peer_code") in ("compute-busy", "quota-exceeded", "storage-full", "deal-refused")
