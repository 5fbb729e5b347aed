"""The bucket index's records, checked: an object's as it is stored (`clean`), a write's condition, stored headers,
checksums of uploads, parts and completed objects.  The index checks what a front sends with these, and the backup
what an export brings back.  Pure."""

from __future__ import annotations

import time
from typing import Any

from ...errors import InvalidArgument, InvalidPart
from . import names


def clean(record: dict) -> dict:
    """The object record as it is stored; InvalidArgument if `record` is not one."""
    parts = record.get("parts")
    if not isinstance(parts, list) or not parts:
        raise InvalidArgument("an object record needs its parts: [{cap, size}]")
    clean_parts = []
    for p in parts:
        if not isinstance(p, dict) or not isinstance(p.get("cap"), str) or type(p.get("size")) is not int \
                or p["size"] < 0:
            raise InvalidArgument("each part of an object record is {cap, size (bytes, 0 or more)}")
        clean_parts.append({"cap": p["cap"], "size": p["size"], **({"etag": p["etag"]} if "etag" in p else {})})
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise InvalidArgument("metadata is a map of strings")
    names.check_metadata(metadata)
    if "etag" not in record:
        raise InvalidArgument("an object record needs its etag")
    stored = {"parts": clean_parts, "size": sum(p["size"] for p in clean_parts), "etag": str(record["etag"]),
             "content_type": str(record.get("content_type") or "binary/octet-stream"), "metadata": metadata,
             "headers": headers(record.get("headers")),
             "modified": names.check_time(record.get("modified") or 0, "an object's modified") or time.time()}
    if record.get("condition") is not None:
        stored["condition"] = condition(record["condition"])
    if record.get("writer") is not None:  # the user it is written for, judged as it is written (never stored)
        if not isinstance(record["writer"], str):
            raise InvalidArgument("a record's writer is the name of the S3 user it is written for")
        stored["writer"] = record["writer"]
    return stored


def condition(condition: Any) -> dict:
    """A write's condition, checked as its record is written (not stored): {"if_none_match": "*"} (no object at the
    key) or {"if_match": ETAG} (the object at the key has that ETag)."""
    if condition == {"if_none_match": "*"}:
        return condition
    if isinstance(condition, dict) and list(condition) == ["if_match"] and isinstance(condition["if_match"], str):
        return condition
    raise InvalidArgument('a write\'s condition is {"if_none_match": "*"} or {"if_match": ETAG}')


def holds(condition: dict, old: dict | None) -> bool:
    """Does a write's `condition` hold of the object it replaces (`old`: its record, None for none)?"""
    if "if_none_match" in condition:
        return old is None
    return old is not None and old["etag"] == condition["if_match"]


def headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise InvalidArgument("headers is a map of strings")
    if sum(len(k) + len(v.encode()) for k, v in headers.items()) > names.MAX_HEADERS_BYTES:
        raise InvalidArgument(f"an object's stored headers are at most {names.MAX_HEADERS_BYTES} bytes")
    return headers


def upload_checksum(checksum: Any) -> dict:
    if (not isinstance(checksum, dict) or checksum.get("algorithm") not in names.CHECKSUM_ALGORITHMS
            or checksum.get("type") not in names.CHECKSUM_TYPES):
        raise InvalidArgument(f"an upload's checksum is {{\"algorithm\": one of {names.CHECKSUM_ALGORITHMS}, "
                              f"\"type\": one of {names.CHECKSUM_TYPES}, \"default\": BOOL}}")
    return {"algorithm": checksum["algorithm"], "type": checksum["type"], "default": bool(checksum.get("default"))}


def checksum_value(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= names.MAX_CHECKSUM:
        raise InvalidArgument(f"a checksum is base64 text of at most {names.MAX_CHECKSUM} characters")
    return value


def part_checksums(checksums: Any) -> dict[str, str]:
    """A part's checksums, bounded: its upload's algorithm's and at most one more, the one it was sent with."""
    if not isinstance(checksums, dict) or len(checksums) > 2 or not all(a in names.CHECKSUM_ALGORITHMS
                                                                        for a in checksums):
        raise InvalidArgument(f"a part's checksums are {{ALGORITHM: BASE64}}, at most two of "
                              f"{names.CHECKSUM_ALGORITHMS}")
    return {a: checksum_value(v) for a, v in checksums.items()}


def whole_checksum(checksum: Any, count: int) -> dict:
    parts = checksum.get("parts") if isinstance(checksum, dict) else None
    if not isinstance(parts, list) or len(parts) != count:
        raise InvalidArgument('an object\'s checksum is {"value": BASE64, "parts": [BASE64 of each part chosen]}')
    return {"value": checksum_value(checksum.get("value")), "parts": [checksum_value(p) for p in parts]}


def checksum_headers(kind: dict | None, checksum: dict | None, used: list[dict]) -> dict[str, str]:
    """The checksum a completed upload's object keeps among its stored headers (checksum_of in the front): the one
    the front made of the parts' (`checksum`), once those are still the parts' own; none for an upload begun
    without one, or completed without one (its parts recorded without theirs)."""
    if kind is None or checksum is None:
        return {}
    algorithm = kind["algorithm"]
    for part, value in zip(used, checksum["parts"]):
        if (part.get("checksums") or {}).get(algorithm) != value:
            raise InvalidPart(f"part {part['number']} was uploaded again meanwhile: its {algorithm.upper()} is not "
                              f"{value!r}", hint="list the parts with ListParts", part=part["number"])
    return {f"x-amz-checksum-{algorithm}": checksum["value"],
            **({"x-amz-checksum-type": "COMPOSITE"} if kind["type"] == "COMPOSITE" else {})}


def summary(record: dict) -> dict:
    """What a listing says of an object."""
    return {"size": record["size"], "etag": record["etag"], "modified": record["modified"]}
