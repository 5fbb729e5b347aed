"""Peers' modules compile in a child process, never in the node's own.

A compile cannot be interrupted on a thread: in a child it is bounded by a clock (killed at its deadline), runs
at a lower priority on one thread (cranelift otherwise takes every core from the operator's calls), and a
compiler that runs long, or dies, takes only that process with it.  The child hands back the serialized
artifact, compiled with the node's own engine settings (engine.py), which the node loads like any artifact of
its own.  Run as `python -m xsc.compute.compiler`: the wasm on stdin, the artifact on stdout, and on failure
exit status 2 with wasmtime's message on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ..errors import CompileTimeout, InvalidModule

NICENESS = 10
MAX_ERROR_BYTES = 4096  # of the child's stderr, kept for the message


def compile_artifact(wasm: bytes, timeout: float) -> bytes:
    """The serialized artifact of `wasm`, compiled in a child process within `timeout` seconds (blocking)."""
    try:
        done = subprocess.run([sys.executable, "-m", __name__], input=wasm, capture_output=True, timeout=timeout,
                              preexec_fn=_lower_priority, check=False)
    except subprocess.TimeoutExpired:
        raise CompileTimeout(f"compiling the module took longer than this node allows a peer's module "
                             f"({timeout:g} s); it was stopped", hint="send a smaller module",
                             limit=timeout) from None
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
    try:
        module = wasmtime.Module(make_engine(parallel=False), wasm)
    except wasmtime.WasmtimeError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    sys.stdout.buffer.write(bytes(module.serialize()))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
