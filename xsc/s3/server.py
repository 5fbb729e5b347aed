"""The S3 front: an aiohttp server speaking the S3 REST API (path-style) over a node (link.NodeLink).

`xsc s3 serve` runs it in its own process over the node's user API (remote.RemoteNode); a node with
`node.s3_listen` runs it in its own process over its services (local.LocalNode).  Every request is
authenticated (AWS Signature V4, header or presigned), then turned into calls on the node: object bytes
become XSC files (each object or part is one, put through the market like `xsc store put`), names go to
the bucket index.  A small object goes to the node in one call with its record, under load with others
(small.py).  Bodies stream both ways; memory per request is bounded by a few chunks.  Every refusal is an
S3 XML error; nothing unexpected becomes anything but an InternalError body.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from typing import Awaitable, Callable

from aiohttp import web

from ..errors import (ConfigError, Forbidden, InvalidCapability, NodeNotRunning, NoSuchBucket, NoSuchKey, S3Error,
                      S3ServedByNode, XscError)
from ..units import counted
from ..ids import unique_bytes
from ..net.addresses import address_key
from ..storage.core.ranges import content_range, parse_range
from ..serve.connections import ConnectionLimits, open_runner
from ..serve.stop import IN_FLIGHT, InFlight, on_signals
from ..tasks import Quota, Workers, unless_set, woken
from ..buckets.core import listing, names
from ..buckets.objects import SmallPut
from .core import headers as stored_headers
from .core import checksums, routing, sigv4, versions, xml
from .access import KeyRing
from .bodies import ObjectBodies
from .calls import (Call, checksum_headers, declared_size, encoding_of, integer, keep_checksum, object_version,
                    xml_answer)
from .copies import Copies
from .link import NodeLink
from ..buckets.marks import FileMarks
from .multipart import Multipart
from .small import SmallObjects
from .writes import Write, WriteGate, Writes

__all__ = ["Call", "S3Front", "Write", "WriteGate", "listen", "serve"]
log = logging.getLogger(__name__)

COUNTED = web.RequestKey("s3_counted", bool)  # the request was counted against its user's rate
# What a stranger guessing keys is refused: a signature that does not hold, or an access key that is not here
GUESSED = frozenset({"SignatureDoesNotMatch", "InvalidAccessKeyId"})
# What aiohttp buffers of a body before it stops reading the socket (it reads on to twice this): a part that waits for
# the gateway's budget (storage/put_budget.py) holds this much of its body, and parts come ten at once.
READ_BUFFER = 64 * 1024
RELAY_MIN = 4 * 1024 * 1024  # GetObject bodies from this size are relayed by splice(2) where the system has it
MAX_BUCKETS = 10000  # a ListBuckets page
LEGACY_REGION = "us-east-1"  # where S3 answers a CreateBucket of one's own bucket 200, not BucketAlreadyOwnedByYou
MARKS_AT_ONCE = 500  # stored files' names checked in one turn of the loop as the front reconciles (about 1 ms)
RESPONSE_OVERRIDES = {"response-content-type": "Content-Type", "response-content-language": "Content-Language",
                      "response-expires": "Expires", "response-cache-control": "Cache-Control",
                      "response-content-disposition": "Content-Disposition",
                      "response-content-encoding": "Content-Encoding"}


class S3Front:
    def __init__(self, node: NodeLink, keyring: KeyRing, marks: FileMarks, *, region: str = "us-east-1",
                 owner: str = "xsc", clock: Callable[[], float] = time.time,
                 reconcile_interval: float = 300.0, quota: Quota | None = None, idle_timeout: float = 45.0,
                 failures: Quota | None = None) -> None:
        self.node = node
        # Failed authentications per client address (an IPv6 one's /64), SlowDown past them, at node.auth_failure_limit:
        # the node hands it its own (one count an address for all of the node's credentials), `xsc s3 serve` one of its
        # process's; None: not counted
        self.failures = failures
        # Each user's requests, once authenticated, per second (SlowDown past them), so that one user cannot
        # starve the others; None where the node already limits what the front asks of it (`xsc s3 serve`).
        self.quota = quota
        self.idle_timeout = idle_timeout  # seconds a body may send nothing before its request fails (RequestTimeout)
        self.keyring = keyring
        self.marks = marks  # the names of the files this front stores: only those are ever reconciled away
        self.tokens = listing.Tokens(marks.listing_key())  # continuation tokens, bound to their listing
        self.region = region
        self.owner = owner
        self.clock = clock
        self.gate = WriteGate()
        self.bodies = ObjectBodies(node, idle_timeout)
        self.digests = Workers(1, "xsc-s3-digest")  # a large body's MD5 and SHA-256, beside the loop (payload.py)
        self.writes = Writes(node, marks, self.gate, self.digests, idle_timeout)
        self.small = SmallObjects(node)
        self.reconcile_interval = reconcile_interval
        copies, multipart = Copies(node, self.writes, self.bodies, clock), Multipart(node, self.writes)
        # The operations of routing.TABLE done by a module of their own, by name; the others are this class's.
        self.operations: dict[str, Callable[[Call], Awaitable[web.StreamResponse]]] = {
            **{name: getattr(copies, name) for name in Copies.OPERATIONS},
            **{name: getattr(multipart, name) for name in Multipart.OPERATIONS}}

    # --- as a service of the node's (tasks.Supervisor), and its end ------------------------
    def start(self) -> None:
        pass

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {"reconcile": self.reconciling}

    async def reconciling(self, stop: asyncio.Event | None = None, *, at_once: bool = True) -> None:
        """Reconcile (at once, then) every `reconcile_interval` seconds, until `stop`."""
        stop = stop or asyncio.Event()
        while True:
            if at_once:
                try:
                    orphans = await self.reconcile()
                except S3ServedByNode:
                    raise  # the node answers S3 itself now: this front stops (one front a node)
                except XscError as err:
                    log.warning("reconciliation skipped: %s", err)
                else:
                    if orphans:
                        log.warning("removed %s left by an interrupted write", counted(len(orphans), "file"))
            if await woken(stop, self.reconcile_interval):
                return
            at_once = True

    async def close(self) -> None:
        await self.small.close()
        await self.node.close()
        self.bodies.close()
        self.digests.shutdown(wait=False)

    # --- the app -----------------------------------------------------------------
    def app(self, server: str = "this node") -> web.Application:
        """`server`: what a request refused as it stops is told stops (the node, or the front on its own)."""
        # Drained by the stop (the node's, or its own on its own), which refuses new requests as S3 errors
        in_flight = InFlight("S3", lambda request, err: _error(request, err, unique_bytes(8).hex().upper()),
                             server=server)
        app = web.Application(client_max_size=xml.MAX_BODY, middlewares=[in_flight.middleware])
        app[IN_FLIGHT] = in_flight
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle, expect_handler=self.expect)  # keys may hold \n
        return app

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: the client is told to send its body only once the request is authenticated
        and is an operation the front does, and, for a PutObject's or UploadPart's, once the node has room for it."""
        request_id = unique_bytes(8).hex().upper()
        if request.headers.get("Expect", "").lower() != "100-continue":
            response = _error(request, S3Error(
                "the only expectation this server meets is Expect: 100-continue",
                s3_code="ExpectationFailed", status=417), request_id)
            response.force_close()
            return response
        try:
            call = self._authenticate(request, request_id)
            if call.operation in ("put_object", "upload_part") and (size := declared_size(call)) is not None:
                await self.node.check_room(size)  # no room on the disk or in the capacity: refused before the body
        except XscError as err:
            response = _error(request, err, request_id)
            response.force_close()
            return response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own expect handler: the answer has not begun
        return None

    def _authenticate(self, request: web.Request, request_id: str) -> Call:
        """The request's signature checked and its operation named (S3Error otherwise)."""
        raw_path, _, raw_query = request.raw_path.partition("?")
        bucket, _, key = sigv4.decoded(raw_path).lstrip("/").partition("/")
        routing.refuse_form_upload(request.method, bucket, key, dict(sigv4.parse_query(raw_query)), request.headers)
        auth = self._verified(request, raw_path, raw_query)
        call = Call(request, bucket, key, dict(sigv4.parse_query(raw_query)), auth, request_id,
                    self.keyring.user_as_read(auth.access_key))
        call.operation = routing.operation(request.method, bucket, key, call.query, request.headers)
        # GetBucketLocation is how a client learns the region (minio-py asks it signed for us-east-1): any may ask it
        if call.operation != "get_location":
            sigv4.check_region(auth, self.region)
        if self.quota is not None and not request.get(COUNTED):  # once, though `expect` authenticated it first
            self.quota.check(f"s3 user {call.user}", time.monotonic(), f"S3 user {call.user!r}")
            request[COUNTED] = True
        return call

    def _verified(self, request: web.Request, raw_path: str, raw_query: str) -> sigv4.Verified:
        """The request's signature checked, a wrong one or an unknown key counted against its client's address.  An
        address past its failures is refused (SlowDown, Retry-After) before its signature is looked at: a right
        guess among wrong ones would otherwise still get in, so a client of its own at that address waits too;
        another address does not."""
        signed = sigv4.SignedRequest(request.method, raw_path, raw_query, request.headers)
        if self.failures is None:
            return sigv4.verify(signed, self.keyring.secret, self.clock())
        where, now = address_key(request.remote), time.monotonic()
        self.failures.require(where, now, f"address {request.remote}", 1)
        try:
            return sigv4.verify(signed, self.keyring.secret, self.clock())
        except S3Error as err:
            if err.s3_code in GUESSED:
                self.failures.take_up_to(where, now, 1)
            raise

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = unique_bytes(8).hex().upper()
        try:
            try:
                response = await self.dispatch(self._authenticate(request, request_id))
            except XscError as err:
                return _error(request, err, request_id)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            return _error(request, S3Error("the gateway hit an unexpected error; see its log",
                                                s3_code="InternalError", status=500), request_id)
        response.headers.setdefault("x-amz-request-id", request_id)
        return response

    # --- routing -----------------------------------------------------------------
    async def dispatch(self, call: Call) -> web.StreamResponse:
        """The operation routing.TABLE names for the request (its headers checked there too, as it was
        authenticated)."""
        _check_names(call)
        handler = self.operations.get(call.operation) or getattr(self, call.operation)
        response = await handler(call)
        if routing.SSE in call.request.headers:
            response.headers[routing.SSE] = routing.SSE_S3  # every object is stored encrypted
        return response

    # --- reconciliation ----------------------------------------------------------
    async def reconcile(self) -> list[str]:
        """Remove the files this gateway stored that no object or part refers to (left by a crash between
        a file's put and its record), and the files marked garbage, among them the parts of the uploads the node
        aborts as they pass `node.s3_upload_expiry`.  Writes go on meanwhile: the files listed are judged once the
        writes under way as they were listed have ended (`WriteGate.drained`)."""
        listed = await self.node.files()
        await self.gate.drained()
        ours = []
        for i in range(0, len(listed), MARKS_AT_ONCE):  # a name's tag is an HMAC: the loop serves between slices
            ours += [f for f in listed[i:i + MARKS_AT_ONCE] if self.marks.ours(f.get("name", ""))]
            await asyncio.sleep(0)
        stored = self.marks.alone(ours)
        orphans = await self.node.reconcile(stored) if stored else []
        # After the orphans are judged, so that an expired upload's parts are not taken for files a crash left: the
        # node drops the uploads and marks their parts in one write, and a crash before they are removed leaves the
        # marks for the next round.
        expired = await self.node.expire_uploads()
        await self.writes.collect_all()
        if expired:
            log.info("removed %s of multipart uploads left unfinished", counted(len(expired), "part"))
        return orphans  # said by the caller, once: the loop's warning, or `xsc s3 serve`'s line as it starts

    # --- service and buckets -----------------------------------------------------
    async def list_buckets(self, call: Call) -> web.Response:
        q = call.query
        max_buckets = integer(q.get("max-buckets"), MAX_BUCKETS, "max-buckets")
        if not 1 <= max_buckets <= MAX_BUCKETS:
            raise S3Error(f"max-buckets goes from 1 to {MAX_BUCKETS}", s3_code="InvalidArgument", status=400)
        # An empty token is none, the listing from its first bucket, as AWS answers it (ListObjectsV2 refuses one)
        token, prefix = q.get("continuation-token", ""), q.get("prefix", "")
        after = self.tokens.position(token, "buckets", call.user, prefix).decode(errors="replace") if token else ""
        buckets = [b for b in await self.node.buckets(call.user)
                   if b["name"] > after and b["name"].startswith(prefix)]
        page = buckets[:max_buckets]
        following = self.tokens.token(page[-1]["name"].encode(), "buckets", call.user, prefix) \
            if len(buckets) > max_buckets else ""
        return xml_answer(xml.list_buckets(page, call.user, continuation=following,
                                           prefix=prefix if "prefix" in q else None))

    async def create_bucket(self, call: Call) -> web.Response:
        names.check_bucket(call.bucket)
        where = xml.parse_location(await self.writes.small_body(call))  # every bucket is in the front's region
        if where and where != self.region:
            raise S3Error(f"The {where[:64]} location constraint is incompatible for the region specific endpoint this "
                          f"request was sent to (this front's region is {self.region})",
                          s3_code="IllegalLocationConstraintException", status=400)
        if not await self.node.create_bucket(call.bucket, call.user) and self.region != LEGACY_REGION:
            # one's own again: S3 answers 200 in us-east-1 alone, for the clients that counted on it there
            raise S3Error(f"Your previous request to create the named bucket succeeded and you already own it: "
                          f"{call.bucket}", s3_code="BucketAlreadyOwnedByYou", status=409, BucketName=call.bucket)
        return web.Response(status=200, headers={"Location": f"/{call.bucket}"})

    async def delete_bucket(self, call: Call) -> web.Response:
        await self.node.delete_bucket(call.bucket, call.user)
        return web.Response(status=204)

    async def head_bucket(self, call: Call) -> web.Response:
        await self.node.bucket(call.bucket, call.user)
        return web.Response(status=200, headers={"x-amz-bucket-region": self.region})

    async def get_location(self, call: Call) -> web.Response:
        await self.node.bucket(call.bucket, call.user)
        return xml_answer(xml.location(self.region))

    async def get_versioning(self, call: Call) -> web.Response:
        await self.node.bucket(call.bucket, call.user)
        return xml_answer(xml.versioning())

    async def list_objects(self, call: Call) -> web.Response:
        q = call.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        v2 = q.get("list-type") == "2"
        try:
            # A page holds at most MAX_KEYS, and S3 answers the MaxKeys it used, not a larger one asked for
            max_keys = min(integer(q.get("max-keys"), listing.MAX_KEYS, "max-keys"), listing.MAX_KEYS)
            encoding = encoding_of(call)
            if v2:
                # An empty token is no token this front gave: refused as AWS refuses it (MinIO too)
                token, start_after = q.get("continuation-token"), q.get("start-after", "")
                start = self.tokens.position(token, "objects", call.bucket, prefix, delimiter) if token is not None \
                    else listing.after(start_after) if start_after else b""
            else:
                start = listing.v1_start(q.get("marker", ""), delimiter, prefix)
        except S3Error:
            # The bucket's access is judged before the arguments (a user that may not list it is told only that), as
            # the listing itself judges it before it reads a key: asked of the node only when an argument is wrong.
            await self.node.bucket(call.bucket, call.user)
            raise
        page = await self.node.list_objects(call.bucket, call.user, prefix=prefix, delimiter=delimiter,
                                            max_keys=max_keys, start=start)
        owner = page.get("owner") or call.user  # the bucket's, whoever lists it
        if v2:
            if page["truncated"]:  # the node's position, as this front gives it: bound to this listing
                page = {**page, "next": self.tokens.token(listing.decode_token(page["next"]), "objects", call.bucket,
                                                          prefix, delimiter)}
            body = xml.list_objects_v2(call.bucket, page, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                                       start_after=q.get("start-after", ""), continuation=q.get("continuation-token"),
                                       encoding=encoding, fetch_owner=q.get("fetch-owner") == "true", owner=owner)
        else:
            body = xml.list_objects_v1(call.bucket, page, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                                       marker=q.get("marker", ""), encoding=encoding, owner=owner)
        return xml_answer(body)

    async def delete_objects(self, call: Call) -> web.Response:
        named, quiet = xml.parse_delete(await self.writes.small_body(call, checksums.wanted(call.request.headers)))
        # Only the objects themselves (no version named, or null) are deleted: a version there is none of is deleted
        # as S3 deletes one, by doing nothing, and a malformed one is that key's error
        objects = [key for key, version in named if versions.is_object(version)]
        try:
            if objects:
                garbage = await self.node.delete_objects(call.bucket, objects, call.user)
            else:  # nothing to delete, but the user's access to the bucket is judged all the same
                await self.node.bucket(call.bucket, call.user, "write")
                garbage = []
        except Forbidden as err:
            # S3 judges s3:DeleteObject key by key: a user that may not delete them hears so of each, in a 200, and
            # SDKs (boto3's Errors, minio-py's DeleteError) read it there, not as the request's failure
            said = _told(err)
            return xml_answer(xml.delete_result([], [(key, version, "AccessDenied", said) for key, version in named],
                                                quiet))
        await self.writes.collect(garbage)
        errors = [(key, version, "InvalidArgument", versions.malformed(version).message) for key, version in named
                  if version is not None and not versions.is_object(version) and not versions.well_formed(version)]
        refused = {(key, version) for key, version, _, _ in errors}
        return xml_answer(xml.delete_result([n for n in named if n not in refused], errors, quiet))

    # --- objects -----------------------------------------------------------------
    async def put_object(self, call: Call) -> web.Response:
        names.check_key(call.key)
        record = {"content_type": call.request.headers.get("Content-Type", ""),
                  "metadata": names.check_metadata(stored_headers.metadata(call.request.headers)),
                  "headers": stored_headers.stored(call.request.headers)}
        checksum = checksums.for_object(call.request.headers)
        if "If-None-Match" in call.request.headers or "If-Match" in call.request.headers:
            # AccessDenied before the condition is judged: a reader that may not write is not told whether it held
            await self.node.bucket(call.bucket, call.user, "write")
            record["condition"] = stored_headers.write_condition(call.request.headers,
                                                                 await _current(self.node, call))
        declared = declared_size(call)
        try:
            if declared is not None and declared <= names.SMALL_OBJECT:
                result = await self._put_small(call, record, checksum)
            else:
                result = await self._put_streamed(call, record, declared, checksum)
        except XscError as err:
            await self.writes.collect_refused(err)
            raise
        await self.writes.collect(result["garbage"])
        return web.Response(status=200, headers={"ETag": xml.quoted(record["etag"]), **checksum_headers(checksum)})

    async def _put_small(self, call: Call, record: dict, checksum: checksums.Checksum | None) -> dict:
        """A small object whole, checked, then stored and recorded by one call of the node's (which checks the
        bucket first): the ETag, time and checksum are set on `record`."""
        md5, declared, parts, size = hashlib.md5(), declared_size(call), [], 0
        async for chunk in self.writes.body(call, md5=md5, checksum=checksum):
            size += len(chunk)
            if size > declared:
                break
            parts.append(chunk)
        if size != declared:
            raise S3Error(f"the body holds {'more' if size > declared else 'fewer'} bytes than the {declared:,} "
                          "declared", s3_code="IncompleteBody", status=400)
        data = b"".join(parts)
        record.update(etag=md5.hexdigest(), modified=self.clock())
        keep_checksum(record, checksum)
        put = SmallPut(call.bucket, call.key, call.user, self.marks.name(f"{call.bucket}/{call.key}"), record, data)
        async with self.gate.write() as write:
            return await self.small.submit(put, write.last_step())

    async def _put_streamed(self, call: Call, record: dict, declared: int | None,
                            checksum: checksums.Checksum | None) -> dict:
        """A large object (or one of unknown size): the bucket checked before a byte is stored, the body streamed
        to a file, then the object recorded; the ETag, time and checksum are set on `record`."""
        await self.node.bucket(call.bucket, call.user, "write")  # NoSuchBucket, AccessDenied before a byte is stored
        md5 = hashlib.md5()

        async def recorded(cap: str) -> dict:
            record.update(parts=[{"cap": cap, "size": int(cap.rsplit(":", 1)[1])}], etag=md5.hexdigest(),
                          modified=self.clock())
            keep_checksum(record, checksum)
            return {"garbage": await self.node.record(call.bucket, call.key, call.user, record)}

        async with self.gate.write() as write:
            return await self.writes.store(call, write, self.writes.body(call, md5=md5, checksum=checksum),
                                           declared, f"{call.bucket}/{call.key}", recorded)

    async def get_object(self, call: Call) -> web.StreamResponse:
        request = call.request
        record = await object_version(self.node, call.bucket, call.key, call.query.get("versionId"), call.user)
        size = record["size"]
        headers = {"ETag": xml.quoted(record["etag"]), "Last-Modified": xml.http_date(record["modified"]),
                   "Content-Type": record.get("content_type") or "binary/octet-stream", "Accept-Ranges": "bytes",
                   **stored_headers.response_headers(record)}
        part = "partNumber" in call.query
        if part and "Range" in request.headers:
            raise S3Error("Cannot specify both Range header and partNumber query parameter", s3_code="InvalidRequest",
                          status=400)
        for param, header in RESPONSE_OVERRIDES.items():
            if param in call.query:
                value = call.query[param]
                if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):  # CR, LF, NUL: no header
                    raise S3Error(f"{param} holds a control character", s3_code="InvalidArgument", status=400)
                headers[header] = value
        not_modified = stored_headers.read_condition(request.headers, record["etag"], record["modified"])
        if not_modified is not None:
            return web.Response(status=not_modified, headers={k: v for k, v in headers.items()
                                                              if k in ("ETag", "Last-Modified")})
        byte_range = None
        if part:
            number, byte_range = _part_range(record, call.query["partNumber"])
            byte_range = byte_range if size else None  # an empty object's one part is all of it: no bytes to range
            if _multipart(record):  # S3 counts the parts of a multipart object only, and only when one is asked for
                headers["x-amz-mp-parts-count"] = str(len(record["parts"]))
        else:
            try:
                byte_range = parse_range(request.headers.get("Range"), size)
            except XscError:
                raise S3Error(f"the requested range is not satisfiable (the object has {size} bytes)",
                              s3_code="InvalidRange", status=416, ActualObjectSize=str(size)) from None
        if request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            headers.update(_checksum_answered(record, number if part else None, byte_range))
        response = web.StreamResponse(status=200, headers=headers)
        first, last = 0, size - 1
        if byte_range is not None:
            first, last = byte_range
            response.set_status(206)
            response.headers["Content-Range"] = content_range(first, last, size)
        response.content_length = last - first + 1 if size else 0
        if request.method == "HEAD" or size == 0:
            await response.prepare(request)
            await response.write_eof()
            return response
        if last - first + 1 >= RELAY_MIN and self.node.relays and request.transport is not None:
            return await self.bodies.relay(call.request, response, record, first, last, f"{call.bucket}/{call.key}")
        return await self.bodies.send(request, response, record, first, last, f"{call.bucket}/{call.key}")

    async def delete_object(self, call: Call) -> web.Response:
        version = call.query.get("versionId")
        named = {} if version is None else {"x-amz-version-id": version}
        if versions.is_object(version):
            await self.writes.collect(await self.node.delete_object(call.bucket, call.key, call.user))
            return web.Response(status=204, headers=named)
        await self.node.bucket(call.bucket, call.user, "write")  # AccessDenied before the version is judged
        if not versions.well_formed(version):
            raise versions.malformed(version)
        return web.Response(status=204, headers=named)  # S3 deletes a version there is none of as done: nothing to do


