"""A LevelDB of the node's (its records; its blocks), reopened in place when a full disk has stopped it writing.

LevelDB keeps the first error of a background flush or compaction (ENOSPC on a full disk) and refuses
every write after it until the database is reopened; reads go on.  `Database` has plyvel.DB's interface
(get, put, delete, write_batch, iterator, snapshot, close) and, after a write failed, reopens the
database before the next write, once the disk has room for LevelDB to recover its log: a node whose
disk filled up writes again as soon as space returns, without a restart.

A reopen waits for the calls, iterators and snapshots in use to finish (new ones wait for it), so no
thread is inside LevelDB while it closes; one that cannot get a quiet moment within QUIET_SECONDS leaves
the database as it is, and the next write tries again.  A close waits for them too (CLOSE_SECONDS at most):
a worker thread still writing when a node stops must not write into a closed LevelDB; one that begins after
the close is refused by plyvel (RuntimeError), as a write to any closed database is.

Once its disk is getting full, the data dir keeps a reserve file (RESERVE_NAME, up to RESERVE_BYTES): when a write that frees space (a
batch of deletes, as garbage collection and rm write) meets a full disk, the reserve is given up so that
LevelDB can reopen (replaying its log into a table needs about its write buffer), log the deletes and
compact; it is made again once the disk has room.  On a disk so small that 1/20 of it is less than the
log, a write that frees space may still have to wait for room, like the others.  Writes that add data
never use it: they fail with ENOSPC (the node answers 507 disk-full).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plyvel

from .errors import DiskFull

log = logging.getLogger(__name__)

Rows = tuple[tuple[bytes, bytes], ...]  # (key, value) rows a caller adds to a batch written with its own

QUIET_SECONDS = 2.0  # how long a reopen waits for the database's users to finish
CLOSE_SECONDS = 10.0  # how long a close waits for them
RESERVE_NAME = "disk-reserve"
RESERVE_BYTES = 64 * 1024**2  # at most: room to replay LevelDB's log (its write buffer, 16 MiB) and compact
RESERVE_FRACTION = 20  # ... and at most 1/20 of the disk
FREEING_PUT_BYTES = 4096  # a batch of deletes may also put this much (counters) and still count as freeing space
RESERVE_CHECK_SECONDS = 1.0  # until the reserve is made, the disk is looked at this often (not on every write)


Error = plyvel.Error  # what LevelDB raises: a full disk (OSError too), or a database it will not write to


def disk_full(exc: BaseException) -> bool:
    """Whether a failed write (LevelDB's error or an OSError) failed for want of disk space."""
    return "No space left" in str(exc) or getattr(exc, "errno", None) == errno.ENOSPC


def said(exc: BaseException) -> str:
    """What a failed LevelDB call said, as text (plyvel's errors carry LevelDB's bytes)."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def open_database(path: Path, *, reserve_dir: Path | None = None, **options: Any) -> Database:
    """The LevelDB at `path` (made if missing), opened with plyvel's `options`, behind a `Database`."""
    return Database(path, lambda: plyvel.DB(str(path), create_if_missing=True, **options), reserve_dir=reserve_dir)


class Database:
    def __init__(self, path: Path, opener: Callable[[], plyvel.DB], reserve_dir: Path | None = None,
                 reserve_bytes: int | None = None) -> None:
        self.path = Path(path)
        self._reserve_bytes = reserve_bytes
        self._opener = opener
        self._reserve = (reserve_dir or self.path.parent) / RESERVE_NAME
        self._reserve_held = self._reserve.exists()
        self._reserve_checked = 0.0  # time.monotonic() of the last look at the disk for the reserve
        self._db = self._open()
        self._gate = threading.Condition()
        self._active = 0
        self._reopening = False
        self._failed: BaseException | None = None  # the last write error, until a reopen
        self.reopens = 0
        self._keep_reserve()

    def _open(self) -> plyvel.DB:
        """Open the database: LevelDB writes its log out as a table first, which a full disk refuses; the reserve is
        given up for it, and without one the refusal names the disk and the room it wants (not a traceback)."""
        try:
            return self._opener()
        except plyvel.Error as err:
            if not disk_full(err):
                raise
            if self._release_reserve():
                return self._opener()
            need = (self._need() + 1024**2 - 1) // 1024**2  # MiB, rounded up
            raise DiskFull(f"the data dir's disk is full: LevelDB cannot open {self.path}, which needs room to write "
                           "its log out first", hint=f"free at least {need} MiB on that disk, then start the node "
                           "again") from err

    # --- the gate: every use of the plyvel object is counted --------------------------------------------
    def _enter(self) -> plyvel.DB:
        with self._gate:
            while self._reopening:
                self._gate.wait()
            self._active += 1
            return self._db

    def _leave(self) -> None:
        with self._gate:
            self._active -= 1
            if self._active == 0:
                self._gate.notify_all()

    def _read(self, name: str, *args, **kwargs):
        db = self._enter()
        try:
            return getattr(db, name)(*args, **kwargs)
        finally:
            self._leave()

    def _write(self, apply: Callable[[plyvel.DB], Any], frees_space: bool = False):
        if self._failed is not None:
            self._recover(frees_space)
        try:
            return self._apply(apply)
        except (plyvel.Error, OSError) as exc:
            # Once the database is reopened (the disk has room now, or a write that frees space may use the
            # reserve), the write is tried once more: LevelDB applied nothing of a write that failed.
            if not (disk_full(exc) and frees_space and self._release_reserve()) and self._free() < self._need():
                raise
        self._recover(frees_space)
        return self._apply(apply)

    def _apply(self, apply: Callable[[plyvel.DB], Any]):
        db = self._enter()
        try:
            result = apply(db)
        except (plyvel.Error, OSError) as exc:
            self._failed = exc
            raise
        finally:
            self._leave()
        self._maybe_keep_reserve()
        return result

    # --- plyvel.DB's interface ------------------------------------------------------------------------------
    def get(self, key: bytes, default=None, **kwargs):
        return self._read("get", key, default, **kwargs)

    def put(self, key: bytes, value: bytes, **kwargs) -> None:
        self._write(lambda db: db.put(key, value, **kwargs))

    def delete(self, key: bytes, **kwargs) -> None:
        self._write(lambda db: db.delete(key, **kwargs), frees_space=True)

    def write_batch(self, **kwargs) -> _Batch:
        return _Batch(self, kwargs)

    def iterator(self, **kwargs) -> _Held:
        db = self._enter()
        try:
            return _Held(self, db.iterator(**kwargs))
        except BaseException:
            self._leave()
            raise

    def snapshot(self) -> _Held:
        db = self._enter()
        try:
            return _Held(self, db.snapshot())
        except BaseException:
            self._leave()
            raise

    def compact_range(self, **kwargs) -> None:
        self._read("compact_range", **kwargs)

    def approximate_size(self, start: bytes, stop: bytes) -> int:
        """Bytes the tables on disk hold of the keys from `start` to `stop` (not what the memtable holds)."""
        return self._read("approximate_size", start, stop)

    def sync(self) -> None:
        """Make every write before it durable: an empty synced write (LevelDB syncs its log)."""
        self._write(lambda db: db.write_batch(sync=True).write())

    def low_on_space(self) -> bool:
        """Is the disk so full that deleted data should be compacted away now rather than in time?"""
        return self._free() < 2 * max(self._reserve_size(), self._need())

    @property
    def in_use(self) -> int:
        """The calls, iterators and snapshots in use now: a reopen waits until none is."""
        return self._active

    @property
    def closed(self) -> bool:
        return self._db.closed

    def close(self) -> None:
        """Close once no call, iterator or snapshot is in use, new ones waiting meanwhile: a worker thread's write
        still inside LevelDB would use the memory its close frees.  Past CLOSE_SECONDS with some still in use (an
        iterator nobody closed), it closes anyway and says so; plyvel closes its own iterators first."""
        with self._gate:
            self._reopening = True
            try:
                if not self._gate.wait_for(lambda: self._active == 0, timeout=CLOSE_SECONDS):
                    log.warning("closed %s with %d of its calls, iterators or snapshots in use", self.path,
                                self._active)
                self._db.close()
            finally:
                self._reopening = False
                self._gate.notify_all()

    # --- recovery -----------------------------------------------------------------------------------------------
    def _recover(self, frees_space: bool) -> None:
        """Reopen the database if the disk has room for LevelDB to recover its log; else raise the error."""
        failed = self._failed
        if failed is None:
            return
        need = self._need()
        if self._free() < need and not (frees_space and self._release_reserve() and self._free() >= need):
            raise failed
        with self._gate:
            if self._failed is None or self._db.closed:
                return  # another thread reopened it meanwhile, or closed it: the write meets plyvel's refusal
            self._reopening = True
            try:
                deadline = time.monotonic() + QUIET_SECONDS
                while self._active and (left := deadline - time.monotonic()) > 0:
                    self._gate.wait(left)
                if self._active:
                    raise failed  # no quiet moment: the next write tries again
                if self._db.closed:
                    return  # closed while this waited (the node stops): reopened by nobody
                self._db.close()
                try:
                    self._db = self._opener()
                except plyvel.Error:
                    self._db = self._opener()  # once more: a reopen that fails leaves no database at all
                self._failed = None
                self.reopens += 1
                log.warning("reopened the database after a write error (%s)", failed)
            finally:
                self._reopening = False
                self._gate.notify_all()

    def _need(self) -> int:
        """Free bytes a reopen needs: room to turn the log into a table, and a margin."""
        try:
            return sum(p.stat().st_size for p in self.path.glob("*.log")) + 1024**2
        except OSError:
            return 1024**2

    def _free(self) -> int:
        try:
            st = os.statvfs(self.path)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def _reserve_size(self) -> int:
        try:
            st = os.statvfs(self.path)
        except OSError:
            return 0
        return self._reserve_of(st)

    def _reserve_of(self, st: os.statvfs_result) -> int:
        if self._reserve_bytes is not None:
            return self._reserve_bytes
        return min(RESERVE_BYTES, st.f_blocks * st.f_frsize // RESERVE_FRACTION)

    def room(self) -> int | None:
        """Bytes the disk has for data: what is free, less the reserve kept for deletes once the disk is getting full
        (a reserve made already holds its room in its file); None where the disk cannot be read.  One statvfs."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        return max(free if self._reserve_held else free - self._reserve_of(st), 0)

    def expect(self, coming: int) -> None:
        """About `coming` bytes are to be written (the staged uploads under way): if the disk will then be getting
        full, make the reserve now, not at the next once-a-second look, by which several uploads together may have
        filled the disk."""
        if not self._reserve_held:
            self._keep_reserve(coming)

    def _keep_reserve(self, coming: int = 0) -> None:
        """Make the reserve file once the disk is getting full (an eighth of it free, or four reserves), or will be
        once `coming` bytes are written, if it still has room for it twice over.  A mostly empty disk (every test's)
        keeps no reserve."""
        size = self._reserve_size()
        if size == 0:
            self._reserve_held = True  # nothing to keep
            return
        try:
            st = os.statvfs(self.path)
            free, disk = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
            if free - coming >= max(disk // 8, 4 * size) or free < 2 * size:
                return
            with open(self._reserve, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, size)  # blocks allocated, nothing written
                except OSError:
                    f.write(b"\0" * size)  # a file system without fallocate: written, not sparse
                os.fsync(f.fileno())
            self._reserve_held = True
        except OSError as exc:
            log.warning("cannot keep the disk reserve %s: %s", self._reserve, exc)
            try:
                self._reserve.unlink()
            except OSError:
                pass

    def _maybe_keep_reserve(self) -> None:
        # Until it is made, the disk is looked at (two statvfs) once a RESERVE_CHECK_SECONDS, not on every write:
        # a synced write waits for this too, and a disk does not fill up between two looks a second apart.
        if not self._reserve_held and (now := time.monotonic()) >= self._reserve_checked + RESERVE_CHECK_SECONDS:
            self._reserve_checked = now
            self._keep_reserve()

    def _release_reserve(self) -> bool:
        try:
            self._reserve.unlink()
        except OSError:
            return False
        self._reserve_held = False
        self._reserve_checked = 0.0  # made again at the first write once there is room
        log.warning("the disk is full: gave up the reserve %s so that deletes can free space", self._reserve)
        return True


class _Held:
    """An iterator or snapshot of the database, counted as in use until closed (or exhausted, or dropped)."""

    def __init__(self, owner: Database, inner) -> None:
        self._inner = inner
        self._closed = False
        self._finalizer = weakref.finalize(self, owner._leave)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._inner)
        except StopIteration:
            self.close()
            raise

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                (self._inner.release if hasattr(self._inner, "release") else self._inner.close)()
            finally:
                self._finalizer()

    release = close


class _Batch:
    """A write batch kept in Python until written, then applied in one plyvel batch (of whichever database
    object is open then)."""

    def __init__(self, owner: Database, kwargs: dict) -> None:
        self._owner, self._kwargs = owner, dict(kwargs)
        self._transaction = self._kwargs.pop("transaction", False)
        self._ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self._ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self._ops.append((key, None))

    def clear(self) -> None:
        self._ops.clear()

    def approximate_size(self) -> int:
        return sum(len(k) + len(v or b"") for k, v in self._ops)

    def write(self) -> None:
        ops = self._ops
        if not ops:
            return
        added = sum(len(v) for _, v in ops if v is not None)
        frees = any(v is None for _, v in ops) and added <= FREEING_PUT_BYTES

        def apply(db: plyvel.DB) -> None:
            with db.write_batch(**self._kwargs) as batch:
                for key, value in ops:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)

        self._owner._write(apply, frees_space=frees)
        self._ops = []

    def __enter__(self) -> _Batch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._transaction and exc_type is not None:
            return
        self.write()
