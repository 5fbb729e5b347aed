"""Sparkline points of a peer's availability (xsc.health.core.stats.sparkline): each point is exactly its slice's
successful probes over its probes, and the points together count every probe of the window."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.health.core.stats import BUCKET_MS, DAY_MS, HOUR_MS, PeerHistory, record_probe, sparkline, success_ratio

NOW = 1_800_000_000_000 - 1_800_000_000_000 % BUCKET_MS + 123_456


def history_of(probes: list[tuple[int, bool]]) -> PeerHistory:
    history = PeerHistory()
    for age, ok in sorted(probes, key=lambda p: -p[0]):
        history = record_probe(history, NOW - age, ok, 1.0 if ok else None)
    return history


def test_no_probes_no_points() -> None:
    assert sparkline(PeerHistory(), NOW, HOUR_MS, 12) == [None] * 12


def test_an_hour_in_five_minute_slices_the_newest_last() -> None:
    history = history_of([(0, True), (0, False), (BUCKET_MS, True)])
    points = sparkline(history, NOW, HOUR_MS, 12)
    assert points[-1] == 0.5 and points[-2] == 1.0 and points[:-2] == [None] * 10


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, DAY_MS - BUCKET_MS), st.booleans()), max_size=60))
def test_a_day_in_hours_counts_every_probe_of_the_day(probes) -> None:
    history = history_of(probes)
    points = sparkline(history, NOW, DAY_MS, 24)
    assert len(points) == 24
    ratio, total = success_ratio(history, NOW, DAY_MS)
    assert (total == 0) == all(p is None for p in points)
    assert all(p is None or 0.0 <= p <= 1.0 for p in points)
    if ratio == 1.0:
        assert all(p in (None, 1.0) for p in points)
    if ratio == 0.0:
        assert all(p in (None, 0.0) for p in points)
