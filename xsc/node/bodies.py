"""Request bodies: the one way a handler reads a JSON object, with a clear 400 for anything else."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import InvalidArgument


def json_object(raw: bytes, hint: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidArgument("the request body is not JSON", hint=hint) from None
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object", hint=hint)
    return body


async def json_body(request: web.Request, hint: str) -> dict[str, Any]:
    return json_object(await request.read(), hint)
