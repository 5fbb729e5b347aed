"""A job run on a provider the market chose: its bytes sent, its outputs fetched and checked against what the
provider signed (net/jobs.py is the wire), and its run paid on this node's tab with the provider once the caller
has stored them (`pay`; after a restart, `owed_after_restart`).

Each job is paid on a tab of its own (GatewayTabs.reserve_alone): one authorization, one receipt.  The provider's
answer is believed only as far as its signature goes: the provenance record must be the provider's, for this job
(the same job id, over the same input hashes), at the charge it answered; each output fetched must have exactly
the size and SHA-256 the record names.  A provider whose outputs do not match what it signed is struck
(peers/admission.py) and not paid: the job's authorization is dropped, so the receipt it countersigns is refused.
Nothing it sent is stored.  A run whose answer never came (the provider went away while it ran) is not paid
either, and the job is placed again: a job's result is paid once, to the provider that delivered it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .. import codec
from ..errors import ForgedResult, InsufficientCredit, JobCancelled, PeerNotFound, PeerRefused, PeerUnreachable
from ..net import jobs as wire
from ..tasks import Locks, in_pool, unless_set
from . import job_cancels, provenance
from .job_sandbox import OutputFile
from .out_bound import CANCELLED, OUTPUT_LIMIT
from .paid import PaidCompute, compile_room, worst_case_refused
from .provider_stops import UNRUN
from .service import InvokeCall
from .sent_checks import check_outputs, unlike_a_run, unlike_the_deal
from .spot_checks import unlimited

log = logging.getLogger(__name__)
T = TypeVar("T")

ASK_AGAIN = (0.5, 2.0)  # seconds before each new try of a question that never reached the provider (`_asked_again`)
GAVE_UP = "cancel unanswered"  # why a run's answer never came: its cancel gave up waiting for it
CUT = "cut by its cancel"  # a job's sending its cancel cut, its provider asked to drop it by that cancel
ELSEWHERE = frozenset({"node-stopping", "compute-busy"})  # a provider's 503s another provider answers sooner
INPUT_FACTS = ("path", "sha256", "size", "verify_hash")  # what a provider's record says of each input it read


@dataclass
class Returned:
    """A job's run on a provider, checked: the run as it answered it, its signed record, the outputs fetched."""

    provider: str
    run: dict[str, Any]
    signed: dict[str, Any]
    files: list[OutputFile]
    sha256: list[str]
    answer: dict[str, Any]
    tab: Any = None  # its own tab (remote_tabs.OpenTab), paid or abandoned once it is judged; None after a restart
    budget: int = 0
    authorization: str = ""  # its tab's authorization id (hex): what a restart finds it by
    streams: str = ""  # streams_sha256 of its run, kept when a restart's record of it drops its streams

    @property
    def agreement(self) -> tuple:
        """What replicas of a deterministic job must agree on: every output's name and hash, the fuel (the bill),
        the exit code and trap, the engine that ran it, and the stdout and stderr its user reads.  A run stopped for
        its outputs' bytes (`output-limit`) is stopped at a tick of its provider's clock (out_bound.py), so how far
        it ran, and so its fuel and what it printed by then, are not the program's to fix: such replicas agree on
        the trap and the engine, and each is paid what it metered within its budget, as a run of one replica is."""
        record = self.signed["record"]
        trap = record.get("trap") or {}
        if record.get("outcome") == "trap" and trap.get("kind") == OUTPUT_LIMIT:
            return OUTPUT_LIMIT, codec.canonical(record.get("engine"))
        return (tuple((o["name"], o["sha256"]) for o in record["job"]["outputs"]), record["fuel_consumed"],
                record.get("wasi", {}).get("exit_code"), record.get("outcome"),
                codec.canonical(record.get("engine")), self.streams or streams_sha256(self.run))


def streams_sha256(run: dict[str, Any]) -> str:
    """What replicas' stdout and stderr are compared by: a provider's record signs their lengths, not their bytes,
    so only replicas that print the same can vouch for what the user is shown."""
    return hashlib.sha256(codec.dumps([run.get("stdout", ""), run.get("stderr", "")])).hexdigest()


