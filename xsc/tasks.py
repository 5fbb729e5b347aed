"""The one way to run blocking work off the event loop, and the one way to run a periodic loop.

    await in_pool(pool, fn, *args)          fn(*args) in the node's CPU pool (hashing, crypto, LevelDB)
    task = every(name, period, step)        await step() every period() seconds until cancelled;
                                            a failed round is logged and never ends the loop
    await stop(*tasks)                      cancel background tasks and wait for them to end
    await at_most(n, calls)                 await calls (an iterable of awaitables) n at a time at most
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def in_pool(pool: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def jittered(seconds: float, jitter: float) -> float:
    """`seconds` varied by +-jitter of itself, so that nodes started together do not act in lockstep."""
    return seconds * random.uniform(1 - jitter, 1 + jitter) if jitter else seconds


def every(name: str, period: Callable[[], float] | float, step: Callable[[], Awaitable[Any]], *,
          jitter: float = 0.0, first: float | None = None) -> asyncio.Task:
    """A background task that awaits `step()` every `period` seconds (a number, or a callable read each
    round), varied by +-jitter; `first` is the wait before the first round (default: one period)."""

    async def loop() -> None:
        wait = first
        while True:
            seconds = period() if callable(period) else period
            await asyncio.sleep(jittered(seconds, jitter) if wait is None else wait)
            wait = None
            try:
                await step()
            except Exception:  # a failed round must never end the loop
                log.exception("%s failed", name)

    return asyncio.create_task(loop(), name=f"xsc-{name}")


async def stop(*tasks: asyncio.Task | None) -> None:
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def at_most(limit: int, calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await `calls` with at most `limit` in flight, taken in the order given (a generator's next call is made
    only when there is room for it); their results in that order.  A round over every peer of a full directory
    at once (probes, subscriptions) kept a thousand connections' objects alive together, each collection's work."""
    pending = enumerate(calls)
    results: dict[int, T] = {}

    async def worker() -> None:
        for i, call in pending:
            results[i] = await call

    await asyncio.gather(*(worker() for _ in range(max(1, limit))))
    return [results[i] for i in range(len(results))]
