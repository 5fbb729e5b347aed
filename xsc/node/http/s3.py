"""The bucket index on the user API (/v1/s3/...): what the S3 front (`xsc s3 serve`) records and looks up.

Routes parse, call one method of xsc.buckets.index.S3Index in the CPU pool, and encode.  Object data passes here
only for small objects, each stored and recorded in one request (`POST .../objects`, xsc.buckets.objects), or
several in one (`POST /v1/s3/objects`); the front stores and reads every other file through /v1/store/files like
`xsc store put/get`.  `?user=` names the S3 user the front acts for: the index checks it may read, write or own
the bucket first.
"""

from __future__ import annotations

import time

from aiohttp import web

from ... import codec
from ...errors import BadRequest, DuplicateJsonKey, InvalidArgument, PayloadTooLarge, S3ServedByNode
from ...buckets import backup, uploads
from ...buckets.core import listing
from ...buckets.index import INITIATOR, S3Index, users
from ...buckets.objects import MAX_GROUP_BYTES, parse_group
from ...buckets.core.names import MAX_RECORD, SMALL_OBJECT
from ...tasks import in_pool
from ..appkeys import CONFIG, CPU_POOL, NODE, USER_LIMITS
from ...storage.holder import MIN_UPLOAD_RATE
from .common import json_body, json_response, large_json_body, put_terms, query_int, read_body, results_response

routes = web.RouteTableDef()


async def _call(request: web.Request, fn, *args, **kwargs):
    return await in_pool(request.app[CPU_POOL], lambda: fn(*args, **kwargs))


def _index(request: web.Request) -> S3Index:
    return request.app[NODE].s3_index


def _front_writes(request: web.Request) -> None:
    """A front's write of a file's record, or its housekeeping, refused while the node answers S3 itself.  A write of
    records alone (a bucket made or deleted, objects deleted, an upload aborted, a grant) stores no file that a
    reconciliation could find unrecorded: it is taken from any caller (`xsc s3 mb`, `rb`), the files it leaves marked
    garbage for the front that serves S3 to remove."""
    if listen := request.app[CONFIG].node.s3_listen:  # one front a node: see S3ServedByNode
        raise S3ServedByNode(f"this node answers S3 itself at http://{listen}",
                             hint="point S3 tools there and stop `xsc s3 serve`, or unset node.s3_listen")


async def _as(request: web.Request, need: str, fn, *args, files: bool = True, **kwargs):
    """fn in the CPU pool, once the user the front acts for may `need` (read, write, owner, initiator) the bucket;
    `files` False: a write of records alone, which `_front_writes` lets through."""
    if need != "read" and files:
        _front_writes(request)
    index, user = _index(request), request.query.get("user")
    if "bucket" in request.match_info:
        return await _call(request, index.checked, request.match_info["bucket"], user, need, fn, *args, **kwargs)
    return await _call(request, index.checked_upload, request.match_info["upload"], user, need, fn, *args, **kwargs)


async def _json(request: web.Request) -> dict:
    return await json_body(request, "send a JSON object (this API is the S3 gateway's: `xsc s3 serve` calls it)")


def _key(request: web.Request) -> str:
    key = request.query.get("key")
    if not key:
        raise BadRequest("name the object with ?key=KEY")
    return key


def _strings(body: dict, name: str) -> list[str]:
    values = body.get(name)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values) or len(values) > 10000:
        raise BadRequest(f'send {{"{name}": [up to 10000 strings]}}')
    return values


@routes.get("/v1/s3/buckets")
async def buckets(request: web.Request) -> web.Response:
    return json_response({"buckets": await _call(request, _index(request).buckets, request.query.get("user"))})


@routes.put("/v1/s3/buckets/{bucket}")
async def create_bucket(request: web.Request) -> web.Response:
    record = await _call(request, _index(request).create_bucket, request.match_info["bucket"], request.query.get("user"))
    return json_response(record, status=201)


@routes.get("/v1/s3/buckets/{bucket}")
async def bucket(request: web.Request) -> web.Response:
    need = "write" if request.query.get("need") == "write" else "read"
    return json_response(await _as(request, need, _index(request).bucket, request.match_info["bucket"]))


@routes.put("/v1/s3/buckets/{bucket}/grants/{user}")
async def grant(request: web.Request) -> web.Response:
    access = (await _json(request)).get("access")
    return json_response(await _call(request, _index(request).grant, request.match_info["bucket"],
                                      request.match_info["user"], access if access in ("read", "write") else "?"))


@routes.delete("/v1/s3/buckets/{bucket}/grants/{user}")
async def revoke(request: web.Request) -> web.Response:
    return json_response(await _call(request, _index(request).grant, request.match_info["bucket"],
                                      request.match_info["user"], None))


@routes.delete("/v1/s3/buckets/{bucket}")
async def delete_bucket(request: web.Request) -> web.Response:
    await _as(request, "owner", _index(request).delete_bucket, request.match_info["bucket"], files=False)
    return json_response({"deleted": request.match_info["bucket"]})


