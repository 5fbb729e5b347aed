"""Share transfer, holder side: a gateway places one share of a file on this node, then reads, audits, deletes it.

Peer API (signed by the sending node, see peer_auth; the sender that begins an upload is the share's uploader):
    POST   /v1/peer/shares/{si}/{share}/uploads      {size, segment_size, lease_expiry, price} -> 201 {"upload"}
    PUT    /v1/peer/uploads/{upload}/segments/{first} the share's blocks of segments first.., concatenated
    POST   /v1/peer/uploads/{upload}/commit           {"block_hashes": [hex], "manifest": hex}
    DELETE /v1/peer/uploads/{upload}                  abort
    GET    /v1/peer/shares/{si}/{share}               metadata, block hashes, manifest
    GET    /v1/peer/shares/{si}/{share}/blocks?from=I&count=N   the blocks, concatenated (streamed)
    DELETE /v1/peer/shares/{si}/{share}               the uploader only
    POST   /v1/peer/shares/{si}/{share}/renew         {"lease_expiry"} the uploader only; never shortens a lease
    POST   /v1/peer/shares/{si}/{share}/audit         {"segment"} -> the block and its Merkle path

An upload stages blocks with the share store (invisible, and deleted on restart, until published) and
publishes the share only once every block has arrived in order, its hashes are the ones the holder
computed and their root is the manifest's root for that share.  Whatever fails, the upload is aborted:
nothing stays staged.  The holder cannot check the manifest against the capability (it never sees
the capability); readers do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from ..errors import (BadRequest, BadRequestSignature, Forbidden, InvalidArgument, PayloadTooLarge,
                      RangeNotSatisfiable, SegmentOutOfOrder, ShareExists, ShareMismatch, ShareNotFound,
                      UploadIncomplete, UploadNotFound, XscError)
from ..identity import public_id
from ..storage import MANIFEST_VERSION, Manifest, ShareMeta, ShareStore, Upload, erasure, layout
from ..storage import leases
from ..storage.merkle import HASH_BYTES, block_hash, proof, root
from . import peer_auth
from .bodies import json_object
from .context import CPU_POOL
from .deals import accept_deal
from .status import STATUS_PARTS
from .storage_routes import GATEWAY

log = logging.getLogger(__name__)

MIN_SEGMENT_SIZE = 4096  # the bounds of storage.segment_size
MAX_SEGMENT_SIZE = 64 * 1024**2
MAX_PUT_BYTES = 16 * 1024**2  # per segments PUT (always at least one block): bounds a holder's memory per request
MAX_BLOCKS_PER_GET = 64
IDLE_TIMEOUT = 600.0  # seconds without a request before an upload in progress is aborted
REAP_INTERVAL = 30.0
_COMMIT_BYTES_PER_SEGMENT = 2 * HASH_BYTES + 4  # a hex hash, its quotes and a comma
_COMMIT_OVERHEAD = 64 * 1024  # the manifest (hex) and the rest of the JSON
_SI = re.compile(r"[0-9a-f]{64}")
_HEX_HASH = re.compile(r"[0-9a-f]{64}")


# --- pure parts ----------------------------------------------------------------------
def parse_storage_index(text: str) -> bytes:
    if not _SI.fullmatch(text):
        raise InvalidArgument(f"not a storage index: {text[:80]!r}", hint="a storage index is 64 lower-case hex digits")
    return bytes.fromhex(text)


def parse_share(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) >= erasure.N:
        raise InvalidArgument(f"not a share number: {text[:20]!r}", hint=f"shares are numbered 0 to {erasure.N - 1}")
    return int(text)


def parse_count(text: str | None, name: str, *, minimum: int = 0) -> int:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) < minimum:
        raise InvalidArgument(f"{name} must be an integer >= {minimum}, not {str(text)[:20]!r}")
    return int(text)


def block_lengths(size: int, segment_size: int, first: int, count: int) -> list[int]:
    """Lengths of one share's blocks of segments first..first+count-1 (all alike but the last segment's)."""
    return [layout.segment_block_length(layout.plaintext_length(size, segment_size, i))
            for i in range(first, first + count)]


def split_blocks(body: bytes | bytearray | memoryview, size: int, segment_size: int, first: int) -> list[bytes]:
    """Cut a body into the share's blocks of segments first, first+1, ...; it must split exactly."""
    total = layout.segment_count(size, segment_size)
    view = memoryview(body)
    blocks: list[bytes] = []
    offset, segment = 0, first
    if not len(view):
        raise BadRequest("the body holds no block", hint="send the blocks of at least one segment")
    while offset < len(view):
        if segment >= total:
            raise BadRequest(f"the body holds more than the {total - first} segment(s) from {first} to the last",
                             hint="send at most the share's remaining blocks")
        length = block_lengths(size, segment_size, segment, 1)[0]
        if offset + length > len(view):
            raise BadRequest(f"the body does not split into whole blocks: {len(view) - offset} byte(s) left "
                             f"for segment {segment}, whose block is {length} bytes",
                             hint="send whole blocks, each of the length layout.segment_block_length gives")
        blocks.append(bytes(view[offset:offset + length]))
        offset += length
        segment += 1
    return blocks


