"""A job's run cancelled by its user (`xsc compute cancel ID`), as Bacalhau's `job stop` does.

Each run of a job under way at this node holds a `Stop` (an event its program's epoch check reads at every tick, as
it reads its deadline: out_bound.py) from the moment its record is written `running` to the moment its run has ended.
A cancel writes its intent in the job's record (`cancel_asked`), then sets it and waits for that end.

- A run here stops at its next tick, is recorded and charged what it metered up to the stop (as a run its deadline
  stopped), stores none of what it left in /out and writes no lineage link, and ends `cancelled`
  (job_answers.ended); its caller, waiting in `xsc compute run`, is answered JobCancelled (job_answers.answer).  A
  kill -9 before that write leaves the record `running` with the intent: the start ends it `cancelled`, nothing
  charged, as an interrupted run is (RemoteAnswers.interrupted).
- A run on a provider (its record names it: `sent`) is stopped there: the provider is asked over the peer channel
  (net/jobs.cancel; it takes the cancel of the job's sender alone), stops the run, and answers its run request as
  any trapped run, its signed record charging what it used; that answer is checked and paid through the job's tab
  once, as any answer (sent_jobs.py), at most the job's budget, and the job ends `cancelled`.  A provider whose
  answer has not come CANCEL_GRACE after the cancel was sent is given up: its run's request ends unanswered, the
  job's tab is dropped unpaid (as an unanswered run's: a record it signs later is not paid) and the job ends
  `cancelled`, nothing paid; the cancel it did not hear is sent again until it does (provider_stops.py).
- A replicated job's replicas are each stopped so, at once; each is paid what its own signed record says it used,
  none judged against the others (replica_cancels.py).
- A job cancelled before its run began (still placed, its bytes still sent: `sending`, `not_cancelled`) runs
  nothing: it ends `cancelled`, charged nothing for a run, and a provider that took it drops it.  What is still being
  sent to its providers (its module, its begin, its inputs) is cut at the cancel (`Cancelling.asked`): a provider the
  cancel found named in the record was asked to drop the job, and the job's tab, closed, drops it there too, paying
  only a compile of its module that provider made for it.
- A kill -9 once the intent is written, before a provider heard the cancel or answered it, leaves the record `running`
  with `sent` (or a replica's `sent`) and `cancel_asked`: the start asks each such provider to stop again and waits for
  its answer as long as a cancel does (sent_jobs.SentJobs.answer_after_cancel), and ends the job as the cancel would.

Only a job whose record is `running` is cancelled: one `storing` ran to its end and its outputs are being kept (a
cancel would leave half of them), one ended has nothing left to cancel; both are refused (JobNotRunning, 409), naming
`xsc compute jobs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from ..errors import JobCancelled, JobNotRunning
from . import provenance
from .jobspec import parse_sent_job
from .out_bound import BEFORE_IT_RAN, Stop

log = logging.getLogger(__name__)

# Seconds a provider has, once asked to stop a run, for its answer (the signed record of the run it stopped) to come:
# past them its run's request ends unanswered, and its tab is dropped unpaid.
CANCEL_GRACE = 5.0
# The tag a caller gave its job's request (`?asker=`), so that once it hangs up (a Ctrl-C of `xsc compute run`) it can
# ask which job that request runs, and name the command that cancels it: set by the route, read as the run begins.
ASKER: contextvars.ContextVar[str | None] = contextvars.ContextVar("xsc_job_asker", default=None)
_ASKER = re.compile(r"[0-9a-f]{32}")


@dataclass
class Cancelling:
    """A run's cancel as the requests to its providers see it (sent_jobs.SentJobs.unsettled)."""

    asked: asyncio.Event = field(default_factory=asyncio.Event)  # cancelled: what is still sent of it is cut now
    gave_up: asyncio.Event = field(default_factory=asyncio.Event)  # its providers' answers are waited for no more


@dataclass
class _Run:
    stop: Stop = field(default_factory=Stop)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    cancelling: Cancelling = field(default_factory=Cancelling)
    job: dict[str, Any] | None = None  # its record as the run keeps it (`recording`): what a cancel writes in


