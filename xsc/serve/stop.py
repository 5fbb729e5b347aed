"""A node's stop, one way wherever the node runs (`xsc node start` on SIGINT or SIGTERM, a node in a test's process
as its server closes): the node's runners (listener.py) run `drain` first as they clean up, then aiohttp's own
shutdown and the app's cleanup (its services closed, its database last).

`drain` says the node leaves (LEAVE: its peers stop placing work on it, and work they still send is refused 503
`node-stopping`), stops listening, then lets the requests in flight (IN_FLIGHT) end, SHUTDOWN_TIMEOUT at most,
saying what it waits for every PROGRESS_SECONDS; those still going then are cancelled and waited for, so that none
runs on while the services close.  Whatever saying it leaves meets (a full disk refusing the offer's write), the rest
of the stop goes on: the node stops as it would have, only its peers learn of it later (from their probes).

A stop forced (`force`: a second SIGINT or SIGTERM) waits for nothing more: the requests in flight are cancelled at
once, and what the services' close would still wait for is cut short (CUT_SHORT: a hosted job's run is stopped as
at the end of its grace).  What it leaves is what a stop leaves once SHUTDOWN_TIMEOUT has run out: the services
still close in order, after every request has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..tasks import stop as stop_tasks, woken

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 30.0  # seconds a stop waits for the requests in flight
PROGRESS_SECONDS = 5.0  # how often a stop that waits says what for
NAMED_AT_MOST = 4  # kinds of request a progress line names


class InFlight:
    """The middleware that counts the requests being handled, and knows what each is, so a stop can wait for them,
    say what it waits for, and cut them short."""

    def __init__(self) -> None:
        self.requests: dict[asyncio.Task, str] = {}  # each request's task -> its method and route
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def count(self) -> int:
        return len(self.requests)

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        task = asyncio.current_task()
        assert task is not None
        resource = request.match_info.route.resource
        # The route's pattern, never the path itself: a peer's path is its own text, and this goes to the console.
        self.requests[task] = f"{request.method} {resource.canonical if resource is not None else '(no route)'}"
        self.idle.clear()
        try:
            return await handler(request)
        finally:
            del self.requests[task]
            if not self.requests:
                self.idle.set()

    def describe(self) -> str:
        """`2 requests in flight (POST /v1/store/files, GET /v1/peer/shares/{index})`."""
        kinds = Counter(self.requests.values()).most_common()
        named = ", ".join(what if n == 1 else f"{n} x {what}" for what, n in kinds[:NAMED_AT_MOST])
        more = f" and {len(kinds) - NAMED_AT_MOST} more kinds" if len(kinds) > NAMED_AT_MOST else ""
        return f"{self.count} request{'s' if self.count != 1 else ''} in flight ({named}{more})"


IN_FLIGHT = web.AppKey("in_flight", InFlight)
LEAVE = web.AppKey("leave", Callable[[], Awaitable[None]])  # the node says it leaves (set once its services run)
CUT_SHORT = web.AppKey("cut_short", Callable[[], None])  # stops now what the services' close would wait for


def force(app: web.Application, forced: asyncio.Event) -> None:
    """The stop waits for nothing more (a second SIGINT or SIGTERM)."""
    if not forced.is_set():
        forced.set()
        log.warning("stopping at once: what is still under way is cut short")
        if CUT_SHORT in app:
            app[CUT_SHORT]()


async def drain(runner: web.BaseRunner, forced: asyncio.Event) -> None:
    """The node's part of its stop, before aiohttp's: leave, stop listening, let the requests in flight end."""
    app = runner.app
    if LEAVE in app:
        try:
            await app[LEAVE]()  # (within its own few seconds, forced or not)
        except Exception:
            log.exception("stopping: could not tell the peers this node leaves (they will find it gone); "
                          "stopping all the same")
    # Then it listens no more; its open connections stay as they are until aiohttp's own shutdown, which stops
    # reading request bodies (an upload in flight could not end).
    for site in list(runner.sites):
        await site.stop()
    in_flight = app.get(IN_FLIGHT)
    if in_flight is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_TIMEOUT
    while in_flight.count and not forced.is_set() and (left := deadline - loop.time()) > 0:
        log.info("stopping: waiting for %s, %.0f s at most (a second SIGINT or SIGTERM stops at once)",
                 in_flight.describe(), left)
        await woken(in_flight.idle, min(PROGRESS_SECONDS, left), forced)
    if in_flight.count:
        log.warning("stopping: cutting short %s%s", in_flight.describe(),
                    "" if forced.is_set() else f", still going after {SHUTDOWN_TIMEOUT:.0f} s")
        await stop_tasks(*in_flight.requests)


__all__ = ["CUT_SHORT", "IN_FLIGHT", "LEAVE", "PROGRESS_SECONDS", "SHUTDOWN_TIMEOUT", "InFlight", "drain", "force"]
