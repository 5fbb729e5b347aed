"""The node's one wasmtime Engine, its settings fingerprint, and the epoch ticker that enforces wall-clock limits."""

from __future__ import annotations

import contextlib
import hashlib
import math
import mmap
import resource
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version

import wasmtime
from wasmtime import _ffi as ffi

from .. import codec
from . import limits as lim

WASMTIME_VERSION = version("wasmtime")

# Everything that changes the machine code wasmtime emits goes here: the fingerprint
# of these settings (with the wasmtime version) keys the compiled-artifact cache.
SETTINGS = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "cranelift_nan_canonicalization": True,  # the same NaN bits on every node
    "max_wasm_stack": 1024 * 1024,  # well under the 8 MiB native stack of a pool thread
    "cranelift_opt_level": "speed",
    "wasm_threads": False,  # no shared memory: a Store stays single-threaded
    "wasm_relaxed_simd_deterministic": True,
    # Only what the sandbox meters: no GC heap (its objects live outside the per-call memory limit;
    # without it externref is refused too, and no host ever hands a module a reference), no GC types,
    # typed function references, exceptions, stack switching or custom page sizes.  v128 (SIMD) stays:
    # modules may compute with it inside, and shape.py describes exports that use it without wasmtime.
    "gc_support": False,
    "wasm_gc": False,
    "wasm_function_references": False,
    "wasm_exceptions": False,
    "wasm_stack_switching": False,
    "wasm_custom_page_sizes": False,
    "wasm_simd": True,
}

# The ticker's period: wall-clock limits are enforced to within one tick.
TICK = 0.01
IDLE_AFTER = 1.0  # seconds without a call after which the ticker sleeps until the next one


# A pooled engine's slots (make_engine(pooled=True)): for calls run one at a time, a few to spare.
POOL_SLOTS = 4
POOL_MEMORY = 4 << 30  # the most a slot's memory may grow to: all a 32-bit memory can address
INSTANCE_ADDRESS_SPACE = POOL_MEMORY + (64 << 20)  # an instance's memory and its guard pages, reserved up front
POOL_KEEP_RESIDENT = 256 * 1024  # bytes of a slot's memory and tables zeroed in place, not given back, after a call
# The address space a pooled engine is made only if it finds free: its slots' memories, each with its guard pages
# (wasmtime reserves them all up front, and aborts the process if it cannot), and a GiB for everything else.
POOL_ADDRESS_SPACE = POOL_SLOTS * INSTANCE_ADDRESS_SPACE + (1 << 30)


def make_engine(*, parallel: bool = True, pooled: bool = False) -> wasmtime.Engine:
    """`parallel`: compile a module's functions on every core (it changes no machine code, so no artifact).
    `pooled`: instances are made in a few slots kept mapped (wasmtime's pooling allocator), for small calls run one
    after the other (a web runner's; the calls a node tries on its event loop): a fresh instance's memory is not
    mapped, protected and unmapped for each call, and its first POOL_KEEP_RESIDENT bytes are zeroed in place rather
    than faulted in again (in a bare loop of a runner's try of a small function, some 40 us a try less).  Nor does it
    change any machine code: an artifact compiled by an engine of the same SETTINGS loads in it.  A call that finds
    no slot free, or needs more than a slot holds, fails to instantiate."""
    config = wasmtime.Config()
    for name, value in SETTINGS.items():
        setattr(config, name, value)
    config.parallel_compilation = parallel
    if pooled:
        _pool(config)
    return wasmtime.Engine(config)


def pool_refused(beside: int = 0) -> str | None:
    """Why a pooled engine would not fit in this process's address space (None: it would).  wasmtime's C API
    panics, and so aborts the process, when it cannot reserve the pool's mapping (as under `ulimit -v`), so the
    room is tried first: POOL_ADDRESS_SPACE reserved, inaccessible, and given back at once, with `beside` bytes
    more that must stay free for the process's other instances."""
    try:
        # PROT_NONE: an inaccessible private mapping is not counted against the memory the kernel may commit
        room = mmap.mmap(-1, POOL_ADDRESS_SPACE + beside, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=0)
    except OSError as exc:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        under = "" if limit == resource.RLIM_INFINITY else f" under its limit of {limit / (1 << 30):.1f} GiB (ulimit -v)"
        return (f"the {(POOL_ADDRESS_SPACE + beside) / (1 << 30):.1f} GiB of address space its slots reserve"
                f"{' with its other instances' if beside else ''} are not free in "
                f"this process{under}: {exc.strerror or exc}")
    room.close()
    return None


def _pool(config: wasmtime.Config) -> None:
    """The pooling allocator set on `config` (wasmtime-py has no class for it: the C API's calls)."""
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        for setting, value in (("total_memories", POOL_SLOTS), ("total_tables", POOL_SLOTS),
                               ("total_core_instances", POOL_SLOTS), ("total_stacks", POOL_SLOTS),
                               ("max_memories_per_module", lim.MEMORIES), ("max_tables_per_module", lim.TABLES),
                               ("table_elements", lim.TABLE_ELEMENTS), ("max_memory_size", POOL_MEMORY),
                               ("linear_memory_keep_resident", POOL_KEEP_RESIDENT),
                               ("table_keep_resident", POOL_KEEP_RESIDENT)):
            getattr(ffi, f"wasmtime_pooling_allocation_config_{setting}_set")(pool, value)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)


