"""Peer API of jobs other nodes place here (compute/hosted_jobs.py; the wire: net/jobs.py)."""

from __future__ import annotations

from aiohttp import web

from ...net.jobs import CANCEL_PATH, DATA_PATH, JOB_PATH, JOBS_PATH, OUTPUT_PATH, RUN_PATH
from ...storage.core.wire import parse_count
from .. import peer_auth
from ..appkeys import NODE
from .common import json_body, json_response, query_int, read_body

routes = web.RouteTableDef()


@routes.post(JOBS_PATH)
async def begin(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"spec", "price", "memory_price", "authorization", "deal", "data"}')
    return json_response(await request.app[NODE].hosted_jobs.begin(peer_auth.peer_id(request), body), status=201)


@routes.put(DATA_PATH)
async def take(request: web.Request) -> web.Response:
    offset = parse_count(request.match_info["offset"], "the offset")
    answer = await request.app[NODE].hosted_jobs.take(peer_auth.peer_id(request), request.match_info["job"], offset,
                                                      await read_body(request))
    return json_response(answer)


@routes.post(RUN_PATH)
async def run(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].hosted_jobs.run(peer_auth.peer_id(request), request.match_info["job"]))


@routes.post(CANCEL_PATH)
async def cancel(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].hosted_jobs.cancel(peer_auth.peer_id(request),
                                                                    request.match_info["job"]))


@routes.get(OUTPUT_PATH)
async def output(request: web.Request) -> web.Response:
    index = parse_count(request.match_info["output"], "the output")
    offset = query_int(request.query, "offset", 0, 0, 1 << 62)
    data = await request.app[NODE].hosted_jobs.output(peer_auth.peer_id(request), request.match_info["job"], index,
                                                      offset)
    return web.Response(body=data, content_type="application/octet-stream")


@routes.delete(JOB_PATH)
async def forget(request: web.Request) -> web.Response:
    request.app[NODE].hosted_jobs.forget(peer_auth.peer_id(request), request.match_info["job"])
    return json_response({"forgotten": request.match_info["job"]})
