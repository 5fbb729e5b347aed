"""A web runner: a child process of the node that runs the tries of small web requests, so that they take a core
of their own while the node's event loop does everything else about them (compute/web_runners.py).

Run as `python -m xsc.compute.web_runner FD PARENT`: FD is its end of a socket pair with the node (runner_wire.py
says what goes over it), PARENT the node's process id.  It dies with the node: the kernel kills it when its
parent goes (PR_SET_PDEATHSIG, checked against PARENT in case the node went before it was set), and it ends at
the end of its socket.  It has an engine of the node's settings (its READY frame names their fingerprint; pooled:
instances are made in slots kept mapped, engine.make_engine; unpooled, with a line on stderr saying why, where the
process's address space has no room for the slots, engine.pool_refused), loads
the compiled artifacts the node sends it (a few, by module hash: one it dropped is answered UNKNOWN and sent
again), and runs each try as the node would on its loop (compute/web_trial.py): a fresh Store, the trial's fuel
and ticks, memfds for stdin, stdout and stderr.  It reads what is waiting on its socket at once, runs the tries
in order and answers each as it ends.  A frame longer than a node sends, or not what its kind says, ends it
(status 3): its parent is trusted, and still every length is checked before anything is allocated for it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from collections import OrderedDict

import wasmtime

from .. import codec
from . import engine as eng
from . import runner_wire as wire
from . import sandbox
from .limits import Limits
from .modules import ModuleInfo
from .wasi_io import Streams
from .web_trial import Memfds

PR_SET_PDEATHSIG = 1
RECEIVE = 256 * 1024
MODULES = 32  # compiled modules kept loaded
BROKEN = 3  # exit status: a frame it cannot take


class Runner:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        refused = eng.pool_refused()
        if refused is not None:  # each instance then maps its memory for its call: slower, but it serves
            print(f"an unpooled engine: {refused}", file=sys.stderr)
        self.engine = eng.make_engine(parallel=False, pooled=refused is None)
        self.ticker = eng.EpochTicker(self.engine)
        self.modules: OrderedDict[bytes, sandbox.Prepared] = OrderedDict()
        self.memfds = Memfds()

    def serve(self) -> int:
        self.ticker.start()
        self.sock.sendall(wire.frame(wire.READY, 0, eng.fingerprint()))
        buffer = bytearray()
        while True:
            chunk = self.sock.recv(RECEIVE)
            if not chunk:
                return 0  # the node closed its end, or is gone
            buffer += chunk
            at = 0
            try:
                while (found := wire.head(memoryview(buffer)[at:], wire.MAX_MODULE_FRAME)) is not None:
                    length, kind, request = found
                    if kind != wire.MODULE and length - 4 > wire.MAX_RUN_FRAME:
                        raise wire.WireError(f"a frame of {length - 4:,} bytes, over the {wire.MAX_RUN_FRAME:,} "
                                             f"a run takes")
                    if len(buffer) - at < length:
                        break
                    self._take(kind, request, memoryview(buffer)[at + wire.HEAD.size:at + length])
                    at += length
            except wire.WireError as exc:
                print(f"a frame from the node refused: {exc}", file=sys.stderr)
                return BROKEN
            del buffer[:at]

    def _take(self, kind: int, request: int, body: memoryview) -> None:
        if kind == wire.MODULE:
            self._load(*wire.read_module(body))
        elif kind == wire.RUN:
            self.sock.sendall(self._run(request, wire.read_run(body)))
        else:
            raise wire.WireError(f"a frame of kind {kind}, which a node does not send")

    def _load(self, module_hash: bytes, hidden_memory: bool, info_json: bytes, artifact: bytes) -> None:
        try:
            info = ModuleInfo.from_json(codec.loads(info_json))
            module = wasmtime.Module.deserialize(self.engine, artifact)
            linker = wasmtime.Linker(self.engine)
            linker.define_wasi()
            pre = linker.instantiate_pre(module) if info.imports else None
        except Exception as exc:  # noqa: BLE001 - a module that does not load here is answered UNKNOWN
            print(f"module {module_hash.hex()} does not load: {exc}", file=sys.stderr)
            return
        self.modules[module_hash] = sandbox.Prepared(module_hash, module, info, pre, hidden_memory)
        while len(self.modules) > MODULES:
            self.modules.popitem(last=False)

    def _run(self, request: int, run: wire.RunFrame) -> bytes:
        prepared = self.modules.get(run.module_hash)
        export = prepared.info.export(run.entrypoint) if prepared is not None else None
        if prepared is None or export is None or export.signature is None:
            return wire.frame(wire.UNKNOWN, request, b"")
        self.modules.move_to_end(run.module_hash)
        streams = Streams(refuse_over_cap=True, env=dict(run.env), prepaid_fuel=run.prepaid)
        tried = self.memfds.run(self._execute, prepared, run.entrypoint, export.signature, run.argv,
                                Limits(run.fuel, run.memory, run.timeout), run.ticks, streams, run.stdin)
        outcome = tried.outcome
        if not tried.kept:
            return wire.frame(wire.TOSSED, request, wire.tossed_body(outcome.trap_kind or "", outcome.cpu_ns))
        return wire.frame(wire.KEPT, request, wire.kept_body(wire.KeptFrame(
            outcome.fuel_consumed, outcome.duration_ns, outcome.cpu_ns, outcome.memory_pages, outcome.exit_code,
            list(outcome.results or []), tried.stdout, tried.stderr)))

    def _execute(self, prepared, entrypoint, signature, argv, limits, streams, deadline_ticks) -> sandbox.Outcome:
        return sandbox.run(self.engine, prepared, entrypoint, signature, [], limits, argv, streams=streams,
                           deadline_ticks=deadline_ticks)


def _die_with(parent: int) -> None:
    """Killed when the node goes (a kill -9 of it included); gone at once if it went already."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def main(argv: list[str]) -> int:
    fd, parent = int(argv[1]), int(argv[2])
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C at the node's terminal is the node's to handle
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    try:
        return Runner(sock).serve()
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the node is gone


if __name__ == "__main__":
    sys.exit(main(sys.argv))