def fingerprint() -> bytes:
    """32 bytes naming the wasmtime version and engine settings that compiled an artifact."""
    text = codec.text({"wasmtime": WASMTIME_VERSION, **SETTINGS}, sort_keys=True)
    return hashlib.sha256(text.encode()).digest()


def deadline_ticks(timeout: float) -> int:
    """Epoch ticks to allow a call: one more than the timeout rounds up to, so a call
    is never cut short, and stops at most one tick late."""
    return max(1, math.ceil(timeout / TICK)) + 1


_TICKERS: dict[int, "EpochTicker"] = {}  # by id(engine): the running ticker of each engine


def running(engine: wasmtime.Engine) -> contextlib.AbstractContextManager:
    """Around a call on `engine`: its ticker is awake meanwhile (see EpochTicker)."""
    ticker = _TICKERS.get(id(engine))
    return ticker.running() if ticker is not None else contextlib.nullcontext()


def owed_ticks(engine: wasmtime.Engine) -> int:
    """What the engine's ticker owes the clock now (see EpochTicker)."""
    ticker = _TICKERS.get(id(engine))
    return ticker.owed() if ticker is not None else 0


class EpochTicker:
    """One thread that keeps its engines' epoch at the number of TICKs elapsed since it started (a node's compute
    has two engines, the second pooled for the calls tried on its event loop: ComputeService).

    Each Store's deadline is a number of ticks after the epoch at its start, so a
    module spinning in a loop with plenty of fuel still traps once its time is up.
    The epoch follows the clock, not the ticker's wake-ups: on a loaded machine a wake-up
    comes late (each 10 ms wait may take 30), and a ticker that added one per wake-up let a
    0.5 s call run 1.5 s; a late wake-up now adds every tick that has passed.

    A late ticker owes ticks until it wakes: a call that starts then would have its deadline counted from
    an epoch behind the clock and be cut short when the ticker catches up, so `new_store` adds what the
    ticker owes (`owed_ticks`) to every deadline.

    Ticks matter only to calls under way (`running`): IDLE_AFTER seconds after the last one ended the ticker
    sleeps, so an idle node is not woken a hundred times a second.  The epoch stands still meanwhile, and the
    call that wakes it moves the ticker's start on by the time it slept: there was no Store to count from an
    epoch taken before, and that call owes nothing."""

    MAX_CATCH_UP = 100_000  # ticks added in one wake-up at most (17 minutes of a stopped process)

    def __init__(self, engine: wasmtime.Engine, *more: wasmtime.Engine, tick: float = TICK,
                 clock=time.monotonic) -> None:
        self._engines = (engine, *more)
        self._tick = tick
        self._clock = clock
        self._start = clock()  # the epoch counts the ticks since then, from ...
        self._start_epoch = 0  # ... this one (moved on when the ticker wakes from a sleep)
        self.epoch = 0  # ticks added so far (behind the engine's own count while a catch-up runs: never ahead)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the calls under way, and whether the ticker sleeps
        self._calls = 0
        self._last_end = clock()
        self._awake = threading.Event()
        self._awake.set()
        self.sleeping = threading.Event()  # set while it sleeps (status, tests)
        self._thread = threading.Thread(target=self._run, name="xsc-epoch", daemon=True)

    def start(self) -> None:
        for engine in self._engines:
            _TICKERS[id(engine)] = self
        self._thread.start()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Around a call, from before its Store is made until it is freed: the ticker is awake meanwhile."""
        with self._lock:
            self._calls += 1
            if not self._awake.is_set():
                self._start, self._start_epoch = self._clock(), self.epoch
                self.sleeping.clear()
                self._awake.set()
        try:
            yield
        finally:
            with self._lock:
                self._calls -= 1
                self._last_end = self._clock()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:  # (a stop sets its flags under it: one that came meanwhile is not slept through)
                if not self._calls and self._clock() - self._last_end >= IDLE_AFTER and not self._stop.is_set():
                    self._awake.clear()
                    self.sleeping.set()
            if not self._awake.is_set():
                self._awake.wait()  # until a call starts, or the ticker stops
                continue
            added = max(0, min(self._due() - self.epoch, self.MAX_CATCH_UP))
            for _ in range(added):
                for engine in self._engines:
                    engine.increment_epoch()
            self.epoch += added

    def _due(self) -> int:
        return self._start_epoch + int((self._clock() - self._start) / self._tick)

    def owed(self) -> int:
        """Ticks the clock has passed that the ticker has not added yet (0 when it is on time)."""
        return max(0, self._due() - self.epoch)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        for engine in self._engines:
            if _TICKERS.get(id(engine)) is self:
                del _TICKERS[id(engine)]
        with self._lock:
            self._stop.set()
            self._awake.set()
        if self._thread.is_alive():
            self._thread.join()
