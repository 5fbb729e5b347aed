"""The peer API of share holders (storage/core/wire.py is the protocol, storage/holder.py the holder), and the
damage reports holders send to the node that placed a share (storage/audits.py)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Callable

from aiohttp import web

from ...errors import (BadRequest, BadRequestSignature, BodyTimeout, PayloadTooLarge, ShareNotFound, StorageBusy,
                       XscError)
from ...identity import body_digest
from ...net.addresses import network_key
from ...serve.body import BodyLate, read_into
from ...serve.direct import Stalled, send_body
from ...storage.holder import BODY_STALL, MIN_BODY_RATE, MIN_UPLOAD_RATE
from ...storage.locate import LOCATE_PATH, parse_locate
from ...storage.core.wire import (DAMAGE_PATH, WHOLE_MAX_BODY, WHOLE_PATH, body_parts, parse_count,
                                  parse_damage_report, parse_share, parse_storage_index, parse_whole_shares)
from ...tasks import in_pool
from .. import peer_auth
from ..appkeys import CPU_POOL, METRICS, NODE
from ..problems import status_of
from .common import json_body, json_object, json_response

log = logging.getLogger(__name__)

BODY_SECONDS = 30.0  # a body's deadline: this, plus its length at the slowest upload rate a holder takes

routes = web.RouteTableDef()


def _sender(request: web.Request) -> bytes:
    return peer_auth.signed(request).sender_key


def _target(request: web.Request) -> tuple[bytes, int]:
    return parse_storage_index(request.match_info["si"]), parse_share(request.match_info["share"])


async def _read_signed(request: web.Request, limit: int, parts: Callable[[int], list[int]] = lambda n: [n] if n else []
                       ) -> list[bytearray]:
    """The body of a @streams_body handler, at most limit bytes, read straight into the parts `parts(its length)`
    cuts it into (xsc/serve/body.py), checked against its signed digest (if signed), within a deadline and above a
    rate (a body that trickles in or stalls is cut off, not waited for: holder.MIN_BODY_RATE).  Its length must be
    said first: nothing is allocated for a body before its length is checked against the bound."""
    length = request.content_length
    if length is None:
        raise BadRequest("a peer request's body must have a Content-Length", hint="send it whole, not chunked")
    if length > limit:
        raise PayloadTooLarge(f"the body is {length} bytes; at most {limit} are accepted here", limit=limit)
    seconds = BODY_SECONDS + limit / MIN_UPLOAD_RATE
    try:
        body = await read_into(request, parts(length), seconds, min_rate=MIN_BODY_RATE, window=BODY_STALL)
    except BodyLate as late:
        raise BodyTimeout(f"the body {late.why}", hint="send faster, or less at once", received=late.received) from None
    if peer_auth.signed(request).channel:
        return body  # proven by its connection (node/peer_auth.py): no digest to check
    digest = await in_pool(request.app[CPU_POOL], body_digest, body)
    if not hmac.compare_digest(digest, peer_auth.signed(request).digest):
        raise BadRequestSignature("the request body does not match its signed digest",
                                  hint="sign the exact bytes sent")
    return body


@routes.post("/v1/peer/shares/{si}/{share}/uploads")
async def begin_upload(request: web.Request) -> web.Response:
    si, share = _target(request)
    body = await json_body(request, 'send {"size", "segment_size", "lease_expiry", "price"}')
    answer = await request.app[NODE].share_holder.begin_upload(_sender(request), peer_auth.peer_id(request), si, share,
                                                               body, network_key(request.remote))
    return json_response(answer, status=201)


@routes.put(WHOLE_PATH)
@peer_auth.streams_body
@peer_auth.before_body(lambda request, sender, size: request.app[NODE].share_holder.check_room_for_whole(size))
async def place_whole_shares(request: web.Request) -> web.Response:
    """Each share is placed as if it came alone, with every check: the answer says, share by share in the order sent,
    what was placed and what was refused (and why), so one refusal costs the others nothing.  A body whose length says
    it holds more than this node has room for is refused whole before it is read (507 storage-full)."""
    holder, sender, sender_id = request.app[NODE].share_holder, _sender(request), peer_auth.peer_id(request)
    network = network_key(request.remote)
    async with holder.bodies.room(sender, network, min(WHOLE_MAX_BODY, request.content_length or WHOLE_MAX_BODY)):
        shares = parse_whole_shares(b"".join(await _read_signed(request, WHOLE_MAX_BODY)))
        placed = await asyncio.gather(*(holder.place_whole(sender, sender_id, w.si, w.share, w.terms, w.block,
                                                           network) for w in shares), return_exceptions=True)
    answers, metrics = [], request.app[METRICS]
    for outcome in placed:
        if isinstance(outcome, XscError):
            answers.append({"status": status_of(outcome), "code": outcome.code, "detail": outcome.message,
                            **({"retry_after": max(1, int(outcome.details["retry_after"]))}
                               if "retry_after" in outcome.details else {})})  # its Retry-After, as if alone
            metrics.child(metrics.peer_refusals, outcome.code).inc()  # counted as a refused request of its own is
        elif isinstance(outcome, BaseException):
            raise outcome  # not a refusal (the database, a bug): the whole request fails as any other would
        else:
            answers.append(_placed(outcome))
    return json_response({"shares": answers}, status=200)


@routes.put("/v1/peer/uploads/{upload}/segments/{first}")
@peer_auth.streams_body
async def put_segments(request: web.Request) -> web.Response:
    holder = request.app[NODE].share_holder
    incoming = holder.get(request.match_info["upload"], _sender(request))
    first = parse_count(request.match_info["first"], "the first segment")
    holder.check_order(incoming, first)  # refused before its body is read; checked again under the lock
    last = "commit" in request.query  # the share's last blocks, then the commit (wire.py): one round trip less
    limit = holder.put_limit(incoming) + (holder.commit_limit(incoming) if last else 0)
    async with holder.body_room(incoming, min(limit, request.content_length or limit)):
        blocks = await _read_signed(request, limit, lambda length: body_parts(incoming.size, incoming.segment_size,
                                                                              first, length))
        if last:
            return json_response(_placed(await holder.put_last(incoming, first, blocks)))
        following = await holder.put(incoming, first, blocks)
    return json_response({"next_segment": following, "segment_count": incoming.segment_count})


@routes.post("/v1/peer/uploads/{upload}/commit")
@peer_auth.streams_body
async def commit_upload(request: web.Request) -> web.Response:
    holder = request.app[NODE].share_holder
    incoming = holder.get(request.match_info["upload"], _sender(request))
    async with holder.body_room(incoming, min(holder.commit_limit(incoming), request.content_length or 0)):
        try:  # (the room is taken outside: a commit refused for want of it aborts nothing)
            raw = b"".join(await _read_signed(request, holder.commit_limit(incoming)))
            body = json_object(raw, 'send {"block_hashes": [...], "manifest": hex}')
        except BadRequestSignature:
            raise  # not provably from the uploader: its upload stays as it was
        except XscError:
            await holder.abort(incoming)
            raise
    meta = await holder.commit(incoming, body.get("block_hashes"), body.get("manifest"))
    return json_response(_placed(meta))


def _placed(meta) -> dict:
    return {name: getattr(meta, name) for name in ("share", "segment_count", "stored_bytes", "lease_expiry")}


@routes.post("/v1/peer/uploads/{upload}/touch")
async def touch_upload(request: web.Request) -> web.Response:
    holder = request.app[NODE].share_holder
    incoming = holder.get(request.match_info["upload"], _sender(request))
    holder.touch(incoming)
    return json_response({"next_segment": incoming.next_segment, "segment_count": incoming.segment_count})


@routes.delete("/v1/peer/uploads/{upload}")
async def abort_upload(request: web.Request) -> web.Response:
    holder = request.app[NODE].share_holder
    await holder.abort(holder.get(request.match_info["upload"], _sender(request)))
    return json_response({"aborted": request.match_info["upload"]})


@routes.get("/v1/peer/shares/{si}/{share}")
async def share_meta(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].share_holder.describe(
        *_target(request), pay=lambda size: peer_auth.charge_answer(request, size)))


@routes.get("/v1/peer/shares/{si}/{share}/blocks")
async def share_blocks(request: web.Request) -> web.StreamResponse:
    si, share = _target(request)
    first = parse_count(request.query.get("from"), "from")
    count = parse_count(request.query.get("count"), "count", minimum=1)
    holder = request.app[NODE].share_holder
    length, blocks = await holder.first_blocks(  # checked and paid for: refusals come before the answer
        si, share, first, count, pay=lambda size: peer_auth.charge_answer(request, size, bulk=True),
        network=network_key(request.remote))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = length  # not chunked: each block is written as it is, without framing
    try:  # a reader that takes nothing for BODY_STALL is cut, or it would hold its blocks in memory for good
        await response.prepare(request)
        await send_body(request, response, blocks, stall=BODY_STALL)
    except (Stalled, ShareNotFound, StorageBusy):  # headers gone: cut, the reader sees a short answer and goes elsewhere
        request.transport.close()
        return response
    finally:
        blocks.close()  # the room its blocks held in memory, however it ended
    await response.write_eof()
    return response


@routes.delete("/v1/peer/shares/{si}/{share}")
async def delete_share(request: web.Request) -> web.Response:
    await request.app[NODE].share_holder.delete(*_target(request), _sender(request))
    return web.Response(status=204)


@routes.post("/v1/peer/shares/{si}/{share}/renew")
async def renew_share(request: web.Request) -> web.Response:
    si, share = _target(request)
    body = await json_body(request, 'send {"lease_expiry": <unix seconds>}')
    return json_response(await request.app[NODE].share_holder.renew(si, share, _sender(request), body))


@routes.post("/v1/peer/shares/{si}/{share}/audit")
async def audit_share(request: web.Request) -> web.Response:
    si, share = _target(request)
    body = await json_body(request, 'send {"segment": <block index>}')
    answer = await request.app[NODE].share_holder.audit(si, share, body,
                                                        pay=lambda size: peer_auth.charge_answer(request, size))
    return web.Response(body=answer, content_type="application/json")


@routes.post(DAMAGE_PATH)
async def report_damage(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"si": <64 hex digits>, "share": <0-5>, "segments": [...]}')
    si, share, segments = parse_damage_report(body)
    await request.app[NODE].audits.damage_reported(si, share, segments, peer_auth.peer_id(request))
    return json_response({"marked": True, "repair": "queued"}, status=202)


@routes.post(LOCATE_PATH)
async def locate(request: web.Request) -> web.Response:  # the shares held here, who holds the others (locate.py)
    si = parse_locate(await json_body(request, 'send {"si": <the storage index, 64 hex digits>}'))
    return json_response(await request.app[NODE].storage.where(si))
