"""What a job's run leaves in its record and answers with: the record as the run ended it (`ended`), the answer or
the error its caller is told (`answer`, `unstored_answer`, `node_failure`), how an error names the job and the command
that runs it again.  No I/O: jobs.py and remote_answers.py write what these shape."""

from __future__ import annotations

from typing import Any

from .. import db
from ..errors import DiskFull, JobCancelled, NodeFailed, OverCap, PeerUnavailable, PeerUnreachable, Trap, XscError
from ..units import format_credits
from .job_sandbox import MAX_OUTPUTS, UNPRINTABLE
from .out_bound import BEFORE_IT_RAN, CANCELLED, MAX_DEPTH, MAX_ENTRIES, UNREADABLE, UNREADABLE_HINT
from .trap_limits import fields

KEPT_STREAMS = 1 << 20  # a deterministic job's stdout and stderr kept with its record for replays, at most
UNFINISHED = ("running", "storing")  # the states a job's record is in while it runs, as a stop may leave it
REPLACING = ("done", "failed")  # the states of a run that replaces the outputs of the run before: it ran
CANCELLED_ERROR = "its user cancelled it while it ran: nothing of its outputs is stored"


def replacing(previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The outputs a job's next run replaces: those of its run before, and those that run had not replaced yet."""
    if previous is None:
        return []
    return [*previous.get("replacing", []), *previous.get("outputs", [])]


def ended(job: dict[str, Any], run: dict[str, Any], stored: list[dict[str, Any]], refusal: str | None,
          trap: dict[str, Any] | None, **where: Any) -> dict[str, str]:
    """The job's record as its run left it (not written yet: it is written once, in the write that ends the run, so
    its `charge_total` counts this run once); its stdout and stderr."""
    failed = refusal or (trap["message"] if trap else None)
    job.update(state="failed" if failed else "done", executions=job["executions"] + 1, charge=run["charge"],
               charge_total=job.get("charge_total", 0) + run["charge"],
               provenance=run["provenance"], outputs=stored, exit_code=run.get("exit_code"),
               fuel_consumed=run["fuel_consumed"], cost=run["cost"], **where)
    if failed:
        job["error"] = failed
        hint = _refusal_hint(refusal, trap) if refusal else (trap or {}).get("hint") or rerun_hint(job)
        if hint:  # the command that fixes it, shown with the error as any refusal's
            job["error_hint"] = hint
    if trap and trap.get("kind") == CANCELLED:  # its user cancelled it (job_cancels.py): charged what it used
        job.update(state=CANCELLED, error=CANCELLED_ERROR, error_hint=rerun_hint(job))
    streams = {"stdout": run.get("stdout", ""), "stderr": run.get("stderr", "")}
    if job["spec"]["deterministic"]:  # answered again by a replay (a longer stream: a replay runs it again)
        job.update(streams)
        if len(streams["stdout"]) + len(streams["stderr"]) > KEPT_STREAMS:
            job.update(stdout="", stderr="", replayable=False)
    return streams


def answer(job: dict[str, Any], streams: dict[str, str], charge: int, refusal: str | None,
           trap: dict[str, Any] | None) -> dict[str, Any]:
    """What a run of the job answers: its record and streams, or its refusal (OverCap) or trap (Trap)."""
    answered = {**job, **streams, "replayed": False, "charged": charge, **fields(trap)}  # (the limit it names)
    answered.pop("signed", None)
    if job["state"] == CANCELLED:
        raise JobCancelled(f"{the_job(job, job['error_hint'])} was cancelled while it ran: charged "
                           f"{format_credits(charge)} credits for what it used, nothing of its outputs stored",
                           hint=job["error_hint"], **answered)
    if refusal is not None:
        hint = _refusal_hint(refusal, trap)
        raise OverCap(f"{the_job(job, hint)} ran, but {refusal}: nothing of its outputs is stored", hint=hint,
                      **answered)
    if trap is not None:
        raise Trap(f"{the_job(job, trap.get('hint'))} failed: {trap['message']}", kind=trap.get("kind"),
                   hint=trap.get("hint"), **answered)
    return answered


def unstored_answer(job: dict[str, Any], streams: dict[str, str], charge: int, err: XscError) -> XscError:
    """What a run of the job answers when its own node could not store its outputs (no room on the market, too
    little credit for the puts): the put's error, of its kind (its status, its code), naming the job, with what its
    record says to do (the put's fix, then the job run again) and the run's answer as its details."""
    answered = {**err.details, **job, **streams, "replayed": False, "charged": charge}
    answered.pop("signed", None)
    failed = type(err).__new__(type(err))
    XscError.__init__(failed, f"{the_job(job, job.get('error_hint'))} ran, but {job['error']}",
                      hint=job.get("error_hint"), **answered)
    return failed


def the_job(job: dict[str, Any], hint: str | None) -> str:
    """How a job's error names it: by its id only if its hint's command does not (an id of 64 hex digits twice in a
    line of the CLI is three hundred characters saying one thing)."""
    return "the job" if hint and job["id"] in hint else f"the job {job['id']}"


def rerun_hint(job: dict[str, Any], **guarantee: int) -> str:
    """The command that runs a job a stop cut short (or a failure with no fix of its own) again; `guarantee`: with
    other `replicas` or `agree`, as `xsc compute rerun` and `xsc compute run` both take them."""
    again = job.get("again") or {}
    if again.get("stdin") == "-":  # its stdin came with its request and was not kept
        asked = {**job.get("guarantee", {}), **guarantee}
        if "agree" not in guarantee and "replicas" in guarantee:
            asked.pop("agree", None)  # as `rerun` takes other replicas alone: agreeing by their majority
        if "run" in job and asked.get("replicas") == 1 and "replicas" not in guarantee:
            asked = {"replicas": 1}  # asked of one other node: never run on the user's own
        elif asked.get("replicas", 1) == 1:
            asked = {}
        flags = " --deterministic" * bool(again.get("deterministic")) \
            + "".join(f" --{name} {asked[name]}" for name in ("replicas", "agree") if name in asked)
        return f"run it again with its stdin: ... | xsc compute run {job.get('module')} --stdin -{flags}"
    return f"run it again with: xsc compute rerun {job['id']}" + "".join(f" --{k} {v}" for k, v in guarantee.items())


def run_id(job: dict[str, Any]) -> str:
    """The id its providers know a job's runs by: its own, unless it was asked with a guarantee (jobspec.asked_id)."""
    return job.get("run", job["id"])


def not_ended(job: dict[str, Any], err: XscError) -> XscError | None:
    """The record of a job whose run never ended, updated from `err` (what placing or running it raised), and what its
    user is told instead of `err` (None: `err` itself, a refusal before it ran: the node busy, too little credit)."""
    jid, hint = job["id"], rerun_hint(job)
    if isinstance(err, JobCancelled):  # before it ran (a compile made for it is paid), or its provider never answered
        why = err.details.get("why")
        charged = "nothing is charged" + " for its run" * (why == BEFORE_IT_RAN)
        job.update(state=CANCELLED, error=f"its user cancelled it {why}: {charged}", error_hint=hint)
        return JobCancelled(f"{the_job(job, hint)} was cancelled {why}: {charged}", hint=hint, id=jid, charged=0)
    if isinstance(err, PeerUnreachable):
        # its provider went away (stopped, the network cut) and no other took it: cut short, as by a stop
        job.update(state="interrupted", error=f"its provider could not be reached: {err.message}", error_hint=hint)
        return PeerUnreachable(f"{the_job(job, hint)} was cut short: {err.message}", hint=hint,
                               **{**err.details, "id": jid})
    if err.details.get("peer_code") == "node-stopping":
        # its provider stopped and no other took it: the provider's words are its own ("this node stopped ..."), not
        # its user's.  A run it cut short (part of the work done, none of it charged) is interrupted, as by this
        # node's stop; one it refused to begin is refused.
        if err.details.get("peer_cut_short"):
            job.update(state="interrupted", error="its provider stopped while it ran, and no other provider took it: "
                       "nothing is paid", error_hint=hint)
            return PeerUnavailable(f"{the_job(job, hint)} was cut short: {job['error']}", hint=hint,
                                   **{**err.details, "id": jid})
        job.update(state="refused", error="its provider stopped before its run began, and no other provider took it: "
                   "nothing is paid", error_hint=hint)
        return PeerUnavailable(f"{the_job(job, hint)} did not run: {job['error']}", hint=hint,
                               **{**err.details, "id": jid})
    job.update(state="refused", error=err.message, **({"error_hint": err.hint} if err.hint else {}))
    return None


def node_failure(err: BaseException) -> XscError:
    """An error of the node's own (an OSError of its disk, a bug: not an XscError) as what its caller is told: the
    failure named on one line (the node's log has the rest), DiskFull when the disk is full.  A watch's datum says
    its failure in these words too."""
    message = f"the node failed: {type(err).__name__}: {' '.join(str(err).split())}"[:400]
    if db.disk_full(err):
        return DiskFull(message, hint="free disk space on the node, then run it again")
    return NodeFailed(message, hint="the node's log says more; run it again")


def _refusal_hint(refusal: str, trap: dict[str, Any] | None) -> str:
    if refusal.startswith(UNPRINTABLE):
        return "name the files it leaves in /out with printable characters"
    if refusal.startswith("storing its"):  # the fuel its outputs' bytes cost: its trap's hint names the most to ask
        return f"{(trap or {}).get('hint') or 'ask for more with --fuel'}, or write less"  # (job_sandbox.run_program)
    if refusal.startswith(UNREADABLE):  # out_bound.py: a path under /out the node cannot read
        return UNREADABLE_HINT
    if refusal.startswith(("it made", "it left more than")):  # out_bound.py's bounds on /out's tree, MAX_OUTPUTS
        return (f"make at most {MAX_ENTRIES:,} files and directories in /out, {MAX_DEPTH} deep, and leave at most "
                f"{MAX_OUTPUTS} (many files in one archive are one)")
    if refusal.startswith("its stderr"):  # job_sandbox: stderr past its cap, which --bytes-out does not raise
        return "ask for more with --stderr-cap, or write less"
    return "ask for more with --bytes-out (or --stdout-cap), or write less"


__all__ = ["CANCELLED_ERROR", "KEPT_STREAMS", "REPLACING", "UNFINISHED", "answer", "ended", "node_failure", "not_ended",
           "replacing", "rerun_hint", "run_id", "the_job", "unstored_answer"]