class SentJobs:
    def __init__(self, *, paid: PaidCompute, on_strike: Callable[[str, str], None]) -> None:
        self.paid = paid  # this node's tabs with providers, its client, the market's notes
        self.on_strike = on_strike
        self._pushing: Locks[tuple[str, str]] = Locks()  # (provider, module): one push at a time

    async def unsettled(self, provider: str, price: int, spec, call: InvokeCall, staged, jid: str,
                        deal: dict[str, Any], believed: Callable[[dict[str, Any]], None] | None = None,
                        sending: Callable[[dict[str, Any]], None] | None = None,
                        checked: Callable[[Returned], Awaitable[Returned]] | None = None,
                        asked: str | None = None, given_up: job_cancels.Cancelling | None = None) -> Returned:
        """Run the staged job on `provider` at `price`: its run, checked, with its outputs on disk, neither paid
        nor refused yet.  The caller judges it (`pay` or `refuse`) once its outputs are stored, as replicas of a
        job are judged by their agreement.  `sending({provider, job, authorization, price, budget, stdin})`: the
        provider took the job, nothing of it sent yet (what `answer_again` needs after a restart);
        `believed({provider, job, authorization, answer})`: the provider's answer holds to the job, its outputs not
        fetched yet (what `refetched` needs after a restart); `checked(returned)`: its outputs fetched and checked,
        what keeps them where a start finds them, before the provider is told to forget the job (a kill -9 between
        the two would leave a run that was done and can be neither fetched again nor paid).  `asked`: the id its
        user knows the job by, when that is not `jid`, the id of its run (a replicated job's): what its tab names.
        `given_up`: the job's cancel (job_cancels.Cancelling): once `asked`, what is still sent of the job (its
        begin, a module pushed, its bytes) is cut at once, nothing of it run, its tab closed unpaid (the cancel asked
        its provider to drop it); once `gave_up` (job_cancels.CANCEL_GRACE), its run's request ends unanswered, its
        tab dropped unpaid, and the provider (silent) not told to forget it."""
        paid = self.paid
        url = paid.peers.peer(provider).url
        budget = paid.compute.budget(call, price)
        try:
            tab = await paid.gateway_tabs.reserve_alone(provider, price, budget, asked or jid,
                                                        compile_room(paid.compute, call.module, price))
        except InsufficientCredit as err:
            raise worst_case_refused(paid.compute, err, call, budget, "job") from None
        data = _data(staged)
        body = {"spec": spec.canonical(), "price": price, "memory_price": paid.compute.memory_price,
                "authorization": tab.hex, "deal": deal, "data": [d for d, _ in data]}
        job = await self._begin(url, provider, body, call, tab, budget, asked or jid, given_up)
        sent = {"provider": provider, "job": job, "authorization": tab.auth.id.hex(), "price": price,
                "budget": budget, "stdin": staged.stdin_sha256}
        try:
            answer = await self._sent_and_run(url, provider, job, data, call, spec, tab, budget,
                                              None if sending is None else lambda: sending(sent), given_up)
            try:
                returned = await self._checked(url, provider, job, jid, staged, answer, budget, spec, price, tab,
                                               believed, given_up is not None and given_up.asked.is_set())
            except ForgedResult as err:
                await paid.gateway_tabs.abandon(tab, budget)
                self.strike(provider, err.message)
                raise
            except asyncio.CancelledError:
                raise  # the node stops: see below
            except BaseException:  # its outputs could not all be fetched: its result never came
                await paid.gateway_tabs.abandon(tab, budget)
                raise
            returned.tab, returned.budget, returned.authorization = tab, budget, tab.auth.id.hex()
            if checked is not None:
                try:
                    returned = await checked(returned)
                except Exception:  # not kept: not counted, so not paid
                    await paid.gateway_tabs.abandon(tab, budget)
                    raise
        except asyncio.CancelledError:
            # The node stops while the provider runs the job or its outputs are fetched: as after a kill -9, its tab
            # stays pending and the provider keeps the run, so the next start finishes it from the step the job's
            # record names and pays what it owes (an honest provider that did the work is not left unpaid).
            raise
        except BaseException as err:
            if not _told_by_cancel(err):
                await self._forget(url, provider, job)
            raise
        await self._forget(url, provider, job)
        return returned

    def pay(self, returned: Returned) -> None:
        """Pay a checked run its charge (its tab closes and its receipt is paid, which counts toward the provider's
        recognition: Payments.complete); a run whose tab a restart left pending, that charge and no more
        (`owed_after_restart`)."""
        charge = returned.run["charge"]
        if returned.tab is None:
            self.owed_after_restart(returned.authorization, charge)
            return
        self.paid.gateway_tabs.answered(returned.tab, returned.budget, charge)

    def pay_all(self, paying: list[Returned]) -> None:
        """Pay each checked run its charge (`pay`), each tab once.  One whose payment step fails (a fault of this
        node's, not its provider's) is paid as a start would pay it, from its tally set to that charge and by the
        payment retry if its close fails (GatewayTabs.owed_after_failure), not left to the next start; the others
        are paid all the same."""
        for returned in paying:
            try:
                self.pay(returned)
            except Exception:
                log.exception("paying provider %s its charge failed: the payment retry pays it", returned.provider)
                self.paid.gateway_tabs.owed_after_failure(bytes.fromhex(returned.authorization),
                                                          returned.run["charge"])

    def hold_off(self, authorization: str) -> bool:
        """After a restart: the job tab `authorization` (hex) left pending, kept from the payment retry until
        `owed_after_restart` or `unanswered_after_restart` (remote_tabs.GatewayTabs.hold_off)."""
        return self.paid.gateway_tabs.hold_off(bytes.fromhex(authorization))

    def owed_after_restart(self, authorization: str, charge: int) -> None:
        """After a restart: pay the job tab `authorization` the `charge` its checked run was recorded owing."""
        self.paid.gateway_tabs.owed_after_restart(bytes.fromhex(authorization), charge)

    def payable_after_restart(self, authorization: str) -> bool:
        """After a restart: whether the job tab `authorization` (hex) is still pending, so can be paid."""
        return self.paid.gateway_tabs.still_pending(bytes.fromhex(authorization))

    async def unanswered_after_restart(self, authorization: str) -> None:
        """After a restart: nothing of a run is paid on the job tab `authorization`, whose outputs never came (a compile
        on it, for a run never asked for, is: remote_tabs.GatewayTabs.unanswered_after_restart)."""
        await self.paid.gateway_tabs.unanswered_after_restart(bytes.fromhex(authorization))

    async def refuse(self, returned: Returned) -> None:
        """Pay nothing for a checked run that is not believed (a replica unlike those that agreed, which its caller
        strikes, or one of replicas none of which agreed).  A run whose tab a restart left pending: that tab's
        authorization dropped."""
        if returned.tab is None:
            await self.unanswered_after_restart(returned.authorization)
        else:
            await self.paid.gateway_tabs.abandon(returned.tab, returned.budget)

    def strike(self, provider: str, why: str) -> None:
        """Note a misbehaviour of `provider` (its quarantine counts them)."""
        log.error("%s", why)
        self.on_strike(provider, why)

    async def _sent_and_run(self, url: str, provider: str, job: str, data, call: InvokeCall, spec, tab, budget: int,
                            sending: Callable[[], None] | None, given_up: job_cancels.Cancelling | None = None
                            ) -> dict[str, Any]:
        """The job's bytes sent in order (cut by its cancel), then its run asked for: the provider's answer (not yet
        checked)."""
        paid = self.paid
        try:
            if sending is not None:
                sending()
            await _unless_cancelled(self._sent_all(url, provider, job, data), given_up)
            paid.gateway_tabs.run_asked(tab)  # its budget on the tally on disk only now: it may run from here
        except BaseException:  # nothing ran: nothing of a run is owed for it (a compile on its tab is)
            paid.gateway_tabs.answered(tab, budget, None)
            raise
        try:
            return await _unless_given_up(wire.run(paid.client, url, provider, job,
                                                   timeout=paid.compute.limits(call).timeout + 60,
                                                   most=wire.run_answer_bound(spec.stdout_cap, spec.stderr_cap)),
                                          None if given_up is None else given_up.gave_up, provider)
        except PeerRefused:  # refused before it ran: nothing is owed for it
            paid.gateway_tabs.answered(tab, budget, None)
            raise
        except asyncio.CancelledError:
            raise  # the node stops: its tab stays pending for the next start (`unsettled`)
        except BaseException:  # it may have run, but its result never came: it is not paid (the job is placed again)
            await paid.gateway_tabs.abandon(tab, budget)
            raise

    async def _begin(self, url: str, provider: str, body: dict, call: InvokeCall, tab, budget: int,
                     jid: str, given_up: job_cancels.Cancelling | None) -> str:
        try:  # (cut by its cancel: a module pushed may be large; a job it staged goes with its tab)
            return await _unless_cancelled(self._begun(url, provider, body, call, jid, tab), given_up)
        except BaseException:  # a job runs nothing until it is asked to: nothing of a run is owed for it (its tab is
            self.paid.gateway_tabs.answered(tab, budget, None)  # closed paying the compile of a module pushed, if any)
            raise

    async def _begun(self, url: str, provider: str, body: dict, call: InvokeCall, jid: str, tab) -> str:
        begin = functools.partial(_asked_again, functools.partial(wire.begin, self.paid.client, url, provider, body),
                                  provider, jid, "begin", placing=True)
        try:
            return await begin()
        except PeerRefused as err:
            if err.details.get("peer_code") != "module-not-found":
                raise
        # The provider takes one push per module it asked for: jobs that found it lacking at the same moment
        # push it once, one after the other asking again first.
        async with self._pushing.one((provider, call.module)):
            try:
                return await begin()
            except PeerRefused as err:
                if err.details.get("peer_code") != "module-not-found":
                    raise
            await self.paid.push(url, provider, call, tab)  # compiled at a price paid with the job's tab
        return await begin()

    async def _sent_all(self, url: str, provider: str, job: str, data) -> None:
        offset = 0
        for item, path in data:
            offset = await self._send(url, provider, job, path, offset, item["size"])

    async def _send(self, url: str, provider: str, job: str, path: Path, offset: int, size: int) -> int:
        """The file at `path` (`size` bytes) sent as the job's data from `offset`; the offset after it."""
        end = offset + size
        with open(path, "rb") as f:
            while offset < end and (chunk := await in_pool(None, f.read, min(wire.CHUNK, end - offset))):
                await _asked_again(functools.partial(wire.send, self.paid.client, url, provider, job, offset, chunk),
                                   provider, job, f"data at byte {offset}", placing=True)
                offset += len(chunk)
        return offset

    async def _checked(self, url: str, provider: str, job: str, jid: str, staged, answer: dict[str, Any],
                       budget: int, spec, price: int, tab, believed: Callable[[dict[str, Any]], None] | None,
                       cancel_asked: bool) -> Returned:
        """The provider's answer, held to its signed record; each output fetched and held to its signed hash."""
        outputs = self._held(provider, answer, budget, jid, staged.inputs, staged.stdin_sha256, spec, price,
                             tab.auth.id.hex(), cancel_asked)
        if believed is not None:
            believed({"provider": provider, "job": job, "authorization": tab.auth.id.hex(), "answer": answer})
        files = await self._fetched(url, provider, job, outputs, staged.work / "fetched" / provider)
        return Returned(provider, answer["run"], answer["provenance"], files, [o["sha256"] for o in outputs], answer)

    def _held(self, provider: str, answer: dict[str, Any], budget: int, jid: str, inputs: list[dict[str, Any]],
              stdin_sha256: str | None, spec, price: int, authorization: str, cancel_asked: bool
              ) -> list[dict[str, Any]]:
        """The outputs a provider's answer signs, once the answer holds to its signed record, and the record to
        the job (`jid`, over `inputs` and stdin), the deal (`price`, the tab `authorization`) and `budget`: else
        ForgedResult.  A run signed stopped by its sender's cancel when this node never cancelled it
        (`cancel_asked`) is not the run that was paid for: refused too."""
        run, signed = answer["run"], answer["provenance"]
        charge = run.get("charge")
        if type(charge) is not int or not 0 <= charge <= budget:
            raise ForgedResult(f"provider {provider} answered a job charging {charge!r}, not 0 to {budget}")
        record = signed.get("record") if isinstance(signed, dict) else None
        wrong = provenance.respelled(signed) if isinstance(record, dict) else None
        if wrong is not None:
            raise ForgedResult(f"provider {provider}'s record of the job is not in the one form its signature covers: "
                               f"{wrong}")
        if not provenance.is_valid(signed) or not isinstance(record, dict) or record.get("node") != provider:
            if isinstance(record, dict) and record.get("node") == provider and provenance.old_rule(signed):
                raise ForgedResult(f"provider {provider}'s record of the job is signed under the first batch rule "
                                   f"({provenance.OLD_BATCH_TAG.decode().strip()}), whose root does not pin the "
                                   "record's index and count: not paid, and struck",
                                   hint="run the job again (another provider)")
            raise ForgedResult(f"provider {provider}'s record of the job is not signed by it")
        facts = record.get("job") if isinstance(record.get("job"), dict) else {}
        if record.get("id") != run.get("provenance") or record.get("charge") != charge \
                or record.get("fuel_consumed") != run.get("fuel_consumed") or facts.get("id") != jid \
                or facts.get("inputs") != [{k: i[k] for k in INPUT_FACTS} for i in inputs] \
                or facts.get("stdin") != stdin_sha256 \
                or facts.get("outputs") != answer["outputs"]:
            raise ForgedResult(f"provider {provider} answered a run its signed record does not match (another "
                               "job, inputs, outputs, charge or fuel): not paid, and struck",
                               hint="run the job again (another provider)")
        # A run whose outputs were refused is signed as a trap (job_sandbox.run_program), so is answered as one
        call = InvokeCall(spec.module, spec.entrypoint, list(spec.argv), spec.fuel, spec.memory, spec.timeout, True)
        trapped = "trap" in answer or "refusal" in answer
        why = unlike_a_run(run, answer, record) or unlike_the_deal(
            record, spec, price, authorization, self.paid.compute.memory_price, trapped) or unlimited(record, call)
        if why is None and not cancel_asked and trapped and (record.get("trap") or {}).get("kind") == CANCELLED:
            why = "says its sender cancelled the run, which this node never did"
        if why is not None:
            raise ForgedResult(f"provider {provider}'s signed record {why}: not paid, and struck",
                               hint="run the job again (another provider)")
        outputs = facts["outputs"]
        check_outputs(provider, outputs, spec.bytes_out)  # bounded before anything is fetched
        return outputs

    async def answer_again(self, sent: dict[str, Any], spec, jid: str, inputs: list[dict[str, Any]],
                           cancelled: Callable[[], bool] = lambda: False, timeout: float | None = None
                           ) -> dict[str, Any]:
        """After a restart: the answer of the run a stop cut short while its provider ran it (`unsettled`'s
        `sending`), asked of the provider again: it answers the run it kept (or the one under way, once done),
        never running it again.  Held to the job, the tab and the price as any answer (`_held`; a provider whose
        answer does not hold is struck, as is one that signs it stopped by a cancel when `cancelled()` says no cancel
        was asked); what `refetched` goes on from.  No answer (the provider gone, restarted, or its answer dropped:
        hosted_jobs.IDLE) raises, and the provider is told to forget the job.  `timeout`: seconds each question
        waits for its answer (default: the job's timeout, and a minute: its run may still be under way)."""
        provider, job = sent["provider"], sent["job"]
        url = self.paid.peers.peer(provider).url
        call = InvokeCall(spec.module, spec.entrypoint, list(spec.argv), spec.fuel, spec.memory, spec.timeout, True)
        waits = self.paid.compute.limits(call).timeout + 60 if timeout is None else timeout
        try:
            answer = await _asked_again(
                lambda: wire.run(self.paid.client, url, provider, job, timeout=waits,
                                 most=wire.run_answer_bound(spec.stdout_cap, spec.stderr_cap)),
                provider, job, "answer")
            self._held(provider, answer, sent["budget"], jid, inputs, sent["stdin"], spec, sent["price"],
                       sent["authorization"], cancelled())
        except ForgedResult as err:
            self.strike(provider, err.message)
            await self._forget(url, provider, job)
            raise
        except asyncio.CancelledError:
            raise  # the node stops again: the provider keeps the run for the next start
        except PeerUnreachable as err:
            if timeout is not None and err.details.get("reason") == "timed out":  # heard its cancel, then silent:
                raise _silent_to_cancel(provider) from None  # not told to forget (that would wait as long again)
            await self._forget(url, provider, job)
            raise
        except BaseException:
            await self._forget(url, provider, job)
            raise
        return {"provider": provider, "job": job, "authorization": sent["authorization"], "answer": answer}

    async def answer_after_cancel(self, sent: dict[str, Any], spec, jid: str, inputs: list[dict[str, Any]],
                                  stops: Any) -> dict[str, Any]:
        """After a restart that found the job's cancel written (`cancel_asked`) while its provider ran it: the
        provider asked again to stop its run (a kill -9 may have come before it heard the cancel, or before it
        answered), then, once it has (its run ended), for the answer of the run it stopped, as `answer_again` asks
        it.  Each waits job_cancels.CANCEL_GRACE at most, as a cancel waits: the run has ended, so its answer is
        there to take at once.  A provider that does not answer within it (silent, or gone) is given up (GAVE_UP):
        its answer never came, it is not told to forget the job, and the cancel is sent again until it hears it
        (`stops`: provider_stops.ProviderStops).  One that dropped the job before its run began ran nothing:
        JobCancelled, nothing to pay."""
        heard = await stops.ask(sent, stops.until(spec))
        if heard is None:
            raise _silent_to_cancel(sent["provider"])
        if heard == UNRUN:
            raise job_cancels.cancelled_before()
        return await self.answer_again(sent, spec, jid, inputs, lambda: True, job_cancels.CANCEL_GRACE)

    async def _forget(self, url: str, provider: str, job: str) -> None:
        try:
            await wire.forget(self.paid.client, url, provider, job)
        except (PeerRefused, PeerUnreachable) as err:
            log.info("provider %s kept job %s's files: %s (it drops them itself)", provider, job, err)

    async def refetched(self, provider: str, job: str, outputs: list[dict[str, Any]], into: Path
                        ) -> list[OutputFile]:
        """After a restart: the outputs of a run whose answer was believed (`unsettled`'s `believed`) fetched again
        from `provider`, which keeps them a while (hosted_jobs.IDLE), each held to its signed hash; a provider
        whose bytes do not match is struck.  The caller tells the provider to forget the job (`forget`) once the
        step that counts them is written: told before, a kill -9 between would lose a run that was done."""
        url = self.paid.peers.peer(provider).url
        try:
            return await self._fetched(url, provider, job, outputs, into)
        except ForgedResult as err:
            self.strike(provider, err.message)
            raise

    async def forget(self, provider: str, job: str) -> None:
        """Tell `provider` it may drop job `job`'s answer and outputs (it drops them itself a while later); best
        effort, as `_forget`."""
        try:
            url = self.paid.peers.peer(provider).url
        except PeerNotFound as err:
            log.info("provider %s kept job %s's files: %s (it drops them itself)", provider, job, err)
            return
        await self._forget(url, provider, job)

    async def _fetched(self, url: str, provider: str, job: str, outputs: list[dict[str, Any]], into: Path
                       ) -> list[OutputFile]:
        """Each signed output fetched into the directory `into` (named by its index), held to its size and hash;
        each piece asked again while the question never reaches the provider, or it fails it (`_asked_again`)."""
        files: list[OutputFile] = []
        into.mkdir(parents=True, exist_ok=True)
        for index, output in enumerate(outputs):
            path = into / str(index)
            size, digest = await self._fetch(url, provider, job, index, path, output["size"])
            if size != output["size"] or digest != output["sha256"]:
                raise ForgedResult(f"provider {provider}'s output {output['name']!r} is not the size and hash "
                                   "it signed: not paid, and struck",
                                   hint="run the job again (another provider)")
            files.append((output["name"], path, size))
        return files

    async def _fetch(self, url: str, provider: str, job: str, index: int, path: Path, size: int
                     ) -> tuple[int, str]:
        """Output `index` to `path`, never more than its signed size; its size and SHA-256.  A piece shorter than
        an honest provider answers (a whole chunk, or what is left) ends it short: a byte a request would keep the
        job fetching for days."""
        digest, got = hashlib.sha256(), 0
        with open(path, "wb") as out:
            while got < size:
                ask = functools.partial(wire.fetch, self.paid.client, url, provider, job, index, got)
                chunk = await _asked_again(ask, provider, job, f"output {index}", read=True)
                whole = min(wire.CHUNK, size - got)
                chunk = chunk[:whole]
                digest.update(chunk)
                await in_pool(None, out.write, chunk)
                got += len(chunk)
                if len(chunk) < whole:
                    break
        return got, digest.hexdigest()