def parse_manifest(raw: bytes) -> Manifest:
    """A manifest in its canonical encoding (refused otherwise: readers hash exactly these bytes)."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidArgument("the manifest is not JSON") from None
    fields = {"size", "segment_size", "k", "m", "segment_count", "share_roots", "ciphertext_hash", "version"}
    if not isinstance(body, dict) or set(body) != fields:
        raise InvalidArgument("the manifest does not have the manifest's fields", expected=sorted(fields))
    ints = ("size", "segment_size", "k", "m", "segment_count", "version")
    if any(type(body[f]) is not int or body[f] < 0 for f in ints):
        raise InvalidArgument(f"the manifest's {', '.join(ints)} must be integers >= 0")
    roots = body["share_roots"]
    if not isinstance(roots, list) or len(roots) != erasure.N \
            or not all(isinstance(r, str) and _HEX_HASH.fullmatch(r) for r in roots) \
            or not (isinstance(body["ciphertext_hash"], str) and _HEX_HASH.fullmatch(body["ciphertext_hash"])):
        raise InvalidArgument(f"the manifest needs {erasure.N} share roots and a ciphertext hash, in hex")
    if body["version"] != MANIFEST_VERSION:
        raise InvalidArgument(f"unsupported manifest version {body['version']}")
    manifest = Manifest(**{**body, "share_roots": tuple(roots)})
    if manifest.encode() != raw:
        raise InvalidArgument("the manifest is not in its canonical encoding",
                              hint="UTF-8 JSON, sorted keys, no whitespace")
    return manifest


def _json_int(body: dict, name: str, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    value = body.get(name)
    if type(value) is not int or not minimum <= value <= maximum:
        raise InvalidArgument(f"{name} must be an integer from {minimum} to {maximum}", got=repr(value)[:40])
    return value


# --- the holder ------------------------------------------------------------------------
@dataclass(eq=False)
class Incoming:
    """An upload of one share to this node, in progress."""

    upload: Upload
    share: int
    size: int
    segment_size: int
    segment_count: int
    share_bytes: int
    lease_expiry: int
    uploader: bytes
    last_activity: float
    hashes: list[bytes] = field(default_factory=list)  # computed here, one per segment received
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False

    @property
    def id(self) -> str:
        return self.upload.id.hex()

    @property
    def next_segment(self) -> int:
        return len(self.hashes)


class ShareHolder:
    """The uploads in progress on this node and what a holder does with them."""

    def __init__(self, store: ShareStore, pool: Executor, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.pool = pool
        self.clock = clock
        self._incoming: dict[str, Incoming] = {}
        self._receiving: set[tuple[bytes, int]] = set()  # (si, share) being uploaded: one upload per share

    def __len__(self) -> int:
        return len(self._incoming)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def begin(self, uploader: bytes, si: bytes, share: int, size: int, segment_size: int,
                    lease_expiry: int) -> Incoming:
        if (si, share) in self._receiving:
            raise ShareExists(f"share {share} of {si.hex()[:16]} is already being uploaded to this node",
                              hint="finish or abort that upload first")
        # Claimed before looking: an upload that publishes meanwhile is seen, and none starts alongside.
        self._receiving.add((si, share))
        try:
            held = await self._run(self.store.share_metas, si)
            for meta in held:
                if meta.share == share or meta.uploader != uploader:
                    whose = "yours" if meta.uploader == uploader else f"placed by {public_id(meta.uploader)}"
                    raise ShareExists(
                        f"this node already holds share {meta.share} of {si.hex()[:16]} ({whose})",
                        hint="delete it first to replace it" if meta.uploader == uploader else
                        "only the node that placed a file's shares may place more of them here")
            count = layout.segment_count(size, segment_size)
            share_bytes = layout.share_bytes(size, segment_size)
            upload = await self._run(self.store.begin_upload, si, (share,), share_bytes)
        except BaseException:
            self._receiving.discard((si, share))
            raise
        incoming = Incoming(upload, share, size, segment_size, count, share_bytes, lease_expiry, uploader,
                            self.clock())
        self._incoming[incoming.id] = incoming
        return incoming

    def get(self, upload_id: str, sender: bytes) -> Incoming:
        incoming = self._incoming.get(upload_id)
        if incoming is None or incoming.closed:
            raise UploadNotFound(f"no upload {upload_id[:40]} in progress on this node",
                                 hint="it was committed, aborted, idle for too long, or lost in a restart: "
                                      "begin a new one")
        if incoming.uploader != sender:
            raise Forbidden("only the node that began an upload may send to, commit or abort it")
        incoming.last_activity = self.clock()  # a request arrived: a slow body is not idleness
        return incoming

    async def put(self, incoming: Incoming, first: int, body: bytes | bytearray) -> int:
        """Stage the blocks of segments first.. (in order); returns the next segment expected."""
        async with incoming.lock:
            self._check_open(incoming)
            self.check_order(incoming, first)
            blocks = split_blocks(body, incoming.size, incoming.segment_size, first)
            upload, share = incoming.upload, incoming.share

            def stage() -> None:
                # Counted as each block is written, so the state says what is staged even if the
                # request is cancelled while this thread runs on.
                for i, block in enumerate(blocks):
                    digest = block_hash(block)
                    upload.put_blocks(first + i, {share: block})
                    incoming.hashes.append(digest)

            try:
                await self._run(stage)
            except asyncio.CancelledError:
                raise
            except BaseException:
                await self._abort_locked(incoming)  # a block half-staged: the upload cannot go on
                raise
            incoming.last_activity = self.clock()
            return incoming.next_segment

    def _check_open(self, incoming: Incoming) -> None:
        if incoming.closed:
            raise UploadNotFound(f"upload {incoming.id} was aborted")

    def check_order(self, incoming: Incoming, first: int) -> None:
        if first != incoming.next_segment:
            raise SegmentOutOfOrder(
                f"segments must arrive in order: segment {incoming.next_segment} is next, not {first}",
                hint="send the next segment", expected=incoming.next_segment)

    async def commit(self, incoming: Incoming, block_hashes: Any, manifest_hex: Any) -> ShareMeta:
        """Check everything, then publish the share; on any failure the upload is aborted."""
        async with incoming.lock:
            self._check_open(incoming)
            try:
                meta, manifest = await self._run(self._checked, incoming, block_hashes, manifest_hex)
                held = await self._run(self.store.manifest, incoming.upload.storage_index)
                if held is not None and held != manifest:
                    raise ShareExists("this node holds another manifest for that storage index",
                                      hint="a storage index has one manifest: send the same one for every share")
                await self._run(lambda: self.store.publish(incoming.upload, [meta], manifest=manifest))
            except BaseException:
                await self._abort_locked(incoming)
                raise
            self._forget(incoming)
            return meta

    def _checked(self, incoming: Incoming, block_hashes: Any, manifest_hex: Any) -> tuple[ShareMeta, bytes]:
        if incoming.next_segment != incoming.segment_count:
            raise UploadIncomplete(f"only {incoming.next_segment} of {incoming.segment_count} segments arrived",
                                   hint="send every segment before committing", received=incoming.next_segment,
                                   segment_count=incoming.segment_count)
        if not isinstance(block_hashes, list) or not all(isinstance(h, str) and _HEX_HASH.fullmatch(h)
                                                         for h in block_hashes):
            raise InvalidArgument("block_hashes must be a list of SHA-256 hashes in lower-case hex")
        if len(block_hashes) != incoming.segment_count:
            raise ShareMismatch(f"{len(block_hashes)} block hashes given for {incoming.segment_count} segments")
        for i, (given, computed) in enumerate(zip(block_hashes, incoming.hashes)):
            if bytes.fromhex(given) != computed:
                raise ShareMismatch(f"the block of segment {i} does not match its given hash", segment=i,
                                    hint="the block was damaged on its way here, or the hash is wrong")
        if not isinstance(manifest_hex, str) or len(manifest_hex) % 2 or not re.fullmatch(r"[0-9a-f]*",
                                                                                           manifest_hex):
            raise InvalidArgument("manifest must be the manifest's canonical encoding in lower-case hex")
        raw = bytes.fromhex(manifest_hex)
        manifest = parse_manifest(raw)
        expected = {"size": incoming.size, "segment_size": incoming.segment_size, "k": erasure.K, "m": erasure.M,
                    "segment_count": incoming.segment_count}
        wrong = [f"{k} {getattr(manifest, k)} (expected {v})" for k, v in expected.items() if getattr(manifest, k) != v]
        if wrong:
            raise ShareMismatch("the manifest does not describe this upload: " + ", ".join(wrong))
        if root(incoming.hashes) != manifest.share_root(incoming.share):
            raise ShareMismatch(f"the Merkle root of the blocks is not the manifest's root of share {incoming.share}")
        meta = ShareMeta(incoming.share, incoming.segment_count, incoming.share_bytes, incoming.lease_expiry,
                         incoming.uploader, tuple(incoming.hashes))
        return meta, raw

    async def abort(self, incoming: Incoming) -> None:
        async with incoming.lock:
            await self._abort_locked(incoming)

    async def _abort_locked(self, incoming: Incoming) -> None:
        if incoming.closed:
            return
        incoming.closed = True
        try:
            # The share stays claimed until its staged blocks are gone: a new upload would write the same keys.
            await self._run(self.store.abort, incoming.upload)
        finally:
            self._forget(incoming)

    def _forget(self, incoming: Incoming) -> None:
        incoming.closed = True
        self._incoming.pop(incoming.id, None)
        self._receiving.discard((incoming.upload.storage_index, incoming.share))

    async def reap(self, now: float | None = None) -> int:
        """Abort uploads idle for IDLE_TIMEOUT (not those with a request being handled); returns how many."""
        now = self.clock() if now is None else now
        idle = [i for i in list(self._incoming.values())
                if now - i.last_activity >= IDLE_TIMEOUT and not i.lock.locked()]
        for incoming in idle:
            log.info("aborting upload %s of share %d: idle for %.0f s", incoming.id, incoming.share,
                     now - incoming.last_activity)
            await self.abort(incoming)
        return len(idle)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            try:
                await self.reap()
            except Exception:  # a failed round must not end reaping
                log.exception("aborting idle uploads failed")

    async def close(self) -> None:
        for incoming in list(self._incoming.values()):
            try:
                await self.abort(incoming)
            except Exception:
                log.exception("could not abort upload %s at shutdown (it is cleaned up on the next start)",
                              incoming.id)


SHARE_HOLDER = web.AppKey("share_holder", ShareHolder)
routes = web.RouteTableDef()


async def _share_service(app: web.Application):
    holder = ShareHolder(app[GATEWAY].store, app[CPU_POOL])
    app[SHARE_HOLDER] = holder
    reaper = asyncio.create_task(holder._reaper(), name="xsc-upload-reaper")
    try:
        yield
    finally:
        reaper.cancel()
        await asyncio.gather(reaper, return_exceptions=True)
        await holder.close()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_share_service)
    app[STATUS_PARTS]["share_uploads"] = lambda a: {"in_progress": len(a[SHARE_HOLDER])}
    app.add_routes(routes)


# --- handlers ------------------------------------------------------------------------------
def _sender(request: web.Request) -> bytes:
    return peer_auth.signed(request).sender_key


def _target(request: web.Request) -> tuple[bytes, int]:
    return parse_storage_index(request.match_info["si"]), parse_share(request.match_info["share"])


async def _read_signed_body(request: web.Request, limit: int) -> bytes:
    """The body of a @streams_body handler, at most limit bytes, checked against its signed digest."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is {request.content_length} bytes; at most {limit} are accepted here",
                              limit=limit)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is longer than the {limit} bytes accepted here", limit=limit)
    digest = await asyncio.get_running_loop().run_in_executor(request.app[CPU_POOL],
                                                              lambda: hashlib.sha256(body).hexdigest())
    if not hmac.compare_digest(digest, peer_auth.signed(request).digest):
        raise BadRequestSignature("the request body does not match its signed digest",
                                  hint="sign the exact bytes sent")
    return bytes(body)


