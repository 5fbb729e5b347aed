"""At a start (and when a job is asked for again meanwhile), the jobs run on a provider that a stop cut short,
finished from the step their record names (remote_answers.py has the steps): a provider asked again for its run's
answer, its outputs fetched again, a checked answer stored, each replica taken from its own step and the replicas
compared as the run would have; each provider paid once what its record says, none run again.  A job that cannot be
finished so is marked interrupted (RemoteAnswers.interrupted).  One whose cancel its record holds (`cancel_asked`),
its providers still running it, is cancelled again: each asked to stop and its answer waited for as long as a cancel
waits (sent_jobs.SentJobs.answer_after_cancel), the job ended as that cancel ends it (job_cancels.py)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, JobCancelled, OverCap, Trap, XscError
from ..tasks import in_pool
from . import replica_cancels
from .job_answers import UNFINISHED, answer as answered_with, not_ended, rerun_hint, run_id
from .job_sandbox import file_sha256, remove_tree
from .jobspec import parse_sent_job
from .provider_stops import unpaid
from .remote_answers import RemoteAnswers, keep, short
from .sent_jobs import Returned, silent_to_cancel

log = logging.getLogger(__name__)

RESUME_FOR = 1800.0  # seconds a start keeps trying to store a checked remote answer (its tab lives TAB_TTL)


class RemoteRecovery:
    def __init__(self, answers: RemoteAnswers, cancels: Any) -> None:
        self.answers, self.records, self.sent, self.work_dir = answers, answers.records, answers.sent, answers.work_dir
        self.cancels = cancels  # job_cancels.JobCancels: its user's cancels, and their providers asked to stop

    async def finished(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job `cut_short`, finished from its providers' answers: asked again, or its outputs fetched again."""
        if "replicating" in job:
            return await self.replicas_again(job)
        step = job["sent"] if "sent" in job else job["fetching"]
        if not self.sent.payable_after_restart(step["authorization"]):  # settled unpaid before the stop: a run
            running = "cancel_asked" in job and "sent" in job  # (its cancel given up: it may still run there)
            job.pop("sent", None)  # that cannot be paid is not counted either
            job.pop("fetching", None)
            self.records.save(job["id"], job)
            if running:  # stopped, as its user asked, rather than left to run unpaid to its timeout
                await self.cancels.stops.ask(step, self.cancels.stops.until(parse_sent_job(job["spec"])))
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
        replicas = [(step["provider"], r) for step, r in zip(steps, found)]
        if "cancel_asked" in job:  # stopped by its user at ticks of their own: each paid its own, none judged
            return await replica_cancels.settled(self.answers, job, replicas)
        return await self.answers.judged(job, job["agree"], replicas)

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
                step = {"step": "fetching", **short(await self._asked(job, step, spec))}
                job["replicating"][provider] = step
                self.records.save(job["id"], job)
            answer, kept = step["answer"], self.answers.replicas_kept(job["id"]) / provider
            if step["step"] == "fetching":
                part = self.answers.replicas_kept(job["id"]) / f"{provider}.part"
                try:
                    files = await self.sent.refetched(provider, step["job"], answer["outputs"], part)
                    await in_pool(None, keep, [path for _, path, _ in files], kept)
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
            self.answers.replica_lost(job, provider, err)
            await self.sent.unanswered_after_restart(step["authorization"])
            if "job" in step and not silent_to_cancel(err):
                await self.sent.forget(provider, step["job"])
            raise
        return _restored(step, files)

    async def resumed(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job whose checked answer a stop left storing: what is left of its outputs stored from where
        they are kept (each first held to the hash its provider signed), then its providers paid what the record
        says they are owed; its answer, as `returned`'s.  Not run again, so not paid again."""
        answered, kept = job["answered"], self.answers.kept(job["id"])
        await self.answers.refused_unpaid(job)
        for i, output in enumerate(answered["outputs"]):
            if await in_pool(None, file_sha256, kept / str(i)) != output["sha256"]:
                raise IntegrityError(f"the job's kept output {output['name']!r} is not the one its provider signed",
                                     hint=rerun_hint(job))
        done = await self.answers.store_answered(job, answered["run"])
        for pay in answered["pays"]:
            self.sent.owed_after_restart(pay["authorization"], pay["charge"])
        # The stop may have come before its providers were told to forget the run (by their own ids of it)
        for provider, hosted in answered.get("hosted", {}).items():
            await self.sent.forget(provider, hosted)
        return answered_with(job, *done)

    async def asked_again(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job a stop cut short while its provider ran it: the provider asked again for the answer of the
        run it was sent (it keeps it hosted_jobs.IDLE after the run), held to the job, its tab and its price as any
        answer, then fetched, stored and paid as `refetched` does: not run again, paid once.  A provider gone, or
        without that answer, is paid nothing (the tab's authorization is dropped).  Its cancel written, the provider
        is asked to stop first; without its answer the job ends `cancelled`, unpaid, saying why."""
        sent, cancelled = job["sent"], "cancel_asked" in job
        try:
            fetching = await self._asked(job, sent, parse_sent_job(job["spec"]))
        except XscError as err:
            await self.sent.unanswered_after_restart(sent["authorization"])
            job.pop("sent")
            told = not_ended(job, unpaid(err)) if cancelled else None
            self.records.save(job["id"], job)
            if told is not None:
                raise told from err
            raise
        self.answers.believed(job)(fetching)
        return await self.refetched(job)

    async def _asked(self, job: dict[str, Any], sent: dict[str, Any], spec) -> dict[str, Any]:
        """The answer of a run `sent` (the job's, or a replica's) asked again: first its cancel, if written."""
        if "cancel_asked" in job:
            return await self.sent.answer_after_cancel(sent, spec, run_id(job), job["inputs"], self.cancels.stops)
        return await self.sent.answer_again(sent, spec, run_id(job), job["inputs"],
                                            lambda: self.cancels.cancelled(job["id"]))

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
                done = await self.answers.returned(job, _restored(fetching, files))
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

    async def recover_one(self, job: dict[str, Any]) -> None:
        """At start, a job a stop left unfinished: finished from its provider's answer if it was run on one and
        the answer (or its outputs) can still be had, resumed if its checked answer was storing, else marked
        interrupted."""
        if self.answers.cut_short(job):
            try:
                async with self.records.alone(job["id"]):
                    await self.finished(job)
            except (Trap, OverCap, JobCancelled):
                pass  # finished: the job's answer is its trap, its refusal or its cancel
            except XscError as err:
                log.warning("job %s: its answer or outputs could not be had or stored again (%s)", job["id"], err)
            job = self.records.load(job["id"]) or job
            if job.get("state") not in UNFINISHED:
                return
        if self.answers.resumable(job):
            try:
                await self._resume_in_time(job)
                return
            except XscError as err:
                log.error("job %s: its checked answer could not be stored (%s): marked interrupted", job["id"], err)
                job = self.records.load(job["id"]) or job
        await self.answers.interrupted(job)

    async def _resume_in_time(self, job: dict[str, Any]) -> None:
        """`resumed`, tried again while the node's storage is not ready to store (its market still filling after
        the start), until RESUME_FOR seconds have passed: its tab must be closed before its authorization expires."""
        delay, deadline = 1.0, time.monotonic() + RESUME_FOR
        while True:
            async with self.records.alone(job["id"]):
                current = self.records.load(job["id"])
                if current is None or not self.answers.resumable(current):
                    return  # a run of the same job resumed it meanwhile
                try:
                    await self.resumed(current)
                    return
                except (Trap, OverCap, JobCancelled):
                    return  # resumed: the job's answer is its trap, its refusal or its cancel
                except IntegrityError:
                    raise
                except XscError as err:
                    if time.monotonic() + delay > deadline:
                        raise
                    log.warning("job %s: storing its checked answer failed (%s): trying again", job["id"], err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)


def _restored(fetching: dict[str, Any], files: list) -> Returned:
    """A run a restart finishes from its believed answer (`fetching`) and its outputs (`files`): its tab the one
    a restart left pending, paid what it answered (sent_jobs.SentJobs.pay)."""
    answer = fetching["answer"]
    return Returned(fetching["provider"], answer["run"], answer["provenance"], files,
                    [o["sha256"] for o in answer["outputs"]], answer, authorization=fetching["authorization"],
                    streams=fetching.get("streams", ""))


__all__ = ["RESUME_FOR", "RemoteRecovery"]
