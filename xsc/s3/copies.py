"""The front's copies: CopyObject and UploadPartCopy.  The bytes copied are read from the source's files and stored
as a new file, as a put's body is (writes.py), their MD5 and checksum taken on the way."""

from __future__ import annotations

import hashlib
from typing import AsyncIterator, Callable

from aiohttp import web

from ..buckets.core import names
from ..errors import S3Error, XscError
from ..units import is_whole_number
from .bodies import ObjectBodies
from .calls import Call, checksum_headers, keep_checksum, object_version, xml_answer
from .core import checksums, sigv4, versions, xml
from .core import headers as stored_headers
from .link import NodeLink
from .multipart import part_number_of, upload_of
from .writes import Writes


class Copies:
    """The copy operations of routing.TABLE."""

    OPERATIONS = ("copy_object", "upload_part_copy")

    def __init__(self, node: NodeLink, writes: Writes, bodies: ObjectBodies, clock: Callable[[], float]) -> None:
        self.node = node
        self.writes = writes
        self.bodies = bodies
        self.clock = clock

    async def copy_object(self, call: Call) -> web.Response:
        names.check_key(call.key)
        headers = call.request.headers
        src_bucket, src_key, version = _copy_source(headers)
        directive = headers.get("x-amz-metadata-directive", "COPY").upper()
        # NoSuchBucket, AccessDenied before the copy is judged: a user that may not write the bucket hears nothing of
        # what is in it (a condition met or not), nor of its copy's other faults
        await self.node.bucket(call.bucket, call.user, "write")
        if (src_bucket, src_key) == (call.bucket, call.key) and directive != "REPLACE" and versions.is_object(version):
            raise S3Error("This copy request is illegal because it is trying to copy an object to itself without "
                          "changing the object's metadata (x-amz-metadata-directive: REPLACE)",
                          s3_code="InvalidRequest", status=400)
        record = await object_version(self.node, src_bucket, src_key, version, call.user)
        stored_headers.copy_condition(headers, record["etag"], record["modified"])
        await self.writes.small_body(call)
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
            keep_checksum(new, checksum)
            return await self.node.record(call.bucket, call.key, call.user, new)

        try:
            async with self.writes.gate.write() as write:
                garbage = await self.writes.store(call, write, data, record["size"], f"{call.bucket}/{call.key}",
                                                  recorded)
        except XscError as err:
            await self.writes.collect_refused(err)
            raise
        await self.writes.collect(garbage)
        return xml_answer(xml.copy_object(new["etag"], new["modified"]))

    async def upload_part_copy(self, call: Call) -> web.Response:
        """UploadPartCopy: a part made of an object's bytes (`x-amz-copy-source-range`: some of them), as S3's
        managed copies (boto3's `copy`, `aws s3 cp` between buckets) copy an object larger than a part.  The part's
        checksum in its upload's algorithm is taken of the bytes copied, as an UploadPart's is of its body."""
        number = part_number_of(call)
        headers = call.request.headers
        src_bucket, src_key, version = _copy_source(headers)
        upload = await upload_of(self.node, call)
        upload_id = upload["id"]
        kind = upload.get("checksum")
        checksum = None if kind is None else checksums.Checksum(kind["algorithm"], None, taken=True)
        record = await object_version(self.node, src_bucket, src_key, version, call.user)
        stored_headers.copy_condition(headers, record["etag"], record["modified"])
        first, last = _copy_range(headers.get("x-amz-copy-source-range"), record["size"])
        await self.writes.small_body(call)
        md5, size = hashlib.md5(), last - first + 1

        async def recorded(cap: str) -> list[str]:
            return await self.node.put_part(upload_id, number, call.user, cap, size, md5.hexdigest(),
                                            checksums.part_checksums(checksum))

        try:
            async with self.writes.gate.write() as write:
                garbage = await self.writes.store(call, write, _copied(self.bodies, record, first, last, md5, checksum),
                                                  size, f"{call.bucket}/{call.key}#{upload_id}.{number}", recorded)
        except XscError as err:
            await self.writes.collect_refused(err)
            raise
        await self.writes.collect(garbage)
        shown = checksum if kind is not None and not kind.get("default") else None
        return xml_answer(xml.copy_object(md5.hexdigest(), self.clock(), root="CopyPartResult",
                                          checksum=checksum_headers(shown)))


def _copy_source(headers) -> tuple[str, str, str | None]:
    """The bucket, key and version (None if it names none) `x-amz-copy-source` names: BUCKET/KEY URL-encoded (its `/`
    encoded or not, after a `/` or not), then a version as `?versionId=ID`.  The value is split at its first `?`
    before it is decoded, as S3 reads it: a `?` of the key's own comes encoded (%3F, as every SDK sends it) and stays
    in the key.  The version is judged once the source's access is (`object_version`)."""
    encoded, question, query = headers["x-amz-copy-source"].partition("?")
    src_bucket, _, src_key = sigv4.decoded(encoded).lstrip("/").partition("/")
    if not src_bucket or not src_key:
        raise S3Error("x-amz-copy-source must be BUCKET/KEY, URL-encoded", s3_code="InvalidArgument", status=400)
    names.check_bucket(src_bucket)  # it goes into the node's API paths, as the request's own bucket does
    names.check_text(src_key, "the copy source's key")
    if question and not query.startswith("versionId="):
        raise S3Error("x-amz-copy-source is BUCKET/KEY, URL-encoded (a ? in the key as %3F), then ?versionId=ID or "
                      "nothing", s3_code="InvalidArgument", status=400)
    return src_bucket, src_key, sigv4.decoded(query.removeprefix("versionId=")) if question else None


def _copy_range(text: str | None, size: int) -> tuple[int, int]:
    """The bytes an UploadPartCopy takes of its source: `bytes=FIRST-LAST` within it, or all of it."""
    if text is None:
        return 0, size - 1
    first, dash, last = text.strip().removeprefix("bytes=").partition("-")
    if not (text.strip().startswith("bytes=") and dash and is_whole_number(first) and is_whole_number(last)):
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
