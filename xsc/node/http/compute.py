"""HTTP API of sandboxed compute: deploy and list modules, invoke functions (paid, here or on another node),
read provenance records; and the peer API a provider runs paid calls by (compute/paid.py)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from ...compute import module_too_large
from ...compute.job_cancels import asking
from ...compute.jobs import MAX_LISTED
from ...compute.maps import MAX_MAP_BODY
from ...compute.pushes import MAX_PUSHED_BYTES
from ...errors import BodyTimeout, Forbidden, PayloadTooLarge
from ...net.compute import INVOKE_PATH, INVOKES_PATH, MAX_BATCH_BYTES, MAX_BATCH_CALLS, MODULES_PATH, PROVENANCE_PATH
from ...storage.holder import MIN_UPLOAD_RATE
from ...tasks import in_pool
from .. import peer_auth
from ..appkeys import CPU_POOL, NODE, PEER_LIMITS
from .common import (BODY_SECONDS, json_body, json_object, json_response, json_value, large_json_body,
                     optional_json_body, query_flag, query_int, read_body, results_response)

routes = web.RouteTableDef()


async def _read_module(request: web.Request, limit: int) -> bytes:
    """The raw body, refused as soon as it is known to be over the limit (without reading the rest)."""
    if request.content_length is not None and request.content_length > limit:
        raise module_too_large(request.content_length, limit)
    body = bytearray()
    seconds = BODY_SECONDS + limit / MIN_UPLOAD_RATE
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(256 * 1024):
                body += chunk
                if len(body) > limit:
                    raise module_too_large(None, limit)
    except TimeoutError:
        raise BodyTimeout(f"the module did not arrive within {seconds:.0f} s", hint="send faster",
                          received=len(body)) from None
    return bytes(body)


@routes.post("/v1/modules")
async def deploy(request: web.Request) -> web.Response:
    registry = request.app[NODE].compute.registry
    wasm = await _read_module(request, registry.max_module_size)
    facts = {k: request.query[k] for k in ("name", "version", "description") if k in request.query}
    info, created = await registry.deploy(wasm, wasi=query_flag(request.query, "wasi"), facts=facts)
    return json_response({**info.to_json(), "created": created}, status=201 if created else 200)


@routes.get("/v1/modules")
async def list_modules(request: web.Request) -> web.Response:
    return json_response({"modules": [m.to_json() for m in request.app[NODE].compute.registry.modules()]})


@routes.get("/v1/modules/{id}")
async def get_module(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].compute.registry.module(request.match_info["id"]).to_json())


@routes.post("/v1/compute/invoke")
async def invoke(request: web.Request) -> web.Response:
    body = json_value(await read_body(request), 'send {"module": ID, "function": NAME, "args": [...]}')
    return json_response(await request.app[NODE].paid.invoke(body))


@routes.get("/v1/compute/provenance")
async def recent_provenance(request: web.Request) -> web.Response:
    limit = query_int(request.query, "limit", 20, 1, 1000)
    records = request.app[NODE].compute.provenance_records.recent(limit)
    answer: dict = {"records": records}
    if "minutes" in request.query:  # and how many runs in each of the last N minutes (every record, not only these)
        minutes = query_int(request.query, "minutes", 30, 1, 1440)
        answer["per_minute"] = request.app[NODE].compute.provenance_records.per_minute(minutes)
    return json_response(answer)


@routes.get("/v1/compute/provenance/{id}")  # a run here, or elsewhere (its provider's record: compute/spot_checks.py)
async def get_provenance(request: web.Request) -> web.Response:
    checks, provider = request.app[NODE].paid.checks, request.query.get("provider")
    return json_response(await checks.provenance(request.match_info["id"], provider))


# --- peer API: a provider runs a call a gateway matched here ------------------------------------
def _asked_for_a_module(request: web.Request, sender: str, size: int) -> None:
    """A push is read only from a gateway this node asked for a module, and only up to a peer module's size."""
    if not request.app[NODE].paid.pushes.awaits(sender):
        raise Forbidden("this node did not ask for this module")
    if size > MAX_PUSHED_BYTES:
        raise module_too_large(size, MAX_PUSHED_BYTES)


@routes.put(MODULES_PATH)
@peer_auth.before_body(_asked_for_a_module)
async def receive_module(request: web.Request) -> web.Response:
    answer, created = await request.app[NODE].paid.pushes.receive(peer_auth.peer_id(request), await read_body(request),
                                                                  wasi=request.query.get("wasi") == "true",
                                                                  tab=request.query.get("tab"))
    return json_response(answer, status=201 if created else 200)


@routes.post(INVOKE_PATH)
async def run_for_peer(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"call", "price", "authorization", "deal"}')
    return json_response(await request.app[NODE].paid.run_for_peer(peer_auth.peer_id(request), body))


@routes.get(PROVENANCE_PATH)
async def record_for_peer(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].paid.checks.served(peer_auth.peer_id(request), request.match_info["id"]))


