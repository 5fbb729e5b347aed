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
import contextlib
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, TypeVar
from urllib.parse import unquote

from aiohttp import web

from ..errors import NoSuchKey, S3Error, S3ServedByNode, XscError
from ..ids import unique_bytes
from ..storage.core.ranges import content_range, parse_range
from ..serve.connections import ConnectionLimits, open_runner
from ..tasks import Quota, Workers, to_its_end, woken
from ..buckets.core import listing, names
from ..buckets.objects import SmallPut
from .core import headers as stored_headers
from .core import checksums, routing, sigv4, xml
from . import payload
from .access import KeyRing
from .bodies import ObjectBodies
from .link import NodeLink
from .marks import FileMarks
from .small import SmallObjects

log = logging.getLogger(__name__)
T = TypeVar("T")

COUNTED = web.RequestKey("s3_counted", bool)  # the request was counted against its user's rate
# What aiohttp buffers of a body before it stops reading the socket (it reads on to twice this): a part that waits for
# the gateway's budget (storage/put_budget.py) holds this much of its body, and parts come ten at once.
READ_BUFFER = 64 * 1024
RELAY_MIN = 4 * 1024 * 1024  # GetObject bodies from this size are relayed by splice(2) where the system has it
MAX_BUCKETS = 10000  # a ListBuckets page
MARKS_AT_ONCE = 500  # stored files' names checked in one turn of the loop as the front reconciles (about 1 ms)
RESPONSE_OVERRIDES = {"response-content-type": "Content-Type", "response-content-language": "Content-Language",
                      "response-expires": "Expires", "response-cache-control": "Cache-Control",
                      "response-content-disposition": "Content-Disposition",
                      "response-content-encoding": "Content-Encoding"}


@dataclass
class Call:
    """One S3 request, authenticated: its bucket and key, decoded query and verified signature."""

    request: web.Request
    bucket: str
    key: str
    query: dict[str, str]
    auth: sigv4.Verified
    request_id: str
    user: str = names.DEFAULT_USER  # the user the access key belongs to
    operation: str = ""  # its name in routing.TABLE


class WriteGate:
    """Writes (puts, parts, copies) run side by side, each from before its file is stored to after its record is
    written.  Reconciliation lists the store's files, then waits only for the writes under way at that moment
    (`drained`): a file among those listed whose write has ended has its record written, or never will; a write
    that begins meanwhile stores a file the list does not hold.  So no file stored but not yet recorded is ever
    taken for an orphan, and no write is held back while reconciliation runs.

    A write's last step, its record's (`Write.finish`), runs to its end whatever becomes of the request: once it is
    asked of the node, the node writes the record even if the handler is cancelled (the server stopping) or fails,
    so the write counts as under way until the record is written or refused, not until its handler ends."""

    def __init__(self) -> None:
        self._era = 0  # writes that begin now belong to this era; `drained` starts the next one
        self._under_way: dict[int, int] = {}  # era -> its writes (and their last steps) under way; none: dropped
        self._waiting: list[tuple[int, asyncio.Future]] = []  # `drained` callers: the era each waits for

    @property
    def under_way(self) -> int:
        """Writes whose record is neither written nor abandoned yet (status, tests)."""
        return sum(self._under_way.values())

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Write]:
        write = Write(self, self._era)
        self._begin(write.era)
        try:
            yield write
        finally:
            self._end(write.era)

    def _begin(self, era: int) -> None:
        self._under_way[era] = self._under_way.get(era, 0) + 1

    def _end(self, era: int) -> None:
        left = self._under_way[era] - 1
        if left:
            self._under_way[era] = left
            return
        del self._under_way[era]
        oldest = min(self._under_way, default=self._era)
        for waited, future in [w for w in self._waiting if w[0] < oldest]:
            self._waiting.remove((waited, future))
            if not future.done():
                future.set_result(None)

    async def drained(self) -> None:
        """Until every write under way as this is called has ended (writes that begin meanwhile are not waited for)."""
        era = self._era
        self._era += 1
        if not any(e <= era for e in self._under_way):
            return
        waiter = (era, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        try:
            await waiter[1]
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)