async def _in_pool(request: web.Request, fn, *args):
    return await asyncio.get_running_loop().run_in_executor(request.app[CPU_POOL], fn, *args)


async def _held(request: web.Request) -> tuple[bytes, int, ShareMeta]:
    si, share = _target(request)
    meta = await _in_pool(request, request.app[SHARE_HOLDER].store.share_meta, si, share)
    if meta is None:
        raise ShareNotFound(f"this node holds no share {share} of {si.hex()[:16]}")
    return si, share, meta


@routes.post("/v1/peer/shares/{si}/{share}/uploads")
async def begin_upload(request: web.Request) -> web.Response:
    si, share = _target(request)
    body = json_object(await request.read(), 'send {"size", "segment_size", "lease_expiry", "price"}')
    size = _json_int(body, "size")
    segment_size = _json_int(body, "segment_size", minimum=MIN_SEGMENT_SIZE, maximum=MAX_SEGMENT_SIZE)
    lease_expiry = _json_int(body, "lease_expiry", minimum=int(time.time()) + 1, maximum=2**64 - 1)
    # Nothing is stored for another node without a priced deal at or above this node's ask.
    await _in_pool(request, accept_deal, request.app, si, share, peer_auth.peer_id(request), body.get("price"),
                   layout.share_bytes(size, segment_size))
    incoming = await request.app[SHARE_HOLDER].begin(_sender(request), si, share, size, segment_size, lease_expiry)
    return web.json_response({"upload": incoming.id, "segment_count": incoming.segment_count,
                              "share_bytes": incoming.share_bytes, "max_put_bytes": _put_limit(incoming)},
                             status=201)


