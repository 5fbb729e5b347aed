"""One call of one export in a fresh Store: fuel, memory, table and instance limits, a wall-clock deadline.

Everything the hot path needs and can know in advance (the compiled module, the
export's signature, the WASI linking) is in a `Prepared` made once per module;
a call then costs a Store, an instantiation and the call itself.
"""

from __future__ import annotations

import logging
import re
import time
import typing
from dataclasses import dataclass, field

import wasmtime
from wasmtime import TrapCode

from ..units import format_size
from . import engine as eng
from . import limits as lim
from .fastcall import Callable, Store, instance_object
from .limits import Limits
from .modules import PAGE, ModuleInfo
from .out_bound import CANCELLED, NODE_STOPPING, OUTPUT_LIMIT, OUTPUT_UNREADABLE, UNREADABLE_HINT, OutBound, Stopped
from .provenance import METERING_EXACT, METERING_TIME_BOUNDED
from .trap_limits import of_run
from .values import Signature
from .wasi_io import Capture, Streams, fixed_by, fixed_instance_pre

log = logging.getLogger(__name__)

QUICK_INSTANTIATE_SIZE = 1024 * 1024
HELD_FREE_PAGES = 16  # a Store whose memory is at most this many 64 KiB pages is freed without releasing the GIL

_TRAP_KINDS = {
    TrapCode.OUT_OF_FUEL: "out-of-fuel",
    TrapCode.INTERRUPT: "deadline",
    TrapCode.STACK_OVERFLOW: "stack-overflow",
    TrapCode.UNREACHABLE: "unreachable",
    TrapCode.INTEGER_DIVISION_BY_ZERO: "divide-by-zero",
    TrapCode.INTEGER_OVERFLOW: "integer-overflow",
    TrapCode.MEMORY_OUT_OF_BOUNDS: "memory-out-of-bounds",
    TrapCode.TABLE_OUT_OF_BOUNDS: "table-out-of-bounds",
    TrapCode.INDIRECT_CALL_TO_NULL: "indirect-call-to-null",
    TrapCode.BAD_SIGNATURE: "bad-signature",
    TrapCode.BAD_CONVERSION_TO_INTEGER: "bad-conversion-to-integer",
    TrapCode.HEAP_MISALIGNED: "heap-misaligned",
}


@dataclass
class Prepared:
    """A module ready to run: compiled (or loaded from the cache) once, then shared by every call."""

    module_hash: bytes
    module: wasmtime.Module
    info: ModuleInfo
    wasi_pre: wasmtime.InstancePre | None  # imports resolved against WASI, if the module has any
    # A memory the module has but does not export cannot be measured after a call: it is priced at the
    # call's memory limit (its worst case).  Exported, it is priced at its peak size.
    hidden_memory: bool = False
    callables: dict[str, Callable] = field(default_factory=dict)  # per export, made on its first call
    loop_copy: Prepared | None = None  # the module loaded in the engine of the calls tried on the event loop

    @property
    def memory_export(self) -> str | None:
        return next((e.name for e in self.info.exports if e.kind == "memory"), None)

    def inline_ok(self) -> bool:
        """Whether a call of this module may be tried on the event loop (compute/service.py, `_try_inline`):
        small, no start function, no WASI (nothing runs before the export is called)."""
        return not self.info.start and self.info.size <= QUICK_INSTANTIATE_SIZE and self.wasi_pre is None \
            and self.info.status == "active"

    def callable(self, function: str, signature: Signature, fixed_on: wasmtime.Engine | None = None) -> Callable:
        """The export ready to call; `fixed_on`: with WASI's clocks and random fixed (a deterministic job)."""
        if fixed_on is not None and self.wasi_pre is not None:
            key = function + "\0fixed"
            if key not in self.callables:
                self.callables[key] = Callable(self.module, function, signature,
                                               fixed_instance_pre(fixed_on, self.module), memory=self.memory_export)
            return self.callables[key]
        found = self.callables.get(function)
        if found is None:
            # Instantiating a small module without a start function runs no wasm: only bookkeeping
            # and copying its data segments, quick enough to do without releasing the GIL.
            quick = not self.info.start and self.info.size <= QUICK_INSTANTIATE_SIZE
            found = self.callables[function] = Callable(self.module, function, signature, self.wasi_pre,
                                                        quick_instantiate=quick, memory=self.memory_export)
        return found


