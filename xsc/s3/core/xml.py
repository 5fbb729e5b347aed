"""S3's XML: the answers the front sends, the two request bodies it reads, and its error bodies.

Pure.  Answers are built as text (escaped), which is both simple and fast for listings of thousands of
keys; request bodies (CompleteMultipartUpload, Delete) are parsed with a size bound and no DTDs.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Iterable
from xml.sax.saxutils import escape

from ...errors import S3Error, XscError
from ...units import is_whole_number

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'
CHECKSUMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")  # as S3's XML spells its checksums
MAX_BODY = 2 * 1024 * 1024  # a Delete of 1000 keys or a Complete of 10000 parts fits well within

# XSC error code (xsc/errors.py) -> S3 code and status.
S3_CODES: dict[str, tuple[str, int]] = {
    "no-such-bucket": ("NoSuchBucket", 404),
    "no-such-key": ("NoSuchKey", 404),
    "no-such-upload": ("NoSuchUpload", 404),
    "bucket-not-empty": ("BucketNotEmpty", 409),
    "bucket-exists": ("BucketAlreadyOwnedByYou", 409),
    "bucket-taken": ("BucketAlreadyExists", 409),
    "conditional-conflict": ("ConditionalRequestConflict", 409),
    "precondition-failed": ("PreconditionFailed", 412),
    "too-many-buckets": ("TooManyBuckets", 400),
    # S3 bounds no account's uploads: the code Ceph's RGW answers a user past its quota with (not retried)
    "too-many-uploads": ("QuotaExceeded", 403),
    "too-many-grants": ("InvalidArgument", 400),  # S3's ACLs have no code of their own for too many grants
    "invalid-bucket-name": ("InvalidBucketName", 400),
    "invalid-part": ("InvalidPart", 400),
    "invalid-part-order": ("InvalidPartOrder", 400),
    "entity-too-small": ("EntityTooSmall", 400),
    "range-not-satisfiable": ("InvalidRange", 416),
    # More than the node's storage.capacity (or the providers' offers) has room for: S3 has no code for it.  Ceph's
    # RGW answers a put over a user's or bucket's size quota QuotaExceeded 403, which SDKs do not retry (they retry
    # 500, 502, 503 and 504): the client is told at once, in a message saying what to free or raise, where a retry
    # would only meet the same refusal after its backoff.
    "storage-full": ("QuotaExceeded", 403),
    # The node's disk has no room for the object (or filled up as it was written): S3 has no code for it either.  507
    # Insufficient Storage, as MinIO answers a full drive with: SDKs do not retry it (they retry 500, 502, 503, 504),
    # so the client is told at once; the message says to free space or use another node.
    "disk-full": ("InsufficientCapacity", 507),
    "insufficient-credit": ("AccessDenied", 403),
    "node-credit-exhausted": ("AccountProblem", 403),  # the node's account, not the user's: not retried
    "no-deal": ("ServiceUnavailable", 503),
    "not-enough-shares": ("ServiceUnavailable", 503),
    "node-not-running": ("ServiceUnavailable", 503),
    "node-stopping": ("ServiceUnavailable", 503),  # SDKs retry it: the node is back, or another answers
    "payload-too-large": ("EntityTooLarge", 400),
    "quota-exceeded": ("SlowDown", 503),  # past a rate limit: SDKs back off and retry on SlowDown
    "not-found": ("NoSuchKey", 404),
    # The index refusing a capability the front or its records passed on: the service's fault, not the request's
    "invalid-capability": ("InternalError", 500),
}


def s3_code_of(err: XscError) -> tuple[str, int]:
    """The S3 code and status of an error (a node error that has no S3 meaning is an InternalError 500,
    a bad request an InvalidRequest 400)."""
    if isinstance(err, S3Error):
        return err.s3_code, err.status
    if "s3_code" in err.details:
        return err.details["s3_code"], 400
    if err.code in S3_CODES:
        return S3_CODES[err.code]
    from ...errors import BadRequest, Conflict, Forbidden, NotFound, PeerError, Unauthorized

    for cls, answer in ((BadRequest, ("InvalidRequest", 400)), (NotFound, ("NoSuchKey", 404)),
                        (Conflict, ("OperationAborted", 409)), (Unauthorized, ("AccessDenied", 403)),
                        (Forbidden, ("AccessDenied", 403)), (PeerError, ("ServiceUnavailable", 503))):
        if isinstance(err, cls):
            return answer
    return "InternalError", 500


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def e(value: object) -> str:
    """Text for an XML answer: escaped, and any character XML 1.0 cannot carry (a NUL a client sent, echoed in an
    error's Resource) replaced by U+FFFD, so the answer stays well-formed."""
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def iso_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def quoted(etag: str) -> str:
    return f'"{etag}"'


def error(code: str, message: str, resource: str = "", request_id: str = "", **extra: str) -> bytes:
    fields = "".join(f"<{k}>{e(v)}</{k}>" for k, v in extra.items())
    return (f"{HEADER}<Error><Code>{e(code)}</Code><Message>{e(message)}</Message>"
            f"<Resource>{e(resource)}</Resource><RequestId>{e(request_id)}</RequestId>{fields}</Error>").encode()


def list_buckets(buckets: Iterable[dict], owner: str, *, continuation: str = "", prefix: str | None = None) -> bytes:
    # S3 gives every bucket a date, which clients parse (the AWS CLI prints it): one not known (None) is the epoch.
    items = "".join(f"<Bucket><Name>{e(b['name'])}</Name><CreationDate>{iso_date(b['created'] or 0)}</CreationDate>"
                    "</Bucket>" for b in buckets)
    more = f"<ContinuationToken>{e(continuation)}</ContinuationToken>" if continuation else ""
    more += f"<Prefix>{e(prefix)}</Prefix>" if prefix is not None else ""
    return (f'{HEADER}<ListAllMyBucketsResult xmlns="{NS}"><Owner><ID>{e(owner)}</ID>'
            f"<DisplayName>{e(owner)}</DisplayName></Owner><Buckets>{items}</Buckets>{more}</ListAllMyBucketsResult>"
            ).encode()


def _maybe_encode(text: str, encoding: str | None) -> str:
    if encoding == "url":
        from urllib.parse import quote

        return quote(text, safe="/")
    return text


def list_objects_v2(bucket: str, page: dict, *, prefix: str, delimiter: str, max_keys: int,
                    start_after: str = "", continuation: str | None = None, encoding: str | None = None,
                    fetch_owner: bool = False, owner: str = "") -> bytes:
    """A ListBucketResult of a page from xsc.buckets.core.listing.list_page."""
    parts = [f'{HEADER}<ListBucketResult xmlns="{NS}"><Name>{e(bucket)}</Name>'
             f"<Prefix>{e(_maybe_encode(prefix, encoding))}</Prefix>"
             f"<KeyCount>{len(page['contents']) + len(page['prefixes'])}</KeyCount><MaxKeys>{max_keys}</MaxKeys>"]
    if delimiter:
        parts.append(f"<Delimiter>{e(_maybe_encode(delimiter, encoding))}</Delimiter>")
    if encoding:
        parts.append(f"<EncodingType>{e(encoding)}</EncodingType>")
    parts.append(f"<IsTruncated>{'true' if page['truncated'] else 'false'}</IsTruncated>")
    if continuation is not None:  # the token asked for (an empty one is refused before: server.py)
        parts.append(f"<ContinuationToken>{e(continuation)}</ContinuationToken>")
    if page["truncated"]:
        parts.append(f"<NextContinuationToken>{e(page['next'])}</NextContinuationToken>")
    if start_after:
        parts.append(f"<StartAfter>{e(_maybe_encode(start_after, encoding))}</StartAfter>")
    owner_xml = f"<Owner><ID>{e(owner)}</ID><DisplayName>{e(owner)}</DisplayName></Owner>" if fetch_owner else ""
    for key, obj in page["contents"]:
        parts.append(f"<Contents><Key>{e(_maybe_encode(key, encoding))}</Key>"
                     f"<LastModified>{iso_date(obj['modified'])}</LastModified>"
                     f"<ETag>&quot;{e(obj['etag'])}&quot;</ETag><Size>{obj['size']}</Size>{owner_xml}"
                     f"<StorageClass>STANDARD</StorageClass></Contents>")
    for common in page["prefixes"]:
        parts.append(f"<CommonPrefixes><Prefix>{e(_maybe_encode(common, encoding))}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def list_objects_v1(bucket: str, page: dict, *, prefix: str, delimiter: str, max_keys: int, marker: str,
                    encoding: str | None = None, owner: str = "") -> bytes:
    """ListObjects (version 1), which s3cmd and older tools still use: markers instead of tokens.  Its Prefix
    is echoed as given even with encoding-type=url (S3 encodes only Delimiter, markers and keys there)."""
    parts = [f'{HEADER}<ListBucketResult xmlns="{NS}"><Name>{e(bucket)}</Name>'
             f"<Prefix>{e(prefix)}</Prefix><Marker>{e(_maybe_encode(marker, encoding))}</Marker>"
             f"<MaxKeys>{max_keys}</MaxKeys>"]
    if delimiter:
        parts.append(f"<Delimiter>{e(_maybe_encode(delimiter, encoding))}</Delimiter>")
    if encoding:
        parts.append(f"<EncodingType>{e(encoding)}</EncodingType>")
    parts.append(f"<IsTruncated>{'true' if page['truncated'] else 'false'}</IsTruncated>")
    if page["truncated"]:
        parts.append(f"<NextMarker>{e(_maybe_encode(page['last'], encoding))}</NextMarker>")
    for key, obj in page["contents"]:
        parts.append(f"<Contents><Key>{e(_maybe_encode(key, encoding))}</Key>"
                     f"<LastModified>{iso_date(obj['modified'])}</LastModified>"
                     f"<ETag>&quot;{e(obj['etag'])}&quot;</ETag><Size>{obj['size']}</Size>"
                     f"<Owner><ID>{e(owner)}</ID><DisplayName>{e(owner)}</DisplayName></Owner>"
                     f"<StorageClass>STANDARD</StorageClass></Contents>")
    for common in page["prefixes"]:
        parts.append(f"<CommonPrefixes><Prefix>{e(_maybe_encode(common, encoding))}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def initiate_multipart(bucket: str, key: str, upload_id: str) -> bytes:
    return (f'{HEADER}<InitiateMultipartUploadResult xmlns="{NS}"><Bucket>{e(bucket)}</Bucket><Key>{e(key)}</Key>'
            f"<UploadId>{e(upload_id)}</UploadId></InitiateMultipartUploadResult>").encode()


def complete_multipart(location: str, bucket: str, key: str, etag: str, checksum: dict[str, str] | None = None
                       ) -> bytes:
    """`checksum`: the object's (checksum_elements)."""
    return (f'{HEADER}<CompleteMultipartUploadResult xmlns="{NS}"><Location>{e(location)}</Location>'
            f"<Bucket>{e(bucket)}</Bucket><Key>{e(key)}</Key><ETag>&quot;{e(etag)}&quot;</ETag>"
            f"{checksum_elements(checksum or {})}</CompleteMultipartUploadResult>").encode()


def checksum_elements(headers: dict[str, str]) -> str:
    """Checksums as their headers name them (x-amz-checksum-crc32, x-amz-checksum-type), as S3's XML spells them:
    ChecksumCRC32, ChecksumType."""
    out = []
    for name, value in headers.items():
        suffix = name.lower().removeprefix("x-amz-checksum-")
        tag = "Checksum" + (suffix.upper() if suffix.upper() in CHECKSUMS else suffix.capitalize())
        out.append(f"<{tag}>{e(value)}</{tag}>")
    return "".join(out)


def copy_object(etag: str, modified: float, *, root: str = "CopyObjectResult",
                checksum: dict[str, str] | None = None) -> bytes:
    """A CopyObject's answer (a CopyPartResult: UploadPartCopy's, with the part's `checksum`)."""
    return (f'{HEADER}<{root} xmlns="{NS}"><LastModified>{iso_date(modified)}</LastModified>'
            f"<ETag>&quot;{e(etag)}&quot;</ETag>{checksum_elements(checksum or {})}</{root}>").encode()


def list_parts(bucket: str, key: str, upload_id: str, parts: list[dict], *, marker: int, max_parts: int,
               truncated: bool, owner: str, checksum: dict | None = None, encoding: str | None = None) -> bytes:
    """`checksum`: the upload's ({"algorithm", "type"}, of one begun with an algorithm); each part's checksums are
    those it keeps (`checksums`); `encoding` "url": the key percent-encoded."""
    items = "".join(f"<Part><PartNumber>{p['number']}</PartNumber><LastModified>{iso_date(p['modified'])}"
                    f"</LastModified><ETag>&quot;{e(p['etag'])}&quot;</ETag><Size>{p['size']}</Size>"
                    + checksum_elements({"x-amz-checksum-" + a: v for a, v in (p.get("checksums") or {}).items()})
                    + "</Part>" for p in parts)
    next_marker = parts[-1]["number"] if parts else marker
    kind = (f"<ChecksumAlgorithm>{e(checksum['algorithm'].upper())}</ChecksumAlgorithm>"
            f"<ChecksumType>{e(checksum['type'])}</ChecksumType>") if checksum else ""
    said = f"<EncodingType>{e(encoding)}</EncodingType>" if encoding else ""
    return (f'{HEADER}<ListPartsResult xmlns="{NS}"><Bucket>{e(bucket)}</Bucket>{said}'
            f"<Key>{e(_maybe_encode(key, encoding))}</Key><UploadId>{e(upload_id)}</UploadId>"
            f"<Initiator><ID>{e(owner)}</ID><DisplayName>{e(owner)}</DisplayName>"
            f"</Initiator><Owner><ID>{e(owner)}</ID><DisplayName>{e(owner)}</DisplayName></Owner>"
            f"<StorageClass>STANDARD</StorageClass><PartNumberMarker>{marker}</PartNumberMarker>"
            f"<NextPartNumberMarker>{next_marker}</NextPartNumberMarker><MaxParts>{max_parts}</MaxParts>"
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{kind}{items}</ListPartsResult>").encode()


def list_uploads(bucket: str, page: dict, *, prefix: str, delimiter: str, max_uploads: int, owner: str,
                 key_marker: str = "", id_marker: str = "", encoding: str | None = None) -> bytes:
    """A ListMultipartUploadsResult of a page from xsc.buckets.core.listing.list_page whose values are uploads.
    `owner`: the user an upload recorded without the user who began it is shown as begun by; `encoding` "url": keys,
    the prefix, the delimiter, the common prefixes and the key markers percent-encoded, as S3 answers."""
    def name(text: str) -> str:
        return e(_maybe_encode(text, encoding))

    uploads = [u for _, u in page["contents"]]
    items = "".join(f"<Upload><Key>{name(u['key'])}</Key><UploadId>{e(u['id'])}</UploadId>"
                    f"<Initiator><ID>{e(u.get('user') or owner)}</ID><DisplayName>{e(u.get('user') or owner)}"
                    f"</DisplayName></Initiator><Owner><ID>{e(u.get('user') or owner)}</ID><DisplayName>"
                    f"{e(u.get('user') or owner)}</DisplayName></Owner>"
                    f"<StorageClass>STANDARD</StorageClass><Initiated>{iso_date(u['created'])}</Initiated></Upload>"
                    for u in uploads)
    items += "".join(f"<CommonPrefixes><Prefix>{name(common)}</Prefix></CommonPrefixes>" for common in page["prefixes"])
    next_markers = ""
    if page["truncated"]:  # the page ended at a common prefix (no upload id to go on after) or at an upload
        ended_at_prefix = bool(page["prefixes"]) and page["prefixes"][-1] == page["last"]
        next_key, next_id = (page["last"], "") if ended_at_prefix else (uploads[-1]["key"], uploads[-1]["id"])
        next_markers = (f"<NextKeyMarker>{name(next_key)}</NextKeyMarker><NextUploadIdMarker>{e(next_id)}"
                        f"</NextUploadIdMarker>")
    said = f"<Delimiter>{name(delimiter)}</Delimiter>" if delimiter else ""
    said += f"<EncodingType>{e(encoding)}</EncodingType>" if encoding else ""
    return (f'{HEADER}<ListMultipartUploadsResult xmlns="{NS}"><Bucket>{e(bucket)}</Bucket>'
            f"<KeyMarker>{name(key_marker)}</KeyMarker><UploadIdMarker>{e(id_marker)}</UploadIdMarker>{next_markers}"
            f"<Prefix>{name(prefix)}</Prefix>{said}<MaxUploads>{max_uploads}</MaxUploads>"
            f"<IsTruncated>{'true' if page['truncated'] else 'false'}</IsTruncated>{items}</ListMultipartUploadsResult>"
            ).encode()


def delete_result(deleted: list[tuple[str, str | None]], errors: list[tuple[str, str | None, str, str]],
                  quiet: bool) -> bytes:
    """A DeleteObjects answer: the (key, version named) deleted, and the (key, version, code, message) refused."""
    items = "" if quiet else "".join(f"<Deleted><Key>{e(k)}</Key>{_version(v)}</Deleted>" for k, v in deleted)
    items += "".join(f"<Error><Key>{e(k)}</Key>{_version(v)}<Code>{e(c)}</Code><Message>{e(m)}</Message></Error>"
                     for k, v, c, m in errors)
    return f'{HEADER}<DeleteResult xmlns="{NS}">{items}</DeleteResult>'.encode()


def _version(version: str | None) -> str:
    return "" if version is None else f"<VersionId>{e(version)}</VersionId>"


def location(region: str) -> bytes:
    value = "" if region == "us-east-1" else e(region)
    return f'{HEADER}<LocationConstraint xmlns="{NS}">{value}</LocationConstraint>'.encode()


def versioning() -> bytes:
    return f'{HEADER}<VersioningConfiguration xmlns="{NS}"/>'.encode()


# --- request bodies ----------------------------------------------------------------
def _parse(body: bytes) -> ET.Element:
    if len(body) > MAX_BODY:
        raise S3Error(f"the XML body is larger than {MAX_BODY} bytes", s3_code="MalformedXML", status=400)
    # Only the UTF-8 text S3 sends: the DTD refused below is then one the parser would read (a body in UTF-16, which
    # the parser takes by its BOM or its NULs, would carry one past a search of its bytes); XML holds no NUL.
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise S3Error("the XML body is not UTF-8 text", s3_code="MalformedXML", status=400)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise S3Error("XML bodies with a DTD are not accepted", s3_code="MalformedXML", status=400)
    try:
        return ET.fromstring(text)
    except ET.ParseError as err:
        raise S3Error(f"the XML body is not well formed: {err}", s3_code="MalformedXML", status=400) from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if _local(c.tag) == name]


def _text(element: ET.Element, name: str) -> str | None:
    found = _children(element, name)
    return (found[0].text or "") if found else None


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """The (part number, ETag without quotes) list of a CompleteMultipartUpload body, in the order given."""
    return [(number, etag) for number, etag, _ in parse_complete_checksums(body)]


def parse_complete_checksums(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    """parse_complete's list, with each part's checksums listed ({algorithm: base64}: ChecksumCRC32, ...)."""
    root = _parse(body)
    if _local(root.tag) != "CompleteMultipartUpload":
        raise S3Error("expected a CompleteMultipartUpload document", s3_code="MalformedXML", status=400)
    parts = []
    for part in _children(root, "Part"):
        number, etag = _text(part, "PartNumber"), _text(part, "ETag")
        if number is None or etag is None or not is_whole_number(number.strip()):
            raise S3Error("each Part needs a PartNumber and an ETag", s3_code="MalformedXML", status=400)
        sums = {name.lower(): value for name in CHECKSUMS if (value := _text(part, "Checksum" + name)) is not None}
        parts.append((int(number), etag.strip().strip('"'), sums))
    if not parts:
        raise S3Error("a CompleteMultipartUpload needs at least one part", s3_code="MalformedXML", status=400)
    return parts


def parse_location(body: bytes) -> str:
    """The LocationConstraint of a CreateBucket's body (a CreateBucketConfiguration), "" if it names none."""
    if not body.strip():
        return ""
    root = _parse(body)
    if _local(root.tag) != "CreateBucketConfiguration":
        raise S3Error("expected a CreateBucketConfiguration document", s3_code="MalformedXML", status=400)
    return (_text(root, "LocationConstraint") or "").strip()


def parse_delete(body: bytes) -> tuple[list[tuple[str, str | None]], bool]:
    """The objects a Delete (DeleteObjects) body names, each (key, its VersionId or None), and whether it asked for a
    quiet answer."""
    root = _parse(body)
    if _local(root.tag) != "Delete":
        raise S3Error("expected a Delete document", s3_code="MalformedXML", status=400)
    keys = []
    for obj in _children(root, "Object"):
        key = _text(obj, "Key")
        if not key:
            raise S3Error("each Object needs a Key", s3_code="MalformedXML", status=400)
        keys.append((key, _text(obj, "VersionId")))
    if not keys or len(keys) > 1000:
        raise S3Error("a Delete names 1 to 1000 objects", s3_code="MalformedXML", status=400)
    quiet = (_text(root, "Quiet") or "").strip().lower() == "true"
    return keys, quiet
