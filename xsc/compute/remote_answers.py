"""The answers of jobs run on a provider (sent_jobs.py), from the checked answer on: its outputs stored here as
if it had run here, its provider paid, and every step written down first, so that a start finishes a job a stop
cut short (`recover_one`) rather than run it and pay it again (docs/compute.md has each step):

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

import asyncio
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from .. import db
from ..errors import (DiskFull, ForgedResult, IntegrityError, NodeFailed, OverCap, PeerRefused, PeerUnreachable,
                      ReplicasDisagree, ReplicasLost, Trap, XscError)
from ..tasks import in_pool
from .job_records import (KEPT_STREAMS, UNFINISHED, JobOutputs, JobRecords, answer as answered_with, ended, rerun_hint,
                          run_id, the_job, unstored_answer)
from .job_sandbox import file_sha256, remove_tree
from .jobspec import parse_sent_job
from .sent_jobs import Returned, SentJobs, streams_sha256

log = logging.getLogger(__name__)

RESUME_FOR = 1800.0  # seconds a start keeps trying to store a checked remote answer (its tab lives TAB_TTL)


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
        sent: a kill -9 while it runs is finished at the start from the provider's answer (`asked_again`)."""
        def sending(sent: dict[str, Any]) -> None:
            job["sent"] = sent
            self.records.save(job["id"], job)
        return sending

    def believed(self, job: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        """What writes down a provider's answer once it holds to the job, before its outputs are fetched: a kill -9
        while they are fetched is finished at the start by fetching them again (`refetched`), not run again."""
        def believed(fetching: dict[str, Any]) -> None:
            job.pop("sent", None)
            job["fetching"] = _short(fetching)
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
            job.setdefault("replicating", {})[fetching["provider"]] = {"step": "fetching", **_short(fetching)}
            self.records.save(job["id"], job)
        return believed

    async def replica_checked(self, job: dict[str, Any], returned: Returned) -> Returned:
        """A replica's checked run, its outputs kept (synced) where a start finds them, then its step `checked`:
        a kill -9 before the replicas are compared does not lose what it delivered."""
        into = self.replicas_kept(job["id"]) / returned.provider
        await in_pool(None, _keep, [path for _, path, _ in returned.files], into)
        returned.files = [(name, into / str(i), size) for i, (name, _, size) in enumerate(returned.files)]
        job["replicating"][returned.provider] = {**job["replicating"][returned.provider], "step": "checked"}
        self.records.save(job["id"], job)
        return returned

    def replica_lost(self, job: dict[str, Any], provider: str, err: BaseException) -> None:
        """A replica whose answer or outputs never came, or could not be trusted: not paid.  Written before its tab
        is dropped, with the tab's authorization, so that a start keeps the payment retry off a tab a kill -9 left
        pending and drops it (`_replica_again`): never a replica compared and counted after its tab was dropped."""
        step = job.setdefault("replicating", {}).get(provider, {})
        job["replicating"][provider] = {"step": "lost", "provider": provider, "error": str(err)[:300],
                                        "lost": lost_why(err), **{k: step[k] for k in ("authorization",) if k in step},
                                        **({"prepayment": True} if _wants_prepayment(err) else {})}
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
            failure, message, hint = _no_agreement(job, agree, replicas, agreed)
            job.pop("replicating", None)
            job.update(state="refused", error=message, error_hint=hint, replicas=_replicas(replicas, []))
            self.records.save(job["id"], job)
            await in_pool(None, remove_tree, self.replicas_kept(job["id"]))
            raise failure(message, hint=hint, replicas=job["replicas"])
        unlike = [r for r in returned if r not in agreed]
        job["replicas"] = _replicas(replicas, agreed)
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
        (`resumed`), never run and paid again."""
        paying = paying or [returned]
        if "answered" not in job:  # a single job's was written before its provider was told to forget it
            await self.answer_kept(job, returned, paying)
        kept = self.kept(job["id"])
        run = {**returned.run, "charge": sum(r.run["charge"] for r in paying)}
        await in_pool(None, remove_tree, self.replicas_kept(job["id"]))
        try:
            done = await self._store_answered(job, run)
        except Exception as error:  # this node could not store what was answered: the provider is owed all the same
            if returned.tab is None:
                raise  # its tab left by a restart: stored later (`recover_one`)
            err = error if isinstance(error, XscError) else node_failure(error)  # (its disk's error, say)
            for r in paying:
                self.sent.pay(r)
            await in_pool(None, remove_tree, kept)
            job.pop("answered", None)
            job.update(state="failed", outputs=[], error=f"its outputs could not be stored: {err.message}",
                       error_hint=f"{err.hint}, then {rerun_hint(job)}" if err.hint else rerun_hint(job))
            self.records.save(job["id"], job)
            raise unstored_answer(job, {"stdout": run.get("stdout", ""), "stderr": run.get("stderr", "")},
                                  run["charge"], err) from err
        for r in paying:
            self.sent.pay(r)
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
        for step in ("sent", "fetching", "replicating"):
            job.pop(step, None)
        await in_pool(None, _keep, [path for _, path, _ in returned.files], self.kept(job["id"]))
        run = {**returned.run, "charge": sum(r.run["charge"] for r in paying)}
        long = len(run.get("stdout", "")) + len(run.get("stderr", "")) > KEPT_STREAMS
        job.update(state="storing", outputs=[], answered={
            "provider": returned.provider, "run": {**run, "stdout": "", "stderr": ""} if long else run,
            "signed": returned.signed, "outputs": answer["outputs"], "refusal": answer.get("refusal"),
            "trap": answer.get("trap"), "pays": pays,
            **({"refused": [{"provider": r.provider, "authorization": r.authorization} for r in refused]}
               if refused else {})})
        self.records.save(job["id"], job)
        return returned

    async def _store_answered(self, job: dict[str, Any], run: dict[str, Any]) -> tuple:
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
        await in_pool(None, remove_tree, kept)
        return streams, run["charge"], refusal, trap

    # --- after a restart ------------------------------------------------------------------------
    def kept(self, jid: str) -> Path:
        """Where a job's checked remote outputs wait to be stored (a start leaves them: `resumed` needs them)."""
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

    async def finished(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job `cut_short`, finished from its providers' answers: asked again, or its outputs fetched again."""
        if "replicating" in job:
            return await self.replicas_again(job)
        step = job["sent"] if "sent" in job else job["fetching"]
        if not self.sent.payable_after_restart(step["authorization"]):  # settled unpaid before the stop: a run
            job.pop("sent", None)  # that cannot be paid is not counted either
            job.pop("fetching", None)
            self.records.save(job["id"], job)
            # Its provider still holds the job (its quota place, its reservation on this node's line, the bytes
            # sent) until it drops it itself: a stop while its data was sent drops the tab and tells it nothing.
            await self.sent.forget(step["provider"], step["job"])
            raise XscError(f"provider {step['provider']}'s tab was settled unpaid before the stop: not counted")
        return await (self.asked_again(job) if "sent" in job else self.refetched(job))

    async def replicas_again(self, job: dict[str, Any]) -> dict[str, Any]:
        """A replicated job a stop cut short before its replicas were compared: each replica taken from the step
        its record names, at once (its answer asked again, its outputs fetched again, or those kept read and held
        to their signed hashes), then compared and paid as the run would have (`judged`): none run again, each
        paid once.  A replica whose answer or outputs cannot be had is lost: not paid."""
        spec = parse_sent_job(job["spec"])
        steps = list(job["replicating"].values())
        found = await asyncio.gather(*(self._replica_again(job, spec, step) for step in steps),
                                     return_exceptions=True)
        for outcome in found:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancelled: the next start goes on from the steps written down
        return await self.judged(job, job["agree"], [(step["provider"], r) for step, r in zip(steps, found)])

    async def _replica_again(self, job: dict[str, Any], spec, step: dict[str, Any]) -> Returned:
        provider = step["provider"]
        if step["step"] == "lost":
            if "authorization" in step:  # a kill -9 may have come before its tab was dropped
                await self.sent.unanswered_after_restart(step["authorization"])
            raise XscError(step["error"], lost=step.get("lost", "failed"),
                           **({"prepayment": True} if step.get("prepayment") else {}))
        try:
            if not self.sent.payable_after_restart(step["authorization"]):  # its tab settled unpaid before the stop
                raise XscError(f"replica {provider}'s tab was settled unpaid before the stop: not counted")
            if step["step"] == "sent":
                step = {"step": "fetching", **_short(await self.sent.answer_again(step, spec, run_id(job),
                                                                                   job["inputs"]))}
                job["replicating"][provider] = step
                self.records.save(job["id"], job)
            answer, kept = step["answer"], self.replicas_kept(job["id"]) / provider
            if step["step"] == "fetching":
                part = self.replicas_kept(job["id"]) / f"{provider}.part"
                try:
                    files = await self.sent.refetched(provider, step["job"], answer["outputs"], part)
                    await in_pool(None, _keep, [path for _, path, _ in files], kept)
                finally:
                    await in_pool(None, remove_tree, part)
                step = job["replicating"][provider] = {**step, "step": "checked"}
                self.records.save(job["id"], job)
                await self.sent.forget(provider, step["job"])  # only now: told before, a kill -9 would lose it
            for i, output in enumerate(answer["outputs"]):
                path = kept / str(i)
                if not path.is_file() or await in_pool(None, file_sha256, path) != output["sha256"]:
                    raise IntegrityError(f"replica {provider}'s kept output {output['name']!r} is not the one it "
                                         "signed", hint="run the job again")
            files = [(o["name"], kept / str(i), o["size"]) for i, o in enumerate(answer["outputs"])]
        except Exception as err:
            self.replica_lost(job, provider, err)
            await self.sent.unanswered_after_restart(step["authorization"])
            if "job" in step:
                await self.sent.forget(provider, step["job"])
            raise
        return _restored(step, files)

    async def resumed(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job whose checked answer a stop left storing: what is left of its outputs stored from where
        they are kept (each first held to the hash its provider signed), then its providers paid what the record
        says they are owed; its answer, as `returned`'s.  Not run again, so not paid again."""
        answered, kept = job["answered"], self.kept(job["id"])
        await self._refused_unpaid(job)
        for i, output in enumerate(answered["outputs"]):
            if await in_pool(None, file_sha256, kept / str(i)) != output["sha256"]:
                raise IntegrityError(f"the job's kept output {output['name']!r} is not the one its provider signed",
                                     hint=rerun_hint(job))
        done = await self._store_answered(job, answered["run"])
        for pay in answered["pays"]:
            self.sent.owed_after_restart(pay["authorization"], pay["charge"])
        return answered_with(job, *done)

    async def _refused_unpaid(self, job: dict[str, Any]) -> None:
        """The tabs of the replicas a written verdict refused, dropped if a stop left them pending: not paid.  They
        were struck with the verdict, and are not struck again."""
        for refused in job.get("answered", {}).get("refused", []):
            await self.sent.unanswered_after_restart(refused["authorization"])

    async def asked_again(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job a stop cut short while its provider ran it: the provider asked again for the answer of the
        run it was sent (it keeps it hosted_jobs.IDLE after the run), which is held to the job, its tab and its
        price as any answer, then fetched, stored and paid as `refetched` does: not run again, paid once.  A
        provider gone, or without that answer, is paid nothing for it (the tab's authorization is dropped)."""
        sent = job["sent"]
        try:
            fetching = await self.sent.answer_again(sent, parse_sent_job(job["spec"]), run_id(job), job["inputs"])
        except XscError:
            await self.sent.unanswered_after_restart(sent["authorization"])
            job.pop("sent")
            self.records.save(job["id"], job)
            raise
        self.believed(job)(fetching)
        return await self.refetched(job)

    async def refetched(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job a stop cut short while its believed answer's outputs were fetched: fetched again from its
        provider (which keeps them a while), then stored and paid as `returned` does.  Outputs that never come
        (the provider gone, or their bytes not the ones it signed) are not paid."""
        fetching = job["fetching"]
        answer = fetching["answer"]
        into = Path(tempfile.mkdtemp(prefix="job-", dir=self.work_dir))
        try:
            try:
                try:
                    files = await self.sent.refetched(fetching["provider"], fetching["job"], answer["outputs"], into)
                except XscError:
                    await self.sent.unanswered_after_restart(fetching["authorization"])
                    job.pop("fetching")
                    raise
                done = await self.returned(job, _restored(fetching, files))
            except asyncio.CancelledError:
                raise  # the node stops again: the provider keeps them for the next start
            except BaseException:
                await self.sent.forget(fetching["provider"], fetching["job"])
                raise
            # only once its answer is written `storing` (`returned`): told before, a kill -9 would lose it
            await self.sent.forget(fetching["provider"], fetching["job"])
            return done
        finally:
            await in_pool(None, remove_tree, into)

    async def interrupted(self, job: dict[str, Any], error: str = "the node stopped while the job ran") -> None:
        """A job a stop cut short, not resumed: marked interrupted (`error`: why), the outputs it had stored removed,
        and its provider paid if its answer was checked (it is owed it, stored or not), not if its answer or its
        outputs never came."""
        await self.outputs.remove([o["capability"] for o in job.get("outputs", [])])
        await self._refused_unpaid(job)
        for pay in job.get("answered", {}).get("pays", []):
            self.sent.owed_after_restart(pay["authorization"], pay["charge"])
        cut = [job[step] for step in ("sent", "fetching") if step in job]  # its answer, or its outputs, never came
        for step in cut + [r for r in job.get("replicating", {}).values() if "authorization" in r]:
            await self.sent.unanswered_after_restart(step["authorization"])  # (a replica not compared: not paid)
        for k in ("answered", "sent", "fetching", "replicating"):
            job.pop(k, None)
        job.update(state="interrupted", outputs=[], error=error, error_hint=rerun_hint(job))
        self.records.save(job["id"], job)
        await in_pool(None, remove_tree, self.kept(job["id"]))
        await in_pool(None, remove_tree, self.replicas_kept(job["id"]))

    async def node_failed(self, job: dict[str, Any], err: Exception) -> XscError:
        """A job whose run this node itself failed (an OSError of its disk, a fault of its own: not an XscError),
        settled now as the next start would settle its record, rather than left running until then: interrupted,
        the outputs it stored removed, nothing of it charged here (a run here is charged with the write that ends
        it, which never came), no provider paid whose answer never came (sent_jobs.unsettled dropped its tab as the
        error passed) and one whose answer was checked paid what it answered.  What its user is told instead of the
        node's 500: its id, the failure and how to run it again.  A failure after the write that ended the run (its
        record done or failed, and its providers owed what it says: a start pays them) is told as that record says
        it, of the failure's kind all the same (503, 507): the job is not cut short, and not to be run again."""
        failure = node_failure(err)
        log.error("job %s: the node failed it", job["id"], exc_info=err)
        if job.get("state") not in UNFINISHED:
            recorded = self._recorded(job["id"])
            if recorded is not None and recorded.get("state") not in UNFINISHED:
                hint = f"see it with: xsc compute job {job['id']}"
                return type(failure)(f"{the_job(job, hint)} is {recorded['state']}, but then {failure.message}",
                                     hint=hint, id=job["id"], state=recorded["state"])
        else:
            await self.interrupted(job, failure.message)
        hint = rerun_hint(job)
        return type(failure)(f"{the_job(job, hint)} was cut short: {failure.message}", hint=hint, id=job["id"])

    def _recorded(self, jid: str) -> dict[str, Any] | None:
        """The job's record as its disk has it (None: it cannot be read, the disk failing)."""
        try:
            return self.records.load(jid)
        except Exception:  # (logged with the failure that led here)
            return None

    async def recover_one(self, job: dict[str, Any]) -> None:
        """At start, a job a stop left unfinished: finished from its provider's answer if it was run on one and
        the answer (or its outputs) can still be had, resumed if its checked answer was storing, else marked
        interrupted."""
        if self.cut_short(job):
            try:
                async with self.records.alone(job["id"]):
                    await self.finished(job)
            except (Trap, OverCap):
                pass  # finished: the job's answer is its trap or its refusal
            except XscError as err:
                log.warning("job %s: its answer or outputs could not be had or stored again (%s)", job["id"], err)
            job = self.records.load(job["id"]) or job
            if job.get("state") not in UNFINISHED:
                return
        if self.resumable(job):
            try:
                await self._resume_in_time(job)
                return
            except XscError as err:
                log.error("job %s: its checked answer could not be stored (%s): marked interrupted", job["id"], err)
                job = self.records.load(job["id"]) or job
        await self.interrupted(job)

    async def _resume_in_time(self, job: dict[str, Any]) -> None:
        """`resumed`, tried again while the node's storage is not ready to store (its market still filling after
        the start), until RESUME_FOR seconds have passed: its tab must be closed before its authorization expires."""
        delay, deadline = 1.0, time.monotonic() + RESUME_FOR
        while True:
            async with self.records.alone(job["id"]):
                current = self.records.load(job["id"])
                if current is None or not self.resumable(current):
                    return  # a run of the same job resumed it meanwhile
                try:
                    await self.resumed(current)
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


def _short(fetching: dict[str, Any]) -> dict[str, Any]:
    """A believed answer as its job's record keeps it: its streams dropped if they are longer than a record keeps
    (their hash kept: what replicas compared at a start agree on)."""
    answer = fetching["answer"]
    if len(answer.get("stdout", "")) + len(answer.get("stderr", "")) > KEPT_STREAMS:
        answer = {**answer, "stdout": "", "stderr": "", "run": {**answer["run"], "stdout": "", "stderr": ""}}
    streams = fetching.get("streams") or streams_sha256(fetching["answer"]["run"])
    return {**fetching, "answer": answer, "streams": streams}


def _restored(fetching: dict[str, Any], files: list) -> Returned:
    """A run a restart finishes from its believed answer (`fetching`) and its outputs (`files`): its tab the one
    a restart left pending, paid what it answered (sent_jobs.SentJobs.pay)."""
    answer = fetching["answer"]
    return Returned(fetching["provider"], answer["run"], answer["provenance"], files,
                    [o["sha256"] for o in answer["outputs"]], answer, authorization=fetching["authorization"],
                    streams=fetching.get("streams", ""))


def lost_why(err: BaseException) -> str:
    """Why a replica's answer never came, in a word or two: its provider `unreachable`, `timed out`, `refused` it,
    cut its run short (`interrupted`: stopped while it ran, as a job run alone says it), answered what it did not
    sign (`forged`), or it `failed` otherwise (the caller's own fault included)."""
    if isinstance(err, XscError) and isinstance(err.details.get("lost"), str):
        return err.details["lost"]  # as a replica's record wrote it down
    if isinstance(err, ForgedResult):
        return "forged"
    if isinstance(err, PeerUnreachable):
        return "timed out" if err.details.get("reason") == "timed out" else "unreachable"
    if isinstance(err, PeerRefused):
        return "interrupted" if err.details.get("peer_cut_short") else "refused"
    return "failed"


def _no_agreement(job: dict[str, Any], agree: int, replicas: list[tuple[str, Any]], agreed: list[Returned]
                  ) -> tuple[type[XscError], str, str]:
    """Why `agree` replicas did not agree, in figures: how many agreed, answered otherwise (a forged answer among
    them) and were lost, and why; the error it is (ReplicasLost if the replicas asked that never answered, those
    lost and not placed again, could have made the agreement) and the command that runs the job again."""
    whys = [lost_why(r) for _, r in replicas if isinstance(r, BaseException)]
    lost = [w for w in whys if w != "forged"]
    asked = job.get("guarantee", {}).get("replicas", len(replicas))
    missing = asked - (len(replicas) - len(lost))
    unlike = len(replicas) - len(agreed) - len(lost)
    said = f"{len(agreed)} of the {asked} replicas asked agree{_placed_again(asked, len(replicas))}, fewer than the " \
           f"{agree} it asks; {unlike} answered otherwise, {len(lost)} {'was' if len(lost) == 1 else 'were'} lost"
    whys_said = " (" + ", ".join(f"{n} {why}" for why, n in sorted(Counter(lost).items())) + ")" if lost else ""
    message = said + whys_said + ": nothing is paid or stored"
    # (the job's id once: the command asking fewer to agree is the same with another --agree)
    hint = rerun_hint(job) + (f", or with --agree {len(agreed)} to ask fewer to agree" if agreed else "")
    if asked == 1 and lost and not agreed and not unlike:  # the one replica asked never answered, none took its place
        message = (f"its replica, which runs on a node other than this one, was lost{whys_said}"
                   f"{_placed_again(asked, len(replicas))} and no other provider took its place: nothing is paid or "
                   "stored")
        hint = (f"{rerun_hint(job)} once another provider is offered (`xsc market book --kind compute` lists them), "
                "or ask it without --replicas to let this node run it")
    stingy = [provider for provider, r in replicas if _wants_prepayment(r)]
    if stingy:  # as a single job's refusal (paid.relayed): each provider's id whole, in the command that pays it
        commands = "; ".join(f"xsc ledger prepay {provider} CREDITS" for provider in stingy)
        hint = (f"ask its user for credit, or if it owes you: {commands}; then {hint}" if len(stingy) == 1 else
                f"ask their users for credit, or if they owe you: {commands}; then {hint}")
    return (ReplicasLost if missing > 0 and len(agreed) + missing >= agree else ReplicasDisagree), message, hint


def _wants_prepayment(err: Any) -> bool:
    """Whether a replica was lost to its provider's refusal for want of prepayment (as it came, or as a replica's
    record wrote it down)."""
    return isinstance(err, XscError) and (err.details.get("peer_code") == "prepayment-required"
                                          or err.details.get("prepayment") is True)


def _placed_again(asked: int, replicas: int) -> str:
    """What a job's figures say of its replicas placed again in the place of those lost, which are not replicas the
    user asked for: " (1 placed again)", or nothing."""
    return f" ({replicas - asked} placed again)" if replicas > asked else ""


def _replicas(replicas: list[tuple[str, Any]], agreed: list[Returned]) -> list[dict[str, Any]]:
    """Each replica of a job: where it ran, whether it was paid (it agreed), or why it failed."""
    out = []
    for provider, r in replicas:
        if isinstance(r, BaseException):
            why = lost_why(r)  # a forged answer is struck, as one unlike the others: not lost
            out.append({"provider": provider, "paid": False, "error": str(r)[:300],
                        **({"lost": why} if why != "forged" else {})})
        else:
            out.append({"provider": provider, "paid": r in agreed, "provenance": r.run["provenance"],
                        "charge": r.run["charge"] if r in agreed else 0, "fuel_consumed": r.run["fuel_consumed"]})
    return out


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


def node_failure(err: BaseException) -> XscError:
    """An error of the node's own (an OSError of its disk, a bug: not an XscError) as what its caller is told: the
    failure named (the node's log has the rest), DiskFull when the disk is full."""
    message = f"the node failed: {type(err).__name__}: {' '.join(str(err).split())}"[:400]  # one line, as watches
    if db.disk_full(err):
        return DiskFull(message, hint="free disk space on the node, then run it again")
    return NodeFailed(message, hint="the node's log says more; run it again")


__all__ = ["RESUME_FOR", "RemoteAnswers", "node_failure"]
