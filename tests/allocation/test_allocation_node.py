"""Live allocation rounds on in-process nodes: records published and received, and every hostile record refused
(bad signature, unknown peer, oversize, out-of-range numbers, stale stamp, beyond the offer)."""

from __future__ import annotations

import json
from collections import Counter
import re
import time
from decimal import Decimal

import pytest

from tests.support.allocation import FORK_WAIT, NEVER, following, in_step, joining, pair
from tests.support.waiting import eventually_async
from xsc.allocation import AllocationState, SlotAllocation, Stamp
from xsc.allocation.core.records import MAX_ALLOCATIONS, parse_receipt, parse_state, sign_receipt, sign_state
from xsc.allocation.core.rounds import Receipt, ReceiptEntry
from xsc.allocation.itc_ids import FORK_BURST, FORK_RATE
from xsc.allocation.service import quiet
from xsc.errors import DealRefused, InvalidAllocationRecord
from xsc.identity import Identity, sign_request
from xsc.node.appkeys import NODE
from xsc.node.limits import RateLimiter
from xsc.node.problems import status_of

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600},
         "market": {"allocation_delay": 0.05, "allocation_fork_wait": FORK_WAIT}}


def _now() -> int:
    return int(time.time() * 1000)


def _state(identity: Identity, allocations=(), stamp: Stamp | None = None, **kw) -> dict:
    state = AllocationState.model_construct(
        provider=identity.id, slot_allocations=tuple(SlotAllocation(*a) for a in allocations), wanted=kw.get("wanted", ()),
        converged=True, convergence_history=())
    return sign_state(identity, state, stamp=stamp or Stamp.seed().event(), timestamp=kw.get("timestamp", _now())).to_json()


def _receipt(identity: Identity, stamp: Stamp | None = None) -> dict:
    receipt = Receipt.model_construct(recipient=identity.id, over_allocation=0, damping_factor=1, stamp=Stamp.seed(),
                                      timestamp=0, needs={"need-1": ReceiptEntry(quantity=10, total=0)})
    return sign_receipt(identity, receipt, stamp=stamp or Stamp.seed().event(), timestamp=_now()).to_json()


async def _post(node, sender: Identity, body: dict) -> tuple[int, dict]:
    raw = json.dumps(body).encode()
    path = "/v1/peer/allocation"
    headers = {**sign_request(sender, "POST", path, raw, receiver=node.app[NODE].peers.identity.id),
               "Content-Type": "application/json"}
    response = await node.post(path, data=raw, headers=headers)
    return response.status, await response.json(content_type=None)


def test_records_round_trip_signed_and_every_change_breaks_the_signature() -> None:
    me = Identity.generate()
    state = _state(me)
    assert parse_state(state).provider == me.id
    receipt = _receipt(me)
    assert parse_receipt(receipt).needs["need-1"].quantity == 10
    for field, value in (("converged", False), ("timestamp", state["timestamp"] + 1), ("delta", "0.5")):
        with pytest.raises(InvalidAllocationRecord, match="not signed"):
            parse_state({**state, field: value})
    with pytest.raises(InvalidAllocationRecord, match="not signed"):
        parse_receipt({**receipt, "over_allocation": 1})


