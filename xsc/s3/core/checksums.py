"""The object checksums S3 clients send with a body, and what the front answers of them.  Pure.

boto3 and the AWS CLI send one by default (CRC32; CRC32C and CRC64NVME in some configurations): `x-amz-checksum-ALG:
BASE64` as a header, or, for an aws-chunked body, announced by `x-amz-trailer: x-amz-checksum-ALG` and sent after the
last chunk.  The front checks each of S3's five (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256) over the body as it arrives
(a mismatch is S3's 400 BadDigest, and the body is never stored).  An object stored with a checksum keeps it and gives
it back to a GetObject or HeadObject that asks (`x-amz-checksum-mode: ENABLED`); one put or copied without any gets
S3's default, a CRC64NVME the front takes itself (`taken`), about 0.06 s of CPU per GiB beside the body's MD5's 1.7.

A multipart upload's object gets one too, made of its parts' (`whole`): COMPOSITE, the checksum of the parts'
checksums, or FULL_OBJECT, the CRC of the whole object combined from the parts' CRCs and sizes, so that no byte is
read again.  Each part keeps its checksum in its upload's algorithm (`for_part`), S3's default for an upload begun
without one.

CRC32C and CRC64NVME come from awscrt (AWS's common runtime, which botocore also uses for them), in C with the CPU's
carry-less multiply; the standard library has neither.  Its native library takes ~60 ms to load, so it is loaded by
the first checksum that needs it, not by every process that imports this module (every node does).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import zlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Mapping

from ...errors import S3Error

PREFIX = "x-amz-checksum-"
# The request headers of S3's checksum family that are not a checksum's value.
NOT_VALUES = frozenset({"x-amz-checksum-mode", "x-amz-checksum-algorithm", "x-amz-checksum-type"})
DEFAULT = "crc64nvme"  # what S3 takes of an object written without a checksum


@functools.cache
def _crt() -> ModuleType:
    from awscrt import checksums as crt  # loaded once, when first needed (module docstring)

    return crt


class _Crc:
    """A CRC (`compute(data, previous)`, `size` bytes) behind hashlib's interface, so that it is fed like the body's
    other digests."""

    def __init__(self, compute: Callable[[bytes, int], int], size: int) -> None:
        self._compute, self._size, self._value = compute, size, 0

    def update(self, data: bytes, /) -> None:
        self._value = self._compute(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")

    def hexdigest(self) -> str:
        return self.digest().hex()


ALGORITHMS: dict[str, Callable] = {
    "crc32": lambda: _Crc(zlib.crc32, 4),
    "crc32c": lambda: _Crc(_crt().crc32c, 4),
    "crc64nvme": lambda: _Crc(_crt().crc64nvme, 8),
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
}
SIZES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}


def _invalid(message: str) -> S3Error:
    return S3Error(message, s3_code="InvalidRequest", status=400)


def algorithm_named(name: str, header: str) -> str:
    """The algorithm a header's value names (CRC32, crc32, ...), else 400."""
    algorithm = name.strip().lower()
    if algorithm in ALGORITHMS:
        return algorithm
    raise _invalid(f"{header}: {name!r} is not a checksum algorithm (CRC32, CRC32C, CRC64NVME, SHA1 or SHA256)")


def _value_checked(algorithm: str, value: str) -> str:
    value = value.strip()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != SIZES[algorithm]:
        raise _invalid(f"Value for {PREFIX}{algorithm} header is invalid: not the base64 of "
                       f"{SIZES[algorithm]} bytes")
    return value


