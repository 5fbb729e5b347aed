"""HTTP API of sandboxed compute: deploy and list modules, invoke functions, read provenance records."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from aiohttp import web

from ..compute import ComputeService, module_too_large, parse_invoke
from ..errors import InvalidArgument
from ..ledger import price_compute
from .context import CLIENT_IDENTITY, CONFIG, DB, IDENTITY, METRICS
from .ledger_routes import LEDGER
from .market_routes import MARKET
from .status import HEALTH_CHECKS, STATUS_PARTS

COMPUTE = web.AppKey("compute", ComputeService)
routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    app.add_routes(routes)
    app.cleanup_ctx.append(_compute_service)
    app[STATUS_PARTS]["compute"] = lambda app: app[COMPUTE].status()
    app[HEALTH_CHECKS]["compute:epoch-ticker"] = _check_ticker


async def _compute_service(app: web.Application):
    config = app[CONFIG]
    service = ComputeService(db=app[DB], identity=app[IDENTITY], data_dir=config.data_dir, config=config.compute)
    service.start()
    app[COMPUTE] = service
    try:
        yield
    finally:
        service.close()


async def _check_ticker(app: web.Application) -> dict:
    # Without the ticker no wall-clock limit holds: a spinning module would keep its thread until it ran out of fuel.
    alive = COMPUTE in app and app[COMPUTE].ticker.alive
    return {"componentType": "component", "status": "pass" if alive else "fail",
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise InvalidArgument(f"{name} must be true or false, not {value!r}")
    return value in ("1", "true", "yes")


async def _read_module(request: web.Request, limit: int) -> bytes:
    """The raw body, refused as soon as it is known to be over the limit (without reading the rest)."""
    if request.content_length is not None and request.content_length > limit:
        raise module_too_large(request.content_length, limit)
    body = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        body += chunk
        if len(body) > limit:
            raise module_too_large(None, limit)
    return bytes(body)


@routes.post("/v1/modules")
async def deploy(request: web.Request) -> web.Response:
    service = request.app[COMPUTE]
    wasm = await _read_module(request, service.max_module_size)
    info, created = await service.deploy(wasm, wasi=_flag(request, "wasi"))
    return web.json_response({**info.to_json(), "created": created}, status=201 if created else 200)


@routes.get("/v1/modules")
async def list_modules(request: web.Request) -> web.Response:
    return web.json_response({"modules": [m.to_json() for m in request.app[COMPUTE].modules()]})


@routes.get("/v1/modules/{id}")
async def get_module(request: web.Request) -> web.Response:
    return web.json_response(request.app[COMPUTE].module(request.match_info["id"]).to_json())


@routes.post("/v1/compute/invoke")
async def invoke(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise InvalidArgument("the request body is not JSON",
                              hint='send {"module": ID, "function": NAME, "args": [...]}') from None
    app = request.app
    service, ledger, payer = app[COMPUTE], app[LEDGER], app[CLIENT_IDENTITY]
    bid = app[CONFIG].market.compute_bid
    if isinstance(body, dict):
        body = dict(body)
        bid = _max_price(body.pop("max_price", None), bid)
    call = parse_invoke(body)
    # The market says who runs it and at what price (remote when this node offers no compute).
    assignment = app[MARKET].compute_deal(service.limits(call).fuel, bid)
    deal = {"need": assignment.need_id, "provider": assignment.provider, "price": assignment.price}
    if assignment.provider != app[IDENTITY].id:
        from .remote_compute import invoke_remote

        result = await invoke_remote(app, assignment.provider, assignment.price, call, deal)
        app[METRICS].invocations.labels("remote").inc()
        return web.json_response(result)
    # The whole fuel budget (what a trapped call is charged) is held before any work, or the call is refused.
    budget = price_compute(service.limits(call).fuel, assignment.price)
    await ledger.hold(payer, budget)
    try:
        run = await service.invoke(call, requester=payer.id, rate=assignment.price, deal=deal)
    except BaseException:  # refused before it ran (bad arguments, no such export): nothing to pay
        ledger.release(payer, budget)
        raise
    app[METRICS].invocations.labels(run.label).inc()
    app[MARKET].note_fuel(run.fuel_consumed)
    # Returned or trapped, the run used fuel: it is paid for either way, by the next group commit
    # (the caller does not wait for its fsync; the job reference names the provenance record).
    ledger.settle_later(payer, app[IDENTITY], run.price, {"fuel": run.fuel_consumed},
                        f"compute:{run.provenance_id}", held=budget)
    error = run.error()
    if error is not None:
        raise error
    return web.json_response({**run.to_json(), "provider": app[IDENTITY].id, "deal": deal})


def _max_price(value, default: int) -> int:
    if value is None:
        return default
    if type(value) is not int or not 0 <= value <= 10**12:
        raise InvalidArgument(f"max_price must be a whole number of micro-credits per million fuel, not {value!r}",
                              hint="e.g. --max-price 50")
    return value


@routes.get("/v1/compute/provenance")
async def recent_provenance(request: web.Request) -> web.Response:
    text = request.query.get("limit", "20")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise InvalidArgument(f"limit must be a whole number from 1 to 1000, not {text!r}")
    return web.json_response({"records": request.app[COMPUTE].recent_provenance(int(text))})


@routes.get("/v1/compute/provenance/{id}")
async def get_provenance(request: web.Request) -> web.Response:
    return web.json_response(request.app[COMPUTE].provenance(request.match_info["id"]))