@pytest.mark.parametrize("change, why", [
    (lambda s: {**s, "allocations": [["storage-1", s["provider"], "n", 1, 1]] * 2}, "two allocations"),
    (lambda s: {**s, "allocations": [["storage-1", s["provider"], "n", 2**63, 1]]}, "less than or equal"),
    (lambda s: {**s, "allocations": [["storage-1", s["provider"], "n", 2**53, 1]]}, "less than or equal to 9007199254740991"),
    (lambda s: {**s, "allocations": [["storage-1", s["provider"], "n", -1, 1]]}, "greater than or equal"),
    (lambda s: {**s, "allocations": [["storage-1", s["provider"], "n", 1, 3]]}, "Input should be 1 or 2"),
    (lambda s: {**s, "delta": "1E+20000000"}, "less than or equal"),
    (lambda s: {**s, "timestamp": 2**60}, "less than or equal"),
    (lambda s: {**s, "stamp": "00" * 5000}, "hex digits"),
    (lambda s: {**s, "allocations": [["c", "x", "n", 1, 1]] * (MAX_ALLOCATIONS + 1)}, "10001 items .at most 10000."),
    (lambda s: {**s, "provider": "not-a-node"}, "node id"),
])
def test_a_state_out_of_bounds_is_refused_before_its_signature_is_checked(change, why) -> None:
    state = _state(Identity.generate())
    with pytest.raises(InvalidAllocationRecord, match=why):
        parse_state(change(state))


def _tier(state: dict, tier) -> dict:
    return {**state, "allocations": [[*state["allocations"][0][:4], tier]]}


@pytest.mark.parametrize("change, where", [
    (lambda s: _tier(s, 1.0), "allocations.0.4 is 1.0"),
    (lambda s: _tier(s, True), "allocations.0.4 is true"),
    (lambda s: {**s, "converged": 1}, "converged is 1"),
    (lambda s: {**s, "converged": "true"}, 'converged is "true"'),
    (lambda s: {**s, "delta": int(s["delta"])}, "delta is 1"),
    (lambda s: {k: v for k, v in s.items() if k != "wanted"}, "wanted is missing"),
])
def test_a_state_spelled_otherwise_than_it_was_signed_is_refused_before_its_signature_is_checked(change, where):
    """Each spelling means what the signed one means, and was accepted with its signature: anyone could make a second
    valid record of one, its bytes and hash different, its signature the same."""
    me = Identity.generate()
    state = _state(me, [("storage-1", "need-1", Identity.generate().id, 5, 1)], wanted=())
    assert parse_state(state).allocations[0][4] == 1
    with pytest.raises(InvalidAllocationRecord, match=re.escape(where) + ".*canonical form") as err:
        parse_state(change(state))
    assert status_of(err.value) == 400 and err.value.hint


def test_a_receipt_spelled_otherwise_than_it_was_signed_is_refused() -> None:
    receipt = _receipt(Identity.generate())
    with pytest.raises(InvalidAllocationRecord, match="damping_factor is 1, not in its canonical form") as err:
        parse_receipt({**receipt, "damping_factor": 1})
    assert status_of(err.value) == 400
    with pytest.raises(InvalidAllocationRecord, match="needs.need-1.by_provider is missing"):
        parse_receipt({**receipt, "needs": {"need-1": {"quantity": 10, "total": 0, "wanting": []}}})


def test_a_receipt_whose_total_is_not_its_parts_or_whose_damping_is_out_of_range_is_refused() -> None:
    me, other = Identity.generate(), Identity.generate()
    receipt = _receipt(me)
    with pytest.raises(InvalidAllocationRecord, match="not the sum"):
        parse_receipt({**receipt, "needs": {"n": {"quantity": 5, "total": 9, "by_provider": {other.id: 1}}}})
    with pytest.raises(InvalidAllocationRecord, match="damping_factor"):
        parse_receipt({**receipt, "damping_factor": "1.5"})
    with pytest.raises(InvalidAllocationRecord, match="future"):
        parse_receipt(_receipt(me) | {}, now_ms=_now() - 3_600_000)


