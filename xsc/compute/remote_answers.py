"""The answers of jobs run on a provider (sent_jobs.py), from the checked answer on: its outputs stored here as
if it had run here, its provider paid, and every step written down first, so that a start finishes a job a stop
cut short (remote_recovery.py) rather than run it and pay it again (docs/compute.md has each step):

    sent       the provider took the job (`sending`)        its provider asked again for its run's answer
    fetching   its answer holds to the job (`believed`)     its outputs fetched again
    storing    its answer checked, its outputs kept here    what is left of them stored
    done       `paid_on`: each tab and what it owes         each tab still pending paid that, not more

A replicated job writes down each replica's step under `replicating` (by provider): `sent`, `fetching`, `checked`
(its outputs fetched, held to the hashes it signed and kept in `replicas-<id>/<provider>/`) or `lost`.  A start
takes each replica from its step as above (its answer asked again, its outputs fetched again, or those kept read),
compares them as the run would have (`judged`) and goes on from `storing`; a replica whose answer is gone is lost,
as one that went away while it ran: not paid.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import XscError
from ..tasks import in_pool
from .job_failures import told_as_recorded
from .job_answers import (KEPT_STREAMS, UNFINISHED, answer as answered_with, ended, node_failure, rerun_hint, the_job,
                          unstored_answer)
from .job_outputs import JobOutputs
from .job_records import JobRecords
from .job_sandbox import remove_tree
from .out_bound import CANCELLED
from .replica_verdicts import lost_why, no_agreement, replicas_said, wants_prepayment
from .sent_jobs import Returned, SentJobs, streams_sha256
from .trap_limits import of_job

log = logging.getLogger(__name__)


class RemoteAnswers:
    def __init__(self, *, records: JobRecords, outputs: JobOutputs, sent: SentJobs, work_dir: Path) -> None:
        self.records, self.outputs, self.sent, self.work_dir = records, outputs, sent, work_dir

    def tabs_to_hold(self, job: dict[str, Any]) -> list[str]:
        """The authorizations of the tabs a stop left `job` owing or waiting on: kept from the payment retry until
        the start has settled each as the job's record says (the retry alone would pay up to their caps)."""
        unfinished = job.get("state") in UNFINISHED
        cut = [job[k] for k in ("sent", "fetching") if unfinished and k in job]
        replicas = [r for r in job.get("replicating", {}).values() if unfinished and "authorization" in r]
        answered = job.get("answered", {})
        return [t["authorization"] for t in answered.get("pays", []) + answered.get("refused", [])
                + job.get("paid_on", []) + cut + replicas]

    # --- each step written down before it is taken ---------------------------------------------------
    def sending(self, job: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        """What writes down the provider a job is sent to, its id there and the tab that pays it, before a byte is
        sent: a kill -9 as it runs is finished at the start from its answer there (`RemoteRecovery.asked_again`)."""
        def sending(sent: dict[str, Any]) -> None:
            job["sent"] = sent
            self.records.save(job["id"], job)
        return sending

    def believed(self, job: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        """What writes down a provider's answer once it holds to the job, before its outputs are fetched: a kill -9 as
        they are fetched is finished at the start by fetching them again (`RemoteRecovery.refetched`), not run again."""
        def believed(fetching: dict[str, Any]) -> None:
            job.pop("sent", None)
            job["fetching"] = short(fetching)
            self.records.save(job["id"], job)
        return believed

    def replica_sending(self, job: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        """`sending` for one replica of a replicated job: its step `sent`, written before a byte is sent to it."""
        def sending(sent: dict[str, Any]) -> None:
            job.setdefault("replicating", {})[sent["provider"]] = {"step": "sent", **sent}
            self.records.save(job["id"], job)
        return sending

    def replica_believed(self, job: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        """`believed` for one replica: its step `fetching`, with its answer, before its outputs are fetched."""
        def believed(fetching: dict[str, Any]) -> None:
            job.setdefault("replicating", {})[fetching["provider"]] = {"step": "fetching", **short(fetching)}
            self.records.save(job["id"], job)
        return believed

    async def replica_checked(self, job: dict[str, Any], returned: Returned) -> Returned:
        """A replica's checked run, its outputs kept (synced) where a start finds them, then its step `checked`:
        a kill -9 before the replicas are compared does not lose what it delivered."""
        into = self.replicas_kept(job["id"]) / returned.provider
        await in_pool(None, keep, [path for _, path, _ in returned.files], into)
        returned.files = [(name, into / str(i), size) for i, (name, _, size) in enumerate(returned.files)]
        job["replicating"][returned.provider] = {**job["replicating"][returned.provider], "step": "checked"}
        self.records.save(job["id"], job)
        return returned

    def replica_lost(self, job: dict[str, Any], provider: str, err: BaseException) -> None:
        """A replica whose answer or outputs never came, or could not be trusted: not paid.  Written before its tab
        is dropped, with the tab's authorization, so that a start keeps the payment retry off a tab a kill -9 left
        pending and drops it (`RemoteRecovery._replica_again`): never a replica compared and counted after its tab
        was dropped."""
        step = job.setdefault("replicating", {}).get(provider, {})
        job["replicating"][provider] = {"step": "lost", "provider": provider, "error": str(err)[:300],
                                        "lost": lost_why(err), **{k: step[k] for k in ("authorization",) if k in step},
                                        **({"prepayment": True} if wants_prepayment(err) else {})}
        self.records.save(job["id"], job)

    async def judged(self, job: dict[str, Any], agree: int, replicas: list[tuple[str, Returned | BaseException]]
                     ) -> dict[str, Any]:
        """A replicated job's replicas compared: those whose outputs, fuel, exit and engine agree
        (sent_jobs.Returned.agreement) are paid if there are `agree` of them, the others refused and struck, and
        the job goes on as `returned` from one that agreed.  With no such agreement nothing is paid or stored
        (the job `refused`: ReplicasLost if the replicas that never answered could have made it, else
        ReplicasDisagree).  A provider whose replica was lost and placed again elsewhere is among `replicas`."""
        returned = [r for _, r in replicas if not isinstance(r, BaseException)]
        groups: dict[tuple, list[Returned]] = {}
        for r in returned:
            groups.setdefault(r.agreement, []).append(r)
        agreed = max(groups.values(), key=len, default=[])
        if len(agreed) < agree:
            for r in returned:
                await self.sent.refuse(r)
            failure, message, hint = no_agreement(job, agree, replicas, agreed)
            job.pop("replicating", None)
            job.update(state="refused", error=message, error_hint=hint, replicas=replicas_said(replicas, []))
            self.records.save(job["id"], job)
            await in_pool(None, remove_tree, self.replicas_kept(job["id"]))
            raise failure(message, hint=hint, replicas=job["replicas"])
        unlike = [r for r in returned if r not in agreed]
        job["replicas"] = replicas_said(replicas, agreed)
        # The verdict is written (`storing`, with the replicas refused) before anyone is struck or refused: a stop
        # before it compares them again at the start, none struck yet; a stop after it resumes the job, never
        # comparing them again.  Nothing is awaited between the write and the strikes: each is struck once.
        await self.answer_kept(job, agreed[0], agreed, unlike)
        for r in unlike:
            self.sent.strike(r.provider, f"provider {r.provider} answered job {job['id']} unlike {len(agreed)} "
                                         "other replicas: not paid")
        for r in unlike:
            await self.sent.refuse(r)
        return await self.returned(job, agreed[0], agreed)

    async def returned(self, job: dict[str, Any], returned: Returned, paying: list[Returned] | None = None
                       ) -> dict[str, Any]:
        """A job run on a provider, checked (sent_jobs.py): its outputs stored here, as if it had run here, then
        its provider paid (`paying`: each replica that agreed with it; a run whose tab a restart left pending is
        paid the charge it answered, no more).  Before a byte is stored, the checked answer and what it owes are
        written down and its outputs kept where a start does not remove them: a kill -9 from then on is resumed
        (`RemoteRecovery.resumed`), never run and paid again."""
        paying = paying or [returned]
        if "answered" not in job:  # a single job's was written before its provider was told to forget it
            await self.answer_kept(job, returned, paying)
        kept = self.kept(job["id"])
        run = {**returned.run, "charge": sum(r.run["charge"] for r in paying)}
        await in_pool(None, remove_tree, self.replicas_kept(job["id"]))
        try:
            done = await self.store_answered(job, run)
        except Exception as error:  # this node could not store what was answered: the provider is owed all the same
            if returned.tab is None:
                raise  # its tab left by a restart: stored later (`RemoteRecovery.recover_one`)
            err = error if isinstance(error, XscError) else node_failure(error)  # (its disk's error, say)
            self.sent.pay_all(paying)
            await in_pool(None, remove_tree, kept)
            job.setdefault("paid_on", job.pop("answered", {}).get("pays", []))  # paid: named as a done job's are
            job.update(state="failed", error=f"its outputs could not be stored: {err.message}",
                       error_hint=f"{err.hint}, then {rerun_hint(job)}" if err.hint else rerun_hint(job))
            await self.outputs.unstore(job, job)  # those it stored go in the write that says it failed
            raise unstored_answer(job, {"stdout": run.get("stdout", ""), "stderr": run.get("stderr", "")},
                                  run["charge"], err) from err
        self.sent.pay_all(paying)
        return answered_with(job, *done)

    async def answer_kept(self, job: dict[str, Any], returned: Returned, paying: list[Returned] | None = None,
                          refused: list[Returned] = ()) -> Returned:
        """`returned`'s first step: the checked answer and what it owes written down (`storing`), its outputs kept
        where a start finds them.  A single job takes it before its provider is told to forget the job
        (sent_jobs.unsettled's `checked`): told before, a kill -9 between would leave a run that was done and can
        be neither fetched again nor paid.  `refused`: the replicas that disagreed, whose tabs a start drops."""
        paying = paying or [returned]
        pays = [{"provider": r.provider, "authorization": r.authorization, "charge": r.run["charge"]} for r in paying]
        answer = returned.answer
        steps = {**{s["provider"]: s for s in (job.pop("sent", None), job.pop("fetching", None)) if s},
                 **job.pop("replicating", {})}  # each provider's id of the job (what a start tells it to forget)
        await in_pool(None, keep, [path for _, path, _ in returned.files], self.kept(job["id"]))
        run = {**returned.run, "charge": sum(r.run["charge"] for r in paying)}
        long = len(run.get("stdout", "")) + len(run.get("stderr", "")) > KEPT_STREAMS
        job.update(state="storing", outputs=[], answered={
            "provider": returned.provider, "run": {**run, "stdout": "", "stderr": ""} if long else run,
            "signed": returned.signed, "outputs": answer["outputs"], "refusal": answer.get("refusal"),
            "trap": of_job(answer, returned.signed, job, self.sent.paid.compute.ceiling), "pays": pays,  # (limit: ours)
            "hosted": {p: s["job"] for p, s in steps.items() if isinstance(s, dict) and "job" in s},
            **({"refused": [{"provider": r.provider, "authorization": r.authorization} for r in refused]}
               if refused else {})})
        self.records.save(job["id"], job)
        return returned

    async def store_answered(self, job: dict[str, Any], run: dict[str, Any]) -> tuple:
        """A checked answer's outputs not stored yet stored from where they are kept, and the job written done in
        one write with the provider's signed record and each output's link to it; what `answer` takes."""
        answered, kept = job["answered"], self.kept(job["id"])
        stored = {o["name"] for o in job["outputs"]}
        await self.outputs.store([(o["name"], kept / str(i), o["size"]) for i, o in enumerate(answered["outputs"])
                                  if o["name"] not in stored], job)
        refusal, trap = answered["refusal"], answered["trap"]
        streams = ended(job, run, job["outputs"], refusal, trap, provider=answered["provider"],
                        signed=answered["signed"])
        job.pop("answered")
        job["paid_on"] = answered["pays"]  # a restart before they are paid pays each its charge, not its cap
        self.records.finished(job, answered["signed"])
        try:  # the job is done: a start removes what is left of them (JobService._recover), the job stays done
            await in_pool(None, remove_tree, kept)
        except OSError:
            log.exception("job %s: removing its outputs kept until they were stored failed", job["id"])
        return streams, run["charge"], refusal, trap

    # --- where a start finds what it finishes ------------------------------------------------------
    def kept(self, jid: str) -> Path:
        """Where a job's checked remote outputs wait to be stored (a start leaves them: `RemoteRecovery.resumed`
        needs them)."""
        return self.work_dir / f"answered-{jid}"

    def resumable(self, job: dict[str, Any]) -> bool:
        return job.get("state") == "storing" and "answered" in job and self.kept(job["id"]).is_dir()

    def replicas_kept(self, jid: str) -> Path:
        """Where a replicated job's checked replicas' outputs wait to be compared (a start leaves them)."""
        return self.work_dir / f"replicas-{jid}"

    def cut_short(self, job: dict[str, Any]) -> bool:
        """Whether a stop cut the job short while its providers ran it or its outputs were fetched."""
        return job.get("state") in UNFINISHED and any(k in job for k in ("sent", "fetching", "replicating")) \
            and not self.resumable(job)


    async def refused_unpaid(self, job: dict[str, Any]) -> None:
        """The tabs of the replicas a written verdict refused, dropped if a stop left them pending: not paid.  They
        were struck with the verdict, and are not struck again."""
        for refused in job.get("answered", {}).get("refused", []):
            await self.sent.unanswered_after_restart(refused["authorization"])


    async def interrupted(self, job: dict[str, Any], error: str = "the node stopped while the job ran") -> None:
        """A job a stop cut short, not resumed: marked interrupted (`error`: why), the outputs it had stored removed,
        and its provider paid if its answer was checked (it is owed it, stored or not), not if its answer or its
        outputs never came."""
        await self.refused_unpaid(job)
        # Its user cancelled it before the stop, and nothing of the run it stopped was recorded or answered: cancelled
        cancelled = "cancel_asked" in job and "answered" not in job
        pays = job.pop("answered", {}).get("pays", [])  # paid, and named in its record (`paid_on`) as a done job's
        for pay in pays:
            self.sent.owed_after_restart(pay["authorization"], pay["charge"])
        cut = [job[step] for step in ("sent", "fetching") if step in job]  # its answer, or its outputs, never came
        for step in cut + [r for r in job.get("replicating", {}).values() if "authorization" in r]:
            await self.sent.unanswered_after_restart(step["authorization"])  # (a replica not compared: not paid)
        for k in ("sent", "fetching", "replicating"):
            job.pop(k, None)
        job.update(state="interrupted", error=error, error_hint=rerun_hint(job), **({"paid_on": pays} if pays else {}))
        if cancelled:
            job.update(state=CANCELLED, error=f"its user cancelled it while it ran, then {error}: nothing is charged")
        await self.outputs.unstore(job, job)  # the outputs it had stored go in the write that marks it
        await in_pool(None, remove_tree, self.kept(job["id"]))
        await in_pool(None, remove_tree, self.replicas_kept(job["id"]))

    async def node_failed(self, job: dict[str, Any], err: Exception) -> XscError:
        """A job whose run this node itself failed (an OSError of its disk, a fault of its own: not an XscError),
        settled now as the next start would settle its record, rather than left running until then: interrupted,
        the outputs it stored removed, nothing of it charged here (a run here is charged with the write that ends
        it, which never came), no provider paid whose answer never came (sent_jobs.unsettled dropped its tab as the
        error passed) and one whose answer was checked paid what it answered.  What its user is told instead of the
        node's 500: its id, the failure and how to run it again.  A failure once its run ended in memory is told as
        its record on disk says it (job_failures.told_as_recorded): done or failed, not cut short and not to be run
        again; or, the write that ended it failed, what the next start makes of it."""
        failure = node_failure(err)
        log.error("job %s: the node failed it", job["id"], exc_info=err)
        if job.get("state") not in UNFINISHED:
            recorded = self._recorded(job["id"])
            return told_as_recorded(job, recorded, failure, recorded is not None and self.resumable(recorded))
        await self.interrupted(job, failure.message)
        hint = rerun_hint(job)
        return type(failure)(f"{the_job(job, hint)} was cut short: {failure.message}", hint=hint, id=job["id"])

    def _recorded(self, jid: str) -> dict[str, Any] | None:
        """The job's record as its disk has it (None: it cannot be read, the disk failing)."""
        try:
            return self.records.load(jid)
        except Exception:  # (logged with the failure that led here)
            return None


def short(fetching: dict[str, Any]) -> dict[str, Any]:
    """A believed answer as its job's record keeps it: its streams dropped if they are longer than a record keeps
    (their hash kept: what replicas compared at a start agree on)."""
    answer = fetching["answer"]
    if len(answer.get("stdout", "")) + len(answer.get("stderr", "")) > KEPT_STREAMS:
        answer = {**answer, "stdout": "", "stderr": "", "run": {**answer["run"], "stdout": "", "stderr": ""}}
    streams = fetching.get("streams") or streams_sha256(fetching["answer"]["run"])
    return {**fetching, "answer": answer, "streams": streams}



def keep(paths: list[Path], kept: Path) -> None:
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



__all__ = ["RemoteAnswers", "keep", "short"]
