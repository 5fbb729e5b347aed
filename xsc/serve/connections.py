"""Open connections, bounded: per client address and in all, and idle ones closed after a timeout.

A node holds a file descriptor and some memory for every open connection, whether or not a request
ever comes on it, so thousands of idle sockets (or a slowloris trickle of header bytes) must neither
exhaust the node's descriptors nor lock out real callers:

- a connection without a request in progress is closed `idle_timeout` seconds after it opened or after
  its last answer, however many bytes of an unfinished request head it trickles (aiohttp's keep-alive
  timer, which starts at the connection and is not reset by incoming bytes);
- past `max_connections` in all, or `max_per_ip` from one address (an IPv6 caller: from its /64, which one host
  holds whole; `net/addresses.address_key`, as every per-address limit), a new connection makes room by
  closing the longest-idle connection (of that address, for the per-address cap) that has been idle for
  EVICTABLE_AFTER at least: idle sockets cannot keep a caller out for long, and a burst of new sockets
  cannot push out a caller whose request is on its way but not read yet.  When no connection can be
  closed, the new one is answered 503 with Retry-After and a problem body, and closed;
- the node's user is not locked out of its node by strangers: on the node's own listener (`user_room`), past
  `max_connections`, a connection from the loopback address the user's CLI reaches it from (USER_ADDRESSES)
  closes the longest-idle connection of any age, so a flood of connections just opened (none idle for
  EVICTABLE_AFTER yet) leaves it room; its own address's cap still holds;
- the node raises its soft RLIMIT_NOFILE to the hard limit at start, and keeps its cap under what the
  limit leaves after the descriptors it needs for itself (LevelDB tables, peers, logs): past the cap it
  refuses, it never meets EMFILE.

`ProblemRunner` (and so `GuardedRunner`) also answers a request aiohttp cannot parse (a malformed head, a
Content-Length that is not a number) or refuses before the app sees it (an `Expect` it does not know) with a
problem body, as the node answers every other bad request, where aiohttp's own answer is plain text (or with
the answer it is given: the S3 front's is an S3 error document).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from .. import codec
from ..net.addresses import address_key
from .stop import IN_FLIGHT, Draining

log = logging.getLogger(__name__)

EVICTABLE_AFTER = 1.0  # seconds idle before a connection may be closed to make room for a new one
USER_ADDRESSES = frozenset({"127.0.0.1", "::/64"})  # where the user's CLI reaches the node from (`address_key`s)
_USER = "user"  # the key of the idle connections the user's may close (`_longest_idle`)
LISTEN_BACKLOG = 256  # connections one loop turn accepts at most (asyncio's `backlog`)
ACCEPT_QUEUE = 4096  # connections the kernel queues for the node (capped by net.core.somaxconn); no descriptor each
RESERVED_FDS = 512  # descriptors kept for the node's own files (LevelDB tables, logs) and its peer connections,
# and for a burst's connections accepted but not yet refused or evicted (at most LISTEN_BACKLOG at once)


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the soft limit now in force."""
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        return want if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    except (ValueError, OSError):
        return soft


def connection_cap(configured: int, fd_limit: int) -> int:
    """The cap on open connections: as configured, but never past what the descriptor limit leaves."""
    return max(16, min(configured, fd_limit - RESERVED_FDS))


def problem_answer(status: int, detail: str) -> web.Response:
    """A problem body for what aiohttp could not parse (4xx) or serve (5xx): ProblemRunner's default `answer`."""
    if status < 500:
        code, hint = "malformed-request", "send a well-formed HTTP/1.1 request"
    else:
        code, hint = "internal-error", "try again; if it persists, report the server's log"
    body = codec.dumps({"type": f"urn:xsc:problem:{code}", "code": code, "status": status, "detail": detail,
                        "hint": hint})
    return web.Response(status=status, body=body, content_type="application/problem+json")


Answer = Callable[[int, str], web.Response]  # (status, detail) -> the answer


