"""Storage routes of the user API: put, get, list, remove, check, verify, repair."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict

from aiohttp import web

from ..errors import BadRequest, MarketNoDeal, NotFound, PeerNotFound, PeerUnreachable, XscError
from ..storage import Capability, Gateway, ShareStore, layout
from .auth import check_token
from . import storage_market
from .context import CLIENT_IDENTITY, CONFIG, CPU_POOL, DB, IDENTITY, METRICS
from .ledger_routes import LEDGER
from .market_routes import DEALS
from .problems import problem_from_error
from .status import STATUS_PARTS

log = logging.getLogger(__name__)

GATEWAY = web.AppKey("gateway", Gateway)
REPAIR_LOCKS = web.AppKey("repair_locks", dict)  # storage index -> asyncio.Lock of the repair running
routes = web.RouteTableDef()


async def _storage_service(app: web.Application):
    config = app[CONFIG]
    store = ShareStore(app[DB], config.storage.capacity)
    interrupted = await asyncio.get_running_loop().run_in_executor(app[CPU_POOL], store.recover)
    if interrupted:
        log.warning("removed what %d interrupted upload(s) had staged", interrupted)
    app[GATEWAY] = Gateway(store, app[CPU_POOL], segment_size=config.storage.segment_size,
                           lease_duration=config.storage.lease_duration, node_key=app[IDENTITY].public_key,
                           depth=2 * max(2, config.compute.threads) + 2,
                           remote_timeout=config.storage.remote_timeout)
    metrics = app[METRICS]
    metrics.bytes_stored.set_function(lambda: store.used)
    metrics.shares_held.set_function(lambda: store.shares_held)
    yield


def _storage_status(app: web.Application) -> dict:
    store = app[GATEWAY].store
    return {"capacity": store.capacity, "used": store.used, "reserved": store.reserved, "free": store.free,
            "shares": store.shares_held}


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_storage_service)
    app[REPAIR_LOCKS] = {}
    app[STATUS_PARTS]["storage"] = _storage_status
    app.add_routes(routes)


def _cap(request: web.Request) -> Capability:
    return Capability.parse(request.match_info["cap"])


async def _in_pool(request: web.Request, fn, *args):
    return await asyncio.get_running_loop().run_in_executor(request.app[CPU_POOL], fn, *args)


async def _expect_put(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: refuse a put that will fail before its body is sent."""
    try:
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise BadRequest(f"unsupported Expect header: {request.headers['Expect']!r}")
        check_token(request)
        _lease_duration(request)  # a bad duration is refused before the body is sent
        if request.content_length is not None:
            segment_size = request.app[CONFIG].storage.segment_size
            stored = layout.stored_bytes(request.content_length, segment_size)
            # With peers the shares spread out: this node needs room for one of them at least (the put
            # reserves exactly what it keeps here, and each holder checks its own).
            here = layout.share_bytes(request.content_length, segment_size) if _has_peers(request.app) else stored
            request.app[GATEWAY].store.check_fits(here)
            # The market's answer and the credit check, before the body is sent (the put asks again).
            result = await storage_market.quote_and_check_credit(
                request.app, request.content_length, _lease_duration(request), storage_market.max_price(request),
                **storage_market.filters(request))
            storage_market.withdraw_needs(request.app, result.needs)
    except XscError as err:
        response = problem_from_error(err)
        response.force_close()
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


def _has_peers(app: web.Application) -> bool:
    from .peers import PEERS

    return PEERS in app and bool(app[PEERS].peers())


