"""Paid invokes: the market says who runs a call and at what price; the run is paid through the ledger.

On this node: the whole fuel budget is held before any work; once the run is metered, what it owes is written
with its provenance record (one synced group commit) before the answer, only that amount stays held, and the
payer's tab with this node is settled as one ledger transfer per interval (ledger/tabs.py).  On another node the calls are paid through a tab (remote_tabs.py): one authorization per (gateway,
provider) per interval, each call run against it, one receipt and one payment when it is closed.  A
provider that lacks the module answers 404 `module-not-found`; the gateway sends it and asks once more.
Calls to one provider that come while a request to it is in flight go together in one signed batch
(net/compute.py: InvokeBatcher); the provider runs each as if it had come alone (`run_batch_for_peer`).
The older one-authorization-per-call form ({"call", "price", "authorization", "deal"} without "tab") is
still served: one run per authorization, checked before it runs.  Routes: node/http/compute.py and
node/http/modules.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any


from ..db import Rows
from ..errors import (AuthorizationExpired, AuthorizationReplayed, DealRefused, Forbidden, InsufficientCredit,
                      InvalidArgument, ModuleNotFound, PeerRefused, PeerUnavailable, PeerUnreachable,
                      PrepaymentRequired, Trap, XscError)
from ..identity import Identity, public_id, verify
from ..ledger.core.model import Authorization, Receipt, decode_authorization, format_credits
from ..ledger.core.rules import check_publishable
from ..ledger.service import LedgerService
from ..ledger.settlement import Payments
from ..ledger.store import Count
from ..ledger.tabs import Tabs, owed_entry
from ..market.dealing import Dealing
from ..market.service import MarketService
from ..net.compute import GATHER, MAX_BATCH_CALLS, InvokeBatcher, push_module
from ..net.peer_client import PeerClient, dumps
from ..storage.strangers import ProviderTerms
from ..tasks import in_pool
from ..units import counted, credits_argument, format_size
from .remote_sends import CallEnd, CallSends
from .provider_tabs import ProviderTabs, compile_price
from .pushes import PUSHED_TTL, ModulePushes
from .remote_tabs import GatewayTabs
from .spot_checks import SpotChecks, parse_verify
from .trap_limits import asked_of, fields, told, without_limits
from .service import ComputeService, InvokeCall, parse_invoke

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 300.0
MAX_PRICE = 10**12  # micro-credits per million fuel: far above any real bid
MAX_FAILOVERS = 3  # providers left out, one after the other, when they cannot be reached at all
VERIFIED_AUTHORIZATIONS = 1024  # checked authorizations kept (a tab's calls carry the same one)


def _call_json(call: InvokeCall) -> dict[str, Any]:
    out = {"module": call.module, "function": call.function, "args": call.args, "wasi": call.wasi}
    out.update({k: v for k, v in (("fuel", call.fuel), ("memory", call.memory), ("timeout", call.timeout))
                if v is not None})
    return out


def parse_max_price(value: Any, default: int) -> int:
    if value is None:
        return default
    if type(value) is not int or not 0 <= value <= MAX_PRICE:
        raise InvalidArgument(f"max_price must be a whole number of micro-credits per million fuel, not {value!r}",
                              hint="e.g. --max-price 50")
    return value


class PaidCompute:
    def __init__(self, *, compute: ComputeService, market: MarketService, dealing: Dealing, ledger: LedgerService,
                 payments: Payments,
                 tabs: Tabs, gateway_tabs: GatewayTabs, provider_tabs: ProviderTabs, payer: Identity, node: Identity, peers: Any, client: PeerClient, default_bid: int,
                 terms: ProviderTerms, on_invoked: Callable[[str], None] = lambda label: None, trust: Any = None,
                 check_rate: float = 0.0, on_strike: Callable[[str, str], None] = lambda peer, why: None) -> None:
        self.compute = compute
        self.provider_terms = terms  # those that want prepayment are passed over a while
        self.trust = trust  # xsc.ledger.trust.TrustLines: a gateway's runs here stay within its line (None: no limit)
        self.market = market
        self.dealing = dealing  # who runs a call, at what price
        self.ledger = ledger
        self.payments = payments
        self.tabs = tabs
        self.gateway_tabs = gateway_tabs  # this node's tabs with providers elsewhere (it pays)
        self.provider_tabs = provider_tabs  # gateways' tabs with this node (it is paid)
        self.payer = payer  # the local user's account
        self.node = node  # this node's account and identity
        self.peers = peers  # xsc.peers.PeerService: where a provider is
        self.client = client
        self.default_bid = default_bid
        self.on_invoked = on_invoked  # (outcome label): the node's metrics
        payments.add_check("compute", self._refuse_separate_receipt)
        self._running: set[bytes] = set()  # authorizations whose run is under way here (provider side)
        self.pushes = ModulePushes(compute=compute, provider_tabs=provider_tabs, trust=trust)  # modules peers push
        self._verified: dict[str, Authorization] = {}  # authorizations (their hex) checked to pay this node
        # Tab calls to one provider go in self-clocked batches; what they may cost is on disk before each is sent.
        self.batcher = InvokeBatcher(client, gather=GATHER, before_send=gateway_tabs.tallies.write)
        self.sends = CallSends(self.batcher, gateway_tabs)  # each seen to its end, its caller gone or not
        self.checks = SpotChecks(compute=compute, client=client, tabs=gateway_tabs, me=node.id, payer=payer.id,
                                 rate=check_rate, url_of=lambda provider: peers.peer(provider).url, on_strike=on_strike)

    def loops(self) -> dict[str, Any]:
        return {"pushed-modules-sweep": self._sweep_loop}

    def start(self) -> None:
        self.provider_tabs.sweep()  # run records of tabs settled just before a crash
        self.gateway_tabs.start()
        self.checks.resume()  # (once the tabs are: those of checks a stop left owed wait for them)

    async def close(self) -> None:
        await self.batcher.close()
        await self.sends.close()
        await self.checks.close()
        await self.gateway_tabs.close()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                removed = await self.pushes.sweep()
                if removed:
                    log.info("removed %s peers pushed that no call used for %d s", counted(len(removed), "module"),
                             PUSHED_TTL)
                await self.expire_tabs()
            except Exception:
                log.exception("sweeping pushed modules and expired tabs failed")

    async def expire_tabs(self, now: float | None = None) -> int:
        """Forget the gateways' tabs here whose authorization expired unclosed, and their run records; how many."""
        gone = self.provider_tabs.expire(time.time() if now is None else now)
        for auth_id in gone:
            await in_pool(None, self.provider_tabs.prune, auth_id)
        if gone:
            log.info("forgot %s whose gateway let them expire unclosed", counted(len(gone), "tab"))
        return len(gone)

    async def _refuse_separate_receipt(self, sender, authorization, amount, usage) -> None:
        raise Forbidden("a compute receipt is signed with the run it pays for, never on its own",
                        hint="fetch it with GET /v1/peer/ledger/receipts/{authorization id}")

    # --- the user's invoke -------------------------------------------------------------------
    async def invoke(self, body: Any) -> dict[str, Any]:
        """Run a call for the local user where the market says, paid; the run's JSON (a trap is raised)."""
        call, bid, verify = self._parse(body)
        # The market says who runs it and at what price (remote when this node offers no compute).  A provider
        # that cannot be reached at all (nothing was sent), or that wants this node to prepay (a stranger to it),
        # is left out and the next one is asked: a stranger joining the network does not stop this node's calls.
        # One that wanted prepayment lately is passed over while another takes the call (ProviderTerms.refuses).
        failed: set[str] = set()
        over = self.provider_terms.passing_over()
        refused: PrepaymentRequired | None = None
        call_fuel = self.compute.limits(call).fuel
        while True:
            try:
                assignment = await self.dealing.compute_deal(call_fuel, bid, frozenset(failed) | over.left_out())
            except XscError:
                if over.exhausted():  # none but them: asked again, the one that still wants prepayment says so
                    continue
                if refused is None:
                    raise
                raise refused from None  # no other provider: the one that wanted prepayment says what to do
            deal = {"need": assignment.need_id, "provider": assignment.provider, "price": assignment.price,
                    "allocated": assignment.allocated}
            if assignment.provider == self.node.id:
                break
            end = CallEnd(self.dealing, assignment, call_fuel)  # once the call is over (remote_sends.py)
            try:
                if await over.passes(assignment.provider):
                    continue  # (what it held of the allocation is free for the next one: below)
                result = await self.invoke_remote(assignment.provider, assignment.price, call, deal, verify, end)
                end(result.get("fuel_consumed"))  # it ran: the fuel it used was served (from the allocation, if there)
            except Trap as err:  # as was a trapped call's
                end(err.details.get("fuel_consumed"))
                raise
            except PeerUnreachable as err:
                if err.details.get("sent") is not False or len(failed) >= MAX_FAILOVERS:
                    raise
                log.warning("provider %s unreachable before the call was sent: trying another",
                            assignment.provider)
                failed.add(assignment.provider)
                self.dealing.failed(assignment.provider)  # nor counted as serving this node's needs
                continue
            except PrepaymentRequired as err:  # refused before it ran: nothing is owed for it
                self.provider_terms.wanted_prepayment(assignment.provider, err)
                if len(failed) >= MAX_FAILOVERS:
                    raise
                log.info("provider %s wants prepayment for this call: trying another", assignment.provider)
                failed.add(assignment.provider)
                refused = err
                continue
            finally:  # failed, refused, passed over or cancelled: it holds its part of the allocation no more
                end()  # (unless sent: then until its answer comes, whether its caller waits or not: `CallEnd.later`)
            self.on_invoked("remote")
            return result
        # The most the call may cost (its whole fuel budget, its memory limit for its whole timeout: what a
        # trapped call may be charged) is held before any work, or the call is refused.
        budget = self.compute.budget(call, assignment.price)
        try:
            await self.ledger.hold(self.payer, budget)
        except InsufficientCredit as err:
            raise worst_case_refused(self.compute, err, call, budget) from None
        try:
            run = await self.compute.invoke(call, requester=self.payer.id, rate=assignment.price, deal=deal,
                                            owed=self._owed)
        except BaseException:  # refused before it ran (bad arguments, no such export), or not recorded: unpaid
            self.ledger.release(self.payer, budget)
            raise
        self.on_invoked(run.label)
        self.market.offer.note_fuel(run.fuel_consumed)
        # Returned or trapped, the run used fuel: it is paid for either way, on the payer's tab with this node
        # (one ledger transfer per interval covers every run on it; ledger/tabs.py).
        self.tabs.owe(self.payer, self.node, bytes.fromhex(run.provenance_id), run.charge, run.fuel_consumed,
                      held=budget)
        error = run.error(self.compute.ceiling)
        if error is not None:
            raise error
        return {**run.to_json(), "provider": self.node.id, "deal": deal}

    async def replay(self, provenance_id: str) -> dict[str, Any]:
        """Re-run a call recorded here, from its provenance record, as a paid invoke on this node; compare.

        Identical means the same outcome, the same results bit for bit (floats by their exact text, NaN
        payloads included) and the same fuel, on an engine with the same fingerprint."""
        record = self.compute.provenance_records.get(provenance_id)["record"]
        _replayable(record, self.payer.id)
        wasi = record.get("wasi")
        args = wasi["argv"][1:] if wasi and not record["args"] else [a["value"] for a in record["args"]]
        call = InvokeCall(record["module"], record["function"], args, record["fuel_limit"], record["memory_limit"],
                          record["timeout_us"] / 1e6, bool(wasi))
        deal = {"replay_of": record["id"]}
        budget = self.compute.budget(call, self.default_bid)
        await self.ledger.hold(self.payer, budget)
        try:
            run = await self.compute.invoke(call, requester=self.payer.id, rate=self.default_bid, deal=deal,
                                            owed=self._owed)
        except BaseException:
            self.ledger.release(self.payer, budget)
            raise
        self.tabs.owe(self.payer, self.node, bytes.fromhex(run.provenance_id), run.charge, run.fuel_consumed,
                      held=budget)
        again = self.compute.provenance_records.get(run.provenance_id)["record"]
        differences = [name for name in ("outcome", "results", "trap", "fuel_consumed")
                       if _comparable(record.get(name)) != _comparable(again.get(name))]
        same_engine = record.get("engine") == again.get("engine")
        return {"original": record["id"], "replay": run.provenance_id, "identical": not differences,
                "differences": differences, "same_engine": same_engine, "engine": again["engine"],
                "outcome": again["outcome"], "results": again.get("results"), "fuel_consumed": again["fuel_consumed"],
                "charge": run.charge}

    def _owed(self, run) -> Rows:
        """What a run here owes this node: on disk with the run's record, before the answer."""
        return (owed_entry(bytes.fromhex(run.provenance_id), self.payer.public_key, self.node.public_key, run.charge,
                           run.fuel_consumed),)

    def _parse(self, body: Any) -> tuple[InvokeCall, int, bool]:
        """The local user's call, the most it pays and whether its answer is verified."""
        bid, verify = self.default_bid, False
        if isinstance(body, dict):
            body = dict(body)
            bid, verify = parse_max_price(body.pop("max_price", None), bid), parse_verify(body.pop("verify", False))
        call = parse_invoke(body)
        if not call.function:  # refused naming the module's functions, before any deal is made for it
            self.compute.check(call)
        return call, bid, verify

    async def invoke_remote(self, provider: str, price: int, call: InvokeCall, deal: dict[str, Any],
                            verify: bool = False, end: CallEnd | None = None) -> dict[str, Any]:
        """Run `call` on `provider` at `price` (micro-credits per million fuel), paid on this node's open tab with
        it (remote_tabs.py: one authorization and one ledger transfer per interval); returns the run's JSON with
        the deal and the tab's authorization.  A trap is raised after it is accounted.  Its answer is held to the
        provider's signed record if `verify`, else maybe later (spot_checks.py).  Its caller cancelled once it was
        sent, its answer is accounted as it comes, and `end` told then (remote_sends.py)."""
        self.compute.check(call)  # bad arguments are refused here, before anything is authorized or sent
        url = self.peers.peer(provider).url
        budget = self.compute.budget(call, price)  # at this node's memory price: the provider may charge less
        try:
            tab = await self.gateway_tabs.reserve(provider, price, budget, functools.partial(
                compile_room, self.compute, call.module, price))
        except InsufficientCredit as err:
            raise worst_case_refused(self.compute, err, call, budget) from None
        body = {"call": _call_json(call), "price": price, "authorization": tab.hex, "deal": deal, "tab": True,
                "memory_price": self.compute.memory_price}
        late = functools.partial(self.checks.taken_late, provider, url, call, price, tab, budget, verify)
        try:  # (what it raises is accounted on the tab already)
            answer = await self.sends.send(url, provider, body, lambda: self.compute.store.wasm(
                bytes.fromhex(call.module)), call.wasi, tab, budget, late, end)
        except PeerRefused as err:  # refused before it ran: nothing is owed for it
            raise relayed(provider, err, budget) from None
        run = answer["run"]
        checked = self.checks.taken(provider, url, call, price, tab, budget, answer, verify)
        tab_id = tab.auth.id.hex()
        run.update(provider=provider, deal={**deal, "authorization": tab_id}, tab=tab_id)
        run.pop("verified", None)  # (this node's word alone, once it checked the provider's record)
        if checked is not None and await self.checks.begin(checked, verify):
            run["verified"] = True
        if "trap" in answer:  # the limit it names this node's own, its value the call's or its checked record's
            kept = self.compute.store.kept_run(bytes.fromhex(run["provenance"])) if "verified" in run else None
            trap = told(answer["trap"] if isinstance(answer["trap"], dict) else {}, asked_of(
                call.fuel, call.memory, call.timeout), (kept or {}).get("record"), run.get("fuel_consumed"),
                ceiling=self.compute.ceiling)
            facts = {k: v for k, v in without_limits(run).items() if k not in ("kind", "hint", "message")}
            raise Trap(str(trap.get("message", "the call trapped")), kind=trap.get("kind"), hint=trap.get("hint"),
                       **facts, **fields(trap))
        return run

    async def push(self, url: str, provider: str, call: InvokeCall, tab: Any = None,
                   unpaid: Callable[[], XscError] | None = None) -> None:
        """Send `provider` the module of work it was matched for and lacks (it answered module-not-found), its compile
        charged on `tab` (the work's: GatewayTabs.compile_on) if given.  A tab that cannot pay it: the push names no
        tab (its compile charged on this node's trust line there), or, given `unpaid`, is not sent: `unpaid()` is
        raised."""
        def charge(wasm: bytes) -> str | None:
            named = self.gateway_tabs.compile_on(tab, call.module, wasm)
            if named is None and unpaid is not None:
                raise unpaid()
            return named

        await push_module(self.client, url, provider, lambda: self.compute.store.wasm(bytes.fromhex(call.module)),
                          call.wasi, None if tab is None else charge)

    # --- the provider's side -------------------------------------------------------------------
    async def _run_on_tab(self, gateway: str, call: InvokeCall, price: int, deal: dict, auth,
                          batch: _Batch | None = None) -> dict[str, Any]:
        """A call on a gateway's tab: runs while the tab's cap covers it; paid when the tab is closed.  In a
        `batch`, it runs among the batch's other calls, and what it used is written on the trust line with theirs."""
        budget = self.compute.budget(call, price)
        self.reserve(gateway, budget)  # first: a call its gateway cannot pay for opens no push either
        if not self.compute.registry.has_module(call.module):
            self.used(gateway, budget, None)
            self.pushes.expect(gateway, call.module, price, auth)
            raise not_here(call.module)
        run = None
        try:
            tab = await self.provider_tabs.reserve(auth, budget, gateway)
            try:
                run = await self.compute.invoke(call, requester=public_id(auth.payer), rate=price,
                                                deal={**deal, "gateway": gateway, "price": price,
                                                      "authorization": auth.id.hex()},
                                                owed=lambda r: self.provider_tabs.owed(auth, r, gateway),
                                                together=batch is not None)
            finally:
                self.provider_tabs.ran(tab, budget, run)
        finally:
            if batch is not None and run is not None:
                batch.used(budget, run.charge)
            else:
                self.used(gateway, budget, run)
        self.market.offer.note_fuel(run.fuel_consumed)
        answer: dict[str, Any] = {"run": run.to_json(), "tab": {"authorization": auth.id.hex(), "total": tab.total,
                                                                "count": tab.count}}
        error = run.error()
        if error is not None:
            answer["run"] = dict(error.details)
            answer["trap"] = {"kind": run.outcome.trap_kind, "message": error.message, "hint": run.outcome.hint}
        return answer

    def authorization(self, text: Any) -> Authorization:
        """The signed authorization a call came with, decoded and checked: it pays this node and its payer
        signed it.  A tab's calls all carry the same one: its bytes are checked once (the same bytes verify
        the same way every time), the first time they come."""
        auth = self._verified.get(text) if type(text) is str else None
        if auth is not None:
            return auth
        try:
            auth = decode_authorization(bytes.fromhex(text))
        except (ValueError, TypeError):
            raise InvalidArgument("authorization must be the hex of a signed authorization") from None
        check_publishable(auth)
        if auth.payee != self.node.public_key or not verify(auth.payer, auth.signature, auth.body):
            raise Forbidden("the authorization does not pay this node, or its payer did not sign it")
        if len(self._verified) >= VERIFIED_AUTHORIZATIONS:
            self._verified.clear()
        self._verified[text] = auth
        return auth

    def reserve(self, gateway: str, budget: int, what: str = "a call's fuel budget") -> None:
        """A gateway's work is taken on only within its trust line here (402 prepayment-required past it)."""
        if self.trust is not None:
            self.trust.reserve(gateway, budget, what)

    def release(self, gateway: str, budget: int) -> None:
        """A gateway's work reserved here did not run: its budget goes back to its trust line."""
        self.used(gateway, budget, None)

    def used(self, gateway: str, budget: int, run: Any) -> None:
        """A gateway's run ended (None: it did not run): what it cost is used on its trust line, its budget released."""
        if self.trust is None:
            return
        if run is None:
            self.trust.release(gateway, budget)
        else:
            self.trust.use(gateway, run.charge, reserved=budget)

    def _count(self, gateway: str) -> Count | None:
        """What the gateway paid by a receipt of this node's, counted on its line in the receipt's own batch (a request
        a stop cuts short as the receipt is written leaves both or neither)."""
        return None if self.trust is None else functools.partial(self.trust.counting, "paid", gateway)

    def _noted(self, gateway: str) -> Callable[[Receipt], None]:
        """What follows a receipt of this node's for `gateway`'s work once it is written, even if the request that
        asked for it was cut short as it was: the market's note that the gateway paid (its recognition here)."""
        return lambda receipt: self.market.note_paid(gateway, receipt.amount, by_them=True)

    async def close_tab(self, gateway: str, body: Any) -> dict[str, Any]:
        """A gateway closes its tab here: this node's receipt for everything it ran under it."""
        if not isinstance(body, dict) or not isinstance(body.get("authorization"), str):
            raise InvalidArgument('send {"authorization": HEX}')
        try:
            auth = decode_authorization(bytes.fromhex(body["authorization"]))
        except (ValueError, TypeError, XscError):
            raise InvalidArgument("authorization must be the hex of a signed authorization") from None
        check_publishable(auth)
        if auth.payee != self.node.public_key or not verify(auth.payer, auth.signature, auth.body):
            raise Forbidden("the authorization does not pay this node, or its payer did not sign it")
        # The runs answered under it are on it (web functions': see append).  Only a tab its closer runs work under
        # waits for the journal: any key signs an authorization, and a flush is a synced write at once.
        if self.provider_tabs.running(auth, gateway):
            await self.compute.journal.flush()
        # Noted once the receipt that closed it is written, even if this request is cut short as it is; a repeated
        # close (by its gateway, or any node replaying it) raises no recognition again.
        receipt, first = await self.provider_tabs.close_once(auth, sender=gateway if self.trust is not None else None,
                                                             closer=gateway, count=self._count(gateway),
                                                             written=self._noted(gateway))
        if not first and self.trust is not None:  # counted with the receipt that closed it (this is then a no-op)
            self.trust.paid(gateway, auth, receipt.amount)
        return {"receipt": receipt.encode().hex()}

    async def run_batch_for_peer(self, gateway: str, body: Any) -> list[dict[str, Any] | XscError]:
        """Run the tab calls of a gateway's batch (net/compute.py: InvokeBatcher): each is checked and run
        exactly as if it had come alone (its own authorization, tab, trust line, module, limits), concurrently;
        one answer or refusal per call, in order.  A refused or trapped call fails alone.  The gateway sends
        nothing more until the whole batch is answered, and every record of it is durable first (usually in one
        group, signed as it is written: compute/journal.py)."""
        calls = body.get("calls") if isinstance(body, dict) else None
        if not isinstance(calls, list) or set(body) != {"calls"}:
            raise InvalidArgument('send {"calls": [CALL, ...]}, each CALL a tab call as POST /v1/peer/compute/invoke '
                                  'takes it')
        if not 1 <= len(calls) <= MAX_BATCH_CALLS:
            raise InvalidArgument(f"a batch holds 1 to {MAX_BATCH_CALLS} calls, not {len(calls)}",
                                  hint="send fewer calls at once", max_calls=MAX_BATCH_CALLS)
        batch = _Batch() if len(calls) > 1 else None
        try:
            return list(await asyncio.gather(*(self._batched(gateway, call, batch) for call in calls)))
        finally:
            if batch is not None and batch.budgets and self.trust is not None:  # one write for the whole batch
                self.trust.use(gateway, batch.charges, reserved=batch.budgets)

    async def _batched(self, gateway: str, entry: Any, batch: _Batch | None) -> dict[str, Any] | XscError:
        try:
            if not isinstance(entry, dict) or entry.get("tab") is not True:
                raise InvalidArgument('each call of a batch is a tab call: {"call", "price", "authorization", '
                                      '"deal", "tab": true}')
            return await self.run_for_peer(gateway, entry, batch)
        except XscError as err:
            return err
        except Exception:  # a fault of this node's (its database, ...): this call fails, the others stand
            log.exception("a call of %s's batch failed", gateway)
            return XscError("the call failed on this node; see its log")

    def terms(self, body: dict, batch: _Batch | None = None) -> tuple[int, dict, Authorization]:
        """The price, deal and authorization of work a gateway matched here, each checked: a price at or above
        this node's ask, memory at its price, an authorization that pays this node and has not expired."""
        price, deal = body["price"], body["deal"]
        # Prices at most MAX_PRICE, as the market's: what they make (a budget, a charge) is a number that is written,
        # printed and signed, where int()'s bound on digits is a 500.
        if type(price) is not int or not 0 <= price <= MAX_PRICE or not isinstance(deal, dict) \
                or _encoded_size(deal) > 2048:
            raise InvalidArgument(f"price must be a whole number from 0 to {MAX_PRICE:,} and deal a small object")
        auth = self.authorization(body["authorization"])
        offered = body.get("memory_price", self.compute.memory_price)
        if type(offered) is int and offered > MAX_PRICE:
            raise InvalidArgument(f"memory_price must be at most {MAX_PRICE:,} micro-credits per page-second")
        if type(offered) is not int or offered < self.compute.memory_price:
            raise DealRefused(f"memory is priced {self.compute.memory_price} micro-credits per page-second here, "
                              f"not {offered!r}", hint="raise compute.memory_price, or match another provider",
                              memory_price=self.compute.memory_price)
        if time.time() > auth.expires_at:
            raise AuthorizationExpired(f"authorization {auth.id.hex()} expired at {auth.expires_at}",
                                       hint="match the invoke again (a fresh authorization)")
        # A call on a tab too: its price is the gateway's word.  The calls of a batch came at one moment: they
        # are held to this node's ask at that moment (found once for the batch).
        ask = batch.ask(self.market) if batch is not None else self.market.offer.honoured_ask("compute")
        if ask is None:
            raise DealRefused("this node offers no compute now", hint="match the invoke again")
        if price < ask:
            raise DealRefused(f"the deal price {price} is under this node's ask of {ask} per million fuel",
                              hint="match the invoke again", ask=ask)
        return price, deal, auth

    async def run_for_peer(self, gateway: str, body: dict, batch: _Batch | None = None) -> dict[str, Any]:
        """Run a call a gateway matched here, paid by the authorization it sent: the run and our receipt."""
        if not {"call", "price", "authorization", "deal"} <= set(body):
            raise InvalidArgument('send {"call", "price", "authorization", "deal"}')
        call = parse_invoke(body["call"])
        price, deal, auth = self.terms(body, batch)
        if body.get("tab") is True:
            return await self._run_on_tab(gateway, call, price, deal, auth, batch)
        if auth.id in self._running or await self.ledger.receipt_for(auth.id) is not None:
            raise AuthorizationReplayed(f"authorization {auth.id.hex()} already paid for a run here; "
                                        "an authorization pays for one run",
                                        hint="fetch its receipt: GET /v1/peer/ledger/receipts/{authorization id}")
        budget = self.compute.budget(call, price)
        if auth.cap < budget:
            raise DealRefused(f"the authorization's cap {auth.cap} does not cover the call's budget {budget}")
        self.reserve(gateway, budget)  # first: a call its gateway cannot pay for opens no push either
        if not self.compute.registry.has_module(call.module):
            # A funded call for a module this node lacks: this gateway may now push that module (once).
            self.used(gateway, budget, None)
            self.pushes.expect(gateway, call.module, price)
            raise not_here(call.module)
        self._running.add(auth.id)
        run = None
        try:
            run = await self.compute.invoke(call, requester=public_id(auth.payer), rate=price,
                                            deal={**deal, "gateway": gateway, "price": price,
                                                  "authorization": auth.id.hex()})
            self.market.offer.note_fuel(run.fuel_consumed)
            # checked above, before the call ran; its gateway is written with the receipt until its line counts it
            receipt = await self.ledger.countersign(self.node, auth, run.charge, {"fuel": run.fuel_consumed},
                                                    verified=True, sender=gateway if self.trust is not None else None,
                                                    count=self._count(gateway), written=self._noted(gateway))
        finally:
            self._running.discard(auth.id)
            self.used(gateway, budget, run)
        answer: dict[str, Any] = {"run": run.to_json(), "receipt": receipt.encode().hex()}
        error = run.error()
        if error is not None:
            answer["run"] = dict(error.details)
            answer["trap"] = {"kind": run.outcome.trap_kind, "message": error.message, "hint": run.outcome.hint}
        return answer


