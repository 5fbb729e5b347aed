"""Files handed to the node by a program beside it: an open descriptor passed over a Unix socket in the data dir.

A CLI on the node's machine puts a file without sending its bytes: it connects to `<data dir>/node.sock`, passes
its open file (SCM_RIGHTS) and gets a token back, then asks for the put with `POST /v1/store/files?local=TOKEN`
(node/http/storage.py), an empty body.  The node reads the file itself, a chunk ahead on a thread of its own, with
plain sequential reads of the shared open file, so the caller sees the put's progress in its own descriptor's
offset.  Over HTTP, the node's event loop spends a second of CPU per GiB receiving the body (docs/storage.md).

Only a caller of the node's own user (or root) is heard: the socket is the owner's alone (mode 0600, in a data dir
of mode 0700), and each caller's uid is checked (SO_PEERCRED).  A descriptor is kept only if it is a regular file
open for reading; at most HELD_MAX at once, each for HOLD_SECONDS at most, closed once taken, expired or at stop.
Each hand-off is answered with one JSON line: {"token", "size"}, or a problem ({"code", "detail", "hint"}).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import socket
import stat
import struct
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .. import codec
from ..errors import BadRequest, Forbidden, NotFound, QuotaExceeded, XscError
from ..tasks import Workers

log = logging.getLogger(__name__)

HELD_MAX = 16  # descriptors kept at once, waiting for their put
HOLD_SECONDS = 60.0  # a descriptor not taken by a put within this is closed
HELLO_SECONDS = 5.0  # a caller sends its descriptor at once: one that does not within this is cut off
MAX_HELLO = 64  # bytes of the message that carries the descriptor (its text is not read)
MAX_SUN_PATH = 107  # bytes of a Unix socket's path, its terminating NUL aside (Linux's sun_path is 108)
READ_AHEAD = 1024 * 1024  # bytes a held file is read ahead of the put, on the reading thread
READ_PIECE = 256 * 1024  # the most a put asks for at once (storage/gateway_put.py: PIECE): each read's size
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def caller_allowed(uid: int, own: int) -> bool:
    """Whether a caller of uid `uid` may hand files to a node run by `own`: the same user, or root."""
    return uid in (own, 0)


def readable_file(fd: int) -> int:
    """The size of the regular file open for reading behind `fd`; BadRequest for anything else."""
    mode, size = (info := os.fstat(fd)).st_mode, info.st_size
    if not stat.S_ISREG(mode):
        raise BadRequest("the descriptor handed over is not a regular file",
                         hint="hand the node a regular file, or put the stream over HTTP")
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & getattr(os, "O_PATH", 0) or flags & os.O_ACCMODE not in (os.O_RDONLY, os.O_RDWR):
        raise BadRequest("the file handed over is not open for reading", hint="open it for reading (mode 'rb')")
    return size


class HeldFile:
    """A handed-over file taken for a put: `read(n)` (a put's ReadFn) gives its bytes up to the `size` it had when
    handed over (a file that grows is read no further; one that shrinks ends early, and the put says so), each chunk
    read on the reading thread while the put takes the one before, and told to `on_read`.  Once `wanted()` says the
    put's caller went away, the next chunk is not read and the put fails, as a body cut off fails one over HTTP.
    `close()` once the put is done."""

    def __init__(self, fd: int, size: int, reader: Workers, on_read: Callable[[int], None] | None = None,
                 wanted: Callable[[], bool] | None = None) -> None:
        self.fd, self.size, self._reader, self._on_read, self._wanted = fd, size, reader, on_read, wanted
        self._left = size  # bytes not yet asked of the reading thread
        self._pieces: deque[bytes] = deque()
        self._ahead: asyncio.Future | None = None  # the chunk on its way, whoever waits for it
        self._asked = 0  # its length
        self._ended = False

    def _read_chunk(self, n: int) -> list[bytes]:
        """On the reading thread: up to `n` bytes, in pieces of at most READ_PIECE (fewer at the file's end)."""
        pieces = []
        while n > 0:
            piece = os.read(self.fd, min(n, READ_PIECE))
            if not piece:
                break
            pieces.append(piece)
            n -= len(piece)
        return pieces

    def _read_on(self) -> None:
        self._asked = min(READ_AHEAD, self._left)
        self._left -= self._asked
        if self._asked:
            self._ahead = self._reader.run(self._read_chunk, self._asked)
        else:
            self._ended = True

    async def read(self, n: int) -> bytes:
        if not self._pieces and not self._ended:
            if self._wanted is not None and not self._wanted():
                raise BadRequest("the put's caller went away: the file handed over is read no further",
                                 hint="put the file again")
            if self._ahead is None:
                self._read_on()
            if self._ahead is not None:
                # Shielded: a put that stops waiting leaves the read to end before `close` closes the descriptor.
                pieces = await asyncio.shield(self._ahead)
                self._ahead = None
                self._pieces.extend(pieces)
                got = sum(map(len, pieces))
                if self._on_read is not None:
                    self._on_read(got)
                if got < self._asked:
                    self._ended = True  # the file shrank: the put says it ended early
                else:
                    self._read_on()
        if not self._pieces:
            return b""
        piece = self._pieces.popleft()
        if len(piece) > n:
            self._pieces.appendleft(piece[n:])
            piece = piece[:n]
        return piece

    async def close(self) -> None:
        """Close the descriptor, once the read on its way (if any) is done with it."""
        if self._ahead is not None:
            await asyncio.gather(self._ahead, return_exceptions=True)
        os.close(self.fd)


class HandOff:
    """The node's Unix socket and the descriptors handed over on it, each kept under a token until a put takes it
    (`take`).  A service of the node's supervisor: `start` binds the socket, the loop `accept` hears callers one at a
    time, `close` closes every descriptor held and removes the socket."""

    def __init__(self, path: Path, *, held_max: int = HELD_MAX, hold_seconds: float = HOLD_SECONDS) -> None:
        self.path = path
        self._held: dict[str, tuple[int, int, asyncio.TimerHandle]] = {}  # token -> descriptor, size, expiry
        self._held_max, self._hold_seconds = held_max, hold_seconds
        self._listener: socket.socket | None = None
        self._reader: Workers | None = None
        self.taken = 0  # files taken by puts since the node started

    def start(self) -> None:
        if len(os.fsencode(self.path)) > MAX_SUN_PATH:
            log.warning("no Unix socket for local puts: its path %s is longer than %d bytes (the CLI sends files "
                        "over HTTP)", self.path, MAX_SUN_PATH)
            return
        self.path.unlink(missing_ok=True)  # left by a node that was killed: this data dir's lock is ours
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, 0o600)  # before listen(): until then nobody can connect
            listener.listen(HELD_MAX)
        except OSError as exc:
            listener.close()
            log.warning("no Unix socket for local puts at %s: %s", self.path, exc.strerror or exc)
            return
        listener.setblocking(False)
        self._listener = listener
        self._reader = Workers(1, "xsc-handoff")

    def loops(self) -> dict:
        return {"handoff": self.accept} if self._listener is not None else {}

    async def accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            conn.setblocking(False)
            with conn:
                await self._hear(conn)

    async def _hear(self, conn: socket.socket) -> None:
        """One caller: its uid checked, its descriptor received and kept, answered its token or a problem."""
        try:
            _, uid, _ = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
            if not caller_allowed(uid, os.getuid()):
                raise Forbidden(f"this node's files are handed over by its own user (uid {os.getuid()}), not uid "
                                f"{uid}", hint="put the file over HTTP")
            token, size = self.hold(await self._receive(conn))
            answer = {"token": token, "size": size}
        except XscError as err:
            answer = {"code": err.code, "detail": err.message, "hint": err.hint}
        except (OSError, TimeoutError) as exc:  # the caller went away, or sent nothing
            log.info("a local put's hand-off failed: %s", exc)
            return
        try:  # a line of ~100 bytes into an empty socket buffer: sent whole without waiting
            conn.send(codec.dumps(answer) + b"\n")
        except OSError:
            pass  # the caller went away: a token it did not get expires unused

    async def _receive(self, conn: socket.socket) -> int:
        """The one descriptor the caller sends, within HELLO_SECONDS; BadRequest if it sends none, or more."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(HELLO_SECONDS):
            while True:
                try:
                    _, fds, flags, _ = socket.recv_fds(conn, MAX_HELLO, 1)
                    break
                except BlockingIOError:
                    ready = loop.create_future()
                    loop.add_reader(conn.fileno(), ready.set_result, None)
                    try:
                        await ready
                    finally:
                        loop.remove_reader(conn.fileno())
        if flags & socket.MSG_CTRUNC or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise BadRequest("hand the node one open file at a time")
        return fds[0]

    def hold(self, fd: int) -> tuple[str, int]:
        """Keep `fd` (closed here if refused) under a fresh token, for HOLD_SECONDS at most: the token, and the
        file's size now."""
        try:
            size = readable_file(fd)
            if len(self._held) >= self._held_max:
                raise QuotaExceeded(f"the node holds {self._held_max} handed-over files waiting for their puts "
                                    "already", hint="retry in a minute, or put the file over HTTP")
        except BaseException:
            os.close(fd)
            raise
        token = secrets.token_urlsafe(24)
        expiry = asyncio.get_running_loop().call_later(self._hold_seconds, self._expire, token)
        self._held[token] = (fd, size, expiry)
        return token, size

    def _expire(self, token: str) -> None:
        fd, _, _ = self._held.pop(token)
        os.close(fd)

    def take(self, token: str, on_read: Callable[[int], None] | None = None,
             wanted: Callable[[], bool] | None = None) -> HeldFile:
        """The file held under `token`, for a put of the size it had when handed over, the caller's answer (NotFound:
        unknown, taken already or expired); `on_read(n)`: n more bytes of it were read; `wanted()`: whether the put's
        caller still waits for it."""
        held = self._held.pop(token, None)
        if held is None:
            raise NotFound("no file is held under that token: it was not handed over, or a put took it already, "
                           f"or it expired ({self._hold_seconds:g} s after it was handed over)",
                           hint="hand the file over again (xsc store put does)")
        fd, size, expiry = held
        expiry.cancel()
        self.taken += 1
        assert self._reader is not None  # files are held only while the socket is open
        return HeldFile(fd, size, self._reader, on_read, wanted)

    def status(self) -> dict:
        return {"socket": str(self.path) if self._listener is not None else None, "held": len(self._held),
                "taken": self.taken}

    def close(self) -> None:
        for fd, _, expiry in self._held.values():
            expiry.cancel()
            os.close(fd)
        self._held.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self.path.unlink(missing_ok=True)
        if self._reader is not None:
            self._reader.shutdown()
            self._reader = None
