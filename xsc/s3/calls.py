"""One S3 request, authenticated (Call), and what every operation of the front reads of it or answers with."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..buckets.core import names
from ..errors import S3Error
from .core import checksums, sigv4, versions
from .link import NodeLink


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


async def object_version(node: NodeLink, bucket: str, key: str, version: str | None, user: str) -> dict:
    """The record of the object a read names (`version`: its `versionId`, None if it names none), the user's access to
    the bucket judged first: a caller who may not read the bucket is denied whatever version it names."""
    if versions.is_object(version):
        return await node.object(bucket, key, user)
    await node.bucket(bucket, user)
    raise versions.absent(key, version)


def declared_size(call: Call) -> int | None:
    """The bytes the body holds (an aws-chunked body: decoded), or None where a streamed body does not say."""
    headers = call.request.headers
    if "x-amz-decoded-content-length" in headers:
        try:
            return int(headers["x-amz-decoded-content-length"])
        except ValueError:
            raise S3Error("bad x-amz-decoded-content-length", s3_code="InvalidArgument", status=400) from None
    if call.auth.payload_hash.startswith("STREAMING-"):
        return None
    return call.request.content_length


def keep_checksum(record: dict, checksum: checksums.Checksum | None) -> None:
    """The body's checksum, checked, kept among the object's stored headers (given back only when asked for), in
    place of one the headers held (a copy's source's)."""
    if checksum is not None:
        kept = {k: v for k, v in record["headers"].items() if not k.startswith(checksums.PREFIX)}
        record["headers"] = {**kept, checksum.header: checksum.value}


def checksum_headers(checksum: checksums.Checksum | None) -> dict[str, str]:
    return {} if checksum is None else {checksum.header: checksum.value}


def integer(text: str | None, default: int, name: str) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise S3Error(f"{name} must be an integer, got {text!r}", s3_code="InvalidArgument", status=400) from None
    if value < 0:
        raise S3Error(f"{name} must not be negative", s3_code="InvalidArgument", status=400)
    return value


def encoding_of(call: Call) -> str | None:
    """The listing's `encoding-type`: "url" (names in the answer percent-encoded, for keys XML cannot carry) or None."""
    encoding = call.query.get("encoding-type") or None
    if encoding not in (None, "url"):  # the one encoding S3 knows: another would leave keys as sent, unsaid
        raise S3Error(f"Invalid Encoding Method specified in Request: encoding-type is url, not {encoding[:80]!r}",
                      s3_code="InvalidArgument", status=400, ArgumentName="encoding-type",
                      ArgumentValue=encoding[:80])
    return encoding


def xml_answer(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml")
