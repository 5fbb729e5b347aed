"""Market routes.

User API (token):
    GET  /v1/market/book[?kind=K]          asks and bids per kind and time bucket, with their clearing
    GET  /v1/market/prices[?kind=K&limit=N] clearing prices, newest first
    GET  /v1/market/offer                  this node's capacity slots and pricing policy
    GET  /v1/market/status[?file=SI]       its slots, needs, storage deals and payments, convergence
                                           (file: one file's deals, and those that ended when a share moved)
    GET  /v1/market/explain/{need}         why a need got what it got
    GET  /v1/market/recognition            the weights this node publishes, and the peers' of it
    POST /v1/market/recognize {"peer", "weight"}   set a weight (null: back to the derived one)
Peer API (signed):
    POST /v1/peer/market {"commitments": [...]} -> {"commitments": [...], "digest"}
"""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal, InvalidOperation

from aiohttp import web

from ..errors import InvalidArgument, NeedNotFound
from .bodies import json_body
from .deals import DealService, check_storage_receipt
from .market_service import MarketService
from .status import STATUS_PARTS

MARKET = web.AppKey("market", MarketService)
DEALS = web.AppKey("deals", DealService)
EXPLAINED = 1000  # needs whose explanation is kept (in memory) for `xsc market explain`
routes = web.RouteTableDef()


class Explanations(OrderedDict):
    me = ""

    def keep(self, result) -> None:
        for key, explanation in result.explanations.items():
            # This node's needs by their bare id (as a put or invoke prints them); others' as OWNER/ID.
            name = explanation.need_id if explanation.recipient == self.me else key
            self[name] = {"need": explanation.need_id, "recipient": explanation.recipient, "code": explanation.code,
                          "message": explanation.message, "clearing_price": explanation.clearing_price,
                          "assignment": _assignment(result.assignments.get(key))}
            self.move_to_end(name)
        while len(self) > EXPLAINED:
            self.popitem(last=False)


EXPLANATIONS = web.AppKey("explanations", Explanations)


def _assignment(a) -> dict | None:
    if a is None:
        return None
    return {"provider": a.provider, "capacity_slot": a.capacity_slot, "quantity": a.quantity, "price": a.price,
            "tier": a.tier}


async def _market_service(app: web.Application):
    market, deals = MarketService(app), DealService(app)
    app[MARKET], app[DEALS] = market, deals
    app[EXPLANATIONS].me = market.me
    market.remember = lambda result: remember(app, result)
    market.start()
    deals.start()
    try:
        yield
    finally:
        await deals.close()
        await market.close()


def setup(app: web.Application) -> None:
    from .receipt_routes import RECEIPT_CHECKS

    app.add_routes(routes)
    app.cleanup_ctx.append(_market_service)
    app[EXPLANATIONS] = Explanations()
    app[RECEIPT_CHECKS]["store"] = check_storage_receipt
    app[STATUS_PARTS]["market"] = lambda app: {k: v for k, v in app[MARKET].status().items()
                                               if k in ("digest", "participants", "converged")}


def remember(app: web.Application, result) -> None:
    """Keep the explanations of a matching for `xsc market explain`."""
    if result is not None:
        app[EXPLANATIONS].keep(result)


def _limit(request: web.Request, default: int = 50) -> int:
    text = request.query.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise InvalidArgument(f"limit must be a whole number from 1 to 1000, not {text!r}")
    return int(text)


def _kind(request: web.Request) -> str | None:
    kind = request.query.get("kind")
    if kind not in (None, "storage", "compute"):
        raise InvalidArgument(f"unknown kind {kind!r}", hint="use storage or compute")
    return kind


@routes.get("/v1/market/book")
async def book(request: web.Request) -> web.Response:
    return web.json_response(request.app[MARKET].book_view(_kind(request)))


@routes.get("/v1/market/prices")
async def prices(request: web.Request) -> web.Response:
    market = request.app[MARKET]
    market.clearings()  # records a new clearing price, if the book changed since
    return web.json_response({"prices": market.price_history(_kind(request), _limit(request))})


@routes.get("/v1/market/offer")
async def offer(request: web.Request) -> web.Response:
    market = request.app[MARKET]
    c = market.config
    used, capacity = market.storage_usage()
    fuel = market.compute_capacity()
    return web.json_response({
        "storage": {"offered": c.offer_storage, "capacity": capacity, "used": used, "ask": market.ask("storage"),
                    "floor": c.storage_ask_floor, "ceiling": c.storage_ask_ceiling, "unit": "GiB-hour"},
        "compute": {"offered": c.offer_compute, "fuel_per_bucket": fuel,
                    "used": market.fuel_used.get(market.bucket(), 0), "ask": market.ask("compute"),
                    "floor": c.compute_ask_floor, "ceiling": c.compute_ask_ceiling, "unit": "million fuel"},
        "exponent": c.ask_exponent, "bucket_seconds": c.bucket_seconds,
        "slots": market.status()["asks"],
    })


@routes.get("/v1/market/status")
async def status(request: web.Request) -> web.Response:
    deals = request.app[DEALS]
    every = deals.all()
    rows = [d.to_json() for d in every if d.paid_until < d.end]  # the deals still running
    if "file" in request.query:  # one file's deals, with those that ended when a repair moved a share
        si = _storage_index(request.query["file"])
        return web.json_response({"deals": [d.to_json() for d in deals.of_file(si)],
                                  "ended": [d.to_json() for d in deals.ended_deals(si)]})
    return web.json_response({**request.app[MARKET].status(), "deals": rows, "deals_settled": len(every) - len(rows),
                              "payments": deals.last_run})


def _storage_index(text: str) -> bytes:
    try:
        si = bytes.fromhex(text)
    except ValueError:
        si = b""
    if len(si) != 32:
        raise InvalidArgument(f"file must be a storage index (64 hex digits), not {text[:80]!r}",
                              hint="`xsc store check CAP` shows it")
    return si


@routes.get("/v1/market/explain/{need}")
async def explain(request: web.Request) -> web.Response:
    need = request.match_info["need"]
    found = request.app[EXPLANATIONS].get(need)
    if found is None:
        raise NeedNotFound(f"no recent need {need!r} on this node",
                           hint="need ids are printed by a put or invoke the market refused, and by xsc market status")
    return web.json_response(found)


@routes.get("/v1/market/recognition")
async def recognition(request: web.Request) -> web.Response:
    return web.json_response({"recognition": request.app[MARKET].recognition_view()})


@routes.post("/v1/market/recognize")
async def recognize(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"peer": NODE_ID, "weight": "0.5"}')
    if not isinstance(body.get("peer"), str) or "weight" not in body:
        raise InvalidArgument("send {\"peer\": NODE_ID, \"weight\": \"0.5\"} (weight null: back to the derived one)")
    weight = body["weight"]
    if weight is not None:
        try:
            weight = Decimal(str(weight))
        except InvalidOperation:
            raise InvalidArgument(f"not a number: {weight!r}", hint="a weight is a decimal from 0 to 1000") from None
    market = request.app[MARKET]
    market.set_recognition(body["peer"], weight)
    row = next((r for r in market.recognition_view() if r["peer"] == body["peer"]), None)
    return web.json_response(row or {"peer": body["peer"], "weight": None})


@routes.post("/v1/peer/market")
async def exchange(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"commitments": [...]}')
    if "commitments" not in body:
        raise InvalidArgument('send {"commitments": [...]}')
    market = request.app[MARKET]
    market.receive(body["commitments"])
    return web.json_response({"commitments": market.payload(), "digest": market.book.digest()})
