"""Provenance records: what ran, on what, with what outcome and cost, signed by the node that ran it.

A record is a JSON object with no floats (float results are their exact text,
durations are integer microseconds), signed with Ed25519 over its canonical
form: keys sorted, no whitespace, ASCII only.  Anyone holding a record can check
it against the node id inside it, which is the node's public key.
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
import time
from datetime import datetime, timezone
from typing import Any

from ..errors import BadProvenanceSignature, InvalidArgument, XscError
from ..identity import Identity, parse_public_id, verify

VERSION = 1
# How trapped calls are metered: see docs/compute.md ("Metering").
METERING_EXACT = "exact"
METERING_WHOLE_BUDGET = "whole-budget"
_ID_RE = re.compile(r"[0-9a-f]{32}")


_RANDOM = random.Random(os.urandom(32))  # ids need to be unique, not secret: no syscall per id


def new_id() -> bytes:
    """16 bytes: nanoseconds since the epoch (so ids sort by time), then 8 random bytes."""
    return struct.pack(">QQ", time.time_ns(), _RANDOM.getrandbits(64))


def parse_id(text: str) -> bytes:
    text = text.strip().lower()
    if not _ID_RE.fullmatch(text):
        raise InvalidArgument(f"not a provenance id: {text!r}",
                              hint="a provenance id has 32 hex digits (see: xsc compute provenance --list)")
    return bytes.fromhex(text)


def timestamp(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sign(identity: Identity, record: dict[str, Any]) -> bytes:
    """The signed record, encoded for storage: {"record": <canonical form>, "signature": <hex>}."""
    body = canonical(record)
    return b'{"record":' + body + b',"signature":"' + identity.sign(body).hex().encode() + b'"}'


def decode(data: bytes) -> dict[str, Any]:
    return json.loads(data)


def is_valid(signed: dict[str, Any]) -> bool:
    try:
        record, signature = signed["record"], bytes.fromhex(signed["signature"])
        node = parse_public_id(record["node"])
        return verify(node, signature, canonical(record))
    except (KeyError, TypeError, ValueError, XscError):  # a malformed record or node id
        return False


def check(signed: dict[str, Any]) -> dict[str, Any]:
    """The record, if its signature is the node's; else BadProvenanceSignature."""
    if not is_valid(signed):
        rid = signed.get("record", {}).get("id", "?") if isinstance(signed, dict) else "?"
        raise BadProvenanceSignature(
            f"provenance record {rid} does not carry a valid signature of the node it names",
            hint="the record was altered after it was signed, or was not signed by that node")
    return signed["record"]
