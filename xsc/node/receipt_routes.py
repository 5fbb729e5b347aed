"""The payee's side of settlement across nodes, and the low-balance health check.

Peer API (signed; `peer_auth.peer_id(request)` is the sending node):
    POST /v1/peer/ledger/receipts  {"authorization": hex, "amount": int, "usage": {...}, "job": str?}
                                   -> {"receipt": hex}: this node's receipt, appended to its chain
    GET  /v1/peer/ledger/receipts/{authorization id hex} -> {"receipt": hex}, or 404 if it made none

Before countersigning, the node checks that the claim is for work it did: `app[RECEIPT_CHECKS]` maps a
job kind (the authorization's job reference up to its first ':', e.g. "store", "compute") to
`async fn(app, sender_node_id, authorization, amount, usage) -> None`, which raises an XscError (403, 409)
when the claim is wrong.  A kind with no check is refused.  A repeated request for an authorization
already countersigned gets the stored receipt (same amount and usage) without asking the check again.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..errors import ClaimRefused, EntryNotFound, InvalidArgument, InvalidEntry, WrongPayee
from ..identity import public_id, verify
from ..ledger import Authorization, decode_authorization, format_credits
from . import payments, peer_auth
from .bodies import json_object
from .context import CLIENT_IDENTITY, IDENTITY
from .ledger_routes import LEDGER
from .status import HEALTH_CHECKS

ReceiptCheck = Callable[[web.Application, str, Authorization, int, dict[str, int]], Awaitable[None]]
RECEIPT_CHECKS = web.AppKey("receipt_checks", dict)  # job kind -> ReceiptCheck
MAX_BODY = 8 * 1024  # an authorization is < 500 bytes and usage at most 8 meters
HINT = 'send {"authorization": "<hex>", "amount": <micro-credits>, "usage": {"fuel": <n>}}'

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    app[RECEIPT_CHECKS] = {}
    app.add_routes(routes)
    app[HEALTH_CHECKS]["ledger:balance"] = _check_balance
    payments.setup(app)


def job_kind(job: str) -> str:
    return job.partition(":")[0]


def _body(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BODY:
        raise InvalidArgument(f"a receipt request is at most {MAX_BODY} bytes", hint=HINT)
    return json_object(raw, HINT)


def _authorization(text: Any) -> Authorization:
    if not isinstance(text, str) or len(text) > 2 * MAX_BODY:
        raise InvalidArgument("authorization must be the hex of a signed authorization", hint=HINT)
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise InvalidArgument("authorization is not hex", hint=HINT) from None
    return decode_authorization(data)


@routes.post("/v1/peer/ledger/receipts")
async def countersign(request: web.Request) -> web.Response:
    app, sender = request.app, peer_auth.peer_id(request)
    body = _body(await request.read())
    auth = _authorization(body.get("authorization"))
    amount, usage = body.get("amount"), body.get("usage")
    if type(amount) is not int or amount < 0:
        raise InvalidArgument(f"amount must be a non-negative integer of micro-credits, not {amount!r}", hint=HINT)
    if not isinstance(usage, dict):
        raise InvalidArgument("usage must be an object of meters, e.g. {\"fuel\": 1200}", hint=HINT)
    if "job" in body and body["job"] != auth.job:
        raise InvalidEntry("job does not match the authorization's job reference")
    identity, ledger = app[IDENTITY], app[LEDGER]
    if auth.payee != identity.public_key:
        raise WrongPayee(f"the authorization pays account {public_id(auth.payee)}, not this node "
                         f"({identity.id})", hint="send it to the node whose account it names as payee")
    if not verify(auth.payer, auth.signature, auth.body):
        raise InvalidEntry("the authorization's payer signature is invalid")
    if await ledger.receipt_for(auth.id) is None:  # already countersigned: the check passed then
        check = app[RECEIPT_CHECKS].get(job_kind(auth.job))
        if check is None:
            known = ", ".join(sorted(app[RECEIPT_CHECKS])) or "none"
            raise ClaimRefused(f"this node settles no work of kind {job_kind(auth.job)!r} (job {auth.job!r})",
                               hint=f"job kinds it settles: {known}")
        await check(app, sender, auth, amount, usage)
    receipt = await ledger.countersign(identity, auth, amount, usage)
    from .market_routes import MARKET

    if MARKET in app:
        app[MARKET].note_paid(sender, amount, by_them=True)  # who pays us is recognised by the market
    return web.json_response({"receipt": receipt.encode().hex()})


@routes.get("/v1/peer/ledger/receipts/{authorization}")
async def receipt(request: web.Request) -> web.Response:
    text = request.match_info["authorization"]
    try:
        auth_id = bytes.fromhex(text)
    except ValueError:
        auth_id = b""
    if len(auth_id) != 32:
        raise InvalidArgument("give the authorization id as 64 hex digits")
    found = await request.app[LEDGER].receipt_for(auth_id)
    if found is None:
        raise EntryNotFound(f"this node made no receipt for authorization {text.lower()}")
    return web.json_response({"receipt": found.encode().hex()})


async def _check_balance(app: web.Application) -> dict:
    """warn when the local user's available credit is below `[ledger] low_balance` % of the credit limit."""
    ledger = app[LEDGER]
    view = ledger.account_view(app[CLIENT_IDENTITY].public_key)
    out = {"componentType": "component", "observedValue": view["available"], "observedUnit": "micro-credits",
           "status": "warn" if view["low"] else "pass",
           "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if view["low"]:
        out["output"] = (f"low balance: {format_credits(view['available'])} credits left to spend, below "
                         f"{ledger.low_balance}% of the {format_credits(view['credit_limit'])} credit limit")
    return out


__all__ = ["RECEIPT_CHECKS", "ReceiptCheck", "job_kind", "setup"]