async def _current(node: NodeLink, call: Call) -> dict | None:
    """The object a conditional write is judged against before its body is read (the index judges it again as it
    records the object)."""
    try:
        return await node.object(call.bucket, call.key, call.user)
    except NoSuchKey:
        return None


def _multipart(record: dict) -> bool:
    """Whether CompleteMultipartUpload made the object (its ETag ends in -N), even of one part."""
    return "-" in record["etag"]


def _part_range(record: dict, text: str) -> tuple[int, tuple[int, int]]:
    """(the part number asked for, its bytes' first and last)."""
    number = integer(text, 1, "partNumber")
    if not 1 <= number <= names.MAX_PARTS:
        raise S3Error(f"partNumber goes from 1 to {names.MAX_PARTS}", s3_code="InvalidArgument", status=400)
    if number > len(record["parts"]):
        raise S3Error(f"The requested partnumber is not satisfiable: the object has "
                      f"{counted(len(record['parts']), 'part')}, "
                      f"not a part {number}", s3_code="InvalidPartNumber", status=416,
                      PartNumberRequested=str(number), ActualPartCount=str(len(record["parts"])))
    first = sum(p["size"] for p in record["parts"][:number - 1])
    return number, (first, first + record["parts"][number - 1]["size"] - 1)


def _checksum_answered(record: dict, number: int | None, byte_range: tuple[int, int] | None) -> dict[str, str]:
    """The checksum a read asked for with x-amz-checksum-mode gets, as S3 answers: a part of a COMPOSITE object, its
    part's (a COMPOSITE one is made of those); bytes that are the whole object, the object's; other bytes, none."""
    whole = stored_headers.checksum_headers(record)
    if number is not None and whole.get("x-amz-checksum-type") == "COMPOSITE":
        kept = record["parts"][number - 1].get("checksum")
        algorithm = next(k for k in whole if k != "x-amz-checksum-type")
        return {algorithm: kept, "x-amz-checksum-type": "COMPOSITE"} if kept else {}
    if byte_range is None or byte_range == (0, record["size"] - 1):
        return whole
    return {}