class _Batch:
    """The calls of one batch that ran: their budgets (reserved on the gateway's trust line) and what they cost,
    written on the line once when the batch ends (until then the line counts their whole budgets: stricter)."""

    def __init__(self) -> None:
        self.budgets = 0
        self.charges = 0
        self._ask: tuple[int | None] | None = None

    def ask(self, market: MarketService) -> int | None:
        """This node's honoured compute ask when the batch came (found once, for all its calls)."""
        if self._ask is None:
            self._ask = (market.offer.honoured_ask("compute"),)
        return self._ask[0]

    def used(self, budget: int, charge: int) -> None:
        self.budgets += budget
        self.charges += charge


def _encoded_size(value: Any) -> int:
    """The length of `value`'s JSON text."""
    return len(dumps(value))


def _replayable(record: dict[str, Any], payer: str) -> None:
    """A run of a job or of a web function's request read bytes its record keeps only the hashes of (stdin, stored
    inputs, the request): run from the record alone it would differ, and be taken for a provider that lied."""
    job = record.get("job")
    if not isinstance(job, dict):
        return
    if "function" in job:
        raise InvalidArgument(f"record {record['id']} is web function {job['function']}'s answer to a request, "
                              f"which its record does not keep: a replay cannot run it again",
                              hint="send the request again: a replay runs calls (xsc compute invoke) again")
    ours = record.get("requester") == payer
    raise InvalidArgument("the record is a run of a job whose stdin and inputs it does not keep: a replay cannot run "
                          "it again",
                          hint=f"run the job again: xsc compute rerun {job.get('id')}" if ours else
                          "the job is another node's user's: it runs again there (xsc compute rerun)")


