"""A provider's terms for this node and prepayment within the user's budget (xsc/market/core/terms.py, pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.market.core.terms import parse_terms, prepayment, refusal

IDS = ["b" * 52, "c" * 52, "d" * 52, "e" * 52]


@settings(max_examples=300, deadline=None)
@given(missing=st.integers(-10, 10**6), given_peer=st.integers(0, 10**6), given_all=st.integers(0, 10**7),
       peer_cap=st.integers(0, 10**6), total_cap=st.integers(0, 10**7))
def test_a_prepayment_covers_what_is_missing_and_never_passes_a_cap(missing, given_peer, given_all, peer_cap,
                                                                     total_cap) -> None:
    amount = prepayment(missing, given_peer, given_all, peer_cap, total_cap)
    if amount:
        assert amount >= missing > 0
        assert given_peer + amount <= peer_cap and given_all + amount <= total_cap
    else:
        assert missing <= 0 or missing > min(peer_cap - given_peer, total_cap - given_all)


def test_a_prepayment_is_at_least_a_quarter_of_the_cap_when_there_is_room() -> None:
    assert prepayment(8, 0, 0, 40, 10**6) == 10
    assert prepayment(8, 35, 35, 40, 10**6) == 0  # 5 left: not enough
    assert prepayment(8, 30, 30, 40, 10**6) == 10
    assert prepayment(8, 0, 0, 0, 0) == 0  # auto_prepay off


def test_the_refusal_is_one_line_under_240_characters_with_the_whole_id() -> None:
    for wanting in ({IDS[0]: 42}, {i: 10**12 for i in IDS}):
        message, hint = refusal(wanting)
        line = f"xsc: error: {message} ({hint})"
        assert "\n" not in line and len(line) < 240, line
        assert not [word for word in line.split() if word.endswith("…")], line  # no id cut
        assert f"xsc ledger prepay {IDS[0]} " in hint
    assert "0.000042 credits" in refusal({IDS[0]: 42})[0]


def test_the_refusal_says_which_providers_this_node_tried_to_prepay_by_itself() -> None:
    cheapest, other = IDS[0], IDS[1]
    why = f"node {cheapest} refused the prepayment: it owes this node nothing"
    message, _ = refusal({cheapest: 42, other: 50}, {cheapest: why})
    assert message.endswith("; this node's own prepayment of it (ledger.auto_prepay) was tried and not made: it "
                            "refused the prepayment: it owes this node nothing"), message
    message, _ = refusal({cheapest: 42, other: 50}, {other: "it did not answer within 5 s (retried in the background)"})
    assert message.endswith("; 1 of them was tried with this node's own prepayment (ledger.auto_prepay), not made")
    assert refusal({cheapest: 42}, {})[0] == refusal({cheapest: 42})[0]  # nothing tried: nothing said of it


def test_terms_that_are_not_terms_are_not_assumed() -> None:
    assert parse_terms("p", {"available": 5, "credit": 0, "recognised": False}, 1.0).available == 5
    for body in (None, [], {"available": "5", "credit": 0, "recognised": False},
                 {"available": 5, "credit": -1, "recognised": False}, {"available": 2**70, "credit": 0, "recognised": 1}):
        assert parse_terms("p", body, 1.0) is None