async def test_a_flood_of_forged_records_is_refused_before_its_body_or_at_its_first_forgery(node_factory,
                                                                                          caplog) -> None:
    """A fresh key's message of 1,001 states and 1,001 receipts naming known peers with bad signatures is
    refused before its body is read; from a known peer, the message ends at its first forged record, which is
    a strike and counted, not logged."""
    a, b = await pair(node_factory, **{**QUIET, "peers": {**QUIET["peers"], "quarantine_strikes": 1}})
    service = a.app[NODE].allocation
    b_identity, stranger = b.app[NODE].peers.identity, Identity.generate()
    forged_state = {**_state(b_identity), "signature": _state(stranger)["signature"]}
    forged_receipt = {**_receipt(b_identity), "signature": _receipt(stranger)["signature"]}
    flood = {"states": [forged_state] * 1001, "receipts": [forged_receipt] * 1001}
    before = dict(service.refused)
    status, answer = await _post(a, stranger, flood)
    assert status == 403 and answer["code"] == "unknown-peer", answer
    metrics = (await (await a.get("/metrics")).text()).splitlines()
    assert 'xsc_peer_refusals_total{code="unknown-peer"} 1.0' in metrics  # counted, as every peer refusal is
    caplog.set_level("INFO", logger="xsc.allocation")
    status, answer = await _post(a, b_identity, flood)
    assert status == 403 and answer["code"] == "forged-record", answer
    assert service.refused.get("bad signature", 0) == before.get("bad signature", 0) + 1  # the first, not 2,002
    # (b forking a's ITC id meanwhile is logged as it should be: not a line about the flood)
    assert not [r for r in caplog.records if r.name.startswith("xsc.allocation") and r.name != "xsc.allocation.itc_ids"
                ], caplog.records
    quarantined = await (await a.get("/v1/peers/quarantine")).json()  # one strike quarantines, here
    assert b_identity.id in json.dumps(quarantined), quarantined


async def test_each_hostile_record_is_refused_and_counted(node_factory) -> None:
    a, b = await pair(node_factory, **QUIET)
    service = a.app[NODE].allocation
    b_identity = b.app[NODE].peers.identity
    stranger = Identity.generate()
    # an unknown sender: refused before its body is read; an unknown peer's record: dropped before its signature
    status, answer = await _post(a, stranger, {"states": [_state(stranger)]})
    assert status == 403 and answer["code"] == "unknown-peer" and service.states.get(stranger.id) is None
    status, answer = await _post(a, b_identity, {"states": [_state(stranger)]})
    assert status == 200 and answer["refused"] == 1 and service.states.get(stranger.id) is None
    # bad signature: b's id, signed by someone else: the message ends there
    forged = {**_state(b_identity), "signature": _state(stranger)["signature"]}
    status, answer = await _post(a, b_identity, {"states": [forged]})
    assert status == 403 and answer["code"] == "forged-record" and service.states.get(b_identity.id) is None
    # out-of-range numbers
    status, answer = await _post(a, b_identity, {"receipts": [{**_receipt(b_identity), "damping_factor": "2"}]})
    assert answer["refused"] == 1 and service.receipts.get(b_identity.id) is None
    # beyond its offer: more units than b's capacity slot holds, or a slot b does not offer
    slot = next(x for x in a.app[NODE].market.book.get(b_identity.id).asks if x.slot.kind == "storage").slot
    too_much = _state(b_identity, [(slot.id, "need-1", a.app[NODE].peers.identity.id, slot.quantity + 1, 1)])
    not_offered = _state(b_identity, [("storage-0", "need-1", a.app[NODE].peers.identity.id, 1, 1)])
    status, answer = await _post(a, b_identity, {"states": [too_much, not_offered]})
    assert answer["refused"] == 2 and service.states.get(b_identity.id) is None
    # oversize: more records than a message may carry
    status, answer = await _post(a, b_identity, {"states": [_state(b_identity)] * 1002})
    assert status == 400 and "at most" in answer["detail"]
    # a good one is taken; the same again, and an older one, are stale
    newer = Stamp.seed().event().event()
    status, answer = await _post(a, b_identity, {"states": [_state(b_identity, stamp=newer)]})
    assert answer == {"changed": 1, "refused": 0}
    held = service.states.get(b_identity.id)
    status, answer = await _post(a, b_identity, {"states": [_state(b_identity, stamp=Stamp.seed().event())]})
    assert answer == {"changed": 0, "refused": 0} and service.states.get(b_identity.id) is held
    assert service.refused == {"unknown peer": 2, "bad signature": 1, "invalid": 1, "beyond its offer": 2,
                               "stale": 1}


