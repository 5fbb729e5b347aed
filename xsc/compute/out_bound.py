"""A job's /out (and its stored stdout) held to its bytes_out while the program runs, not only once it has ended.

A job writes to /out through wasmtime's own WASI, with no hook per write and almost no fuel per byte, so a bound
checked only after the run lets one job fill the node's disk (or its inodes) for as long as its timeout lasts.
Instead, wasmtime calls `OutBound.check` on the thread running the program at every epoch tick (engine.TICK; the
Store's epoch deadline callback, fastcall.Store.on_epoch): the program is paused meanwhile, so what is measured
cannot change under the measuring, and the check's error stops it (as its deadline does, which the check then
enforces too: a Store has one epoch deadline).  Nothing is done per write.

Each check counts the entries under /out (readdir only, a few microseconds for a job's few files; at most
MAX_ENTRIES of them are looked at).  The bytes are measured only when the process has written (`/proc/self/io`
wchar: every thread's write calls, wasmtime's blocking file writes among them) more than the room the last
measure left: a job cannot take disk without writing, so a job far below its bytes_out is not measured again,
and one near it is measured at every tick.  A measure adds the sizes of the regular files under /out, the stored
stdout, and files the job still holds open after unlinking them (found through /proc/self/fd: gone from /out,
still on the disk).

What remains past the bound: what the job writes in one tick (about 10 ms, longer on a machine too loaded to
tick on time) before the check that stops it, plus one write call (wasmtime's fd_write writes one buffer, so at
most the job's memory); and as many entries as it makes in that tick.  A write blocked in the host (a slow disk)
is not interrupted before it returns: epoch checks are in the program's code.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass

MAX_ENTRIES = 1024  # files, directories and links a job may have in /out at once (it may leave MAX_OUTPUTS)
MAX_DEPTH = 64  # directories within directories in /out: removing and listing a tree recurses as deep
OUTPUT_LIMIT = "output-limit"  # the trap kind of a job stopped for its outputs' bytes or files
OUTPUT_UNREADABLE = "output-unreadable"  # ... for what it made in /out that the node cannot read (or name)
OUTPUT_NAME = "output-name"  # ... for a file it left in /out whose name is not printable (job_sandbox.py)
REFUSED_OUTPUTS = (OUTPUT_LIMIT, OUTPUT_UNREADABLE)  # the kinds of a stop for what is in /out
# What the node cannot read in /out is, for a program that sees nothing of the host, a path too long to name whole
UNREADABLE = "it made in /out what the node cannot read"  # a refusal, with the system's word for why
UNREADABLE_HINT = "leave shorter paths in /out: the node names each whole, within 4,096 bytes"
DEADLINE = "deadline"
NODE_STOPPING = "node-stopping"  # the trap kind of a job stopped because its node stops
CANCELLED = "cancelled"  # ... because its user cancelled it (`xsc compute cancel`): a state of its own, not a failure
BEFORE_IT_RAN = "before it ran"  # when a job cancelled before it ran was: its module's compile alone is paid
_DELETED = " (deleted)"


class Stop(threading.Event):
    """A job's `stop`: set as its node stops, or by `cancel` as its user cancels it (the run then ends CANCELLED)."""

    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.set()


@dataclass(frozen=True)
class Stopped:
    kind: str  # DEADLINE, NODE_STOPPING, CANCELLED, or one of REFUSED_OUTPUTS
    why: str  # for REFUSED_OUTPUTS: why its outputs cannot be stored, a clause ("its outputs were ...")


