"""Properties of share placement (weighted rendezvous hashing)."""

from __future__ import annotations

import os
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.storage.core.placement import (Candidate, home_shares, node_failures_survived, peer_failures_survived,
                                        place_shares, single_points)

nodes = st.lists(
    st.builds(Candidate, node_id=st.text("abcdefghijklmnop234567", min_size=4, max_size=12),
              weight=st.floats(0.01, 10), free=st.integers(0, 10**9)),
    min_size=1, max_size=12, unique_by=lambda c: c.node_id)


@settings(max_examples=200, deadline=None)
@given(si=st.binary(min_size=32, max_size=32), candidates=nodes, share_bytes=st.integers(0, 10**6))
def test_placement_is_deterministic_spread_evenly_and_order_free(si, candidates, share_bytes) -> None:
    eligible = [c for c in candidates if c.free >= share_bytes]
    if not eligible:
        return
    placement = place_shares(si, candidates, share_bytes)
    assert len(placement) == 6
    shuffled = candidates[:]
    random.Random(1).shuffle(shuffled)
    assert place_shares(si, shuffled, share_bytes) == placement
    counts = Counter(placement)
    assert set(counts) <= {c.node_id for c in eligible}  # nobody without room
    if len(eligible) >= 6:
        assert len(counts) == 6  # six distinct nodes
    else:
        assert len(counts) == len(eligible) and max(counts.values()) - min(counts.values()) <= 1


@settings(max_examples=100, deadline=None)
@given(si=st.binary(min_size=32, max_size=32), candidates=nodes)
def test_removing_a_node_moves_only_its_shares(si, candidates) -> None:
    if len(candidates) < 7:
        return
    before = place_shares(si, candidates, 0)
    gone = next(c for c in candidates if c.node_id not in before)  # a node holding nothing
    after = place_shares(si, [c for c in candidates if c is not gone], 0)
    assert after == before


def test_weight_is_honoured_on_average() -> None:
    heavy, light = Candidate("heavy", 3.0, 10**9), Candidate("light", 1.0, 10**9)
    firsts = Counter(place_shares(os.urandom(32), [heavy, light], 0, shares=1)[0] for _ in range(4000))
    assert 0.70 < firsts["heavy"] / 4000 < 0.80  # expected 3 / (3 + 1)


def test_failures_survived() -> None:
    assert node_failures_survived(["a", "b", "c", "d", "e", "f"]) == 2
    assert node_failures_survived(["a", "b", "c", "d", "e", "a"]) == 1
    assert node_failures_survived(["a", "b", "c", "a", "b", "c"]) == 1
    assert node_failures_survived(["a", "b", "c", "d", "a", "b"]) == 1
    assert node_failures_survived(["a", "b", "a", "b", "a", "b"]) == 0
    assert node_failures_survived(["a"] * 6) == 0


def test_with_fewer_than_six_providers_k_shares_stay_home_unless_asked() -> None:
    assert [home_shares(n, True, False) for n in range(1, 8)] == [4, 4, 4, 4, 4, 0, 0]
    assert home_shares(2, True, True) == 0  # --spread
    assert home_shares(2, False, False) == 0  # this node offers no storage


@settings(max_examples=200, deadline=None)
@given(peers=st.lists(st.sampled_from("bcdefg"), min_size=2, max_size=2))
def test_k_shares_at_home_survive_the_loss_of_every_other_node_and_never_fewer_than_home(peers) -> None:
    placement = ["me"] * 4 + peers
    assert peer_failures_survived(placement, "me") == len(set(peers))  # every other node may go
    assert node_failures_survived(placement) >= node_failures_survived(["me"] * 6)  # never worse than home


def test_peer_failures_survived() -> None:
    assert peer_failures_survived(["me", "me", "me", "b", "b", "b"], "me") == 0  # 3 + 3: the peer's loss loses it
    assert peer_failures_survived(["me", "me", "me", "b", "c", "d"], "me") == 2
    assert peer_failures_survived(["b", "c", "d", "e", "f", "g"], "me") == 2
    assert peer_failures_survived(["me"] * 6, "me") == 0  # no other node holds any


def test_a_repair_warns_of_the_other_node_whose_loss_alone_loses_the_file_and_only_of_it() -> None:
    # home's safety is what a put promises (any other node may go): 4 or 5 shares here are no warning
    assert single_points(["me"] * 4 + ["b", "c"], "me") == ""
    assert single_points(["me"] * 5 + ["b"], "me") == ""
    assert single_points(["me"] * 6, "me") == ""
    assert single_points(["me"] * 3 + ["b"] * 3, "me") == (
        "3 shares are on node b: its loss loses the file (add nodes with `xsc peers add URL`, then put the file "
        "again to spread its shares, and `xsc store rm` this capability)")
    assert single_points(["b", "b", "b", "c", "c", "c"], "me") == (
        "3 shares are on node b: its loss loses the file; 3 shares are on node c: its loss loses the file "
        "(add nodes with `xsc peers add URL`, then put the file again to spread its shares, and "
        "`xsc store rm` this capability)")
    assert single_points(["b", "c", "d", "e", "f", "g"], "me") == ""