def _put_limit(incoming: Incoming) -> int:
    return max(MAX_PUT_BYTES, block_lengths(incoming.size, incoming.segment_size, 0, 1)[0])


@routes.put("/v1/peer/uploads/{upload}/segments/{first}")
@peer_auth.streams_body
async def put_segments(request: web.Request) -> web.Response:
    holder = request.app[SHARE_HOLDER]
    incoming = holder.get(request.match_info["upload"], _sender(request))
    first = parse_count(request.match_info["first"], "the first segment")
    holder.check_order(incoming, first)  # refused before its body is read; checked again under the lock
    body = await _read_signed_body(request, _put_limit(incoming))
    following = await holder.put(incoming, first, body)
    return web.json_response({"next_segment": following, "segment_count": incoming.segment_count})


@routes.post("/v1/peer/uploads/{upload}/commit")
@peer_auth.streams_body
async def commit_upload(request: web.Request) -> web.Response:
    holder = request.app[SHARE_HOLDER]
    incoming = holder.get(request.match_info["upload"], _sender(request))
    try:
        limit = _COMMIT_OVERHEAD + _COMMIT_BYTES_PER_SEGMENT * incoming.segment_count
        body = json_object(await _read_signed_body(request, limit), 'send {"block_hashes": [...], "manifest": hex}')
    except BadRequestSignature:
        raise  # not provably from the uploader: its upload stays as it was
    except XscError:
        await holder.abort(incoming)
        raise
    meta = await holder.commit(incoming, body.get("block_hashes"), body.get("manifest"))
    return web.json_response({"share": meta.share, "segment_count": meta.segment_count,
                              "stored_bytes": meta.stored_bytes, "lease_expiry": meta.lease_expiry})


