"""What the node and its web runners (compute/web_runner.py) say to each other over their socket.

Every frame is its length (4 bytes: of what follows them), its kind (1 byte), a request id (4 bytes), then fields: fixed-size numbers
first, then byte strings each led by its length.  A reader checks a frame's length against the most its kind of
peer may send before it allocates the frame (the runner trusts its parent, and still bounds what it reads), and a
frame whose fields run past its end is refused whole.

    node -> runner   MODULE  a module's compiled artifact and description, before the first run of it
                     RUN     a request's try: module, entrypoint, argv, environment, stdin and trial limits
    runner -> node   READY   its engine's fingerprint (an artifact loads only under the same settings)
                     KEPT    the try ended within its trial: outcome, stdout, stderr
                     TOSSED  it did not: how it ended (the node judges whether its export is slow)
                     UNKNOWN the module is not loaded there (sent again with the next run of it)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MODULE, RUN, READY, KEPT, TOSSED, UNKNOWN = 1, 2, 3, 4, 5, 6
HEAD = struct.Struct("<IBI")  # the length of what follows the length, the kind, the request id
_RUN = struct.Struct("<32sQQdIQ")  # module hash, fuel, memory, timeout, ticks, prepaid fuel
_MODULE = struct.Struct("<32sB")  # module hash, hidden memory
_KEPT = struct.Struct("<QQQIqB")  # fuel consumed, duration ns, cpu ns, memory pages, exit code, has exit code
_TOSSED = struct.Struct("<Q")  # cpu ns
_LEN = struct.Struct("<I")
_VALUE = struct.Struct("<cq")  # a result: its kind (i, or f for a float's bits) and its 8 bytes

MAX_RUN_FRAME = 4 << 20  # a run's environment and stdin are bounded far below this by the node's listener
MAX_MODULE_FRAME = 256 << 20  # a compiled artifact of a module of at most 1 MiB
MAX_ANSWER_FRAME = (1 << 20) + (64 << 10) + 4096  # an answer kept from a try (stdout, stderr's cap + 1, numbers)
MAX_RESULTS = 64


class WireError(ValueError):
    """A frame that is not what its kind says, or longer than its reader takes."""


@dataclass
class RunFrame:
    module_hash: bytes
    fuel: int
    memory: int
    timeout: float
    ticks: int
    prepaid: int
    entrypoint: str
    argv: list[str]
    env: list[tuple[str, str]]
    stdin: bytes


@dataclass
class KeptFrame:
    fuel_consumed: int
    duration_ns: int
    cpu_ns: int
    memory_pages: int
    exit_code: int | None
    results: list[int | float]
    stdout: bytes
    stderr: bytes


def frame(kind: int, request: int, body: bytes) -> bytes:
    return HEAD.pack(len(body) + HEAD.size - 4, kind, request) + body


def head(data: bytes | bytearray | memoryview, limit: int) -> tuple[int, int, int] | None:
    """(frame length in all, kind, request id) of the frame at the start of `data`, None if its head is not all
    there yet; WireError if it is longer than `limit`."""
    if len(data) < HEAD.size:
        return None
    length, kind, request = HEAD.unpack_from(data)
    if length > limit or length < HEAD.size - 4:
        raise WireError(f"a frame of {length:,} bytes, over the {limit:,} this end takes")
    return length + 4, kind, request


def _strings(*items: bytes) -> list[bytes]:
    out = []
    for item in items:
        out += (_LEN.pack(len(item)), item)
    return out


def run_body(run: RunFrame) -> bytes | None:
    """The RUN frame's body; None if an argv or environment item holds a NUL (the try is not sent: see below)."""
    # argv and the environment each as one string of NUL-separated items, an environment item NAME=VALUE (a
    # name holds no '='); an item that holds a NUL itself (a C string would end there) is not sent
    argv = "\0".join(run.argv).encode()
    env = "\0".join([f"{name}={value}" for name, value in run.env]).encode()
    if argv.count(b"\0") != max(0, len(run.argv) - 1) or env.count(b"\0") != max(0, len(run.env) - 1):
        return None
    return b"".join([_RUN.pack(run.module_hash, run.fuel, run.memory, run.timeout, run.ticks, run.prepaid),
                     *_strings(run.entrypoint.encode(), argv, env, run.stdin)])


