"""Storage routes of the user API: put, get, list, remove, check, verify, repair, renew (StorageService); verify and
repair of every file."""

from __future__ import annotations

import logging

from aiohttp import web

from ...errors import BadRequest, InvalidArgument, InvalidCapability, XscError
from ...serve.body import paced_reader
from ...serve.direct import send_body
from ...storage import Capability
from ...storage.core import leases, ranges
from ...storage.core.capability import MAX_TEXT, REMOVED_AT_ONCE
from ...storage.holder import MIN_UPLOAD_RATE
from ..appkeys import CONFIG, HANDOFF, METRICS, NODE
from ..auth import check_token, guarded
from ..problems import problem_from_error
from .common import json_response, large_json_body, optional_json_body, progress_answer, put_terms, query_int

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
# A removal's body: REMOVED_AT_ONCE capabilities as JSON strings, with room for the spaces a client puts between them.
MAX_REMOVAL_BODY = REMOVED_AT_ONCE * (MAX_TEXT + 16) + 1024
_REMOVAL_HINT = f'send {{"caps": [CAPABILITY, ...]}}, at most {REMOVED_AT_ONCE:,} capabilities a request'


def _cap(request: web.Request) -> Capability:
    return Capability.parse(request.match_info["cap"])


async def _expect_put(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: refuse a put that will fail before its body is sent."""
    try:
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise BadRequest(f"unsupported Expect header: {request.headers['Expect']!r}")
        with guarded(request):  # refused here, before the middleware: a guess counts all the same
            check_token(request)
        seconds, bid, wanted = put_terms(request)
        await request.app[NODE].storage.precheck(request.content_length, seconds, bid, **wanted)
    except XscError as err:
        response = problem_from_error(err)
        response.force_close()
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def _put_handed(request: web.Request, token: str) -> web.Response:
    """A put of the file handed to the node over its Unix socket (serve/handoff.py), read by the node itself."""
    if request.content_length or request.headers.get("Transfer-Encoding"):
        raise BadRequest("a put of a handed-over file (?local=) has no body")
    held = request.app[HANDOFF].take(token, request.app[METRICS].bytes_received.inc,  # read while its client is there
                                     lambda: request.transport is not None and not request.transport.is_closing())
    try:
        seconds, bid, wanted = put_terms(request)
        answer = await request.app[NODE].storage.put(held.read, held.size, request.query.get("name"), seconds, bid,
                                                     **wanted)
    finally:
        await held.close()
    return json_response(answer, status=201)


@routes.post("/v1/store/files", expect_handler=_expect_put)
async def put_file(request: web.Request) -> web.Response:
    if "local" in request.query:
        return await _put_handed(request, request.query["local"])
    size = request.content_length
    if size is None and request.headers.get("Transfer-Encoding", "").lower() != "chunked":
        raise BadRequest("a put needs a body with Content-Length or chunked transfer encoding")
    metrics, stall = request.app[METRICS], request.app[CONFIG].node.idle_timeout

    paced = paced_reader(request.content, stall, what="the upload", hint="check the connection and put the file again")

    async def read(n: int) -> bytes:
        chunk = await paced(n)
        metrics.bytes_received.inc(len(chunk))
        return chunk

    try:
        seconds, bid, wanted = put_terms(request)
        answer = await request.app[NODE].storage.put(read, size, request.query.get("name"), seconds, bid, **wanted)
    except XscError as err:
        # The client may still be sending: answer, then close, rather than leave it blocked.
        response = problem_from_error(err)
        response.force_close()
        return response
    return json_response(answer, status=201)


@routes.get("/v1/store/room")
async def room(request: web.Request) -> web.Response:
    """Whether a put of `?size=N` bytes finds room here now, on the data dir's disk and in storage.capacity: its
    refusal (507 disk-full, storage-full) as the put's own `Expect: 100-continue` would answer it, without a body on
    its way.  For a front that tells its own client to send a body only once the node would take it (xsc s3 serve)."""
    size = query_int(request.query, "size", -1, 0, 2**64 - 1)  # as large as a capability's size
    if size < 0:
        raise InvalidArgument("say the size of the put: ?size=BYTES")
    request.app[NODE].storage.check_room(size)
    return json_response({"size": size})


@routes.get("/v1/store/files")
async def list_files(request: web.Request) -> web.Response:
    limit = query_int(request.query, "limit", 0, 1, 10**9) or None  # ?limit=N: the newest N files only
    return json_response(await request.app[NODE].storage.files_view(limit))


@routes.get("/v1/store/files/{cap}")
async def get_file(request: web.Request) -> web.StreamResponse:
    cap = _cap(request)
    byte_range = ranges.parse_range(request.headers.get("Range"), cap.size)  # only the segments it covers are read
    size, chunks = await request.app[NODE].storage.open(cap, byte_range)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"})
    response.content_length = size
    if byte_range is not None:
        response.set_status(206)
        response.headers["Content-Range"] = ranges.content_range(*byte_range, size)
        response.content_length = byte_range[1] - byte_range[0] + 1
    metrics = request.app[METRICS]
    try:  # closed however it ends: a client gone before the first byte leaves no range asked of a holder running
        await response.prepare(request)
        await send_body(request, response, chunks, metrics.bytes_served.inc,
                        stall=request.app[CONFIG].node.idle_timeout)
    except XscError as err:
        # Headers are gone: cut the connection so the client sees a short body, never wrong bytes.
        log.error("get of %s stopped: %s", request.match_info["cap"][:24], err)
        request.transport.close()
        return response
    finally:
        await chunks.aclose()
    await response.write_eof()
    return response


@routes.delete("/v1/store/files/{cap}")
async def remove_file(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].storage.removals.remove(_cap(request)))


@routes.post("/v1/store/remove")
async def remove_files(request: web.Request) -> web.Response:
    """Many files removed in one request, their synced writes per batch, not per file (`Removals.remove_all`):
    those this node's user has, each once, removed or, taken out of the listing but not finished now, to be finished
    (with why); the others named apart.  An entry that is no capability removes none."""
    texts = (await large_json_body(request, MAX_REMOVAL_BODY, MIN_UPLOAD_RATE, _REMOVAL_HINT)).get("caps")
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise InvalidArgument("a removal names its files as a list of capabilities", hint=_REMOVAL_HINT)
    if len(texts) > REMOVED_AT_ONCE:
        raise InvalidArgument(f"a removal names at most {REMOVED_AT_ONCE:,} files, this one {len(texts):,}",
                              hint=f"send them {REMOVED_AT_ONCE:,} at a time")
    caps = []
    for n, text in enumerate(texts):
        try:
            caps.append(Capability.parse(text))
        except InvalidCapability as err:
            raise InvalidCapability(f"caps[{n}]: {err}", hint=err.hint) from None
    done, named = await request.app[NODE].storage.removals.remove_all(caps), dict.fromkeys(map(str, caps))
    removed, unfinished = set(map(str, done.finished)), {str(c): why for c, why in done.unfinished.items()}
    return json_response({"removed": [c for c in named if c in removed],
                          "to_finish": [{"capability": c, "reason": unfinished[c]} for c in named if c in unfinished],
                          "not_held": [c for c in named if c not in removed and c not in unfinished]})


@routes.get("/v1/store/files/{cap}/check")
async def check_file(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].storage.check(_cap(request)))


@routes.post("/v1/store/files/{cap}/verify")
async def verify_file(request: web.Request) -> web.StreamResponse:
    cap = _cap(request)
    return await progress_answer(request, lambda progress: request.app[NODE].storage.verify(cap, progress))


@routes.post("/v1/store/files/{cap}/repair")
async def repair_file(request: web.Request) -> web.StreamResponse:
    cap = _cap(request)
    return await progress_answer(request, lambda progress: request.app[NODE].storage.repair(cap, progress))


@routes.post("/v1/store/verify")
@routes.post("/v1/store/repair")
async def every_file(request: web.Request) -> web.StreamResponse:
    """Every file verified, or verified and repaired where damaged; a client gone away leaves the files begun to
    finish and begins no more."""
    storage, repair = request.app[NODE].storage, request.path.endswith("/repair")
    going_on = lambda: request.transport is not None and not request.transport.is_closing()  # noqa: E731
    return await progress_answer(request, lambda progress: storage.deep_check(repair, progress, going_on))


@routes.post("/v1/store/files/{cap}/renew")
async def renew_file(request: web.Request) -> web.Response:
    """Extend every share's lease to now + duration (body {"duration": seconds}), paid like the lease."""
    cap = _cap(request)
    body = await optional_json_body(request, leases.DURATION_HINT)
    return json_response(await request.app[NODE].storage.renew(cap, body))
