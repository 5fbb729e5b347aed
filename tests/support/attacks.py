"""Attacks as a stranger makes them: the hostile payloads the attack tests send, shared with
bench/bench_attacks.py (which performs them against a node process while another process times /health).

- wasm: modules with `v128` params, results, globals and imports, GC arrays, `externref`, exceptions, `add`,
  and `empty_functions(n)` (the module-push flood's module);
- market: `HOSTILE` (a commitment's field and the number meant to freeze or skew a node), `honest_commitment`,
  `hostile_commitment` (re-signed: a valid signature), `free_ask` (an ask at price 0), `fake_descriptors`
  (self-signed descriptors of fresh keys, as any node can make);
- allocation: `forged_allocation` (1,001 states and 1,001 receipts naming a known peer, signed by another key);
- ledger: `receipt_claim` (a storage receipt's request body for an amount the attacker chooses);
- compute: `invoke_body` (a provider's invoke, paid by one authorization);
- `signed` (the headers of a signed peer request), `DEEP_JSON` (100,000 nested arrays).
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal

import wasmtime

from xsc.allocation import AllocationState, Stamp
from xsc.allocation.core.records import sign_receipt, sign_state
from xsc.allocation.core.rounds import Receipt, ReceiptEntry
from xsc.identity import Identity, parse_public_id, sign_request
from xsc.ledger import byte_hours
from xsc.ledger.core.model import authorize, encode_authorization
from xsc.market import sign_commitment, signed_bytes
from xsc.peers.core.descriptors import make_descriptor

from .market import HOUR, ask, bid
from .shares import EncodedFile

# --- wasm ---------------------------------------------------------------------------------------------------------
V128_PARAM = '(module (func (export "f") (param v128)) (func (export "add") (param i32 i32) (result i32) ' \
             'local.get 0 local.get 1 i32.add))'
V128_GLOBAL = '(module (global (export "g") v128 (v128.const i64x2 1 2)))'
V128_RESULT = '(module (func (export "f") (result v128) v128.const i64x2 0 0))'
V128_IMPORT = '(module (import "wasi_snapshot_preview1" "fd_write" (func (param v128))))'
GC_ARRAY = '(module (type $a (array (mut i8))) (func (export "f") (result i32) ' \
           '(array.len (array.new_default $a (i32.const 30000000)))))'
EXTERNREF = '(module (func (export "f") (param externref)))'
EXCEPTIONS = '(module (tag $e) (func (export "f") throw $e))'
ADD = '(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))'


def wasm_of(wat: str) -> bytes:
    return wasmtime.wat2wasm(wat)


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _section(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + _leb(len(payload)) + payload


def empty_functions(n: int) -> bytes:
    """A valid module of `n` empty functions `() -> ()` (8 modules of 250,000 took a node to 2.2 GiB once)."""
    types = _section(1, _leb(1) + b"\x60\x00\x00")
    funcs = _section(3, _leb(n) + b"\x00" * n)
    code = _section(10, _leb(n) + b"\x02\x00\x0b" * n)  # each body: 2 bytes, no locals, `end`
    return b"\0asm\1\0\0\0" + types + funcs + code


# --- allocation ---------------------------------------------------------------------------------------------------
def forged_allocation(named: str, records: int = 1001) -> bytes:
    """A `POST /v1/peer/allocation` body of `records` states and as many receipts naming the node `named` (a peer
    the target knows), each signed by a fresh key: every signature fails to verify."""
    forger, stamp, now = Identity.generate(), Stamp.seed().event(), now_ms()
    state = AllocationState.model_construct(provider=forger.id, slot_allocations=(), wanted=(), converged=True,
                                            convergence_history=())
    receipt = Receipt.model_construct(recipient=forger.id, over_allocation=0, damping_factor=1, stamp=Stamp.seed(),
                                      timestamp=0, needs={"need-1": ReceiptEntry(quantity=10, total=0)})
    forged_state = {**sign_state(forger, state, stamp=stamp, timestamp=now).to_json(), "provider": named}
    forged_receipt = {**sign_receipt(forger, receipt, stamp=stamp, timestamp=now).to_json(), "recipient": named}
    return json.dumps({"states": [forged_state] * records, "receipts": [forged_receipt] * records}).encode()


# --- signed peer requests -----------------------------------------------------------------------------------------
def signed(signer: Identity, method: str, path: str, body: bytes, receiver: str,
           content_type: str = "application/json") -> dict[str, str]:
    """The headers of a peer request from `signer` to the node `receiver`."""
    return {**sign_request(signer, method, path, body, receiver=receiver), "Content-Type": content_type}


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000  # the parser's recursion made it a 500 once


def now_ms() -> int:
    return int(time.time() * 1000)


# --- market -------------------------------------------------------------------------------------------------------
def _bushy(depth: int, k: int = 0):
    return 3 + k % 97 if depth == 0 else (k % 3, _bushy(depth - 1, 2 * k), _bushy(depth - 1, 2 * k + 1))


HOSTILE = [
    ("weight", "1E+20000000"),  # the one from the issue: as_integer_ratio took 25-50 s
    ("weight", "1E-20000000"),
    ("weight", "0." + "0" * 60 + "1"),
    ("weight", "1" + "0" * 12),  # past MAX_WEIGHT
    ("weight", "3." + "1" * 200),
    ("asks.price", 2**70),
    ("bids.price", 10**13),
    ("asks.quantity", 2**64),
    ("bids.end", 2**50),
    ("asks.start", -5),
    ("bids.min_availability", "0." + "9" * 100),
    ("timestamp", 2**60),
    ("stamp", Stamp(0, _bushy(13)).encode().hex()),  # a valid stamp of 10,000 bytes: decoding one costs its size
]


def honest_commitment(identity: Identity, recognise: str, events: int = 1) -> dict:
    """A plain commitment of `identity` (its stamp after `events` events: a higher one supersedes a lower)."""
    me = identity.id
    stamp = Stamp.seed()
    for _ in range(events):
        stamp = stamp.event()
    mc = sign_commitment(identity, asks=[ask(me, "c1", 10**9, 10)], bids=[bid(me, "n1", 10**6, 50)],
                         recognition={recognise: Decimal("2.5")}, stamp=stamp, timestamp=now_ms())
    return mc.to_json()


def resigned(identity: Identity, fields: dict) -> dict:
    """The commitment with its fields changed, and signed again by its participant: a valid signature."""
    body = {k: v for k, v in fields.items() if k != "signature"}
    return {**body, "signature": identity.sign(signed_bytes(body)).hex()}


def hostile_commitment(identity: Identity, where: str, value, recognise: str) -> dict:
    """An honest commitment of `identity` with one number (`where`, as in HOSTILE) set to `value`."""
    fields = honest_commitment(identity, recognise)
    if where == "weight":
        fields["recognition"] = {recognise: value}
    elif where in ("timestamp", "stamp"):
        fields[where] = value
    else:
        side, name = where.split(".", 1)
        order = fields[side][0]
        if name in order:
            order[name] = value
        else:
            order["slot"][name] = value
    return resigned(identity, fields)


def free_ask(identity: Identity) -> dict:
    """A commitment offering storage at price 0 (it won every match once, and placement then refused it)."""
    now = int(time.time())
    commitment = sign_commitment(identity, asks=(ask(identity.id, "storage-free", 10**15, 0, now - 60, now + 2 * HOUR),),
                                 bids=(), recognition={}, stamp=Stamp.seed().event(), timestamp=now_ms())
    return commitment.to_json()


def fake_descriptors(identities: list[Identity], host: str = "127.0.0.9", first_port: int = 10000) -> list[dict]:
    """Self-signed descriptors of these keys at addresses where nothing listens."""
    now = now_ms()
    return [make_descriptor(s, url=f"http://{host}:{first_port + i}", capacity=1, free=1, version="0.1.0",
                            timestamp=now).to_json() for i, s in enumerate(identities)]


# --- ledger and compute -------------------------------------------------------------------------------------------
def receipt_claim(payer: Identity, victim: str, f: EncodedFile, start: int, end: int, amount: int, *,
                  expires_in: int = 600) -> dict:
    """The body of a storage receipt request for share 0 of `f` on node `victim`, for `amount` paid by `payer`."""
    job = f"store:{f.si.hex()}:0:{start}:{end}"
    auth = authorize(payer, parse_public_id(victim), amount, job, int(time.time()) + expires_in, os.urandom(16))
    return {"authorization": encode_authorization(auth).hex(), "amount": amount,
            "usage": {"byte_hours": byte_hours(f.share_bytes, end - start)}}


INVOKE_PRICE = 10**9  # above any ask


def invoke_body(attacker: Identity, provider: bytes, module: str, *, expires_in: int = 600) -> bytes:
    """A provider's invoke of `add 1 2` in `module`, paid by one authorization from `attacker` to the public key
    `provider`."""
    auth = authorize(attacker, provider, 10**12, "compute:attack", int(time.time()) + expires_in, os.urandom(16))
    return json.dumps({"call": {"module": module, "function": "add", "args": [1, 2], "fuel": 1_000_000},
                       "price": INVOKE_PRICE, "authorization": encode_authorization(auth).hex(),
                       "deal": {}}).encode()
