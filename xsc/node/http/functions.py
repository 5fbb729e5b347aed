"""Web functions (compute/functions.py): their management on the user API, and the app that serves them to
anyone on a listener of its own (`node.web_listen`): a function's page never shares an origin with the user API
or the dashboard, and carries no token."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from ...compute.cgi import Request, path_info
from ...net.addresses import address_key
from ...net.functions import FUNCTION_PATH, FUNCTIONS_PATH
from .. import peer_auth
from ..appkeys import NODE
from ..limits import RateLimiter
from ..problems import problem_from_error, problem_middleware
from ...serve.body import expect_continue, paced_reader
from ...serve.direct import send_body
from ...serve.stop import IN_FLIGHT, InFlight
from ...errors import NotFound, XscError
from .common import json_body, json_response

routes = web.RouteTableDef()
WHOLE = 64 * 1024  # an answer this long at most is handed to aiohttp whole: its write never waits for the caller
MIN_BODY_RATE = 1024  # bytes a second a request's body must average once the node waits for it (serve/body.py)
HINT = 'send {"name", "module", "inputs": ["CAP:/in/NAME"], "env", "limits", "max_body", "concurrency", "spend_cap"}'


@routes.post("/v1/compute/functions")
async def serve_function(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].functions.serve(await json_body(request, HINT)), status=201)


@routes.get("/v1/compute/functions")
async def functions(request: web.Request) -> web.Response:
    return json_response({"functions": request.app[NODE].functions.functions()})


@routes.get("/v1/compute/functions/hosted")
async def hosted_functions(request: web.Request) -> web.Response:
    return json_response({"functions": request.app[NODE].placed_functions.hosted()})


@routes.delete("/v1/compute/functions/{name}")
async def unserve_function(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].functions.unserve(request.match_info["name"]))


# --- functions other nodes place here (compute/placed_functions.py; the wire: net/functions.py) -----------
@routes.post(FUNCTIONS_PATH)
async def place_function(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"function", "price", "memory_price", "authorization", "deal"}')
    return json_response(await request.app[NODE].placed_functions.place(peer_auth.peer_id(request), body), status=201)


@routes.get(FUNCTION_PATH)
async def placed_function(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].placed_functions.status(peer_auth.peer_id(request),
                                                                         request.match_info["name"]))


@routes.delete(FUNCTION_PATH)
async def withdraw_function(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].placed_functions.withdraw(peer_auth.peer_id(request),
                                                                           request.match_info["name"]))


def _raw_rest(raw_path: str) -> str:
    """The part after /fn/NAME of a request's path as sent (still encoded; of an absolute-form target too)."""
    parts = raw_path.split("/", 3)  # "", "fn", NAME, the rest
    return "/" + parts[3] if len(parts) > 3 else "/"


def _port(request: web.Request) -> int:
    """The port of the listener the request came to (SERVER_PORT when its Host names none)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) > 1 else 0


def web_app(node, rate: float, stall: float) -> web.Application:
    """The functions' own app: /fn/NAME/PATH, any method, anyone; each address limited to `rate` a second.  A
    caller that takes no bytes of an answer for `stall` seconds is cut: one that stops reading, connected, would
    hold its answer (up to MAX_RESPONSE bytes on disk) and its connection for good."""
    limits = RateLimiter(rate, 2 * rate)

    def asked(request: web.Request) -> tuple[str, Request]:
        """The function's name and the request as it sees it (NotFound for a path that is no function's)."""
        if "name" not in request.match_info:
            raise NotFound(f"nothing is served at {request.path[:200]!r} here", hint="functions answer at /fn/NAME/")
        name = request.match_info["name"]
        decoded, raw = path_info(_raw_rest(request.rel_url.raw_path))
        return name, Request(
            request.method, decoded, request.rel_url.raw_query_string,
            list(request.headers.items()), request.remote or "", request.host, request.content_length,
            paced_reader(request.content, stall, min_rate=MIN_BODY_RATE, hint="send it again, faster"),
            script_name=f"/fn/{name}", raw_path_info=raw, port=_port(request), scheme=request.scheme,
            target=request.rel_url.raw_path_qs, version="HTTP/%d.%d" % request.version)

    async def call(request: web.Request) -> web.StreamResponse:
        try:
            limits.check(address_key(request.remote), time.monotonic(), f"address {request.remote}")
            answer = await node.functions.call(*asked(request))
        except XscError as err:
            response = problem_from_error(err)
            if request.can_read_body and not request.content.at_eof():
                response.force_close()  # a body over the cap is not read
            return response
        try:
            if (body := answer.whole()) is not None and len(body) <= WHOLE:
                return web.Response(status=answer.status, headers=answer.headers, body=body)
            response = web.StreamResponse(status=answer.status, headers=answer.headers)
            response.content_length = answer.framed_length  # None: chunked
            await response.prepare(request)
            # aiohttp writes what it is given even where no body may follow the head: unframed, the caller would read
            # the function's bytes as the next response on its connection
            if request.method != "HEAD" and answer.status not in (204, 304):
                # answer.chunks() raises if the run fails once its head is sent
                await send_body(request, response, _once(body) if body is not None else answer.chunks(), stall=stall)
            await response.write_eof()
            return response
        except XscError:  # the connection is cut: the caller must not take a partial body for a whole one
            request.transport.abort() if request.transport is not None else None
            return response
        finally:
            await answer.release()

    in_flight = InFlight("web", lambda request, err: problem_from_error(err))  # drained by the node's stop
    app = web.Application(client_max_size=1024**2, middlewares=[in_flight.middleware, problem_middleware])
    app[IN_FLIGHT] = in_flight
    # a body refused whatever it holds (no function's, over its cap, too many at once) is not asked for
    expect = expect_continue(lambda request: node.functions.admit(*asked(request)), problem_from_error)
    app.router.add_route("*", "/fn/{name}", call, expect_handler=expect)
    # [\s\S]: a path that decodes to a line break is the function's to refuse (400), not aiohttp's 404
    app.router.add_route("*", r"/fn/{name}/{path:[\s\S]*}", call, expect_handler=expect)
    app.router.add_route("*", r"/{elsewhere:[\s\S]*}", call, expect_handler=expect)  # no function's: a 404 at once
    return app


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
