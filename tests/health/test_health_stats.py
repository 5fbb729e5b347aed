"""Availability statistics of peers (xsc.health.core.stats): properties over random probe histories."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.health import PeerHistory, availability, reachable_status, record_audit, record_probe, success_ratio
from xsc.errors import PeerIdentityMismatch, PeerRefused, PeerUnreachable
from xsc.health.core.stats import BUCKET_MS, DAY_MS, HOUR_MS, MAX_BACKOFF, ask_again, ewma, probe_due

T0 = 1_700_000_000_000
# A probe: (ms since the previous one, answered?, latency ms)
probes = st.lists(st.tuples(st.integers(0, 4 * HOUR_MS), st.booleans(), st.floats(0.1, 5000)), max_size=60)


def _replay(steps) -> tuple[PeerHistory, list[tuple[int, bool, float]]]:
    history, at, done = PeerHistory(), T0, []
    for gap, ok, latency in steps:
        at += gap
        history = record_probe(history, at, ok, latency if ok else None, None if ok else "refused")
        done.append((at, ok, latency))
    return history, done


@settings(max_examples=150, deadline=None)
@given(probes)
def test_ratios_count_exactly_the_probes_of_the_window_buckets(steps) -> None:
    history, done = _replay(steps)
    now = done[-1][0] if done else T0
    for window in (HOUR_MS, DAY_MS):
        first = now - now % BUCKET_MS - window + BUCKET_MS
        inside = [ok for at, ok, _ in done if at >= first]
        ratio, count = success_ratio(history, now, window)
        assert count == len(inside)
        assert ratio == (sum(inside) / len(inside) if inside else None)
        assert ratio is None or 0 <= ratio <= 1
    # A day of history whatever the probe rate: buckets stay few, in order, none older than a day.
    starts = [b.start for b in history.buckets]
    assert starts == sorted(set(starts)) and len(starts) <= DAY_MS // BUCKET_MS
    assert all(s > now - now % BUCKET_MS - DAY_MS for s in starts)


@settings(max_examples=150, deadline=None)
@given(probes)
def test_failures_latency_and_state(steps) -> None:
    history, done = _replay(steps)
    trailing = 0
    for _, ok, _ in reversed(done):
        if ok:
            break
        trailing += 1
    now = done[-1][0] if done else T0
    stats = availability(history, now)
    assert stats.consecutive_failures == trailing
    assert stats.up == (None if not done else trailing == 0)
    latencies = [latency for _, ok, latency in done if ok]
    if latencies:
        assert min(latencies) - 1e-6 <= stats.latency_ms <= max(latencies) + 1e-6
        assert stats.last_ok == max(at for at, ok, _ in done if ok)
    else:
        assert stats.latency_ms is None and stats.last_ok is None
    assert PeerHistory.from_json(history.to_json()) == history


def test_ewma_weights_the_newest_sample_by_alpha() -> None:
    assert ewma(None, 10.0) == 10.0
    assert ewma(10.0, 20.0, alpha=0.2) == 12.0


def test_an_audit_result_is_kept_with_the_history() -> None:
    history = record_probe(PeerHistory(), T0, True, 3.0)
    history = record_audit(history, T0 + 5, False, "block 3 of share 2 does not match its root")
    stats = availability(history, T0 + 10)
    assert stats.last_audit == {"time": T0 + 5, "ok": False, "detail": "block 3 of share 2 does not match its root"}
    assert stats.up is True and PeerHistory.from_json(history.to_json()) == history


@given(st.lists(st.sampled_from([True, False, None]), max_size=20))
def test_reachable_warns_when_fewer_than_half_of_the_probed_peers_are_up(ups) -> None:
    probed = [u for u in ups if u is not None]
    expected = "warn" if probed and sum(probed) * 2 < len(probed) else "pass"
    assert reachable_status(ups) == expected
    assert reachable_status([]) == "pass"


@settings(max_examples=150, deadline=None)
@given(probes, st.integers(1_000, 3_600_000), st.integers(0, 10 * DAY_MS))
def test_a_failing_peer_is_probed_less_often_and_never_less_than_every_max_backoff_intervals(steps, interval,
                                                                                          since) -> None:
    history, done = _replay(steps)
    now = (done[-1][0] if done else T0) + since
    due = probe_due(history, now, interval)
    if history.last_probe is None or history.consecutive_failures <= 1:
        assert due  # never probed, up, or down once: every round
    elif since >= MAX_BACKOFF * interval:
        assert due  # however long it has been down
    elif since < interval // 2:
        assert not due  # down twice or more: not again in the next round
    # The wait grows with the failures in a row: one more failure is never due sooner, one fewer never later.
    if history.consecutive_failures >= 1:
        longer = replace(history, consecutive_failures=history.consecutive_failures + 1)
        shorter = replace(history, consecutive_failures=history.consecutive_failures - 1)
        assert due or not probe_due(longer, now, interval)
        assert not due or probe_due(shorter, now, interval)


def test_a_probe_that_found_no_answer_is_asked_again_only_of_a_peer_that_was_up() -> None:
    """One lost packet (retransmits outlasting the timeout, a connection the peer had closed) must not mark a peer
    down; a refusal or another key would answer again, and a peer down or never answered costs one attempt."""
    up = record_probe(PeerHistory(), T0, True, 100.0)
    down = record_probe(up, T0 + 10_000, False, None, "timeout")
    lost = PeerUnreachable("peer https://198.18.0.3:7070 is unreachable: timeout", sent=True)
    assert ask_again(up, lost)
    assert ask_again(record_probe(down, T0 + 20_000, True, 100.0), lost)  # back up: asked again once more
    assert not ask_again(down, lost)
    assert not ask_again(PeerHistory(), lost)  # never probed: a stranger's address, perhaps dead
    assert not ask_again(up, PeerRefused("peer refused POST /v1/peer/challenge: too many requests"))
    assert not ask_again(up, PeerIdentityMismatch("another key answered", sent=False))


@settings(max_examples=100, deadline=None)
@given(probes)
def test_up_since_is_the_oldest_answered_probe_of_the_day_kept(steps) -> None:
    """How long a peer has been seen up (what a bootstrapping node ranks fresh ids after): the bucket of its oldest
    answered probe still in the history, none older than a day."""
    history, done = _replay(steps)
    now = done[-1][0] if done else T0
    first = now - now % BUCKET_MS - DAY_MS
    answered = [at for at, ok, _ in done if ok and at - at % BUCKET_MS > first]
    since = availability(history, now).up_since
    assert since is None or since in {at - at % BUCKET_MS for at, ok, _ in done if ok}
    if not answered:
        assert since is None or since <= first + BUCKET_MS
    else:
        assert since is not None and since <= min(answered) - min(answered) % BUCKET_MS