def _check_names(call: Call) -> None:
    """Every bucket name, not only a new one's (it goes into the node's API paths); keys, prefixes and markers
    (they may be echoed in XML answers)."""
    if call.bucket:
        names.check_bucket(call.bucket)
    names.check_text(call.key, "the object key")
    for name, value in call.query.items():
        names.check_text(value, f"the query parameter {name!r}"[:80])


# What an S3 client is told of an error the operator alone can mend, in place of its message.
OPERATORS: dict[type[XscError], str] = {
    NodeNotRunning: "the service is unavailable at the moment: try again later",
    ConfigError: "the service cannot do this now: its operator finds why in its log",
    # A capability the bucket index refused is one the front or its records gave it, never the client's request
    InvalidCapability: "the service cannot do this now: its operator finds why in its log",
}


class _Warnings:
    """The front's warnings of errors it answers clients, each said at most once every REPEAT seconds: a node that is
    down has every request answered 503, and each would be a line (SDKs retry, clients keep sending)."""

    REPEAT = 10.0
    MOST = 256  # distinct warnings remembered (a stranger's paths make them distinct: forgotten past this many)

    def __init__(self) -> None:
        self._said: dict[str, tuple[float, int]] = {}  # a warning -> when it was last said, and its repeats since

    def warn(self, what: str, where: str) -> None:
        """Say `what` (of the request `where`) unless it was said within REPEAT seconds, with its repeats since."""
        now = time.monotonic()
        last, held = self._said.get(what, (-math.inf, 0))
        if now - last < self.REPEAT:
            self._said[what] = (last, held + 1)
            return
        if len(self._said) >= self.MOST:
            self._said.clear()
        self._said[what] = (now, 0)
        again = f" (and {counted(held, 'request')} more since it was last said)" if held else ""
        log.warning("%s: %s%s", where, what, again)


