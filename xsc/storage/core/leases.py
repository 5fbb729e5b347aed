"""Share leases: the pure rules (bounds of a duration, renewal, what a renewal adds, when a file has expired).

A share is held until its lease expiry (unix seconds).  A renewal sets it to `now + duration` but never
earlier than it already is, so a renewal sent twice, or late, or out of order, cannot shorten a lease.
The gateway's file record keeps the lease of each of the file's shares as far as it knows (`leases`,
one per share) and the earliest of them (`lease_expiry`); a share whose holder could not be reached
keeps the lease it had, so the record errs on the early side, never the late one.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import InvalidArgument

MIN_DURATION = 60  # seconds: short leases exist for tests and trials
MAX_DURATION = 3650 * 86400  # ten years
# The API's, in whole seconds (the CLI turns 30d into them and checks the bounds itself).
DURATION_HINT = "give whole seconds from 60 to 315360000 (3650 days), e.g. 2592000 for 30 days"


def check_duration(seconds: int) -> int:
    """A lease duration within bounds, else InvalidArgument (HTTP 400) with a hint."""
    if type(seconds) is not int or not MIN_DURATION <= seconds <= MAX_DURATION:
        raise InvalidArgument(f"a lease duration must be from {MIN_DURATION} s to {MAX_DURATION} s "
                              f"(ten years), not {seconds!r}", hint=DURATION_HINT,
                              minimum=MIN_DURATION, maximum=MAX_DURATION)
    return seconds


def parse_duration_param(text: str | None, default: int) -> int:
    """The `duration` query or body parameter: whole seconds (the CLI turns 30d into seconds)."""
    if text is None:
        return check_duration(default)
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise InvalidArgument(f"duration must be a whole number of seconds, not {text[:40]!r}", hint=DURATION_HINT)
    return check_duration(int(text))


def renewed(current: int, target: int) -> int:
    """The lease after a renewal to `target`: never shorter than it was."""
    return max(current, target)


def extension_seconds(previous: int, new: int, now: int) -> int:
    """Seconds of holding a renewal adds, counted from now (time a share spent expired is not sold again)."""
    return max(0, new - max(previous, now))


def file_leases(previous: Sequence[int] | None, renewed_leases: dict[int, int], shares: int) -> list[int]:
    """A file record's per-share leases after a renewal: renewed shares take the lease their holder
    reports, the others keep what the record had (0 if it had nothing)."""
    leases = list(previous) if previous and len(previous) == shares else [0] * shares
    for share, lease in renewed_leases.items():
        leases[share] = max(leases[share], lease)
    return leases


def file_expired(record: dict, before: int) -> bool:
    """Whether every share of an uploaded file had its lease end before `before` (a record with no
    lease information never expires: it predates leases)."""
    leases = record.get("leases")
    return bool(leases) and max(leases) < before


def latest(record: dict, now: int) -> int:
    """When the last lease of an uploaded file's shares ends, as its record knows them (a record with no lease
    information: the longest lease from `now`)."""
    leases = record.get("leases")
    return max(leases) if leases else now + MAX_DURATION


def live_shares(record: dict, now: int) -> list[int]:
    """The shares of a file whose lease (as its record knows it) has not ended: the ones worth auditing
    and repairing.  A record without lease information counts all its shares as live."""
    placement = record.get("placement") or []
    leases = record.get("leases")
    if not leases or len(leases) != len(placement):
        return list(range(len(placement)))
    return [s for s, lease in enumerate(leases) if lease > now]


__all__ = ["DURATION_HINT", "MAX_DURATION", "MIN_DURATION", "check_duration", "extension_seconds", "file_expired",
           "file_leases", "latest", "live_shares", "parse_duration_param", "renewed"]
