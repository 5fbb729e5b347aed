"""Signed market commitments from strangers with numbers meant to freeze or skew a node: huge or
long-winded weights, prices, quantities, windows and timestamps.  Every one is refused at parse time,
and a node that received them keeps its book clean and its puts quick."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation import Stamp
from xsc.allocation.models import MAX_DECIMAL_DIGITS, MAX_DECIMAL_PLACES, MAX_WEIGHT, Commitment
from xsc.errors import InvalidMarketCommitment
from xsc.identity import Identity, sign_request
from xsc.market import parse_commitment, sign_commitment, signed_bytes
from xsc.peers.descriptors import make_descriptor
from tests.support.market import ask, bid
from tests.support.peers import api, http, node_id

VICTIM = Identity.generate()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _honest(identity: Identity, recognise: str) -> dict:
    me = identity.id
    mc = sign_commitment(identity, asks=[ask(me, "c1", 10**9, 10)], bids=[bid(me, "n1", 10**6, 50)],
                         recognition={recognise: Decimal("2.5")}, stamp=Stamp.seed().event(), timestamp=_now_ms())
    return mc.to_json()


def _resigned(identity: Identity, fields: dict) -> dict:
    """The commitment with its fields changed, and signed again by its participant: a valid signature."""
    body = {k: v for k, v in fields.items() if k != "signature"}
    return {**body, "signature": identity.sign(signed_bytes(body)).hex()}


def _hostile(identity: Identity, where: str, value, recognise: str = VICTIM.id) -> dict:
    fields = _honest(identity, recognise)
    if where == "weight":
        fields["recognition"] = {recognise: value}
    elif where == "timestamp":
        fields["timestamp"] = value
    else:
        side, name = where.split(".", 1)
        order = fields[side][0]
        if name in order:
            order[name] = value
        else:
            order["slot"][name] = value
    return _resigned(identity, fields)


HOSTILE = [
    ("weight", "1E+20000000"),  # the one from the issue: as_integer_ratio takes 25-50 s
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
]


@pytest.mark.parametrize("where,value", HOSTILE)
def test_every_number_of_a_commitment_is_bounded_at_parse_time(where, value) -> None:
    stranger = Identity.generate()
    with pytest.raises(InvalidMarketCommitment) as err:
        parse_commitment(_hostile(stranger, where, value), now_ms=_now_ms())
    assert ("recognition" if where == "weight" else where.rsplit(".", 1)[-1]) in err.value.message


def test_future_dated_commitments_are_refused() -> None:
    stranger = Identity.generate()
    ahead = _hostile(stranger, "timestamp", _now_ms() + 3_600_000)
    with pytest.raises(InvalidMarketCommitment, match="in the future"):
        parse_commitment(ahead, now_ms=_now_ms())
    assert parse_commitment(_hostile(stranger, "timestamp", _now_ms()), now_ms=_now_ms())


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=0, max_value=MAX_WEIGHT, allow_nan=False, allow_infinity=False,
                   places=None))
def test_an_accepted_weight_is_a_small_fraction(weight: Decimal) -> None:
    """What matching does with a weight (as_integer_ratio, lcm of denominators) stays small for any accepted one."""
    try:
        c = Commitment(participant="p", recognition={"r": weight}, stamp=Stamp.seed(), timestamp=0)
    except ValueError:
        _, digits, exponent = weight.as_tuple()
        assert len(digits) > MAX_DECIMAL_DIGITS or exponent < -MAX_DECIMAL_PLACES
        return
    num, den = c.recognition["r"].as_integer_ratio()
    assert den <= 10**MAX_DECIMAL_PLACES and num <= 10**(MAX_DECIMAL_DIGITS + MAX_DECIMAL_PLACES)


def _signed(node, signer: Identity, receiver: str, path: str, payload: dict) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    headers = sign_request(signer, "POST", path, body, receiver=receiver)
    return http(node.url, "POST", path, body, {**headers, "Content-Type": "application/json"})


@pytest.mark.slow
def test_a_node_that_receives_hostile_commitments_keeps_a_clean_book_and_quick_puts(node_process) -> None:
    node = node_process("victim")
    victim = node_id(node)
    status, before = api(node, "GET", "/v1/market/book")
    assert status == 200, before
    strangers = [Identity.generate() for _ in range(len(HOSTILE) + 2)]
    # Each key first makes itself a peer (a self-signed descriptor, as any node can): only peers' commitments
    # are even parsed, so the hostile numbers reach the parser.
    descriptors = [make_descriptor(s, url=f"http://127.0.0.1:{1 + n}", capacity=1, free=1, version="0.1.0",
                                   timestamp=_now_ms()).to_json() for n, s in enumerate(strangers)]
    status, answer = _signed(node, strangers[0], victim, "/v1/peer/descriptors", {"descriptors": descriptors})
    assert status == 200, answer
    status, peers = api(node, "GET", "/v1/peers")
    assert {s.id for s in strangers} <= {p["id"] for p in peers["peers"]}, peers

    commitments = [_hostile(s, where, value, victim) for s, (where, value) in zip(strangers, HOSTILE)]
    commitments.append(_hostile(strangers[-2], "timestamp", _now_ms() + 3_600_000, victim))
    commitments.append(_honest(strangers[-1], victim))  # the one control: an honest commitment is taken
    status, answer = _signed(node, strangers[0], victim, "/v1/peer/market", {"commitments": commitments})
    assert status == 200, answer
    held = {c["participant"] for c in answer["commitments"]}
    assert strangers[-1].id in held, "the honest commitment of a peer was not taken"
    assert not held & {s.id for s in strangers[:-1]}, "a hostile commitment entered the book"
    status, after = api(node, "GET", "/v1/market/book")
    assert status == 200 and after["participants"] == before["participants"] + 1, after

    # The operator's put matches on the market as usual (it froze for 25-50 s per put before).
    put = node.xsc("store", "put", "-", input=b"still quick", timeout=60)
    assert put.returncode == 0, put.stderr
    assert node.xsc("store", "get", put.stdout.decode().strip()).stdout == b"still quick"
    status, health = http(node.url, "GET", "/health")
    assert status == 200, health


async def test_a_weight_the_user_sets_is_held_to_what_a_commitment_may_carry(node) -> None:
    """Else the node could not sign its own commitment any more (every publish would fail)."""
    peer = Identity.generate().id
    for weight in ("0." + "0" * 60 + "1", "1." + "3" * 50):
        resp = await node.post("/v1/market/recognize", json={"peer": peer, "weight": weight})
        assert resp.status == 400, await resp.text()
        assert "at most 40 digits" in (await resp.json())["detail"]
    resp = await node.post("/v1/market/recognize", json={"peer": peer, "weight": "0.125"})
    assert resp.status == 200, await resp.text()
