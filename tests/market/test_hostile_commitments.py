"""Signed market commitments from strangers with numbers meant to freeze or skew a node: huge or
long-winded weights, prices, quantities, windows and timestamps.  Every one is refused at parse time,
and a node that received them keeps its book clean and its puts quick."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation import Stamp
from xsc.allocation.core.models import MAX_DECIMAL_DIGITS, MAX_DECIMAL_PLACES, MAX_WEIGHT, Commitment
from xsc.errors import InvalidMarketCommitment
from xsc.identity import Identity
from xsc.market import parse_commitment
from xsc.market.replication import RECEIVE_BATCH
from xsc.node.appkeys import NODE
from xsc.node.http.common import IN_POOL_BYTES
from xsc.node.problems import status_of
from tests.support.attacks import HOSTILE, fake_descriptors, honest_commitment, hostile_commitment, now_ms, signed
from tests.support.peers import api, http, node_id

VICTIM = Identity.generate()


@pytest.mark.parametrize("where,value", HOSTILE)
def test_every_number_of_a_commitment_is_bounded_at_parse_time(where, value) -> None:
    stranger = Identity.generate()
    with pytest.raises(InvalidMarketCommitment) as err:
        parse_commitment(hostile_commitment(stranger, where, value, VICTIM.id), now_ms=now_ms())
    assert ("recognition" if where == "weight" else where.rsplit(".", 1)[-1]) in err.value.message


@pytest.mark.parametrize("where", ["asks.quantity", "bids.quantity", "timestamp"])
def test_no_integer_of_a_commitment_is_past_what_a_json_reader_holds_exactly(where) -> None:
    """A reader that holds JSON numbers as doubles (JavaScript, the dashboard) reads 2^53 as 2^53 + 1 too."""
    stranger = Identity.generate()
    with pytest.raises(InvalidMarketCommitment, match=f"{where.rsplit('.', 1)[-1]}.*less than or equal to "
                                                      "9007199254740991"):
        parse_commitment(hostile_commitment(stranger, where, 2**53, VICTIM.id))
    assert parse_commitment(hostile_commitment(stranger, where, 2**53 - 1, VICTIM.id))


def test_a_field_named_to_forge_a_log_line_is_refused_in_one_printable_line() -> None:
    """The refusal names the field as the stranger spelt it, and the node logs it (market/replication.py): its line
    break and escape sequence forge no line of the node's log."""
    fields = {**honest_commitment(Identity.generate(), VICTIM.id), "\x1b[2J\nINFO xsc.market: trusted " + "x" * 300: 1}
    with pytest.raises(InvalidMarketCommitment) as err:
        parse_commitment(fields, now_ms=now_ms())
    said = err.value.message
    assert said.isprintable() and said.startswith("invalid market commitment: [2J INFO xsc.market: trusted x"), said
    assert said.endswith("…: Extra inputs are not permitted"), said


def _slot(fields: dict, **changes) -> dict:
    ask = fields["asks"][0]
    return {**fields, "asks": [{**ask, "slot": {k: v for k, v in {**ask["slot"], **changes}.items() if v != "-"}}]}


@pytest.mark.parametrize("change, where", [
    (lambda c: {**c, "recognition": {VICTIM.id: 2.5}}, f"recognition.{VICTIM.id} is 2.5"),
    (lambda c: _slot(c, location=["any"]), 'asks.0.slot.location is ["any"]'),
    (lambda c: _slot(c, tags="-"), "asks.0.slot.tags is missing"),
    (lambda c: {**c, "bids": [{**c["bids"][0], "min_availability": "-"}]}, "bids.0.min_availability is missing"),
], ids=["weight", "location", "tags", "min_availability"])  # ids of their own: a node id differs in each worker
def test_a_commitment_spelled_otherwise_than_it_was_signed_is_refused_before_its_signature_is_checked(change, where):
    stranger = Identity.generate()
    fields = honest_commitment(stranger, VICTIM.id)
    assert parse_commitment(fields)
    changed = change(fields)
    changed["bids"] = [{k: v for k, v in b.items() if v != "-"} for b in changed["bids"]]
    with pytest.raises(InvalidMarketCommitment, match=re.escape(where) + ".*canonical form") as err:
        parse_commitment(changed)
    assert status_of(err.value) == 400 and "one form its signature covers" in err.value.hint


def test_future_dated_commitments_are_refused() -> None:
    stranger = Identity.generate()
    ahead = hostile_commitment(stranger, "timestamp", now_ms() + 3_600_000, VICTIM.id)
    with pytest.raises(InvalidMarketCommitment, match="in the future"):
        parse_commitment(ahead, now_ms=now_ms())
    assert parse_commitment(hostile_commitment(stranger, "timestamp", now_ms(), VICTIM.id), now_ms=now_ms())


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
    return http(node.url, "POST", path, body, signed(signer, "POST", path, body, receiver))


