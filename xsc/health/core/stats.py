"""Availability of a peer from its probe history (pure: no I/O, no clock; times are ms since the epoch).

Probes are counted in 5-minute buckets (a peer probed every 10 s fills a bucket with 30 probes),
so a day of history is at most 288 small counters whatever the probe rate.  See docs/peers.md."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ...errors import PeerIdentityMismatch, PeerUnreachable

BUCKET_MS = 5 * 60_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
EWMA_ALPHA = 0.2  # weight of the newest latency sample
MAX_ERROR = 300  # characters of a probe error kept
# A peer that fails its probes is probed every interval, then every 2, 4, ... intervals, at most every
# MAX_BACKOFF intervals: a directory full of dead or fake addresses costs a few probes a round,
# not one per peer.  A peer that comes back and sends a signed request is probed at once (HealthService).
MAX_BACKOFF = 64


@dataclass(frozen=True)
class Bucket:
    start: int  # ms, a multiple of BUCKET_MS
    ok: int
    total: int


@dataclass(frozen=True)
class PeerHistory:
    buckets: tuple[Bucket, ...] = ()  # oldest first, none older than a day before the newest probe
    latency_ewma_ms: float | None = None  # of successful probes only: a failure has no latency
    consecutive_failures: int = 0
    last_probe: int | None = None
    last_ok: int | None = None
    last_error: str | None = None
    last_audit: dict[str, Any] | None = None  # {"time": ms, "ok": bool, "detail": str}

    def to_json(self) -> dict[str, Any]:
        return {"buckets": [[b.start, b.ok, b.total] for b in self.buckets], "latency_ewma_ms": self.latency_ewma_ms,
                "consecutive_failures": self.consecutive_failures, "last_probe": self.last_probe,
                "last_ok": self.last_ok, "last_error": self.last_error, "last_audit": self.last_audit}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PeerHistory:
        return cls(buckets=tuple(Bucket(*b) for b in obj["buckets"]), latency_ewma_ms=obj["latency_ewma_ms"],
                   consecutive_failures=obj["consecutive_failures"], last_probe=obj["last_probe"],
                   last_ok=obj["last_ok"], last_error=obj["last_error"], last_audit=obj["last_audit"])


@dataclass(frozen=True)
class Availability:
    """What the rest of the node (placement, repair, `xsc health status`) knows of a peer."""

    ratio_1h: float | None  # successful probes / probes in the last hour; None without probes
    ratio_24h: float | None
    probes_1h: int
    probes_24h: int
    latency_ms: float | None
    consecutive_failures: int
    up: bool | None  # did the last probe succeed? None before the first probe
    last_probe: int | None
    last_ok: int | None
    last_error: str | None
    last_audit: dict[str, Any] | None = field(default=None)
    # The start of the oldest 5-minute bucket with an answered probe in the history kept (at most a day back): how
    # long the peer has been seen up, which a fresh id cannot fake (the history is kept across restarts).
    up_since: int | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def bucket_start(at: int) -> int:
    return at - at % BUCKET_MS


def ewma(previous: float | None, sample: float, alpha: float = EWMA_ALPHA) -> float:
    return sample if previous is None else alpha * sample + (1 - alpha) * previous


def record_probe(history: PeerHistory, at: int, ok: bool, latency_ms: float | None = None,
                 error: str | None = None) -> PeerHistory:
    """The history with one more probe result."""
    at = max(at, history.last_probe or 0)  # a clock stepped back must not reorder the buckets
    start = bucket_start(at)
    buckets = [b for b in history.buckets if b.start > start - DAY_MS]
    if buckets and buckets[-1].start == start:
        last = buckets.pop()
        buckets.append(Bucket(start, last.ok + ok, last.total + 1))
    else:
        buckets.append(Bucket(start, int(ok), 1))
    if ok:
        return replace(history, buckets=tuple(buckets), consecutive_failures=0, last_probe=at, last_ok=at,
                       latency_ewma_ms=history.latency_ewma_ms if latency_ms is None
                       else ewma(history.latency_ewma_ms, latency_ms), last_error=None)
    return replace(history, buckets=tuple(buckets), consecutive_failures=history.consecutive_failures + 1,
                   last_probe=at, last_error=(error or "probe failed")[:MAX_ERROR])


def record_audit(history: PeerHistory, at: int, ok: bool, detail: str = "") -> PeerHistory:
    return replace(history, last_audit={"time": at, "ok": ok, "detail": detail[:MAX_ERROR]})


def success_ratio(history: PeerHistory, now: int, window_ms: int) -> tuple[float | None, int]:
    """(ratio, probes) over the buckets that start within `window_ms` before now's bucket ends.

    The window is whole buckets: the current one plus those starting less than window_ms before it."""
    first = bucket_start(now) - window_ms + BUCKET_MS
    ok = total = 0
    for b in history.buckets:
        if first <= b.start <= now:
            ok += b.ok
            total += b.total
    return (ok / total if total else None), total


def probe_due(history: PeerHistory, now: int, interval_ms: int) -> bool:
    """Is a peer due a probe in a round at `now`?  Every round while its last probes succeed, less often the
    more of them in a row failed (half an interval of slack: rounds come early by their jitter)."""
    if history.last_probe is None or history.consecutive_failures <= 1:
        return True
    wait = interval_ms * min(2 ** (history.consecutive_failures - 1), MAX_BACKOFF)
    return now - history.last_probe >= wait - interval_ms // 2


def last_probe_ok(history: PeerHistory) -> bool | None:
    """Did the last probe succeed?  None before the first probe."""
    return None if history.last_probe is None else history.consecutive_failures == 0


def ask_again(history: PeerHistory, error: BaseException) -> bool:
    """Whether a probe that failed with `error` is made once more, at once, before it counts (and marks the peer
    down): only if no answer came (a lost packet's retransmits outlasting the timeout, a connection the peer had
    closed: the next attempt goes on another connection), never for a refusal or another key answering, which
    would come again; and only for a peer up at its last probe, so that a peer down, or a stranger's dead
    addresses never answered, cost one attempt a probe, not two."""
    return (last_probe_ok(history) is True and isinstance(error, PeerUnreachable)
            and not isinstance(error, PeerIdentityMismatch))


def availability(history: PeerHistory, now: int) -> Availability:
    ratio_1h, probes_1h = success_ratio(history, now, HOUR_MS)
    ratio_24h, probes_24h = success_ratio(history, now, DAY_MS)
    up = last_probe_ok(history)
    return Availability(ratio_1h=ratio_1h, ratio_24h=ratio_24h, probes_1h=probes_1h, probes_24h=probes_24h,
                        latency_ms=history.latency_ewma_ms, consecutive_failures=history.consecutive_failures,
                        up=up, last_probe=history.last_probe, last_ok=history.last_ok,
                        last_error=history.last_error, last_audit=history.last_audit,
                        up_since=next((b.start for b in history.buckets if b.ok), None))


def sparkline(history: PeerHistory, now: int, window_ms: int, points: int) -> list[float | None]:
    """Availability over the `window_ms` before now's bucket ends, in `points` equal slices (oldest first): each
    slice's successful probes / probes, None for a slice without probes.  For the dashboard's sparklines:
    the last hour in 12 slices of 5 minutes, the last day in 24 of an hour."""
    per = max(1, window_ms // BUCKET_MS // points)  # buckets per slice
    first = bucket_start(now) - (points * per - 1) * BUCKET_MS
    ok, total = [0] * points, [0] * points
    for b in history.buckets:
        i = (b.start - first) // BUCKET_MS // per
        if 0 <= i < points and b.start <= now:
            ok[i] += b.ok
            total[i] += b.total
    return [round(o / t, 4) if t else None for o, t in zip(ok, total)]


def reachable_status(ups: list[bool | None]) -> str:
    """The `peers:reachable` health check: warn when fewer than half the probed peers answered their last probe.

    Peers not yet probed do not count either way; no peers at all is a pass (a lone node is healthy)."""
    probed = [u for u in ups if u is not None]
    if not probed:
        return "pass"
    return "pass" if 2 * sum(probed) >= len(probed) else "warn"