class Write:
    """One write under way through a WriteGate."""

    def __init__(self, gate: WriteGate, era: int) -> None:
        self.gate, self.era = gate, era

    def last_step(self) -> Callable[[], None]:
        """This write's last step (what writes its record) begun: the write counts as under way until the callable
        handed back is called, once, when that step has ended."""
        self.gate._begin(self.era)
        return lambda: self.gate._end(self.era)

    async def finish(self, step: Awaitable[T]) -> T:
        """`step` (what writes the record: the file's payment and record) awaited, and run to its end even if this
        caller is cancelled meanwhile; counted as this write under way until then."""
        return await to_its_end(step, self.last_step())


class S3Front:
    def __init__(self, node: NodeLink, keyring: KeyRing, marks: FileMarks, *, region: str = "us-east-1",
                 owner: str = "xsc", clock: Callable[[], float] = time.time,
                 reconcile_interval: float = 300.0, quota: Quota | None = None, idle_timeout: float = 45.0) -> None:
        self.node = node
        # Each user's requests, once authenticated, per second (SlowDown past them), so that one user cannot
        # starve the others; None where the node already limits what the front asks of it (`xsc s3 serve`).
        self.quota = quota
        self.idle_timeout = idle_timeout  # seconds a body may send nothing before its request fails (RequestTimeout)
        self.keyring = keyring
        self.marks = marks  # the names of the files this front stores: only those are ever reconciled away
        self.region = region
        self.owner = owner
        self.clock = clock
        self.gate = WriteGate()
        self.bodies = ObjectBodies(node, idle_timeout)
        self.digests = Workers(1, "xsc-s3-digest")  # a large body's MD5 and SHA-256, beside the loop (payload.py)
        self.small = SmallObjects(node)
        self.reconcile_interval = reconcile_interval

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
                        log.warning("removed %d file(s) left by an interrupted write", len(orphans))
            if await woken(stop, self.reconcile_interval):
                return
            at_once = True

    async def close(self) -> None:
        await self.small.close()
        await self.node.close()
        self.bodies.close()
        self.digests.shutdown(wait=False)

    # --- the app -----------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=xml.MAX_BODY)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle, expect_handler=self.expect)  # keys may hold \n
        return app

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: the client is told to send its body only once the request is authenticated
        and is an operation the front does."""
        request_id = unique_bytes(8).hex().upper()
        if request.headers.get("Expect", "").lower() != "100-continue":
            response = _error(request, S3Error(
                "the only expectation this server meets is Expect: 100-continue",
                s3_code="ExpectationFailed", status=417), request_id)
            response.force_close()
            return response
        try:
            self._authenticate(request, request_id)
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
        bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
        routing.refuse_form_upload(request.method, bucket, key, dict(sigv4.parse_query(raw_query)), request.headers)
        auth = sigv4.verify(sigv4.SignedRequest(request.method, raw_path, raw_query, request.headers),
                            self.keyring.secret, self.clock())
        call = Call(request, bucket, key, dict(sigv4.parse_query(raw_query)), auth, request_id,
                    self.keyring.user_as_read(auth.access_key))
        call.operation = routing.operation(request.method, bucket, key, call.query, request.headers)
        if self.quota is not None and not request.get(COUNTED):  # once, though `expect` authenticated it first
            self.quota.check(f"s3 user {call.user}", time.monotonic(), f"S3 user {call.user!r}")
            request[COUNTED] = True
        return call

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
        handler: Callable[[Call], Awaitable[web.StreamResponse]] = getattr(self, call.operation)
        response = await handler(call)
        if routing.SSE in call.request.headers:
            response.headers[routing.SSE] = routing.SSE_S3  # every object is stored encrypted
        return response

    # --- bodies ------------------------------------------------------------------
    async def _small_body(self, call: Call, checksum: checksums.Checksum | None = None) -> bytes:
        parts = []
        size = 0
        async for chunk in self._body(call, checksum=checksum):
            size += len(chunk)
            if size > xml.MAX_BODY:
                raise S3Error("the request body is too large", s3_code="MaxMessageLengthExceeded", status=400)
            parts.append(chunk)
        return b"".join(parts)

    def _body(self, call: Call, *, md5: "hashlib._Hash | None" = None,
              checksum: checksums.Checksum | None = None) -> AsyncIterator[bytes]:
        """The request body as it arrives, checked before its last piece goes on (payload.py)."""
        request = call.request
        return payload.body(request.content, call.auth, request.headers, _declared_size(call), self.idle_timeout,
                            self.digests, md5=md5, checksum=checksum)

    async def _store(self, call: Call, write: Write, chunks: AsyncIterator[bytes], size: int | None, name: str,
                     recorded: Callable[[str], Awaitable[T]]) -> T:
        """Store a stream as one XSC file, then have the user's own account pay for it and `recorded(capability)`
        write its record: a step that runs to its end once the file is stored (`Write.finish`)."""
        put = await self.node.put_file(chunks, size, self.marks.name(name))

        async def paid_and_recorded() -> T:
            return await recorded(await _paid_by(self.node, call.user, put))

        return await write.finish(paid_and_recorded())

    async def _collect(self, garbage: list[str]) -> None:
        """Remove files no object refers to any more from the store (their deals end), then drop their marks."""
        if not garbage:
            return
        done = []
        limit = asyncio.Semaphore(8)

        async def remove(cap: str) -> None:
            async with limit:
                try:
                    await self.node.delete_file(cap)
                    done.append(cap)
                except XscError as err:
                    log.warning("could not remove %s… from the store yet: %s", cap[:24], err)

        await asyncio.gather(*(remove(cap) for cap in garbage))
        if done:
            await self.node.forget_garbage(done)

    async def collect_all(self) -> int:
        garbage = await self.node.garbage()
        await self._collect(garbage)
        return len(garbage)

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
        await self.collect_all()
        if expired:
            log.info("removed %d part(s) of multipart uploads left unfinished", len(expired))
        if orphans:
            log.info("removed %d file(s) no object referred to", len(orphans))
        return orphans

    # --- service and buckets -----------------------------------------------------
    async def list_buckets(self, call: Call) -> web.Response:
        q = call.query
        max_buckets = _int(q.get("max-buckets"), MAX_BUCKETS, "max-buckets")
        if not 1 <= max_buckets <= MAX_BUCKETS:
            raise S3Error(f"max-buckets goes from 1 to {MAX_BUCKETS}", s3_code="InvalidArgument", status=400)
        token, prefix = q.get("continuation-token", ""), q.get("prefix", "")
        after = listing.decode_token(token).decode(errors="replace") if token else ""
        buckets = [b for b in await self.node.buckets(call.user)
                   if b["name"] > after and b["name"].startswith(prefix)]
        page = buckets[:max_buckets]
        following = listing.encode_token(page[-1]["name"].encode()) if len(buckets) > max_buckets else ""
        return _xml(xml.list_buckets(page, call.user, continuation=following,
                                     prefix=prefix if "prefix" in q else None))

    async def create_bucket(self, call: Call) -> web.Response:
        names.check_bucket(call.bucket)
        await self._small_body(call)  # a CreateBucketConfiguration: every bucket is in this node's region
        await self.node.create_bucket(call.bucket, call.user)  # one's own again: 200
        return web.Response(status=200, headers={"Location": f"/{call.bucket}"})

    async def delete_bucket(self, call: Call) -> web.Response:
        await self.node.delete_bucket(call.bucket, call.user)
        return web.Response(status=204)

    async def head_bucket(self, call: Call) -> web.Response:
        await self.node.bucket(call.bucket, call.user)
        return web.Response(status=200, headers={"x-amz-bucket-region": self.region})

    async def get_location(self, call: Call) -> web.Response:
        await self.node.bucket(call.bucket, call.user)
        return _xml(xml.location(self.region))

    async def get_versioning(self, call: Call) -> web.Response:
        await self.node.bucket(call.bucket, call.user)
        return _xml(xml.versioning())

    async def list_objects(self, call: Call) -> web.Response:
        q = call.query
        max_keys = _int(q.get("max-keys"), listing.MAX_KEYS, "max-keys")
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        encoding = q.get("encoding-type") or None
        v2 = q.get("list-type") == "2"
        if v2:
            token, start_after = q.get("continuation-token", ""), q.get("start-after", "")
            start = listing.decode_token(token) if token else listing.after(start_after) if start_after else b""
        else:
            marker = q.get("marker", "")
            start = listing.v1_start(marker, delimiter)
        page = await self.node.list_objects(call.bucket, call.user, prefix=prefix, delimiter=delimiter,
                                            max_keys=max_keys, start=start)
        if v2:
            body = xml.list_objects_v2(call.bucket, page, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                                       start_after=q.get("start-after", ""), continuation=q.get("continuation-token"),
                                       encoding=encoding, fetch_owner=q.get("fetch-owner") == "true", owner=call.user)
        else:
            body = xml.list_objects_v1(call.bucket, page, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                                       marker=q.get("marker", ""), encoding=encoding, owner=call.user)
        return _xml(body)

    async def delete_objects(self, call: Call) -> web.Response:
        keys, quiet = xml.parse_delete(await self._small_body(call, checksums.wanted(call.request.headers)))
        await self._collect(await self.node.delete_objects(call.bucket, keys, call.user))
        return _xml(xml.delete_result(keys, [], quiet))

    # --- objects -----------------------------------------------------------------
    async def _may_write(self, call: Call, bucket: str) -> None:
        """NoSuchBucket or AccessDenied before a body is stored, not after."""
        await self.node.bucket(bucket, call.user, "write")

    async def put_object(self, call: Call) -> web.Response:
        names.check_key(call.key)
        record = {"content_type": call.request.headers.get("Content-Type", ""),
                  "metadata": names.check_metadata(stored_headers.metadata(call.request.headers)),
                  "headers": stored_headers.stored(call.request.headers)}
        checksum = checksums.for_object(call.request.headers)
        if "If-None-Match" in call.request.headers or "If-Match" in call.request.headers:
            record["condition"] = stored_headers.write_condition(call.request.headers,
                                                                 await _current(self.node, call))
        declared = _declared_size(call)
        if declared is not None and declared <= names.SMALL_OBJECT:
            result = await self._put_small(call, record, checksum)
        else:
            result = await self._put_streamed(call, record, declared, checksum)
        await self._collect(result["garbage"])
        return web.Response(status=200, headers={"ETag": xml.quoted(record["etag"]), **_checksum_headers(checksum)})

    async def _put_small(self, call: Call, record: dict, checksum: checksums.Checksum | None) -> dict:
        """A small object whole, checked, then stored and recorded by one call of the node's (which checks the
        bucket first): the ETag, time and checksum are set on `record`."""
        md5, declared, parts, size = hashlib.md5(), _declared_size(call), [], 0
        async for chunk in self._body(call, md5=md5, checksum=checksum):
            size += len(chunk)
            if size > declared:
                break
            parts.append(chunk)
        if size != declared:
            raise S3Error(f"the body holds {'more' if size > declared else 'fewer'} bytes than the {declared:,} "
                          "declared", s3_code="IncompleteBody", status=400)
        data = b"".join(parts)
        record.update(etag=md5.hexdigest(), modified=self.clock())
        _keep_checksum(record, checksum)
        put = SmallPut(call.bucket, call.key, call.user, self.marks.name(f"{call.bucket}/{call.key}"), record, data)
        async with self.gate.write() as write:
            return await self.small.submit(put, write.last_step())

    async def _put_streamed(self, call: Call, record: dict, declared: int | None,
                            checksum: checksums.Checksum | None) -> dict:
        """A large object (or one of unknown size): the bucket checked before a byte is stored, the body streamed
        to a file, then the object recorded; the ETag, time and checksum are set on `record`."""
        await self._may_write(call, call.bucket)
        md5 = hashlib.md5()

        async def recorded(cap: str) -> dict:
            record.update(parts=[{"cap": cap, "size": int(cap.rsplit(":", 1)[1])}], etag=md5.hexdigest(),
                          modified=self.clock())
            _keep_checksum(record, checksum)
            return {"garbage": await self.node.record(call.bucket, call.key, call.user, record)}

        async with self.gate.write() as write:
            return await self._store(call, write, self._body(call, md5=md5, checksum=checksum), declared,
                                     f"{call.bucket}/{call.key}", recorded)

    async def _object(self, call: Call, bucket: str, key: str) -> dict:
        return await self.node.object(bucket, key, call.user)

    async def get_object(self, call: Call) -> web.StreamResponse:
        request = call.request
        record = await self._object(call, call.bucket, call.key)
        size = record["size"]
        headers = {"ETag": xml.quoted(record["etag"]), "Last-Modified": xml.http_date(record["modified"]),
                   "Content-Type": record.get("content_type") or "binary/octet-stream", "Accept-Ranges": "bytes",
                   **stored_headers.response_headers(record)}
        whole = "Range" not in request.headers and "partNumber" not in call.query
        if whole and request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            headers.update(stored_headers.checksum_headers(record))
        if len(record["parts"]) > 1:
            headers["x-amz-mp-parts-count"] = str(len(record["parts"]))
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
        if "partNumber" in call.query:
            byte_range = _part_range(record, call.query["partNumber"])
            headers["x-amz-mp-parts-count"] = str(len(record["parts"]))
        else:
            try:
                byte_range = parse_range(request.headers.get("Range"), size)
            except XscError:
                raise S3Error(f"the requested range is not satisfiable (the object has {size} bytes)",
                              s3_code="InvalidRange", status=416, ActualObjectSize=str(size)) from None
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
        await self._collect(await self.node.delete_object(call.bucket, call.key, call.user))
        return web.Response(status=204)

    async def copy_object(self, call: Call) -> web.Response:
        names.check_key(call.key)
        headers = call.request.headers
        src_bucket, src_key = _copy_source(headers)
        directive = headers.get("x-amz-metadata-directive", "COPY").upper()
        if (src_bucket, src_key) == (call.bucket, call.key) and directive != "REPLACE":
            raise S3Error("This copy request is illegal because it is trying to copy an object to itself without "
                          "changing the object's metadata (x-amz-metadata-directive: REPLACE)",
                          s3_code="InvalidRequest", status=400)
        record = await self._object(call, src_bucket, src_key)
        stored_headers.copy_condition(headers, record["etag"], record["modified"])
        await self._may_write(call, call.bucket)
        await self._small_body(call)
        if directive == "REPLACE":
            metadata = names.check_metadata(stored_headers.metadata(headers))
            content_type = headers.get("Content-Type", "")
            kept = {**stored_headers.stored(headers), **stored_headers.checksum_of(record)}  # the same bytes
        else:
            metadata, content_type = record.get("metadata", {}), record.get("content_type", "")
            kept = record.get("headers", {})
        md5, checksum = hashlib.md5(), checksums.for_copy(headers, kept)
        data = _copied(self.bodies, record, 0, record["size"] - 1, md5, checksum)
        new = {"content_type": content_type, "metadata": metadata, "headers": kept}

        async def recorded(cap: str) -> list[str]:
            new.update(parts=[{"cap": cap, "size": record["size"]}], etag=md5.hexdigest(), modified=self.clock())
            _keep_checksum(new, checksum)
            return await self.node.record(call.bucket, call.key, call.user, new)

        async with self.gate.write() as write:
            garbage = await self._store(call, write, data, record["size"], f"{call.bucket}/{call.key}", recorded)
        await self._collect(garbage)
        return _xml(xml.copy_object(new["etag"], new["modified"]))

    async def upload_part_copy(self, call: Call) -> web.Response:
        """UploadPartCopy: a part made of an object's bytes (`x-amz-copy-source-range`: some of them), as S3's
        managed copies (boto3's `copy`, `aws s3 cp` between buckets) copy an object larger than a part."""
        number, upload_id = _part_number(call), _upload_id(call)
        headers = call.request.headers
        src_bucket, src_key = _copy_source(headers)
        await self._upload(call)
        record = await self._object(call, src_bucket, src_key)
        stored_headers.copy_condition(headers, record["etag"], record["modified"])
        first, last = _copy_range(headers.get("x-amz-copy-source-range"), record["size"])
        await self._small_body(call)
        md5, size = hashlib.md5(), last - first + 1

        async def recorded(cap: str) -> list[str]:
            return await self.node.put_part(upload_id, number, call.user, cap, size, md5.hexdigest())

        async with self.gate.write() as write:
            garbage = await self._store(call, write, _copied(self.bodies, record, first, last, md5), size,
                                        f"{call.bucket}/{call.key}#{upload_id}.{number}", recorded)
        await self._collect(garbage)
        return _xml(xml.copy_object(md5.hexdigest(), self.clock(), root="CopyPartResult"))

    # --- multipart ---------------------------------------------------------------
    async def create_upload(self, call: Call) -> web.Response:
        names.check_key(call.key)
        metadata = names.check_metadata(stored_headers.metadata(call.request.headers))
        algorithm = checksums.upload_algorithm(call.request.headers)
        upload_id = await self.node.create_upload(call.bucket, call.key, call.user,
                                                  call.request.headers.get("Content-Type", ""), metadata,
                                                  stored_headers.stored(call.request.headers))
        response = _xml(xml.initiate_multipart(call.bucket, call.key, upload_id))
        if algorithm is not None:  # each part's checksum is checked as it comes (upload_part)
            response.headers["x-amz-checksum-algorithm"] = algorithm.upper()
        return response

    async def _upload(self, call: Call) -> dict:
        upload = await self.node.upload(_upload_id(call), call.user)
        if upload["bucket"] != call.bucket or upload["key"] != call.key:
            raise S3Error("that upload id is for another object", s3_code="NoSuchUpload", status=404)
        return upload

    async def upload_part(self, call: Call) -> web.Response:
        number, upload_id = _part_number(call), _upload_id(call)
        checksum = checksums.wanted(call.request.headers)
        await self._upload(call)
        md5 = hashlib.md5()

        async def recorded(cap: str) -> list[str]:
            return await self.node.put_part(upload_id, number, call.user, cap, int(cap.rsplit(":", 1)[1]),
                                            md5.hexdigest())

        async with self.gate.write() as write:
            garbage = await self._store(call, write, self._body(call, md5=md5, checksum=checksum),
                                        _declared_size(call), f"{call.bucket}/{call.key}#{upload_id}.{number}",
                                        recorded)
        await self._collect(garbage)
        return web.Response(status=200, headers={"ETag": xml.quoted(md5.hexdigest()), **_checksum_headers(checksum)})

    async def complete_upload(self, call: Call) -> web.Response:
        """Complete an upload; one completed already answers as it did (the node keeps what it answered)."""
        checksums.refuse_whole_object(call.request.headers)
        parts = xml.parse_complete(await self._small_body(call))
        record, garbage = await self.node.complete(_upload_id(call), call.user, parts, call.bucket, call.key,
                                                   stored_headers.complete_condition(call.request.headers))
        await self._collect(garbage)
        return _xml(xml.complete_multipart(f"/{call.bucket}/{call.key}", call.bucket, call.key, record["etag"]))

    async def abort_upload(self, call: Call) -> web.Response:
        await self._upload(call)
        await self._collect(await self.node.abort(_upload_id(call), call.user))
        return web.Response(status=204)

    async def list_parts(self, call: Call) -> web.Response:
        upload = await self._upload(call)
        marker = _int(call.query.get("part-number-marker"), 0, "part-number-marker")
        max_parts = min(_int(call.query.get("max-parts"), 1000, "max-parts"), 1000)
        parts = [p for p in upload["parts"] if p["number"] > marker]
        return _xml(xml.list_parts(call.bucket, call.key, upload["id"], parts[:max_parts], marker=marker,
                                   max_parts=max_parts, truncated=len(parts) > max_parts,
                                   owner=upload.get("user") or call.user))

    async def list_uploads(self, call: Call) -> web.Response:
        prefix = call.query.get("prefix", "")
        max_uploads = min(_int(call.query.get("max-uploads"), 1000, "max-uploads"), 1000)
        key_marker = call.query.get("key-marker", "")
        id_marker = call.query.get("upload-id-marker", "")
        uploads = await self.node.uploads(call.bucket, call.user, prefix)
        if key_marker:
            uploads = _after_marker(uploads, key_marker, id_marker)
        return _xml(xml.list_uploads(call.bucket, uploads[:max_uploads], prefix=prefix, max_uploads=max_uploads,
                                     truncated=len(uploads) > max_uploads, owner=call.user, key_marker=key_marker,
                                     id_marker=id_marker))


async def _current(node: NodeLink, call: Call) -> dict | None:
    """The object a conditional write is judged against before its body is read (the index judges it again as it
    records the object)."""
    try:
        return await node.object(call.bucket, call.key, call.user)
    except NoSuchKey:
        return None


def _after_marker(uploads: list[dict], key_marker: str, id_marker: str) -> list[dict]:
    """The uploads listed after a page that ended at (key_marker, id_marker).  A key's uploads come in the order they
    began (as S3 lists them), not in their ids' order: the page goes on after the marker's own place in the list;
    an upload gone since (completed, aborted) is placed by its id among its key's others."""
    if id_marker:
        for i, upload in enumerate(uploads):
            if upload["key"] == key_marker and upload["id"] == id_marker:
                return uploads[i + 1:]
    return [u for u in uploads if u["key"] > key_marker or (u["key"] == key_marker and id_marker and u["id"] > id_marker)]


def _part_number(call: Call) -> int:
    number = _int(call.query.get("partNumber"), 0, "partNumber")
    if not 1 <= number <= names.MAX_PARTS:
        raise S3Error(f"Part number must be an integer between 1 and {names.MAX_PARTS}, inclusive (not {number})",
                      s3_code="InvalidArgument", status=400, ArgumentName="partNumber", ArgumentValue=str(number))
    return number


def _copy_source(headers) -> tuple[str, str]:
    """The bucket and key `x-amz-copy-source` names."""
    source, _, version = unquote(headers["x-amz-copy-source"]).partition("?")
    src_bucket, _, src_key = source.lstrip("/").partition("/")
    if not src_bucket or not src_key:
        raise S3Error("x-amz-copy-source must be BUCKET/KEY", s3_code="InvalidArgument", status=400)
    if version:
        raise S3Error("copying a version (x-amz-copy-source with ?versionId) is not implemented by this gateway",
                      s3_code="NotImplemented", status=501)
    return src_bucket, src_key


def _copy_range(text: str | None, size: int) -> tuple[int, int]:
    """The bytes an UploadPartCopy takes of its source: `bytes=FIRST-LAST` within it, or all of it."""
    if text is None:
        return 0, size - 1
    first, dash, last = text.strip().removeprefix("bytes=").partition("-")
    if not (text.strip().startswith("bytes=") and dash and first.isdigit() and last.isdigit()):
        raise S3Error("x-amz-copy-source-range must be bytes=FIRST-LAST, zero-based offsets of the first and last "
                      "bytes to copy", s3_code="InvalidArgument", status=400)
    if not int(first) <= int(last) < size:
        raise S3Error(f"Range specified is not valid for source object of size: {size}", s3_code="InvalidArgument",
                      status=400)
    return int(first), int(last)


async def _copied(bodies: ObjectBodies, record: dict, first: int, last: int, md5,
                  checksum: checksums.Checksum | None = None) -> AsyncIterator[bytes]:
    """Bytes first..last of an object (none of an empty one), their MD5 (and checksum) taken as they go."""
    if last >= first:
        async for chunk in bodies.read(record, first, last):
            md5.update(chunk)
            if checksum is not None:
                checksum.digest.update(chunk)  # type: ignore[attr-defined]
            yield chunk


def _keep_checksum(record: dict, checksum: checksums.Checksum | None) -> None:
    """The body's checksum, checked, kept among the object's stored headers (given back only when asked for), in
    place of one the headers held (a copy's source's)."""
    if checksum is not None:
        kept = {k: v for k, v in record["headers"].items() if not k.startswith(checksums.PREFIX)}
        record["headers"] = {**kept, checksum.header: checksum.value}


def _checksum_headers(checksum: checksums.Checksum | None) -> dict[str, str]:
    return {} if checksum is None else {checksum.header: checksum.value}


async def _paid_by(node: NodeLink, user: str, put: dict) -> str:
    """The capability of a file just stored, once the user's account paid the node's for it (the default user's
    puts are the node's own); a file it cannot pay for is removed again, and the put refused with its answer."""
    if user == names.DEFAULT_USER:
        return put["capability"]
    try:
        await node.charge(user, put["capability"], put["cost"])
    except XscError:
        with contextlib.suppress(XscError):  # else reconciliation removes it: no record refers to it
            await node.delete_file(put["capability"])
        raise
    return put["capability"]


def _declared_size(call: Call) -> int | None:
    headers = call.request.headers
    if "x-amz-decoded-content-length" in headers:
        try:
            return int(headers["x-amz-decoded-content-length"])
        except ValueError:
            raise S3Error("bad x-amz-decoded-content-length", s3_code="InvalidArgument", status=400) from None
    if call.auth.payload_hash.startswith("STREAMING-"):
        return None
    return call.request.content_length


def _part_range(record: dict, text: str) -> tuple[int, int]:
    number = _int(text, 1, "partNumber")
    if not 1 <= number <= names.MAX_PARTS:
        raise S3Error(f"partNumber goes from 1 to {names.MAX_PARTS}", s3_code="InvalidArgument", status=400)
    if number > len(record["parts"]):
        raise S3Error(f"the object has {len(record['parts'])} part(s), not a part {number}",
                      s3_code="InvalidPartNumber", status=400)
    first = sum(p["size"] for p in record["parts"][:number - 1])
    return first, first + record["parts"][number - 1]["size"] - 1


def _check_names(call: Call) -> None:
    """Every bucket name, not only a new one's (it goes into the node's API paths); keys, prefixes and markers
    (they may be echoed in XML answers)."""
    if call.bucket:
        names.check_bucket(call.bucket)
    names.check_text(call.key, "the object key")
    for name, value in call.query.items():
        names.check_text(value, f"the query parameter {name!r}"[:80])


def _upload_id(call: Call) -> str:
    upload_id = call.query.get("uploadId", "")
    if not upload_id.isalnum():
        raise S3Error("no multipart upload with that id", s3_code="NoSuchUpload", status=404)
    return upload_id


def _int(text: str | None, default: int, name: str) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise S3Error(f"{name} must be an integer, got {text!r}", s3_code="InvalidArgument", status=400) from None
    if value < 0:
        raise S3Error(f"{name} must not be negative", s3_code="InvalidArgument", status=400)
    return value


def _error(request: web.Request, err: XscError, request_id: str) -> web.Response:
    """The S3 error document for `err` (its code and status by xml.s3_code_of)."""
    code, status = xml.s3_code_of(err)
    if status >= 500 and code != "SlowDown":  # a client over its rate is not the front's trouble, nor its log's
        log.warning("%s %s: %s %s", request.method, request.path, code, err)
    body = b"" if request.method == "HEAD" else xml.error(code, err.message, request.path, request_id)
    response = web.Response(status=status, body=body, content_type="application/xml",
                            headers={"x-amz-request-id": request_id})
    if "retry_after" in err.details:
        response.headers["Retry-After"] = str(max(1, math.ceil(err.details["retry_after"])))
    if request.can_read_body and not request.content.at_eof():
        response.force_close()  # the client may still be sending a body we will not read
    return response


def _xml(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml")


def _unparsed(status: int, detail: str) -> web.Response:
    """The answer to a request aiohttp could not parse (4xx) or serve (5xx): an S3 error, as S3 tools expect."""
    return _xml(xml.error("BadRequest" if status < 500 else "InternalError", detail), status)


async def listen(front: S3Front, host: str, port: int, limits: ConnectionLimits, *,
                 beside_node: bool = False) -> web.AppRunner:
    """The front's app listening on host:port, its connections held to `limits` (`max_connections`,
    `max_connections_per_ip`, `idle_timeout`: the node's settings): its runner (`cleanup()` stops it)."""
    # A body's Content-Encoding (gzip, ...) is what the object is, stored as sent: aiohttp must not decode it.
    runner = open_runner(front.app(), max_connections=limits.max_connections,
                         max_per_ip=limits.max_connections_per_ip, idle_timeout=limits.idle_timeout,
                         beside_node=beside_node, answer=_unparsed, access_log=None, handle_signals=False,
                         auto_decompress=False, read_bufsize=READ_BUFFER)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(front: S3Front, host: str, port: int, limits: ConnectionLimits, *,
                ready: Callable[[str], None] | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the front until `stop` is set (or forever): reconcile first, then listen (`limits`: as `listen`), then
    reconcile when idle."""
    await front.node.start()
    try:
        try:
            orphans = await front.reconcile()
            if orphans:
                print(f"removed {len(orphans)} file(s) left by an interrupted write", flush=True)
        except S3ServedByNode:
            raise
        except XscError as err:
            log.warning("could not reconcile with the node yet: %s", err)
        runner = await listen(front, host, port, limits)
        try:
            if ready:
                ready(f"http://{host}:{port}")
            await front.reconciling(stop, at_once=False)
        finally:
            await runner.cleanup()
    finally:
        await front.close()