async def test_a_joining_node_forks_its_itc_id_from_a_peer(node_factory) -> None:
    a, b = await pair(node_factory, **QUIET)
    ids = [n.app[NODE].allocation for n in (a, b)]
    # the setting (`market.allocation_fork_wait`) reaches them: b, which joins a, never seeds
    assert [s.ids.fork_wait for s in ids] == [FORK_WAIT, NEVER]
    await eventually_async(lambda: all(s.stamp is not None for s in ids), "both nodes' ITC ids", 30)
    first, second = ids
    assert first.ids.forked_from is None and second.ids.forked_from == first.me
    # the two ids are disjoint halves: their events never collide
    assert first.stamp.id != 1 and second.stamp.id != 1


async def test_a_put_is_served_from_the_allocation_and_a_removed_provider_leaves_it(node_factory) -> None:
    a, b = await pair(node_factory, **QUIET)
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    a.app[NODE].market.set_recognition(b_id, Decimal(1))
    b.app[NODE].market.set_recognition(a_id, Decimal(1))
    status = await a.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 1_000_000, "seconds": 600})
    assert status.status == 201
    need = (await status.json())["id"]
    await eventually_async(lambda: a.app[NODE].allocation.allocated("storage").get(b_id), "b to allocate to a's need")
    await eventually_async(lambda: (a.app[NODE].allocation.status()["received"] or {}).get(need, {}).get("total"), "a's receipt")
    before = a.app[NODE].allocation.status()["received"][need]
    assert before["by_provider"] == {b_id: 1_000_000} and before["total"] == 1_000_000

    response = await a.post("/v1/store/files", data=b"s" * 20_000)
    answer = await response.json()
    assert response.status == 201, answer
    served = a.app[NODE].dealing.status()["served_from_allocation"]
    assert served["needs"] >= 1 and b_id in answer["placement"], (served, answer["placement"])
    # what the put used of the allocation leaves the standing need (received and served stay equal)
    left = next(n["quantity"] for n in a.app[NODE].allocation.status()["needs"] if n["id"] == need)
    assert left == 1_000_000 - served["units"]
    await eventually_async(lambda: (a.app[NODE].allocation.status()["received"] or {}).get(need, {}).get("total") == left,
                 "b's allocation to follow the smaller need")

    # b removed: it leaves a's allocation at once and a put goes on without it
    assert (await a.delete(f"/v1/peers/{b_id}")).status == 200
    assert a.app[NODE].allocation.allocated("storage") == {}
    assert a.app[NODE].allocation.states.get(b_id) is None
    response = await a.post("/v1/store/files", data=b"t" * 20_000)
    answer = await response.json()
    assert response.status == 201 and b_id not in answer["placement"], answer