class ProblemHandler(RequestHandler):
    """aiohttp's handler of one connection, whose answer to what it cannot parse or serve is `answer`'s.

    A request answered before its body was read (a 507 to a put that does not fit) leaves aiohttp reading and
    dropping the rest for its `lingering_time`, so that the client, still sending, reads the answer before the
    close resets it.  A stopping server closes such a connection at once: its answer went out, and the linger
    would otherwise hold the stop for as long as a client that sends nothing more keeps its socket open; so does
    one set up in the loop turn the stop began in, before it waited for a first request (`shutdown`)."""

    answer: Answer = staticmethod(problem_answer)
    _answered: Any = None  # the body of the last request answered, which aiohttp drains after the answer

    async def _handle_request(self, request: Any, start_time: Any, request_handler: Any) -> Any:
        self._answered = None
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._answered = request.content

    def close(self) -> None:
        super().close()
        body, task = self._answered, self._task_handler
        if (body is not None and not body.is_eof() and not self._request_in_progress and task is not None
                and task is not asyncio.current_task()):  # (aiohttp's own close when the linger ran out)
            task.cancel()  # ends the linger: aiohttp closes the connection as it does any cancelled one

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        # The stop's close() wakes a connection waiting for its next request; one set up in the loop turn the stop
        # began in was not waiting yet, and aiohttp would wait for its first request until its client hangs up.
        self.close()
        await super().shutdown(timeout)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it; raises if an answer is already under way
        if isinstance(exc, LineTooLong):
            detail = f"the request is not valid HTTP: {_too_long(exc)}"
        elif status < 500:
            # aiohttp's message quotes the offending bytes under a caret drawing: its first line says what is wrong
            lines = (message or "").strip().splitlines()
            detail = f"the request is not valid HTTP: {lines[0] if lines else 'malformed request'}"
        else:
            detail = "the server hit an unexpected error; see its log"
        response = self.answer(status, detail)
        response.force_close()
        return response


def _too_long(exc: LineTooLong) -> str:
    """What aiohttp's LineTooLong was about, in words: its own message is the repr of the first 100 bytes of the
    line (`bytearray(b'/v1/market/explain/...')`), which a user who pasted a long id into a command or the dashboard
    cannot act on.  A request line's bytes start with its path (or its method, then the path); a header's do not."""
    line, limit = (list(exc.args) + ["", ""])[:2]
    where = "its path" if re.match(rb"(?:[A-Z]+ )?/", bytes(line or b"")) else "one of its headers"
    bound = f"{limit:,} bytes" if isinstance(limit, int) else "the bytes this node reads"
    return f"{where} is over {bound}, longer than any id or name here (check what was pasted into it)"


class ProblemServer(Server):
    """aiohttp's Server (the protocol factory of a listening socket), its connections handled by ProblemHandler."""

    def __init__(self, *args: Any, answer: Answer = problem_answer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer = answer

    def __call__(self) -> RequestHandler:
        handler = ProblemHandler(self, loop=self._loop, **self._kwargs)
        handler.answer = self.answer
        return handler


class ProblemRunner(web.AppRunner):
    """aiohttp's AppRunner, its server a ProblemServer (or the subclass `server_class` names) answering what aiohttp
    cannot parse with `answer(status, detail)`: a problem body unless told otherwise (the S3 front's is an S3 error)."""

    server_class: type[ProblemServer] = ProblemServer

    def __init__(self, app: web.Application, *, answer: Answer = problem_answer, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.server_options: dict[str, Any] = {"answer": answer}

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        return self.server_class(_answering(server.request_handler, self.server_options["answer"], self.app),
                                 request_factory=server.request_factory,
                                 handler_cancellation=server.handler_cancellation, loop=server._loop,
                                 **server._kwargs, **self.server_options)


def _answering(handle: Callable[[web.BaseRequest], Any], answer: Answer,
               app: web.Application) -> Callable[[web.BaseRequest], Any]:
    """The app's request handler, an error aiohttp raises before the app's middlewares run answered by `answer`:
    its check of an `Expect` header (417 to anything but 100-continue) on a route without an expect handler
    of its own.  A request with an `Expect` header that comes while the server stops is refused here, as its
    InFlight refuses any other (stop.py): its route's expect handler, which runs before the middlewares, would
    answer 100 Continue, and the client would send a body never read, to find its connection cut."""

    async def handled(request: web.BaseRequest) -> web.StreamResponse:
        flight = app.get(IN_FLIGHT)
        if flight is not None and "Expect" in request.headers and isinstance(request, web.Request):
            refused = flight.refusal(request)
            if refused is not None:
                return refused
        try:
            return await handle(request)
        except web.HTTPExpectationFailed as exc:  # an app's middlewares answer every other error as they see fit
            response = answer(exc.status, f"{exc.reason}: {exc.text}")
            response.force_close()  # the request's body, if one follows, was never read
            return response

    return handled


@functools.lru_cache(maxsize=64)  # a burst past a cap is refused with the same few details
def _refusal(detail: str) -> bytes:
    body = codec.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                       "code": "too-many-connections", "detail": detail,
                       "hint": "close idle connections, or retry in a second"})
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _idle_since(handler: RequestHandler) -> float | None:
    """When the connection was opened or last answered, if it is waiting for its next request now (else None).
    aiohttp's own state: its request loop waits on `_waiter` between requests, `_request_in_progress` covers
    a handler, and its keep-alive deadline is that moment plus the timeout."""
    waiter = getattr(handler, "_waiter", None)
    if waiter is None or waiter.done() or getattr(handler, "_request_in_progress", False):
        return None
    return getattr(handler, "_next_keepalive_close_time", 0.0) - getattr(handler, "_keepalive_timeout", 0.0)


