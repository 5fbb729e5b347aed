"""Invokes on another node: the gateway runs a call on the provider the market matched, and pays it by receipt.

    gateway                                   provider
    authorize(cap = fuel budget at the deal price; held, pending on disk)
    POST /v1/peer/compute/invoke  ------->    checks the authorization (payer's signature, payee = me,
      {call, price, authorization, deal}       cap covers the budget) and the price (>= its ask);
                                               runs the call; countersigns a receipt for the metered
                                               fuel into its chain
    complete(receipt) (the payment) <------   {run, receipt}

A provider that lacks the module answers 404 `module-not-found`; the gateway sends it
(`PUT /v1/peer/modules`, the wasm bytes, signed like every peer request) and asks once more.  If the
answer is lost, the authorization stays pending and the payment retry (node/payments.py) fetches the
receipt the provider signed, so the run is paid exactly once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from ..compute import InvokeCall, parse_invoke
from ..errors import DealRefused, Forbidden, InvalidArgument, PeerError, PeerRefused, Trap, XscError
from ..identity import public_id, verify
from ..ledger import decode_authorization, decode_entry, encode_authorization, price_compute
from . import peer_auth
from .bodies import json_body
from .compute_routes import COMPUTE
from .context import CLIENT_IDENTITY, IDENTITY
from .ledger_routes import LEDGER
from .market_routes import MARKET
from .peers import PEERS

log = logging.getLogger(__name__)

INVOKE_PATH = "/v1/peer/compute/invoke"
MODULES_PATH = "/v1/peer/modules"
routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    from .receipt_routes import RECEIPT_CHECKS

    app.add_routes(routes)
    app[RECEIPT_CHECKS]["compute"] = _refuse_separate_receipt


async def _refuse_separate_receipt(app, sender, authorization, amount, usage) -> None:
    raise Forbidden("a compute receipt is signed with the run it pays for, never on its own",
                    hint="fetch it with GET /v1/peer/ledger/receipts/{authorization id}")


def _call_json(call: InvokeCall) -> dict[str, Any]:
    out = {"module": call.module, "function": call.function, "args": call.args, "wasi": call.wasi}
    out.update({k: v for k, v in (("fuel", call.fuel), ("memory", call.memory), ("timeout", call.timeout))
                if v is not None})
    return out


# --- gateway side ------------------------------------------------------------------------------
async def invoke_remote(app: web.Application, provider: str, price: int, call: InvokeCall,
                        deal: dict[str, Any]) -> dict[str, Any]:
    """Run `call` on `provider` at `price` (micro-credits per million fuel); returns the run's JSON
    with the deal and the payer's ledger entry.  A trap is raised after the payment is written."""
    service, ledger, payer = app[COMPUTE], app[LEDGER], app[CLIENT_IDENTITY]
    service.check(call)  # bad arguments are refused here, before anything is authorized or sent
    budget = price_compute(service.limits(call).fuel, price)
    peers = app[PEERS]
    url = peers.peer(provider).url
    auth = await ledger.authorize(payer, peers.peer(provider).key, budget, f"compute:{deal['need']}",
                                  ttl=max(600, int(service.limits(call).timeout) + 600))
    body = {"call": _call_json(call), "price": price, "authorization": encode_authorization(auth).hex(),
            "deal": deal}
    try:
        answer = await _post_invoke(app, url, provider, body, call)
    except PeerRefused as err:
        # The provider refused before running anything: nothing will ever be countersigned.
        await ledger.abandon(auth.id, force=True)
        raise _relayed(provider, err) from None
    except PeerError:
        log.warning("invoke on %s: no answer; its payment (if it ran) is fetched later", provider[:12])
        raise
    receipt = decode_entry(bytes.fromhex(answer["receipt"]))
    if receipt.authorization.id != auth.id or receipt.account != auth.payee:
        raise DealRefused(f"provider {provider[:12]}… answered with a receipt for another authorization")
    payment = await ledger.complete(payer, receipt)
    app[MARKET].note_paid(provider, receipt.amount, by_them=False)
    run = answer["run"]
    run.update(provider=provider, deal={**deal, "authorization": auth.id.hex()}, ledger_entry=payment.id.hex())
    if "trap" in answer:
        trap = answer["trap"]
        facts = {k: v for k, v in run.items() if k not in ("kind", "hint", "message")}
        raise Trap(trap.get("message", "the call trapped"), kind=trap.get("kind"), hint=trap.get("hint"), **facts)
    return run