@routes.delete("/v1/peer/uploads/{upload}")
async def abort_upload(request: web.Request) -> web.Response:
    holder = request.app[SHARE_HOLDER]
    await holder.abort(holder.get(request.match_info["upload"], _sender(request)))
    return web.json_response({"aborted": request.match_info["upload"]})


@routes.get("/v1/peer/shares/{si}/{share}")
async def share_meta(request: web.Request) -> web.Response:
    si, _, meta = await _held(request)
    manifest = await _in_pool(request, request.app[SHARE_HOLDER].store.manifest, si)
    return web.json_response({"segment_count": meta.segment_count, "stored_bytes": meta.stored_bytes,
                              "lease_expiry": meta.lease_expiry, "uploader": public_id(meta.uploader),
                              "block_hashes": [h.hex() for h in meta.block_hashes],
                              "manifest": manifest.hex() if manifest is not None else None})


@routes.get("/v1/peer/shares/{si}/{share}/blocks")
async def share_blocks(request: web.Request) -> web.StreamResponse:
    si, share, meta = await _held(request)
    first = parse_count(request.query.get("from"), "from")
    count = parse_count(request.query.get("count"), "count", minimum=1)
    if count > MAX_BLOCKS_PER_GET:
        raise InvalidArgument(f"count must be at most {MAX_BLOCKS_PER_GET}", hint="ask for the blocks in several ranges")
    if first + count > meta.segment_count:
        raise RangeNotSatisfiable(f"blocks {first} to {first + count - 1} asked, share {share} has "
                                  f"{meta.segment_count} (0 to {meta.segment_count - 1})",
                                  segment_count=meta.segment_count)
    store = request.app[SHARE_HOLDER].store
    first_block = await _in_pool(request, store.get_block, si, share, first)
    if first_block is None:
        raise ShareNotFound(f"block {first} of share {share} is missing on this node", segment=first)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    block: bytes | None = first_block
    for segment in range(first, first + count):
        if segment > first:
            block = await _in_pool(request, store.get_block, si, share, segment)
        if block is None:
            # Headers are gone: cut the connection, so the reader sees a short answer and asks another holder.
            log.error("block %d of share %d of %s is missing: answer cut", segment, share, si.hex()[:16])
            request.transport.close()
            return response
        await response.write(block)
    await response.write_eof()
    return response


