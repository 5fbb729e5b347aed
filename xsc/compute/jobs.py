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
its record names, no others) are removed then.  A job run on a provider is the exception once the provider took
it: where it was sent is written down before a byte is sent, its answer before its outputs are fetched, and the
checked answer, what it owes and its outputs before they are stored, and a start finishes it from the provider's
answer and pays the provider what the record says, once, rather than run it again (remote_answers.py,
remote_recovery.py; docs/compute.md has each step); a replicated job's replicas likewise, each from its own step,
compared at the start as the run would have compared them.  A deterministic job's outputs are kept by its id for
the user who ran it: the same spec over the same bytes, asked with the same replicas and agreement, answers them
again without running (`replayed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..db import Database
from ..errors import (BodyTimeout, Conflict, InsufficientCredit, IntegrityError, InvalidArgument, JobNotFound,
                      JobRunning, PayloadTooLarge, XscError)
from ..units import counted
from ..identity import Identity
from ..storage.core.capability import Capability
from ..storage.strangers import ProviderTerms
from ..tasks import at_most, in_pool, periodic
from . import lineage, provenance
from .jobspec import MAX_SPEC_BYTES, JobSpec, asked_id, job_id, parse_job, replicable, spec_line
from .paid import worst_case_refused
from .service import ComputeService, InvokeCall
from .job_answers import (REPLACING, UNFINISHED, answer, ended, not_ended, replacing, rerun_hint, run_id,
                          unstored_answer)
from .job_cancels import JobCancels
from .job_inputs import JobInputs, ReadFn, Staged, affordable
from .job_outputs import JobOutputs
from .job_payments import keep_paid, payments
from .job_placing import JobPlacing
from .job_records import CURSOR_BYTES, JobRecords, made
from .job_retention import FORGET_AT_ONCE, JobRetention
from .job_sandbox import record_and_owe, remove_tree, run_program
from .provider_stops import ProviderStops
from .remote_answers import RemoteAnswers
from .remote_recovery import RemoteRecovery
from .sent_jobs import Returned

log = logging.getLogger(__name__)

JOB_STREAM = "application/x-xsc-job"  # a request body: the spec's JSON on one line, then the program's stdin
JOB_HINT = 'send {"module": ID, "argv": [...], "inputs": ["CAP:/in/NAME"], ...}'
STDIN_STALL = 60.0  # seconds a job's stdin may send nothing before the job is refused
FORGET_RUNS_AT_ONCE = 10_000  # provenance records the retention sweep deletes a pass at most (one write)
BEHIND_PERIOD = 1.0  # seconds between retention sweeps while each finds as many records as it deletes at most
RECOVER_AT_ONCE = 8  # jobs a start finishes from their providers' answers at once
_CURSOR = re.compile(rf"[0-9a-f]{{{2 * CURSOR_BYTES}}}")  # a page's `next`: the place of its last job
MAX_LISTED = 1000  # jobs a page of the list holds at most (a page reads their summaries, not their records)


class JobService:
    def __init__(self, *, compute: ComputeService, storage: Any, ledger: Any, tabs: Any, payer: Identity,
                 node: Identity, db: Database, work_dir: Path, bids: tuple[int, int], dealing: Any, sent: Any,
                 terms: ProviderTerms, objects: Callable[[str, str], list[str]] | None = None,
                 retention: float = 30 * 86400) -> None:
        """`retention`: seconds after a job or a call began that its records go once nothing needs them
        (`forget_ended`)."""
        self.compute = compute
        self.provider_terms = terms  # those that want prepayment are passed over a while
        self.dealing = dealing  # xsc.market.dealing.Dealing: who runs a job, at what price
        self.sent = sent  # xsc.compute.sent_jobs.SentJobs: a job run on another node
        self.storage = storage  # xsc.storage.files.StorageService: open and put, as `xsc store` does (watches too)
        self.ledger, self.tabs, self.payer, self.node = ledger, tabs, payer, node
        self.db = db
        self.work_dir = work_dir
        self.retention = retention
        self._behind = False  # the last sweep found as many records as a sweep deletes: the next comes soon
        self.default_bid, storage_bid = bids  # the market's compute and storage bids (per million fuel, per put)
        self.inputs = JobInputs(storage, objects)
        self.records = JobRecords(db, payer.public_key)
        keep_paid(sent.paid.payments)  # what each job's tab was paid, kept with its records
        self.outputs = JobOutputs(storage, db, payer.public_key, storage_bid)
        self.answers = RemoteAnswers(records=self.records, outputs=self.outputs, sent=sent, work_dir=work_dir)
        self.cancels = JobCancels(ProviderStops(sent.paid, compute.store), self.records)  # the runs `cancel` stops
        self.recovery = RemoteRecovery(self.answers, self.cancels)  # what a stop cut short of a remote run, finished
        self.retained = JobRetention(db)  # the records of ended jobs nothing needs any more, forgotten
        self.placing = JobPlacing(compute=compute, dealing=dealing, sent=sent, terms=terms, node=node,
                                  answers=self.answers, cancels=self.cancels)
        self.recovered = asyncio.Event()  # `recover` has ended: what a stop cut short is settled (the watches wait)
        self.cut_short: list[str] = []  # the jobs a stop cut short that `recover` settled (the watches reap theirs)

    def start(self) -> None:
        """Removed: the work directories of jobs a stop cut short (each up to its bytes_in and bytes_out).  Kept from the
        payment retry before any loop runs (alone, it would pay up to their caps): the tabs of remote runs checked and
        not paid yet, until `recover` pays each what its job's record says it owes."""
        for stale in self.work_dir.glob("job-*"):
            remove_tree(stale)
        if listed := self.records.list_unlisted():
            log.info("listed %s recorded before jobs were listed by when they began", counted(listed, "job"))
        for job in self.records.all_jobs():
            for authorization in self.answers.tabs_to_hold(job):
                self.sent.hold_off(authorization)

    def loops(self) -> dict[str, Any]:
        return {"jobs-recover": self.recover, "compute-provider-stops": self.cancels.stops.loop(self.recovered),
                # (recover: once, at start.)  A record goes at most a tenth of its retention late (an hour, with the
                # default of 30 days), or sooner while a backlog lasts
                "compute-retention": periodic("compute-retention", lambda: BEHIND_PERIOD if self._behind else
                                              min(3600.0, self.retention / 10), self.forget_ended)}

    def close(self) -> None:
        pass

    # --- running ---------------------------------------------------------------------------
    async def rerun(self, jid: str, guarantee: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the local user's job `jid` again from the spec its record keeps: a new run of the same job (it
        replaces the run before, as any run again does), a deterministic one run rather than replayed.  Refused,
        nothing run, when the job read its stdin from its request (those bytes are not kept) or when what it reads
        changed since (another job), or while a run of it is under way (it would only wait for that run).
        `guarantee`: other `replicas` and `agree` (`xsc compute rerun --agree K`, what a replicated job's failure
        names): the same run asked with another guarantee, which is another job (jobspec.asked_id); other replicas
        alone agree by their majority."""
        if other := sorted(set(guarantee or {}) - {"replicas", "agree"}):
            raise InvalidArgument(f"a job is run again with other replicas or agree only, not {', '.join(other)[:200]}",
                                  hint="e.g. xsc compute rerun ID --agree 2")
        job = self.job(jid)
        self._not_under_way(job["id"])
        again = job.get("again")
        if not isinstance(again, dict):
            raise Conflict("the job's record keeps no spec to run again",
                           hint="run it again with: xsc compute run MODULE ...")
        if again.get("stdin") == "-":
            raise Conflict("the job read its stdin from its request, which the node does not keep",
                           hint=rerun_hint(job, **(guarantee or {})))
        if "run" not in job:  # asked without a guarantee (a record may keep `replicas` 1 all the same)
            again = {k: v for k, v in again.items() if k not in ("replicas", "agree")}
        replicable(job, again, guarantee or {})
        if not guarantee:
            return await self.run(again, fresh=True, same=job["id"])
        again = {**{k: v for k, v in again.items() if k != "agree" or "replicas" not in guarantee}, **guarantee}
        return await self.run(again, fresh=True, same=asked_id(run_id(job), parse_job(again)))

    async def run(self, body: Any, stdin: ReadFn | None = None, *, fresh: bool = False,
                  same: str | None = None, tag: Any = None) -> dict[str, Any]:
        """Run a job for the local user; its answer (state, exit code, outputs, charge, provenance).  `fresh`: run
        a deterministic job even if its outputs are kept (they were removed since).  `same`: the job it must be
        (`rerun`), refused before it runs if its bytes are not that job's.  `tag`: a map's input (compute/maps.py),
        told the job's id and named in its record: a run done for it is answered again, not run or paid again."""
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
            run = job_id(spec, staged.stdin_sha256, [i["sha256"] for i in staged.inputs])
            jid = asked_id(run, spec)
            if same is not None and jid != same:
                raise Conflict("what the job reads changed since it ran: run again, it would be another job",
                               hint="run the new job with: xsc compute run SPEC.toml (or MODULE ...)")
            if same is not None:  # (a run of it may have begun while its inputs were read)
                self._not_under_way(jid)
            if tag is not None:  # its map names the job before it runs: a start after a kill -9 finds it
                tag.started(jid)
            # One run of a job at a time: a second waits, then replays it or runs after it (the job's record,
            # its executions and its outputs are one run's, never two runs' written over each other).
            async with self.records.alone(jid), self.cancels.running(jid):
                return await self._run_staged(spec, call, prepared, signature, limits, rate, staged, jid, run, fresh,
                                              tag.mark if tag is not None else None)
        finally:
            await in_pool(None, remove_tree, work)

    def _not_under_way(self, jid: str) -> None:
        if self.records.under_way(jid):
            raise JobRunning("the job is running: it can be run again once that run has ended",
                             hint=f"follow it with: xsc compute job {jid}")

    async def _run_staged(self, spec: JobSpec, call: InvokeCall, prepared, signature, limits, rate: int,
                          staged: Staged, jid: str, run: str, fresh: bool, mark: Any) -> dict[str, Any]:
        """The staged job run (or replayed) while no other run of it is under way.  `jid`: the job as asked (its
        record's); `run`: what its providers are sent (jobspec.asked_id)."""
        previous = self.records.load(jid)
        if previous is not None and self.answers.cut_short(previous):  # a stop cut its run or fetch short: its
            with contextlib.suppress(XscError):  # provider's answer taken, not run again (no answer, not paid: it runs)
                return await self.recovery.finished(previous)
            previous = self.records.load(jid)
        if previous is not None and self.answers.resumable(previous):  # its answer is here, checked: not run again
            try:
                return await self.recovery.resumed(previous)
            except IntegrityError:
                await self.answers.interrupted(self.records.load(jid) or previous)
                previous = self.records.load(jid)
        if previous is not None and previous.get("state") == "done" and not fresh and (spec.deterministic and
                previous.get("replayable", True) or mark is not None and previous.get("map") == mark):
            previous["replays"] = previous.get("replays", 0) + 1  # not run: its executions stay as they were
            self.records.save(jid, previous)
            return {**previous, "replayed": True, "charged": 0}
        prepaid = affordable(staged.bytes_in, limits.fuel)
        executions = (previous or {}).get("executions", 0)
        # What the job's runs were charged before this one, in all (a record without a total: its latest run's).
        before = (previous or {}).get("charge_total", (previous or {}).get("charge", 0))
        job = {"id": jid, "state": "running", "module": spec.module, "entrypoint": spec.entrypoint,
               "spec": spec.canonical(), "again": spec.again(),  # what `rerun` asks for
               "guarantee": {"replicas": spec.replicas, "agree": spec.agree}, **({"run": run} if run != jid else {}),
               "executions": executions, "outputs": [], "inputs": staged.inputs,
               **({"stdin": staged.stdin_item} if staged.stdin_item else {}),
               "charge_total": before,  # and this run's, once it is charged (job_answers.ended)
               # the run before's outputs stay named (so never orphaned) until this run's replace them
               **({"replacing": old} if (old := replacing(previous)) else {}),
               "created": provenance.timestamp(time.time_ns()), **({"map": mark} if mark is not None else {})}
        self.records.begin(jid, job, previous)
        self.cancels.recording(job)
        try:
            return await self._placed(spec, call, prepared, signature, limits, rate, staged, job, prepaid)
        except XscError as err:
            for step in ("sent", "fetching", "replicating"):  # its answers or outputs never came: not paid
                job.pop(step, None)
            if job["state"] == "running":  # it never ended: refused before it ran, or its provider gone
                told = not_ended(job, err)
                self.records.save(jid, job)
                if told is not None:
                    raise told from err
            err.details["id"] = jid  # every problem of a job names it as its answer does: `id`
            raise
        except Exception as err:  # the node's own failure (its disk's ENOSPC or EIO, a bug): settled now, not at start
            raise await self.answers.node_failed(job, err) from err
        finally:
            job.pop("replacing", None)
            if job["state"] in REPLACING:  # it ran: if none of its outputs was published (which replaced those
                # before it), they are replaced now
                await self._replaced(jid)

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
        spec, left = spec_line(line, JOB_HINT), [rest]

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
        """Run the job where the market says (job_placing.py): here, or on a provider that is sent its bytes."""
        if spec.replicated:  # (one replica too: it runs on another node, as many do)
            return await self.placing.replicated(spec, call, limits, bid, staged, job)
        placed = await self.placing.on_provider(spec, call, limits, bid, staged, job, here=True)
        if isinstance(placed, Returned):
            return await self.answers.returned(job, placed)
        return await self._execute(spec, call, prepared, signature, limits, placed.price, staged, job, prepaid)

    async def _execute(self, spec: JobSpec, call: InvokeCall, prepared, signature, limits, rate: int,
                       staged: Staged, job: dict[str, Any], prepaid: int) -> dict[str, Any]:
        budget, stop = self.compute.budget(call, rate), self.cancels.not_cancelled(job)  # (else nothing runs)
        try:
            await self.ledger.hold(self.payer, budget)
        except InsufficientCredit as err:
            raise worst_case_refused(self.compute, err, call, budget, "job") from None
        try:
            ran = await run_program(self.compute, spec, prepared, signature, limits, staged.work, stdin=staged.stdin,
                                    job_id=run_id(job), prepaid=prepaid, stop=stop)
        except BaseException:
            self.ledger.release(self.payer, budget)
            raise
        outcome, started, argv, refusal = ran.outcome, ran.started, ran.argv, ran.refusal
        stored: list[dict[str, Any]] = []
        unstored: XscError | None = None
        if ran.succeeded:
            try:
                stored = await self.outputs.store(ran.files, job)
            except XscError as err:  # storing is this node's part (no room on the market, too little credit for
                # the puts): the run happened, so it is recorded and charged, its record the trap its caller is told
                unstored = err
                outcome.trap_kind, outcome.message = err.code, f"its outputs could not be stored: {err.message}"
                outcome.hint = f"{err.hint}, then {rerun_hint(job)}" if err.hint else rerun_hint(job)
            except Exception:  # the node's own failure: its run is not charged (RemoteAnswers.node_failed)
                self.ledger.release(self.payer, budget)
                raise
        run, record = self.compute.job_run(spec.module, spec.entrypoint, signature, argv, limits, outcome, started,
                                           self.payer.id, rate, {"job": run_id(job)},
                                           {"id": run_id(job), "inputs": staged.inputs, "stdin": staged.stdin_sha256,
                                            # never an output's capability: a record is shown to whoever asks
                                            "outputs": [{k: o[k] for k in ("name", "size", "sha256", "verify_hash")}
                                                        for o in stored]})
        trap = {"kind": outcome.trap_kind, "message": outcome.message, "hint": outcome.hint, **(outcome.limit or {})} \
            if outcome.trap_kind else None
        streams = ended(job, run.to_json(), stored, refusal, trap, provider=self.node.id)
        # The job's record goes with the run's record and what it owes, in one group commit: after a kill -9 the
        # job is either not run (and runs again) or done and paid, never paid and run again.
        await record_and_owe(self.compute, self.ledger, self.tabs, self.payer, self.node, run, record,
                             prepared.module_hash, budget,
                             (*self.records.entries(job["id"], job),
                              *made(self.payer.public_key.hex(), job["id"], stored, run.provenance_id)))
        if unstored is not None:
            raise unstored_answer(job, streams, run.charge, unstored)
        return answer(job, streams, run.charge, refusal, trap)

    # --- after a restart ------------------------------------------------------------------------
    async def recover(self) -> None:
        """At start: a remote job a stop cut short while its provider ran it is finished from the provider's
        answer, one whose outputs were fetched is fetched again, one whose checked answer was storing is stored
        (each provider paid once, what its record says); any other job a stop cut short is marked interrupted and
        the outputs it had stored are removed (remote_recovery.py).  A remote run done, not paid yet, is paid what
        its job's record says it owes."""
        try:
            await self._recover()
        finally:
            self.recovered.set()

    async def _recover(self) -> None:
        records = self.records.all_jobs()
        for job in records:  # done, its providers' receipts not paid yet: paid what the record says they are owed
            if job.get("state") not in UNFINISHED:
                for pay in job.get("paid_on", []):
                    self.sent.owed_after_restart(pay["authorization"], pay["charge"])
        # Asked of their providers several at once (a node with many jobs in flight is back soon), at most
        # RECOVER_AT_ONCE: each holds a connection, a work directory and its outputs.  The jobs to finish last:
        # storing may have to wait for the market, and the others' tabs are held meanwhile.
        unfinished = [j for j in records if j.get("state") in UNFINISHED]
        self.cut_short = [j["id"] for j in unfinished]
        for rank in (0, 1, 2):  # left interrupted, then finished from their providers' answers, then resumed
            await at_most(RECOVER_AT_ONCE, (self._recovered(j) for j in unfinished if self._rank(j) == rank))
        for job in records:  # ended, a stop before the write that replaced the run before's outputs (or a resumed
            if job.get("replacing") and job.get("state") in (*REPLACING, *UNFINISHED):  # run that stored none)
                async with self.records.alone(job["id"]):
                    await self._replaced(job["id"])
        for stale in [*self.work_dir.glob("answered-*"), *self.work_dir.glob("replicas-*")]:
            # a job finished, or marked, just before a stop removed them
            job = self.records.load(stale.name.split("-", 1)[1])
            if job is None or not (self.answers.resumable(job) if stale.name.startswith("answered-")
                                   else self.answers.cut_short(job)):
                await in_pool(None, remove_tree, stale)

    async def _replaced(self, jid: str) -> None:
        try:
            await self.outputs.replace(jid)
        except Exception:  # its record keeps naming them: the next start replaces them
            log.exception("job %s: the outputs of its run before could not be removed", jid)

    def _rank(self, job: dict[str, Any]) -> int:
        return 2 if self.answers.resumable(job) else int(self.answers.cut_short(job))

    async def _recovered(self, job: dict[str, Any]) -> None:
        try:
            await self.recovery.recover_one(job)
        except Exception:  # one job's failure leaves the others to recover
            log.exception("job %s could not be recovered at the start", job["id"])

    # --- records -----------------------------------------------------------------------------
    async def forget_ended(self, now: float | None = None) -> int:
        """Delete the records of jobs that began more than `retention` seconds before `now` and that nothing needs
        any more (`JobRetention.forgettable` says what needs them), FORGET_AT_ONCE jobs at most, each in one write while
        no run of it is under way; then the provenance records of runs here that began as long ago, FORGET_RUNS_AT_ONCE
        at most, but those a job's records name, those of work not settled yet (owed on a tab, `l/o/`) and those of
        runs on a peer's tab not receipted yet (`c/t/`).  How many records went."""
        before_ns = int(((time.time() if now is None else now) - self.retention) * 1e9)
        owing = {authorization.id.hex() for authorization in self.ledger.pending()}
        found = await in_pool(None, self.retained.forgettable, before_ns, self.storage.store.known_file, owing,
                              FORGET_AT_ONCE)
        forgotten = 0
        for jid, key, digest, others in found.jobs:
            async with self.records.alone(jid):
                forgotten += await in_pool(None, self.retained.forget, key, digest, others)
        if found.loose:
            await in_pool(None, self.retained.forget_loose, found.loose)
        store = self.compute.store
        kept = found.runs | await in_pool(None, store.tab_runs) | \
            {ref for ref, _ in await in_pool(None, self.ledger.store.owed)}
        records = await in_pool(None, store.forget_provenance, before_ns, kept.__contains__, FORGET_RUNS_AT_ONCE)
        self._behind = len(found.jobs) >= FORGET_AT_ONCE or len(found.loose) >= FORGET_AT_ONCE \
            or records >= FORGET_RUNS_AT_ONCE
        if forgotten or found.loose or records:
            log.info("forgot %d jobs and %d provenance records over %s s old, and %d links and runs no job holds",
                     forgotten, records, f"{self.retention:g}", len(found.loose))
        return forgotten + len(found.loose) + records

    async def cancel(self, jid: str) -> dict[str, Any]:
        """Stop the local user's job `jid` while it runs (job_cancels.py): its record once the run has ended."""
        job = self.job(jid)
        await self.cancels.cancel(job)
        return self.job(job["id"])

    def job(self, jid: str) -> dict[str, Any]:
        """The local user's job `jid` (a prefix of at least 8 hex digits will do)."""
        text = jid.strip().lower()
        if not 8 <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
            raise InvalidArgument(f"not a job id: {jid[:70]!r}", hint="a job id is hex, 8 digits at least: "
                                  "`xsc compute jobs` lists them")
        found = self.records.by_prefix(text)
        if found is not None:
            return {**found, **payments(self.ledger, self.sent.paid.payments, found, self.db)}
        # A provider's receipt names the job it ran for another node's user, whose node alone keeps its record.
        raise JobNotFound(f"no job {jid} of this node's user", hint="list yours with: xsc compute jobs; one this "
                          "node ran for another node is that node's, its receipt here: xsc ledger history node")

    async def listed(self, limit: int, before: str | None = None) -> dict[str, Any]:
        """The local user's jobs, newest first (by when their latest run began), `limit` at most (MAX_LISTED), after
        the page that ended at the cursor `before`: {"jobs": [each one's id, state, started, charge, module, its name
        and replicas], "next": the cursor of the next page, or None}."""
        if not 1 <= limit <= MAX_LISTED:
            raise InvalidArgument(f"list 1 to {MAX_LISTED} jobs at a time, not {limit}", hint="ask for fewer")
        jobs, last = await in_pool(None, self.records.page, limit, _cursor(before))
        names: dict[str, str | None] = {}
        for module in {job.get("module") or "" for job in jobs}:
            try:
                names[module] = self.compute.registry.module(module).name
            except XscError:  # removed since (xsc compute rm), or a record without one
                names[module] = None
        return {"jobs": [_listed(job, names) for job in jobs], "next": None if last is None else last.hex()}

    # --- lineage -----------------------------------------------------------------------------
    async def lineage(self, cap_text: str) -> dict[str, Any]:
        """From a stored file back through the runs of the jobs that made it to the files they read (lineage.py).
        In the pool: a walk of MAX_DEPTH levels, each a few reads and a signature check, would hold the loop."""
        cap = Capability.parse(cap_text)
        return await in_pool(None, lineage.walk, self.records.lineage(self.compute.provenance_records.get), cap)


def _cursor(text: str | None) -> bytes | None:
    """The place (JobRecords.page) a page of the list of jobs ended at, from its `next`."""
    if text is None:
        return None
    if not _CURSOR.fullmatch(text):
        raise InvalidArgument(f"not a cursor of the list of jobs: {text[:100]!r}",
                              hint="give the cursor the page before ended with, or list from the newest: "
                                   "xsc compute jobs")
    return bytes.fromhex(text)


def _listed(summary: dict[str, Any], names: dict[str, str | None]) -> dict[str, Any]:
    """A job as the list shows it, from its summary (job_records.summary)."""
    return {**summary, "module_name": names.get(summary.get("module") or "")}
