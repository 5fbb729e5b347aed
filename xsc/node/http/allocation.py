"""Allocation routes (xsc.allocation.service.AllocationService: live allocation rounds).

User API (token):
    GET    /v1/allocation                   the stamp, the peers in causal order, convergence, traffic
    POST   /v1/allocation/needs {"kind", "quantity", "seconds", "max_price"}   a standing need slot
    DELETE /v1/allocation/needs/{need}      remove a standing need
Peer API (signed; `peer_auth.peer_id(request)` is the sending node):
    POST /v1/peer/allocation {"states": [...], "receipts": [...], "ask"?} -> {"changed", "refused"[, own records]}
    POST /v1/peer/allocation/fork {"retire"?} -> {"stamp", "retired"}: half of this node's ITC id, for a joining
                                            node (a returning one gives its old id back: joined into ours first)
    POST /v1/peer/allocation/subscribe {"subscriptions": [...]} -> {"accepted"[, its current records]}
    POST /v1/peer/allocation/digest {"states": {publisher: hash}, "receipts": {...}} -> {"states", "receipts"}
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ...allocation.service import MAX_RECORDS
from ...errors import NeedNotFound, quoted_id
from .. import peer_auth
from ..appkeys import NODE
from .common import json_body, json_response

routes = web.RouteTableDef()
SLICE = 16  # records of a peer's message parsed and signature-checked per loop turn (~6 ms)


@routes.get("/v1/allocation")
async def status(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].allocation.status())


@routes.post("/v1/allocation/needs")
async def add_need(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"kind": "storage", "quantity": 1000000, "seconds": 3600}')
    return json_response(request.app[NODE].allocation.add_need(body.get("kind"), body.get("quantity"),
                                                              body.get("seconds", 3600), body.get("max_price")),
                             status=201)


@routes.delete("/v1/allocation/needs/{need}")
async def remove_need(request: web.Request) -> web.Response:
    need = request.match_info["need"]
    if not request.app[NODE].allocation.remove_need(need):
        raise NeedNotFound(f"no standing need {quoted_id(need)} on this node", hint="xsc market status lists them")
    return json_response({"removed": need})


@routes.post("/v1/peer/allocation")
@peer_auth.before_body(lambda request, sender, size: request.app[NODE].allocation.check_sender(sender))
async def exchange(request: web.Request) -> web.Response:
    """A known peer's records, parsed and verified a slice per loop turn (a message of 1,001 states and 1,001
    receipts is ~0.7 s of signature checks): the loop answers others in between."""
    body = await json_body(request, 'send {"states": [...], "receipts": [...]}')
    service = request.app[NODE].allocation
    states, receipts = body.get("states", []), body.get("receipts", [])
    if not isinstance(states, list) or not isinstance(receipts, list) or max(len(states), len(receipts)) > MAX_RECORDS:
        return json_response(service.answer(body))  # refused there (400) whole, before any record is read
    total = {"changed": 0, "refused": 0}
    for kind, items in (("states", states), ("receipts", receipts)):
        for start in range(0, len(items), SLICE):
            done = service.receive({kind: items[start:start + SLICE]})
            total = {k: total[k] + done[k] for k in total}
            await asyncio.sleep(0)
    return json_response({**service.answer({"ask": body.get("ask")}), **total})  # its own records, if asked


@routes.post("/v1/peer/allocation/fork")
async def fork(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"name": HEX} (and "retire": HEX, the id this node had before it restarted)')
    return json_response(request.app[NODE].allocation.fork(peer_auth.peer_id(request), body))


@routes.post("/v1/peer/allocation/subscribe")
async def subscribe(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"subscriptions": [...]}')
    return json_response(request.app[NODE].allocation.subscribe(peer_auth.peer_id(request), body))


@routes.post("/v1/peer/allocation/digest")
async def digest(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"states": {publisher: hash}, "receipts": {publisher: hash}}')
    return json_response(request.app[NODE].allocation.digest_answer(peer_auth.peer_id(request), body))