def _comparable(value: Any) -> Any:
    """A trap compares by its kind (its message may name the run)."""
    return value.get("kind") if isinstance(value, dict) and "kind" in value else value


def not_here(module: str) -> ModuleNotFound:
    return ModuleNotFound(f"module {module} is not deployed on this node", hint="push it: PUT /v1/peer/modules")


def compile_room(compute: ComputeService, module: str, price: int) -> int:
    """What compiling `module` (its id) costs a provider that lacks it, at `price`: the room a tab of work on it keeps
    under its cap for its push (0: not deployed here, so never pushed from here)."""
    info = compute.store.module(bytes.fromhex(module))
    return 0 if info is None else compile_price(info.size, price)


def worst_case_refused(compute: ComputeService, err: InsufficientCredit, call: InvokeCall, budget: int,
                       what: str = "call") -> InsufficientCredit:
    """The ledger's refusal of a call's or a job's budget, said as what it is: the most it may cost, held before it
    runs (what it costs is known only once it ran, and is mostly far less)."""
    limits = compute.limits(call)
    d = err.details
    if "account" not in d or "available" not in d:
        return err  # not the ledger's refusal of this budget: said as it came
    return InsufficientCredit(
        f"insufficient credit: a {what} holds the most it may cost before it runs ({limits.fuel:,} fuel, "
        f"{format_size(limits.memory)} of memory for {limits.timeout:g} s: {format_credits(budget)} "
        f"credits) but account {d['account']} can spend {format_credits(d['available'])} more",
        hint=f"ask for less with --fuel, --memory or --timeout (a {what} is charged only what it uses), or raise "
             "the limit: xsc config set ledger.credit_limit MICRO_CREDITS",
        **{**d, "needed": budget, "short": max(0, budget - d["available"])})