@dataclass
class Outcome:
    results: list[int | float] | None  # None when the call did not return
    trap_kind: str | None = None
    message: str = ""  # for a trap: what happened, in words
    hint: str | None = None
    fuel_consumed: int = 0
    metering: str = METERING_EXACT
    duration_ns: int = 0  # wall clock, from instantiation to the call's end
    cpu_ns: int = 0  # CPU time of the thread that ran it, over the same span (a loaded machine's wait excluded)
    memory_pages: int = 0  # peak linear memory of the call, in 64 KiB pages (what it is priced by, with its time)
    exit_code: int | None = None  # WASI proc_exit
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_dropped: int = 0  # bytes written past the capture cap (refused, for a job)
    stderr_dropped: int = 0
    stdout_bytes: int = 0  # bytes of stdout kept (in `stdout`, or in the job's stdout file)
    over_cap: str | None = None  # "stdout" or "stderr": a job's stream refused a write for its cap
    stopped: Stopped | None = None  # why a job's outputs cannot be listed, once it ended (out_bound.py): its kind, a clause
    limit: dict[str, typing.Any] | None = None  # the limit that cut it short (limits.named): name, value, raised by


def new_store(engine: wasmtime.Engine, limits: Limits, deadline_ticks: int) -> Store:
    return Store(engine, fuel=limits.fuel, memory=limits.memory, table_elements=lim.TABLE_ELEMENTS,
                 instances=lim.INSTANCES, tables=lim.TABLES, memories=lim.MEMORIES,
                 deadline_ticks=deadline_ticks + eng.owed_ticks(engine))


def run(engine: wasmtime.Engine, prepared: Prepared, function: str, signature: Signature,
        args: list[int | float], limits: Limits, wasi_argv: list[str] | None = None, *,
        deadline_ticks: int | None = None, on_loop: bool = False, streams: Streams | None = None) -> Outcome:
    """Instantiate in a fresh Store and call `function`; a trap is an Outcome, never an exception.
    `deadline_ticks`: epoch ticks allowed (default: what `limits.timeout` allows).  `on_loop`: a small call tried
    on the event loop (compute/service.py), whose thread holds the GIL anyway: it is called without releasing
    the GIL (released, another thread takes it and the loop waits to get it back).  Its time is bounded by its
    small fuel alone then (the epoch ticker, a Python thread, cannot tick while the GIL is held): wasmtime
    charges a bulk memory or table instruction a unit of fuel per byte or element it touches, so no instruction
    takes long for its fuel.  A small memory is freed without releasing the GIL on the loop (unmapping a few pages
    is quicker than handing it over); on a worker it is freed with the GIL released (while other threads run, an
    unmapping waits for each of their CPUs to drop the pages: the loop must not wait for that)."""
    ticks = eng.deadline_ticks(limits.timeout) if deadline_ticks is None else deadline_ticks
    with eng.running(engine):
        store = new_store(engine, limits, ticks)
        outcome = None
        try:
            outcome = _run_in(store, prepared, function, signature, args, limits, wasi_argv, on_loop, streams,
                              engine if streams is not None and streams.seed else None,
                              arm=lambda: store.set_deadline(ticks + eng.owed_ticks(engine)),
                              bounded=lambda bound: _bounded(store, engine, bound, ticks))
            return outcome
        finally:
            # Frees the instance and its memory now, not whenever the garbage collector gets to it.
            store.close(hold_gil=on_loop and outcome is not None
                        and outcome.memory_pages <= HELD_FREE_PAGES)
            if streams is not None:
                streams.release()