@dataclass
class Checksum:
    """The checksum a body is to match: its algorithm, the value sent (None until its trailer has come), and the
    digest of the body fed so far.  A checksum `taken` was not sent: the front takes it of the body to keep, and
    has nothing to check it against."""

    algorithm: str
    expected: str | None
    in_trailer: bool = False
    taken: bool = False
    digest: object = field(default=None)

    def __post_init__(self) -> None:
        self.digest = ALGORITHMS[self.algorithm]()

    @property
    def header(self) -> str:
        return PREFIX + self.algorithm

    @property
    def value(self) -> str:
        """The body's checksum, base64, as S3 spells it."""
        return base64.b64encode(self.digest.digest()).decode()  # type: ignore[attr-defined]

    def check(self, trailers: Mapping[str, str]) -> None:
        """BadDigest unless the body fed matches the value sent (in its header, or in `trailers`)."""
        if self.taken:
            return
        if self.in_trailer:
            sent = trailers.get(self.header)
            if sent is None:
                raise S3Error(f"the body's trailer holds no {self.header}, which x-amz-trailer announced",
                              s3_code="IncompleteBody", status=400)
            self.expected = _value_checked(self.algorithm, sent)
        if self.value != self.expected:
            raise S3Error(f"The {self.algorithm.upper()} you specified did not match the calculated checksum.",
                          s3_code="BadDigest", status=400)