class GuardedServer(ProblemServer):
    """aiohttp's Server (the protocol factory of the listening socket) with the caps above."""

    def __init__(self, *args: Any, max_connections: int, max_per_ip: int, user_room: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections, self.max_per_ip = max_connections, max_per_ip
        self.user_room = user_room  # the node's own listener: its user's connections close strangers' of any age
        self._by_ip: dict[str, set[RequestHandler]] = defaultdict(set)
        self._ip_of: dict[RequestHandler, str] = {}
        self.refused = 0  # connections answered 503 (every connection busy)
        self.evicted = 0  # idle connections closed to make room
        self._queues: dict[str | None, list[tuple[float, RequestHandler]]] = {}  # see _longest_idle
        self._none_until: dict[str | None, float] = {}

    @property
    def open(self) -> int:
        return len(self._ip_of)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peer = transport.get_extra_info("peername")
        ip = address_key(peer[0] if isinstance(peer, tuple) and peer else None)
        detail = self._no_room(ip, make_room=True)
        if detail is not None:
            transport.write(self._refusal(detail))
            # Closed on the next loop turn, not now: aiohttp starts the connection's task once this returns, and
            # a connection lost before that task first runs fails it (an AssertionError logged, with its
            # traceback, for every connection refused past the caps on a listener the loop accepts for).
            self._loop.call_soon(handler.force_close)
            return
        self._by_ip[ip].add(handler)
        self._ip_of[handler] = ip

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        ip = self._ip_of.pop(handler, None)
        if ip is not None:
            mine = self._by_ip[ip]
            mine.discard(handler)
            if not mine:
                del self._by_ip[ip]
                self._queues.pop(ip, None)
                self._none_until.pop(ip, None)
        super().connection_lost(handler, exc)

    def refusal(self, ip: str, waiting_from_ip: int = 0) -> bytes | None:
        """The 503 answer for a new connection from ip, if its caps are reached and nothing idle can be closed
        to make room (counted as refused); None: the connection may be served.  `waiting_from_ip` connections
        from ip (from its /64, for IPv6: `address_key`) accepted but not set up yet count as open ones."""
        detail = self._no_room(address_key(ip), make_room=False, waiting_from_ip=waiting_from_ip)
        return None if detail is None else self._refusal(detail)

    def _no_room(self, ip: str, make_room: bool, waiting_from_ip: int = 0) -> str | None:
        """Why a new connection from ip cannot be served now (None: it can).  With `make_room`, idle
        connections are closed to bring it under the caps; without, only looked for."""
        def room(among, key: str | None) -> bool:
            return self._evict(among, key) if make_room else self._longest_idle(among, key) is not None

        mine = self._by_ip.get(ip, ())
        if len(mine) + waiting_from_ip >= self.max_per_ip and not room(mine, ip):
            return f"{len(mine) + waiting_from_ip} connections from {ip} are all busy (at most {self.max_per_ip} " \
                   f"from one address{' (an IPv6 /64)' if ip.endswith('/64') else ''})"
        if len(self._ip_of) >= self.max_connections and not room(self._ip_of, None) and not (
                self.user_room and ip in USER_ADDRESSES and room(self._ip_of, _USER)):
            return f"this node's {len(self._ip_of)} connections are all busy (at most {self.max_connections})"
        return None

    def _evict(self, among, key: str | None) -> bool:
        """Close the longest-idle connection among `among`; False when none has been idle long enough."""
        oldest = self._longest_idle(among, key)
        if oldest is None:
            return False
        self.evicted += 1
        self.connection_lost(oldest)  # forget it now: its transport closes on the next loop turn
        oldest.force_close()
        return True

    def _longest_idle(self, among, key: str | None) -> RequestHandler | None:
        """The connection among `among` (one address's, key = the address, or all, key None) idle longest, if
        idle for EVICTABLE_AFTER at least.  A burst of connects at the cap asks this once per connection:
        scanning every connection each time made the burst quadratic (2,000 idle sockets held the loop for
        over a second), so one scan queues every evictable connection, longest-idle last, and later calls
        take from the queue, skipping what was closed or has been used since.  A scan that finds none says
        when the first could be ready; until then none can, and nothing is scanned.  Key _USER: among all, idle
        for any time (a scan that finds none is made again a tenth of EVICTABLE_AFTER later at the soonest)."""
        queue = self._queues.get(key)
        while queue:
            since, handler = queue[-1]
            if handler in among and _idle_since(handler) == since:
                return handler
            queue.pop()
        now = self._loop.time()
        if self._none_until.get(key, 0.0) > now:
            return None
        idle = [(since, h) for h in among if (since := _idle_since(h)) is not None]
        after = 0.0 if key == _USER else EVICTABLE_AFTER
        ready = sorted((pair for pair in idle if pair[0] <= now - after), key=lambda pair: -pair[0])
        if not ready:  # a connection busy now, or opened later, is evictable a second after it goes idle
            self._none_until[key] = now + EVICTABLE_AFTER / 10 if key == _USER else \
                min((since for since, _ in idle), default=now) + EVICTABLE_AFTER
            return None
        self._queues[key] = ready
        return ready[-1][1]

    def _refusal(self, detail: str) -> bytes:
        self.refused += 1
        if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
            log.warning("refused a connection (%d so far): %s", self.refused, detail)
        return _refusal(detail)


class GuardedRunner(ProblemRunner):
    """An AppRunner whose server is a GuardedServer."""

    server_class = GuardedServer
    user_room = False  # (GuardedServer's: the node's own listener's runner says True)

    def __init__(self, app: web.Application, *, max_connections: int, max_per_ip: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.server_options.update(max_connections=max_connections, max_per_ip=max_per_ip, user_room=self.user_room)


class DrainingRunner(Draining, GuardedRunner):
    """A GuardedRunner whose cleanup is the stop (stop.py): a listener that is its process's own."""


class ConnectionLimits(Protocol):
    """What caps a listener's connections (config's NodeSection has them)."""

    max_connections: int
    max_connections_per_ip: int
    idle_timeout: float


def open_runner(app: web.Application, *, max_connections: int, max_per_ip: int, idle_timeout: float,
                beside_node: bool, **kwargs: Any) -> GuardedRunner:
    """The runner of a listener anyone may connect to (web functions, S3): its connections capped in all and per
    address and closed when idle, as the node's own listener's are; else idle sockets, held for aiohttp's hour
    each, would take the descriptors the process needs.  `beside_node`: in the node's process, whose own listener
    keeps its cap of them, this one takes what that leaves, and whose stop drains it; else the listener is its
    process's own (`xsc s3 serve`), its cleanup the stop as a node's is (stop.py)."""
    fd_limit = raise_fd_limit()
    if beside_node:
        fd_limit -= connection_cap(max_connections, fd_limit)
    cap = connection_cap(max_connections, fd_limit)
    runner = GuardedRunner if beside_node else DrainingRunner
    return runner(app, max_connections=cap, max_per_ip=min(cap, max_per_ip), keepalive_timeout=idle_timeout, **kwargs)
