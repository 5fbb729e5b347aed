"""Remote invokes held to the records their providers sign (docs/compute.md, "Calls run on another node").

An invoke's answer names its run's provenance record; the record, which signs the results, the fuel, the charge and
a WASI run's exit code and stream hashes, stays on the provider, which shows it to the node that paid for the run
alone (`served`: GET /v1/peer/compute/provenance/{id}).  The gateway fetches it, after the answer, for a share of
the answers the provider cannot foresee (a countdown drawn at random at `rate`: one counter on a call's path) and
for every call whose user asks (`verify`), and holds it to the call (module, entrypoint, arguments, the tab's
authorization, the price, this node's payer) and to the answer (results or trap, fuel, charge, exit code and
streams), and to the other answers: a run named by two answers is a strike too.  A checked call's record is a
condition of its pay: its tab is not closed while the check runs, and nothing of the tab is paid if the record does
not hold, or is refused (both strikes), or is never shown (asked TRIES times in all, backing off, within the tab's
life: a provider that closes the connection or stalls is not paid for a call it could forge unseen; not a strike)
(remote_tabs.py: `GatewayTabs.checked`).  Checks in the background run as CHECKING tasks at most, PER_PROVIDER of them
for one provider: a sampled answer past them is not checked (`skipped`, or `saturated` when its provider's are all
taken); a `verify` call's check that could not be made at once waits for room (`owed`: WAITING of them at most in
memory, the others on disk alone, compute/owed_checks.py).
A check is owed on disk (`c/c/`: the call, what its answer said, hashed where the provider chose its size, and the
asks for its record that went unanswered) from the write of the tally that counts its answer, in that write (made
before the call's answer: `begin`), until the write that says what it found: a check under way when the gateway
stops, or is killed, is taken up at its next start (`resume`, within the same bounds), its tab kept off the payment
retry until it ends; asked for its record until TRIES asks in all went unanswered, however many restarts there
were, a record whose provider is gone for good is never shown, and its tab is not paid.  The RECENT latest remote
runs (`c/e/`, a ring of that many rows) are written with those tallies too, so a restart forgets none of them.
A checked record is kept (`c/r/`, swept as a job's provider's records are: compute.record_retention after its run
began, by its id, which its provider chose: one dated past KEEP_AHEAD from now is not kept) so that `xsc compute
provenance ID` shows it; one not checked is fetched from its provider when asked for (`provenance`), which this node
finds among its RECENT latest remote runs, or is told.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from .. import codec
from ..errors import (ForgedResult, InvalidArgument, PeerMisbehaved, PeerNotFound, PeerRefused, PeerUnreachable,
                      ProvenanceNotFound, XscError)
from ..units import counted
from ..ledger.core.pricing import price_compute
from ..net.compute import fetch_record
from ..net.peer_client import PeerClient
from ..tasks import stop
from . import provenance
from .limits import resolve
from .modules import PAGE
from .owed_checks import Answered, OwedChecks
from .provenance_records import NOT_HERE_HINT, provenance_not_found
from .provider_tabs import TAB_TTL
from .remote_tabs import GatewayTabs, OpenTab
from .trap_limits import UNBOUNDED, contradicted
from .service import ComputeService, InvokeCall, parse_invoke

log = logging.getLogger(__name__)

CHECKING = 8  # sampled checks under way at once, at most
PER_PROVIDER = 2  # of them, for one provider: one that stalls its records holds no more, nor keeps others' unchecked
TRIES = 5  # times a record is asked for before its call is not paid
BACKOFF = 5.0  # seconds before it is asked again, doubling each time
RECENT = 4096  # the latest remote runs whose provider is remembered (for `provenance`)
_UNLIKE = "?"  # what an answer's value past any honest record's form is kept as: the same as no record's (`_same`)
# How far ahead of this node's clock a kept record's id may be dated: the sweep goes by that date, which the provider
# chose, so a record dated further is not kept (it stays shown by its provider).  Clocks of honest nodes agree better.
KEEP_AHEAD = 3600 * 10**9


class SpotChecks:
    def __init__(self, *, compute: ComputeService, client: PeerClient, tabs: GatewayTabs, me: str, payer: str,
                 rate: float, url_of: Callable[[str], str], on_strike: Callable[[str, str], None]) -> None:
        self.compute, self.client, self.tabs, self.me, self.payer = compute, client, tabs, me, payer
        self.url_of = url_of  # a peer's URL (PeerNotFound for one this node does not know)
        self.rate = rate  # the share of remote answers checked (compute.check_rate)
        self.on_strike = on_strike
        self._random = random.SystemRandom()  # which answer is checked next: not a sequence a provider can learn
        self._countdown = self._draw()
        self._recent: deque[tuple[str, str]] = deque(maxlen=RECENT)  # (provenance id, provider)
        # How often each of them is in `_recent`: a check asks whether its run answered two calls without a walk
        # over the RECENT of them (~160 us of the event loop's CPU at every check).
        self._named: Counter[tuple[str, str]] = Counter()
        self._runs = 0  # remote runs counted (on disk too: the ring's rows)
        self._tasks: set[asyncio.Task] = set()
        self._of: dict[str, int] = {}  # provider -> its checks among `_tasks`
        # Checks waiting for room among `_tasks` (each such `verify` call would otherwise add a task, however many
        # calls a user makes), bounded in memory.
        self.owed = OwedChecks(store=compute.store, tabs=tabs, read=self._read_owed)
        self._closed = False
        # ("unwritten": checked answers given while the write of their check's rows failed, the check owed or, for a
        # `verify` call, what it found; the rows are written with the next write of the tallies.)
        self.counts = {"checked": 0, "held": 0, "struck": 0, "unserved": 0, "unreached": 0, "unshown": 0,
                       "skipped": 0, "saturated": 0, "unwritten": 0}

    def status(self) -> dict[str, int]:
        # A check that has ended is no longer under way, though its task leaves `_tasks` a turn of the loop later
        # (its done callback): counted until then, the status would show it beside the counts it settled.
        checking = sum(not task.done() for task in self._tasks)
        return {**self.counts, "checking": checking, **self.owed.status()}

    def _draw(self) -> int:
        """Calls until the next one checked: geometric at `rate` (each call checked with that chance)."""
        if self.rate <= 0:
            return 2**62
        if self.rate >= 1:
            return 1
        return 1 + int(math.log(1.0 - self._random.random()) / math.log(1.0 - self.rate))

    # --- the gateway's side ---------------------------------------------------------------------------
    def taken(self, provider: str, url: str, call: InvokeCall, price: int, tab: OpenTab, budget: int,
              answer: dict[str, Any], verify: bool) -> Answered | None:
        """A remote call's answer taken into its tab, whether its caller waits for it or not: PeerRefused (counted
        as a lost answer) if it charges past its budget; else what `due` says."""
        amount = answer["run"].get("charge")
        if type(amount) is not int or not 0 <= amount <= budget:
            self.tabs.lost(tab, budget)
            raise PeerRefused(f"provider {provider} answered a run charging {amount!r}, not 0 to {budget}")
        # First: a check owed is written with the tally that counts the answer, and its tab waits for it.
        checked = self.due(provider, url, call, price, tab, answer["run"], answer.get("trap"), verify)
        # (What it paid counts for the provider's recognition once the tab's receipt is paid: Payments.complete.)
        self.tabs.answered(tab, budget, amount)
        return checked

    def taken_late(self, provider: str, url: str, call: InvokeCall, price: int, tab: OpenTab, budget: int,
                   verify: bool, answer: dict[str, Any]) -> Any:
        """`taken` for the answer of a call whose caller went away once it was sent (remote_sends.py), checked as
        any other in the background (a `verify` call's waiting for room, as one whose record could not be had):
        the fuel it ran."""
        checked = self.taken(provider, url, call, price, tab, budget, answer, verify)
        if checked is not None and verify:
            self.owed.add(checked, True)
            self._next_owed()
        elif checked is not None:
            self.start(checked)
        return answer["run"].get("fuel_consumed")

    def due(self, provider: str, url: str, call: InvokeCall, price: int, tab: OpenTab, run: dict[str, Any],
            trap: Any, verify: bool) -> Answered | None:
        """On a remote call's path, once answered and before its answer is taken into its tab: its run noted, and
        whether its answer is checked (`verify`, or its turn came and a check of its provider can start): then what
        its provider's record must say, owed on disk with the tally that counts the answer, and its tab not closed
        until the check (`begin`) says whether the call is paid.  `trap`: the answer's, None if the call returned."""
        pid, rows = run.get("provenance"), {}
        if provenance.is_id(pid):
            self._note(pid, provider)
            rows = self.compute.store.remote_run_row(self._runs, RECENT, bytes.fromhex(pid), provider)
            self._runs += 1
        if not verify and not self._turn(provider):
            self.tabs.tallies.write_with(rows)
            return None
        answered = Answered(provider, url, call, price, tab, _facts(run, trap), provenance.new_id())
        self.tabs.checking(tab, {**rows, **self._owed_row(answered, answered.to_json())})
        self.owed.live(answered.check_id)
        return answered

    def _turn(self, provider: str) -> bool:
        """Whether the answer of a call not asked to be verified is checked: its turn came, and there is room."""
        self._countdown -= 1
        if self._countdown > 0:
            return False
        self._countdown = self._draw()
        passed = "skipped" if len(self._tasks) >= CHECKING or self._closed else \
            "saturated" if self._of.get(provider, 0) >= PER_PROVIDER else None
        if passed is not None:
            self.counts[passed] += 1
        return passed is None

    def _owed_row(self, answered: Answered, check: dict[str, Any] | None) -> dict[bytes, bytes | None]:
        return self.compute.store.owed_check_row(answered.tab.auth.id, answered.check_id, check)

    async def begin(self, answered: Answered, verify: bool) -> bool:
        """Check a call `due` said is checked: now if `verify` (True once its record held; ForgedResult, or
        PeerUnreachable while it is asked again in the background, within the bounds), else in the background
        (False).  The check owed, or what it found, is on disk when it returns, before the call is answered: a kill -9
        once its user has the answer leaves the check owed, not forgotten with the tally that counts the answer.
        A write that fails is counted (`unwritten`) and the answer given all the same: it is its caller's, and its
        tab counts it; the check goes on, and its rows are written with the next write."""
        try:
            if verify:
                await self._once(answered)
            else:
                self.start(answered)
        except (PeerUnreachable, asyncio.CancelledError):  # (cancelled: its caller gone, the check still owed)
            self._write_now()
            self.owed.add(answered, False)  # the call is paid only once its record is shown and holds
            self._next_owed()
            raise
        except BaseException:
            self._write_now()
            raise
        self._write_now()
        return verify

    def _write_now(self) -> None:
        if not self.tabs.tallies.write_now():
            self.counts["unwritten"] += 1

    def start(self, answered: Answered, now: bool = False) -> None:
        """Check `answered` in the background, asking for its record until TRIES asks in all went unanswered: `now`,
        or after backing off from its last.  Once the gateway stops, a check is left owed: on disk, taken up at the
        next start (`resume`), its tab not closed meanwhile."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._sampled(answered, now))
        self._tasks.add(task)
        self._of[answered.provider] = self._of.get(answered.provider, 0) + 1
        task.add_done_callback(lambda done: self._done(done, answered))

    def _done(self, task: asyncio.Task, answered: Answered) -> None:
        self._tasks.discard(task)
        left = self._of.pop(answered.provider) - 1
        if left:
            self._of[answered.provider] = left
        if not task.cancelled():  # (cancelled: the gateway stops, and the check stays owed)
            self._settle(answered)  # a check that failed unforeseen says nothing against the provider
        self._next_owed()

    async def close(self) -> None:
        self._closed = True
        await stop(*self._tasks)

    def resume(self) -> None:
        """At a start, once the tabs are: the latest remote runs as the last run left them, and the checks it left
        owed taken up, CHECKING at most at once and PER_PROVIDER of them for one provider (the others as those end),
        each tab kept off the payment retry until its checks end.  One whose tab was paid or dropped is forgotten."""
        runs = self.compute.store.remote_runs()[-RECENT:]
        for _, pid, provider in runs:
            self._note(pid.hex(), provider)
        self._runs = runs[-1][0] + 1 if runs else 0
        owed = self.owed.resume()
        if owed:
            log.info("taking up %s of remote answers the last stop left owed", counted(owed, "check"))
        self._next_owed()

    def _read_owed(self, tab: OpenTab, check_id: bytes, check: dict | None) -> Answered | None:
        """A check owed read back from its row (OwedChecks); None if it cannot be: its tab is then paid as
        answered."""
        owed = _owed(check)
        if owed is None:
            log.error("a check owed of an answer on tab %s cannot be read: the tab is paid as answered",
                      tab.auth.id.hex())
            self.tabs.checked(tab, rows=self.compute.store.owed_check_row(tab.auth.id, check_id, None))
            return None
        provider, call, price, facts, tried = owed
        return Answered(provider, None, call, price, tab, facts, check_id, tried)

    def _next_owed(self) -> None:
        """Start the waiting checks that the bounds leave room for."""
        while not self._closed and len(self._tasks) < CHECKING:
            waiting = self.owed.next(lambda provider: self._of.get(provider, 0) < PER_PROVIDER)
            if waiting is None:
                return
            self.start(*waiting)

    async def _sampled(self, answered: Answered, now: bool) -> None:
        # The tab must be closed while its authorization is valid: the checks of its calls end well before.
        deadline = answered.tab.auth.expires_at - TAB_TTL / 2
        try:
            while answered.tried < TRIES:
                wait = 0.0 if now or not answered.tried else BACKOFF * 2 ** (answered.tried - 1)
                if answered.tried and time.time() + wait >= deadline:
                    break
                if wait:
                    await asyncio.sleep(wait)
                now = False
                try:
                    await self._once(answered)
                    return
                except PeerUnreachable:
                    pass  # counted, on disk too, by `_once`
            self.counts["unshown"] += 1
            log.warning("provider %s never showed its record %s of a call it answered (asked %d times): the call's "
                        "tab is not paid", answered.provider, answered.facts["provenance"], answered.tried)
            self._settle(answered, unpaid=True)
        except XscError:
            pass  # a strike, logged by `_check`
        except Exception:
            log.exception("checking %s's record of a call failed", answered.provider)

    async def _once(self, answered: Answered) -> dict[str, Any]:
        """The provider's signed record of the call, held to it and to its answer, then kept: ForgedResult (and a
        strike, and the call's tab not paid) if it does not hold or the provider does not serve it;
        PeerUnreachable if it cannot be had now (the check is still pending: asked again, `_sampled`; the ask counted
        in its row, so that TRIES asks in all are made, however many times the gateway restarts)."""
        try:
            signed = await self._check(answered)
        except ForgedResult:
            self._settle(answered, unpaid=True, struck=True)
            raise
        except PeerUnreachable:
            answered.tried += 1
            self.tabs.tallies.write_with(self._owed_row(answered, answered.to_json()))
            raise
        except asyncio.CancelledError:
            raise  # still owed
        except BaseException:
            self._settle(answered)  # a check that failed here says nothing against the provider
            raise
        self._settle(answered)
        return signed

    def _settle(self, answered: Answered, unpaid: bool = False, struck: bool = False) -> None:
        if not answered.settled:
            answered.settled = True
            self.owed.done(answered.check_id)
            self.tabs.checked(answered.tab, unpaid=unpaid, struck=struck, rows=self._owed_row(answered, None))

    async def _check(self, answered: Answered) -> dict[str, Any]:
        provider, pid = answered.provider, answered.facts["provenance"]
        try:
            if pid is None:
                raise PeerRefused(f"it named no run ({answered.facts.get('named')})")
            signed = await fetch_record(self.client, answered.url or self._url(provider), provider, pid)
        except PeerUnreachable as err:
            self.counts["unreached"] += 1
            log.warning("provider %s's record %s of a call it answered could not be fetched: %s", provider, pid, err)
            raise
        except PeerRefused as err:
            status = err.details.get("peer_status")
            if type(status) is int and (status == 429 or status >= 500):  # busy, or failing: it said nothing of the run
                self.counts["unreached"] += 1
                log.warning("provider %s could not show its record %s of a call it answered: %s", provider, pid, err)
                raise PeerUnreachable(f"provider {provider} could not show its record {pid} of the call now ({err})",
                                      hint="it is asked again; the call is paid only once its record is shown "
                                           "(/v1/node/status: remote_compute.checks)") from None
            self.counts["unserved"] += 1
            # an answer struck already (not of a record's shape, over its bound) is one misbehaviour, not two
            raise self._struck(provider, f"provider {provider} does not serve its record of a call it answered "
                                         f"({err})", counted=isinstance(err, PeerMisbehaved) and err.struck) from None
        self.counts["checked"] += 1
        why = _unsigned(signed, provider, self.me) or self._unlike(signed["record"], answered)
        if why is None and self._named[pid, provider] > 1:
            why = "is of a run it answered another call with as well"
        if why is not None:
            raise self._struck(provider, f"provider {provider}'s signed record {pid} {why}")
        self.counts["held"] += 1
        self._keep(pid, signed)
        return signed

    def _note(self, pid: str, provider: str) -> None:
        """A remote run answered: among the RECENT latest, the oldest forgotten."""
        if len(self._recent) == RECENT:
            gone = self._recent[0]
            if self._named[gone] > 1:
                self._named[gone] -= 1
            else:
                del self._named[gone]
        self._recent.append((pid, provider))
        self._named[pid, provider] += 1

    def _url(self, provider: str) -> str:
        try:
            return self.url_of(provider)
        except PeerNotFound:
            raise PeerUnreachable(f"provider {provider} is not among the known peers now",
                                  hint="it is asked again; the call is paid only once its record is shown") from None

    def _keep(self, pid: str, signed: dict[str, Any]) -> None:
        """Keep a provider's record this node checked, unless dated too far ahead for the sweep to reach it."""
        key = bytes.fromhex(pid)
        if provenance.id_time_ns(key) <= time.time_ns() + KEEP_AHEAD:
            self.compute.store.keep_run(key, signed)

    def _struck(self, provider: str, why: str, counted: bool = False) -> ForgedResult:
        """`counted`: the strike was made already (net/peer_client.py), not made again."""
        self.counts["struck"] += 1
        log.error("%s: struck", why)
        if not counted:
            self.on_strike(provider, why)
        return ForgedResult(f"{why}: the provider is struck", hint="invoke again (another provider)")

    def _unlike(self, record: dict[str, Any], answered: Answered) -> str | None:
        """How the record differs from the call sent and the answer given, if it does."""
        call, facts = answered.call, answered.facts
        args, argv = self.compute.recorded_args(call)
        deal = record.get("deal") if isinstance(record.get("deal"), dict) else {}
        wasi = record.get("wasi") if isinstance(record.get("wasi"), dict) else {}
        if record.get("id") != facts["provenance"] or record.get("module") != call.module \
                or record.get("function") != call.function or record.get("args") != args \
                or (argv is not None and wasi.get("argv") != argv) or (argv is None) != ("wasi" not in record):
            return "is of another call (module, entrypoint or arguments)"
        if deal.get("authorization") != answered.tab.auth.id.hex() or deal.get("gateway") != self.me \
                or record.get("requester") != self.payer:
            return "was not made for this call's tab (another authorization or payer)"
        trap = facts["trap"]
        if record.get("outcome") != ("trap" if trap is not None else "ok") \
                or (trap is None and not _same(_digest(record.get("results")), facts["results"])) \
                or (trap is not None and (not isinstance(record.get("trap"), dict)
                                          or not _same(_digest(record["trap"].get("kind")), trap))):
            return "signs other results than the call was answered"
        if not _same(record.get("fuel_consumed"), facts["fuel_consumed"]) \
                or not _same(record.get("charge"), facts["charge"]):
            return "signs other fuel or another charge than the call was answered"
        if argv is not None and (not _same(wasi.get("exit_code"), facts["exit_code"]) or not all(
                _same(wasi.get(f"{s}_sha256"), facts[f"{s}_sha256"]) for s in ("stdout", "stderr"))):
            return "signs another exit code or other streams than the call was answered"
        return unpriced(record, answered.price, self.compute.memory_price) \
            or unlimited(record, call)

    # --- a record asked for -----------------------------------------------------------------------------
    async def provenance(self, provenance_id: str, provider: str | None = None) -> dict[str, Any]:
        """The signed record `provenance_id`: this node's, one it checked of a run elsewhere, or one fetched from the
        provider that ran it (`provider`, or the one that answered it among the latest remote runs)."""
        try:
            return self.compute.provenance_records.get(provenance_id)
        except ProvenanceNotFound:
            pass
        pid = provenance.parse_id(provenance_id).hex()
        kept = self.compute.store.kept_run(bytes.fromhex(pid))
        if kept is not None:
            return kept
        provider = provider or next((p for r, p in reversed(self._recent) if r == pid), None)
        if provider is None:
            raise ProvenanceNotFound(f"no provenance record {provenance_id} on this node, nor of a run it sent "
                                     "elsewhere lately", hint=NOT_HERE_HINT)
        try:
            signed = await fetch_record(self.client, self.url_of(provider), provider, pid)
        except PeerRefused as err:
            raise ProvenanceNotFound(f"provider {provider} shows no provenance record {pid} to this node ({err})",
                                     hint="it is kept compute.record_retention after its run; only the node that "
                                          "paid for a run is shown it") from None
        why = _unsigned(signed, provider, self.me)
        if why is None and signed["record"].get("id") != pid:
            why = "is of another run"
        if why is not None:
            raise self._struck(provider, f"provider {provider}'s signed record {pid} {why}")
        self._keep(pid, signed)
        return signed

    # --- the provider's side ---------------------------------------------------------------------------
    def served(self, peer: str, provenance_id: str) -> dict[str, Any]:
        """This node's signed record of a run, to the node that paid for it (the gateway whose tab it ran on, or
        its payer); 404 for any other, as for a record this node does not have (or no longer:
        compute.record_retention), so that no other node learns which runs there were."""
        signed = self.compute.provenance_records.get(provenance_id)
        record = signed["record"]
        deal = record.get("deal") if isinstance(record.get("deal"), dict) else {}
        if peer not in (deal.get("gateway"), record.get("requester")):
            raise provenance_not_found(provenance_id)
        return signed


def parse_verify(value: Any) -> bool:
    """An invoke's `verify`: whether its answer waits for its provider's record to be checked."""
    if type(value) is not bool:
        raise InvalidArgument(f"verify must be true or false, not {value!r}", hint="e.g. xsc compute invoke --verify")
    return value


def _facts(run: dict[str, Any], trap: Any) -> dict[str, Any]:
    """What an answer said that its provider's record must sign, in a bounded size whatever the provider sent: its
    run's id, its results (hashed) or its trap's kind (hashed), its fuel and charge, a WASI run's exit code and the
    hashes of its streams."""
    pid, facts = run.get("provenance"), {}
    if not provenance.is_id(pid):
        pid, facts["named"] = None, repr(pid)[:40]
    streams = {s: run.get(s, "") for s in ("stdout", "stderr")}
    return {**facts, "provenance": pid, "results": _digest(run.get("results")),
            "trap": None if trap is None else _digest(trap.get("kind")) if isinstance(trap, dict) else _UNLIKE,
            "fuel_consumed": _count(run.get("fuel_consumed")), "charge": _count(run.get("charge")),
            "exit_code": _count(run.get("exit_code")),
            **{f"{s}_sha256": provenance.stream_sha256(v) if type(v) is str else _UNLIKE for s, v in streams.items()}}


def _same(signed: Any, fact: Any) -> bool:
    """Whether a record's value (or its `_digest`) is what the answer said (`_facts`)."""
    return fact != _UNLIKE and signed == fact


def _digest(value: Any) -> str:
    """The hash of a value's canonical form (what a record signs is in it: an answer's value that is not, is _UNLIKE)."""
    try:
        return hashlib.sha256(codec.canonical(value)).hexdigest()
    except (TypeError, ValueError, RecursionError):
        return _UNLIKE


def _count(value: Any) -> Any:
    """A figure of an answer as kept: a record's figures are whole numbers of at most 64 bits, or absent."""
    return value if value is None or (type(value) is int and -2**63 <= value < 2**64) else _UNLIKE


_FACTS = frozenset(_facts({"provenance": "0" * 32}, None))  # (and "named", of a run named otherwise)


def _owed(check: dict | None) -> tuple[str, InvokeCall, int, dict[str, Any], int] | None:
    """A check owed as it was written (Answered.to_json), read back: (provider, call, price, facts, asks that went
    unanswered); None if it cannot be read."""
    tried = check.get("tried", 0) if isinstance(check, dict) else None
    if check is None or type(check.get("provider")) is not str or type(check.get("price")) is not int \
            or not isinstance(check.get("facts"), dict) or not _FACTS <= set(check["facts"]) \
            or type(tried) is not int or tried < 0:
        return None
    try:
        call = parse_invoke(check.get("call"))
    except XscError:
        return None
    return check["provider"], call, check["price"], check["facts"], tried


def _unsigned(signed: Any, provider: str, me: str) -> str | None:
    """Why `signed` is not `provider`'s signed record of a run made for this node (`me`), if it is not."""
    record = signed.get("record") if isinstance(signed, dict) else None
    if not isinstance(record, dict) or provenance.respelled(signed) is not None:
        return "is not in the one form its signature covers"
    if record.get("node") != provider or not provenance.is_valid(signed):
        return "is not signed by it"
    deal = record.get("deal") if isinstance(record.get("deal"), dict) else {}
    if deal.get("gateway") != me:
        return "is of a run made for another node"
    return None


def unpriced(record: dict[str, Any], price: int, memory_price: int) -> str | None:
    """How a provider's signed record charges otherwise than the deal (`price` a million fuel, memory at most
    `memory_price` a page-second) or than its own figures make (ledger/pricing.price_compute), if it does."""
    figures = [record.get(k) for k in ("fuel_consumed", "fuel_limit", "fuel_price", "memory_pages", "wall_time_us",
                                       "timeout_us", "memory_price")]
    if not all(type(f) is int and f >= 0 for f in figures):
        return "lacks the figures its charge is made from"
    fuel, fuel_limit, fuel_price, pages, wall_us, timeout_us, its_memory_price = figures
    if fuel_price != price or its_memory_price > memory_price or fuel > fuel_limit:
        return f"charges at {fuel_price} a million fuel and {its_memory_price} a page-second, not the deal's " \
               f"{price} and at most {memory_price}"
    if record.get("charge") != price_compute(fuel, fuel_price, pages, min(wall_us, timeout_us), its_memory_price):
        return "charges other than its own fuel, memory and time make"
    return None


def unlimited(record: dict[str, Any], call: InvokeCall) -> str | None:
    """How a provider's signed record runs past what the call let it, if it does: under another limit than one the
    call named (a provider runs under exactly the limits a call names, or refuses it: compute/limits.resolve), or in
    more memory than its own limit, or out of fuel with fuel left.  Its charge alone would not say so: one within the
    call's budget can claim more fuel than the call let it burn, and less memory and time."""
    named = resolve(UNBOUNDED, call.fuel, call.memory, call.timeout)
    for field, asked, allowed in (("fuel_limit", call.fuel, named.fuel), ("memory_limit", call.memory, named.memory),
                                  ("timeout_us", call.timeout, round(named.timeout * 1e6))):
        if asked is not None and record.get(field) != allowed:
            return f"runs under {field} {repr(record.get(field))[:40]}, not the {allowed} the call named"
    memory, pages = record.get("memory_limit"), record.get("memory_pages")
    if type(memory) is not int or type(pages) is not int or pages > memory // PAGE:
        return f"uses {repr(pages)[:40]} pages of memory, past its memory limit of {repr(memory)[:40]} bytes"
    return contradicted(record)  # (the limit its trap names is then its own: trap_limits.py)


__all__ = ["Answered", "CHECKING", "KEEP_AHEAD", "RECENT", "SpotChecks", "parse_verify", "unlimited", "unpriced"]
