"""A request body as it arrives, checked on its way: the signed SHA-256 (x-amz-content-sha256), Content-MD5, the
checksum a client sent (x-amz-checksum-*, in a header or an aws-chunked trailer: core/checksums.py), and aws-chunked
chunk and trailer signatures.  A body that fails a check never reaches the store whole: its last piece is held back
until every check has passed, so the put is cut short and aborted by the node.

A body goes on in pieces of 256 KiB (PIECE), the most a put reads at once: the node's own put takes them as they
are, not cut again (`xsc s3 serve` joins them into larger writes to its node).  The digests of a large body (MD5 for
the ETag and Content-MD5, SHA-256 for a signed payload) are taken on a thread of the front's (`Digests`), beside the
loop that reads the body and feeds the put: hashlib lets go of the GIL over a buffer that large, and on the loop they
were most of its time for a large PutObject, which on the node's own listener is the node's loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections import deque
from typing import AsyncIterator, Protocol

from aiohttp import StreamReader

from ..errors import S3Error
from ..tasks import Workers
from .core import sigv4
from .core.checksums import Checksum

# A body goes on in pieces of this much (the last may be less): the most a put asks for at once (storage/gateway_put.py
# PIECE), and below the size glibc maps on its own (heap.MMAP_THRESHOLD), so a piece joined costs no page faults.
PIECE = 256 * 1024
BATCH = 1024 * 1024  # bytes of a body hashed in one turn of the digest thread
AHEAD = 2  # batches of one body handed to the digest thread and not yet hashed, at most: what it holds of the body


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


def _update(pairs: list[tuple[_Hash, bytes]]) -> None:
    for digest, piece in pairs:
        digest.update(piece)


class Digests:
    """Hashes fed pieces of a body in order: on the loop while the body is small (a hand-off to a thread costs more
    than hashing a few KiB), then, once BATCH bytes are waiting, on the digest thread (`workers`, one thread: its
    calls run in the order they were handed over) a batch at a time, at most AHEAD batches behind the body."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self._batch: list[tuple[_Hash, bytes]] = []
        self._bytes = 0
        self._ahead: deque[asyncio.Future] = deque()

    async def add(self, digest: _Hash, piece: bytes) -> None:
        self._batch.append((digest, piece))
        self._bytes += len(piece)
        if self._bytes >= BATCH:
            while len(self._ahead) >= AHEAD:
                await self._ahead.popleft()
            self._ahead.append(self.workers.run(_update, self._batch))
            self._batch, self._bytes = [], 0

    async def done(self) -> None:
        """Every piece added so far hashed."""
        while self._ahead:
            await self._ahead.popleft()
        batch, self._batch, self._bytes = self._batch, [], 0
        _update(batch)

    def abandon(self) -> None:
        """What is on the thread runs to its end (nobody waits for it); nothing more is hashed."""
        self._ahead.clear()
        self._batch, self._bytes = [], 0


async def body(content: StreamReader, auth: sigv4.Verified, headers, declared: int | None, idle_timeout: float,
               workers: Workers, *, md5: _Hash | None = None, checksum: Checksum | None = None,
               taken: Checksum | None = None) -> AsyncIterator[bytes]:
    """The body's pieces as they arrive, checked before its last is let through (module docstring).  A piece goes on
    as it comes while the declared size says more is to come (else, size unknown, once the next one came); none is
    kept here once let through, so a put waiting for its turn holds only what it read (storage/put_budget.py).
    `md5`: the MD5 of the body (decoded, if aws-chunked), for the caller's ETag; `checksum`: the checksum the body
    must match (its value, once checked, for the caller's record); `taken`: another the caller keeps, with nothing
    to check it against (a multipart upload's part's in its upload's algorithm, beside the one the part was sent
    with)."""
    chunked = auth.payload_hash.startswith("STREAMING-") or "aws-chunked" in headers.get("Content-Encoding", "")
    decoder = sigv4.ChunkDecoder(auth) if chunked else None
    if checksum is not None and checksum.in_trailer and decoder is None:
        raise S3Error("x-amz-trailer announces a trailer, which only an aws-chunked body has",
                      s3_code="InvalidRequest", status=400)
    want_sha = auth.payload_hash.lower() if len(auth.payload_hash) == 64 else None
    sha = hashlib.sha256() if want_sha else None
    md5 = md5 if md5 is not None else hashlib.md5()
    content_md5 = headers.get("Content-MD5")
    digests = Digests(workers)
    received, held = 0, b""  # the piece held back until the body is checked
    try:
        while piece := await _piece(content, idle_timeout):
            if sha is not None:
                await digests.add(sha, piece)  # the body as sent: aws-chunked framing and all
            if decoder is not None:
                piece = decoder.feed(piece)
                if not piece:
                    continue
            received += len(piece)
            if declared is not None and received > declared:  # an aws-chunked body decoding to more than it said
                raise S3Error(f"the body holds more bytes than the {declared:,} declared", s3_code="IncompleteBody",
                              status=400)
            await digests.add(md5, piece)
            if checksum is not None:
                await digests.add(checksum.digest, piece)  # type: ignore[arg-type]
            if taken is not None and taken is not checksum:
                await digests.add(taken.digest, piece)  # type: ignore[arg-type]
            if declared is not None and received < declared:
                if held:
                    yield held
                held = b""
                yield piece
            else:
                if held:
                    yield held
                held = piece
            piece = b""  # not referenced here while the put uses it
        await digests.done()
    except BaseException:
        digests.abandon()
        raise
    if declared is not None and received < declared:
        raise S3Error(f"the body holds fewer bytes than the {declared:,} declared", s3_code="IncompleteBody",
                      status=400)
    trailers = decoder.finish() if decoder is not None else {}
    if sha is not None and sha.hexdigest() != want_sha:
        raise S3Error("the body's SHA-256 does not match x-amz-content-sha256",
                      s3_code="XAmzContentSHA256Mismatch", status=400)
    if content_md5 and base64.b64encode(md5.digest()).decode() != content_md5.strip():
        raise S3Error("the body's MD5 does not match Content-MD5", s3_code="BadDigest", status=400)
    if checksum is not None:
        checksum.check(trailers)
    if held:
        yield held


async def _piece(content: StreamReader, idle_timeout: float) -> bytes:
    """The body's next PIECE bytes, fewer only at its end: what aiohttp read off the socket (often a few KiB a read),
    joined, so that what follows (the checks, the put's reads) runs once per 256 KiB, not once per socket read.  A
    client that sends nothing for `idle_timeout` seconds is answered RequestTimeout rather than left holding its put
    open."""
    parts: list[bytes] = []
    size = 0
    while size < PIECE:
        part = content.read_nowait(PIECE - size)  # what is here already: no timer to set and cancel
        if not part and not content.at_eof():
            try:
                async with asyncio.timeout(idle_timeout):
                    part = await content.read(PIECE - size)
            except TimeoutError:
                raise S3Error(f"the body stalled: no bytes for {idle_timeout:g} s", s3_code="RequestTimeout",
                              status=400) from None
        if not part:
            break
        parts.append(part)
        size += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)
