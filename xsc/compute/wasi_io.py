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
from dataclasses import dataclass, field
from typing import BinaryIO

import wasmtime

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
    inputs_dir: str | None = None  # host directory mounted read-only at /in
    outputs_dir: str | None = None  # host directory mounted writable at /out
    env: dict[str, str] = field(default_factory=dict)
    prepaid_fuel: int = 0  # fuel for the bytes offered to the program, taken from its budget before it runs

    def config(self, argv: list[str], stdout: "Capture", stderr: "Capture") -> wasmtime.WasiConfig:
        config = wasmtime.WasiConfig()  # no network; no preopens but /in and /out
        config.argv = argv
        if self.env:
            config.env = list(self.env.items())
        if self.stdin is not None:
            config.stdin_file = self.stdin
        config.stdout_custom = stdout
        config.stderr_custom = stderr
        if self.inputs_dir is not None:
            config.preopen_dir(self.inputs_dir, IN, fs_mutable=False)  # the default is read-write
        if self.outputs_dir is not None:
            config.preopen_dir(self.outputs_dir, OUT, fs_mutable=True)
        return config


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