def wanted(headers: Mapping[str, str]) -> Checksum | None:
    """The checksum a write's headers ask the body to match, checked for sense before the body is read, or None."""
    headers = {k.lower(): v for k, v in headers.items()}
    sent = [k for k in headers if k.startswith(PREFIX) and k not in NOT_VALUES]
    trailer = headers.get("x-amz-trailer")
    declared = headers.get("x-amz-sdk-checksum-algorithm")
    if trailer is not None:
        names = [t.strip().lower() for t in trailer.split(",") if t.strip()]
        if len(names) != 1 or not names[0].startswith(PREFIX) or names[0] in NOT_VALUES:
            raise _invalid(f"x-amz-trailer: {trailer!r} names no single {PREFIX}ALGORITHM trailer")
        sent.append(names[0])
    if len(set(sent)) > 1:
        raise _invalid("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    if not sent:
        if declared is not None:
            algorithm_named(declared, "x-amz-sdk-checksum-algorithm")
            raise _invalid("x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or "
                           "x-amz-trailer headers were found.")
        return None
    algorithm = algorithm_named(sent[0][len(PREFIX):], sent[0])
    if declared is not None and algorithm_named(declared, "x-amz-sdk-checksum-algorithm") != algorithm:
        raise _invalid(f"x-amz-sdk-checksum-algorithm: {declared} is not the algorithm of {sent[0]}")
    if trailer is not None:
        return Checksum(algorithm, None, in_trailer=True)
    return Checksum(algorithm, _value_checked(algorithm, headers[sent[0]]))


def for_object(headers: Mapping[str, str]) -> Checksum:
    """The checksum a PutObject's body is checked against and its object keeps: the one sent (`wanted`), else S3's
    default, taken of the body."""
    return wanted(headers) or Checksum(DEFAULT, None, taken=True)


def for_copy(headers: Mapping[str, str], kept: Mapping[str, str]) -> Checksum | None:
    """The checksum a CopyObject's copy is to carry, taken over the bytes copied: the one `x-amz-checksum-algorithm`
    asks for; else None where the headers the copy keeps (`kept`) hold its source's whole-object one (the bytes are
    the same); else its source's algorithm over the whole copy, or S3's default."""
    name = {k.lower(): v for k, v in headers.items()}.get("x-amz-checksum-algorithm")
    if name is not None:
        return Checksum(algorithm_named(name, "x-amz-checksum-algorithm"), None, taken=True)
    found = [k[len(PREFIX):] for k in kept if k.startswith(PREFIX) and k not in NOT_VALUES]
    if found and kept.get("x-amz-checksum-type") == COMPOSITE:  # a checksum of parts the copy, one file, has not
        return Checksum(found[0], None, taken=True)
    if found:
        return None
    return Checksum(DEFAULT, None, taken=True)


COMPOSITE, FULL_OBJECT = "COMPOSITE", "FULL_OBJECT"
# What a multipart object's checksum may be made of its parts' (S3's rules): a COMPOSITE one is the checksum of the
# parts' checksums, a FULL_OBJECT one the CRC of the whole object, combined from the parts' CRCs and sizes.
TYPES = {COMPOSITE: ("crc32", "crc32c", "sha1", "sha256"), FULL_OBJECT: ("crc32", "crc32c", "crc64nvme")}


def upload_checksum(headers: Mapping[str, str]) -> dict:
    """The checksum a CreateMultipartUpload asks its object to get: {"algorithm", "type", "default"}, from
    `x-amz-checksum-algorithm` and `x-amz-checksum-type` (COMPOSITE but for CRC64NVME, unless it says); without an
    algorithm, S3's default, a FULL_OBJECT CRC64NVME (`default`: the parts may send checksums of their own)."""
    headers = {k.lower(): v for k, v in headers.items()}
    name, kind = headers.get("x-amz-checksum-algorithm"), headers.get("x-amz-checksum-type")
    if name is None:
        if kind is not None:
            raise _invalid("The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.")
        return {"algorithm": DEFAULT, "type": FULL_OBJECT, "default": True}
    algorithm = algorithm_named(name, "x-amz-checksum-algorithm")
    kind = (kind.strip().upper() if kind is not None else FULL_OBJECT if algorithm == "crc64nvme" else COMPOSITE)
    if kind not in TYPES:
        raise _invalid(f"x-amz-checksum-type must be COMPOSITE or FULL_OBJECT, not {kind!r}")
    if algorithm not in TYPES[kind]:
        raise _invalid(f"The {kind} checksum type cannot be used with the {algorithm.upper()} checksum algorithm "
                       f"(it takes {', '.join(a.upper() for a in TYPES[kind])}).")
    return {"algorithm": algorithm, "type": kind, "default": False}


def for_part(headers: Mapping[str, str], upload: Mapping) -> tuple[Checksum | None, Checksum | None]:
    """(the checksum an UploadPart's body is checked against, the one its part keeps: in its upload's algorithm).
    A part of an upload begun with an algorithm sends that one or none; one of an upload given S3's default may
    send any, which is checked, and its CRC64NVME is taken beside it.  An upload recorded without a checksum keeps
    none for its parts."""
    sent, kind = wanted(headers), upload.get("checksum")
    if kind is None:
        return sent, None
    algorithm = kind["algorithm"]
    if sent is not None and sent.algorithm != algorithm and not kind.get("default"):
        raise _invalid(f"Checksum Type mismatch occurred, expected checksum Type: {algorithm}, actual checksum Type: "
                       f"{sent.algorithm}")
    if sent is not None and sent.algorithm == algorithm:
        return sent, sent
    return sent, Checksum(algorithm, None, taken=True)


def part_checksums(*found: Checksum | None) -> dict[str, str]:
    """The checksums a part keeps, {algorithm: base64}."""
    return {c.algorithm: c.value for c in found if c is not None}


def whole(kind: Mapping, parts: list[Mapping]) -> str | None:
    """A multipart object's checksum, base64, of its `parts` ({"size", "checksums"}, in order) as `kind` says
    ({"algorithm", "type"}): None if a part keeps none (its upload was recorded without a checksum)."""
    algorithm = kind["algorithm"]
    values = [(p.get("checksums") or {}).get(algorithm) for p in parts]
    if None in values:
        return None
    raw = [base64.b64decode(v) for v in values]
    if kind["type"] == COMPOSITE:
        digest = ALGORITHMS[algorithm]()
        for r in raw:
            digest.update(r)
        return f"{base64.b64encode(digest.digest()).decode()}-{len(parts)}"
    combine = {"crc32": lambda: _crt().combine_crc32, "crc32c": lambda: _crt().combine_crc32c,
               "crc64nvme": lambda: _crt().combine_crc64nvme}[algorithm]()
    value = int.from_bytes(raw[0], "big")
    for r, p in zip(raw[1:], parts[1:]):
        value = combine(value, int.from_bytes(r, "big"), p["size"])
    return base64.b64encode(value.to_bytes(SIZES[algorithm], "big")).decode()


def check_complete(headers: Mapping[str, str], kind: Mapping | None, value: str | None) -> None:
    """A CompleteMultipartUpload's own checksum headers held to its upload's: `x-amz-checksum-type` must be the
    upload's type, and a whole object's checksum sent (x-amz-checksum-ALG) the one its parts make (`value`)."""
    headers = {k.lower(): v for k, v in headers.items()}
    sent_type = headers.get("x-amz-checksum-type")
    if kind is None:  # an upload recorded without a checksum (by a front that kept none)
        if sent_type is not None or any(k.startswith(PREFIX) and k not in NOT_VALUES for k in headers):
            raise _invalid("this upload was begun without a checksum: complete it without one")
        return
    if sent_type is not None and sent_type.strip().upper() != kind["type"]:
        raise _invalid(f"The upload was created using the {kind['type']} checksum mode. The complete request must "
                       f"use the same checksum mode (it specified {sent_type.strip().upper()}).")
    for name, sent in headers.items():
        if not name.startswith(PREFIX) or name in NOT_VALUES:
            continue
        algorithm = algorithm_named(name[len(PREFIX):], name)
        if algorithm != kind["algorithm"]:
            raise S3Error(f"The upload was created using the {kind['algorithm'].upper()} checksum algorithm, not "
                          f"{algorithm.upper()}", s3_code="BadDigest", status=400)
        if value is None or sent.strip() not in (value, value.split("-")[0]):
            raise S3Error(f"The {algorithm.upper()} you specified did not match the calculated checksum.",
                          s3_code="BadDigest", status=400)


def check_none_listed(listed: list[tuple[int, dict[str, str]]]) -> None:
    """A CompleteMultipartUpload of an upload begun without a checksum algorithm (S3's default, or recorded without
    one) lists each part's number and ETag only: a part's checksum listed is InvalidPart, as S3 answers it (its
    parts' checksums are no part of what the client completes it with, whatever UploadPart echoed)."""
    for number, sent in listed:
        if sent:
            named = ", ".join(f"Checksum{a.upper()}" for a in sorted(sent))
            raise S3Error(f"part {number} is listed with {named}, but its upload was begun without a checksum "
                          f"algorithm: list each part's PartNumber and ETag only", s3_code="InvalidPart", status=400,
                          PartNumber=str(number))


def check_listed(listed: list[tuple[int, dict[str, str]]], parts: Mapping[int, Mapping],
                 kind: Mapping | None = None) -> None:
    """Each part's checksums a CompleteMultipartUpload lists ({algorithm: base64}) held to those its part (`parts`, by
    number) keeps, as S3 holds them: one the part does not keep is BadDigest, one that is not the part's InvalidPart.
    An upload begun with a COMPOSITE checksum (`kind`) is completed with each part's checksum listed, else
    InvalidRequest: its object's checksum is made of the checksums the client knows its parts by."""
    for number, sent in listed:
        kept = (parts.get(number) or {}).get("checksums") or {}
        if kind is not None and kind["type"] == COMPOSITE and not kind.get("default") and kind["algorithm"] not in sent:
            raise _invalid(f"The upload was created using a {kind['algorithm']} checksum. The complete request must "
                           f"include the checksum for each part. It was missing for part {number} in the request.")
        for algorithm, value in sent.items():
            if algorithm not in kept and number in parts:
                raise S3Error(f"The {algorithm} you specified for part {number} did not match what we received (it "
                              f"was not uploaded with a {algorithm.upper()}).", s3_code="BadDigest", status=400)
            if kept.get(algorithm) != value.strip():
                raise S3Error(f"part {number}'s {algorithm.upper()} is not {value!r}"
                              + (f": it is {kept[algorithm]!r}" if algorithm in kept else "")
                              + " (ListParts lists them)", s3_code="InvalidPart", status=400, PartNumber=str(number))
