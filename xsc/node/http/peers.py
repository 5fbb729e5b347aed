"""Peer routes (xsc.peers.PeerService).

User API (token):
    GET    /v1/peers              this node's descriptor and every known peer's, with its health
    POST   /v1/peers {"url"}      join the node at URL (and, through it, every node it knows)
    DELETE /v1/peers/{id}         forget a node; its descriptors are ignored until it is added again
    GET    /v1/peers/quarantine   the peers quarantined for misbehaving, why and until when
    DELETE /v1/peers/quarantine/{id}   lift a quarantine
Peer API (signed, see node/peer_auth.py):
    POST   /v1/peer/descriptors   {"descriptors": [...]} -> {"self": ..., "descriptors": [...]}
    POST   /v1/peer/challenge     {"nonce"} -> the nonce signed with (prober, responder), and "descriptor"
"""

from __future__ import annotations

from aiohttp import web

from .. import peer_auth
from ..appkeys import NODE
from .common import json_body, json_response

routes = web.RouteTableDef()


@routes.get("/v1/peers")
async def list_peers(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].peers.table())


@routes.post("/v1/peers")
async def add_peer(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"url": "http://HOST:PORT"}')
    return json_response(await request.app[NODE].peers.join(body.get("url")), status=201)


@routes.delete("/v1/peers/{id}")
async def remove_peer(request: web.Request) -> web.Response:
    node_id = request.match_info["id"]
    request.app[NODE].peers.remove(node_id)
    return json_response({"removed": node_id})


@routes.get("/v1/peers/quarantine")
async def list_quarantine(request: web.Request) -> web.Response:
    return json_response({"quarantined": request.app[NODE].admission.quarantine.list()})


@routes.delete("/v1/peers/quarantine/{id}")
async def lift_quarantine(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].admission.quarantine.remove(request.match_info["id"]))


@routes.post("/v1/peer/descriptors")
@peer_auth.before_body(lambda request, sender, size: request.app[NODE].peers.check_budget(request.remote, size))
async def exchange_descriptors(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"descriptors": [...]}')
    return json_response(request.app[NODE].peers.gossip_answer(body.get("descriptors"), request.remote))


@routes.post("/v1/peer/challenge")
async def answer_challenge(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"nonce": "<32 hex digits>"}')
    return json_response(request.app[NODE].peers.answer_challenge(body.get("nonce"), peer_auth.peer_id(request)))