async def _post_invoke(app: web.Application, url: str, provider: str, body: dict, call: InvokeCall) -> dict:
    peers = app[PEERS]
    try:
        response = await peers.request(url, "POST", INVOKE_PATH, json=body, to=provider)
    except PeerRefused as err:
        if err.details.get("peer_code") != "module-not-found":
            raise
        wasm = app[COMPUTE].store.wasm(bytes.fromhex(call.module))
        query = "?wasi=true" if call.wasi else ""
        await peers.request(url, "PUT", MODULES_PATH + query, data=wasm, to=provider)
        response = await peers.request(url, "POST", INVOKE_PATH, json=body, to=provider)
    answer = response.json()
    if not isinstance(answer, dict) or not isinstance(answer.get("receipt"), str) or \
            not isinstance(answer.get("run"), dict):
        raise PeerRefused(f"provider {url} answered an invoke without a run and a receipt", url=url)
    return answer


def _relayed(provider: str, err: PeerRefused) -> XscError:
    detail = str(err).split(": ", 1)[-1]
    if err.details.get("peer_code") == "deal-refused":
        return DealRefused(f"provider {provider[:12]}… refused the deal: {detail}",
                           hint="the market moved; invoke again (or raise --max-price)")
    return err


# --- provider side -----------------------------------------------------------------------------
@routes.put(MODULES_PATH)
async def receive_module(request: web.Request) -> web.Response:
    """A gateway sends the module of a call it matched here (content-addressed: the id is the hash)."""
    service = request.app[COMPUTE]
    wasm = await request.read()
    info, created = await service.deploy(wasm, wasi=request.query.get("wasi") == "true")
    return web.json_response({"module": info.id, "created": created}, status=201 if created else 200)


@routes.post(INVOKE_PATH)
async def run_for_peer(request: web.Request) -> web.Response:
    app = request.app
    body = await json_body(request, 'send {"call", "price", "authorization", "deal"}')
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
    identity, service = app[IDENTITY], app[COMPUTE]
    if auth.payee != identity.public_key or not verify(auth.payer, auth.signature, auth.body):
        raise Forbidden("the authorization does not pay this node, or its payer did not sign it")
    ask = app[MARKET].honoured_ask("compute")
    if ask is None:
        raise DealRefused("this node offers no compute now", hint="match the invoke again")
    if price < ask:
        raise DealRefused(f"the deal price {price} is under this node's ask of {ask} per million fuel",
                          hint="match the invoke again", ask=ask)
    budget = price_compute(service.limits(call).fuel, price)
    if auth.cap < budget:
        raise DealRefused(f"the authorization's cap {auth.cap} does not cover the fuel budget {budget}")
    gateway = peer_auth.peer_id(request)
    run = await service.invoke(call, requester=public_id(auth.payer), rate=price,
                               deal={**deal, "gateway": gateway, "price": price, "authorization": auth.id.hex()})
    app[MARKET].note_fuel(run.fuel_consumed)
    receipt = await app[LEDGER].countersign(identity, auth, run.price, {"fuel": run.fuel_consumed})
    app[MARKET].note_paid(gateway, run.price, by_them=True)
    answer: dict[str, Any] = {"run": run.to_json(), "receipt": receipt.encode().hex()}
    error = run.error()
    if error is not None:
        answer["run"] = dict(error.details)
        answer["trap"] = {"kind": run.outcome.trap_kind, "message": run.outcome.message, "hint": run.outcome.hint}
    return web.json_response(answer)