async def test_the_allocation_places_no_need_on_room_this_nodes_puts_in_flight_hold(node_factory) -> None:
    """A put still storing holds what it was given of a provider's slot: a deal placed from the allocation while it
    is in flight sees the rest of the slot only, as the call market does (placed on the book's whole slot, the second
    need went to b, with no room for it, rather than to c, which has)."""
    a = await node_factory("a", storage={"capacity": 0}, **QUIET)
    b = await joining(node_factory, a, "b", storage={"capacity": 1_000_000}, **QUIET)
    c = await joining(node_factory, a, "c", **{**QUIET, "market": {**QUIET["market"], "storage_ask_floor": 2000}})
    a_id, b_id, c_id = (n.app[NODE].peers.identity.id for n in (a, b, c))
    for provider in (b, c):
        await a.app[NODE].peers.add(provider.app[NODE].peers.url)
    for node in (a, b, c):
        await node.app[NODE].market.fill_book()
    await a.app[NODE].health.probe_round()  # b is seen up: it may be matched
    a.app[NODE].market.set_recognition(b_id, Decimal(1))
    b.app[NODE].market.set_recognition(a_id, Decimal(1))
    slot = max((x.slot for x in a.app[NODE].market.book.get(b_id).asks if x.slot.kind == "storage"),
               key=lambda s: s.quantity)
    size = slot.quantity * 6 // 10
    status = await a.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 10 * slot.quantity,
                                                        "seconds": 600})
    assert status.status == 201
    await eventually_async(lambda: a.app[NODE].allocation.allocated("storage").get(b_id, 0) >= size,
                           "b to allocate to a's need")
    dealing, needs = a.app[NODE].dealing, a.app[NODE].needs
    placed = await _dealt(dealing, needs, "first", size)
    assert placed.provider == b_id and placed.allocated

    # 40% of b's slot left while the first is stored
    assert (await _dealt(dealing, needs, "second", size)).provider == c_id
    needs.withdraw(["first", "second"])  # their puts ended, storing nothing
    # (a shape of its own: matched, not reused)
    assert (await _dealt(dealing, needs, "third", size - 1)).provider == b_id


async def _dealt(dealing, needs, name: str, size: int):
    """The assignment of a put's need of `size` bytes, opened (as a put in flight holds it) and dealt."""
    need = [dealing.need(name, "storage", size, 3600, 10**9)]
    needs.open(need)
    return (await dealing.deal(need))[name]


async def _allocated_to(node_factory, standing: int, size: int):
    """Node a with a standing storage need of `standing` bytes, and b allocating at least `size` of it to a, each
    recognising the other; (a, b's id)."""
    a = await node_factory("a", storage={"capacity": 0}, **QUIET)
    b = await joining(node_factory, a, "b", **QUIET)
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    for node in (a, b):
        await node.app[NODE].market.fill_book()
    await a.app[NODE].health.probe_round()  # b is seen up: it may be matched
    a.app[NODE].market.set_recognition(b_id, Decimal(1))
    b.app[NODE].market.set_recognition(a_id, Decimal(1))
    status = await a.post("/v1/allocation/needs", json={"kind": "storage", "quantity": standing, "seconds": 600})
    assert status.status == 201
    await eventually_async(lambda: a.app[NODE].allocation.allocated("storage").get(b_id, 0) >= size,
                           "b to allocate to a's need")
    return a, b_id


async def test_two_puts_in_flight_never_spend_one_allocations_room_twice(node_factory) -> None:
    """What a put still storing was placed from the allocation is not yet spent (it is once the put stored), but it
    holds that part of the allocation: a second put meanwhile is placed from what is left of it, else by the market
    (placed from the whole, the two used more of the provider's allocation than it gives)."""
    size = 600_000
    a, b_id = await _allocated_to(node_factory, standing=1_000_000, size=size)
    dealing, needs = a.app[NODE].dealing, a.app[NODE].needs
    placed = await _dealt(dealing, needs, "first", size)
    assert placed.provider == b_id and placed.allocated

    placed = await _dealt(dealing, needs, "second", size)
    assert placed.provider == b_id and not placed.allocated  # at most 400,000 of b's allocation left to it
    needs.withdraw(["first", "second"])  # their puts ended, storing nothing
    assert (await _dealt(dealing, needs, "third", size - 1)).allocated  # a shape of its own: matched, not reused


