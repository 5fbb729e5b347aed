"""Peer health routes (xsc.peers.HealthService).

    GET  /v1/health/peers   every known peer's availability (and the last probe round)
    POST /v1/health/probe   probe every peer now; the round's results
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import NODE
from .common import json_response

routes = web.RouteTableDef()


@routes.get("/v1/health/peers")
async def peer_health(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].health.view())


@routes.post("/v1/health/probe")
async def probe_now(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].health.probe_round())
