"""HTTP API of the module registry's lifecycle and of replays (compute/service.py, compute/paid.py).

    PUT    /v1/modules/{id}/status            {"status": "active" | "disabled"}: a disabled module is refused
    DELETE /v1/modules/{id}                   remove it (its provenance records are kept)
    POST   /v1/compute/provenance/{id}/replay re-run a recorded call (paid) and compare the results bit for bit
    POST   /v1/peer/compute/tabs/close        a gateway closes its tab: this provider's receipt (remote_tabs.py)
"""

from __future__ import annotations

from aiohttp import web

from ...net.compute import TAB_CLOSE_PATH
from .. import peer_auth
from ..appkeys import NODE
from .common import json_body, json_response

routes = web.RouteTableDef()


@routes.put("/v1/modules/{id}/status")
async def set_status(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"status": "active"} or {"status": "disabled"}')
    status = body.get("status") if isinstance(body, dict) else None
    return json_response(request.app[NODE].compute.registry.set_status(request.match_info["id"], status).to_json())


@routes.delete("/v1/modules/{id}")
async def remove(request: web.Request) -> web.Response:
    removed = request.app[NODE].compute.registry.remove(request.match_info["id"])
    return json_response({**removed.to_json(), "removed": True})


@routes.post("/v1/compute/provenance/{id}/replay")
async def replay(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].paid.replay(request.match_info["id"]))


@routes.post(TAB_CLOSE_PATH)
async def close_tab(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"authorization": HEX}')
    return json_response(await request.app[NODE].paid.close_tab(peer_auth.peer_id(request), body))
