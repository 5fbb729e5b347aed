"""Peers' modules compile in a child process, never in the node's own.

A compile cannot be interrupted on a thread: in a child it is bounded by the CPU time it may use (killed by
SIGPROF once its compile has used it), runs at a lower priority on one thread (cranelift otherwise takes every
core from the operator's calls), and a compiler that runs long, or dies, takes only that process with it.  The
bound is CPU time, not the wall's: at a lower priority on a busy node the child waits for the CPU, which is the
node's load and costs the node nothing, and a module that compiles in a second of CPU would be refused (and its
peer charged) for it.  The wall bounds the child too, far out, against one that no longer gets the CPU at all.

Each child is forked from one compiler process, started with the first compile (`python -m xsc.compute.compiler
FD`, its end of a socket pair on FD) and again if it has ended: it has loaded wasmtime once, so a child's CPU is
its compile's (a fresh interpreter loading wasmtime took ~0.2 s of CPU, some thirty times a small module's
compile), and it holds nothing of the node's.  It ends when the node's end of the pair closes.  For each compile
the node sends it one end of a fresh socket pair and the CPU budget; a process forked for the request reads the
wasm, forks the child that compiles it, says the child's pid (the node kills it past the wall's bound), and once
the child has ended answers how it ended (its exit status, or minus the signal that ended it) and its output:
the serialized artifact, compiled with the node's own engine settings (engine.py), which the node loads like any
artifact of its own, or wasmtime's message when the module is not valid (status 2).

What the compiler process and its children write to their stdout or stderr (a crash's message: a wasmtime panic,
Python's fatal error) is not the node's own output: it is logged line by line, attributed to the compiler process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading

from ..errors import CompileTimeout, ComputeBusy, InvalidModule
from . import child_output

log = logging.getLogger(__name__)

NICENESS = 10
MAX_ERROR_BYTES = 4096  # of wasmtime's message, kept for the error
WALL_FACTOR = 10  # the wall bounds a compile at this many times its CPU time, and at least WALL_FLOOR seconds
WALL_FLOOR = 60.0
BUDGET = struct.Struct(">d")  # a request to the compiler process: the compile's CPU budget in seconds
PID = struct.Struct(">q")
ENDED = struct.Struct(">iQ")  # how the child ended (exit status, or minus its signal), then its output's length
LENGTH = struct.Struct(">Q")


def compile_artifact(wasm: bytes, timeout: float) -> bytes:
    """The serialized artifact of `wasm`, compiled in a child process within `timeout` seconds of CPU time
    (blocking)."""
    too_long = CompileTimeout(f"compiling the module took longer than this node allows a peer's module "
                              f"({timeout:g} s of CPU time); it was stopped", hint="send a smaller module",
                              limit=timeout)
    ended = _COMPILER.compile(wasm, timeout, max(WALL_FLOOR, WALL_FACTOR * timeout))
    if ended is None:
        raise too_long
    status, output = ended
    if status == -signal.SIGPROF:
        raise too_long
    if status == 2:
        raise InvalidModule(f"not a valid WebAssembly module: {_last_line(output)}",
                            hint="check the module with wasm-validate or rebuild it")
    if status != 0:
        raise InvalidModule(f"the module's compiler stopped with status {status}",
                            hint="send a smaller or simpler module")
    return output


class _Compiler:
    """This process's end of the compiler process (one for every node of the process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None

    def compile(self, wasm: bytes, timeout: float, wall: float) -> tuple[int, bytes] | None:
        """(how the child ended, its output), or None once `wall` seconds passed without its end (it is killed)."""
        try:
            return self._compile_once(wasm, timeout, wall)
        except _NotTaken:  # the compiler process it reached had ended: sent once more, to one started for it
            pass
        try:
            return self._compile_once(wasm, timeout, wall)
        except _NotTaken:
            raise ComputeBusy("the node's compiler process ended twice before it took the module",
                              hint="send the module again") from None

    def _compile_once(self, wasm: bytes, timeout: float, wall: float) -> tuple[int, bytes] | None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with mine:
            try:
                process = self._send(theirs)
            finally:
                theirs.close()
            mine.settimeout(wall)
            pid = None
            try:
                mine.sendall(BUDGET.pack(timeout) + LENGTH.pack(len(wasm)) + wasm)
                pid = PID.unpack(_read(mine, PID.size))[0]
                status, length = ENDED.unpack(_read(mine, ENDED.size))
                return status, _read(mine, length)
            except TimeoutError:
                if pid is not None:
                    _kill(pid)
                return None
            except (EOFError, ConnectionError):
                if pid is not None:  # the compiler process was ended while its child compiled
                    return -1, b""
                # It was ending as the request reached it (a killed process is gone from the process table's
                # view before it closes its sockets): the request is lost with it.
                self._stop_if(process)
                raise _NotTaken() from None

    def _send(self, theirs: socket.socket) -> subprocess.Popen:
        """The compiler process that `theirs` was sent to."""
        with self._lock:
            control = self._started()
            try:
                socket.send_fds(control, [b"c"], [theirs.fileno()])
            except OSError:  # the compiler process has ended: the next compile starts it again
                self._stop()
                raise _NotTaken() from None
            assert self._process is not None
            return self._process

    def _stop_if(self, process: subprocess.Popen) -> None:
        with self._lock:
            if self._process is process:
                self._stop()

    def _started(self) -> socket.socket:
        if self._process is None or self._process.poll() is not None:
            self._stop()
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with theirs:
                self._process = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())],
                                                 pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            child_output.follow(self._process, "compiler process", log)
            self._control = mine
        assert self._control is not None
        return self._control

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()  # the compiler process ends as it reads the close
            self._control = None
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None


