"""A web function's run's output as the run writes it: its stdout and stderr through pipes (`Pipes`), each kept in
memory up to SPILL bytes and past that in a file (`Spill`), on a disk written only while it has room (`DiskRoom`).

A quick run's pipes are read by the worker once it has ended (its writes never wake the loop); a run that goes on
FOLLOW_AFTER seconds has them read by the loop as they are written, so that its answer can stream.  A worker keeps
the pipes its runs left empty for its next runs (`idle_pipes`).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from ..errors import ComputeBusy, StorageFull
from .fastcall import close_held, fcntl_held, pipe_held, read_held
from .wasi_io import Streams

CHUNK = 1 << 20  # bytes a body or an answer moves in at once; an answer's file grows this much between disk checks
FOLLOW_AFTER = 0.01  # seconds a run goes on before the loop reads its pipes as they are written
SPILL = 1 << 20  # bytes of an answer kept in memory; past this it is written to a file
PIPE_BYTES = 1 << 20  # a pipe's buffer: an answer up to this long is read once its run has ended
PIPE_READ = 64 * 1024  # bytes read from it at once (a MiB buffer would be mapped and unmapped for each read)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class DiskRoom:
    """The free disk a function's files, request bodies and answers are written to only while it keeps `margin`
    bytes free beside them and the bytes other such writes are about to make (`writing`): no function, the node's
    own or a stranger's placed here, at any max_body and concurrency, fills the disk under the node's own
    database."""

    def __init__(self, directory: Path, margin: int) -> None:
        self.directory, self.margin = directory, margin
        self.writing = 0

    def check(self, size: int, what: str, hint: str = "retry later, or with a smaller body") -> None:
        """Raise StorageFull (507) unless `size` more bytes of `what` fit now."""
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            free = 0
        if free < size + self.margin + self.writing:
            raise StorageFull(f"this node has no room on disk for {what} now ({size:,} bytes)", hint=hint)


class Spill:
    """A run's stdout: a pipe its program writes (wasmtime's own writes, on the thread running it), kept in memory
    up to SPILL bytes, then in a file in `directory` (so an answer of up to its cap, however large, is never held
    whole).  Who opens and reads the pipe is the run's `Pipes`.  Past `cap` bytes it is no longer read: read by
    the loop, the pipe is closed and the program's next write fails (EPIPE); either way the run is refused for
    its cap."""

    def __init__(self, directory: Path, loop: asyncio.AbstractEventLoop, cap: int, room: DiskRoom | None = None
                 ) -> None:
        self.directory = directory
        self.loop = loop
        self.cap = cap
        self.room = room  # an answer's: its file grows only while the disk has room, checked each CHUNK
        self.full: StorageFull | None = None  # it had no room: nothing more read
        self._roomy = SPILL  # bytes it may reach before the disk is checked again
        self.memory = bytearray()
        self.path: Path | None = None
        self._file: BinaryIO | None = None
        self.size = 0
        self.over = False  # it went past its cap
        self._pipe: int | None = None  # the reading end
        self._writing: int | None = None  # our writing end (wasmtime writes through one it opens itself)
        self._followed = False  # the loop reads it as it is written
        self.pipes: Pipes | None = None  # who reads it (set by Pipes)
        self.drained: asyncio.Future = loop.create_future()  # done once every byte written is read, or cut off
        self._waiter: asyncio.Future | None = None  # the loop waits for ...
        self._wanted = 0  # ... this many bytes in all

    def open(self) -> int:
        """On the worker about to run the program: the pipe's writing end, for the run's WASI config
        (wasi_io.Streams.stdout_pipe; kept: see `done`).  A pipe a run on this worker left empty is used again."""
        idle = idle_pipes()
        if idle:
            self._pipe, self._writing = idle.pop()
            return self._writing
        try:
            # Both ends non-blocking: the writing end is never written through this descriptor (wasmtime opens
            # the pipe again, blocking, by its /proc/self/fd path).
            reading, writing = pipe_held(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # out of file descriptors: refused like a run past the node's queue
            raise ComputeBusy(f"the node has no file descriptor to spare for another run ({exc.strerror})",
                              hint="retry in a moment") from None
        try:
            fcntl_held(reading, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # over the user's pipe allowance: the default size, read by the loop sooner
        self._pipe, self._writing = reading, writing
        return writing

    def follow(self) -> None:
        """On the loop: read the pipe as it is written, from now on."""
        if self._pipe is not None and not self._followed:
            self._followed = True
            self.loop.add_reader(self._pipe, self._readable)

    def collect(self) -> list[bytes]:
        """On the worker that ran the program, once it has ended (its Store, and wasmtime's writing end with it,
        freed): what is in the pipe, all of it (a write returns once its bytes are in the pipe), or up to one read
        past its cap.  A pipe read empty is kept for the worker's next run; one past its cap is closed."""
        chunks, size, empty = [], 0, False
        while size <= self.cap:
            try:
                chunk = read_held(self._pipe, PIPE_READ)
            except BlockingIOError:
                empty = True
                break
            if not chunk:  # no writing end left (none of ours): not one to use again
                break
            chunks.append(chunk)
            size += len(chunk)
        if empty:
            idle_pipes().append((self._pipe, self._writing))
        else:
            close_held(self._pipe)
            if self._writing is not None:
                close_held(self._writing)
        self._pipe = self._writing = None
        return chunks

    def done(self) -> None:
        """On the worker, once the run has ended, when the loop reads the pipe: its writing end closed, so that
        the loop's reads come to its end."""
        if self._writing is not None:
            close_held(self._writing)
            self._writing = None

    def take(self, chunks: list[bytes]) -> None:
        """On the loop: what the worker collected, all the run wrote."""
        for chunk in chunks:
            if not self._kept(chunk):
                return
        self.close()

    def _readable(self) -> None:
        assert self._pipe is not None
        try:
            chunk = os.read(self._pipe, PIPE_READ)
        except BlockingIOError:
            return
        if not chunk:  # every writing end is closed: the run has ended
            self.close()
        else:
            self._kept(chunk)

    def _kept(self, chunk: bytes) -> bool:
        """`chunk` kept, or (past the cap, or the disk's room) nothing more read; whether it was kept."""
        if self.size + len(chunk) > self.cap:
            self.over = True
            self.close()
            return False
        if self.room is not None and self.size + len(chunk) > self._roomy:
            try:
                self.room.check(CHUNK, "the function's answer")
            except StorageFull as err:
                self.full = err
                self.close()
                return False
            self._roomy = self.size + CHUNK
        self._keep(chunk)
        return True

    def _keep(self, chunk: bytes) -> None:
        if self._file is None and len(self.memory) + len(chunk) > SPILL:
            handle, name = tempfile.mkstemp(prefix="stdout-", dir=self.directory)
            # unbuffered: what is written is readable at once by the reads that stream it (on a worker)
            self.path, self._file = Path(name), os.fdopen(handle, "wb", buffering=0)
            self._file.write(self.memory)
            self.memory = bytearray()
        if self._file is None:
            self.memory += chunk
        else:
            self._file.write(chunk)
        self.size += len(chunk)
        if self._waiter is not None and self.size >= self._wanted:
            wake(self._waiter)
            self._waiter = None

    def close(self) -> None:
        """Nothing more is read: the pipe and the file closed, the waiters woken."""
        if self.pipes is not None:
            self.pipes.close()  # a worker collecting the pipe is done with it first, and none opens it after
        if self._pipe is not None:
            if self._followed:
                self.loop.remove_reader(self._pipe)
            os.close(self._pipe)
            self._pipe = None
        if self._file is not None:
            self._file.close()
            self._file = None
        for waiter in (self._waiter, self.drained):
            if waiter is not None:
                wake(waiter)
        self._waiter = None

    def more(self, wanted: int) -> asyncio.Future:
        """A future done once `wanted` bytes in all are read, or nothing more will be."""
        future = self.loop.create_future()
        if self.size >= wanted or self.drained.done():
            future.set_result(None)
        else:
            self._waiter, self._wanted = future, wanted
        return future

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (on a worker if it spilled: see `on_disk`)."""
        if self.path is None:
            return bytes(self.memory[offset:offset + length])
        with open(self.path, "rb") as f:  # written unbuffered, never moved back to memory: read beside the writer
            f.seek(offset)
            return f.read(length)

    @classmethod
    def empty(cls, loop: asyncio.AbstractEventLoop) -> Spill:
        """An answer with no body, whole (a redirect's): no run writes it."""
        spill = cls(Path(), loop, 0)
        spill.close()
        return spill

    @property
    def on_disk(self) -> bool:
        return self.path is not None


class Pipes:
    """A run's stdout and stderr pipes, opened by the worker that runs it (`open`): a request's run makes no
    system call on the loop.  The worker reads them once the run has ended (`collect`, handed to the loop with
    its outcome): a quick answer's writes never wake the loop.  A run that goes on FOLLOW_AFTER seconds has them
    read by the loop as they are written (`follow`): a long answer is streamed while it runs, and a program that
    fills its pipe waits that long at most."""

    def __init__(self, stdout: Spill, stderr: Spill) -> None:
        self.spills = (stdout, stderr)
        self._lock = threading.Lock()
        self._state = "new"  # "open" (by the worker), then "worker" or "loop" (who reads them), or "closed"
        self._collected: list[list[bytes]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        stdout.pipes = stderr.pipes = self

    def started(self, ran: asyncio.Future) -> None:
        """On the loop, as the run is handed to a worker."""
        self._timer = self.spills[0].loop.call_later(FOLLOW_AFTER, self.follow)
        ran.add_done_callback(self._ended)

    def open(self, streams: Streams) -> None:
        """On the worker, before the run: the pipes its stdout and stderr go to."""
        with self._lock:
            if self._state != "new":  # given up (the node stops)
                raise ComputeBusy("the request was given up before it ran")
            streams.stdout_pipe = self.spills[0].open()
            try:
                streams.stderr_pipe = self.spills[1].open()
            except BaseException:
                self.spills[0].collect()  # empty: kept for the next run
                raise
            streams.pipes_kept = True
            self._state = "open"

    def collect(self) -> None:
        """On the worker, once the run has ended: its pipes read (unless the loop reads them already)."""
        with self._lock:
            if self._state == "open":
                self._state = "worker"
                self._collected = [spill.collect() for spill in self.spills]
            else:  # the loop reads them (or gave up on them)
                for spill in self.spills:
                    spill.done()

    def follow(self) -> None:
        """On the loop, once the run has gone on FOLLOW_AFTER (or has ended without a worker reading its pipes)."""
        with self._lock:
            if self._state == "new":  # still waiting for a worker
                self._timer = self.spills[0].loop.call_later(FOLLOW_AFTER, self.follow)
                return
            if self._state == "open":
                self._state = "loop"
            following = self._state == "loop"
        if following:
            for spill in self.spills:
                spill.follow()

    def close(self) -> None:
        """On the loop: a pipe is closed; no worker opens or reads them after this."""
        with self._lock:
            if self._state in ("new", "open"):
                self._state = "closed"

    def _ended(self, _: asyncio.Future) -> None:
        if self._timer is not None:
            self._timer.cancel()
        collected, self._collected = self._collected, None
        if collected is None:  # the loop reads them (or the run failed before they were opened)
            if self._state != "new":
                self.follow()
            return
        for spill, chunks in zip(self.spills, collected):
            spill.take(chunks)


class _IdlePipes(list):
    """A worker's pipes its runs left empty, for its next runs (a pipe made and closed for each run cost the worker
    a few system calls with the GIL held); closed when the worker's thread ends."""

    def __del__(self) -> None:
        for pipe in self:
            for end in pipe:
                os.close(end)


_IDLE = threading.local()


def idle_pipes() -> _IdlePipes:
    idle = getattr(_IDLE, "pipes", None)
    if idle is None:
        idle = _IDLE.pipes = _IdlePipes()
    return idle


def wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


__all__ = ["CHUNK", "DiskRoom", "FOLLOW_AFTER", "PIPE_BYTES", "Pipes", "SPILL", "Spill", "idle_pipes", "wake"]
