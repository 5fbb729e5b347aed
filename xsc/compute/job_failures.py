"""What a job's caller is told when this node fails it once its run ended in memory (remote_answers.node_failed): the
job as its record on disk says it, never more than that record holds."""

from __future__ import annotations

from typing import Any

from ..errors import XscError
from .job_answers import UNFINISHED, rerun_hint, the_job


def told_as_recorded(job: dict[str, Any], recorded: dict[str, Any] | None, failure: XscError,
                     resumes: bool = False) -> XscError:
    """`failure` (the node's own: NodeFailed, DiskFull) as the caller of `job`, whose run ended in memory, is told it.
    Its record written ended (done, failed): the job is that, then the node failed; nothing of it is to be run again
    (the start pays its providers what the record says).  The write that ended it failed (its record still says
    `running` or `storing`): the job is not ended on disk, and the node's next start settles it as any job a stop cut
    short at that step (interrupted, its providers whose answers were checked paid what they answered), so it is run
    again as one; or, its checked answer still kept (`resumes`), stored and ended done.  Its record unreadable: said
    so."""
    jid = job["id"]
    if recorded is None:
        hint = f"see it with: xsc compute job {jid} once the node is started again"
        return type(failure)(f"the job {jid} ran, but then {failure.message}, and its record cannot be read: the "
                             "node's next start settles it", hint=hint, id=jid)
    state = recorded.get("state")
    if state not in UNFINISHED:
        hint = f"see it with: xsc compute job {jid}"
        return type(failure)(f"{the_job(job, hint)} is {state}, but then {failure.message}", hint=hint, id=jid,
                             state=state)
    hint = f"see it with: xsc compute job {jid} once the node is started again" if resumes else rerun_hint(job)
    then = "stores its outputs and ends it" if resumes else "marks it interrupted"
    return type(failure)(f"{the_job(job, hint)} ran, but the write that ends it failed ({failure.message}): its "
                         f"record says {state} until the node's next start {then}", hint=hint, id=jid, state=state)


__all__ = ["told_as_recorded"]
