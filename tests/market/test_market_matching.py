"""Matching needs to capacity slots: the rules, the explanations, and properties over random markets."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.market import HOUR, ask, bid

from xsc.allocation import compatible
from xsc.errors import AmbiguousNeed, MarketError, NeedNotFound
from xsc.market import CODES, explain, match_needs, units_cost
from xsc.market.core.backing import backed, bid_cost
from xsc.market.core.models import MAX_PRICE

GIB = 2**30


def _match(asks, bids, recognition=None, availability=None, **kw):
    return match_needs(asks, bids, recognition=recognition or {}, availability=availability or {},
                       bucket_seconds=HOUR, now_ms=0, **kw)


def test_a_put_goes_to_distinct_providers_at_one_price():
    asks = [ask(f"p{i}", "s", 10 * GIB, 100 + i) for i in range(8)]
    bids = [bid("user", f"share{i}", GIB, 500, group="put") for i in range(6)]
    r = _match(asks, bids)
    assert len(r.assignments) == 6
    assert len({a.provider for a in r.assignments.values()}) == 6
    c = r.clearings[("storage", 0)]
    assert {a.price for a in r.assignments.values()} == {c.price}
    # the six lowest asks serve the six shares
    assert {a.provider for a in r.assignments.values()} == {f"p{i}" for i in range(6)}
    a = r.assignments["user/share0"]
    assert a.tier == "open" and a.cost == units_cost("storage", GIB, 10 * HOUR, c.price)
    assert all(e.code == "matched" for e in r.explanations.values())


def test_without_a_group_one_provider_may_hold_several_needs():
    r = _match([ask("p", "s", 10 * GIB, 1)], [bid("user", f"n{i}", GIB, 5) for i in range(3)])
    assert [a.provider for a in r.assignments.values()] == ["p"] * 3


def test_group_larger_than_the_providers_is_placed_in_part():
    r = _match([ask(f"p{i}", "s", 10 * GIB, 1) for i in range(2)],
               [bid("user", f"n{i}", GIB, 5, group="g") for i in range(3)])
    assert len(r.assignments) == 2
    (left,) = [e for e in r.explanations.values() if e.code != "matched"]
    assert left.code == "capacity_taken" and "group 'g'" in left.message


def test_below_the_clearing_price():
    # asks 3, 4; bids 9 (n1), 8 (n2), 2 (n3): n3's market price is 6
    asks = [ask("p1", "s", GIB, 3), ask("p2", "s", GIB, 4)]
    bids = [bid("u", "n1", GIB, 9), bid("u", "n2", GIB, 8), bid("u", "n3", GIB, 2)]
    r = _match(asks, bids)
    assert set(r.assignments) == {"u/n1", "u/n2"}
    e = explain(r, "n3")
    assert e.code == "below_clearing_price" and "below the clearing price 6" in e.message and e.clearing_price == 6


def test_no_trade_and_no_compatible_slot():
    r = _match([ask("p", "s", GIB, 50)], [bid("u", "cheap", GIB, 10), bid("u", "cpu", 10**6, 99, kind="compute"),
                                          bid("u", "big", 2 * GIB, 99), bid("u", "later", 1, 99, start=20 * HOUR,
                                                                             end=21 * HOUR)])
    codes = {k: e.code for k, e in r.explanations.items()}
    assert codes["u/cpu"] == "no_compatible_slot"
    assert codes["u/later"] == "no_compatible_slot"
    # Its window as a user reads it (HOUR seconds after the epoch), not in unix seconds.
    assert "its window (from 1970-01-01 20:00:00 to 21:00:00 UTC)" in r.explanations["u/later"].message
    assert codes["u/big"] == "no_compatible_slot" and "never split" in r.explanations["u/big"].message
    # p's ask of 50 clears against the bid of 99 only, in bucket 0
    assert codes["u/cheap"] == "below_clearing_price"


def test_an_avoid_counts_the_providers_its_user_named_and_names_its_own_node_apart():
    asks = [ask("u", "s", GIB, 1), ask("good", "s", GIB, 1)]
    # A put's shares meant for other nodes avoid its own node beside the provider its user typed.
    r = _match(asks, [bid("u", "away", GIB, 9, deny=("good", "u"))])
    assert explain(r, "away").message == "all 2 compatible slots are excluded by --avoid (it avoids 1 provider and " \
        "this node)", explain(r, "away")


def test_no_trade():
    r = _match([ask("p", "s", GIB, 50)], [bid("u", "n", GIB, 10)])
    assert explain(r, "u/n").code == "no_trade" and r.assignments == {}


def test_filters_deny_and_availability():
    asks = [ask("good", "s", GIB, 1), ask("flaky", "s", GIB, 1)]
    bids = [bid("u", "a", GIB, 9, deny=("good",), min_availability="0.9"),
            bid("u", "b", GIB, 9, min_availability="0.5")]
    r = _match(asks, bids, availability={"good": Decimal("0.99"), "flaky": Decimal("0.6")})
    assert explain(r, "a").code == "filtered_out"
    # worded as the flags its user typed: `store put --avoid good --min-availability 0.9`
    assert explain(r, "a").message == ("all 2 compatible slots are excluded by --avoid (it avoids 1 provider) and "
                                       "--min-availability 0.9"), explain(r, "a")
    assert r.assignments["u/b"].provider in {"good", "flaky"}
    r = _match(asks, [bid("u", "c", GIB, 9, min_availability="0.1")])
    assert explain(r, "c").code == "filtered_out"  # unknown availability counts as 0


def test_capacity_taken_by_a_higher_bid():
    # 2 GiB offered, 1.5 GiB wanted at 9 and 1 GiB at 8: the price is 8, both bids take part, but the
    # higher bid is served first and leaves 0.5 GiB, too little for an indivisible 1 GiB need.
    r = _match([ask("p", "s", 2 * GIB, 1)], [bid("u", "low", GIB, 8), bid("v", "high", 3 * GIB // 2, 9)])
    assert r.clearings[("storage", 0)].price == 8
    assert r.assignments["v/high"].provider == "p"
    assert explain(r, "low").code == "capacity_taken"
    # with one slot for two equal needs, the lower bid is priced out instead
    r = _match([ask("p", "s", GIB, 1)], [bid("u", "low", GIB, 5), bid("v", "high", GIB, 9)])
    assert explain(r, "low").code == "below_clearing_price" and r.assignments["v/high"].price == 7


def test_mutual_recognition_is_served_before_a_higher_bid():
    r = _match([ask("p", "s", GIB, 1)], [bid("friend", "n", GIB, 8), bid("stranger", "n", GIB, 9)],
               recognition={"p": {"friend": Decimal(1)}, "friend": {"p": Decimal(1)}})
    assert r.assignments["friend/n"].tier == "mutual" and "stranger/n" not in r.assignments
    assert r.tiers == {"friend/n": "mutual", "stranger/n": "open"}
    with pytest.raises(AmbiguousNeed, match="2 recipients") as info:
        explain(r, "n")
    assert "friend/n" in info.value.hint
    with pytest.raises(NeedNotFound):
        explain(r, "nope")
    # one-way recognition: tier 2
    r = _match([ask("p", "s", GIB, 1)], [bid("friend", "n", GIB, 8), bid("stranger", "n", GIB, 9)],
               recognition={"p": {"friend": Decimal(1)}})
    assert r.assignments["friend/n"].tier == "one-way"


def test_prefer_then_lowest_ask():
    # two needs: the price is 2, so all three asks take part
    asks = [ask("a", "s", GIB, 2), ask("b", "s", GIB, 1), ask("c", "s", GIB, 2)]
    r = _match(asks, [bid("u", "n", GIB, 9, prefer=("c",)), bid("u", "m", GIB, 8)])
    assert r.clearings[("storage", 0)].price == 2
    assert r.assignments["u/n"].provider == "c"
    assert r.assignments["u/m"].provider == "b"
    # the preference does not reach above the clearing price: at price 1 only b takes part
    r = _match(asks, [bid("u", "n", GIB, 9, prefer=("c",))])
    assert r.assignments["u/n"].provider == "b"


def test_self_service_can_be_refused():
    asks = [ask("u", "s", GIB, 1)]
    assert _match(asks, [bid("u", "n", GIB, 9)]).assignments["u/n"].provider == "u"
    r = _match(asks, [bid("u", "n", GIB, 9)], allow_self=False)
    assert explain(r, "n").code == "filtered_out"


def test_a_long_ask_serves_a_later_bucket():
    r = _match([ask("p", "s", GIB, 1, start=0, end=48 * HOUR)], [bid("u", "n", GIB, 9, start=30 * HOUR,
                                                                     end=31 * HOUR)])
    assert r.assignments["u/n"].bucket == 30 and r.clearings[("storage", 30)].price == 5


def test_duplicate_ids_are_refused():
    with pytest.raises(MarketError, match="share the slot id"):
        _match([ask("p", "s", 1, 1), ask("p", "s", 1, 1)], [])
    with pytest.raises(MarketError, match="recognition"):
        _match([ask("p", "s", 1, 1)], [bid("u", "n", 1, 9)], recognition={"p": {"u": Decimal(-1)}})


OWNERS = ("a", "b", "c", "d", "e")


@st.composite
def markets(draw):
    asks, bids = [], []
    for i in range(draw(st.integers(0, 8))):
        start = draw(st.integers(0, 3)) * HOUR
        asks.append(ask(draw(st.sampled_from(OWNERS)), f"s{i}", draw(st.integers(1, 6)) * 10, draw(st.integers(0, 20)),
                        start=start, end=start + draw(st.integers(1, 4)) * HOUR,
                        kind=draw(st.sampled_from(("storage", "storage", "compute"))),
                        location=draw(st.sampled_from(("any", "eu", "us")))))
    for i in range(draw(st.integers(0, 12))):
        start = draw(st.integers(0, 3)) * HOUR
        bids.append(bid(draw(st.sampled_from(OWNERS)), f"n{i}", draw(st.integers(1, 6)) * 5, draw(st.integers(0, 20)),
                        start=start, end=start + HOUR, kind=draw(st.sampled_from(("storage", "storage", "compute"))),
                        location=draw(st.sampled_from(("any", "any", "eu"))),
                        deny=tuple(draw(st.lists(st.sampled_from(OWNERS), max_size=1))),
                        group=draw(st.sampled_from((None, "g", "h"))),
                        min_availability=draw(st.sampled_from((None, "0.5"))),
                        prefer=tuple(draw(st.lists(st.sampled_from(OWNERS), max_size=2, unique=True)))))
    recognition = {p: {q: Decimal(draw(st.integers(0, 3))) for q in draw(st.lists(st.sampled_from(OWNERS), max_size=2))}
                   for p in draw(st.lists(st.sampled_from(OWNERS), max_size=4, unique=True))}
    availability = {p: Decimal(draw(st.sampled_from(("0.2", "0.9")))) for p in OWNERS}
    return asks, bids, recognition, availability


@settings(max_examples=80, deadline=None)
@given(markets(), st.randoms(use_true_random=False))
def test_matching_properties(market, rnd):
    asks, bids, recognition, availability = market
    r = match_needs(asks, bids, recognition=recognition, availability=availability, bucket_seconds=HOUR, now_ms=0)
    ask_of = {(a.slot.owner, a.slot.id): a for a in asks}
    bid_of = {f"{b.slot.owner}/{b.slot.id}": b for b in bids}
    assert set(r.explanations) == set(bid_of)
    assert all(e.code in CODES for e in r.explanations.values())
    used: dict[tuple[str, str], int] = {}
    groups: dict[tuple[str, str], list[str]] = {}
    for key, a in r.assignments.items():
        b, s = bid_of[key], ask_of[(a.provider, a.capacity_slot)]
        assert r.explanations[key].code == "matched"
        assert s.price <= a.price <= b.price  # no need pays above its bid, no slot gets below its ask
        assert a.price == r.clearings[(b.slot.kind, b.slot.start // HOUR)].price
        assert a.quantity == b.slot.quantity and compatible(s.slot, b.slot)
        assert a.provider not in b.slot.filters.deny
        if b.min_availability is not None:
            assert availability[a.provider] >= b.min_availability
        used[(a.provider, a.capacity_slot)] = used.get((a.provider, a.capacity_slot), 0) + a.quantity
        if b.group is not None:
            groups.setdefault((b.slot.owner, b.group), []).append(a.provider)
    for k, units in used.items():
        assert units <= ask_of[k].slot.quantity
    for providers in groups.values():
        assert len(providers) == len(set(providers))
    for key, e in r.explanations.items():
        assert (e.code == "matched") == (key in r.assignments)
    shuffled_asks, shuffled_bids = list(asks), list(bids)
    rnd.shuffle(shuffled_asks)
    rnd.shuffle(shuffled_bids)
    again = match_needs(shuffled_asks, shuffled_bids, recognition=dict(reversed(list(recognition.items()))),
                        availability=availability, bucket_seconds=HOUR, now_ms=0)
    assert again == r


def test_a_provider_every_need_avoids_sets_no_price():
    """The cheapest provider, avoided by every need, stays to explain the filter but takes no part in the clearing:
    left in, it cleared the market below the provider the needs allow, which then traded nothing."""
    asks = [ask("avoided", "a", 10 * GIB, 1000), ask("other", "o", 10 * GIB, 1001)]
    r = _match(asks, [bid("me", f"n{i}", GIB, 4000, deny=("avoided",)) for i in range(3)])
    assert {a.provider for a in r.assignments.values()} == {"other"} and len(r.assignments) == 3
    assert r.clearings[("storage", 0)].price >= 1001
    r = _match(asks, [bid("me", "n", GIB, 4000, deny=("avoided", "other"))])
    assert explain(r, "me/n").code == "filtered_out"  # still explained by the filter
    # A need that avoids nobody keeps the cheaper ask in the clearing.
    r = _match(asks, [bid("me", "n", GIB, 4000, deny=("avoided",)), bid("you", "m", GIB, 4000)])
    assert r.clearings[("storage", 0)].low == 1000


def test_a_bidder_grinding_its_slot_id_never_wins_a_tie_with_the_matching_node():
    """Ties at one tier and bid went by order digest, and a bidder picks its slot id: the node matching its own needs
    (`first`) serves them first among equals."""
    asks = [ask("p", "s", GIB, 10)]
    won = []
    for i in range(64):
        bids = [bid("me", "n", GIB, 100), bid("rival", f"grind{i}", GIB, 100)]
        won.append("rival/grind%d" % i in _match(asks, bids).assignments)
        assert set(_match(asks, bids, first="me").assignments) == {"me/n"}
    assert any(won)  # without `first`, some id wins the tie


def test_other_bidders_count_only_as_far_as_their_backing_pays_dearest_first():
    cost = units_cost("storage", GIB, 10 * HOUR, 100)
    rival = [bid("rival", "a", GIB, 100), bid("rival", "b", GIB, 300), bid("rival", "c", GIB, 200)]
    mine = [bid("me", "n", GIB, 50)]
    kept = backed(rival + mine, {"rival": 5 * cost + 1}.get, "me")  # "b" costs 3, "c" 2: no room left for "a"
    assert [b.slot.id for b in kept] == ["b", "c", "n"]
    assert backed(rival + mine, None, "me") == mine
    free = bid("rival", "free", GIB, 0)
    assert bid_cost(free) == 1 and backed([free], lambda owner: 0, "me") == []  # no backing: nothing counts


@pytest.mark.parametrize("quantity", [1, 2**20, GIB])
def test_a_backed_bid_at_the_highest_price_moves_no_price_the_others_get(quantity):
    """One uniform price is set at the margin: a backed rival's need at the highest price is served before this
    node's but sets the price of none of them (nor does its backing ever stand for more than its bids at their own
    prices: a unit short, the bid does not count)."""
    asks = [ask(f"p{i}", "s", 10 * GIB, 100 + i) for i in range(8)]
    mine = [bid("me", f"share{i}", GIB, 500, group="put") for i in range(6)]

    def mine_placed(rival_price: int | None) -> tuple:
        rival = [bid("rival", "n", quantity, rival_price)] if rival_price is not None else []
        counted = backed(mine + rival, {"rival": sum(map(bid_cost, rival))}.get, "me")
        assert counted == mine + rival
        r = _match(asks, counted, first="me")
        return r.clearings[("storage", 0)].price, {k: (a.provider, a.price) for k, a in r.assignments.items()
                                                   if k.startswith("me/")}

    alone = mine_placed(None)
    assert len(alone[1]) == 6 and mine_placed(501) == mine_placed(MAX_PRICE) == alone
    absurd = bid("rival", "n", quantity, MAX_PRICE)
    assert backed([absurd], {"rival": bid_cost(absurd) - 1}.get, "me") == []


@settings(max_examples=50, deadline=None)
@given(sybils=st.integers(1, 200), quantity=st.integers(1, 100 * GIB))
def test_any_number_of_unbacked_ids_moves_no_clearing_price(sybils, quantity):
    asks = [ask(f"p{i}", "s", 10 * GIB, 100 + i) for i in range(8)]
    mine = [bid("me", f"share{i}", GIB, 500, group="put") for i in range(6)]
    fakes = [bid(f"sybil{i}", "n", quantity, MAX_PRICE) for i in range(sybils)]
    alone, swarmed = _match(asks, mine, first="me"), _match(asks, backed(mine + fakes, None, "me"), first="me")
    assert swarmed.clearings == alone.clearings and swarmed.assignments == alone.assignments
