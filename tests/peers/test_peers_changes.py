"""The peers' change feed (xsc/peers/core/changes.py): which ids changed since a version, or None once that is no
longer all remembered, never a partial answer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.peers.core.changes import ChangeFeed

STEPS = st.lists(st.one_of(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3), st.just([])), max_size=40)


@settings(max_examples=200, deadline=None)
@given(steps=STEPS, kept=st.integers(1, 8))
def test_a_feed_says_every_id_changed_since_a_version_or_that_it_cannot(steps, kept) -> None:
    feed = ChangeFeed(kept=kept)
    history: list[tuple[int, tuple[str, ...]]] = []
    for ids in steps:
        feed.step(*ids)
        history.append((feed.version, tuple(ids)))
        for since in range(feed.version + 1):
            answer = feed.since(since)
            later = [ids for at, ids in history if at > since]
            if answer is None:
                assert later, "the present version is always answered"
                continue
            assert not any(ids == () for ids in later), "a step of untold ids answered"
            assert answer == {i for ids in later for i in ids}
    assert feed.since(feed.version + 1) is None
