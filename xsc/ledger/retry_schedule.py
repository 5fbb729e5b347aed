"""When the payment retry (settlement.Payments) next tries each pending payment it, or its owner, failed to finish.

A payment whose close or receipt just failed (its payee unreachable, a write of the ledger refused) is tried again
FIRST seconds later, then after twice as long each time it stays pending, never more than `most` apart (the retry's
interval): a payee back a moment later is paid a moment later, and one down for a day is asked no more often than
every interval.  The tries are bounded by the payment itself: it ends paid, dropped, or given up once its
authorization expired (Payments.retry).  A payment never tried yet is due at once.  Kept in memory only: a start
tries every pending payment at once, as it always has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

FIRST = 1.0  # seconds before the first try again of a payment that failed


@dataclass
class Tried:
    tries: int  # tries that left it pending (its owner's included)
    due: float  # when it is tried next (time.monotonic())
    error: str  # why the last one left it pending
    wait: float  # seconds from the last try to `due`


class RetrySchedule:
    def __init__(self, most: float, first: float = FIRST) -> None:
        self.most, self.first = most, min(first, most)
        self._tried: dict[bytes, Tried] = {}

    def failed(self, authorization_id: bytes, error: str, now: float | None = None) -> Tried:
        """A try of the payment left it pending (`error`: why): the next one is due after twice the wait before."""
        now = time.monotonic() if now is None else now
        before = self._tried.get(authorization_id)
        tries = 1 if before is None else before.tries + 1
        wait = min(self.most, self.first * 2 ** (tries - 1))
        tried = self._tried[authorization_id] = Tried(tries, now + wait, error[:300], wait)
        return tried

    def put_off(self, authorization_id: bytes, now: float | None = None) -> None:
        """A try come due while its payment's owner works on it (a close under way): due again one wait later, not
        tried, so that the retry's loop does not wake for it at once, again and again, while the owner works."""
        tried = self._tried.get(authorization_id)
        if tried is not None:
            tried.due = (time.monotonic() if now is None else now) + tried.wait

    def due(self, authorization_id: bytes, now: float | None = None) -> bool:
        tried = self._tried.get(authorization_id)
        return tried is None or tried.due <= (time.monotonic() if now is None else now)

    def ended(self, authorization_id: bytes) -> None:
        """The payment is paid or dropped: nothing more to try."""
        self._tried.pop(authorization_id, None)

    def keep_only(self, pending: set[bytes]) -> None:
        """Forget the payments no longer pending (ended by something else than a try: a start, an abandon)."""
        for gone in [a for a in self._tried if a not in pending]:
            del self._tried[gone]

    def wait(self, now: float | None = None) -> float:
        """Seconds until the next try is due: `most` at most (every pending payment is tried that often)."""
        now = time.monotonic() if now is None else now
        soonest = min((t.due for t in self._tried.values()), default=now + self.most)
        return max(0.0, min(self.most, soonest - now))

    def of(self, authorization_id: bytes) -> dict | None:
        """How the payment's tries went, as `xsc compute job` shows them: how many, the last one's error, and when
        the next is (seconds since the epoch); None if none failed yet."""
        tried = self._tried.get(authorization_id)
        if tried is None:
            return None
        return {"tries": tried.tries, "error": tried.error,
                "next_try": round(time.time() + max(0.0, tried.due - time.monotonic()), 3)}


__all__ = ["FIRST", "RetrySchedule", "Tried"]