@routes.post(INVOKES_PATH)
async def run_batch_for_peer(request: web.Request) -> web.Response:
    """A gateway's batch of tab calls (net/compute.py: InvokeBatcher): one answer or problem per call, in order."""
    if len(raw := await read_body(request)) > MAX_BATCH_BYTES:  # bounded before it is parsed
        raise PayloadTooLarge(f"a batch of calls is at most {MAX_BATCH_BYTES} bytes", hint="send fewer calls at once")
    body = json_object(raw, 'send {"calls": [CALL, ...]}')
    calls, gateway = body.get("calls"), peer_auth.peer_id(request)
    if isinstance(calls, list) and 1 < len(calls) <= MAX_BATCH_CALLS:  # each call counts (the first with the request)
        request.app[PEER_LIMITS].check(gateway, time.monotonic(), f"peer {gateway}", len(calls) - 1)
    results = await request.app[NODE].paid.run_batch_for_peer(gateway, body)
    return results_response(results)


# --- jobs: WASI programs over stored files (compute/jobs.py) ------------------------------------------
@routes.post("/v1/compute/jobs")  # the spec's JSON on one line, then (application/x-xsc-job) the program's stdin
async def run_job(request: web.Request) -> web.Response:
    with asking(request.query.get("asker")):  # what its caller, gone, asks after (compute/job_cancels.py)
        return json_response(await request.app[NODE].jobs.run_streamed(request.content.read), status=201)


@routes.get("/v1/compute/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    limit = query_int(request.query, "limit", 20, 1, MAX_LISTED)
    if "asker" in request.query:  # the job a request tagged so runs now, if it does
        return json_response(request.app[NODE].jobs.cancels.asked(request.query["asker"]))
    return json_response(await request.app[NODE].jobs.listed(limit, request.query.get("before")))


@routes.post("/v1/compute/jobs/{id}/cancel")  # its run stopped now; answered once it has ended
async def cancel_job(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].jobs.cancel(request.match_info["id"]))


@routes.get("/v1/compute/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    return json_response(await in_pool(request.app[CPU_POOL], request.app[NODE].jobs.job, request.match_info["id"]))


@routes.post("/v1/compute/jobs/{id}/rerun")  # no body, or {"replicas"?, "agree"?}: the guarantee asked instead
async def rerun_job(request: web.Request) -> web.Response:
    guarantee = await optional_json_body(request, 'send {"replicas": R, "agree": K}, or nothing')
    with asking(request.query.get("asker")):
        return json_response(await request.app[NODE].jobs.rerun(request.match_info["id"], guarantee), status=201)


@routes.get("/v1/compute/lineage/{cap}")
async def lineage(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].jobs.lineage(request.match_info["cap"]))


# --- maps: one job per input, with a record of their own (compute/maps.py) ----------------------------------
@routes.post("/v1/compute/maps")
async def make_map(request: web.Request) -> web.Response:
    body = await large_json_body(request, MAX_MAP_BODY, MIN_UPLOAD_RATE, 'send {"spec", "as", "over", "inputs"}')
    return json_response(await in_pool(request.app[CPU_POOL], request.app[NODE].maps.create, body), status=201)


@routes.get("/v1/compute/maps")
async def maps(request: web.Request) -> web.Response:
    return json_response({"maps": await in_pool(request.app[CPU_POOL], request.app[NODE].maps.list)})


@routes.get("/v1/compute/maps/{id}")
async def get_map(request: web.Request) -> web.Response:
    return json_response(await in_pool(request.app[CPU_POOL], request.app[NODE].maps.map, request.match_info["id"]))


@routes.delete("/v1/compute/maps/{id}")  # on the loop: no input's request begins between its check and its write
async def forget_map(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].maps.forget(request.match_info["id"],
                                                             query_flag(request.query, "cancel")))


@routes.post("/v1/compute/maps/{id}/inputs/{n}")  # input n's job, unless it is done
async def run_map_input(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].maps.run_input(request.match_info["id"], request.match_info["n"]),
                         status=201)


# --- watches: jobs kept run over an S3 prefix (compute/watches.py) ----------------------------------------
@routes.post("/v1/compute/watches")
async def watch(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"name", "spec", "on": "s3://B/P", "to": "s3://B2/P2", "as": "/in/data"}')
    return json_response(await in_pool(request.app[CPU_POOL], request.app[NODE].watches.add, body), status=201)


@routes.get("/v1/compute/watches")
async def watches(request: web.Request) -> web.Response:
    return json_response({"watches": await in_pool(request.app[CPU_POOL], request.app[NODE].watches.list)})


@routes.delete("/v1/compute/watches/{name}")
async def unwatch(request: web.Request) -> web.Response:
    return json_response(await in_pool(request.app[CPU_POOL], request.app[NODE].watches.remove,
                                       request.match_info["name"]))