class JobCancels:
    """The runs under way at this node (or sent from it) that a cancel can stop, by job id."""

    def __init__(self, stops: Any, records: Any) -> None:
        self.stops = stops  # xsc.compute.provider_stops.ProviderStops: a job's providers asked to stop its runs
        self.records = records  # xsc.compute.job_records.JobRecords: where a cancel's intent is written
        self._runs: dict[str, _Run] = {}
        self._asked: dict[str, str] = {}  # a request's tag (ASKER) -> the job it runs, while it runs

    @contextlib.asynccontextmanager
    async def running(self, jid: str) -> AsyncIterator[Stop]:
        """While the run of job `jid` is under way (one at a time: JobRecords.alone): its Stop."""
        run, asker = _Run(), ASKER.get()
        self._runs[jid] = run
        if asker is not None:
            self._asked[asker] = jid
        try:
            yield run.stop
        finally:
            del self._runs[jid]
            self._asked.pop(asker or "", None)
            run.ended.set()

    def recording(self, job: dict[str, Any]) -> None:
        """The record of the run under way of `job` (written `running`), as the run keeps and writes it."""
        self._runs[job["id"]].job = job

    def given_up(self, jid: str) -> Cancelling | None:
        """The cancel of job `jid` as its runs' requests see it (sent_jobs.SentJobs.unsettled): `asked` set as its user
        cancels it (what is still sent to its providers is cut then), `gave_up` once the cancel waits no more for its
        providers' answers (CANCEL_GRACE: its runs' requests then end unanswered)."""
        run = self._runs.get(jid)
        return None if run is None else run.cancelling

    def asked(self, asker: str) -> dict[str, Any]:
        """{"id": the job the request tagged `asker` runs now, or None}."""
        return {"id": self._asked.get(asker)}

    def cancelled(self, jid: str) -> bool:
        run = self._runs.get(jid)
        return run is not None and run.stop.cancelled

    def not_cancelled(self, job: dict[str, Any]) -> Stop | None:
        """As the run of `job` begins here: its Stop, or JobCancelled if the cancel came before (nothing runs)."""
        if self.cancelled(job["id"]):
            raise cancelled_before()
        run = self._runs.get(job["id"])
        return None if run is None else run.stop

    def sending(self, jid: str, sending: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        """`sending` (remote_answers.RemoteAnswers.sending) that, once the record names the provider, sends nothing
        of a job cancelled meanwhile: a cancel sees either the provider in the record (and asks it to stop the job)
        or its job stopped here, never neither."""
        def checked(sent: dict[str, Any]) -> None:
            sending(sent)
            if self.cancelled(jid):
                raise cancelled_before()
        return checked

    async def cancel(self, job: dict[str, Any]) -> None:
        """Stop the run of `job` (its record as read) and wait for its end, or refuse: it is not running."""
        jid = job["id"]
        run = self._runs.get(jid)
        if job.get("state") != "running" or run is None:
            state = job.get("state")
            why = "it is storing what its run left" if state == "storing" else \
                f"it is {state}" if state != "running" else "no run of it is under way at this node"
            raise JobNotRunning(f"the job {jid} cannot be cancelled: {why}",
                                hint="cancel a job while it runs: xsc compute jobs lists them with their state")
        kept = run.job  # (None: the run finishes a stop's leftovers, or replays: nothing of it is to be written)
        if kept is not None and kept.get("state") == "running":  # (not once its end is being written)
            kept["cancel_asked"] = provenance.timestamp(time.time_ns())
            self.records.save(jid, kept)  # before the run is stopped: a kill -9 from here ends it `cancelled`
        run.stop.cancel()  # (with no await since the record was read: `sending` sees it, or the record names `sent`)
        run.cancelling.asked.set()  # what is still sent to its providers is cut: none of it runs
        asked = _providers(kept if kept is not None else job)
        if asked:
            until = self.stops.until(parse_sent_job(job["spec"]))  # (one not heard is asked again until then)
            try:
                async with asyncio.timeout(CANCEL_GRACE):
                    await asyncio.gather(*(self.stops.ask(sent, until) for sent in asked))
                    await run.ended.wait()
            except TimeoutError:
                log.warning("job %s: its providers' answers did not come %g s after its cancel: given up unpaid",
                            jid, CANCEL_GRACE)
                run.cancelling.gave_up.set()
        await run.ended.wait()


def _providers(job: dict[str, Any]) -> list[dict[str, Any]]:
    """What was sent of each run of `job` to a provider and not answered yet (its provider, its id there, its tab's
    authorization): the job's own, or each replica's."""
    return [job["sent"]] if "sent" in job else \
        [r for r in job.get("replicating", {}).values() if r.get("step") == "sent"]


@contextlib.contextmanager
def asking(asker: str | None):
    """While a job's request is served: its tag, if it gave one of 32 hex digits (any other is not kept)."""
    token = ASKER.set(asker if asker is not None and _ASKER.fullmatch(asker) else None)
    try:
        yield
    finally:
        ASKER.reset(token)


def cancelled_before(why: str = BEFORE_IT_RAN, **details: Any) -> JobCancelled:
    """A job cancelled with no run to pay (`why`: before its run began, or its provider never answered): its record is
    written `cancelled`, and its caller told, by job_answers.not_ended, as for any run that never ended."""
    return JobCancelled(f"cancelled {why}", why=why, lost=f"cancelled {why}", **details)  # (`lost`: a replica's)


__all__ = ["ASKER", "CANCEL_GRACE", "Cancelling", "JobCancels", "asking", "cancelled_before"]