async def test_a_put_after_the_puts_holding_the_allocation_ended_is_placed_from_it_not_as_a_kept_deal(
        node_factory) -> None:
    """A deal's answer is kept for needs of its shape while what the allocation gives, less what puts in flight hold
    of it, is the same: once the put holding the allocation ended, a put of the shape the market placed meanwhile is
    placed from the allocation again, not as the kept deal was."""
    size = 600_000
    a, b_id = await _allocated_to(node_factory, standing=1_000_000, size=size)
    dealing, needs = a.app[NODE].dealing, a.app[NODE].needs
    placed = {}
    for name in ("first", "second"):
        needs.open([dealing.need(name, "storage", size, 3600, 10**9)])
        placed.update(await dealing.deal_alike(dealing.need(name, "storage", size, 3600, 10**9), [name]))
    assert placed["first"].allocated and not placed["second"].allocated  # the first holds b's allocation
    needs.withdraw(["first"])  # its put ended, storing nothing
    third = dealing.need("third", "storage", size, 3600, 10**9)
    needs.open([third])
    assert (await dealing.deal_alike(third, ["third"]))["third"].allocated


async def test_a_put_on_fewer_providers_than_shares_is_dealt_round_them_evenly_whatever_the_allocation_gives(
        node_factory, monkeypatch) -> None:
    """Two or three of a gateway's three providers allocate to its standing need: the put's six shares still go two to
    each provider, not one to each of two and four to the third (a file no node's loss may cost), nor nowhere (the
    needs the allocation did not place kept off every provider it used)."""
    a = await node_factory("a", storage={"capacity": 0}, **QUIET)
    providers = [await joining(node_factory, a, name, **QUIET) for name in "bcd"]
    ids = [p.app[NODE].peers.identity.id for p in providers]
    a_id = a.app[NODE].peers.identity.id
    for p in providers:
        await a.app[NODE].peers.add(p.app[NODE].peers.url)
    for node in (a, *providers):
        await node.app[NODE].market.fill_book()
    await a.app[NODE].health.probe_round()  # the providers are seen up: they may be matched
    in_step(monkeypatch)  # b's and c's asks split the need between them, however late one comes
    for p, pid in zip(providers[:2], ids[:2]):
        a.app[NODE].market.set_recognition(pid, Decimal(1))
        p.app[NODE].market.set_recognition(a_id, Decimal(1))
    await eventually_async(lambda: following(a, providers[:2], "storage"), "b and c to follow a's needs")
    status = await a.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 1_000_000, "seconds": 600})
    assert status.status == 201
    await eventually_async(lambda: len(a.app[NODE].allocation.allocated("storage")) >= 2,
                           "two providers or three to allocate to a's need")

    response = await a.post("/v1/store/files", data=b"s" * 20_000)
    answer = await response.json()
    assert response.status == 201, answer
    assert sorted(Counter(answer["placement"]).values()) == [2, 2, 2], answer["placement"]
    assert answer["node_failures_survived"] == 1


async def test_a_provider_that_fails_the_work_its_allocation_promised_no_longer_counts_as_serving_the_need(
        node_factory, monkeypatch) -> None:
    """A state is the provider's word: while this node's receipt counts a provider's units, the providers that do
    deliver see the need covered and give it nothing.  Once a put placed on that provider fails there, its
    allocation is neither served from nor counted in the receipt."""
    a, b = await pair(node_factory, **QUIET)
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    a.app[NODE].market.set_recognition(b_id, Decimal(1))
    b.app[NODE].market.set_recognition(a_id, Decimal(1))
    status = await a.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 1_000_000, "seconds": 600})
    need = (await status.json())["id"]
    service = a.app[NODE].allocation

    def counted() -> dict:
        return ((service.status()["received"] or {}).get(need) or {}).get("by_provider", {})

    await eventually_async(lambda: b_id in counted(), "a's receipt to count b's allocation")
    holder = b.app[NODE].share_holder

    async def refuse(*args, **kwargs):
        raise DealRefused("this provider takes no share", hint="none")

    # it keeps its allocation to a's need, stays up and current, and refuses every share
    monkeypatch.setattr(holder, "place_whole", refuse)
    monkeypatch.setattr(holder, "begin_upload", refuse)
    response = await a.post("/v1/store/files", data=b"d" * 20_000)  # (with no third node to take b's shares, it fails)
    assert "refused shares" in (await response.json())["detail"]
    await eventually_async(lambda: b_id not in counted(), "a's receipt to stop counting b", 30)
    assert service.allocated("storage") == {} and service.status()["defaulted"] == [b_id]
    # b leaves the directory: nothing of it is kept (the providers that fail are whoever a stranger cycles through it)
    assert (await a.delete(f"/v1/peers/{b_id}")).status == 200
    assert service.status()["defaulted"] == []