async def _held_by_uploader(request: web.Request, action: str) -> tuple[bytes, int, ShareMeta]:
    """A share held here, for a request that only the node that placed it may make."""
    si, share, meta = await _held(request)
    if meta.uploader != _sender(request):
        raise Forbidden(f"only the node that placed share {share} may {action}", uploader=public_id(meta.uploader))
    return si, share, meta


@routes.delete("/v1/peer/shares/{si}/{share}")
async def delete_share(request: web.Request) -> web.Response:
    si, share, _ = await _held_by_uploader(request, "delete it")
    store = request.app[SHARE_HOLDER].store

    def delete() -> None:
        store.delete_share(si, share)
        store.forget_manifest_if_unused(si)

    await _in_pool(request, delete)
    return web.Response(status=204)


@routes.post("/v1/peer/shares/{si}/{share}/renew")
async def renew_share(request: web.Request) -> web.Response:
    si, share, _ = await _held_by_uploader(request, "renew its lease")
    body = json_object(await request.read(), 'send {"lease_expiry": <unix seconds>}')
    # Up to the longest lease from now, with a day for the clocks of two nodes to differ.
    lease_expiry = _json_int(body, "lease_expiry", maximum=int(time.time()) + leases.MAX_DURATION + 86400)
    done = await _in_pool(request, request.app[SHARE_HOLDER].store.renew, si, lease_expiry, (share,))
    if share not in done:  # collected or deleted since it was looked up
        raise ShareNotFound(f"this node holds no share {share} of {si.hex()[:16]}")
    previous, new = done[share]
    if new != previous:
        log.info("lease of share %d of %s renewed to %d (was %d)", share, si.hex()[:16], new, previous)
    return web.json_response({"share": share, "lease_expiry": new, "previous": previous})


@routes.post("/v1/peer/shares/{si}/{share}/audit")
async def audit_share(request: web.Request) -> web.Response:
    si, share, meta = await _held(request)
    body = json_object(await request.read(), 'send {"segment": <block index>}')
    segment = _json_int(body, "segment")
    if segment >= meta.segment_count:
        raise RangeNotSatisfiable(f"share {share} has {meta.segment_count} blocks, not a block {segment}",
                                  segment_count=meta.segment_count)
    block = await _in_pool(request, request.app[SHARE_HOLDER].store.get_block, si, share, segment)
    if block is None:
        raise ShareNotFound(f"block {segment} of share {share} is missing on this node", segment=segment)
    path = proof(list(meta.block_hashes), segment)
    return web.json_response({"block": block.hex(), "proof": [[left, h.hex()] for left, h in path]})


__all__ = ["SHARE_HOLDER", "ShareHolder", "block_lengths", "parse_manifest", "setup", "split_blocks"]