@pytest.mark.slow
def test_a_node_that_receives_hostile_commitments_keeps_a_clean_book_and_quick_puts(node_process) -> None:
    node = node_process("victim")
    victim = node_id(node)
    status, before = api(node, "GET", "/v1/market/book")
    assert status == 200, before
    strangers = [Identity.generate() for _ in range(len(HOSTILE) + 2)]
    # Each key first makes itself a peer (a self-signed descriptor, as any node can): only peers' commitments
    # are even parsed, so the hostile numbers reach the parser.
    descriptors = fake_descriptors(strangers, "127.0.0.1", 1)
    status, answer = _signed(node, strangers[0], victim, "/v1/peer/descriptors", {"descriptors": descriptors})
    assert status == 200, answer
    status, peers = api(node, "GET", "/v1/peers")
    assert {s.id for s in strangers} <= {p["id"] for p in peers["peers"]}, peers

    commitments = [hostile_commitment(s, where, value, victim) for s, (where, value) in zip(strangers, HOSTILE)]
    commitments.append(hostile_commitment(strangers[-2], "timestamp", now_ms() + 3_600_000, victim))
    commitments.append(honest_commitment(strangers[-1], victim))  # the one control: an honest commitment is taken
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


async def test_a_node_refuses_to_recognise_itself(node) -> None:
    """The allocator ignores a weight for oneself (and `weights` leaves it out): stored, it would only say it
    was set."""
    me = node.app[NODE].peers.identity.id
    resp = await node.post("/v1/market/recognize", json={"peer": me, "weight": "5"})
    problem = await resp.json()
    assert resp.status == 400 and "does not recognise itself" in problem["detail"], problem
    assert (await (await node.get("/v1/market/recognition")).json()) == {"recognition": []}


async def test_a_full_book_swap_is_checked_in_batches_that_let_the_event_loop_serve_others(node_factory) -> None:
    """Every commitment of a swap is checked (an Ed25519 verify each): a message of 1,001 held the loop ~0.4 s of
    CPU at once.  Now the body is parsed in the CPU pool and the commitments are checked RECEIVE_BATCH at a time."""
    node = await node_factory("victim", health={"probe_interval": 3600}, peers={"gossip_interval": 3600})
    market, me = node.app[NODE].market, node.app[NODE].peers.identity.id
    strangers = [Identity.generate() for _ in range(80)]
    for at in range(0, len(strangers), 16):  # they make themselves peers: 16 new ones a message
        raw = json.dumps({"descriptors": fake_descriptors(strangers[at:at + 16])}).encode()
        headers = signed(strangers[at], "POST", "/v1/peer/descriptors", raw, me)
        assert (await node.post("/v1/peer/descriptors", data=raw, headers=headers)).status == 200
    # A swap of more than IN_POOL_BYTES goes through the route: its body is parsed off the loop, every one taken.
    raw = json.dumps({"commitments": [honest_commitment(s, me) for s in strangers]}).encode()
    assert len(raw) >= IN_POOL_BYTES
    response = await node.post("/v1/peer/market", data=raw, headers=signed(strangers[0], "POST", "/v1/peer/market",
                                                                              raw, me))
    assert response.status == 200, await response.text()
    held = {c["participant"] for c in (await response.json())["commitments"]}
    assert {s.id for s in strangers} <= held

    turns = 0

    async def another_request() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(another_request())
    await asyncio.sleep(0)
    turns = 0
    newer = [honest_commitment(s, me, events=2) for s in strangers]  # each supersedes the one held
    newer[5] = hostile_commitment(strangers[5], "weight", "1E+20000000", me)
    assert await market.replication.take(newer) == len(strangers) - 1  # each checked: the hostile one refused
    other.cancel()
    assert turns >= len(strangers) // RECEIVE_BATCH - 1, turns  # the loop went round between the batches
    assert market.book.get(strangers[5].id).to_json() != newer[5]
    # The very commitments held, sent again, are not checked again and change nothing.
    assert await market.replication.take(newer) == 0
    assert market.replication.payload() == [c.to_json() for c in market.book.commitments()]


async def test_a_standing_need_is_at_most_what_a_json_reader_holds_exactly(node) -> None:
    """Its quantity is published in the node's commitment: past 2^53 - 1 a dashboard would read another number."""
    resp = await node.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 2**53, "seconds": 600})
    problem = await resp.json()
    assert resp.status == 400 and "quantity must be an integer from 1 to 9007199254740991" in problem["detail"], problem
    resp = await node.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 2**53 - 1, "seconds": 600})
    assert resp.status == 201, await resp.text()