def _run_in(store: Store, prepared: Prepared, function: str, signature: Signature, args: list[int | float],
            limits: Limits, wasi_argv: list[str] | None, on_loop: bool = False,
            streams: Streams | None = None, fixed_on: wasmtime.Engine | None = None,
            *, arm: typing.Callable[[], None],
            bounded: typing.Callable[[OutBound], typing.Callable[[], None]] | None = None) -> Outcome:
    out = err = bound = None
    if wasi_argv is not None:
        streams = streams or Streams()
        out = Capture(store, streams.stdout_cap, streams.refuse_over_cap, streams.stdout_sink)
        err = Capture(store, streams.stderr_cap, streams.refuse_over_cap)
        store.set_wasi(streams.config(wasi_argv, out, err))
        if (streams.bytes_out is not None or streams.stop is not None) and bounded is not None:
            bound = OutBound(streams.outputs_dir, streams.bytes_out, out if streams.stdout_sink is not None else None,
                             streams.stop)
            arm = bounded(bound)
        if streams.prepaid_fuel:  # the bytes offered to it (a job's stdin and inputs), paid from its budget
            store.set_fuel(max(0, limits.fuel - streams.prepaid_fuel))
    target = prepared.callable(function, signature, fixed_on)
    # The deadline counts from here, as the call's duration does: what came before (its streams opened, or this
    # thread waiting for a core, or the process stopped) is not taken from the call's time.
    arm()
    start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
    instance = None
    try:
        if fixed_on is not None:  # a deterministic run: its clocks and random come from its seed
            with fixed_by(streams.seed):
                instance = target.instantiate(store)
                results = target.call(store, instance, args)
        else:
            instance = target.instantiate(store)
            results = target.call(store, instance, args, hold_gil=on_loop)
        duration = time.perf_counter_ns() - start
        outcome = Outcome(results, fuel_consumed=limits.fuel - store.fuel(), duration_ns=duration)
    except wasmtime.ExitTrap as exc:
        # proc_exit is a host call, and the fuel count is up to date at host calls: metering is exact.
        duration = time.perf_counter_ns() - start
        code = exc.code
        outcome = Outcome([] if code == 0 else None, fuel_consumed=limits.fuel - store.fuel(),
                          duration_ns=duration, exit_code=code)
        if code != 0:
            outcome.trap_kind, outcome.message = "exit", f"the program exited with status {code}"
    except wasmtime.Trap as exc:
        duration = time.perf_counter_ns() - start
        outcome = _trapped(exc, store, instance, limits, duration)
    except wasmtime.WasmtimeError as exc:  # instantiation refused (a limit, before any code ran), or a job stopped
        duration = time.perf_counter_ns() - start
        stopped = bound.stopped if bound is not None else None
        outcome = _refused(exc, limits, duration) if stopped is None else \
            _trapped(exc, store, instance, limits, duration, stopped)
    outcome.cpu_ns = time.thread_time_ns() - cpu_start
    if bound is not None:
        outcome.stopped = bound.ended()
    if prepared.hidden_memory:
        outcome.memory_pages = limits.memory // PAGE
    elif instance is not None:
        try:
            outcome.memory_pages = target.memory_pages(store, instance)
        except Exception:  # noqa: BLE001 - a store the trap left unreadable: its limit, the worst case
            outcome.memory_pages = limits.memory // PAGE
    if out is not None and err is not None:
        outcome.stdout, outcome.stdout_dropped = bytes(out.data), out.dropped
        outcome.stderr, outcome.stderr_dropped = bytes(err.data), err.dropped
        outcome.stdout_bytes = out.kept
        outcome.over_cap = "stdout" if out.over else "stderr" if err.over else None
    return outcome


def _bounded(store: Store, engine: wasmtime.Engine, bound: OutBound, ticks: int) -> typing.Callable[[], None]:
    """A job's run checked at every tick by `bound`, which keeps its deadline too (the Store has one epoch
    deadline): how to arm it, as the deadline alone is armed otherwise."""
    def check() -> str | None:
        stopped = bound.check()
        return None if stopped is None else f"{stopped.kind}: {stopped.why}"

    def arm() -> None:
        store.on_epoch(check)
        bound.start((ticks - 1) * eng.TICK)  # what deadline_ticks allows: never less than the timeout
        store.set_deadline(1 + eng.owed_ticks(engine))

    return arm


