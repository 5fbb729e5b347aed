"""The answers of jobs run on a provider (sent_jobs.py), from the checked answer on: its outputs stored here as
if it had run here, its provider paid, and every step written down first, so that a start finishes a job a stop
cut short (`recover_one`) rather than run it and pay it again (docs/compute.md has each step):

    sent       the provider took the job (`sending`)        its provider asked again for its run's answer
    fetching   its answer holds to the job (`believed`)     its outputs fetched again
    storing    its answer checked, its outputs kept here    what is left of them stored
    done       `paid_on`: each tab and what it owes         each tab still pending paid that, not more
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import IntegrityError, OverCap, Trap, XscError
from ..tasks import in_pool
from .job_records import KEPT_STREAMS, UNFINISHED, JobOutputs, JobRecords, answer as answered_with, ended
from .job_sandbox import file_sha256, remove_tree
from .jobspec import parse_sent_job
from .sent_jobs import Returned, SentJobs

log = logging.getLogger(__name__)

RESUME_FOR = 1800.0  # seconds a start keeps trying to store a checked remote answer (its tab lives TAB_TTL)


class RemoteAnswers:
    def __init__(self, *, records: JobRecords, outputs: JobOutputs, sent: SentJobs, work_dir: Path) -> None:
        self.records, self.outputs, self.sent, self.work_dir = records, outputs, sent, work_dir

    def tabs_to_hold(self, job: dict[str, Any]) -> list[str]:
        """The authorizations of the tabs a stop left `job` owing or waiting on: kept from the payment retry until
        the start has settled each as the job's record says (the retry alone would pay up to their caps)."""
        cut = [job[k] for k in ("sent", "fetching") if job.get("state") in UNFINISHED and k in job]
        return [t["authorization"] for t in job.get("answered", {}).get("pays", []) + job.get("paid_on", []) + cut]

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
            answer = fetching["answer"]
            if len(answer.get("stdout", "")) + len(answer.get("stderr", "")) > KEPT_STREAMS:
                answer = {**answer, "stdout": "", "stderr": "", "run": {**answer["run"], "stdout": "", "stderr": ""}}
            job.pop("sent", None)
            job["fetching"] = {**fetching, "answer": answer}
            self.records.save(job["id"], job)
        return believed

    async def returned(self, job: dict[str, Any], returned: Returned, paying: list[Returned] | None = None, *,
                       owed: dict[str, Any] | None = None) -> dict[str, Any]:
        """A job run on a provider, checked (sent_jobs.py): its outputs stored here, as if it had run here, then
        its provider paid (`paying`: each replica that agreed with it; `owed`: the tab a restart left, and its
        charge).  Before a byte is stored, the checked answer and what it owes are written down and its outputs
        kept where a start does not remove them: a kill -9 from then on is resumed (`resumed`), never run and
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
        job.pop("sent", None)
        job.pop("fetching", None)
        kept = self.kept(job["id"])
        await in_pool(None, _keep, [path for _, path, _ in returned.files], kept)
        run = {**returned.run, "charge": sum(r.run["charge"] for r in paying)}
        long = len(run.get("stdout", "")) + len(run.get("stderr", "")) > KEPT_STREAMS
        job.update(state="storing", outputs=[], answered={
            "provider": returned.provider, "run": {**run, "stdout": "", "stderr": ""} if long else run,
            "signed": returned.signed, "outputs": answer["outputs"], "refusal": answer.get("refusal"),
            "trap": answer.get("trap"), "pays": pays})
        self.records.save(job["id"], job)
        try:
            done = await self._store_answered(job, run)
        except XscError as err:  # this node could not store what was answered: the provider is owed all the same
            if owed is not None:
                raise  # at a start: stored later (`recover_one`)
            pay()
            await in_pool(None, remove_tree, kept)
            job.pop("answered", None)
            job.update(state="failed", outputs=[], error=f"its outputs could not be stored: {err.message}")
            self.records.save(job["id"], job)
            raise
        pay()
        return answered_with(job, *done)

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

    def cut_short(self, job: dict[str, Any]) -> bool:
        """Whether a stop cut the job short while its provider ran it or its outputs were fetched."""
        return job.get("state") in UNFINISHED and ("sent" in job or "fetching" in job) and not self.resumable(job)

    async def finished(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job `cut_short`, finished from its provider's answer: asked again, or its outputs fetched again."""
        return await (self.asked_again(job) if "sent" in job else self.refetched(job))

    async def resumed(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job whose checked answer a stop left storing: what is left of its outputs stored from where
        they are kept (each first held to the hash its provider signed), then its providers paid what the record
        says they are owed; its answer, as `returned`'s.  Not run again, so not paid again."""
        answered, kept = job["answered"], self.kept(job["id"])
        for i, output in enumerate(answered["outputs"]):
            if await in_pool(None, file_sha256, kept / str(i)) != output["sha256"]:
                raise IntegrityError(f"the job {job['id']}'s kept output {output['name']!r} is not the one "
                                     "its provider signed", hint="run the job again")
        done = await self._store_answered(job, answered["run"])
        for pay in answered["pays"]:
            self.sent.owed_after_restart(pay["provider"], pay["authorization"], pay["charge"])
        return answered_with(job, *done)

    async def asked_again(self, job: dict[str, Any]) -> dict[str, Any]:
        """A remote job a stop cut short while its provider ran it: the provider asked again for the answer of the
        run it was sent (it keeps it hosted_jobs.IDLE after the run), which is held to the job, its tab and its
        price as any answer, then fetched, stored and paid as `refetched` does: not run again, paid once.  A
        provider gone, or without that answer, is paid nothing for it (the tab's authorization is dropped)."""
        sent = job["sent"]
        try:
            fetching = await self.sent.answer_again(sent, parse_sent_job(job["spec"]), job["id"], job["inputs"])
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
                files = await self.sent.refetched(fetching["provider"], fetching["job"], answer["outputs"], into)
            except XscError:
                await self.sent.unanswered_after_restart(fetching["authorization"])
                job.pop("fetching")
                raise
            returned = Returned(fetching["provider"], answer["run"], answer["provenance"], files,
                                [o["sha256"] for o in answer["outputs"]], answer)
            return await self.returned(job, returned, owed={"provider": fetching["provider"],
                                                            "authorization": fetching["authorization"],
                                                            "charge": answer["run"]["charge"]})
        finally:
            await in_pool(None, remove_tree, into)

    async def interrupted(self, job: dict[str, Any]) -> None:
        """A job a stop cut short, not resumed: marked interrupted, the outputs it had stored removed, and its
        provider paid if its answer was checked (it is owed it, stored or not), not if its answer or its outputs
        never came."""
        await self.outputs.remove([o["capability"] for o in job.get("outputs", [])])
        for pay in job.get("answered", {}).get("pays", []):
            self.sent.owed_after_restart(pay["provider"], pay["authorization"], pay["charge"])
        for step in ("sent", "fetching"):  # its answer, or its outputs, never came here
            if step in job:
                await self.sent.unanswered_after_restart(job[step]["authorization"])
        for k in ("answered", "sent", "fetching"):
            job.pop(k, None)
        job.update(state="interrupted", outputs=[], error="the node stopped while the job ran")
        self.records.save(job["id"], job)
        await in_pool(None, remove_tree, self.kept(job["id"]))

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


__all__ = ["RESUME_FOR", "RemoteAnswers"]
