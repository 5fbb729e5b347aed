"""The node's web runners: child processes that run the tries of small web requests on another core
(compute/web_runner.py is the child), while the node keeps everything else about a request: its HTTP, admission,
rate limits, concurrency, spend cap, record and bill have one owner, the node's event loop.

A `RunnerLink` is one runner, seen from the loop: the tries sent to it and not yet answered, by request id; what
it has been sent of each module (its compiled artifact, once); its socket read whenever it is readable, every
answer waiting there taken at once, and written once a loop turn (the tries of the requests that came in one
turn go in one write, and the runner reads them in one).  A runner that ends, sends a frame longer than a runner
may (MAX_ANSWER_FRAME, checked before anything is allocated for it) or one that is not what its kind says, or
answers nothing for PATIENCE seconds while tries wait, is killed: each of its tries is answered None (its request
then runs on a worker: none is lost), and `Runners` starts another (at once if it had served a while; after a
pause that doubles while new ones keep ending early).  Runners are started with the first request that may use
one (a node that serves no function starts none), and at the node's close their sockets are closed and they are
killed; a kill -9 of the node takes them with it (see web_runner.py).  What a runner writes to its stdout or stderr
goes to the node's log, attributed to it (child_output.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from typing import Callable

from .. import codec
from . import child_output
from . import runner_wire as wire
from . import sandbox
from .wasi_io import OUTPUT_CAP
from .web_trial import ON_LOOP_ANSWER

log = logging.getLogger(__name__)

RECEIVE = 256 * 1024
MOST_IN_FLIGHT = 64  # tries waiting on one runner; past this a try runs on the loop
PATIENCE = 5.0  # seconds a runner with tries waiting may go without answering any (a try takes two ticks at most)
FIRST_PAUSE, LONGEST_PAUSE = 0.1, 30.0  # before a runner that ended early is replaced
SERVED_A_WHILE = 10.0  # seconds after which a runner that ends is replaced at once
# Modules whose frame's length is known, that a runner was sent (it keeps fewer: one it dropped is sent again), and
# whose calls were judged for a try (web_on_loop.py): the modules served are whoever places a function here.
MOST_MODULES = 1024

Answer = tuple[int, object] | None  # (KEPT, KeptFrame) / (TOSSED, (trap kind, cpu ns)) / (UNKNOWN, None); None: lost


class RunnerLink:
    def __init__(self, sock: socket.socket, process: subprocess.Popen | None, fingerprint: bytes,
                 on_ready: Callable[[RunnerLink], None], on_end: Callable[[RunnerLink], None],
                 patience: float = PATIENCE) -> None:
        self.sock = sock
        self.patience = patience
        self.process = process
        self.fingerprint = fingerprint
        self.loop = asyncio.get_running_loop()
        self.started = time.monotonic()
        self.ready = False
        self.ended: str | None = None  # why it ended
        self.runs = 0  # tries it answered
        self._on_ready, self._on_end = on_ready, on_end
        self._waiting: dict[int, tuple[asyncio.Future, bytes]] = {}  # request id -> its answer, its module
        self._next = 0
        self._sent: OrderedDict[bytes, None] = OrderedDict()  # modules it has been sent, the least recently run first
        self._in = bytearray()
        self._out = bytearray()
        self._flush_soon = False
        self._writing = False
        self._heard = time.monotonic()  # its last answer
        self._watch: asyncio.TimerHandle | None = None
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._readable)

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def run(self, module_hash: bytes, module: Callable[[], bytes], run: bytes) -> asyncio.Future:
        """The future answer of a try (`run`: its RUN frame's body), `module()` (its MODULE frame's body) sent
        first if this runner has not had it."""
        if module_hash not in self._sent:
            self._sent[module_hash] = None
            if len(self._sent) > MOST_MODULES:  # long dropped by the runner, or sent again if not
                self._sent.popitem(last=False)
            self._send(wire.frame(wire.MODULE, 0, module()))
        else:
            self._sent.move_to_end(module_hash)
        self._next = self._next % 0xFFFFFFFF + 1
        future = self.loop.create_future()
        self._waiting[self._next] = (future, module_hash)
        self._send(wire.frame(wire.RUN, self._next, run))
        if self._watch is None:
            self._heard = time.monotonic()
            self._watch = self.loop.call_later(self.patience, self._check)
        return future

    def _send(self, data: bytes) -> None:
        self._out += data
        if not self._flush_soon and not self._writing:
            self._flush_soon = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self.ended is not None or not self._out:
            return
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except (BrokenPipeError, ConnectionResetError):  # it ended with tries unsent
            self.end("it ended")
            return
        except OSError as exc:
            self.end(f"its socket failed ({exc.strerror or exc})")
            return
        del self._out[:sent]
        if self._out and not self._writing:
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        self._writing = False
        self.loop.remove_writer(self.sock.fileno())
        self._flush()

    def _readable(self) -> None:
        try:
            chunk = self.sock.recv(RECEIVE)
        except BlockingIOError:
            return
        except ConnectionResetError:  # it ended with tries unread
            chunk = b""
        except OSError as exc:
            self.end(f"its socket failed ({exc.strerror or exc})")
            return
        if not chunk:
            self.end("it ended")
            return
        self._in += chunk
        at = 0
        try:
            while (found := wire.head(memoryview(self._in)[at:], wire.MAX_ANSWER_FRAME)) is not None:
                length, kind, request = found
                if len(self._in) - at < length:
                    break
                self._take(kind, request, bytes(self._in[at + wire.HEAD.size:at + length]))
                at += length
        except wire.WireError as exc:
            self.end(f"it sent what a runner may not ({exc})")
            return
        del self._in[:at]

    def _take(self, kind: int, request: int, body: bytes) -> None:
        if kind == wire.READY:
            if body != self.fingerprint:
                raise wire.WireError("its engine's settings are not the node's")
            self.ready = True
            self._on_ready(self)
            return
        waiting = self._waiting.pop(request, None)
        if waiting is None:
            raise wire.WireError(f"an answer to request {request}, which is not waiting")
        future, module_hash = waiting
        self._heard = time.monotonic()
        answer: Answer
        if kind == wire.KEPT:
            kept = wire.read_kept(body)
            if len(kept.stdout) > ON_LOOP_ANSWER or len(kept.stderr) > OUTPUT_CAP + 1:
                raise wire.WireError("an answer longer than a try keeps")
            answer = (kind, kept)
        elif kind == wire.TOSSED:
            answer = (kind, wire.read_tossed(body))
        elif kind == wire.UNKNOWN:  # it dropped the module: sent again with its next try
            self._sent.pop(module_hash, None)
            answer = (kind, None)
        else:
            raise wire.WireError(f"a frame of kind {kind}, which a runner does not send")
        self.runs += 1
        if not future.done():
            future.set_result(answer)

    def _check(self) -> None:
        self._watch = None
        if self.ended is not None or not self._waiting:
            return
        quiet = time.monotonic() - self._heard
        if quiet >= self.patience:
            self.end(f"it answered nothing for {quiet:.1f} s")
        else:
            self._watch = self.loop.call_later(self.patience - quiet, self._check)

    def end(self, why: str) -> None:
        """The runner killed and its socket closed; each try waiting on it answered None."""
        if self.ended is not None:
            return
        self.ended = why
        self.loop.remove_reader(self.sock.fileno())
        if self._writing:
            self.loop.remove_writer(self.sock.fileno())
        if self._watch is not None:
            self._watch.cancel()
        self.sock.close()
        if self.process is not None:
            self.process.kill()
            self._reap()
        waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            if not future.done():
                future.set_result(None)
        self._on_end(self)

    def _reap(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:  # killed: gone within a moment
            self.loop.call_later(0.01, self._reap)


class Runners:
    """`count` runners, each replaced when it ends, until `close`."""

    def __init__(self, count: int, fingerprint: bytes) -> None:
        self.count = count
        self.fingerprint = fingerprint
        self.links: list[RunnerLink] = []
        self.started = 0  # runners started in all (status, tests)
        self.ended: list[str] = []  # why each runner that ended did (the last few)
        self._on = False
        self._closed = False
        self._pause = FIRST_PAUSE
        self._ready: list[asyncio.Future] = []
        self._fits: dict[bytes, bool] = {}  # module hash -> whether its MODULE frame is not too long to send

    def start(self) -> None:
        """The runners started, if they are not (on the loop)."""
        if self._on or self._closed:
            return
        self._on = True
        for _ in range(self.count):
            self._spawn()

    def pick(self) -> RunnerLink | None:
        """The ready runner with the fewest tries waiting, if one has room."""
        if not self._on:
            self.start()
        best = None
        for link in self.links:
            if link.ready and link.in_flight < MOST_IN_FLIGHT and (best is None or link.in_flight < best.in_flight):
                best = link
        return best

    def sendable(self, prepared: sandbox.Prepared) -> bool:
        """Whether a module's artifact fits in a MODULE frame (serialized once to see; not kept: a runner is sent
        it once, so a module's artifact is made again only for a runner started since)."""
        fits = self._fits.get(prepared.module_hash)
        if fits is None:
            if len(self._fits) >= MOST_MODULES:
                self._fits.pop(next(iter(self._fits)))
            fits = self._fits[prepared.module_hash] = len(self.module(prepared)) + 8 <= wire.MAX_MODULE_FRAME
        return fits

    def module(self, prepared: sandbox.Prepared) -> bytes:
        """The MODULE frame body of a module."""
        return wire.module_body(prepared.module_hash, prepared.hidden_memory, codec.dumps(prepared.info.to_json()),
                                bytes(prepared.module.serialize()))

    async def ready(self) -> RunnerLink:
        """A ready runner, once there is one (they are started if they are not)."""
        self.start()
        while True:
            link = next((link for link in self.links if link.ready), None)
            if link is not None:
                return link
            waiter = asyncio.get_running_loop().create_future()
            self._ready.append(waiter)
            await waiter

    def _spawn(self) -> None:
        if self._closed:
            return
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen([sys.executable, "-m", "xsc.compute.web_runner", str(theirs.fileno()),
                                        str(os.getpid())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            mine.close()
            log.warning("a web runner could not be started (%s); small requests run on the loop meanwhile", exc)
            self._after(FIRST_PAUSE)
            return
        finally:
            theirs.close()
        child_output.follow(process, "web runner", log)
        self.started += 1
        self.links.append(RunnerLink(mine, process, self.fingerprint, self._became_ready, self._gone))

    def _became_ready(self, link: RunnerLink) -> None:
        waiters, self._ready = self._ready, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _gone(self, link: RunnerLink) -> None:
        if link in self.links:
            self.links.remove(link)
        self.ended = [*self.ended[-7:], link.ended or ""]
        if self._closed:
            return
        log.warning("web runner %s ended: %s; another is started", link.pid, link.ended)
        if link.ready and time.monotonic() - link.started >= SERVED_A_WHILE:
            self._pause = FIRST_PAUSE
            self._spawn()
        else:
            self._after(self._pause)
            self._pause = min(LONGEST_PAUSE, self._pause * 2)

    def _after(self, pause: float) -> None:
        asyncio.get_running_loop().call_later(pause, self._spawn)

    def close(self) -> None:
        self._closed = True
        for link in list(self.links):
            link.end("the node closed")
            if link.process is not None:
                link.process.wait()

    def status(self) -> dict:
        return {"runners": self.count, "started": self.started,
                "live": [{"pid": link.pid, "ready": link.ready, "in_flight": link.in_flight, "runs": link.runs}
                         for link in self.links], "ended": list(self.ended)}


__all__ = ["RunnerLink", "Runners"]
