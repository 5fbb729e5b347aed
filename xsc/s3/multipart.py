"""The front's multipart uploads: CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
AbortMultipartUpload, ListParts and ListMultipartUploads.  A part is one XSC file, stored and recorded as a put's
body is (writes.py); the node keeps the uploads (the bucket index).

An upload's object gets a checksum, as S3's do: the one its CreateMultipartUpload asks for, else S3's default, a
FULL_OBJECT CRC64NVME.  Each part keeps its own in that algorithm (sent, checked, or taken of its bytes as they come,
beside the one it was sent with), with its size; Complete makes the object's of theirs (core/checksums.py:
`whole`), once the parts' it lists and a whole object's it sends hold."""

from __future__ import annotations

import hashlib
from typing import Awaitable, Callable, TypeVar

from aiohttp import web

from ..buckets.core import names
from ..errors import Forbidden, NoSuchBucket, NoSuchUpload, S3Error, XscError
from .calls import Call, checksum_headers, declared_size, encoding_of, integer, xml_answer
from .core import checksums, xml
from .core import headers as stored_headers
from .link import NodeLink
from .writes import Writes

T = TypeVar("T")


class Multipart:
    """The multipart operations of routing.TABLE."""

    OPERATIONS = ("create_upload", "upload_part", "complete_upload", "abort_upload", "list_parts", "list_uploads")

    def __init__(self, node: NodeLink, writes: Writes) -> None:
        self.node = node
        self.writes = writes

    async def create_upload(self, call: Call) -> web.Response:
        names.check_key(call.key)
        metadata = names.check_metadata(stored_headers.metadata(call.request.headers))
        kind = checksums.upload_checksum(call.request.headers)
        upload_id = await self.node.create_upload(call.bucket, call.key, call.user,
                                                  call.request.headers.get("Content-Type", ""), metadata,
                                                  stored_headers.stored(call.request.headers), kind)
        response = xml_answer(xml.initiate_multipart(call.bucket, call.key, upload_id))
        if not kind["default"]:
            response.headers.update({"x-amz-checksum-algorithm": kind["algorithm"].upper(),
                                     "x-amz-checksum-type": kind["type"]})
        return response

    async def upload_part(self, call: Call) -> web.Response:
        number = part_number_of(call)
        checksums.wanted(call.request.headers)  # a checksum header that makes no sense: refused before all else
        upload = await upload_of(self.node, call)
        upload_id = upload["id"]
        checksum, kept = checksums.for_part(call.request.headers, upload)
        md5 = hashlib.md5()

        async def recorded(cap: str) -> list[str]:
            return await self.node.put_part(upload_id, number, call.user, cap, int(cap.rsplit(":", 1)[1]),
                                            md5.hexdigest(), checksums.part_checksums(checksum, kept))

        try:
            async with self.writes.gate.write() as write:
                garbage = await self.writes.store(call, write,
                                                  self.writes.body(call, md5=md5, checksum=checksum, taken=kept),
                                                  declared_size(call), f"{call.bucket}/{call.key}#{upload_id}.{number}",
                                                  recorded)
        except XscError as err:  # its upload ended meanwhile
            await self.writes.collect_refused(err)
            raise
        await self.writes.collect(garbage)
        shown = checksum if checksum is not None or (upload.get("checksum") or {}).get("default") else kept
        return web.Response(status=200, headers={"ETag": xml.quoted(md5.hexdigest()), **checksum_headers(shown)})

    async def complete_upload(self, call: Call) -> web.Response:
        """Complete an upload; one completed already answers as it did (the node keeps what it answered)."""
        listed = xml.parse_complete_checksums(await self.writes.small_body(call))
        if len(listed) > names.MAX_PARTS:  # more are not numbered 1 to MAX_PARTS in ascending order, each once
            raise S3Error(f"a CompleteMultipartUpload lists 1 to {names.MAX_PARTS} parts, not {len(listed)}",
                          s3_code="MalformedXML", status=400)
        parts = [(number, etag) for number, etag, _ in listed]
        try:
            upload: dict | None = await upload_of(self.node, call)
        except NoSuchUpload:
            upload = None  # completed already (the node answers as it did), or never begun (the node says so)
        whole = None if upload is None else _whole(upload, listed, call.request.headers)
        if upload is not None:
            _check_size(call.request.headers, upload, parts)
        record, garbage = await named(self.node, call, "write", lambda: self.node.complete(
            upload_id_of(call), call.user, parts, call.bucket, call.key,
            stored_headers.complete_condition(call.request.headers), whole))
        await self.writes.collect(garbage)
        return xml_answer(xml.complete_multipart(f"/{call.bucket}/{call.key}", call.bucket, call.key, record["etag"],
                                                 stored_headers.checksum_headers(record)))

    async def abort_upload(self, call: Call) -> web.Response:
        await upload_of(self.node, call, names.INITIATOR)
        await self.writes.collect(await named(self.node, call, names.INITIATOR,
                                              lambda: self.node.abort(upload_id_of(call), call.user)))
        return web.Response(status=204)

    async def list_parts(self, call: Call) -> web.Response:
        upload = await upload_of(self.node, call, names.INITIATOR)  # the bucket's access judged first
        encoding = encoding_of(call)
        marker = integer(call.query.get("part-number-marker"), 0, "part-number-marker")
        max_parts = min(integer(call.query.get("max-parts"), 1000, "max-parts"), 1000)
        parts = [p for p in upload["parts"] if p["number"] > marker]
        kind = upload.get("checksum")
        if kind is None or kind["default"]:
            # S3 lists neither the algorithm nor the parts' checksums of an upload begun without an algorithm: a
            # Complete that lists a part's checksum is InvalidPart, so a client that copies ListParts into its
            # Complete (boto3's and minio-py's do) would be refused what it was shown.
            kind, parts = None, [{**p, "checksums": {}} for p in parts]
        return xml_answer(xml.list_parts(call.bucket, call.key, upload["id"], parts[:max_parts], marker=marker,
                                         max_parts=max_parts, truncated=len(parts) > max_parts,
                                         owner=upload.get("user") or call.user, checksum=kind, encoding=encoding))

    async def list_uploads(self, call: Call) -> web.Response:
        """A page of the bucket's uploads in progress, their keys rolled up by `delimiter` into common prefixes as
        ListObjects rolls up keys (listing.list_page: a common prefix counts as one upload against `max-uploads`); the
        node reads it from the markers on, no further than the page holds."""
        prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter", "")
        key_marker, id_marker = call.query.get("key-marker", ""), call.query.get("upload-id-marker", "")
        try:
            encoding = encoding_of(call)
            max_uploads = min(integer(call.query.get("max-uploads"), 1000, "max-uploads"), 1000)
        except S3Error:
            await self.node.bucket(call.bucket, call.user)  # the bucket's access is judged before the arguments
            raise
        page = await self.node.uploads(call.bucket, call.user, prefix=prefix, delimiter=delimiter,
                                       max_uploads=max_uploads, key_marker=key_marker, id_marker=id_marker)
        return xml_answer(xml.list_uploads(call.bucket, page, prefix=prefix, delimiter=delimiter,
                                           max_uploads=max_uploads, owner=call.user, key_marker=key_marker,
                                           id_marker=id_marker, encoding=encoding))


