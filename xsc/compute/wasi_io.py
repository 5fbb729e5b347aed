"""What a WASI program sees of the world: its stdin (a file), its stdout and stderr (captured up to caps),
`/in` (read-only) and `/out` (writable) when a job mounts them, and nothing else of the host; no network.

Bytes through its streams cost fuel, as a bulk memory instruction's bytes do: each write to stdout or stderr is
charged IO_FUEL_PER_CALL + IO_FUEL_PER_BYTE per byte from the Store's fuel when it is made (the capture
callback runs in the write, on the thread running the wasm, where the fuel count is up to date), and a write
the fuel left cannot pay ends the run out of fuel at the next instruction.  The bytes a job offers its program
(stdin and its inputs) are charged before it runs, and what it leaves in `/out` once it ran
(compute/jobs.py): so the fuel held before a run covers what its I/O can do.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import BinaryIO

import wasmtime

from ..errors import ComputeBusy
from .fastcall import WasiConfig, close_held

OUTPUT_CAP = 64 * 1024  # bytes of stdout and of stderr kept from an invoke's WASI call
IO_FUEL_PER_BYTE = 4  # fuel per byte through a WASI stream (a host copy: a few times a wasm byte copy)
IO_FUEL_PER_CALL = 1_000  # fuel per write call (the host call itself: a few microseconds)
IN, OUT = "/in", "/out"


def io_fuel(nbytes: int, calls: int = 0) -> int:
    """The fuel `nbytes` through a WASI stream in `calls` calls cost."""
    return nbytes * IO_FUEL_PER_BYTE + calls * IO_FUEL_PER_CALL


@dataclass
class Streams:
    """A WASI program's view of the host.  The default is an invoke's: no stdin, stdout and stderr kept up
    to OUTPUT_CAP with the rest counted and dropped (the program sees its writes succeed)."""

    stdin: str | None = None  # host path of the file read as stdin
    stdout_cap: int = OUTPUT_CAP
    stderr_cap: int = OUTPUT_CAP
    refuse_over_cap: bool = False  # a job: a write past its stream's cap fails in the guest (EIO)
    stdout_sink: BinaryIO | None = None  # stdout written here (a file to store) instead of kept in memory
    stdout_pipe: int | None = None  # the writing end of a pipe stdout goes to instead (closed by `release`)
    stderr_pipe: int | None = None  # and stderr
    pipes_kept: bool = False  # the pipes' writing ends are the caller's: `release` leaves them open
    inputs_dir: str | None = None  # host directory mounted read-only at /in
    outputs_dir: str | None = None  # host directory mounted writable at /out
    bytes_out: int | None = None  # a job: /out and a stored stdout held to this while it runs (out_bound.py)
    stop: threading.Event | None = None  # a job: set, it is stopped at its next tick (its node stops: out_bound.py)
    env: dict[str, str] = field(default_factory=dict)
    prepaid_fuel: int = 0  # fuel for the bytes offered to the program, taken from its budget before it runs
    seed: bytes | None = None  # a deterministic run: WASI's clocks and random made from this (the job id)

    def config(self, argv: list[str], stdout: "Capture", stderr: "Capture") -> WasiConfig:
        """The run's WASI configuration; ComputeBusy if the host cannot open its files (out of descriptors)."""
        config = WasiConfig()  # no network; no preopens but /in and /out
        try:
            config.argv(argv)
            if self.env:
                config.env(list(self.env.items()))
            if self.stdin is not None:
                config.stdin_file(self.stdin)
            # A pipe is opened again by wasmtime: its own writing end, written by its own writes.
            if self.stdout_pipe is not None:
                config.stdout_file(f"/proc/self/fd/{self.stdout_pipe}")
            else:
                config.stdout_custom(stdout)
            if self.stderr_pipe is not None:
                config.stderr_file(f"/proc/self/fd/{self.stderr_pipe}")
            else:
                config.stderr_custom(stderr)
            if self.inputs_dir is not None:
                config.preopen_dir(self.inputs_dir, IN, fs_mutable=False)  # the default is read-write
            if self.outputs_dir is not None:
                config.preopen_dir(self.outputs_dir, OUT, fs_mutable=True)
        except wasmtime.WasmtimeError as exc:
            raise ComputeBusy(f"the node could not open the program's streams and directories ({exc})",
                              hint="retry in a moment") from None
        return config

    def release(self) -> None:
        """Once the run has ended (its Store, holding the pipes' other writing ends, is freed): their readers see
        their end (unless the caller keeps them, and closes them itself)."""
        for pipe in (self.stdout_pipe, self.stderr_pipe) if not self.pipes_kept else ():
            if pipe is not None:
                close_held(pipe)  # on the worker that ran it: see fastcall.pipe_held
        self.stdout_pipe = self.stderr_pipe = None


