"""What S3 accepts as bucket names, keys, part numbers and user metadata.  Pure."""

from __future__ import annotations

import re

from ... import codec
from ...errors import InvalidArgument, InvalidBucketName, TooManyGrants, quoted

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # each name pattern is fullmatched ($ takes a final \n)
_IP = re.compile(r"\d+\.\d+\.\d+\.\d+")
MAX_KEY_BYTES = 1024
MAX_PARTS = 10000
MIN_PART_SIZE = 5 * 1024 * 1024  # every part but the last of a multipart object (S3's rule)
MAX_METADATA_BYTES = 2048
MAX_AMOUNT = 10**15  # micro-credits one transfer of a user's account moves at most (a billion credits)
MAX_TIME = 253_402_300_799  # 9999-12-31 23:59:59 UTC: the last second an HTTP or ISO date prints
MAX_HEADERS_BYTES = 8192  # Cache-Control, Content-Disposition, ... of one object, all together
# S3's checksums (xsc/s3/core/checksums.py) a multipart upload's parts keep, and how its object's is made of theirs.
CHECKSUM_ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
CHECKSUM_TYPES = ("COMPOSITE", "FULL_OBJECT")
MAX_CHECKSUM = 64  # characters of one base64 checksum (SHA-256's: 44), a COMPOSITE one's "-N" with it
MAX_RECORD = 64 * 1024  # bytes of an object's record (type, metadata, stored headers) sent with a small object
# Bytes of an object stored in one request of the front's (xsc/buckets/objects.py), so that with its record and
# their framing (`codec.framed`) it is within the node's body limit (1 MiB); larger ones are streamed.
SMALL_OBJECT = 1024 * 1024 - MAX_RECORD - 4
DEFAULT_USER = "xsc"  # the user of access keys made without --user, and the owner of buckets made before users
INITIATOR = "initiator"  # access to an upload: who began it, or its bucket's owner (S3Index.checked_upload)
# A bucket's grants, read with its record by every request made of it: how many users, and their JSON's bytes.
MAX_GRANTS, MAX_GRANTS_BYTES = 256, 8192
_USER = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
# What XML 1.0 cannot carry (listings echo keys and prefixes): C0 controls but tab, LF and CR, and U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def check_bucket(name: str) -> str:
    if not _BUCKET.fullmatch(name) or ".." in name or _IP.fullmatch(name) or ".-" in name or "-." in name:
        raise InvalidBucketName(f"{quoted(name)} is not a valid bucket name",
                                hint="3 to 63 characters: lower-case letters, digits, '-' and '.'")
    return name


def check_user(name: str) -> str:
    if not isinstance(name, str) or not _USER.fullmatch(name):
        raise InvalidArgument(f"{quoted(name)} is not a user name", hint="1 to 32 characters: a-z, 0-9, '.', '_', '-'")
    return name


def check_grants(bucket: str, grants: dict[str, str]) -> dict[str, str]:
    """A bucket's grants within MAX_GRANTS users and MAX_GRANTS_BYTES of JSON."""
    size = len(codec.canonical(grants))
    if len(grants) > MAX_GRANTS or size > MAX_GRANTS_BYTES:
        raise TooManyGrants(f"the bucket {bucket!r} would hold {len(grants):,} grants ({size:,} bytes); a bucket holds "
                            f"at most {MAX_GRANTS} ({MAX_GRANTS_BYTES:,} bytes)",
                            hint=f"revoke one first: xsc s3 revoke {bucket} USER", bucket=bucket)
    return grants


def check_key(key: str) -> str:
    if not key:
        raise InvalidArgument("an object key cannot be empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArgument(f"an object key is at most {MAX_KEY_BYTES} bytes of UTF-8", s3_code="KeyTooLongError")
    return check_text(key, "an object key")


def check_text(text: str, what: str) -> str:
    """`text` (a key, a prefix, a marker), refused if it holds a character an XML answer could not carry."""
    bad = _NOT_XML.search(text)
    if bad is not None:
        raise InvalidArgument(f"{what} holds the control character U+{ord(bad.group()):04X}, which S3 answers "
                              "cannot carry", hint="use printable characters (tab, LF and CR are allowed)",
                              s3_code="InvalidArgument")
    return text


def check_part_number(number: object) -> int:
    """A part's number: a whole number from 1 to MAX_PARTS (type(): a bool passes for 1 and a float compares as a
    number, yet either would be written into the part's record and key as it is)."""
    if type(number) is not int or not 1 <= number <= MAX_PARTS:
        raise InvalidArgument(f"part numbers are whole numbers from 1 to {MAX_PARTS}, not {str(number)[:40]}")
    return number


def check_time(value: object, what: str = "a time") -> float:
    """`value` as unix seconds a record keeps: a JSON number from 0 to MAX_TIME (an infinite one or NaN would be
    written as null, which no listing or date can print)."""
    if type(value) not in (int, float) or not 0 <= value <= MAX_TIME:  # type(): a bool is no time; NaN fails <=
        raise InvalidArgument(f"{what} is unix seconds from 0 to {MAX_TIME}, not {str(value)[:40]}")
    return float(value)


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(f"user metadata is at most {MAX_METADATA_BYTES} bytes, got {size}",
                              s3_code="MetadataTooLarge")
    return metadata
