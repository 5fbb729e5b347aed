"""A replicated job cancelled by its user (job_cancels.py): its replicas settled each on its own, never judged.

Each replica was stopped by its own provider at a tick of that provider's clock, so replicas stopped so are not
compared (how far each ran, its fuel and what it printed, is not the program's to fix): each is paid what its own
signed record says it used, once, within its budget (sent_jobs.py held it to the job, the deal and that budget as
any answer).  One that answered its result before the cancel came is paid so too, nothing of it stored.  One whose
answer never came (its provider gone, or silent past job_cancels.CANCEL_GRACE) or could not be trusted (a record
another node signed, a charge over its budget: struck) was settled unpaid as a lost replica is, its tab's
authorization dropped.  The job ends `cancelled`, with no outputs and no lineage, its `replicas` saying each one's
outcome and what it was paid.  Its record, naming what each is owed (`paid_on`), is written before any is paid: a
start pays each tab still pending that, once (JobService._recover).
"""

from __future__ import annotations

from typing import Any

from ..errors import JobCancelled
from ..tasks import in_pool
from .job_answers import CANCELLED_ERROR, answer, rerun_hint, the_job
from .job_sandbox import remove_tree
from .out_bound import CANCELLED
from .replica_verdicts import replicas_said
from .sent_jobs import Returned

UNANSWERED = "its user cancelled it while it ran, and none of its providers answered: nothing is charged"


async def settled(answers: Any, job: dict[str, Any], replicas: list[tuple[str, Returned | BaseException]]
                  ) -> dict[str, Any]:
    """The cancelled job's end (`answers`: remote_answers.RemoteAnswers, its records and tabs): never an answer, but
    JobCancelled, charged what its replicas that answered used together."""
    ran = [r for _, r in replicas if isinstance(r, Returned)]
    charge = sum(r.run["charge"] for r in ran)
    job.pop("replicating", None)
    job.update(state=CANCELLED, outputs=[], replicas=[{**said, **_outcome(r)} for said, (_, r) in
                                                      zip(replicas_said(replicas, ran), replicas)],
               error_hint=rerun_hint(job))
    if ran:
        job.update(executions=job["executions"] + 1, charge=charge, charge_total=job.get("charge_total", 0) + charge,
                   error=CANCELLED_ERROR, paid_on=[{"provider": r.provider, "authorization": r.authorization,
                                                    "charge": r.run["charge"]} for r in ran])
    else:
        job.update(error=UNANSWERED)
    answers.records.save(job["id"], job)
    await in_pool(None, remove_tree, answers.replicas_kept(job["id"]))  # (a start removes them, else)
    answers.sent.pay_all(ran)
    if not ran:
        raise JobCancelled(f"{the_job(job, job['error_hint'])} was cancelled while it ran, and none of its providers "
                           "answered: nothing is charged", hint=job["error_hint"], id=job["id"], charged=0,
                           replicas=job["replicas"])
    return answer(job, {"stdout": "", "stderr": ""}, charge, None, None)  # (raises JobCancelled: its state)


def _outcome(replica: Returned | BaseException) -> dict[str, str]:
    """How a replica that answered ended: `cancelled` (stopped), `ok`, or its trap's kind."""
    if not isinstance(replica, Returned):
        return {}
    trap = replica.answer.get("trap")
    return {"outcome": (trap.get("kind") or "trap") if isinstance(trap, dict) else "ok"}


__all__ = ["UNANSWERED", "settled"]
