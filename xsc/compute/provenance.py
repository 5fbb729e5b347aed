"""Provenance records: what ran, on what, with what outcome and cost, signed by the node that ran it.

A record is a JSON object with no floats (float results are their exact text,
durations are integer microseconds); its canonical form has keys sorted, no
whitespace, ASCII only.  Records are signed in batches (journal.py): the node signs
the Merkle root of a batch's canonical records once, and each stored record carries
the root, that signature, its place in the batch and its inclusion proof::

    {"batch": {"count": N, "index": I, "proof": [hex, ...], "root": hex, "signature": hex}, "record": {...}}

so anyone holding one record can check it alone against the node id inside it (the
node's public key).  The signature covers BATCH_TAG and the root, and the root commits to the count
(`merkle.root`), so the record holds at its own index of its own count and at no other.

Records this node signed under the first batch rule (OLD_BATCH_TAG and a root that does not commit to
the count: item 0 of 3 also passes as item 0 of 4) still verify where they are stored (`is_valid(...,
stored=True)`: the journal, a provider's record kept with a job), as they were checked when they came.  A
record from another node is held to the current rule only: a node signs every new batch under it, and an
old-rule record's index and count are the signer's to restate.  Version 1 records, signed one by one
({"record", "signature"}), still verify.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import re
import struct
import time
from datetime import datetime, timezone
from typing import Any

from .. import codec
from ..errors import BadProvenanceSignature, InvalidArgument, XscError, quoted_id
from ..identity import Identity, parse_public_id, verify
from ..ids import unique_bits
from ..ledger.core import merkle

VERSION = 3  # 2: batch-signed, with the engine fingerprint and the module link; 3: "price" renamed "charge"
BATCH_TAG = b"xsc/provenance/batch/2\n"  # what a batch signature covers: this tag, then the Merkle root
OLD_BATCH_TAG = b"xsc/provenance/batch/1\n"  # the same, over a root without the count: read from stores only
# How trapped calls are metered: see docs/compute.md ("Metering").
METERING_EXACT = "exact"
METERING_WHOLE_BUDGET = "whole-budget"  # records from before time-bounded metering
METERING_TIME_BOUNDED = "time-bounded"  # a trap whose count wasmtime may under-report: see docs/compute.md
_ID_RE = re.compile(r"[0-9a-f]{32}")


def is_id(text: Any) -> bool:
    """Whether `text` is a provenance id as records and answers spell it: 32 lowercase hex digits."""
    return type(text) is str and _ID_RE.fullmatch(text) is not None


def id_time_ns(provenance_id: bytes) -> int:
    """When a record says its run began (its id's first 8 bytes): the provider's word, for a run elsewhere."""
    return struct.unpack_from(">Q", provenance_id)[0]


def new_id() -> bytes:
    """16 bytes: nanoseconds since the epoch (so ids sort by time), then 8 random bytes."""
    return struct.pack(">QQ", time.time_ns(), unique_bits(64))


def stream_sha256(text: str) -> str:
    """The hash a WASI run's record signs of a stream (`wasi.stdout_sha256`, `wasi.stderr_sha256`): of its text as
    the run answers it (UTF-8, an invalid byte replaced), so whoever holds the answer checks it against the record."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def parse_id(text: str) -> bytes:
    text = text.strip().lower()
    if not _ID_RE.fullmatch(text):
        raise InvalidArgument(f"not a provenance id: {quoted_id(text)}",
                              hint="a provenance id has 32 hex digits (see: xsc compute provenance --list)")
    return bytes.fromhex(text)


def timestamp(ns: int) -> str:
    """UTC, to the microsecond (truncated), in ISO 8601 with a Z.  The text of the second is made once
    per second (every record of a busy node asks for one)."""
    seconds, micros = divmod(ns // 1000, 1_000_000)
    second, text = _SECOND[0]
    if second != seconds:
        text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _SECOND[0] = (seconds, text)  # one tuple: threads that read it meanwhile see the old pair or the new one
    return f"{text}{micros:06d}Z"


def timestamp_ns(text: Any) -> int:
    """The nanoseconds since the epoch a `timestamp` names (to its microsecond); 0 for what is not one."""
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError):
        return 0
    return (calendar.timegm(moment.timetuple()) * 1_000_000 + moment.microsecond) * 1000


_SECOND: list[tuple[int | None, str]] = [(None, "")]  # (whole second since the epoch, its text up to the '.')


canonical = codec.canonical  # the canonical form of a record: keys sorted, no whitespace, ASCII only


def sign(identity: Identity, record: dict[str, Any]) -> bytes:
    """The signed record, encoded for storage: {"record": <canonical form>, "signature": <hex>}."""
    body = canonical(record)
    return b'{"record":' + body + b',"signature":"' + identity.sign(body).hex().encode() + b'"}'


def sign_batch(identity: Identity, bodies: list[bytes]) -> list[bytes]:
    """Canonical records signed as one batch: each one's stored form (see the module docstring)."""
    root, proofs = merkle.tree(bodies)
    head = (b'{"batch":{"count":' + str(len(bodies)).encode() + b',"index":')
    tail = b',"root":"' + root.hex().encode() + b'","signature":"' + identity.sign(BATCH_TAG + root).hex().encode()
    return [head + str(i).encode() + b',"proof":[' + b",".join(b'"' + p.hex().encode() + b'"' for p in proof)
            + b"]" + tail + b'"},"record":' + body + b"}" for i, (body, proof) in enumerate(zip(bodies, proofs))]


def decode(data: bytes) -> dict[str, Any]:
    return codec.loads(data)


@functools.lru_cache(maxsize=4096)
def _batch_signed(node: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `node` signed a batch's tag and root (one Ed25519 check for all the records of a batch, however
    often they are read: the dashboard reads hundreds each poll)."""
    return verify(node, signature, message)


def is_valid(signed: dict[str, Any], *, stored: bool = False) -> bool:
    """Whether the record carries its node's signature.  `stored`: the record is read from this node's own
    store, where a record signed under the first batch rule is taken as it was checked when it came."""
    return _rule(signed, stored) is not None


def old_rule(signed: dict[str, Any]) -> bool:
    """Whether the record holds only under the first batch rule (see the module docstring)."""
    return _rule(signed, True) == OLD_BATCH_TAG


RULE_NAMES = {BATCH_TAG: "batch/2", OLD_BATCH_TAG: "batch/1", b"": "single"}


def rule(signed: dict[str, Any], *, stored: bool = False) -> str | None:
    """The rule the record's signature holds under: "batch/2" (the current one), "batch/1" (the first batch rule,
    held as stored only), "single" (a version 1 record signed alone); None when it holds under none."""
    tag = _rule(signed, stored)
    return None if tag is None else RULE_NAMES[tag]


def validity(rule_name: str | None) -> str:
    """How a record's signature reads to a person, from `rule`: a record valid only under the first batch rule
    says so, as it is not the guarantee a current one gives (its place in its batch is the signer's to restate)."""
    if rule_name is None:
        return "INVALID"
    return "valid (first batch rule)" if rule_name == "batch/1" else "valid"


def _rule(signed: dict[str, Any], stored: bool) -> bytes | None:
    """The tag of the rule the record's signature holds under (b"" for one signed alone), or None."""
    try:
        record = signed["record"]
        node = parse_public_id(record["node"])
        if "batch" in signed:
            batch = signed["batch"]
            index, count, root = batch["index"], batch["count"], bytes.fromhex(batch["root"])
            proof = [bytes.fromhex(p) for p in batch["proof"]]
            signature, body = bytes.fromhex(batch["signature"]), canonical(record)
            if merkle.verify(body, index, count, proof, root) and _batch_signed(node, signature, BATCH_TAG + root):
                return BATCH_TAG
            if stored and merkle.verify_unsized(body, index, count, proof, root) and \
                    _batch_signed(node, signature, OLD_BATCH_TAG + root):
                return OLD_BATCH_TAG
            return None
        return b"" if verify(node, bytes.fromhex(signed["signature"]), canonical(record)) else None
    except (KeyError, TypeError, ValueError, AttributeError, XscError):  # a malformed record or node id
        return None


def respelled(signed: dict[str, Any]) -> str | None:
    """None when a signed record as received is in the one form its node stores it (`sign`, `sign_batch`): hex in
    lower case, the batch's index and count integers, no field but these; else where it is spelled otherwise.  The
    record's signature and Merkle proof hold over its other spellings too (the hex decoded, `true` read as 1): taken,
    they would be second records of one run.  A record in no shape a node writes is left to `is_valid`."""
    try:
        if "batch" in signed:
            batch = signed["batch"]
            index, count = batch["index"], batch["count"]
            form: dict[str, Any] = {"batch": {
                "count": int(count) if isinstance(count, int) else count,
                "index": int(index) if isinstance(index, int) else index,
                "proof": [bytes.fromhex(p).hex() for p in batch["proof"]], "root": bytes.fromhex(batch["root"]).hex(),
                "signature": bytes.fromhex(batch["signature"]).hex()}, "record": signed["record"]}
        else:
            form = {"record": signed["record"], "signature": bytes.fromhex(signed["signature"]).hex()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return codec.respelled(signed, form)


def check(signed: dict[str, Any], *, stored: bool = False) -> dict[str, Any]:
    """The record, if its signature is the node's; else BadProvenanceSignature."""
    if not is_valid(signed, stored=stored):
        rid = signed.get("record", {}).get("id", "?") if isinstance(signed, dict) else "?"
        raise BadProvenanceSignature(
            f"provenance record {rid} does not carry a valid signature of the node it names",
            hint="the record was altered after it was signed, or was not signed by that node")
    return signed["record"]
