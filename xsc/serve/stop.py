"""A node's stop, one way wherever the node runs (`xsc node start` on SIGINT or SIGTERM, a node in a test's process
as its server closes): the node's runners (listener.py) run `drain` first as they clean up (`Draining`), then
aiohttp's own shutdown and the app's cleanup (its other listeners closed, then its services, its database last).
The S3 front on its own (`xsc s3 serve`) stops the same way, its runner the only one and with nothing to leave; its
refusals name it, not the node.

`drain` says the node leaves (LEAVE: its peers stop placing work on it, and work they still send is refused 503
`node-stopping`), stops listening, on its own port and on its other listeners (LISTENERS: the web functions', the S3
front's), then lets the requests in flight on all of them (each app's IN_FLIGHT) end, SHUTDOWN_TIMEOUT at most,
saying what it waits for every PROGRESS_SECONDS; those still going then are cancelled and waited for, so that none
runs on while the services close.  From its first moment, a new request on a connection already open (or on one
accepted while the node leaves) is refused 503 `node-stopping`, each listener's in its own form (their InFlight's
`refuse`), with Retry-After and its connection closed: served, a user's put would stretch the stop, up to its bound.
The node's peers' requests are served still (their work is refused by the market, as above; a share asked for is
sent).  Whatever saying it leaves meets (a full disk refusing the offer's write), the rest of the stop goes on: the
node stops as it would have, only its peers learn of it later (from their probes).

A stop forced (`force`: a second SIGINT or SIGTERM) waits for nothing more: saying it leaves is cut short where it
waits for the peers, the requests in flight are cancelled at once, and what the services' close would still wait for
is cut short (CUT_SHORT: a hosted job's run is stopped as at the end of its grace).  What it leaves is what a stop
leaves once SHUTDOWN_TIMEOUT has run out: the services still close in order, after every request has ended.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import db
from ..errors import NodeStopping, XscError
from ..units import counted
from ..tasks import stop as stop_tasks, unless_set, woken

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 30.0  # seconds a stop waits for the requests in flight
RETRY_AFTER = 5  # seconds a request refused by a stopping server is told to wait: a restart's few (Retry-After)
PROGRESS_SECONDS = 5.0  # how often a stop that waits says what for
NAMED_AT_MOST = 4  # kinds of request a progress line names


Refuse = Callable[[web.Request, XscError], web.StreamResponse]  # a listener's answer to an error, in its own form


class InFlight:
    """The middleware that counts the requests being handled, and knows what each is, so a stop can wait for them,
    say what it waits for, and cut them short.  Once `stopping`, a new request is answered by `refuse` (if given)
    with NodeStopping naming `server` (what stops: this node, or the S3 front on its own), RETRY_AFTER, its connection
    closed; those `spared` (the node's peers': a share asked for as the node leaves) and all of them without `refuse`
    are served and waited for as the others."""

    def __init__(self, listener: str = "", refuse: Refuse | None = None, *, server: str = "this node",
                 spared: Callable[[web.Request], bool] | None = None) -> None:
        self.requests: dict[asyncio.Task, str] = {}  # each request's task -> its listener, method and route
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False
        self._listener = f"{listener} " if listener else ""  # names its requests in what the stop says
        self._refuse = refuse
        self._server = server
        self._spared = spared

    @property
    def count(self) -> int:
        return len(self.requests)

    def refusal(self, request: web.Request) -> web.StreamResponse | None:
        """The answer to a request that comes once the server is stopping (None: it is served).  Also asked before
        the request is routed (connections.py) when it says `Expect: 100-continue`: its route's expect handler runs
        before any middleware, and would tell the client to send a body that is never read."""
        if not self.stopping or self._refuse is None or (self._spared and self._spared(request)):
            return None
        response = self._refuse(request, NodeStopping(
            f"{self._server} is stopping: it takes no new requests", retry_after=RETRY_AFTER,
            hint=f"send it again once {self._server.replace('this ', 'the ', 1)} is back"))
        response.force_close()  # its body, if one follows, is not read; and no next request comes on it
        return response

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        refused = self.refusal(request)
        if refused is not None:
            return refused
        task = asyncio.current_task()
        assert task is not None
        resource = request.match_info.route.resource
        # The route's pattern, never the path itself: a peer's path is its own text, and this goes to the console.
        route = resource.canonical if resource is not None else "(no route)"
        self.requests[task] = f"{self._listener}{request.method} {route}"
        self.idle.clear()
        try:
            return await handler(request)
        finally:
            del self.requests[task]
            if not self.requests:
                self.idle.set()

    def describe(self) -> str:
        """`2 requests in flight (POST /v1/store/files, GET /v1/peer/shares/{index})`."""
        return describe([self])


def describe(flights: list[InFlight]) -> str:
    """What the requests in flight of every listener are (web functions' and S3's named by their listener)."""
    kinds = Counter(what for flight in flights for what in flight.requests.values()).most_common()
    count = sum(flight.count for flight in flights)
    named = ", ".join(what if n == 1 else f"{n} x {what}" for what, n in kinds[:NAMED_AT_MOST])
    more = f" and {len(kinds) - NAMED_AT_MOST} more kinds" if len(kinds) > NAMED_AT_MOST else ""
    return f"{counted(count, 'request')} in flight ({named}{more})"


IN_FLIGHT = web.AppKey("in_flight", InFlight)
LEAVE = web.AppKey("leave", Callable[[], Awaitable[None]])  # the node says it leaves (set once its services run)
CUT_SHORT = web.AppKey("cut_short", Callable[[], None])  # stops now what the services' close would wait for
LISTENERS = web.AppKey("listeners", list)  # the runners of the node's other listeners (web functions, S3 front)


def force(app: web.Application, forced: asyncio.Event) -> None:
    """The stop waits for nothing more (a second SIGINT or SIGTERM)."""
    if not forced.is_set():
        forced.set()
        log.warning("stopping at once: what is still under way is cut short")
        if CUT_SHORT in app:
            app[CUT_SHORT]()


class Draining:
    """Makes an AppRunner's cleanup the stop: `drain` first, then aiohttp's own (the node's runners, and the S3
    front's on its own, `xsc s3 serve`)."""

    app: web.Application

    def __init__(self, app: web.Application, **kwargs) -> None:
        super().__init__(app, **kwargs)  # type: ignore[call-arg]
        self._forced = asyncio.Event()

    def force(self) -> None:
        """Stop at once (a second SIGINT or SIGTERM): the stop under way, or the next, waits for nothing more."""
        force(self.app, self._forced)

    async def cleanup(self) -> None:
        await drain(self, self._forced)  # type: ignore[arg-type]
        await super().cleanup()  # type: ignore[misc]


def on_signals(stop: asyncio.Event, force: Callable[[], None], stopping: Callable[[], None] = lambda: None) -> None:
    """SIGINT or SIGTERM (a user's Ctrl-C, systemd's stop) sets `stop` and calls `stopping` (to say what the stop
    waits for where nothing else does); another one then calls `force`, which stops at once what is under way (a
    runner's `force`; `xsc s3 serve`'s first reconcile, before it listens)."""
    loop = asyncio.get_running_loop()

    def signalled() -> None:
        if not stop.is_set():
            stop.set()
            stopping()
        else:
            force()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled)