@routes.get("/v1/s3/buckets/{bucket}/objects")
async def list_objects(request: web.Request) -> web.Response:
    q, bucket, tokens = request.query, request.match_info["bucket"], listing.Tokens(_index(request).marks.listing_key())
    listed = ("objects", bucket, prefix := q.get("prefix", ""), delimiter := q.get("delimiter", ""))  # its tokens bind
    page = await _as(request, "read", _index(request).list, bucket, prefix=prefix, delimiter=delimiter,
                     max_keys=query_int(q, "max_keys", 1000, 0, 1000), start=tokens.resume(q.get("start"), *listed))
    return json_response(tokens.bound(page, *listed))


@routes.get("/v1/s3/buckets/{bucket}/object")
async def get_object(request: web.Request) -> web.Response:
    return json_response(await _as(request, "read", _index(request).get, request.match_info["bucket"], _key(request)))


@routes.put("/v1/s3/buckets/{bucket}/object")
async def put_object(request: web.Request) -> web.Response:
    _front_writes(request)
    record = {**await _json(request), "writer": request.query.get("user")}  # its access judged as it is written
    garbage = await _call(request, _index(request).put, request.match_info["bucket"], _key(request), record)
    return json_response({"garbage": garbage})


@routes.post("/v1/s3/buckets/{bucket}/objects")
async def put_small_object(request: web.Request) -> web.Response:
    """A small object's record and bytes in one body (`codec.framed`), stored, paid and recorded at once; the
    query names the object (`key`), the user, the file's name and the put's terms as for /v1/store/files."""
    _front_writes(request)
    declared, most = request.content_length, 4 + MAX_RECORD + SMALL_OBJECT
    if declared is None:
        raise BadRequest("send a small object with its Content-Length", hint="stream larger ones to /v1/store/files")
    if declared > most:
        raise PayloadTooLarge(f"the body is {declared:,} bytes; a small object's is at most {most:,}", limit=most,
                              hint="stream larger objects to /v1/store/files")
    try:
        record, data = codec.unframed(await read_body(request), MAX_RECORD)
    except codec.DuplicateKey as err:
        raise DuplicateJsonKey.within("the small object's record", err.key) from None
    except ValueError:
        raise InvalidArgument(f"a small object's body is the 4-byte length of its record's JSON (an object of at "
                              f"most {MAX_RECORD:,} bytes), the record, then the object's bytes") from None
    seconds, bid, wanted = put_terms(request)
    answer = await request.app[NODE].s3_objects.put(request.match_info["bucket"], _key(request),
                                                    request.query.get("user"), record, data,
                                                    request.query.get("name"), seconds, bid, **wanted)
    return json_response(answer, status=201)


@routes.post("/v1/s3/objects")
async def put_small_objects(request: web.Request) -> web.Response:
    """Small objects of any buckets and users in one body (`xsc.buckets.objects`): one result per object."""
    _front_writes(request)
    if (request.content_length or 0) > MAX_GROUP_BYTES:  # refused from its length (one without: as it is read)
        raise PayloadTooLarge(f"a group of small objects is at most {MAX_GROUP_BYTES:,} bytes", limit=MAX_GROUP_BYTES)
    puts = parse_group(await read_body(request))
    for _ in puts[1:]:  # each object counts against the user's rate, as a request of its own would
        request.app[USER_LIMITS].check("user", time.monotonic(), "the user's token")
    seconds, bid, wanted = put_terms(request)
    return results_response(await request.app[NODE].s3_objects.put_group(puts, seconds, bid, **wanted), status=201)


@routes.delete("/v1/s3/buckets/{bucket}/object")
async def delete_object(request: web.Request) -> web.Response:
    garbage = await _as(request, "write", _index(request).delete, request.match_info["bucket"], _key(request),
                        files=False)
    return json_response({"garbage": garbage})


@routes.post("/v1/s3/buckets/{bucket}/delete")
async def delete_objects(request: web.Request) -> web.Response:
    keys = _strings(await _json(request), "keys")
    garbage = await _as(request, "write", _index(request).delete_many, request.match_info["bucket"], keys,
                        files=False)
    return json_response({"garbage": garbage})


@routes.post("/v1/s3/buckets/{bucket}/uploads")
async def create_upload(request: web.Request) -> web.Response:
    body = await _json(request)
    metadata = body.get("metadata") or {}
    if not isinstance(body.get("key"), str) or not isinstance(metadata, dict):
        raise BadRequest('send {"key": KEY, "content_type": TYPE, "metadata": {...}, "headers": {...}}')
    upload_id = await _as(request, "write", _index(request).create_upload, request.match_info["bucket"], body["key"],
                          str(body.get("content_type") or ""), {str(k): str(v) for k, v in metadata.items()},
                          body.get("headers"), by=request.query.get("user"), checksum=body.get("checksum"))
    return json_response({"upload_id": upload_id}, status=201)


@routes.get("/v1/s3/buckets/{bucket}/uploads")
async def list_uploads(request: web.Request) -> web.Response:
    marks = {name: request.query.get(name, "") for name in ("prefix", "delimiter", "key_marker", "id_marker")}
    return json_response(await _as(request, "read", uploads.upload_page, _index(request), request.match_info["bucket"],
                                   max_uploads=query_int(request.query, "max_uploads", 1000, 0, 1000), **marks))