class _UnknownNode:
    """A holder this node no longer knows (removed with `xsc peers rm`): its share is unreadable,
    and the file is read or repaired from the others."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def __getattr__(self, name: str):
        async def refuse(*args, **kwargs):
            raise PeerUnreachable(f"node {self.node_id[:12]}… is not a known peer any more",
                                  hint="add it back with `xsc peers add URL`, or repair the file")
        return refuse


def _holder(app: web.Application, node_id: str, price: int | None = None):
    """The share holder on another node, as the gateway uses it (`price`: the deal a new share is placed at)."""
    from .peers import PEERS
    from .remote_holder import RemoteHolder

    peers = app[PEERS]
    try:
        return RemoteHolder(peers, node_id, peers.peer(node_id).url, price)
    except PeerNotFound:
        return _UnknownNode(node_id)


def _placer(app: web.Application, quote: storage_market.PutQuote):
    """Where a put's shares go: the providers the market matched to its needs, each told its deal price."""
    me = app[IDENTITY].id

    def place(si: bytes, share_bytes: int) -> tuple[list[str], dict]:
        nodes = list(quote.nodes)
        return nodes, {s: _holder(app, node, quote.prices[s]) for s, node in enumerate(nodes) if node != me}

    return place


def _holders_of(app: web.Application, record: dict | None) -> tuple[dict, list[str] | None]:
    """The holders of a file's shares on other nodes, from the gateway's record of where it put them."""
    nodes = (record or {}).get("placement")
    if not nodes:
        return {}, None
    me = app[IDENTITY].id
    return {s: _holder(app, node) for s, node in enumerate(nodes) if node not in (me, "this node")}, nodes


async def _delete_everywhere(app: web.Application, cap: Capability) -> dict[str, str]:
    """Delete a file's shares on every holder that answers, then here; returns the nodes that did not."""
    holders, names = await _placed(app, cap)
    results = await asyncio.gather(*(h.delete(cap.storage_index, s) for s, h in holders.items()),
                                   return_exceptions=True)
    await asyncio.get_running_loop().run_in_executor(app[CPU_POOL], app[GATEWAY].store.delete_file,
                                                     cap.storage_index)
    # A holder that is down keeps its share until its lease runs out (it cannot be reached to delete it).
    return {names[s]: str(r) for s, r in zip(holders, results) if isinstance(r, BaseException)}


