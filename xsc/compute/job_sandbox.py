"""One run of a job's program over bytes already on disk: the step a job takes on whichever node runs it.

The caller stages the work directory (`stdin`, `in/NAME`; jobs.py on the user's node, hosted_jobs.py on a
provider), holds what the run may cost, and afterwards records and pays it; this module only runs the program
(beside invokes, within the node's `max_queued`) and says what it left in /out and whether that may be kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from ..db import Rows
from ..errors import ComputeBusy
from ..units import counted
from ..ledger.tabs import owed_entry
from ..tasks import in_pool
from .jobspec import JobSpec
from .limits import Limits
from .out_bound import OUTPUT_LIMIT, OUTPUT_NAME
from .sandbox import Outcome
from .trap_limits import hint_here, of_bytes_out, of_run
from .service import ComputeService
from .wasi_io import Streams, io_fuel

MAX_OUTPUTS = 256  # files a job may leave in /out
UNPRINTABLE = "it left a file in /out whose name is not printable text"  # a refusal: see _outputs
HASH_CHUNK = 1 << 20

OutputFile = tuple[str, Path, int]  # name ("stdout", "out/a.txt"), host path, size


@dataclass
class Sandboxed:
    """What a job's program did: its outcome (fuel with its I/O), when it started, what it left to store and,
    if that cannot be stored, why."""

    outcome: Outcome
    started: int
    argv: list[str]
    files: list[OutputFile]
    refusal: str | None
    trapped: bool = False  # its program trapped (or exited non-zero) by itself, whatever became of its outputs

    @property
    def succeeded(self) -> bool:
        return self.outcome.trap_kind is None and self.refusal is None and (self.outcome.exit_code or 0) == 0


async def run_program(compute: ComputeService, spec: JobSpec, prepared, signature, limits: Limits, work: Path,
                      *, stdin: Path | None, job_id: str, prepaid: int, stop: threading.Event | None = None
                      ) -> Sandboxed:
    """Run the job's program in `work` (its `in/` mounted read-only at /in, a fresh `out/` at /out); `stop`, once set,
    stops it at its next tick (its node stops)."""
    out_dir = work / "out"
    out_dir.mkdir()
    stdout_path = work / "stdout"
    admit(compute)
    with open(stdout_path, "wb") as sink:
        streams = Streams(stdin=None if stdin is None else str(stdin),
                          stdout_cap=spec.bytes_out if spec.stdout_to_store else spec.stdout_cap,
                          stderr_cap=spec.stderr_cap, refuse_over_cap=True,
                          stdout_sink=sink if spec.stdout_to_store else None,
                          inputs_dir=str(work / "in") if spec.inputs else None,
                          outputs_dir=str(out_dir) if spec.outputs else None, env=dict(spec.env),
                          bytes_out=spec.bytes_out if spec.outputs or spec.stdout_to_store else None,
                          prepaid_fuel=prepaid, seed=bytes.fromhex(job_id) if spec.deterministic else None,
                          stop=stop)
        argv = [spec.module, *spec.argv]
        started = time.time_ns()
        outcome = await sandboxed(compute, prepared, spec.entrypoint, signature, argv, limits, streams)
    files: list[OutputFile] = []
    refusal = None  # what it left is not listed when it was stopped for it: more files, or deeper, than listing may meet
    if outcome.stopped is None:
        files, refusal = await in_pool(None, _outputs, out_dir, stdout_path if spec.stdout_to_store else None,
                                       spec.bytes_out)
    kind = OUTPUT_NAME if refusal is not None and refusal.startswith(UNPRINTABLE) else OUTPUT_LIMIT
    out_fuel = io_fuel(sum(size for _, _, size in files))
    if refusal is None and outcome.trap_kind is None and outcome.fuel_consumed + out_fuel > limits.fuel:
        kind, refusal = "out-of-fuel", (f"storing its {counted(len(files), 'output')} costs {out_fuel:,} fuel, more "
                                        f"than the {limits.fuel - outcome.fuel_consumed:,} its fuel limit has left")
    outcome.fuel_consumed = min(limits.fuel, outcome.fuel_consumed + out_fuel)
    if outcome.over_cap is not None:
        kind, refusal = OUTPUT_LIMIT, f"its {outcome.over_cap} went over its cap"
    if outcome.stopped is not None:
        kind, refusal = outcome.stopped.kind, outcome.stopped.why
    trapped = outcome.trap_kind is not None
    if refusal is not None and not trapped:
        # Its signed record says how its outputs ended, as its caller is told (`out-of-fuel` for the fuel their
        # writes cost, `output-name` for a name not printable, `output-unreadable` for what the node cannot read
        # in /out, else `output-limit`), never "ok": a run whose outputs are refused is a trap.
        outcome.trap_kind, outcome.message = kind, refusal
    if refusal is not None:  # the limit its outputs went over, named as a trap names its own (trap_limits.py)
        outcome.limit = of_bytes_out(refusal, spec.bytes_out) or outcome.limit or of_run(outcome.trap_kind, limits)
    # Out of fuel, its hint names the most this node offers, as an invoke's does (service.Run.error).
    outcome.hint = hint_here(outcome.trap_kind, outcome.limit, compute.ceiling, outcome.hint)
    return Sandboxed(outcome, started, argv, files, refusal, trapped)


def admit(compute: ComputeService) -> None:
    """A program waits for a thread beside invokes, as many as the node queues: past that, it is refused."""
    if compute.admitted >= compute.max_queued:
        raise ComputeBusy(f"the node is busy: {compute.admitted} calls and jobs are running or waiting",
                          hint="retry in a moment", admitted=compute.admitted)


def sandboxed(compute: ComputeService, prepared, entrypoint: str, signature, argv: list[str], limits: Limits,
              streams: Streams, around: Around | None = None) -> asyncio.Future[Outcome]:
    """Run a WASI program on the compute pool with `streams` as its world, counted among the admitted until it
    ends: the future of its outcome.  `around` is called on the worker that runs it: `open(streams)` before,
    and `collect()` once the run has ended (its streams released), before the loop is told."""
    compute.admitted += 1
    run = compute.execute if around is None else functools.partial(_around, compute.execute, around)
    ran = compute.pool.run(run, prepared, entrypoint, signature, argv, limits, streams)
    ran.add_done_callback(lambda _: _left(compute))
    return ran


class Around(Protocol):
    def open(self, streams: Streams) -> None: ...

    def collect(self) -> None: ...


def _around(execute: Callable[..., Outcome], around: Around, *args) -> Outcome:
    streams = args[-1]
    around.open(streams)
    try:
        return execute(*args)
    finally:
        streams.release()  # released by the run already, unless it failed before it began
        around.collect()


def _left(compute: ComputeService) -> None:
    compute.admitted -= 1


def record_and_owe(compute: ComputeService, ledger, tabs, payer, node, run, record: dict, module_hash: bytes,
                   budget: int, also: Rows = (), *,
                   awaited: bool = True) -> asyncio.Future:
    """A run here recorded with what it owes on the payer's tab with this node (and `also`, other records that
    must go with it), in the journal's next group commit; once written, the tab takes the charge.  From the
    moment the run is queued only its charge stays held, not its whole budget: runs answered before their records
    are written (a web function's) must not hold a backlog of budgets that refuses the next callers.  If the
    record is not written, what is held is released and nothing is owed.  The future is done once it is one or
    the other (whether or not anyone waits for it: a web function's caller is answered before it, and its record
    is `awaited` by nobody: see Journal.append)."""
    owed = (owed_entry(bytes.fromhex(run.provenance_id), payer.public_key, node.public_key, run.charge,
                       run.fuel_consumed), *also)
    try:
        written = compute.journal.append(record, module_hash, owed, awaited=awaited)
    except BaseException:
        ledger.release(payer, budget)
        raise
    ledger.replace_hold(payer, budget, run.charge)
    settled = asyncio.get_running_loop().create_future()  # an awaiter cancelled cancels this, never the write

    def owe(_: asyncio.Future) -> None:
        error = asyncio.CancelledError() if written.cancelled() else written.exception()
        if error is not None:
            ledger.release(payer, run.charge)
        else:
            tabs.owe(payer, node, bytes.fromhex(run.provenance_id), run.charge, run.fuel_consumed,
                     held=run.charge)
        if not settled.done():
            settled.set_exception(error) if error is not None else settled.set_result(None)

    written.add_done_callback(owe)
    return settled


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (never whole in memory); run it in the pool."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    """Remove a job's work directory, however deep the tree its program made in it: each directory met is moved
    up to the top and emptied from there (no recursion, two descriptors, no long path: shutil.rmtree recurses
    once a level, and a program may nest directories deeper than Python recurses in the tick before it is
    stopped).  What cannot be removed is left."""
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    moved = 0
    try:
        removed = True
        while removed:  # a pass that removes nothing ends it: what is left cannot be removed
            removed = False
            with os.scandir(top) as listing:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
            for name, is_dir in names:
                with contextlib.suppress(OSError):
                    if is_dir:
                        inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
                        try:
                            os.fchmod(inner, 0o700)  # /in is read-only
                            with os.scandir(inner) as listing:
                                children = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
                            for child, child_is_dir in children:
                                if child_is_dir:
                                    moved += 1
                                    os.rename(child, f".up-{moved}", src_dir_fd=inner, dst_dir_fd=top)
                                else:
                                    os.unlink(child, dir_fd=inner)
                                removed = True
                        finally:
                            os.close(inner)
                        os.rmdir(name, dir_fd=top)
                    else:
                        os.unlink(name, dir_fd=top)
                    removed = True
    finally:
        os.close(top)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _outputs(out_dir: Path, stdout: Path | None, cap: int) -> tuple[list[OutputFile], str | None]:
    """The regular files the program left in /out (and its stored stdout), and why they cannot be stored, if so."""
    files: list[OutputFile] = []
    if stdout is not None:
        files.append(("stdout", stdout, stdout.stat().st_size))
    for root, _, names in os.walk(out_dir, followlinks=False):
        for name in sorted(names):
            path = Path(root) / name
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            files.append(("out/" + str(path.relative_to(out_dir)), path, info.st_size))
            if not files[-1][0].isprintable():
                # A name is shown on terminals and in listings, and a provider's outputs are held to printable
                # names (sent_jobs.py): refused the same wherever the job runs, never the provider's fault.
                return files, f"{UNPRINTABLE} ({files[-1][0][:64]!r})"
            if len(files) > MAX_OUTPUTS:
                return files, f"it left more than {MAX_OUTPUTS} files in /out"
    total = sum(size for _, _, size in files)
    if total > cap:
        return files, f"its outputs are {total:,} bytes, over its bytes_out ({cap:,})"
    return files, None