async def test_a_recipient_answers_only_when_no_provider_is_left_to_compute_from_its_receipt(node_factory) -> None:
    # r's providers p1 and p2 are played by the test, signing states as them with the stamps it chooses: a state
    # computed after r's receipt reached the provider is stamped after it; one computed before is not, whenever it
    # arrives.  Each provider's grant is its share of the gap in the receipt it computes from, so a receipt that
    # came while one provider was still to compute from the one before could have the gap given twice.
    r = await node_factory("r", **QUIET)
    providers = [await joining(node_factory, r, name, **QUIET) for name in ("p1", "p2")]
    service = r.app[NODE].allocation
    r_id = r.app[NODE].peers.identity.id
    for p in providers:
        await r.app[NODE].peers.add(p.app[NODE].peers.url)
        p.app[NODE].market.set_recognition(r_id, Decimal(0))  # the live p1 and p2 compute nothing for r
    await r.app[NODE].market.fill_book()
    need = (await (await r.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 600_000,
                                                              "seconds": 600})).json())["id"]
    identities = [p.app[NODE].peers.identity for p in providers]
    slots = [next(a.slot.id for a in r.app[NODE].market.book.get(i.id).asks if a.slot.kind == "storage")
             for i in identities]
    stamps = list(Stamp.seed().fork())

    def state(k: int, units: int, after: str = "") -> dict:  # after: computed after r's receipt of that name
        stamps[k] = (stamps[k] if not after else stamps[k].join(receipts[after].peek())).event()
        return _state(identities[k], [(slots[k], need, r_id, units, 1)], stamp=stamps[k], wanted=((r_id, need),))

    def parts() -> tuple:  # (p1's, p2's) in r's receipt
        held = service.receipts.get(r_id)
        entry = None if held is None else held.to_receipt().needs.get(need)
        return () if entry is None else tuple(entry.by_provider.get(i.id, 0) for i in identities)

    async def a_round_on(body: dict) -> None:
        rounds = service.rounds
        status, answer = await _post(r, identities[0], body)
        assert status == 200 and answer["changed"] == len(body["states"])
        await eventually_async(lambda: service.rounds > rounds, "a round of r on the states")

    receipts: dict[str, Stamp] = {}
    await eventually_async(lambda: service.ids.stamp is not None and service.receipts.get(r_id), "r's first receipt")
    await a_round_on({"states": [state(0, 100), state(1, 100)]})
    await eventually_async(lambda: parts() == (100, 100), "a receipt naming both providers")
    receipts["R"] = service.receipts.get(r_id).stamp
    # p1 computed after R; p2's state, the same as R has it, arrives after R, but p2 computed it before R came: p2 is
    # yet to compute from R, so r waits
    await a_round_on({"states": [state(0, 150, after="R"), state(1, 100)]})
    assert parts() == (100, 100) and not service.idle
    # p2's state computed from R: the next receipt answers both
    await a_round_on({"states": [state(1, 120, after="R")]})
    await eventually_async(lambda: parts() == (150, 120), "a receipt answering both")
    assert service.idle  # the wake-up r set to stop waiting was for this round: none is left pending
    receipts["R2"] = service.receipts.get(r_id).stamp
    # p2 answers R2 unchanged; p1's state crossed R2 and R2 does not answer it: p1 computes only once r answers it,
    # so r does at once (waiting for p1 would hold both sides until the bound)
    await a_round_on({"states": [state(1, 120, after="R2"), state(0, 130, after="R")]})
    await eventually_async(lambda: parts() == (130, 120), "a receipt answering both")
    assert service.step.out_of_step == 0  # no side waited out the bound