@routes.post("/v1/store/files", expect_handler=_expect_put)
async def put_file(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    size = request.content_length
    if size is None and request.headers.get("Transfer-Encoding", "").lower() != "chunked":
        raise BadRequest("a put needs a body with Content-Length or chunked transfer encoding")
    metrics = request.app[METRICS]

    async def read(n: int) -> bytes:
        chunk = await request.content.read(n)
        metrics.bytes_received.inc(len(chunk))
        return chunk

    app = request.app
    quote = None
    try:
        seconds = _lease_duration(request)
        quote = await storage_market.quote_and_check_credit(app, size, seconds, storage_market.max_price(request),
                                                            **storage_market.filters(request))
        result = await gateway.put(read, size, request.query.get("name"), place=_placer(app, quote),
                                   lease_duration=seconds)
    except XscError as err:
        # The client may still be sending: answer, then close, rather than leave it blocked.
        response = problem_from_error(err)
        response.force_close()
        return response
    finally:
        if quote is not None:
            storage_market.withdraw_needs(app, quote.needs)
    si = Capability.parse(result.capability).storage_index
    share_bytes = result.stored_bytes // len(result.placement)
    quote.share_bytes = share_bytes
    if size is None:  # a stream's cost is known only now: unpaid, it is not kept
        try:
            await app[LEDGER].ensure_credit(app[CLIENT_IDENTITY], quote.cost)
        except XscError:
            await _delete_everywhere(app, Capability.parse(result.capability))
            raise
    deals = await _in_pool(request, app[DEALS].record, si, result.placement, share_bytes, quote.prices,
                           result.lease_expiry - seconds, result.lease_expiry)
    return web.json_response({**result.to_json(), **quote.to_json(), "deals": [d.to_json() for d in deals]},
                             status=201)


@routes.get("/v1/store/files")
async def list_files(request: web.Request) -> web.Response:
    files = await _in_pool(request, lambda: sorted(request.app[GATEWAY].store.files(), key=lambda f: f["created"]))
    return web.json_response({"files": files})


@routes.get("/v1/store/files/{cap}")
async def get_file(request: web.Request) -> web.StreamResponse:
    cap = _cap(request)
    holders, names = await _placed(request.app, cap)
    size, chunks = await request.app[GATEWAY].open(cap, holders, names, _latency_rank(request.app, names))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    metrics = request.app[METRICS]
    try:
        async for chunk in chunks:
            await response.write(chunk)
            metrics.bytes_served.inc(len(chunk))
    except XscError as err:
        # Headers are gone: cut the connection so the client sees a short body, never wrong bytes.
        log.error("get of %s stopped: %s", request.match_info["cap"][:24], err)
        request.transport.close()
        return response
    await response.write_eof()
    return response


@routes.delete("/v1/store/files/{cap}")
async def remove_file(request: web.Request) -> web.Response:
    cap = _cap(request)
    store = request.app[GATEWAY].store
    record = await _in_pool(request, store.file_record, cap.storage_index)
    if record is None or record["capability"] != str(cap):
        raise NotFound("this node holds no file with that capability",
                       hint="`xsc store ls` lists the files this node uploaded")
    left = await _delete_everywhere(request.app, cap)
    await _in_pool(request, request.app[DEALS].removed, cap.storage_index, int(time.time()))
    return web.json_response({"removed": str(cap), "not_deleted_on": left})


async def _placed(app: web.Application, cap: Capability) -> tuple[dict, list[str] | None]:
    """The holders (on other nodes) and node names of a file's shares, from this gateway's record of it."""
    store = app[GATEWAY].store
    record = await asyncio.get_running_loop().run_in_executor(app[CPU_POOL], store.file_record, cap.storage_index)
    return _holders_of(app, record)


@routes.get("/v1/store/files/{cap}/check")
async def check_file(request: web.Request) -> web.Response:
    cap = _cap(request)
    holders, names = await _placed(request.app, cap)
    reports = await request.app[GATEWAY].check(cap, holders, names)
    return web.json_response(_summary(reports, request.app, names))


def _latency_rank(app: web.Application, names: list[str] | None) -> dict[int, float]:
    """Lower is better: this node 0, peers by their latency average (unknown: a second)."""
    from .peers import PEERS

    if not names or PEERS not in app:
        return {}
    me = app[IDENTITY].id
    return {s: 0.0 if node == me else (app[PEERS].availability(node).latency_ms or 1000.0)
            for s, node in enumerate(names)}


@routes.post("/v1/store/files/{cap}/verify")
async def verify_file(request: web.Request) -> web.Response:
    cap = _cap(request)
    holders, names = await _placed(request.app, cap)
    reports = await request.app[GATEWAY].verify(cap, holders, names)
    return web.json_response(_summary(reports, request.app, names))


@routes.post("/v1/store/files/{cap}/repair")
async def repair_route(request: web.Request) -> web.Response:
    return web.json_response(await repair_file(request.app, _cap(request)))


async def repair_file(app: web.Application, cap: Capability) -> dict:
    """Rebuild a file's missing or corrupt shares: local ones here, remote ones on another healthy node.

    One repair of a file at a time (an on-demand one and an automatic one must not both move a share):
    a second waits for the first, then finds what is left to do."""
    gateway = app[GATEWAY]
    lock = app[REPAIR_LOCKS].setdefault(cap.storage_index, asyncio.Lock())
    async with lock:
        holders, names = await _placed(app, cap)
        moved: dict[int, tuple[str, int]] = {}
        result = await gateway.repair(cap, holders, names, relocate=_relocator(app, cap, moved),
                                      me=app[IDENTITY].id)
        _, after = await _placed(app, cap)
        now = int(time.time())
        for share, node in enumerate(after or []):
            if names and names[share] != node:  # the share has a new holder: so has its deal
                chosen, price = moved.get(share, (node, None))
                app[DEALS].moved(cap.storage_index, share, node, now, price if chosen == node else None)
    if not lock.locked():
        app[REPAIR_LOCKS].pop(cap.storage_index, None)
    holders, names = await _placed(app, cap)
    return {**result, **_summary(await gateway.check(cap, holders, names), app, names)}


def _relocator(app: web.Application, cap: Capability, moved: dict[int, tuple[str, int]]):
    """Where a repaired share goes: a peer that is up and holds no share of the file, matched on the market
    for the rest of the share's lease (the new deal is noted in `moved`: share -> (node, price))."""
    from .peers import PEERS

    async def relocate(share: int, used: set[str]):
        if PEERS not in app:
            return None
        peers = app[PEERS]
        share_bytes = await asyncio.get_running_loop().run_in_executor(
            app[CPU_POOL], _share_bytes, app[GATEWAY], cap)
        not_up = {d.id for d in peers.peers() if not peers.availability(d.id).up}
        placed = {d.share: d for d in app[DEALS].of_file(cap.storage_index)}
        deal = placed.get(share)
        seconds = max(60, deal.end - int(time.time())) if deal else app[CONFIG].storage.lease_duration
        try:
            node, price = storage_market.relocation(app, share_bytes, seconds, avoid=used | not_up)
        except MarketNoDeal as err:
            log.warning("no provider for share %d of %s: %s", share, cap.storage_index.hex()[:16], err)
            return None
        moved[share] = (node, price)
        if node == app[IDENTITY].id:
            return None  # the market chose this node: the share is rebuilt here
        return node, _holder(app, node, price)

    return relocate


def _share_bytes(gateway: Gateway, cap: Capability) -> int:
    manifest = gateway.manifest(cap)
    return layout.share_bytes(manifest.size, manifest.segment_size)


def _summary(reports, app: web.Application | None = None, names: list[str] | None = None) -> dict:
    """Share reports; for a file spread over nodes, with each share's node and that node's health."""
    shares = [asdict(r) for r in reports]
    me = app[IDENTITY].id if app is not None else None
    if app is not None and names and any(node != me for node in names):
        from .peers import PEERS

        for share in shares:
            share["node"] = names[share["share"]]
            if share["node"] != me and PEERS in app:
                availability = app[PEERS].availability(share["node"])
                share["node_up"], share["node_ratio_1h"] = availability.up, availability.ratio_1h
    intact = sum(r.status == "ok" for r in reports)
    return {"shares": shares, "intact": intact, "recoverable": intact >= 4, "healthy": intact == len(reports)}


def _lease_duration(request: web.Request) -> int:
    """`?duration=SECONDS` of a put or a renewal (default: storage.lease_duration), within the lease bounds."""
    from ..storage import leases

    return leases.parse_duration_param(request.query.get("duration"), request.app[CONFIG].storage.lease_duration)


@routes.post("/v1/store/files/{cap}/renew")
async def renew_file(request: web.Request) -> web.Response:
    """Extend every share's lease to now + duration, here and on each holder (body {"duration": seconds}).

    `extended` lists, per share renewed, the bytes held and the seconds added: what the renewal is paid
    for (the payment settles these entries)."""
    from ..storage import leases

    cap = _cap(request)
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise BadRequest("the request body is not JSON", hint='send {"duration": <seconds>}') from None
    if not isinstance(body, dict) or type(body.get("duration", 0)) is not int:
        raise BadRequest('send {"duration": <seconds>} (or {} for the node\'s storage.lease_duration)',
                         hint=leases.DURATION_HINT)
    duration = leases.check_duration(body.get("duration", request.app[CONFIG].storage.lease_duration))
    app = request.app
    # The extension is paid like the lease: at each share's deal price, in arrears, for what is held;
    # the user's credit must cover all of it before any lease is extended.
    deals = [d for d in await _in_pool(request, app[DEALS].of_file, cap.storage_index) if not d.ended]
    target = int(time.time()) + duration
    cost = sum(d.cost(target - d.end) for d in deals if d.end < target)
    await app[LEDGER].ensure_credit(app[CLIENT_IDENTITY], cost)
    holders, names = await _placed(app, cap)
    result = await app[GATEWAY].renew(cap, duration, holders, names, me=app[IDENTITY].id)
    renewed = {e["share"] for e in result.get("renewed", [])}
    await _in_pool(request, app[DEALS].extended, cap.storage_index, result["requested"], renewed)
    return web.json_response({**result, "cost": cost})
