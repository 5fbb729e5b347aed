"""A small web request's try, wherever it runs (on the node's event loop, compute/web_on_loop.py, or in a web
runner, compute/web_runner.py): its stdin, stdout and stderr in-memory files (memfd) made once and emptied after
each run, which wasmtime opens by their /proc paths, so a write to one never waits for a reader; the run within
the trial's fuel and ticks it is given; and whether what it gave may answer the request (see web_on_loop.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from ..errors import ComputeBusy
from . import sandbox
from .limits import Limits
from .values import Signature
from .wasi_io import OUTPUT_CAP, Streams

ON_LOOP_ANSWER = 1 << 20  # bytes of stdout a try may answer (a longer answer goes to a worker)

Execute = Callable[..., sandbox.Outcome]  # (prepared, entrypoint, signature, argv, limits, streams, deadline_ticks)


@dataclass
class Tried:
    outcome: sandbox.Outcome
    kept: bool  # it ended within its trial and may answer the request
    stdout: bytes  # empty unless kept
    stderr: bytes  # as far as its cap needs: one byte past it says it went over


class Memfds:
    """One set of memfds: the tries that use it run one at a time."""

    def __init__(self) -> None:
        self._files: tuple[int, int, int] | None = None  # stdin, stdout, stderr

    def close(self) -> None:
        if self._files is not None:
            for fd in self._files:
                os.close(fd)
            self._files = None

    def run(self, execute: Execute, prepared: sandbox.Prepared, entrypoint: str, signature: Signature,
            argv: list[str], trial: Limits, ticks: int, streams: Streams, body: bytes) -> Tried:
        """`streams` (its env and prepaid fuel set) pointed at the memfds for the run, and left as it was."""
        stdin, stdout, stderr = self._open()
        if body:
            os.pwrite(stdin, body, 0)
            streams.stdin = f"/proc/self/fd/{stdin}"
        streams.stdout_pipe, streams.stderr_pipe, streams.pipes_kept = stdout, stderr, True
        written: list[int | None] = [None, None]  # unknown until the run has ended: emptied whatever it wrote
        try:
            outcome = execute(prepared, entrypoint, signature, argv, trial, streams, deadline_ticks=ticks)
            written = [os.fstat(fd).st_size for fd in (stdout, stderr)]
            kept = outcome.trap_kind is None and written[0] <= ON_LOOP_ANSWER
            # stderr is only counted and capped (OUTPUT_CAP): one byte past the cap says it went over
            err_read = min(written[1], OUTPUT_CAP + 1)
            out, err = (os.pread(stdout, written[0], 0), os.pread(stderr, err_read, 0)) if kept else (b"", b"")
        finally:
            for fd, size in zip((stdin, stdout, stderr), (len(body), *written)):
                if size != 0:  # an empty one is left as it is (a system call less each)
                    os.ftruncate(fd, 0)
            streams.stdin = streams.stdout_pipe = streams.stderr_pipe = None
            streams.pipes_kept = False
        return Tried(outcome, kept, out, err)

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


__all__ = ["Memfds", "ON_LOOP_ANSWER", "Tried"]
