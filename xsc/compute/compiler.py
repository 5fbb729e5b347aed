"""Peers' modules compile in a child process, never in the node's own.

A compile cannot be interrupted on a thread: in a child it is bounded by the CPU time it may use (killed by
SIGPROF once its compile has used it), runs at a lower priority on one thread (cranelift otherwise takes every
core from the operator's calls), and a compiler that runs long, or dies, takes only that process with it.  The
bound is CPU time, not the wall's: at a lower priority on a busy node the child waits for the CPU, which is the
node's load and costs the node nothing, and a module that compiles in a second of CPU would be refused (and its
peer charged) for it.  The wall bounds the child too, far out, against one that no longer gets the CPU at all.  The child hands back the serialized
artifact, compiled with the node's own engine settings (engine.py), which the node loads like any artifact of
its own.  Run as `python -m xsc.compute.compiler`: the wasm on stdin, the artifact on stdout, and on failure
exit status 2 with wasmtime's message on stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ..errors import CompileTimeout, InvalidModule

NICENESS = 10
MAX_ERROR_BYTES = 4096  # of the child's stderr, kept for the message
WALL_FACTOR = 10  # the wall bounds a compile at this many times its CPU time, and at least WALL_FLOOR seconds
WALL_FLOOR = 60.0


def compile_artifact(wasm: bytes, timeout: float) -> bytes:
    """The serialized artifact of `wasm`, compiled in a child process within `timeout` seconds of CPU time
    (blocking)."""
    too_long = CompileTimeout(f"compiling the module took longer than this node allows a peer's module "
                              f"({timeout:g} s of CPU time); it was stopped", hint="send a smaller module",
                              limit=timeout)
    try:
        done = subprocess.run([sys.executable, "-m", __name__, repr(timeout)], input=wasm, capture_output=True,
                              timeout=max(WALL_FLOOR, WALL_FACTOR * timeout), preexec_fn=_lower_priority,
                              check=False)
    except subprocess.TimeoutExpired:
        raise too_long from None
    if done.returncode == -signal.SIGPROF:
        raise too_long
    if done.returncode == 2:
        raise InvalidModule(f"not a valid WebAssembly module: {_last_line(done.stderr)}",
                            hint="check the module with wasm-validate or rebuild it")
    if done.returncode != 0:
        raise InvalidModule(f"the module's compiler stopped with status {done.returncode}",
                            hint="send a smaller or simpler module")
    return done.stdout


def _lower_priority() -> None:
    os.nice(NICENESS)


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr[-MAX_ERROR_BYTES:].decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "the compiler gave no reason"


def _main() -> int:
    import wasmtime

    from .engine import make_engine

    wasm = sys.stdin.buffer.read()
    # From here on, only the compile's CPU time counts (the interpreter's start is the node's, not the module's):
    # past the budget, SIGPROF's default action ends the process.
    signal.setitimer(signal.ITIMER_PROF, float(sys.argv[1]))
    try:
        module = wasmtime.Module(make_engine(parallel=False), wasm)
    except wasmtime.WasmtimeError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    sys.stdout.buffer.write(bytes(module.serialize()))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