def _trapped(exc: wasmtime.Trap | wasmtime.WasmtimeError, store: Store, instance, limits: Limits,
             duration_ns: int, stopped: Stopped | None = None) -> Outcome:
    # wasmtime under-reports fuel after some traps (an interrupt in a call-free loop, a fault, a divide by
    # zero) and after a job's check stopped it: such a call is charged what it could have used in the time it
    # ran (at most its budget), or what was metered if that is more.  Out of fuel is exact: the whole budget
    # was used.
    if stopped is not None:
        kind = stopped.kind
    else:
        code = exc.trap_code
        kind = _TRAP_KINDS.get(code, code.name.lower().replace("_", "-") if code is not None else "trap")
    try:
        metered = limits.fuel - store.fuel()
    except Exception:  # noqa: BLE001 - a store the trap left unreadable: the time bound alone
        metered = 0
    if kind == "out-of-fuel":
        outcome = Outcome(None, fuel_consumed=limits.fuel, duration_ns=duration_ns)
    else:
        outcome = Outcome(None, fuel_consumed=max(metered, lim.fuel_bound(duration_ns, limits.fuel)),
                          metering=METERING_TIME_BOUNDED, duration_ns=duration_ns)
    if kind == "out-of-fuel":
        outcome.message = f"out of fuel: it used all {limits.fuel:,} units of its fuel limit"
        outcome.hint = "ask for more with --fuel, up to the node's compute.fuel"
    elif kind == "deadline":
        outcome.message = (f"deadline exceeded: it ran for {duration_ns / 1e9:.2f} s, "
                           f"past its wall-clock limit of {limits.timeout:g} s")
        outcome.hint = "ask for more time with --timeout, up to the node's compute.timeout; or look for an endless loop"
    elif kind == NODE_STOPPING:
        outcome.message, outcome.hint = f"stopped while it ran: {stopped.why}", "run it again"
    elif kind == CANCELLED:
        outcome.message, outcome.hint = f"cancelled while it ran: {stopped.why}", "run it again"
    elif kind == OUTPUT_LIMIT:
        outcome.message = f"stopped while it ran: {stopped.why}"
        outcome.hint = "ask for more with --bytes-out, or write less" if stopped.why.startswith("its outputs") \
            else "make fewer files and directories in /out"
    elif kind == OUTPUT_UNREADABLE:
        outcome.message, outcome.hint = f"stopped while it ran: {stopped.why}", UNREADABLE_HINT
    elif kind == "stack-overflow":
        outcome.message = (f"stack overflow: the calls nested deeper than the "
                           f"{format_size(eng.SETTINGS['max_wasm_stack'])} wasm stack allows")
        outcome.hint = "look for unbounded recursion"
    else:
        used, initial = _memory_in_use(store, instance)
        at_limit = used is not None and used + PAGE > limits.memory
        if at_limit and initial is not None and used > initial:
            # The module grew its memory up to the ceiling (memory.grow then returned -1) and gave up with a trap.
            kind = "memory-limit"
            outcome.message = (f"memory limit reached: the module grew its memory to {format_size(used)} of its "
                               f"{format_size(limits.memory)} limit, was refused more, "
                               f"then trapped ({wasmtime_cause(exc)})")
            outcome.hint = "ask for more with --memory, up to the node's compute.memory"
        elif kind == "unreachable":
            outcome.message = "the module trapped: it reached an `unreachable` instruction (wasm's abort)"
        elif kind == "divide-by-zero":
            outcome.message = "the module trapped: integer divide by zero"
        else:
            outcome.message = f"the module trapped: {wasmtime_cause(exc)}"
        if at_limit and kind != "memory-limit":
            # It never grew its memory, which is all its limit allows: if it tried to, it was refused.
            outcome.hint = (f"its memory ({format_size(used)}) is all its {format_size(limits.memory)} limit allows: "
                            f"if it grows memory, ask for more with --memory")
    outcome.trap_kind, outcome.limit = kind, of_run(kind, limits)
    return outcome


