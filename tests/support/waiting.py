"""Waiting for an event a test cannot be told of directly: poll a check until it holds.

The timeout is a deadline against a hang, never a timing assertion: a check that holds late still passes.
`eventually` polls from a plain test (node processes, the CLI); `eventually_async` from a test on the event loop
(in-process nodes keep running while it waits), and its check may be a coroutine function.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable

POLL_SECONDS = 0.05


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0, poll: float = POLL_SECONDS) -> Any:
    """check()'s first truthy value, polled every `poll` seconds; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)
    return value


async def eventually_async(check: Callable[[], Any], what: str, timeout: float = 30.0,
                           poll: float = POLL_SECONDS) -> Any:
    """As `eventually`, on the event loop: check() may return an awaitable, which is awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)
