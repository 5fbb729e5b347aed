"""Per-caller rate limits of the node's HTTP API (429 with Retry-After past them), and the deadline of a
small request body (408 past it).

Token buckets by key (a peer's id, a remote address), at most MAX_KEYS of them: the least recently
seen key is forgotten first, so a flood of fresh keys costs a bounded table, and a forgotten key
starts again with a full bucket (never worse than a new caller); a key refused is kept within it too."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from aiohttp import web

from ..errors import BodyTimeout, QuotaExceeded
from ..tasks import refill

BODY_SECONDS = 30.0  # a small body (at most the app's client_max_size, 1 MiB) must arrive within this

MAX_KEYS = 10_000


class RateLimiter:
    """`rate` units (requests, unless `unit` says otherwise) per second per key, in bursts of at most `burst`.
    Pure: the caller passes the clock."""

    def __init__(self, rate: float, burst: float, unit: str = "requests") -> None:
        self.rate, self.burst, self.unit = rate, burst, unit
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last time)
        # key -> the cost `check` last refused it: `require` asks for that much before its next body is read, so
        # a sender past its quota is not parsed again, message after message, only to be refused again
        self._refused: dict[str, float] = {}

    def __len__(self) -> int:  # keys remembered
        return len(self._buckets)

    def check(self, key: str, now: float, what: str, cost: int = 1) -> None:
        """Take `cost` tokens for `key` (a unit of work each), or raise QuotaExceeded saying when to come back
        (nothing taken): a cost above the burst never passes."""
        tokens = self._refilled(key, now)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            self._refused[key] = cost
            self._forget_oldest()
            raise self._refusal(what, cost, tokens)
        self._buckets[key] = (tokens - cost, now)
        self._refused.pop(key, None)
        self._forget_oldest()

    def require(self, key: str, now: float, what: str, amount: float) -> None:
        """Raise QuotaExceeded (saying when to come back) unless `key` has `amount` tokens (at most the burst)
        available, or as many as the cost `check` last refused it if that is more; none is taken."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = refill(tokens, last, now, self.rate, self.burst)
        amount = min(max(amount, self._refused.get(key, 0.0), 1.0), self.burst)
        if tokens < amount:
            raise self._refusal(what, amount, tokens)

    def tokens(self, key: str, now: float) -> float:
        """The tokens `key` has now (what it may still spend at once)."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        return refill(tokens, last, now, self.rate, self.burst)

    def _refusal(self, what: str, needed: float, tokens: float) -> QuotaExceeded:
        return QuotaExceeded(f"too many {self.unit} from {what}: at most {self.rate:g} a second",
                             hint="slow down and retry", retry_after=(needed - tokens) / self.rate)

    def take_up_to(self, key: str, now: float, wanted: int) -> int:
        """Take as many whole tokens for `key` as there are, up to `wanted`: how many were taken (0: none left)."""
        tokens = self._refilled(key, now)
        taken = max(0, min(wanted, int(tokens)))
        self._buckets[key] = (tokens - taken, now)
        self._forget_oldest()
        return taken

    def _refilled(self, key: str, now: float) -> float:
        """`key`'s tokens now, its bucket taken out of the table (put back, as the newest, by the caller)."""
        tokens, last = self._buckets.pop(key, (self.burst, now))
        return refill(tokens, last, now, self.rate, self.burst)

    def _forget_oldest(self) -> None:
        while len(self._buckets) > MAX_KEYS:
            self._refused.pop(self._buckets.popitem(last=False)[0], None)


async def read_body(request: web.Request) -> bytes:
    """The whole body (bounded by the app's client_max_size), or 408 when it has not all arrived within
    BODY_SECONDS: a client that stops mid-body, or declares more than it sends, does not hold the request."""
    if request.content.is_eof():  # all of it has arrived (a small body comes with its headers): nothing to wait for
        return await request.read()
    try:
        async with asyncio.timeout(BODY_SECONDS):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {BODY_SECONDS:.0f} s", hint="send the whole body at once",
                          declared=request.content_length) from None
