"""A job's cancel as its providers hear it (job_cancels.py cancels it): each provider running it asked to stop, what
it said, and a cancel it did not hear kept owed until it does.

A provider is asked over the peer channel (net/jobs.cancel) and answers once its run has ended: RAN (stopped, or
ended by itself before), UNRUN (dropped before its run began: nothing of it to pay), REFUSED (a job it does not
hold, or not now; a 5xx is none of these, but the provider stopping or failing: not heard).  One that does not answer
within job_cancels.CANCEL_GRACE (frozen, cut off, or gone) has its run's answer given up unpaid, but may still be
running it: a run nobody will pay for.  So each cancel sent is written down (`c/js`, by the job's tab) before it is
sent and forgotten once the provider has answered it; one still owed is sent again every RETRY seconds, across
restarts, until its provider answers or the run must have ended by itself (its timeout, and a minute, after the
cancel: UNTIL)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from ..errors import ForgedResult, JobCancelled, PeerError, PeerNotFound, PeerRefused, PeerUnreachable
from ..net import jobs as wire
from ..tasks import at_most, in_pool, woken_loop
from . import job_cancels
from .service import InvokeCall

log = logging.getLogger(__name__)

RAN, UNRUN, REFUSED = "ran", "unrun", "refused"  # what a provider asked to stop a job said (ask_to_stop)
RETRY = 10.0  # seconds between the sends of the cancels still owed
UNTIL = 60.0  # seconds past a job's timeout, from its cancel, that its run may still go on (its request's margin)
IDLE = 86400.0  # seconds the loop sleeps while no cancel is owed (one owed wakes it)
AT_ONCE = 8  # cancels owed sent at once


async def ask_to_stop(paid: Any, provider: str, hosted: str) -> str | None:
    """Ask `provider` to stop the job it runs for this node (`hosted`: its id there), or to drop it if its run was not
    asked for yet; answered once its run has ended, job_cancels.CANCEL_GRACE at most.  What it said (RAN, UNRUN or
    REFUSED: its answer, if any, is asked for all the same), or None: unreached (logged), its run's answer given up
    unpaid.  (`paid`: xsc.compute.paid.PaidCompute, whose peers and client reach it.)"""
    try:
        ran = await wire.cancel(paid.client, paid.peers.peer(provider).url, provider, hosted, job_cancels.CANCEL_GRACE)
    except (PeerError, PeerNotFound) as err:
        log.warning("the cancel of job %s on provider %s was not answered: %s", hosted, provider, err.message)
        # A 5xx is no word on the job (the provider stopping, or failing): the cancel is owed still.
        heard = isinstance(err, PeerRefused) and (err.details.get("peer_status") or 0) < 500
        return REFUSED if heard else None
    return RAN if ran else UNRUN


def unpaid(err: BaseException) -> JobCancelled:
    """A cancelled run's answer that could not be had once its provider was asked to stop it (`err`: why), said as what
    happened: dropped unrun, its record refused, its provider silent, or its answer gone; nothing of it is paid."""
    if isinstance(err, JobCancelled):
        return err
    if isinstance(err, ForgedResult):
        why = f"its provider's record was refused, its provider struck ({err.message})"
    elif isinstance(err, PeerRefused) and err.details.get("peer_status") == 404:
        why = "its provider no longer holds it (it restarted, or dropped it)"
    elif isinstance(err, (PeerUnreachable, PeerNotFound)):
        why = "its provider did not answer"
    else:
        why = f"its provider's answer could not be had ({err})"
    return job_cancels.cancelled_before(f"while it ran, and {why}")


class ProviderStops:
    """The cancels sent to providers, each kept owed (by its job's tab) until its provider has answered it."""

    def __init__(self, paid: Any, store: Any) -> None:
        self.paid = paid  # xsc.compute.paid.PaidCompute: its peers and client reach a job's provider
        self.store = store  # xsc.compute.store.ComputeStore: where the cancels owed are kept
        self._owed: dict[bytes, dict[str, Any]] = {}
        self._wake = asyncio.Event()

    def loop(self, recovered: asyncio.Event) -> Callable[[], Awaitable[None]]:
        """The loop (JobService.loops) that sends the cancels owed again: first those a stop left owed, once the start
        has finished the jobs it cut short (`recovered`: their cancels it sends itself, and words by their answers)."""
        again = woken_loop("compute-provider-stops", self._wake, lambda: RETRY if self._owed else IDLE, self.again,
                           wait_first=True)

        async def loop() -> None:
            await recovered.wait()
            left = await in_pool(None, self.store.stops_owed)
            if left:
                log.info("%d cancels their providers have not heard: sent again every %g s", len(left), RETRY)
                self._owed = {**left, **self._owed}
                self._wake.set()
            await again()

        return loop

    def until(self, spec: Any) -> float:
        """When (wall clock) a run of the job `spec` (jobspec.JobSpec), cancelled now, has ended by itself at the
        latest: its timeout, as this node would run it, and UNTIL."""
        call = InvokeCall(spec.module, spec.entrypoint, list(spec.argv), spec.fuel, spec.memory, spec.timeout, True)
        return time.time() + self.paid.compute.limits(call).timeout + UNTIL

    async def ask(self, sent: dict[str, Any], until: float) -> str | None:
        """`ask_to_stop` the provider of a run `sent` (the job's, or a replica's: its provider, its id there, its tab's
        authorization), its cancel owed until it answers or `until` passes: written before it is sent, so a cancel
        cut short (its grace, this node's stop or a kill -9) is sent again."""
        authorization = bytes.fromhex(sent["authorization"])
        stop = {"provider": sent["provider"], "job": sent["job"], "until": until}
        await in_pool(None, self.store.owe_stop, authorization, stop)
        self._owed[authorization] = stop
        heard = None
        try:
            heard = await ask_to_stop(self.paid, sent["provider"], sent["job"])
        finally:
            if heard is None:  # unheard, or cut short: the loop sends it again
                self._wake.set()
        if heard is not None:
            await self._heard(authorization)
        return heard

    async def again(self) -> None:
        """Each cancel still owed sent again; those answered, and those whose run must have ended, forgotten."""
        now = time.time()
        for authorization in [a for a, stop in self._owed.items() if stop["until"] <= now]:
            await self._heard(authorization)
        await at_most(AT_ONCE, (self._again(a, stop) for a, stop in list(self._owed.items())))

    async def _again(self, authorization: bytes, stop: dict[str, Any]) -> None:
        if await ask_to_stop(self.paid, stop["provider"], stop["job"]) is not None:
            log.info("provider %s heard the cancel of job %s", stop["provider"], stop["job"])
            await self._heard(authorization)

    async def _heard(self, authorization: bytes) -> None:
        if self._owed.pop(authorization, None) is not None:
            await in_pool(None, self.store.owe_stop, authorization, None)


__all__ = ["RAN", "REFUSED", "UNRUN", "ProviderStops", "ask_to_stop", "unpaid"]
