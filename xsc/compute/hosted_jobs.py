"""Jobs other nodes place here: their bytes taken in, their program run and paid on the sender's tab, their
outputs kept until the sender has fetched them (the provider's side of net/jobs.py).

A sender is a stranger until its money checks: the job's terms (price, memory price, a tab authorization that pays
this node) are checked as an invoke's are (PaidCompute.terms), and its whole budget is reserved on the sender's
trust line and on its tab before a byte of its data is taken.  The data is bounded by the job's `bytes_in` and by
this node's free disk (less what the jobs it took may still write), comes in order, in requests of at most
net/jobs.CHUNK bytes (each priced by the peer route table), and is hashed as it comes: the job runs only over
exactly the bytes the sender named.  A begin or a piece of data whose answer the sender lost (a connection that
reset) is answered again as it was, taken once: a begin under the authorization of a job's tab of its own whose job
is staged and sent nothing yet names that job, the piece taken last asked again answers what was taken.  A sender
has at most PER_SENDER jobs here at once, the node at most MAX_HOSTED; a job not run within IDLE seconds of its last
request is dropped and its reservation released at that moment (so is one whose sender closes its tab before asking
for its run, as the close is answered: it gave the job up, or asks for it once the tab's authorization has expired:
nothing run under it could be paid), and a job's files go when the sender forgets it (or IDLE after its last
request).  However often its sender asks, a job is kept at most IDLE and the time to send its data at SLOWEST_LINK
from its begin unless it runs, and IDLE and the time to fetch its outputs at SLOWEST_LINK from the end of its run.
A run goes on when its sender goes away, and its answer is kept with its outputs: the sender asking for the run
again (its node restarted) is answered that, not run nor charged again.  A run still going STOP_GRACE into this
node's stop is stopped: it answers 503 `node-stopping` marked `cut_short` (the sender places the job elsewhere, as
when a provider goes away), with nothing of it recorded or charged.

The run is recorded as every run here is: a signed provenance record naming each input's hash (and the
verify-hash the sender gave for it) and each output's name, size and SHA-256, written with its amount on the
tab (one group commit) before the answer.  A sender that later finds an output whose bytes do not match those
signed hashes refuses to pay the tab (compute/sent_jobs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..db import disk_full
from ..errors import (Conflict, DiskFull, InvalidArgument, NodeStopping, NotFound, OverCap, PayloadTooLarge,
                      QuotaExceeded, StorageFull, XscError)
from ..identity import public_id
from ..net.jobs import CHUNK
from ..tasks import STOP_GRACE, in_pool, to_its_end, woken_loop
from . import hosted_data
from .hosted_data import Item
from .job_sandbox import file_sha256, remove_tree, run_program
from .jobspec import job_id, parse_sent_job
from .out_bound import Stop
from .paid import PaidCompute, not_here
from .remote_tabs import JOB_TABS
from .service import ComputeService, InvokeCall
from .wasi_io import io_fuel

log = logging.getLogger(__name__)

PER_SENDER = 2  # jobs one sender may have here at once (staged, running or waiting to be fetched)
MAX_HOSTED = 8  # jobs all senders together may have here
IDLE = 300.0  # seconds a job may wait for its sender's next request before it is dropped
SLOWEST_LINK = 64 * 1024  # bytes a second a sender is given the time to send a job's data, and fetch its outputs, at
DISK_MARGIN = 256 * 1024 * 1024  # free bytes the node keeps whatever jobs send it
BEGIN_NEEDS = frozenset({"spec", "price", "authorization", "deal", "data"})  # a job's first request, and memory_price


@dataclass
class Hosted:
    id: str
    sender: str
    spec: Any
    call: InvokeCall
    price: int
    deal: dict
    auth: Any
    budget: int
    tab: Any
    work: Path
    items: list[Item]
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    outputs: list[tuple[str, Path, int]] | None = None  # after its run: what the sender may fetch
    running: asyncio.Future | None = None  # its run's answer, once done: kept for its sender to ask again
    busy: bool = False  # a request of its sender is being served
    stop: Stop = field(default_factory=Stop)  # set as the node stops (its run cut short), or cancelled by its sender
    touched: float = field(default_factory=time.monotonic)
    kept_until: float = float("inf")  # when it goes unless it runs (or, once run, its outputs go), whatever its sender
    # asks meanwhile: a request now and then would otherwise hold its place (of MAX_HOSTED) and its files for good

    @property
    def due(self) -> float:
        return min(self.touched + IDLE, self.kept_until)

    @property
    def total(self) -> int:
        return sum(i.size for i in self.items)


class HostedJobs:
    def __init__(self, *, compute: ComputeService, paid: PaidCompute, work_dir: Path) -> None:
        self.compute = compute
        self.paid = paid  # a job's terms are checked, and its budget reserved, as an invoke's
        self.work_dir = work_dir
        self._jobs: dict[str, Hosted] = {}
        self._wake = asyncio.Event()  # a job taken: the expiry's next moment may be sooner
        self._closing = False

    def start(self) -> None:
        """Files of jobs a stop cut short: nothing can fetch them any more."""
        remove_tree(self.work_dir)

    async def close(self) -> None:
        """The node stops.  A run still going STOP_GRACE later is stopped (its program at its next tick) and ends as
        stopped (`_run`).  Every run is waited for to its end, each giving its reservation back once: none writes to
        the journal, a tab or a trust line once their stores close after this.  Then every job goes, with its files."""
        self._closing = True
        runs = [(job, job.running) for job in self._jobs.values()
                if job.running is not None and not job.running.done()]
        if runs:
            _, going = await asyncio.wait([running for _, running in runs], timeout=STOP_GRACE)
            for job, running in runs:
                if running in going:
                    job.stop.set()
            if going:
                await asyncio.wait(going)
        for job in list(self._jobs.values()):
            self._drop(job)

    def cut_short(self) -> None:
        """The node's stop is forced: no run begins any more, and each under way is stopped now (its program at
        its next tick), as it would be STOP_GRACE into the close."""
        self._closing = True
        for job in self._jobs.values():
            if job.running is not None and not job.running.done():
                job.stop.set()

    def loops(self) -> dict[str, Any]:
        # A sender that went away leaves no files behind for long, nor its reservations a moment past IDLE.
        return {"hosted-jobs-expiry": woken_loop("hosted jobs' expiry", self._wake, self._until_due, self._expired)}

    def _until_due(self) -> float:
        """Seconds until the next job left idle is due to be dropped (one taken meanwhile wakes the loop)."""
        now = time.monotonic()
        return max(0.0, min((j.due - now for j in self._jobs.values() if not j.busy), default=IDLE))

    async def _expired(self) -> None:
        self._expire()

    def _promised(self) -> int:
        """Bytes of disk the jobs taken may still write: the data still to come, and outputs of jobs not run yet."""
        return sum(j.total - j.received + (j.spec.bytes_out if j.outputs is None else 0) for j in self._jobs.values())

    def status(self) -> dict[str, int]:
        return {"hosted": len(self._jobs)}

    # --- the sender's requests ---------------------------------------------------------------
    async def begin(self, sender: str, body: Any) -> dict[str, Any]:
        """A job sent here: its terms checked and its budget reserved before any of its bytes are taken."""
        self._expire()
        if self._closing:
            raise _stopping()
        if not isinstance(body, dict) or not BEGIN_NEEDS <= set(body) <= BEGIN_NEEDS | {"memory_price"}:
            raise InvalidArgument('send {"spec", "price", "memory_price", "authorization", "deal", "data"}')
        spec = parse_sent_job(body["spec"])
        price, deal, auth = self.paid.terms(body)
        staged = self._staged_alone(sender, auth, spec)
        if staged is not None:
            return {"job": staged.id, "chunk": CHUNK}  # asked again, its first answer lost: the job it staged
        work = self.work_dir / secrets.token_hex(16)
        items = hosted_data.items(body["data"], spec, work)
        total = sum(i.size for i in items)
        if total > spec.bytes_in:
            raise OverCap(f"the job's data is {total:,} bytes, over its bytes_in ({spec.bytes_in:,})")
        call = InvokeCall(spec.module, spec.entrypoint, list(spec.argv), spec.fuel, spec.memory, spec.timeout, True)
        limits = self.compute.limits(call)
        if io_fuel(total) >= limits.fuel:
            raise InvalidArgument(f"reading its {total:,} bytes of input costs {io_fuel(total):,} fuel, more than "
                                  f"its fuel limit here ({limits.fuel:,})", hint="ask for more fuel")
        if sum(1 for j in self._jobs.values() if j.sender == sender) >= PER_SENDER or len(self._jobs) >= MAX_HOSTED:
            raise QuotaExceeded(f"this node runs at most {PER_SENDER} jobs of one sender and {MAX_HOSTED} in all "
                                "at once", hint="send it again in a moment", retry_after=5)
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.work_dir).free
        except OSError as err:
            raise _unstaged(err) from err
        if free < total + spec.bytes_out + DISK_MARGIN + self._promised():
            raise StorageFull("this node has no room for the job's data and outputs now",
                              hint="place it on another provider")
        budget = self.compute.budget(call, price)
        self.paid.reserve(sender, budget)  # its sender's line pays for it, or it is refused (402) here
        if not self.compute.registry.has_module(spec.module):
            self.paid.release(sender, budget)
            self.paid.pushes.expect(sender, spec.module, price, auth)  # its compile charged on the job's tab
            raise not_here(spec.module)
        try:
            tab = await self.paid.provider_tabs.reserve(auth, budget, sender, staged=True,
                                                        given_up=lambda: self._given_up(work.name))
        except BaseException:
            self.paid.release(sender, budget)
            raise
        try:  # what is reserved is held by the job from here, or given back at once
            hosted_data.stage(work, items)
        except BaseException as err:
            self.paid.provider_tabs.ran(tab, budget, None, staged=True)
            self.paid.release(sender, budget)
            remove_tree(work)
            if isinstance(err, OSError):
                raise _unstaged(err) from err
            raise
        job = Hosted(work.name, sender, spec, call, price, deal, auth, budget, tab, work, items,
                     kept_until=time.monotonic() + IDLE + total / SLOWEST_LINK)
        self._jobs[job.id] = job
        self._wake.set()
        return {"job": job.id, "chunk": CHUNK}

    async def take(self, sender: str, job_id_: str, offset: int, data: bytes) -> dict[str, int]:
        """The next bytes of a job's data (stdin, then each input, in order), written and hashed."""
        job = self._mine(sender, job_id_)
        if job.outputs is not None:
            raise Conflict("the job has run: it takes no more data")
        if offset < job.received and offset + len(data) == job.received:
            return {"received": job.received}  # the piece taken last, asked again: its first answer was lost
        if offset != job.received:
            raise Conflict(f"the job's data goes on at byte {job.received}, not {offset}",
                           hint="send its bytes in order", received=job.received)
        if len(data) > job.total - job.received:
            raise PayloadTooLarge(f"the job's data is {job.total:,} bytes; {job.total - job.received:,} are left")
        try:
            with self._serving(job):
                await in_pool(None, hosted_data.write, job, data)
        except InvalidArgument:  # bytes not the ones it named: nothing may run over them, nor sign their hash
            self._drop(job)
            raise
        return {"received": job.received}

    async def run(self, sender: str, job_id_: str) -> dict[str, Any]:
        """Run a job whose data is all here and matches its hashes; the run, its signed record, its outputs.  Its
        sender asking again (it restarted while the job ran) gets the same answer, once the run under way is
        done: the job is never run, nor charged, twice."""
        job = self._mine(sender, job_id_)
        if job.running is None:
            if job.stop.cancelled:  # its sender cancelled it while its data was taken: it never runs
                self._drop(job)
                raise Conflict("the job was cancelled by its sender before its run began", hint="send it again")
            if self._closing:
                raise _stopping()
            if job.received != job.total:
                raise Conflict(f"the job has {job.received:,} of its {job.total:,} bytes", received=job.received)
            if job.busy:
                raise Conflict("a request for this job is being served", hint="wait for its answer")
            try:
                self.paid.provider_tabs.start(job.tab)  # (its tab closed: the close dropped it, `_given_up`)
            except XscError:  # its authorization expired: it never runs, and its reservation goes back now
                self._drop(job)
                raise
            job.busy = True  # until the run ends, whoever waits for it: expiry and forget leave it alone
            job.running = asyncio.get_running_loop().create_future()
            job.running.add_done_callback(lambda f: f.cancelled() or f.exception())  # its sender may never ask
            # Run to its end: the sender going away (a kill -9) does not stop the run its next start asks for again.
            return await to_its_end(self._run_kept(job), lambda: None)
        return await asyncio.shield(job.running)

    async def _run_kept(self, job: Hosted) -> dict[str, Any]:
        """The job's run, its answer (or what it raised) kept for its sender to ask again."""
        assert job.running is not None
        try:
            answer = await self._run(job)
        except Exception as err:
            job.running.set_exception(err)
            raise
        except BaseException:
            job.running.cancel()
            raise
        else:
            job.running.set_result(answer)
            return answer
        finally:
            job.busy = False
            job.touched = time.monotonic()

    async def _run(self, job: Hosted) -> dict[str, Any]:
        """The job's run.  From its start its budget is this run's: released here, once, however it ends (cut short
        by the node's stop, `close`, whole: nothing of it is recorded or charged)."""
        spec = job.spec
        stdin = next((i for i in job.items if i.path == "stdin"), None)
        inputs = [{"path": i.path, "sha256": i.sha256, "size": i.size, "verify_hash": i.verify_hash}
                  for i in job.items if i.path != "stdin"]
        jid = job_id(spec, None if stdin is None else stdin.sha256, [i["sha256"] for i in inputs])
        run = None
        try:
            prepared, signature = self.compute.program(spec.module, spec.entrypoint)
            limits = self.compute.limits(job.call)
            await in_pool(None, os.chmod, job.work / "in", 0o555)
            ran = await run_program(self.compute, spec, prepared, signature, limits, job.work,
                                    stdin=None if stdin is None else stdin.file, job_id=jid,
                                    prepaid=io_fuel(job.total), stop=job.stop)
            # Cut short by this node's stop (unless it ended by itself first): not the run it was asked for, so
            # neither recorded nor charged.  One its sender cancelled is recorded and charged what it used.
            if job.stop.is_set() and ran.trapped and not job.stop.cancelled:
                raise _stopping(cut_short=True)
            outputs = ran.files if ran.succeeded else []
            hashes = [await in_pool(None, file_sha256, path) for _, path, _ in outputs]
            signed_outputs = [{"name": name, "size": size, "sha256": digest}
                              for (name, _, size), digest in zip(outputs, hashes)]
            deal = {**job.deal, "gateway": job.sender, "price": job.price, "authorization": job.auth.id.hex()}
            run, record = self.compute.job_run(spec.module, spec.entrypoint, signature, ran.argv, limits, ran.outcome,
                                               ran.started, public_id(job.auth.payer), job.price, deal,
                                               {"id": jid, "inputs": inputs,
                                                "stdin": None if stdin is None else stdin.sha256,
                                                "outputs": signed_outputs})
            await self.compute.journal.append(record, prepared.module_hash, self.paid.provider_tabs.owed(job.auth, run, job.sender))
        finally:
            self.paid.provider_tabs.ran(job.tab, job.budget, run)
            self.paid.used(job.sender, job.budget, run)
            job.budget = 0
        self.paid.market.offer.note_fuel(run.fuel_consumed)
        job.outputs = outputs
        job.kept_until = time.monotonic() + IDLE + sum(size for _, _, size in outputs) / SLOWEST_LINK
        outcome = run.outcome
        answer: dict[str, Any] = {
            "run": run.to_json(), "provenance": self.compute.provenance_records.get(run.provenance_id),
            "outputs": signed_outputs,
            "stdout": outcome.stdout.decode("utf-8", "replace"), "stderr": outcome.stderr.decode("utf-8", "replace"),
            "tab": {"authorization": job.auth.id.hex(), "total": job.tab.total, "count": job.tab.count}}
        if ran.refusal is not None:
            answer["refusal"] = ran.refusal
        error = run.error()
        if error is not None:
            answer["trap"] = {"kind": outcome.trap_kind, "message": error.message, "hint": outcome.hint}
        return answer

    async def output(self, sender: str, job_id_: str, index: int, offset: int) -> bytes:
        """At most a chunk of a run job's output `index` from `offset`."""
        job = self._mine(sender, job_id_)
        if job.outputs is None:
            raise Conflict("the job has not run yet", hint="run it first")
        if not 0 <= index < len(job.outputs):
            raise NotFound(f"the job has {len(job.outputs)} outputs; there is no output {index}")
        _, path, size = job.outputs[index]
        if not 0 <= offset <= size:
            raise InvalidArgument(f"output {index} is {size:,} bytes; offset {offset} is past its end")
        with self._serving(job):
            return await in_pool(None, hosted_data.read, path, offset, min(CHUNK, size - offset))

    async def cancel(self, sender: str, job_id_: str) -> dict[str, Any]:
        """Its sender cancels the job (only its sender: `_mine`).  One not run yet never runs: dropped now, or, while
        a piece of its data is written, once that write is done (`_serving`); what it reserved goes back.  A run
        under way is stopped at its next tick, recorded and charged what it used (its sender's run request is
        answered that, a trap of kind `cancelled`: `_run`), and this answers once it has ended."""
        job = self._mine(sender, job_id_)
        job.stop.cancel()
        if job.running is None:
            if not job.busy:
                self._drop(job)
            return {"cancelled": job.id, "ran": False}
        with contextlib.suppress(Exception):  # (its sender's run request is told how it ended)
            await asyncio.shield(job.running)
        return {"cancelled": job.id, "ran": True}

    def forget(self, sender: str, job_id_: str) -> None:
        job = self._mine(sender, job_id_)
        with self._serving(job):  # never while it runs: its reservation, its quota place and its files are in use
            pass
        self._drop(job)

    # --- bookkeeping ---------------------------------------------------------------------------
    def _staged_alone(self, sender: str, auth: Any, spec: Any) -> Hosted | None:
        """The job of `sender` staged under `auth` and sent nothing yet, if `auth` is a job's tab of its own (it pays
        one job, so a second begin under it is the first asked again); a shared tab's begins are each a job."""
        if not auth.job.startswith(JOB_TABS):
            return None
        return next((j for j in self._jobs.values() if j.auth.id == auth.id and j.sender == sender
                     and j.received == 0 and j.running is None and j.spec.canonical() == spec.canonical()), None)

    def _mine(self, sender: str, job_id_: str) -> Hosted:
        self._expire()
        job = self._jobs.get(job_id_)
        if job is None or job.sender != sender:  # another sender's job is none of its business: not even its id
            raise NotFound(f"no job {job_id_[:64]} of yours here", hint="send it again")
        job.touched = time.monotonic()
        return job

    @contextlib.contextmanager
    def _serving(self, job: Hosted):
        """A job is busy while one of its sender's requests is served: expiry leaves it alone, and a second request
        for it at the same moment is refused.  One given up meanwhile (`_given_up`), or cancelled by its sender before
        its run (`cancel`: its sender asks for nothing more of it), is dropped once served."""
        if job.busy:
            raise Conflict("a request for this job is being served", hint="wait for its answer")
        job.busy = True
        try:
            yield
        finally:
            job.busy = False
            job.touched = time.monotonic()
            if job.running is None and job.stop.cancelled and job.id in self._jobs:
                log.info("dropped job %s of %s: its sender cancelled it before its run", job.id, job.sender)
                self._drop(job)
            elif job.running is None and job.tab.closed:
                self._given_up(job.id)

    def _given_up(self, job_id_: str) -> None:
        """Its sender closed the job's tab before asking for its run (a restart of the sender's node gave it up):
        its reservations go back now, as the close is answered (unless a request for it is being served: then
        once it is, `_serving`)."""
        job = self._jobs.get(job_id_)
        if job is not None and not job.busy and job.running is None:
            log.info("dropped job %s of %s: its sender closed its tab before its run", job.id, job.sender)
            self._drop(job)

    def _expire(self) -> None:
        now = time.monotonic()
        for job in [j for j in self._jobs.values() if not j.busy and now >= j.due]:
            why = "it was kept its time" if now >= job.kept_until else \
                f"no request from its sender for {IDLE:g} s"
            log.info("dropped job %s of %s: %s", job.id, job.sender, why)
            self._drop(job)

    def _drop(self, job: Hosted) -> None:
        if self._jobs.pop(job.id, None) is None:
            return
        if job.running is None and job.budget:  # it never ran: its reservation goes back (a run's: `_run`)
            self.paid.provider_tabs.ran(job.tab, job.budget, None, staged=True)
            self.paid.release(job.sender, job.budget)
            job.budget = 0
        remove_tree(job.work)


def _stopping(cut_short: bool = False) -> NodeStopping:
    """This node's stop, as a job's sender is told it: before its run began, or once it had run part of it
    (`cut_short`, a field of its own: its sender's record says which, `interrupted` or `refused`)."""
    if cut_short:
        return NodeStopping("this node stopped while the job ran: its run was cut short, and nothing of it is "
                            "recorded or charged", hint="place it on another provider", cut_short=True)
    return NodeStopping("this node stopped while the job was with it, before its run began: nothing of it is "
                        "recorded or charged", hint="place it on another provider")


def _unstaged(err: OSError) -> XscError:
    """What the sender is told when this node cannot make a job's files (its own disk's fault, not the job's)."""
    if disk_full(err):
        return DiskFull("this node's disk is full: it cannot take the job's data now",
                        hint="place it on another provider")
    return XscError(f"this node cannot make the job's files ({err.strerror or type(err).__name__})",
                    hint="place it on another provider")


__all__ = ["HostedJobs", "IDLE", "MAX_HOSTED", "PER_SENDER"]
