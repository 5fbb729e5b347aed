"""Ledger records and their one canonical byte encoding.

Three records, each a *body* (the exact bytes that are hashed and signed) plus a
signature.  An entry's id never depends on its own signature, so a whole group of
settlements can be laid out (seq, prev) first and signed in parallel afterwards.

    Authorization  payer signs before any work:   payer, payee, cap, nonce, expiry, job
    Receipt        the payee's chain entry:        payee, seq, prev, amount, time, usage,
                                                   + the signed authorization (body and signature)
    Payment        the payer's chain entry:        payer, seq, prev, + the receipt body

Stored form of an entry = body, then its signature, then (payment only) the receipt's
signature.  The authorization's signature sits inside the receipt body, so the payee's
and the payer's signatures both cover it.  Field encodings: fixed-width big-endian
unsigned integers, raw 32-byte keys and hashes, length-prefixed UTF-8.  Decoding is
strict (unknown tag, bad lengths, unsorted usage or trailing bytes are errors), so
every record has exactly one encoding and `encode(decode(b)) == b`.  docs/ledger.md
has the byte layout.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import Union

from ...errors import InvalidEntry
from ...identity import public_id
from ...units import format_credits, is_whole_number

TAG_AUTHORIZATION = b"xsc/ledger/authorization/1\n"
TAG_RECEIPT = b"xsc/ledger/receipt/1\n"
TAG_PAYMENT = b"xsc/ledger/payment/1\n"

ZERO_HASH = bytes(32)  # prev of an account's first entry
KEY_LEN, HASH_LEN, SIG_LEN, NONCE_LEN = 32, 32, 64, 16
MAX_U63 = 2**63 - 1  # amounts, times and seqs stay in signed 64-bit range for every consumer
MAX_JOB_BYTES = 256
MAX_USAGE_ITEMS = 8
USAGE_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Encoded meter names already found valid, at most METER_NAMES (names repeat across entries, and a receipt a stranger
# answers with names its own): past it, forgotten and found valid again as they come.
METER_NAMES = 256
_METER_NAMES: dict[bytes, str] = {}

_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_AUTH_FIXED = struct.Struct(">32s32sQ16sQH")  # payer, payee, cap, nonce, expires_at, job length
_RECEIPT_FIXED = struct.Struct(">32sQ32sQQB")  # account, seq, prev, amount, settled_at, usage count
_PAYMENT_FIXED = struct.Struct(">32sQ32sH")  # account, seq, prev, receipt length


def digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


class _Reader:
    """Strict cursor over a body; every malformation is an InvalidEntry."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def fail(self, why: str) -> InvalidEntry:
        return InvalidEntry(f"malformed {self.what}: {why}")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.fail("truncated")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def tag(self, tag: bytes) -> None:
        if not self.data.startswith(tag, self.pos):
            raise self.fail("unknown record type")
        self.pos += len(tag)

    def u64(self) -> int:
        value = _U64.unpack(self.take(8))[0]
        if value > MAX_U63:
            raise self.fail("integer out of range")
        return value

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def fixed(self, layout: struct.Struct) -> tuple:
        if self.pos + layout.size > len(self.data):
            raise self.fail("truncated")
        values = layout.unpack_from(self.data, self.pos)
        self.pos += layout.size
        return values

    def check_range(self, *values: int) -> None:
        if max(values) > MAX_U63:
            raise self.fail("integer out of range")

    def text(self, length: int) -> str:
        raw = self.take(length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("text is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail("trailing bytes")


def _u64(value: int, name: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_U63:
        raise InvalidEntry(f"{name} must be an integer from 0 to {MAX_U63}, not {value!r}")
    return _U64.pack(value)


def _fixed(value: bytes, length: int, name: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != length:
        raise InvalidEntry(f"{name} must be {length} bytes")
    return bytes(value)


def normalize_usage(usage: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """Metered usage as sorted (name, non-negative int) pairs: the only form that is encoded."""
    if not isinstance(usage, dict) or len(usage) > MAX_USAGE_ITEMS:
        raise InvalidEntry(f"usage must be a mapping of at most {MAX_USAGE_ITEMS} meters, e.g. {{'fuel': 1200}}")
    for key, value in usage.items():
        if not isinstance(key, str) or not USAGE_KEY.fullmatch(key):
            raise InvalidEntry(f"usage meter name {key!r} must match {USAGE_KEY.pattern}")
        _u64(value, f"usage {key}")
    return tuple(sorted(usage.items()))


# --- authorization -----------------------------------------------------------------
@dataclass(slots=True)
class Authorization:
    payer: bytes
    payee: bytes
    cap: int
    nonce: bytes
    expires_at: int  # unix seconds; a receipt must be settled at or before it
    job: str
    signature: bytes = field(default=b"", compare=False)
    body: bytes = field(default=b"", repr=False, compare=False)
    _id: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.body:
            object.__setattr__(self, "body", self._encode_body())

    def _encode_body(self) -> bytes:
        job = self.job.encode("utf-8") if isinstance(self.job, str) else None
        if job is None or len(job) > MAX_JOB_BYTES:
            raise InvalidEntry(f"job reference must be text of at most {MAX_JOB_BYTES} UTF-8 bytes")
        return b"".join((TAG_AUTHORIZATION, _fixed(self.payer, KEY_LEN, "payer"), _fixed(self.payee, KEY_LEN, "payee"),
                         _u64(self.cap, "cap"), _fixed(self.nonce, NONCE_LEN, "nonce"),
                         _u64(self.expires_at, "expires_at"), _U16.pack(len(job)), job))

    @property
    def id(self) -> bytes:
        if self._id is None:
            self._id = digest(self.body)
        return self._id

    def signed(self, signature: bytes) -> Authorization:
        return Authorization(self.payer, self.payee, self.cap, self.nonce, self.expires_at, self.job,
                             signature, self.body)

    @classmethod
    def read(cls, r: _Reader, signature: bytes) -> Authorization:
        start = r.pos
        r.tag(TAG_AUTHORIZATION)
        payer, payee, cap, nonce, expires_at, job_length = r.fixed(_AUTH_FIXED)
        r.check_range(cap, expires_at)
        job = r.text(job_length)
        return cls(payer, payee, cap, nonce, expires_at, job, signature, r.data[start:r.pos])


# --- chain entries -----------------------------------------------------------------
@dataclass(slots=True)
class Receipt:
    """The payee's chain entry: the metered usage and the amount, countersigning the authorization."""

    account: bytes  # the payee
    seq: int
    prev: bytes
    amount: int
    settled_at: int
    usage: tuple[tuple[str, int], ...]
    authorization: Authorization
    signature: bytes = field(default=b"", compare=False)
    body: bytes = field(default=b"", repr=False, compare=False)
    _id: bytes | None = field(default=None, init=False, repr=False, compare=False)

    kind = "receipt"

    def __post_init__(self) -> None:
        if not self.body:
            object.__setattr__(self, "body", self._encode_body())

    def _encode_body(self) -> bytes:
        usage = normalize_usage(dict(self.usage))
        parts = [TAG_RECEIPT, _fixed(self.account, KEY_LEN, "account"), _u64(self.seq, "seq"),
                 _fixed(self.prev, HASH_LEN, "prev"), _u64(self.amount, "amount"), _u64(self.settled_at, "settled_at"),
                 bytes([len(usage)])]
        for key, value in usage:
            parts += [bytes([len(key)]), key.encode(), _U64.pack(value)]
        auth = self.authorization
        if len(auth.signature) != SIG_LEN:
            raise InvalidEntry("a receipt needs a signed authorization")
        parts += [_U16.pack(len(auth.body)), auth.body, auth.signature]
        return b"".join(parts)

    @property
    def id(self) -> bytes:
        if self._id is None:
            self._id = digest(self.body)
        return self._id

    @property
    def receipt(self) -> Receipt:
        return self

    @property
    def delta(self) -> int:
        return self.amount

    def signed(self, signature: bytes) -> Receipt:
        return Receipt(self.account, self.seq, self.prev, self.amount, self.settled_at, self.usage,
                       self.authorization, signature, self.body)

    def signatures(self) -> list[tuple[bytes, bytes, bytes, str]]:
        """(public key, signature, body, what) of every signature this entry carries, its own first."""
        a = self.authorization
        return [(self.account, self.signature, self.body, "receipt"), (a.payer, a.signature, a.body, "authorization")]

    def encode(self) -> bytes:
        return self.body + self.signature

    @classmethod
    def read(cls, r: _Reader, signature: bytes) -> Receipt:
        start = r.pos
        r.tag(TAG_RECEIPT)
        account, seq, prev, amount, settled_at, count = r.fixed(_RECEIPT_FIXED)
        r.check_range(seq, amount, settled_at)
        if count > MAX_USAGE_ITEMS:
            raise r.fail("too many usage meters")
        usage = []
        for _ in range(count):
            name = r.take(r.take(1)[0])
            text = _METER_NAMES.get(name)
            if text is None:  # names repeat across entries: validate each one once
                text = name.decode("ascii", "replace")
                if not USAGE_KEY.fullmatch(text):
                    raise r.fail("bad usage meter name")
                if len(_METER_NAMES) >= METER_NAMES:
                    _METER_NAMES.clear()
                _METER_NAMES[name] = text
            usage.append((text, r.u64()))
        if count > 1 and [k for k, _ in usage] != sorted({k for k, _ in usage}):
            raise r.fail("usage meters not sorted or duplicated")
        length = r.u16()
        end = r.pos + length
        auth = Authorization.read(r, b"")
        if r.pos != end:
            raise r.fail("authorization length mismatch")
        auth.signature = r.take(SIG_LEN)
        return cls(account, seq, prev, amount, settled_at, tuple(usage), auth, signature, r.data[start:r.pos])


@dataclass(slots=True)
class Payment:
    """The payer's chain entry: countersigns the payee's receipt; the payer's balance drops by its amount."""

    account: bytes  # the payer
    seq: int
    prev: bytes
    receipt: Receipt
    signature: bytes = field(default=b"", compare=False)
    body: bytes = field(default=b"", repr=False, compare=False)
    _id: bytes | None = field(default=None, init=False, repr=False, compare=False)

    kind = "payment"

    def __post_init__(self) -> None:
        if not self.body:
            object.__setattr__(self, "body", b"".join((
                TAG_PAYMENT, _fixed(self.account, KEY_LEN, "account"), _u64(self.seq, "seq"),
                _fixed(self.prev, HASH_LEN, "prev"), _U16.pack(len(self.receipt.body)), self.receipt.body)))

    @property
    def id(self) -> bytes:
        if self._id is None:
            self._id = digest(self.body)
        return self._id

    @property
    def authorization(self) -> Authorization:
        return self.receipt.authorization

    @property
    def amount(self) -> int:
        return self.receipt.amount

    @property
    def delta(self) -> int:
        return -self.receipt.amount

    def signed(self, signature: bytes) -> Payment:
        return Payment(self.account, self.seq, self.prev, self.receipt, signature, self.body)

    def signatures(self) -> list[tuple[bytes, bytes, bytes, str]]:
        return [(self.account, self.signature, self.body, "payment"), *self.receipt.signatures()]

    def encode(self) -> bytes:
        return self.body + self.signature + self.receipt.signature

    @classmethod
    def read(cls, r: _Reader, signature: bytes, receipt_signature: bytes) -> Payment:
        start = r.pos
        r.tag(TAG_PAYMENT)
        account, seq, prev, length = r.fixed(_PAYMENT_FIXED)
        r.check_range(seq)
        end = r.pos + length
        receipt = Receipt.read(r, receipt_signature)
        if r.pos != end:
            raise r.fail("receipt length mismatch")
        return cls(account, seq, prev, receipt, signature, r.data[start:r.pos])


Entry = Union[Receipt, Payment]


def encode_authorization(authorization: Authorization) -> bytes:
    """The transmitted form of a signed authorization: body, then the payer's signature."""
    if len(authorization.signature) != SIG_LEN:
        raise InvalidEntry("only a signed authorization can be sent")
    return authorization.body + authorization.signature


def decode_authorization(data: bytes) -> Authorization:
    """Parse a signed authorization (body | signature 64), strictly; the signature is not verified here."""
    data = bytes(data)
    if not data.startswith(TAG_AUTHORIZATION) or len(data) <= SIG_LEN:
        raise InvalidEntry("malformed authorization: unknown record type or truncated")
    r = _Reader(data[:-SIG_LEN], "authorization")
    auth = Authorization.read(r, data[-SIG_LEN:])
    r.end()
    return auth


def decode_entry(data: bytes) -> Entry:
    """Parse one encoded chain entry (body, then its signatures outermost first), strictly."""
    data = bytes(data)
    if data.startswith(TAG_RECEIPT) and len(data) > SIG_LEN:
        r = _Reader(data[:-SIG_LEN], "receipt")
        entry: Entry = Receipt.read(r, data[-SIG_LEN:])
    elif data.startswith(TAG_PAYMENT) and len(data) > 2 * SIG_LEN:
        r = _Reader(data[:-2 * SIG_LEN], "payment")
        entry = Payment.read(r, data[-2 * SIG_LEN:-SIG_LEN], data[-SIG_LEN:])
    else:
        raise InvalidEntry("malformed entry: unknown record type or truncated")
    r.end()
    return entry


# The fields of entry_json, in its order (and "invokes" and "covers" for an aggregated transfer, "for_job" for a job
# run on another node).
ENTRY_FIELDS = ("id", "kind", "account", "seq", "prev", "delta", "amount", "payer", "payee", "usage", "job", "cap", "nonce",
                "expires_at", "settled_at", "authorization", "receipt", "receipt_seq", "encoded", "invokes", "covers",
                "for_job")


def entry_json(entry: Entry) -> dict:
    """A readable view of an entry; `encoded` (hex) is the authoritative form."""
    receipt, auth = entry.receipt, entry.authorization
    out = {
        "id": entry.id.hex(),
        "kind": entry.kind,
        "account": public_id(entry.account),
        "seq": entry.seq,
        "prev": entry.prev.hex(),
        "delta": entry.delta,
        "amount": receipt.amount,
        "payer": public_id(auth.payer),
        "payee": public_id(auth.payee),
        "usage": dict(receipt.usage),
        "job": auth.job,
        "cap": auth.cap,
        "nonce": auth.nonce.hex(),
        "expires_at": auth.expires_at,
        "settled_at": receipt.settled_at,
        "authorization": auth.id.hex(),
        "receipt": receipt.id.hex(),
        "receipt_seq": receipt.seq,
        "encoded": entry.encode().hex(),
    }
    tab = parse_tab_job(auth.job)
    if tab is not None:
        out["invokes"], out["covers"] = tab
    paid_job = parse_job_tab(auth.job)
    if paid_job is not None:
        out["for_job"] = paid_job
    return out


# An aggregated transfer (ledger/tabs.py) pays for many invokes: its job reference names how many and the
# Merkle root of their provenance ids (the ids are stored under the root).
TAB_JOB_PREFIX = "compute:tab:"


def parse_tab_job(job: str) -> tuple[int, str] | None:
    """(count, Merkle root hex) of an aggregated transfer's job reference, else None."""
    if not job.startswith(TAB_JOB_PREFIX):
        return None
    count, _, root = job[len(TAB_JOB_PREFIX):].partition(":")
    return (int(count), root) if is_whole_number(count) and len(root) == 64 else None


# A job run on another node is paid on a tab of its own, whose job reference names the job: every tab's reference
# begins with "compute:rtab", which is what a provider takes a tab by (compute/remote_tabs.py).
JOB_TAB_PREFIX = "compute:rtab:job:"


def parse_job_tab(job: str) -> str | None:
    """The id of the job a job's tab's reference names, else None."""
    return (job[len(JOB_TAB_PREFIX):] or None) if job.startswith(JOB_TAB_PREFIX) else None


# --- making signed records (the key holder's side) --------------------------------
def authorize(payer, payee: bytes, cap: int, job: str, expires_at: int, nonce: bytes) -> Authorization:
    """The payer's signed promise to pay `payee` up to `cap` for `job` until `expires_at`."""
    auth = Authorization(payer.public_key, payee, cap, nonce, expires_at, job)
    return auth.signed(payer.sign(auth.body))


def make_receipt(payee, seq: int, prev: bytes, authorization: Authorization, amount: int,
                 usage: dict[str, int], settled_at: int) -> Receipt:
    """The payee's signed chain entry for metered work under `authorization`."""
    receipt = Receipt(payee.public_key, seq, prev, amount, settled_at, normalize_usage(usage), authorization)
    return receipt.signed(payee.sign(receipt.body))


def make_payment(payer, seq: int, prev: bytes, receipt: Receipt) -> Payment:
    """The payer's signed chain entry countersigning `receipt`."""
    payment = Payment(payer.public_key, seq, prev, receipt)
    return payment.signed(payer.sign(payment.body))