def _data(staged) -> list[tuple[dict[str, Any], Path]]:
    """What a job sends, in order: its stdin (if any), then each input, each named with its size and hashes."""
    data: list[tuple[dict[str, Any], Path]] = []
    if staged.stdin is not None:
        data.append(({"path": "stdin", "size": staged.stdin.stat().st_size, "sha256": staged.stdin_sha256,
                      "verify_hash": ""}, staged.stdin))
    for item in staged.inputs:
        data.append(({k: item[k] for k in INPUT_FACTS},
                     staged.work / "in" / item["path"][4:]))
    return data


async def _asked_again(ask: Callable[[], Awaitable[T]], provider: str, job: str, what: str, *,
                       read: bool = False, placing: bool = False) -> T:
    """A question to `provider` about job `job` (`ask`), asked again while it never reached the provider (no
    connection, or a handshake that failed: a busy machine, just after a start or not), ASK_AGAIN times at most,
    2.5 s in all (a provider gone falls through as soon): one failed dial must not lose a run that was done (not paid,
    and placed again or run again by the user).  `read`: a piece of an output, asked again after a 5xx too (a
    fault of the provider's that reading again may not meet).  Only for questions that asking twice cannot change:
    a run's answer (the provider answers the run it kept, never running it twice) and a piece of an output it keeps
    (a read).  A question that reached the provider is not asked again (but a read a 5xx answered): no answer to it
    is the provider gone or too slow, which its own timeout already waited for.

    `placing`: a job's begin or a piece of its data, which the provider takes once however often it is asked
    (hosted_jobs.py: a begin on the job's own tab answers the job it staged, a piece taken already answers what was
    taken): asked again after a connection that reset or closed, and after a 503 of a moment (every
    connection busy, its replay cache full; not its stop nor its being busy, which another provider answers
    sooner), but never after a connection refused: a provider gone falls through at once, to the next one."""
    for delay in ASK_AGAIN:
        try:
            return await ask()
        except PeerUnreachable as err:
            if not _unreached_again(err, placing):
                raise
            why = err.message
        except PeerRefused as err:
            status = err.details.get("peer_status")
            if not isinstance(status, int) or status < 500 or not read and not (
                    placing and status == 503 and err.details.get("peer_code") not in ELSEWHERE):
                raise  # refused as asked: asked again, so would it be
            why = err.message
        log.info("asking provider %s again for job %s's %s in %g s: %s", provider, job, what, delay, why)
        await asyncio.sleep(delay)
    return await ask()


