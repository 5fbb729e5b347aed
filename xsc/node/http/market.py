"""Market routes (xsc.market.service.MarketService, xsc.market.dealing.Dealing; storage deals: xsc.storage.deals).

User API (token):
    GET  /v1/market/book[?kind=K]          asks and bids per kind and time bucket, with their clearing
    GET  /v1/market/prices[?kind=K&limit=N] clearing prices, newest first
    GET  /v1/market/offer                  this node's capacity slots and pricing policy
    GET  /v1/market/status[?file=SI|deals=N]  its slots, needs, storage deals and payments, convergence, the needs
                                           explain knows (deals: at most N of them)
                                           (file: one file's deals, and those that ended when a share moved)
    GET  /v1/market/explain/{need}         why a need got what it got
    GET  /v1/market/recognition            the weights this node publishes, and the peers' of it
    POST /v1/market/recognize {"peer", "weight"}   set a weight (null: back to the derived one)
Peer API (signed):
    POST /v1/peer/market {"commitments": [...], "push"?} -> {"commitments": [...], "digest"} (push: {"changed", "digest"})
    POST /v1/peer/market/digest {"commitments": {participant: hash}} -> {"commitments": [...], "digest"}
"""

from __future__ import annotations

from aiohttp import web

from ...errors import InvalidArgument
from .. import peer_auth
from ..appkeys import NODE
from .common import json_body, json_response, query_int, query_kind, storage_index

routes = web.RouteTableDef()


@routes.get("/v1/market/book")
async def book(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].market.book_view(query_kind(request.query)))


@routes.get("/v1/market/prices")
async def prices(request: web.Request) -> web.Response:
    limit = query_int(request.query, "limit", 50, 1, 1000)
    return json_response({"prices": request.app[NODE].market.price_view(query_kind(request.query), limit)})


@routes.get("/v1/market/offer")
async def offer(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].market.offer_view())


@routes.get("/v1/market/status")
async def status(request: web.Request) -> web.Response:
    deals = request.app[NODE].deals
    if "file" in request.query:  # one file's deals, with those that ended when a repair moved a share
        return json_response(deals.of_file_view(storage_index(request.query["file"])))
    shown = query_int(request.query, "deals", 10**9, 0, 10**9)  # ?deals=N: at most N rows (the dashboard's table)
    node = request.app[NODE]
    return json_response({**node.market.status(), **node.dealing.status(), **deals.summary(shown),
                          "recent_needs": node.dealing.explanations.recent(), "allocation": node.allocation.status()})


@routes.get("/v1/market/explain/{need}")
async def explain(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].dealing.explanations.explain(request.match_info["need"]))


@routes.get("/v1/market/recognition")
async def recognition(request: web.Request) -> web.Response:
    return json_response({"recognition": request.app[NODE].market.recognition_view()})


@routes.post("/v1/market/recognize")
async def recognize(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"peer": NODE_ID, "weight": "0.5"}')
    if "weight" not in body:
        raise InvalidArgument("send {\"peer\": NODE_ID, \"weight\": \"0.5\"} (weight null: back to the derived one)")
    return json_response(request.app[NODE].market.recognize(body.get("peer"), body["weight"],
                                                           body.get("credit", False)))


@routes.post("/v1/peer/market")
@peer_auth.before_body(lambda request, sender, size: request.app[NODE].market.check_quota(sender, size))
async def exchange(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"commitments": [...]}')
    if "commitments" not in body:
        raise InvalidArgument('send {"commitments": [...]}')
    answer = await request.app[NODE].market.exchange_answer(body["commitments"], body.get("push") is True,
                                                       peer_auth.peer_id(request), body.get("digest"))
    return json_response(answer)


@routes.post("/v1/peer/market/digest")
async def digest(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"commitments": {participant: hash}}')
    return json_response(request.app[NODE].market.digest_answer(peer_auth.peer_id(request), body))