async def upload_of(node: NodeLink, call: Call, need: str = "write") -> dict:
    """The upload the call names (`uploadId`), NoSuchUpload unless it is one of the call's bucket and key; `need`: as
    NodeLink.upload's."""
    upload = await named(node, call, need, lambda: node.upload(upload_id_of(call), call.user, need))
    if upload["bucket"] != call.bucket or upload["key"] != call.key:
        await node.bucket(call.bucket, call.user, _bucket_need(need))
        raise NoSuchUpload("no multipart upload with that id for this object", upload_id=upload["id"])
    return upload


async def named(node: NodeLink, call: Call, need: str, step: Callable[[], Awaitable[T]]) -> T:
    """`step()`, a call of the node's about the upload the call names, its refusals held to the bucket the call names.
    The node judges a user's access by the bucket the upload is of: a refusal naming another bucket (the upload id of
    one the user may not use, or of one deleted since its upload was completed, named through its own) is NoSuchUpload, so that no multipart call tells a user a thing
    of a bucket it may not use, not even that an upload id is one there.  A user that may not use the call's bucket is
    told AccessDenied rather than NoSuchUpload, as S3 judges the bucket's access first."""
    try:
        return await step()
    except (Forbidden, NoSuchBucket) as err:
        if err.details.get("bucket") == call.bucket:
            raise
        await node.bucket(call.bucket, call.user, _bucket_need(need))
        raise NoSuchUpload("no multipart upload with that id for this object") from None
    except NoSuchUpload:
        await node.bucket(call.bucket, call.user, _bucket_need(need))
        raise