class _NotTaken(Exception):
    """The compiler process ended before it took a request."""


_COMPILER = _Compiler()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise EOFError(f"the compiler process ended its answer after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr[-MAX_ERROR_BYTES:].decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "the compiler gave no reason"


# --- the compiler process ---------------------------------------------------------------------------------------

def _serve(control: socket.socket) -> int:
    """Fork a process for each request until the node's end closes; children are reaped by the kernel."""
    import wasmtime  # noqa: F401 -- loaded once here, for every child forked from this process

    from . import engine  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            return 0
        if not message:
            return 0
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            code = 1
            try:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # this one waits for its own child
                code = _answer(socket.socket(fileno=fds[0]))
            finally:
                os._exit(code)
        os.close(fds[0])


def _answer(conn: socket.socket) -> int:
    """One request: the wasm read, compiled in a child, and how that child ended answered with its output."""
    (timeout,) = BUDGET.unpack(_read(conn, BUDGET.size))
    wasm = _read(conn, LENGTH.unpack(_read(conn, LENGTH.size))[0])
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(readable)
            conn.close()
            code = _compile(wasm, timeout, writable)
        finally:
            os._exit(code)
    os.close(writable)
    conn.sendall(PID.pack(pid))
    with os.fdopen(readable, "rb") as output:
        data = output.read()
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    conn.sendall(ENDED.pack(status, len(data)) + data)
    return 0


def _compile(wasm: bytes, timeout: float, out: int) -> int:
    import wasmtime

    from .engine import make_engine

    os.nice(NICENESS)
    # From here on, only the compile's CPU time counts: past the budget, SIGPROF's default action ends the process.
    signal.setitimer(signal.ITIMER_PROF, timeout)
    try:
        module = wasmtime.Module(make_engine(parallel=False), wasm)
    except wasmtime.WasmtimeError as exc:
        _write(out, str(exc).encode()[-MAX_ERROR_BYTES:])
        return 2
    _write(out, bytes(module.serialize()))
    return 0


def _write(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as out:
        out.write(data)


if __name__ == "__main__":
    sys.exit(_serve(socket.socket(fileno=int(sys.argv[1]))))