_WARNINGS = _Warnings()


def _error(request: web.Request, err: XscError, request_id: str) -> web.Response:
    """The S3 error document for `err` (its code and status by xml.s3_code_of)."""
    code, status = xml.s3_code_of(err)
    if status >= 500 and code != "SlowDown":  # a client over its rate is not the front's trouble, nor its log's
        _WARNINGS.warn(f"{code} {err.with_hint}", f"{request.method} {request.path}")
    if "operator_hint" in err.details:  # what the operator does about it (`xsc s3 keys create`): the log's, not the
        # client's, who may be anyone (a stranger guessing keys)
        _WARNINGS.warn(f"{code} {err.message} ({err.details['operator_hint']})", f"{request.method} {request.path}")
    for operators, said in OPERATORS.items():
        if isinstance(err, operators):
            # The node's URL, the front's files and the commands that mend them are the operator's, told in the log
            # above: a client (anyone with a key) learns only what it can do, wait (its SDK retries a 503) or not.
            err = operators(said)
    # Details named as S3 names the elements of its error documents (Region, ArgumentName, ActualObjectSize, ...)
    extra = {k: str(v) for k, v in err.details.items() if k[:1].isupper() and k.isascii() and k.isidentifier()}
    body = b"" if request.method == "HEAD" else xml.error(code, _told(err), request.path, request_id, **extra)
    response = web.Response(status=status, body=body, content_type="application/xml",
                            headers={"x-amz-request-id": request_id})
    if "Region" in extra:  # what SDKs read to sign again for the right region, a HEAD's answer having no body
        response.headers["x-amz-bucket-region"] = extra["Region"]
    if "retry_after" in err.details:
        response.headers["Retry-After"] = str(max(1, math.ceil(err.details["retry_after"])))
    if request.can_read_body and not request.content.at_eof():
        response.force_close()  # the client may still be sending a body we will not read
    return response


