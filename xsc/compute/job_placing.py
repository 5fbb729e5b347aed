"""Where a job runs, as the market says: on this node, on a provider it is sent to, or (replicated) on several at
once, each provider's failure before its result came back leaving the job to the next (jobs.py runs it here;
sent_jobs.py sends it; remote_answers.py writes each step down)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from ..errors import ForgedResult, PeerRefused, PeerUnreachable, TooFewProviders, XscError
from ..identity import Identity
from ..storage.strangers import ProviderTerms
from ..units import counted
from . import provenance, replica_cancels
from .hosted_jobs import PER_SENDER
from .job_answers import rerun_hint, run_id
from .job_cancels import JobCancels, cancelled_before
from .job_inputs import Staged
from .jobspec import JobSpec
from .paid import relayed
from .remote_answers import RemoteAnswers
from .sent_jobs import Returned
from .service import ComputeService, InvokeCall

log = logging.getLogger(__name__)

MAX_FAILOVERS = 3  # providers left out, one after the other, when they fail a job before it can run
ATTEMPTS_KEPT = 8  # providers' failures of one run kept in its record, each whole (the rest counted: `attempts_more`)


class JobPlacing:
    """A job placed where the market offers.  A provider already running as many of this node's jobs as it takes from
    one sender (hosted_jobs.PER_SENDER) is left out while it does, so many jobs at once spread over the providers the
    market offers, and wait when all are full.  A provider that fails a job before its result came back (unreachable,
    busy, full, or outputs it did not sign) is left out and the next one is asked, MAX_FAILOVERS times at most."""

    def __init__(self, *, compute: ComputeService, dealing: Any, sent: Any, terms: ProviderTerms, node: Identity,
                 answers: RemoteAnswers, cancels: JobCancels) -> None:
        self.compute, self.dealing, self.sent, self.node, self.answers = compute, dealing, sent, node, answers
        self.cancels = cancels  # a job cancelled is sent nothing more, and placed on no other provider
        self.provider_terms = terms  # those that want prepayment are passed over a while
        self._placed_on: Counter[str] = Counter()  # provider -> this node's jobs running there now
        self._finished = asyncio.Condition()  # a job on a provider ended: a place there may be free

    async def on_provider(self, spec: JobSpec, call: InvokeCall, limits, bid: int, staged: Staged,
                           job: dict[str, Any], *, here: bool) -> Returned | Any:
        """The job run on the provider the market offers and checked (not paid yet); or, if the market offers this
        node and `here`, its assignment (the caller runs it).  See the class's docstring for how providers
        are left out."""
        jid = job["id"]
        failed: set[str] = set() if here else {self.node.id}
        over = self.provider_terms.passing_over()
        last: XscError | None = None
        while True:
            full = frozenset(p for p, n in self._placed_on.items() if n >= PER_SENDER)
            try:
                assignment = await self.dealing.compute_deal(limits.fuel, bid,
                                                             frozenset(failed) | over.left_out() | full)
            except XscError:
                if over.exhausted():
                    continue
                if full - failed:  # every other provider is busy with this node's jobs: wait for one to finish
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0), self._finished:
                            await self._finished.wait()
                    continue
                if last is None:
                    raise
                raise last from None  # no other provider: what the last one did is the job's failure
            if assignment.provider == self.node.id:
                return assignment
            if self._placed_on[assignment.provider] >= PER_SENDER or await _passes(over, self.dealing, assignment):
                # (others filled it while this one was being placed, or it wanted prepayment lately): left out now
                self.dealing.ended(assignment)
                continue
            deal = {"need": assignment.need_id, "provider": assignment.provider, "price": assignment.price,
                    "allocated": assignment.allocated, "job": jid}
            self._placed_on[assignment.provider] += 1
            try:
                returned = await self.sent.unsettled(assignment.provider, assignment.price, spec, call, staged, jid,
                                                     deal, self.answers.believed(job),
                                                     self.cancels.sending(jid, self.answers.sending(job)),
                                                     lambda r: self.answers.answer_kept(job, r),
                                                     given_up=self.cancels.given_up(jid))
            except (ForgedResult, PeerRefused, PeerUnreachable) as err:
                if self.cancels.cancelled(jid):  # dropped unrun, never answered or its record refused: nothing paid
                    raise cancelled_before("before it ran" if isinstance(err, PeerRefused) else "while it ran, and " + (
                        f"its provider's record was refused, its provider struck ({err.message})"
                        if isinstance(err, ForgedResult) else "its provider did not answer")) from None
                self.provider_terms.wanted_prepayment(assignment.provider, err)
                elsewhere = _next_provider(err)
                if isinstance(err, PeerRefused):
                    err = relayed(assignment.provider, err, self.compute.budget(call, assignment.price), "job")
                _attempted(job, assignment.provider, err)
                if not elsewhere or len(failed) >= MAX_FAILOVERS + (not here):
                    raise err from None
                log.warning("job %s: provider %s failed it (%s): trying another", jid,
                            assignment.provider, err.message)
                job.pop("sent", None)  # its tab is settled (not paid): nothing of it is left for a start to finish
                job.pop("fetching", None)
                failed.add(assignment.provider)
                last = err
                continue
            finally:
                self.dealing.ended(assignment)  # what the job held of the allocation (`invoked` spends the fuel)
                self._placed_on[assignment.provider] -= 1
                async with self._finished:
                    self._finished.notify_all()
            self.dealing.invoked(assignment, returned.run["fuel_consumed"])
            return returned

    async def replicated(self, spec: JobSpec, call: InvokeCall, limits, bid: int, staged: Staged,
                          job: dict[str, Any]) -> dict[str, Any]:
        """Run a deterministic job on `spec.replicas` other nodes at once, each on its own tab.  The replicas whose
        outputs, fuel, exit and engine agree (sent_jobs.Returned.agreement) are paid if there are `spec.agree` of
        them; the others are refused and struck.  A replica lost (its provider gone, busy, refusing, or answering
        what it did not sign) is placed again on another provider the market offers, one that held no replica of
        the job, MAX_FAILOVERS times in all, unless even then too few could agree.  Each runs on its own tab, paid
        only if it agrees: no more replicas answer than were asked, so no more is paid than with none lost.
        With no such agreement nothing is paid or stored (RemoteAnswers.judged).  Each replica's step is written
        down before it is taken: a start finishes the job from its replicas' kept answers
        (RemoteRecovery.replicas_again)."""
        over = self.provider_terms.passing_over()  # as one job's provider is chosen (`on_provider`)
        chosen = await providers(self.dealing, self.node.id, limits, bid, spec.replicas, frozenset(), over)
        if len(chosen) < spec.replicas:
            for a in chosen:
                self.dealing.ended(a)
            raise _too_few(len(chosen), spec, job)
        job["agree"] = spec.agree  # a job's spec names what runs, not how: a start compares its replicas by this
        runs: list[tuple[str, Returned | BaseException]] = []
        placing, tries = chosen, 0
        while placing:
            answers = await asyncio.gather(*(self._replica(spec, call, staged, job, a) for a in placing),
                                           return_exceptions=True)
            for a, r in zip(placing, answers):
                if isinstance(r, BaseException) and not isinstance(r, Exception):
                    raise r  # cancelled (the node stops): the next start goes on from each replica's step
                if not isinstance(r, BaseException):
                    self.dealing.invoked(a, r.run["fuel_consumed"])
                runs.append((a.provider, r))
            lost = sum(1 for r in answers if isinstance(r, XscError) and _next_provider(r))
            most = max(Counter(r.agreement for _, r in runs if isinstance(r, Returned)).values(), default=0)
            again = 0 if self.cancels.cancelled(job["id"]) else min(lost, MAX_FAILOVERS - tries)
            placing = []
            if again and spec.agree <= most + again:  # the job gets the replicas asked, unless none could help
                placing = await providers(self.dealing, self.node.id, limits, bid, again,
                                            frozenset(p for p, _ in runs), over)
                tries += len(placing)
                for a in placing:
                    log.warning("job %s: a replica was lost: placed again on provider %s", job["id"], a.provider)
        if self.cancels.cancelled(job["id"]):  # stopped at ticks of their own: each paid its own, none judged
            return await replica_cancels.settled(self.answers, job, runs)
        return await self.answers.judged(job, spec.agree, runs)


    async def _replica(self, spec: JobSpec, call: InvokeCall, staged: Staged, job: dict[str, Any], a: Any
                       ) -> Returned:
        """One replica of a replicated job run and checked (not paid yet), each step written down in the job's
        record before it is taken (remote_answers.py), its outputs kept where a start finds them before its
        provider is told to forget it."""
        deal = {"need": a.need_id, "provider": a.provider, "price": a.price, "allocated": a.allocated,
                "job": run_id(job)}
        try:
            returned = await self.sent.unsettled(a.provider, a.price, spec, call, staged, run_id(job), deal,
                                                 self.answers.replica_believed(job),
                                                 self.cancels.sending(job["id"], self.answers.replica_sending(job)),
                                                 lambda r: self.answers.replica_checked(job, r), asked=job["id"],
                                                 given_up=self.cancels.given_up(job["id"]))
        except Exception as err:  # its tab settled by `unsettled`: not paid
            self.provider_terms.wanted_prepayment(a.provider, err)
            self.answers.replica_lost(job, a.provider, err)
            raise
        finally:
            self.dealing.ended(a)  # what the replica held of the allocation (`invoked` spends the fuel)
        return returned



async def providers(dealing: Any, me: str, limits, bid: int, n: int, tried: frozenset[str], over: Any) -> list[Any]:
    """Up to `n` assignments of a replica each, on distinct providers the market offers other than this node (`me`)
    and those `tried` (which held a replica of the job), passing over those that wanted prepayment lately."""
    chosen: list[Any] = []
    try:
        while len(chosen) < n:
            taken = tried | frozenset(a.provider for a in chosen) | {me} | over.left_out()
            try:
                a = await dealing.compute_deal(limits.fuel, bid, taken, providers=n - len(chosen))
            except XscError:
                if over.exhausted():
                    continue
                break
            if await _passes(over, dealing, a):
                dealing.ended(a)  # what it held of the allocation is free for the next one
            else:
                chosen.append(a)
    except BaseException:  # cancelled while choosing: those chosen hold nothing of the allocation
        for a in chosen:
            dealing.ended(a)
        raise
    return chosen


async def _passes(over: Any, dealing: Any, assignment: Any) -> bool:
    """Whether the work passes `assignment`'s provider over (it wants prepayment lately); cancelled while that is
    asked, the assignment holds nothing of the allocation."""
    try:
        return await over.passes(assignment.provider)
    except BaseException:
        dealing.ended(assignment)
        raise



def _too_few(offered: int, spec: JobSpec, job: dict[str, Any]) -> TooFewProviders:
    """A replicated job the market offers fewer other providers than replicas, before any of them runs."""
    later = "(`xsc market book --kind compute` lists their asks)"
    if offered >= 2:
        agree = {"agree": offered} if spec.agree > offered else {}
        fewer = rerun_hint(job, replicas=offered, **agree).replace("run it again", "run it on fewer", 1)
        hint = f"{fewer}, or again once more are offered {later}"
    elif offered:
        one = rerun_hint(job, replicas=1).replace("run it again", "run it on one provider", 1)
        hint = f"{one}, or again once more are offered {later}"
    else:
        hint = f"run it again once compute providers are offered {later}"
        if spec.replicas == 1:  # (asked of another node: this one may run it, asked without --replicas)
            hint += ", or ask it without --replicas to let this node run it"
    need = "its replica needs one" if spec.replicas == 1 else f"its {spec.replicas} replicas need one each"
    return TooFewProviders(f"the market offers {counted(offered, 'other provider')} for this job at its price, and "
                           f"{need}: none ran, nothing is paid", hint=hint,
                           offered=offered, replicas=spec.replicas)


def _attempted(job: dict[str, Any], provider: str, err: XscError) -> None:
    """A provider failed the job's run (another is asked, or none is left): kept in its record with when, as the
    failure of each provider it went to, not the last one's alone."""
    attempts = job.setdefault("attempts", [])
    if len(attempts) >= ATTEMPTS_KEPT:
        job["attempts_more"] = job.get("attempts_more", 0) + 1
        return
    attempts.append({"provider": provider, "error": err.message, **({"hint": err.hint} if err.hint else {}),
                     "at": provenance.timestamp(time.time_ns())})



def _next_provider(err: XscError) -> bool:
    """Whether a provider's failure leaves the job to another provider: it went away (a run whose result never
    came is not paid: sent_jobs.py), or stops and cut the run short, it had no room, it wants this node to prepay
    (a stranger to it), or what it answered cannot be trusted."""
    if isinstance(err, (ForgedResult, PeerUnreachable)):
        return True
    return err.details.get("peer_code") in ("compute-busy", "quota-exceeded", "storage-full", "deal-refused",
                                            "prepayment-required", "node-stopping")



__all__ = ["ATTEMPTS_KEPT", "JobPlacing", "MAX_FAILOVERS", "providers"]