async def _unless_set(step: Awaitable[T], event: asyncio.Event | None) -> list[T]:
    """[What `step` gave], or [] if `event` was set first: `step` is then cut (tasks.unless_set)."""
    got: list[T] = []

    async def stepped() -> None:
        got.append(await step)

    if event is None:
        return [await step]
    await unless_set(stepped(), event)
    return got


async def _unless_given_up(answer: Awaitable[T], given_up: asyncio.Event | None, provider: str) -> T:
    """A run's `answer`, unless `given_up` is set first (its cancel waited for it long enough): then it never came."""
    got = await _unless_set(answer, given_up)
    if not got:
        raise _silent_to_cancel(provider)
    return got[0]


async def _unless_cancelled(step: Awaitable[T], cancelling: job_cancels.Cancelling | None) -> T:
    """`step` (a request sending the job to its provider), unless the job is cancelled first: then it is cut at once
    (not at its own timeout: a large input on a slow link), and the job ends cancelled before it ran."""
    got = await _unless_set(step, None if cancelling is None else cancelling.asked)
    if not got:
        raise job_cancels.cancelled_before(reason=CUT)
    return got[0]


def _silent_to_cancel(provider: str) -> PeerUnreachable:
    return PeerUnreachable(f"provider {provider} did not answer the cancel of the job's run in time: given up",
                           reason=GAVE_UP, sent=True, lost="did not answer its cancel")


def silent_to_cancel(err: BaseException) -> bool:
    """Whether `err` is a run's answer its cancel gave up waiting for (its provider silent: not told to forget it)."""
    return isinstance(err, PeerUnreachable) and err.details.get("reason") == GAVE_UP


def _told_by_cancel(err: BaseException) -> bool:
    """Whether `err` ended a job's run as its cancel did, its provider told by that cancel or silent to it: not asked
    to forget the job (a silent provider would hold the job's end up to that request's timeout)."""
    return silent_to_cancel(err) or isinstance(err, JobCancelled) and err.details.get("reason") == CUT


def _unreached_again(err: PeerUnreachable, placing: bool) -> bool:
    """Whether a question `err` left unanswered is asked again (`_asked_again`)."""
    reason = err.details.get("reason")
    if placing and reason == "connection refused":
        return False
    if err.details.get("sent", True) is False:
        return True
    return placing and reason != "timed out"  # reset or closed under it; a timeout waited for the provider already


__all__ = ["Returned", "SentJobs", "silent_to_cancel", "streams_sha256"]
