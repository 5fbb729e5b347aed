"""A holder's answers to reads of a share's blocks, and the room they hold in memory, all readers together.

An answer reads its blocks from the store in runs (READ_RUN bytes per trip to the pool: one trip per block cost the
holder more than the reading) and holds each run until it is sent.  A reader that takes its answer at a trickle,
staying just above the route's stall bound, holds its run that long: many such readers at once would hold a run
each, 2 MiB apiece, without bound.  So each run takes room in a node-wide budget before it is read (MAX_READ_AHEAD,
of which the readers of one network, `net.addresses.network_key`, hold half at most: node ids are cheap) and gives
it back once sent; a run that finds no room within READ_WAIT is refused, with a 503 `storage-busy` and a Retry-After
before the answer begins, and by cutting the answer after (its reader sees a short answer and asks another holder).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from ..errors import InvalidArgument, RangeNotSatisfiable, ShareNotFound, StorageBusy
from ..tasks import in_pool
from .core.wire import MAX_BLOCKS_PER_GET
from .share_store import ShareMeta, ShareStore

log = logging.getLogger(__name__)

# Bytes of blocks a read of a range takes from the store per trip to the pool, and holds until they are sent.
READ_RUN = 2 * 1024 * 1024
# Bytes of runs held by all the answers at once: 32 readers' runs, far more than honest gateways keep in flight (a
# read of a run goes out at the speed of its path).
MAX_READ_AHEAD = 64 * 1024 * 1024
MAX_READ_AHEAD_PER_NETWORK = MAX_READ_AHEAD // 2  # so that one network's ids, however many, leave the rest half
# Seconds a run waits for room: room is given back as runs are sent, or as their readers are cut off for stalling
# (the route's BODY_STALL), so a longer wait is for readers that trickle, which the reader does better to leave.
READ_WAIT = 10.0
RETRY_AFTER = 5  # seconds: a reader refused for room may ask again, or another holder, after this long


class ReadRoom:
    """The runs of blocks held in memory by the answers being sent: bytes in all and per network (a key is dropped at
    zero, so what is kept is bounded by the runs held)."""

    def __init__(self) -> None:
        self._held = 0
        self._networks: dict[str, int] = {}
        self._waiting: list[asyncio.Future] = []

    def status(self) -> dict[str, int]:
        """Bytes of blocks held for answers, and runs waiting for room."""
        return {"answer_bytes": self._held, "answers_waiting": sum(not w.done() for w in self._waiting)}

    def _fits(self, network: str, size: int) -> bool:
        mine = self._networks.get(network, 0)
        # A run alone is always taken, whatever its length: one larger than the bound is not kept out for ever.
        return (self._held == 0 or self._held + size <= MAX_READ_AHEAD) and \
            (mine == 0 or mine + size <= MAX_READ_AHEAD_PER_NETWORK)

    async def take(self, network: str, size: int) -> None:
        """Room for a run of `size` bytes read for a reader at `network`, waited for READ_WAIT seconds at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_WAIT
        while not self._fits(network, size):
            woken = loop.create_future()
            self._waiting.append(woken)
            try:
                await asyncio.wait_for(woken, max(deadline - loop.time(), 0))
            except TimeoutError:
                if woken in self._waiting:  # not woken: gone from the list, which holds only runs waiting
                    self._waiting.remove(woken)
                raise StorageBusy(f"this node holds {self._held:,} bytes of blocks for answers in memory, "
                                  f"{self._networks.get(network, 0):,} of them for your network {network}, and had "
                                  f"no room for {size:,} more within {READ_WAIT:g} s",
                                  hint="ask again in a moment, or read the share from another holder",
                                  retry_after=RETRY_AFTER) from None
        self._held += size
        if size:
            self._networks[network] = self._networks.get(network, 0) + size

    def give(self, network: str, size: int) -> None:
        self._held -= size
        if size:
            left = self._networks.pop(network) - size
            if left:
                self._networks[network] = left
        waiting, self._waiting = self._waiting, []
        for woken in waiting:
            if not woken.done():
                woken.set_result(None)