class OutBound:
    """The check wasmtime calls at each tick of a job's run: None to go on, or why it stops (also `stopped`).
    `cap` None: a job with no outputs to hold, checked for its deadline and its `stop` (set: its node stops)."""

    def __init__(self, out_dir: str | None, cap: int | None, stdout=None,
                 stop: threading.Event | None = None) -> None:
        self.out_dir = out_dir
        self.cap = cap
        self.stop = stop
        self.stdout = stdout  # the Capture of a stdout that is stored (its `kept` bytes count), or None
        self.deadline = float("inf")
        self.stopped: Stopped | None = None
        self._room = cap or 0  # bytes the job may still write before it must be measured again
        self._measured_at = _written()

    def start(self, seconds: float) -> None:
        """The program starts now, with `seconds` to run."""
        self.deadline = time.monotonic() + seconds

    def check(self) -> Stopped | None:
        if time.monotonic() >= self.deadline:
            self.stopped = Stopped(DEADLINE, "")
            return self.stopped
        if self.stop is not None and self.stop.is_set():
            self.stopped = Stopped(CANCELLED, "its user cancelled it") if getattr(self.stop, "cancelled", False) \
                else Stopped(NODE_STOPPING, "its node stops")
            return self.stopped
        if self.cap is None:
            return None
        written = _written()
        measure = written is None or self._measured_at is None or written - self._measured_at > self._room
        self.stopped = self._over(measure)
        if measure:
            self._measured_at = written
        return self.stopped

    def ended(self) -> Stopped | None:
        """Once the program has ended, by itself or not: why what it left cannot even be listed (it may have made,
        since the last check, more entries or a deeper tree than listing it may meet, or what the node cannot
        read), or None.  Its bytes are held to its bytes_out by the listing (job_sandbox._outputs), as they always
        were."""
        if self.stopped is not None and self.stopped.kind in REFUSED_OUTPUTS:
            return self.stopped
        tree = _Tree(self.out_dir, False)
        return None if tree.why is None else Stopped(tree.kind, tree.why)

    def _over(self, measure: bool) -> Stopped | None:
        tree = _Tree(self.out_dir, measure) if self.out_dir is not None else _Tree(None, False)
        if tree.why is not None:
            return Stopped(tree.kind, tree.why)
        if measure:
            used = tree.size + (self.stdout.kept if self.stdout is not None else 0)
            if self.out_dir is not None:
                used += _unlinked(self.out_dir)
            self._room = self.cap - used
            if used > self.cap:
                return Stopped(OUTPUT_LIMIT, f"its outputs were {used:,} bytes, over its bytes_out ({self.cap:,})")
        return None


class _Tree:
    """What is under /out: its entries (counted up to one past MAX_ENTRIES), and, if `sizes`, its regular files'
    bytes; `why` it is over its bounds, or cannot be measured (then it is refused: a tree the node cannot read,
    or whose paths are too long to name, could hide any amount)."""

    def __init__(self, root: str | None, sizes: bool) -> None:
        self.entries = self.size = 0
        self.why: str | None = None
        self.kind = OUTPUT_LIMIT  # of the stop `why` calls for
        pending = [(root, 0)] if root is not None else []
        while pending and self.why is None:
            path, depth = pending.pop()
            if depth > MAX_DEPTH:
                self.why = f"it made directories in /out more than {MAX_DEPTH} deep"
                break
            try:
                with os.scandir(path) as listing:
                    for entry in listing:
                        self.entries += 1
                        if self.entries > MAX_ENTRIES:
                            self.why = f"it made more than {MAX_ENTRIES:,} files and directories in /out"
                            break
                        if entry.is_dir(follow_symlinks=False):
                            pending.append((entry.path, depth + 1))
                        elif sizes and entry.is_file(follow_symlinks=False):
                            self.size += entry.stat(follow_symlinks=False).st_size
            except OSError as exc:  # nothing else runs in the job's directory while its program is paused
                self.why = f"{UNREADABLE} ({exc.strerror})"
                self.kind = OUTPUT_UNREADABLE


def _written() -> int | None:
    """Bytes this process has passed to write calls so far (any thread), or None where Linux does not say."""
    try:
        fd = os.open("/proc/self/io", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    finally:
        os.close(fd)
    for line in text.split(b"\n"):
        if line.startswith(b"wchar:"):
            return int(line[6:])
    return None


def _unlinked(out_dir: str) -> int:
    """Bytes on disk of files under `out_dir` this process holds open after they were unlinked."""
    prefix = os.path.realpath(out_dir) + "/"  # as the kernel names an open file: absolute, no symlink
    total = 0
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    for fd in descriptors:
        link = f"/proc/self/fd/{fd}"
        try:
            target = os.readlink(link)
            if target.startswith(prefix) and target.endswith(_DELETED):
                info = os.stat(link)
                if stat.S_ISREG(info.st_mode):
                    total += info.st_blocks * 512  # never stored: only its disk counts
        except OSError:  # closed since it was listed
            continue
    return total
