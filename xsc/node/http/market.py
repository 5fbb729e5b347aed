"""Market routes (xsc.market.service.MarketService; storage deals: xsc.storage.deals.StorageDeals).

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
from ..appkeys import ALLOCATION, DEALS, MARKET
from .common import json_body, json_response, query_int, query_kind, storage_index

routes = web.RouteTableDef()


@routes.get("/v1/market/book")
async def book(request: web.Request) -> web.Response:
    return json_response(request.app[MARKET].book_view(query_kind(request.query)))


@routes.get("/v1/market/prices")
async def prices(request: web.Request) -> web.Response:
    limit = query_int(request.query, "limit", 50, 1, 1000)
    return json_response({"prices": request.app[MARKET].price_view(query_kind(request.query), limit)})


@routes.get("/v1/market/offer")
async def offer(request: web.Request) -> web.Response:
    return json_response(request.app[MARKET].offer_view())


@routes.get("/v1/market/status")
async def status(request: web.Request) -> web.Response:
    deals = request.app[DEALS]
    if "file" in request.query:  # one file's deals, with those that ended when a repair moved a share
        return json_response(deals.of_file_view(storage_index(request.query["file"])))
    shown = query_int(request.query, "deals", 10**9, 0, 10**9)  # ?deals=N: at most N rows (the dashboard's table)
    market = request.app[MARKET]
    return json_response({**market.status(), **deals.summary(shown), "recent_needs": market.explanations.recent(),
                              "allocation": request.app[ALLOCATION].status()})


@routes.get("/v1/market/explain/{need}")
async def explain(request: web.Request) -> web.Response:
    return json_response(request.app[MARKET].explanations.explain(request.match_info["need"]))


@routes.get("/v1/market/recognition")
async def recognition(request: web.Request) -> web.Response:
    return json_response({"recognition": request.app[MARKET].recognition_view()})


@routes.post("/v1/market/recognize")
async def recognize(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"peer": NODE_ID, "weight": "0.5"}')
    if "weight" not in body:
        raise InvalidArgument("send {\"peer\": NODE_ID, \"weight\": \"0.5\"} (weight null: back to the derived one)")
    return json_response(request.app[MARKET].recognize(body.get("peer"), body["weight"],
                                                           body.get("credit", False)))


@routes.post("/v1/peer/market")
@peer_auth.before_body(lambda request, sender, size: request.app[MARKET].check_quota(sender, size))
async def exchange(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"commitments": [...]}')
    if "commitments" not in body:
        raise InvalidArgument('send {"commitments": [...]}')
    answer = await request.app[MARKET].exchange_answer(body["commitments"], body.get("push") is True,
                                                       peer_auth.peer_id(request), body.get("digest"))
    return json_response(answer)


@routes.post("/v1/peer/market/digest")
async def digest(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"commitments": {participant: hash}}')
    return json_response(request.app[MARKET].digest_answer(peer_auth.peer_id(request), body))
