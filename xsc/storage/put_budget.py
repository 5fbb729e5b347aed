"""The gateway's bound on the segments its puts hold in flight, all puts together (gateway_put).

Each put keeps up to `depth` segments encoding and one being written; without a bound across puts, ten parts of a
multipart upload sent at once hold ten times that.  A put takes a segment's length from the budget before it reads
the segment from its client (a put waiting its turn holds nothing it has read; a segment that is late gives its share
back: gateway_put.LET_IN_READ) and gives it back once the segment's blocks are written here and handed to the writers
of the shares sent away.  The budget is one put's whole pipeline, so a put alone never waits; puts at once share
it, served in the order they asked.  A put waits only once it has nothing of its own left to collect: what it still
holds comes back without it (its writes end on the writer's thread), so no put waits on another that waits on it.
The loop's alone (not thread-safe).

A second budget of the same kind bounds the blocks all puts hold for other nodes (`GatewayCore.sending`): a
segment's blocks for the shares sent away take their length once encoded and give it back once the batch carrying
them has been answered (or the put fails).  Its size is one put's own most, every share's batches in flight on the
longest path and the next ones filling, so a put alone never waits for it.  A put that finds either budget spent
first sends on what it holds for other nodes, however few blocks (they come back as the holders answer, without
it), then waits its turn, so a put waiting for one holds nothing another waits for in the other; and a put whose
client is slow to send its next segment sends on what it holds meanwhile, so a client that trickles holds none of
it either.
"""

from __future__ import annotations

import asyncio
from collections import deque


class PutBudget:
    def __init__(self, limit: int) -> None:
        """`limit`: bytes of segments in flight, at least one segment's."""
        self.limit = limit
        self.held = 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @property
    def waiting(self) -> int:
        """Puts waiting for their turn."""
        return sum(1 for _, future in self._waiting if not future.done())

    def try_take(self, n: int) -> bool:
        """Take n bytes if they are free and no put waits before this one."""
        if self._waiting or self.held + n > self.limit:
            return False
        self.held += n
        return True

    async def take(self, n: int) -> None:
        """Take n bytes, waiting in turn until they are free."""
        if n > self.limit:
            raise ValueError(f"{n} bytes asked of a budget of {self.limit}")
        if self.try_take(n):
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((n, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # given just as the put was cancelled
                self.give(n)
            else:
                self._wake()  # the next in line may fit now
            raise

    def give(self, n: int) -> None:
        self.held -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiting:
            n, future = self._waiting[0]
            if future.done():  # cancelled
                self._waiting.popleft()
                continue
            if self.held + n > self.limit:
                return
            self._waiting.popleft()
            self.held += n
            future.set_result(None)