def _told(err: XscError) -> str:
    """An error's message with the command that fixes it: an S3 client (boto3, rclone, the aws CLI) shows the user
    <Message> alone."""
    if isinstance(err, NoSuchBucket):  # the index names the operator's `xsc s3 mb`: a client makes its own bucket
        return f"{err.message} (an S3 client makes it: CreateBucket, `aws s3 mb s3://BUCKET`)"
    return err.with_hint if err.hint and err.hint not in err.message else err.message


def _unparsed(status: int, detail: str) -> web.Response:
    """The answer to a request aiohttp could not parse (4xx) or serve (5xx): an S3 error, as S3 tools expect."""
    return xml_answer(xml.error("BadRequest" if status < 500 else "InternalError", detail), status)


async def listen(front: S3Front, host: str, port: int, limits: ConnectionLimits, *,
                 beside_node: bool = False) -> web.AppRunner:
    """The front's app listening on host:port, its connections held to `limits` (`max_connections`,
    `max_connections_per_ip`, `idle_timeout`: the node's settings): its runner (`cleanup()` stops it)."""
    # A body's Content-Encoding (gzip, ...) is what the object is, stored as sent: aiohttp must not decode it.
    runner = open_runner(front.app("this node" if beside_node else "this S3 front"),
                         max_connections=limits.max_connections, max_per_ip=limits.max_connections_per_ip,
                         idle_timeout=limits.idle_timeout, beside_node=beside_node, answer=_unparsed, access_log=None,
                         handle_signals=False, auto_decompress=False, read_bufsize=READ_BUFFER)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(front: S3Front, host: str, port: int, limits: ConnectionLimits, *,
                ready: Callable[[str], None] | None = None) -> None:
    """Run the front until SIGINT or SIGTERM (`xsc s3 serve`): reconcile first, then listen (`limits`: as `listen`),
    then reconcile when idle; then stop as a node does (serve/stop.py: new requests refused 503, those under way
    let end; another signal cuts them short).  Stopped while it first reconciles, it ends that reconcile and never
    listens; another signal cuts the reconcile short (the next one finishes it: it only removes what no record
    refers to, and what it removed is gone from what the next lists).  A later reconcile under way is cut short as
    the stop begins."""
    stop, forced, runner = asyncio.Event(), asyncio.Event(), None

    def stopping() -> None:
        if runner is None and not forced.is_set():
            log.info("stopping once the reconcile under way ends (a second SIGINT or SIGTERM stops at once)")

    def force() -> None:
        if runner is not None:
            runner.force()
        elif not forced.is_set():
            forced.set()
            log.warning("stopping at once: the reconcile is cut short (the next start finishes it)")

    on_signals(stop, force, stopping)
    try:
        await front.node.start()  # its key checked against the node's (RemoteNode): refused, what it opened is closed
        if not await unless_set(_reconcile_first(front), forced) or stop.is_set():
            return  # stopped while it reconciled: it never listens
        runner = await listen(front, host, port, limits)
        try:
            if ready:
                ready(f"http://{host}:{port}")
            # A reconcile under way as the stop begins is cut short, not waited for (a node that does not answer
            # would hold the stop forever): the next one finishes it.
            await unless_set(front.reconciling(stop, at_once=False), stop)
        finally:
            await runner.cleanup()
    finally:
        await front.close()


async def _reconcile_first(front: S3Front) -> None:
    """The reconcile before the front listens (skipped, said so, while the node does not answer)."""
    log.info("reconciling the node's store with its bucket index before listening")
    try:
        orphans = await front.reconcile()
        if orphans:
            print(f"removed {len(orphans)} file(s) left by an interrupted write", flush=True)
    except S3ServedByNode:
        raise
    except XscError as err:
        log.warning("could not reconcile with the node yet: %s", err)
