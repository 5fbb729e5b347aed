"""A replicated job's replicas judged in words and figures: why a replica was lost, why too few agreed (and which
error that is, with the command that runs the job again), and each replica as the job's record shows it.  No I/O:
remote_answers.py writes and raises what these say."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..errors import ForgedResult, PeerRefused, PeerUnreachable, ReplicasDisagree, ReplicasLost, XscError
from .job_answers import rerun_hint
from .sent_jobs import Returned


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


def no_agreement(job: dict[str, Any], agree: int, replicas: list[tuple[str, Any]], agreed: list[Returned]
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
    stingy = [provider for provider, r in replicas if wants_prepayment(r)]
    if stingy:  # as a single job's refusal (paid.relayed): each provider's id whole, in the command that pays it
        commands = "; ".join(f"xsc ledger prepay {provider} CREDITS" for provider in stingy)
        hint = (f"ask its user for credit, or if it owes you: {commands}; then {hint}" if len(stingy) == 1 else
                f"ask their users for credit, or if they owe you: {commands}; then {hint}")
    return (ReplicasLost if missing > 0 and len(agreed) + missing >= agree else ReplicasDisagree), message, hint


def wants_prepayment(err: Any) -> bool:
    """Whether a replica was lost to its provider's refusal for want of prepayment (as it came, or as a replica's
    record wrote it down)."""
    return isinstance(err, XscError) and (err.details.get("peer_code") == "prepayment-required"
                                          or err.details.get("prepayment") is True)


def _placed_again(asked: int, replicas: int) -> str:
    """What a job's figures say of its replicas placed again in the place of those lost, which are not replicas the
    user asked for: " (1 placed again)", or nothing."""
    return f" ({replicas - asked} placed again)" if replicas > asked else ""


def replicas_said(replicas: list[tuple[str, Any]], agreed: list[Returned]) -> list[dict[str, Any]]:
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



__all__ = ["lost_why", "no_agreement", "replicas_said", "wants_prepayment"]