def _refused(exc: wasmtime.WasmtimeError, limits: Limits, duration_ns: int) -> Outcome:
    cause = wasmtime_cause(exc)
    # Refused at instantiation, before any of the module's code ran: it is charged the time it took, bounded.
    outcome = Outcome(None, fuel_consumed=lim.fuel_bound(duration_ns, limits.fuel), metering=METERING_TIME_BOUNDED,
                      duration_ns=duration_ns)
    if "memory" in cause and "exceeds" in cause:
        pages = next((int(w) for w in cause.split() if w.isdigit()), None)
        need = f"{format_size(pages * PAGE)} ({pages} pages)" if pages is not None else "more"
        outcome.trap_kind = "memory-limit"
        outcome.message = (f"memory limit: the module needs {need} of initial memory, "
                           f"over its limit of {format_size(limits.memory)}")
        outcome.hint = "ask for more with --memory, up to the node's compute.memory"
        outcome.limit = of_run("memory-limit", limits)
    elif "table" in cause and "exceeds" in cause:
        outcome.trap_kind = "table-limit"
        outcome.message = f"table limit: {cause} (at most {lim.TABLE_ELEMENTS} elements per call)"
    else:
        outcome.trap_kind = "instantiation"
        outcome.message = f"the module could not be instantiated: {cause}"
    return outcome


def _memory_in_use(store: Store, instance) -> tuple[int | None, int | None]:
    """Bytes of the instance's exported memories now, and at instantiation (their declared minimum)."""
    if instance is None:
        return None, None
    exports = instance_object(instance).exports(store)
    memories = [item for item in exports.values() if isinstance(item, wasmtime.Memory)]
    if not memories:
        return None, None
    return sum(m.data_len(store) for m in memories), sum(m.type(store).limits.min * PAGE for m in memories)


class LoopEngine:
    """The engine of the calls a node tries on its event loop (small invokes, web requests), one at a time: of the
    node's engine's settings, its instances made in slots kept mapped (engine.make_engine(pooled=True)), so that a
    fresh instance maps, protects and unmaps no memory.  Each module is loaded in it once, at its first try, and
    kept with the module (`Prepared.loop_copy`); one it does not load is tried in the node's engine.  Where the
    process's address space has no room for the slots beside an instance for each of `others` threads, the node's
    engine itself, said once in the log."""

    def __init__(self, node_engine: wasmtime.Engine, others: int) -> None:
        refused = eng.pool_refused(beside=others * eng.INSTANCE_ADDRESS_SPACE)
        if refused is not None:
            log.warning("the calls tried on the event loop run in the node's engine: %s", refused)
        self._node_engine = node_engine
        self.engine = eng.make_engine(pooled=True) if refused is None else node_engine

    @property
    def engines(self) -> tuple[wasmtime.Engine, ...]:
        """The node's engine and, if it is another, this one: each ticked (engine.EpochTicker)."""
        return (self._node_engine,) if self.engine is self._node_engine else (self._node_engine, self.engine)

    def prepared(self, prepared: Prepared) -> Prepared:
        """`prepared` loaded in this engine (on the loop's thread: nothing else loads it).  A module this engine does
        not load is `prepared` itself, run in the node's engine (`run`), and the log says so once."""
        if self.engine is self._node_engine:
            return prepared
        if prepared.loop_copy is None:
            try:
                module = wasmtime.Module.deserialize(self.engine, prepared.module.serialize())
                pre = None
                if prepared.wasi_pre is not None:  # linked in the node's engine already: the same imports link here
                    linker = wasmtime.Linker(self.engine)
                    linker.define_wasi()
                    pre = linker.instantiate_pre(module)
            except wasmtime.WasmtimeError as exc:
                log.warning("module %s does not load in the engine of the calls tried on the event loop (%s): its "
                            "tries there run in the node's engine", prepared.module_hash.hex(), wasmtime_cause(exc))
                prepared.loop_copy = prepared
            else:
                prepared.loop_copy = Prepared(prepared.module_hash, module, prepared.info, pre, prepared.hidden_memory)
        return prepared.loop_copy

    def run(self, prepared: Prepared, function: str, signature: Signature, args: list[int | float],
            limits: Limits, wasi_argv: list[str] | None = None, **options: typing.Any) -> Outcome:
        """`run` in this engine, or in the node's for a module this one does not load (`prepared`)."""
        loaded = self.prepared(prepared)
        engine = self._node_engine if loaded is prepared else self.engine
        return run(engine, loaded, function, signature, args, limits, wasi_argv, **options)


def wasmtime_cause(exc: Exception) -> str:
    """wasmtime's own words for what went wrong: the last line of its message, without the backtrace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = lines[-1] if lines else type(exc).__name__
    return re.sub(r"^\d+:\s*", "", cause).removeprefix("wasm trap: ")