def _bucket_need(need: str) -> str:
    """What a user needs of the call's bucket to hear that an upload is not there: to list its parts or abort it, that
    it may read the bucket."""
    return "read" if need == names.INITIATOR else need


def _whole(upload: dict, listed: list[tuple[int, str, dict[str, str]]], headers) -> dict | None:
    """The object's checksum as Complete makes it of the parts it lists ({"value", "parts"}, for the node to keep if
    those parts are still the upload's): None where a part is missing or not the one listed (the node refuses the
    Complete), or keeps no checksum (its upload was recorded without one).  A part's checksum listed but not its own,
    or listed at all for an upload begun without an algorithm, is InvalidPart; a whole object's sent but not the one
    made is BadDigest."""
    kind = upload.get("checksum")
    if kind is None or kind["default"]:
        checksums.check_none_listed([(number, sums) for number, _, sums in listed])
    if kind is None:
        checksums.check_complete(headers, None, None)
        return None
    numbers = [number for number, _, _ in listed]
    if not kind["default"] and numbers != list(range(1, len(numbers) + 1)):
        raise S3Error("the parts of an upload with checksums must be numbered 1, 2, 3, ... with none left out",
                      s3_code="InvalidPartOrder", status=400)
    have = {p["number"]: p for p in upload["parts"]}
    checksums.check_listed([(number, sums) for number, _, sums in listed], have, kind)
    used = [have.get(number) for number, _, _ in listed]
    if any(p is None or p["etag"] != etag for p, (_, etag, _) in zip(used, listed)):
        return None
    value = checksums.whole(kind, used)  # type: ignore[arg-type]
    checksums.check_complete(headers, kind, value)
    if value is None:
        return None
    return {"value": value, "parts": [p["checksums"][kind["algorithm"]] for p in used]}  # type: ignore[index]


def _check_size(headers, upload: dict, parts: list[tuple[int, str]]) -> None:
    """`x-amz-mp-object-size`, the object's size a Complete may send: 400 InvalidRequest unless the parts it lists
    hold that many bytes (a part missing: the node refuses the Complete)."""
    sent = headers.get("x-amz-mp-object-size")
    have = {p["number"]: p["size"] for p in upload["parts"]}
    if sent is None or any(number not in have for number, _ in parts):
        return
    size = sum(have[number] for number, _ in parts)
    if sent.strip() != str(size):
        raise S3Error(f"x-amz-mp-object-size is {sent!r}, but the parts listed hold {size} bytes",
                      s3_code="InvalidRequest", status=400)


def part_number_of(call: Call) -> int:
    number = integer(call.query.get("partNumber"), 0, "partNumber")
    if not 1 <= number <= names.MAX_PARTS:
        raise S3Error(f"Part number must be an integer between 1 and {names.MAX_PARTS}, inclusive (not {number})",
                      s3_code="InvalidArgument", status=400, ArgumentName="partNumber", ArgumentValue=str(number))
    return number


def upload_id_of(call: Call) -> str:
    upload_id = call.query.get("uploadId", "")
    if not upload_id.isalnum():
        raise NoSuchUpload("no multipart upload with that id")
    return upload_id