async def drain(runner: web.BaseRunner, forced: asyncio.Event) -> None:
    """The node's part of its stop, before aiohttp's: leave, stop listening, let the requests in flight end."""
    app = runner.app
    runners = [runner, *app.get(LISTENERS, ())]
    flights = [flight for r in runners if (flight := r.app.get(IN_FLIGHT)) is not None]
    for flight in flights:  # from the first moment: a user's next request on a connection kept open is refused
        flight.stopping = True
    await _leave(app, forced)
    # Then it listens no more, anywhere; its open connections stay as they are until aiohttp's own shutdown (the
    # other listeners': their runners' cleanup, in the app's), which stops reading request bodies (an upload in
    # flight could not end).
    for r in runners:
        for site in list(r.sites):
            await site.stop()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_TIMEOUT
    while (busy := [f for f in flights if f.count]) and not forced.is_set() and (left := deadline - loop.time()) > 0:
        log.info("stopping: waiting for %s, %.0f s at most (a second SIGINT or SIGTERM stops at once)",
                 describe(flights), left)
        await woken(busy[0].idle, min(PROGRESS_SECONDS, left), forced)
    if busy:
        log.warning("stopping: cutting short %s%s", describe(flights),
                    "" if forced.is_set() else f", still going after {SHUTDOWN_TIMEOUT:.0f} s")
        await stop_tasks(*(task for flight in busy for task in flight.requests))


async def _leave(app: web.Application, forced: asyncio.Event) -> None:
    """The node says it leaves (within its own few seconds), cut short when the stop is forced."""
    if LEAVE not in app:
        return
    try:
        if not await unless_set(app[LEAVE](), forced):
            log.warning("stopping: no longer waiting for the peers to hear this node leaves")
    except Exception as err:
        if not db.disk_full(err):
            log.exception("stopping: could not tell the peers this node leaves (they will find it gone); "
                          "stopping all the same")
        else:  # a full disk is said once, not as a traceback: the node could not write what it signs first
            log.warning("stopping: could not tell the peers this node leaves, the data dir's disk is full (they "
                        "will find it gone); stopping all the same")


__all__ = ["CUT_SHORT", "IN_FLIGHT", "LEAVE", "LISTENERS", "PROGRESS_SECONDS", "RETRY_AFTER", "SHUTDOWN_TIMEOUT",
           "Draining", "InFlight", "Refuse", "describe", "drain", "force", "on_signals"]
