"""Paid invokes: the market says who runs a call and at what price; the run is paid through the ledger.

On this node: the whole fuel budget is held before any work; once the run is metered, what it owes is written
with its provenance record (one synced group commit) before the answer, only that amount stays held, and the
payer's tab with this node is settled as one ledger transfer per interval (ledger/tabs.py).  On another node::

    gateway                                   provider
    authorize(cap = fuel budget at the deal price; held, pending on disk)
    POST /v1/peer/compute/invoke  ------->    checks the authorization (payer's signature, payee = me,
      {call, price, authorization, deal}       cap covers the budget) and the price (>= its ask);
                                               runs the call; countersigns a receipt for the metered
                                               fuel into its chain
    complete(receipt) (the payment) <------   {run, receipt}

The receipt that comes back goes through the one pay-by-receipt path (ledger/settlement.py), which
checks it whole.  A provider that lacks the module answers 404 `module-not-found`; the gateway sends it
and asks once more.  If the answer is lost, the authorization stays pending and the payment retry fetches
the receipt the provider signed, so the run is paid exactly once.  Routes: node/http/compute.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from .. import keys
from ..errors import DealRefused, Forbidden, InvalidArgument, PeerError, PeerRefused, Trap, XscError
from ..identity import Identity, public_id, verify
from ..ledger.model import decode_authorization, encode_authorization
from ..ledger.pricing import price_compute
from ..ledger.service import LedgerService
from ..ledger.settlement import Payments
from ..ledger.tabs import Tabs, owed_record
from ..market.service import MarketService
from ..net.compute import post_invoke
from ..net.peer_client import PeerClient
from .service import ComputeService, InvokeCall, parse_invoke

log = logging.getLogger(__name__)

MAX_PRICE = 10**12  # micro-credits per million fuel: far above any real bid
FUEL_METER = frozenset({"fuel"})


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
    def __init__(self, *, compute: ComputeService, market: MarketService, ledger: LedgerService, payments: Payments,
                 tabs: Tabs, payer: Identity, node: Identity, peers: Any, client: PeerClient, default_bid: int,
                 on_invoked: Callable[[str], None] = lambda label: None) -> None:
        self.compute = compute
        self.market = market
        self.ledger = ledger
        self.payments = payments
        self.tabs = tabs
        self.payer = payer  # the local user's account
        self.node = node  # this node's account and identity
        self.peers = peers  # xsc.peers.PeerService: where a provider is
        self.client = client
        self.default_bid = default_bid
        self.on_invoked = on_invoked  # (outcome label): the node's metrics
        payments.add_check("compute", self._refuse_separate_receipt)

    async def _refuse_separate_receipt(self, sender, authorization, amount, usage) -> None:
        raise Forbidden("a compute receipt is signed with the run it pays for, never on its own",
                        hint="fetch it with GET /v1/peer/ledger/receipts/{authorization id}")

    # --- the user's invoke -------------------------------------------------------------------
    async def invoke(self, body: Any) -> dict[str, Any]:
        """Run a call for the local user where the market says, paid; the run's JSON (a trap is raised)."""
        bid = self.default_bid
        if isinstance(body, dict):
            body = dict(body)
            bid = parse_max_price(body.pop("max_price", None), bid)
        call = parse_invoke(body)
        # The market says who runs it and at what price (remote when this node offers no compute).
        assignment = self.market.compute_deal(self.compute.limits(call).fuel, bid)
        deal = {"need": assignment.need_id, "provider": assignment.provider, "price": assignment.price}
        if assignment.provider != self.node.id:
            result = await self.invoke_remote(assignment.provider, assignment.price, call, deal)
            self.on_invoked("remote")
            return result
        # The whole fuel budget (what a trapped call is charged) is held before any work, or the call is refused.
        budget = price_compute(self.compute.limits(call).fuel, assignment.price)
        await self.ledger.hold(self.payer, budget)

        def owed(run) -> tuple[tuple[bytes, bytes], ...]:  # on disk with the run's record, before the answer
            return ((keys.ledger_owed(bytes.fromhex(run.provenance_id)),
                     owed_record(self.payer.public_key, self.node.public_key, run.price, run.fuel_consumed)),)

        try:
            run = await self.compute.invoke(call, requester=self.payer.id, rate=assignment.price, deal=deal,
                                            owed=owed)
        except BaseException:  # refused before it ran (bad arguments, no such export), or not recorded: unpaid
            self.ledger.release(self.payer, budget)
            raise
        self.on_invoked(run.label)
        self.market.note_fuel(run.fuel_consumed)
        # Returned or trapped, the run used fuel: it is paid for either way, on the payer's tab with this node
        # (one ledger transfer per interval covers every run on it; ledger/tabs.py).
        self.tabs.owe(self.payer, self.node, bytes.fromhex(run.provenance_id), run.price, run.fuel_consumed,
                      held=budget)
        error = run.error()
        if error is not None:
            raise error
        return {**run.to_json(), "provider": self.node.id, "deal": deal}

    async def invoke_remote(self, provider: str, price: int, call: InvokeCall, deal: dict[str, Any]) -> dict[str, Any]:
        """Run `call` on `provider` at `price` (micro-credits per million fuel); returns the run's JSON
        with the deal and the payer's ledger entry.  A trap is raised after the payment is written."""
        self.compute.check(call)  # bad arguments are refused here, before anything is authorized or sent
        limits = self.compute.limits(call)
        url = self.peers.peer(provider).url
        auth = await self.payments.authorize(provider, price_compute(limits.fuel, price), f"compute:{deal['need']}",
                                             ttl=max(600, int(limits.timeout) + 600))
        body = {"call": _call_json(call), "price": price, "authorization": encode_authorization(auth).hex(),
                "deal": deal}
        try:
            answer = await post_invoke(self.client, url, provider, body,
                                       lambda: self.compute.store.wasm(bytes.fromhex(call.module)), call.wasi)
        except PeerRefused as err:
            # The provider refused before running anything: nothing will ever be countersigned.
            await self.payments.refused(auth)
            raise _relayed(provider, err) from None
        except PeerError:
            log.warning("invoke on %s: no answer; its payment (if it ran) is fetched later", provider[:12])
            raise
        payment = await self.payments.complete(provider, auth, answer, meters=FUEL_METER)
        run = answer["run"]
        run.update(provider=provider, deal={**deal, "authorization": auth.id.hex()}, ledger_entry=payment.id.hex())
        if "trap" in answer:
            trap = answer["trap"] if isinstance(answer["trap"], dict) else {}
            facts = {k: v for k, v in run.items() if k not in ("kind", "hint", "message")}
            raise Trap(str(trap.get("message", "the call trapped")), kind=trap.get("kind"), hint=trap.get("hint"),
                       **facts)
        return run

    # --- the provider's side -------------------------------------------------------------------
    async def receive_module(self, wasm: bytes, *, wasi: bool) -> tuple[dict, bool]:
        """A gateway sends the module of a call it matched here (content-addressed: the id is the hash)."""
        info, created = await self.compute.deploy(wasm, wasi=wasi)
        return {"module": info.id, "created": created}, created

    async def run_for_peer(self, gateway: str, body: dict) -> dict[str, Any]:
        """Run a call a gateway matched here, paid by the authorization it sent: the run and our receipt."""
        if not {"call", "price", "authorization", "deal"} <= set(body):
            raise InvalidArgument('send {"call", "price", "authorization", "deal"}')
        call = parse_invoke(body["call"])
        price, deal = body["price"], body["deal"]
        if type(price) is not int or price < 0 or not isinstance(deal, dict) or len(json.dumps(deal)) > 2048:
            raise InvalidArgument("price must be a non-negative integer and deal a small object")
        try:
            auth = decode_authorization(bytes.fromhex(body["authorization"]))
        except (ValueError, TypeError):
            raise InvalidArgument("authorization must be the hex of a signed authorization") from None
        if auth.payee != self.node.public_key or not verify(auth.payer, auth.signature, auth.body):
            raise Forbidden("the authorization does not pay this node, or its payer did not sign it")
        ask = self.market.honoured_ask("compute")
        if ask is None:
            raise DealRefused("this node offers no compute now", hint="match the invoke again")
        if price < ask:
            raise DealRefused(f"the deal price {price} is under this node's ask of {ask} per million fuel",
                              hint="match the invoke again", ask=ask)
        budget = price_compute(self.compute.limits(call).fuel, price)
        if auth.cap < budget:
            raise DealRefused(f"the authorization's cap {auth.cap} does not cover the fuel budget {budget}")
        run = await self.compute.invoke(call, requester=public_id(auth.payer), rate=price,
                                        deal={**deal, "gateway": gateway, "price": price,
                                              "authorization": auth.id.hex()})
        self.market.note_fuel(run.fuel_consumed)
        receipt = await self.ledger.countersign(self.node, auth, run.price, {"fuel": run.fuel_consumed},
                                                verified=True)  # checked above, before the call ran
        self.market.note_paid(gateway, run.price, by_them=True)
        answer: dict[str, Any] = {"run": run.to_json(), "receipt": receipt.encode().hex()}
        error = run.error()
        if error is not None:
            answer["run"] = dict(error.details)
            answer["trap"] = {"kind": run.outcome.trap_kind, "message": run.outcome.message, "hint": run.outcome.hint}
        return answer


def _relayed(provider: str, err: PeerRefused) -> XscError:
    detail = str(err).split(": ", 1)[-1]
    if err.details.get("peer_code") == "deal-refused":
        return DealRefused(f"provider {provider[:12]}… refused the deal: {detail}",
                           hint="the market moved; invoke again (or raise --max-price)")
    return err


__all__ = ["PaidCompute", "parse_max_price"]