@routes.get("/v1/s3/uploads/{upload}")
async def upload(request: web.Request) -> web.Response:
    index, upload_id, need = _index(request), request.match_info["upload"], request.query.get("need")
    record = await _as(request, INITIATOR if need == INITIATOR else "write", index.upload, upload_id)  # ListParts
    return json_response({**record, "parts": await _call(request, index.parts, upload_id)})


@routes.put("/v1/s3/uploads/{upload}/parts/{number}")
async def put_part(request: web.Request) -> web.Response:
    body = await _json(request)
    try:
        number = int(request.match_info["number"])
    except ValueError:
        raise BadRequest("the part number must be an integer") from None
    if not isinstance(body.get("cap"), str) or type(body.get("size")) is not int or not isinstance(body.get("etag"), str):
        raise BadRequest('send {"cap": CAPABILITY, "size": BYTES, "etag": MD5}')
    _front_writes(request)
    garbage = await _call(request, _index(request).put_part, request.match_info["upload"], number, body["cap"],
                          body["size"], body["etag"], body.get("checksums"), writer=request.query.get("user"))
    return json_response({"garbage": garbage})


@routes.post("/v1/s3/uploads/{upload}/complete")
async def complete(request: web.Request) -> web.Response:
    body = await _json(request)
    parts = body.get("parts")
    if (not isinstance(parts, list) or not parts or len(parts) > 10000
            or not all(isinstance(p, list) and len(p) == 2 and type(p[0]) is int and isinstance(p[1], str)
                       for p in parts)):
        raise BadRequest('send {"parts": [[PART_NUMBER, ETAG], ...]} (1 to 10000 parts)')
    record, garbage = await _as(request, "write", _index(request).complete, request.match_info["upload"],
                                [(n, e) for n, e in parts], body.get("bucket"), body.get("key"),
                                body.get("condition"), body.get("checksum"))
    return json_response({"object": record, "garbage": garbage})


@routes.delete("/v1/s3/uploads/{upload}")
async def abort(request: web.Request) -> web.Response:
    garbage = await _as(request, INITIATOR, _index(request).abort, request.match_info["upload"], files=False)
    return json_response({"garbage": garbage})


@routes.get("/v1/s3/garbage")
async def garbage(request: web.Request) -> web.Response:
    _front_writes(request)  # a front's housekeeping: what it reads here, it deletes
    return json_response({"garbage": await _call(request, _index(request).garbage)})


@routes.post("/v1/s3/garbage/forget")
async def forget_garbage(request: web.Request) -> web.Response:
    _front_writes(request)
    caps = _strings(await _json(request), "caps")
    await _call(request, _index(request).forget_garbage, caps)
    return json_response({"forgotten": len(caps)})


@routes.post("/v1/s3/reconcile")
async def reconcile(request: web.Request) -> web.Response:
    _front_writes(request)
    caps = _strings(await _json(request), "caps")
    return json_response({"orphans": await _call(request, _index(request).reconcile, caps)})


@routes.post("/v1/s3/expire")
async def expire_uploads(request: web.Request) -> web.Response:
    """The uploads left unfinished past node.s3_upload_expiry aborted (a front's reconciliation asks): their parts'
    files, marked garbage for the front to remove."""
    _front_writes(request)
    return json_response({"garbage": await _call(request, _index(request).expire_uploads)})


@routes.post("/v1/s3/marks/proof")
async def marks_proof(request: web.Request) -> web.Response:
    """The node's s3-files.key proven on a front's challenge (`FileMarks.proof`): `xsc s3 serve` checks its copy."""
    return json_response({"proof": _index(request).marks.proof((await _json(request)).get("challenge"))})


@routes.get("/v1/s3/export")
async def export(request: web.Request) -> web.Response:
    return json_response(await _call(request, backup.export_here, _index(request), request.app[NODE].s3_accounts))


@routes.post("/v1/s3/import")
async def import_index(request: web.Request) -> web.Response:
    """An export, or a piece of one, written where the index holds nothing (`xsc s3 import-index`)."""
    piece = await large_json_body(request, backup.MAX_PIECE, MIN_UPLOAD_RATE, backup.PIECE_HINT)
    node = request.app[NODE]
    return json_response(await _call(request, backup.restore_here, node.s3_index, piece, node.s3_accounts, node.store))


@routes.get("/v1/s3/accounts")
async def accounts(request: web.Request) -> web.Response:
    known = await _call(request, users, _index(request))  # an owner, a grantee, an upload's, a funded one
    return json_response({"users": [request.app[NODE].s3_accounts.view(user) for user in known]})


@routes.get("/v1/s3/accounts/{user}")
async def account(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].s3_accounts.view(request.match_info["user"]))


@routes.post("/v1/s3/accounts/{user}/{action:fund|charge}")
async def move(request: web.Request) -> web.Response:
    accounts, info = request.app[NODE].s3_accounts, request.match_info
    body = await _json(request)
    return json_response(await accounts.move(info["action"], info["user"], body))
