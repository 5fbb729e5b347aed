"""Who may call what: the user API needs the token, peers sign, anyone gets /health, /metrics and /openapi.json."""

from __future__ import annotations

import hmac

from aiohttp import web

from ..errors import Unauthorized
from .appkeys import TOKEN

PUBLIC_PATHS = frozenset({"/health", "/metrics", "/openapi.json"})
PEER_PREFIX = "/v1/peer/"  # authenticated by request signatures, not the token


@web.middleware
async def token_middleware(request: web.Request, handler):
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PEER_PREFIX) or not path.startswith("/v1/"):
        return await handler(request)
    check_token(request)
    return await handler(request)


def check_token(request: web.Request) -> None:
    """Raise Unauthorized unless the request carries the node's API token."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized(
            "this API needs the node's token",
            hint="send 'Authorization: Bearer <token>' with the token from <data dir>/api-token",
        )
    if not hmac.compare_digest(given.strip().encode(), request.app[TOKEN].encode()):
        raise Unauthorized("wrong API token", hint="use the token from the node's <data dir>/api-token")