class BlocksAnswer:
    """The blocks of one read, run by run, each taken from the store once there is room for it; `close` gives back
    the room it holds, however the answer ended (idempotent)."""

    def __init__(self, answers: "BlockAnswers", si: bytes, share: int, first: int, lengths: list[int],
                 network: str) -> None:
        self._answers, self._si, self._share, self._first, self._lengths = answers, si, share, first, lengths
        self._network = network
        self._held = 0  # bytes of room it holds now
        self._run: list[bytes | None] = []

    def _run_end(self, segment: int) -> int:
        """The end of the run from `segment`: as many blocks as make READ_RUN bytes, at least one."""
        end, size = segment, 0
        while end < self._first + len(self._lengths) and (end == segment or size < READ_RUN):
            size += self._lengths[end - self._first]
            end += 1
        return end

    async def read(self, segment: int) -> list[bytes | None]:
        """The run from `segment`, read once room for it is held."""
        end = self._run_end(segment)
        size = sum(self._lengths[segment - self._first:end - self._first])
        await self._answers.room.take(self._network, size)
        self._held = size
        return await in_pool(self._answers.pool, _read_run, self._answers.store, self._si, self._share, segment, end)

    def close(self) -> None:
        if self._held:
            self._answers.room.give(self._network, self._held)
            self._held = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        segment, run = self._first, self._run
        end = self._first + len(self._lengths)
        while True:
            for block in run:
                if block is None or len(block) != self._lengths[segment - self._first]:
                    log.error("block %d of share %d of %s is missing or cut: answer cut", segment, self._share,
                              self._si.hex())
                    raise ShareNotFound(f"block {segment} of share {self._share} is missing on this node",
                                        segment=segment)
                yield block
                segment += 1
            self.close()
            if segment >= end:
                return
            run = await self.read(segment)


class BlockAnswers:
    """Reads of the shares held here, for the holder's blocks route."""

    def __init__(self, store: ShareStore, pool: Executor) -> None:
        self.store, self.pool = store, pool
        self.room = ReadRoom()

    async def first(self, meta: ShareMeta, si: bytes, first: int, count: int, pay: Callable[[int], None],
                    network: str = "") -> tuple[int, BlocksAnswer]:
        """Check a read of blocks first..first+count-1 of a share held here (`meta`), have `pay(size)` charged what
        its answer may be, and read the first run of them (room for it held: 503 if none comes in time); returns the
        answer's length and the blocks, the rest read as they are taken.  The length is known before the blocks are
        read: all of a share's blocks but the last are as long as each other, and they make its stored bytes."""
        if count > MAX_BLOCKS_PER_GET:
            raise InvalidArgument(f"count must be at most {MAX_BLOCKS_PER_GET}", hint="ask for the blocks in several ranges")
        share = meta.share
        if first + count > meta.segment_count:
            raise RangeNotSatisfiable(f"blocks {first} to {first + count - 1} asked, share {share} has "
                                      f"{meta.segment_count} (0 to {meta.segment_count - 1})",
                                      segment_count=meta.segment_count)
        # A block is at most this long (the last may be shorter, and is at least a byte).
        most = (meta.stored_bytes - 1) // (meta.segment_count - 1) if meta.segment_count > 1 else meta.stored_bytes
        pay(min(meta.stored_bytes, count * most))
        # The first run's room taken for blocks of `most` bytes each (what they are found to be is known once read).
        answer = BlocksAnswer(self, si, share, first, [most] * count, network)
        try:
            run = await answer.read(first)
            if run[0] is None:
                raise ShareNotFound(f"block {first} of share {share} is missing on this node", segment=first)
        except BaseException:
            answer.close()
            raise
        last = meta.segment_count - 1
        block = len(run[0])  # of any segment but the last (or of the last, if the range is only that one)
        last_block = meta.stored_bytes - last * block if first < last else block
        answer._lengths = [block] * (min(first + count, last) - first) + ([last_block] if first + count > last else [])
        answer._run = run
        return sum(answer._lengths), answer


def _read_run(store: ShareStore, si: bytes, share: int, segment: int, end: int) -> list[bytes | None]:
    """Blocks segment..end-1, up to a missing one."""
    run: list[bytes | None] = []
    for index in range(segment, end):
        block = store.get_block(si, share, index)
        run.append(block)
        if block is None:
            break
    return run


__all__ = ["BlockAnswers", "BlocksAnswer", "MAX_READ_AHEAD", "MAX_READ_AHEAD_PER_NETWORK", "READ_RUN", "READ_WAIT",
           "ReadRoom"]