def relayed(provider: str, err: PeerRefused, budget: int, what: str = "call") -> XscError:
    """A provider's refusal of a call or a job (`what`) as this node's user should read it: what to do about it,
    not a peer's fault.  `budget`: the most the work may cost, which bounds the prepayment its command names (what
    the provider says is missing is a stranger's figure)."""
    detail = str(err).split(": ", 1)[-1]
    if err.details.get("peer_code") == "deal-refused":
        return DealRefused(f"provider {provider} refused the deal: {detail}",
                           hint="the market moved; invoke again (or raise --max-price)")
    if err.details.get("peer_code") == "prepayment-required":
        missing = min(err.details.get("peer_missing") or 0, budget)  # checked as it was read (net/peer_client.py)
        amount = credits_argument(missing) if missing else "CREDITS"
        # One line, as a put's (market/core/terms.refusal): the provider's id whole once, in the command that pays it.
        return PrepaymentRequired(f"the provider wants prepayment for this {what}"
                                  + (f" ({amount} credits)" if missing else ""),
                                  hint=f"ask its user for credit, or if it owes you: xsc ledger prepay {provider} "
                                       f"{amount}", provider=provider, **({"missing": missing} if missing else {}))
    if err.details.get("peer_status") == PeerUnavailable.status and not isinstance(err, PeerUnavailable):
        return PeerUnavailable(err.message, **err.details)  # (a job's: its provider busy, or stopping)
    return err


__all__ = ["PaidCompute", "parse_max_price", "relayed", "worst_case_refused"]
