"""Small web requests run on the event loop's thread: no hand-over to a worker and back, no pipes to follow.

A request is tried here when nothing in it can block the thread: its function mounts no stored files, its module
is small, has no start function and does not import `poll_oneoff` (the one WASI call that sleeps; without
preopened directories or sockets every other one answers at once), and its body is at most ON_LOOP_BODY bytes
(one of no declared length is read that far first, and handed whole to a worker's run if it goes on).  Its
stdin, stdout and stderr are in-memory files (memfd) made once and emptied after each run, which wasmtime opens
by their /proc paths as it opens a worker's pipes: a write to one never waits for a reader.  The try runs with
the GIL released (so the epoch ticker stops it) within INLINE_FUEL and INLINE_TICKS, as a small invoke's does
(compute/service.py): a run that ends within them gave what it would under its own limits (a fresh Store, the
same memory limit, the same world).  Any other end, or an answer over ON_LOOP_ANSWER bytes, is thrown away and
the request run on a worker from scratch; one that ran out of the try's fuel or time while it had the CPU, or
wrote too much, marks its export, never tried here again.  What a try can cost the node is bounded by those
limits: its time, and what it writes into the memfds meanwhile (emptied right after).
"""

from __future__ import annotations

import os

from ..errors import ComputeBusy
from . import engine as eng
from . import sandbox
from .limits import Limits
from .service import INLINE_FUEL, INLINE_PREEMPTED, INLINE_TICKS, ComputeService
from .wasi_io import OUTPUT_CAP, Streams

ON_LOOP_BODY = 16 * 1024  # bytes of a request body a run on the loop may take (its stdin fuel comes first)
ON_LOOP_ANSWER = 1 << 20  # bytes of stdout a run on the loop may answer (a longer answer goes to a worker)
BLOCKING_IMPORTS = frozenset({"poll_oneoff"})  # WASI calls that may hold the thread (a sleep)


class LoopRuns:
    """Tries of small requests on the loop, and the memfds they run with (one set: runs on the loop are serial)."""

    def __init__(self, compute: ComputeService) -> None:
        self.compute = compute
        self._files: tuple[int, int, int] | None = None  # stdin, stdout, stderr
        self._verdicts: dict[bytes, bool] = {}  # module hash -> whether its calls may run here
        self._slow: dict[tuple[bytes, str], int] = {}  # (module, export) -> tries kept from the CPU in a row; -1: slow
        self.runs = 0  # requests answered from a run here (status, tests)
        self.retried = 0  # tries run again on a worker

    def close(self) -> None:
        if self._files is not None:
            for fd in self._files:
                os.close(fd)
            self._files = None

    def may_try(self, prepared: sandbox.Prepared, entrypoint: str, mounts: bool, content_length: int | None) -> bool:
        """Whether a request may be tried here (decided before its body is read)."""
        if mounts or (content_length or 0) > ON_LOOP_BODY or self._slow.get((prepared.module_hash, entrypoint)) == -1:
            return False
        verdict = self._verdicts.get(prepared.module_hash)
        if verdict is None:
            info = prepared.info
            verdict = self._verdicts[prepared.module_hash] = (
                prepared.wasi_pre is not None and not info.start and info.size <= sandbox.QUICK_INSTANTIATE_SIZE
                and not any(i.name in BLOCKING_IMPORTS for i in prepared.module.imports))
        return verdict

    def run(self, prepared: sandbox.Prepared, entrypoint: str, signature, argv: list[str], limits: Limits,
            streams: Streams, body: bytes) -> tuple[sandbox.Outcome, bytes, bytes] | None:
        """The run's outcome, stdout and stderr; None if the request must go to a worker (see the module's doc)."""
        stdin, stdout, stderr = self._open()
        if body:
            os.pwrite(stdin, body, 0)
            streams.stdin = f"/proc/self/fd/{stdin}"
        streams.stdout_pipe, streams.stderr_pipe, streams.pipes_kept = stdout, stderr, True
        trial = Limits(min(limits.fuel, INLINE_FUEL + streams.prepaid_fuel), limits.memory, limits.timeout)
        try:
            outcome = self.compute.execute(prepared, entrypoint, signature, argv, trial, streams,
                                           deadline_ticks=min(eng.deadline_ticks(limits.timeout), INLINE_TICKS))
            written = [os.fstat(fd).st_size for fd in (stdout, stderr)]
            kept = outcome.trap_kind is None and written[0] <= ON_LOOP_ANSWER
            # stderr is only counted and capped (OUTPUT_CAP): one byte past the cap says it went over
            err_read = min(written[1], OUTPUT_CAP + 1)
            out, err = (os.pread(stdout, written[0], 0), os.pread(stderr, err_read, 0)) if kept else (b"", b"")
        finally:
            for fd in (stdin, stdout, stderr):
                os.ftruncate(fd, 0)
            streams.stdin = streams.stdout_pipe = streams.stderr_pipe = None
            streams.pipes_kept = False
        if not kept:
            self._judge(prepared.module_hash, entrypoint, outcome)
            self.retried += 1
            return None
        self._slow.pop((prepared.module_hash, entrypoint), None)
        self.runs += 1
        return outcome, out, err

    def _open(self) -> tuple[int, int, int]:
        if self._files is None:
            made: list[int] = []
            try:
                for name in ("stdin", "stdout", "stderr"):
                    made.append(os.memfd_create(f"xsc-web-{name}", os.MFD_CLOEXEC))
            except OSError as exc:  # out of file descriptors: refused like a run past the node's queue
                for fd in made:
                    os.close(fd)
                raise ComputeBusy(f"the node has no file descriptor to spare for another run ({exc.strerror})",
                                  hint="retry in a moment") from None
            self._files = (made[0], made[1], made[2])
        return self._files

    def _judge(self, module_hash: bytes, entrypoint: str, outcome: sandbox.Outcome) -> None:
        """A try thrown away: its export marked slow if it ran out of the try's fuel or time while it had the CPU,
        or wrote too much.  A try stopped at its deadline having run for less than half a tick was kept from
        the CPU (a busy machine): tried again, up to INLINE_PREEMPTED times in a row."""
        key = (module_hash, entrypoint)
        if outcome.trap_kind not in (None, "out-of-fuel", "deadline"):
            return  # a failure the worker's run reports under its own limits; says nothing of its speed
        preempted = outcome.trap_kind == "deadline" and outcome.cpu_ns < eng.TICK * 1e9 / 2
        count = self._slow.get(key, 0) + 1 if preempted else 0
        self._slow[key] = -1 if not preempted or count >= INLINE_PREEMPTED else count


__all__ = ["LoopRuns", "ON_LOOP_BODY"]