async def _fork(node, sender: Identity) -> tuple[int, dict, dict]:
    raw = b"{}"
    path = "/v1/peer/allocation/fork"
    headers = {**sign_request(sender, "POST", path, raw, receiver=node.app[NODE].peers.identity.id),
               "Content-Type": "application/json"}
    response = await node.post(path, data=raw, headers=headers)
    return response.status, await response.json(content_type=None), dict(response.headers)


async def test_a_stranger_gets_no_itc_fork_and_a_peer_only_its_quota(node_factory) -> None:
    """Every fork halves the node's share of the ITC id space for good: a stranger's key could take them one after
    another, each a synced write on the event loop.  Only a known peer forks, FORK_BURST at once."""
    a, b = await pair(node_factory, **QUIET)
    service = a.app[NODE].allocation
    await eventually_async(lambda: service.stamp is not None, "a's ITC id")
    # b joins by forking a's id: wait for that fork, or it lands between `before` and the check below
    await eventually_async(lambda: b.app[NODE].allocation.stamp is not None, "b's ITC id")
    before = service.stamp
    status, problem, _ = await _fork(a, Identity.generate())
    assert status == 403 and problem["code"] == "unknown-peer", problem
    assert service.stamp == before
    peer = b.app[NODE].peers.identity  # a known peer: b's own key (its quota afresh: b may have forked from a to join)
    service.ids.forks = RateLimiter(FORK_RATE, FORK_BURST, "ITC forks")
    for _ in range(FORK_BURST):
        status, answer, _ = await _fork(a, peer)
        assert status == 200 and Stamp.decode(bytes.fromhex(answer["stamp"])).id != 1, answer
    kept = service.stamp
    status, problem, headers = await _fork(a, peer)
    assert status == 429 and problem["code"] == "quota-exceeded", problem
    assert float(headers["Retry-After"]) > 0
    assert service.stamp == kept  # nothing given, nothing stored


async def test_removing_a_need_of_no_such_id_says_so_in_a_line_the_id_cut(node) -> None:
    """A 5,000-character need id names no need: 404 in one short line, not the id sent back whole."""
    response = await node.delete("/v1/allocation/needs/" + "n" * 5000)
    problem = await response.json()
    assert response.status == 404 and problem["code"] == "need-not-found", problem["detail"][:300]
    assert len(problem["detail"]) < 200 and "…" in problem["detail"], problem["detail"][:300]


async def test_the_allocation_passes_less_often_only_while_nothing_is_to_be_allocated(node_factory) -> None:
    """With no bid in the book and no standing need, no round comes due but by what wakes the allocation's loop, so it
    passes every QUIET_PASS rather than every PASS; a standing need ends that at once, and its removal brings it back
    once the book holds no bid again."""
    a, b = await pair(node_factory, **QUIET)
    allocation = a.app[NODE].allocation
    await eventually_async(lambda: quiet(allocation), "a's allocation quiet: nothing to allocate", 30)
    response = await a.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 1_000_000, "seconds": 600})
    assert response.status == 201
    assert not quiet(allocation)  # a standing need: its end and its rounds are the pass's to see
    await eventually_async(lambda: any(c.bids for c in b.app[NODE].market.book.commitments()), "a's need in b's book")
    assert not quiet(b.app[NODE].allocation)  # a bid in the book: b's rounds are under way
    assert (await a.delete(f"/v1/allocation/needs/{(await response.json())['id']}")).status == 200
    await eventually_async(lambda: quiet(allocation) and quiet(b.app[NODE].allocation), "both quiet again", 30)
