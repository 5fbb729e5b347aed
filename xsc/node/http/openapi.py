"""GET /openapi.json: the node's API contract (docs/openapi.yaml), served to anyone, as JSON.

The document lives in the source tree (docs/openapi.yaml, beside the package); it is read and
converted once, on the first request, off the event loop. tests/node/test_openapi.py keeps it true
to the routes the node registers."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path

from aiohttp import web

from ... import codec
from ... import __file__ as _package_file
from ...errors import NotFound

DOCUMENT = Path(_package_file).resolve().parent.parent / "docs" / "openapi.yaml"
routes = web.RouteTableDef()


def load(path: Path = DOCUMENT) -> dict:
    """The OpenAPI document as a JSON-able dict."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"this installation has no API document ({path})",
                       hint="it is docs/openapi.yaml in the XSC source tree") from None
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's where built: 15x faster


@lru_cache(maxsize=1)
def _body() -> bytes:
    return codec.dumps(load())


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    body = await asyncio.get_running_loop().run_in_executor(None, _body)
    return web.Response(body=body, content_type="application/json")