class Capture:
    """One output stream of a WASI program: charged per write from the Store's fuel, kept up to `cap` bytes."""

    def __init__(self, store, cap: int, refuse_over_cap: bool, sink: BinaryIO | None = None) -> None:
        self.store = store
        self.cap = cap
        self.refuse = refuse_over_cap
        self.sink = sink
        self.data = bytearray()
        self.kept = 0  # bytes kept (in data, or written to the sink)
        self.dropped = 0  # bytes written past the cap (an invoke), or refused (a job)
        self.over = False  # a write was refused for the cap

    def __call__(self, chunk: bytes) -> int:
        n = len(chunk)
        left = self.store.fuel()
        cost = io_fuel(n, 1)
        if cost > left:  # the run ends out of fuel at its next instruction
            self.store.set_fuel(0)
            return -errno.EIO
        self.store.set_fuel(left - cost)
        room = max(0, self.cap - self.kept)
        if n > room and self.refuse:
            self.over = True
            self.dropped += n
            return -errno.EIO
        keep = chunk if n <= room else chunk[:room]
        if keep:
            if self.sink is not None:
                self.sink.write(keep)
            else:
                self.data += keep
            self.kept += len(keep)
        self.dropped += n - len(keep)
        return n


# --- deterministic runs: WASI's clocks and random fixed by the job's id ----------------------------------
_FIXED = threading.local()  # the seed of the deterministic run on this thread, and its random stream's counter
FIXED_EPOCH_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z: a fixed clock reads this plus up to a year
I32, I64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()


class fixed_by:
    """`with fixed_by(seed):` runs on this thread see clocks and random made from `seed` (a job id's bytes)."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        _FIXED.seed, _FIXED.counter = self.seed, 0

    def __exit__(self, *exc) -> None:
        _FIXED.seed = None


def fixed_instance_pre(engine: wasmtime.Engine, module: wasmtime.Module) -> wasmtime.InstancePre:
    """The module's WASI imports with clock_time_get, clock_res_get and random_get replaced by fixed ones."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.allow_shadowing = True
    wasi = "wasi_snapshot_preview1"
    linker.define_func(wasi, "clock_time_get", wasmtime.FuncType([I32, I64, I32], [I32]), _clock_time_get,
                       access_caller=True)
    linker.define_func(wasi, "clock_res_get", wasmtime.FuncType([I32, I32], [I32]), _clock_res_get,
                       access_caller=True)
    linker.define_func(wasi, "random_get", wasmtime.FuncType([I32, I32], [I32]), _random_get, access_caller=True)
    return linker.instantiate_pre(module)


def _memory(caller) -> wasmtime.Memory:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise wasmtime.WasmtimeError("a deterministic WASI program must export its memory as 'memory'")
    return memory


def _put(caller, ptr: int, data: bytes) -> int:
    memory = _memory(caller)
    if ptr < 0 or ptr + len(data) > memory.data_len(caller):
        return 21  # EFAULT
    memory.write(caller, data, ptr)
    return 0


def _clock_time_get(caller, clock_id: int, precision: int, ptr: int) -> int:
    seed = getattr(_FIXED, "seed", None) or b"\0" * 32
    offset = int.from_bytes(hashlib.sha256(seed + b"clock").digest()[:8], "big") % (365 * 86400 * 10**9)
    return _put(caller, ptr, (FIXED_EPOCH_NS + offset).to_bytes(8, "little"))


def _clock_res_get(caller, clock_id: int, ptr: int) -> int:
    return _put(caller, ptr, (1).to_bytes(8, "little"))


def _random_get(caller, ptr: int, length: int) -> int:
    if length > 1 << 20:
        return 28  # EINVAL: at most 1 MiB at a time
    seed = getattr(_FIXED, "seed", None) or b"\0" * 32
    out = bytearray()
    while len(out) < length:
        _FIXED.counter = getattr(_FIXED, "counter", 0) + 1
        out += hashlib.sha256(seed + b"random" + _FIXED.counter.to_bytes(8, "big")).digest()
    return _put(caller, ptr, bytes(out[:length]))