def module_body(module_hash: bytes, hidden_memory: bool, info: bytes, artifact: bytes) -> bytes:
    return b"".join([_MODULE.pack(module_hash, hidden_memory), *_strings(info, artifact)])


def kept_body(kept: KeptFrame) -> bytes:
    exit_code = kept.exit_code if kept.exit_code is not None else 0
    results = [_VALUE.pack(b"f", struct.unpack("<q", struct.pack("<d", v))[0]) if isinstance(v, float)
               else _VALUE.pack(b"i", v) for v in kept.results]
    return b"".join([_KEPT.pack(kept.fuel_consumed, kept.duration_ns, kept.cpu_ns, kept.memory_pages, exit_code,
                                kept.exit_code is not None), _LEN.pack(len(results)), *results,
                     *_strings(kept.stdout, kept.stderr)])


def tossed_body(trap_kind: str, cpu_ns: int) -> bytes:
    return b"".join([_TOSSED.pack(cpu_ns), *_strings(trap_kind.encode())])


class Reader:
    """Fields read in order from one frame's body; WireError past its end."""

    def __init__(self, body: bytes | memoryview) -> None:
        self.body = memoryview(body)
        self.at = 0

    def fixed(self, layout: struct.Struct) -> tuple:
        if self.at + layout.size > len(self.body):
            raise WireError("a frame ends inside its numbers")
        values = layout.unpack_from(self.body, self.at)
        self.at += layout.size
        return values

    def bytes(self) -> bytes:
        (length,) = self.fixed(_LEN)
        if self.at + length > len(self.body):
            raise WireError("a frame ends inside one of its strings")
        value = bytes(self.body[self.at:self.at + length])
        self.at += length
        return value

    def text(self) -> str:
        try:
            return self.bytes().decode()
        except UnicodeDecodeError:
            raise WireError("a frame's text is not UTF-8") from None

    def count(self, most: int) -> int:
        (n,) = self.fixed(_LEN)
        if n > most:
            raise WireError(f"a frame lists {n:,} items, over {most:,}")
        return n


def read_run(body: bytes | memoryview) -> RunFrame:
    r = Reader(body)
    module_hash, fuel, memory, timeout, ticks, prepaid = r.fixed(_RUN)
    entrypoint, argv, env = r.text(), r.text(), r.text()
    items = [item.partition("=") for item in env.split("\0")] if env else []
    if any(not equals for _, equals, _ in items):
        raise WireError("an environment item without '='")
    return RunFrame(module_hash, fuel, memory, timeout, ticks, prepaid, entrypoint,
                    argv.split("\0") if argv else [],
                    [(name, value) for name, _, value in items], r.bytes())


def read_module(body: bytes | memoryview) -> tuple[bytes, bool, bytes, bytes]:
    r = Reader(body)
    module_hash, hidden = r.fixed(_MODULE)
    return module_hash, bool(hidden), r.bytes(), r.bytes()


def read_kept(body: bytes | memoryview) -> KeptFrame:
    r = Reader(body)
    fuel, duration, cpu, pages, exit_code, has_exit = r.fixed(_KEPT)
    results: list[int | float] = []
    for _ in range(r.count(MAX_RESULTS)):
        kind, bits = r.fixed(_VALUE)
        results.append(struct.unpack("<d", struct.pack("<q", bits))[0] if kind == b"f" else bits)
    return KeptFrame(fuel, duration, cpu, pages, exit_code if has_exit else None, results, r.bytes(), r.bytes())


def read_tossed(body: bytes | memoryview) -> tuple[str, int]:
    r = Reader(body)
    (cpu_ns,) = r.fixed(_TOSSED)
    return r.text(), cpu_ns


__all__ = ["KEPT", "MAX_ANSWER_FRAME", "MAX_MODULE_FRAME", "MAX_RUN_FRAME", "MODULE", "READY", "RUN", "TOSSED",
           "UNKNOWN", "KeptFrame", "RunFrame", "WireError", "frame", "head"]
