"""The payee's side of settlement across nodes (xsc.ledger.settlement.Payments.countersign).

Peer API (signed; `peer_auth.peer_id(request)` is the sending node):
    POST /v1/peer/ledger/receipts  {"authorization": hex, "amount": int, "usage": {...}, "job": str?}
                                   -> {"receipt": hex}: this node's receipt, appended to its chain
    GET  /v1/peer/ledger/receipts/{authorization id hex} -> {"receipt": hex} to its parties alone, else 404
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...errors import EntryNotFound, InvalidArgument
from ...ledger import Authorization, decode_authorization
from ...ledger.receipts import RECEIPTS_PATH
from .. import peer_auth
from ..appkeys import NODE
from .common import json_object, json_response, read_body

MAX_BODY = 8 * 1024  # an authorization is < 500 bytes and usage at most 8 meters
HINT = 'send {"authorization": "<hex>", "amount": <micro-credits>, "usage": {"fuel": <n>}}'

routes = web.RouteTableDef()


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


@routes.post(RECEIPTS_PATH)
async def countersign(request: web.Request) -> web.Response:
    body = _body(await read_body(request))
    auth = _authorization(body.get("authorization"))
    amount, usage = body.get("amount"), body.get("usage")
    if type(amount) is not int or amount < 0:
        raise InvalidArgument(f"amount must be a non-negative integer of micro-credits, not {amount!r}", hint=HINT)
    if not isinstance(usage, dict):
        raise InvalidArgument("usage must be an object of meters, e.g. {\"fuel\": 1200}", hint=HINT)
    receipt = await request.app[NODE].payments.countersign(peer_auth.peer_id(request), auth, amount, usage,
                                                      body.get("job"))
    return json_response({"receipt": receipt.encode().hex()})


@routes.get(RECEIPTS_PATH + "/{authorization}")
async def receipt(request: web.Request) -> web.Response:
    text = request.match_info["authorization"]
    try:
        auth_id = bytes.fromhex(text)
    except ValueError:
        auth_id = b""
    if len(auth_id) != 32:
        raise InvalidArgument("give the authorization id as 64 hex digits")
    found = await request.app[NODE].payments.receipt_for(peer_auth.peer_id(request), auth_id)
    if found is None:
        raise EntryNotFound(f"this node made no receipt for authorization {text.lower()}")
    return json_response({"receipt": found.encode().hex()})
