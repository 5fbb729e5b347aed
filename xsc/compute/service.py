"""The node's compute service: its engines (one pooled for the calls tried on the event loop), one epoch ticker,
one thread pool, and its module registry (`registry`: registry.py, which deploys, compiles and keeps the modules).

Invoke runs one export in a fresh Store on the pool (or, a small call, tried on the event loop) and leaves a
signed provenance record.  Calls run off the event loop: wasmtime releases the GIL while wasm runs, so calls on
different threads run in parallel and the node keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..config import ComputeSection
from ..db import Database, Rows
from ..errors import ComputeBusy, ModuleDisabled, ExportNotFound, InvalidArgument, NotAFunction, \
    Trap, UnsupportedSignature, WrongArgumentCount
from ..units import plural_for
from ..identity import Identity
from ..tasks import Workers
from . import artifacts, provenance
from . import engine as eng
from . import modules as mods
from . import sandbox
from ..ledger import price_budget, price_compute
from ..ledger.core.model import format_credits
from .journal import Journal
from .limits import Limits, resolve
from .modules import ModuleInfo
from .provenance_records import ProvenanceRecords
from .registry import ModuleRegistry
from .store import ComputeStore
from .trap_limits import hint_here
from .values import Signature, parse_args, typed

log = logging.getLogger(__name__)

# A small call is tried on the event loop itself, without a thread-pool round trip, within this much fuel and
# these epoch ticks (about 50 us of wasm; a bulk instruction costs a unit of fuel per byte: at most ~100 KB).
INLINE_FUEL = 100_000
INLINE_TICKS = 2
INLINE_PREEMPTED = 3  # inline tries in a row kept from the CPU until their deadline before an export counts as slow


@dataclass(frozen=True)
class InvokeCall:
    module: str  # module id (hex SHA-256)
    function: str
    args: list[Any] = field(default_factory=list)  # text or JSON numbers, parsed by the export's signature
    fuel: Any = None
    memory: Any = None
    timeout: Any = None
    wasi: bool = False

    @functools.cached_property
    def module_hash(self) -> bytes:
        return bytes.fromhex(self.module)


INVOKE_FIELDS = frozenset({"module", "function", "args", "fuel", "memory", "timeout", "wasi"})


def parse_invoke(body: Any) -> InvokeCall:
    """The JSON body of POST /v1/compute/invoke, checked."""
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object",
                              hint='send {"module": ID, "function": NAME, "args": [...]}')
    if not INVOKE_FIELDS.issuperset(body):
        unknown = set(body) - INVOKE_FIELDS
        raise InvalidArgument(f"unknown {plural_for(len(unknown), 'field')} in the request: "
                              f"{', '.join(sorted(unknown))}",
                              hint="fields: module, function, args, fuel, memory, timeout, wasi")
    module, function, args = body.get("module"), body.get("function"), body.get("args", [])
    if not isinstance(module, str):
        raise InvalidArgument("the request needs a module id (field 'module')",
                              hint="deploy the module first: POST /v1/modules")
    mods.parse_module_id(module)
    if not isinstance(function, str):  # (an empty one is refused naming the module's functions: `_signature`)
        raise InvalidArgument("the request needs a function name (field 'function')")
    if not isinstance(args, list):
        raise InvalidArgument("args must be a list of numbers or strings")
    wasi = body.get("wasi", False)
    if not isinstance(wasi, bool):
        raise InvalidArgument("wasi must be true or false")
    return InvokeCall(module.strip().lower(), function, args, body.get("fuel"), body.get("memory"),
                      body.get("timeout"), wasi)


@dataclass
class Run:
    """A finished run (returned or trapped): its outcome, cost and signed record."""

    provenance_id: str
    module: str
    function: str
    result_types: tuple[str, ...]
    outcome: sandbox.Outcome
    limits: Limits
    charge: int  # micro-credits this run costs (the deal's price is a rate per million fuel)
    requester: str
    wasi: bool
    rate: int = 0  # the deal's price: micro-credits per million fuel
    memory_price: int = 0  # micro-credits per 64 KiB page-second

    @functools.cached_property  # a run's outcome and limits do not change once it ran
    def billed_us(self) -> int:
        """The time the call's memory is priced for: its wall time, at most its timeout (a deadline stops a
        call up to one epoch tick late: that tick is not the caller's)."""
        return min(self.outcome.duration_ns // 1000, round(self.limits.timeout * 1e6))

    @functools.cached_property
    def cost(self) -> dict[str, int]:
        """How the price was made (ledger/pricing.price_compute): its inputs, and the two terms rounded up."""
        o = self.outcome
        return {"fuel": o.fuel_consumed, "fuel_price": self.rate, "memory_pages": o.memory_pages,
                "memory_us": self.billed_us, "memory_price": self.memory_price,
                "fuel_charge": price_compute(o.fuel_consumed, self.rate),
                "memory_charge": price_compute(0, 0, o.memory_pages, self.billed_us, self.memory_price)}

    @property
    def fuel_consumed(self) -> int:
        return self.outcome.fuel_consumed

    @property
    def ok(self) -> bool:
        return self.outcome.trap_kind is None

    @property
    def label(self) -> str:
        return self.outcome.trap_kind or "ok"

    def _facts(self) -> dict[str, Any]:
        o = self.outcome
        facts: dict[str, Any] = {
            "provenance": self.provenance_id, "module": self.module, "function": self.function,
            "fuel_consumed": o.fuel_consumed, "fuel_limit": self.limits.fuel, "metering": o.metering,
            "duration_ms": round(o.duration_ns / 1e6, 3), "cpu_ms": round(o.cpu_ns / 1e6, 3), "charge": self.charge,
            "requester": self.requester, "memory_pages": o.memory_pages, "cost": self.cost,
        }
        if self.wasi:
            facts.update(stdout=o.stdout.decode("utf-8", "replace"), stderr=o.stderr.decode("utf-8", "replace"),
                         stdout_truncated=o.stdout_dropped, stderr_truncated=o.stderr_dropped, exit_code=o.exit_code)
        return facts

    def to_json(self) -> dict[str, Any]:
        return {"results": typed(self.result_types, self.outcome.results or []), **self._facts()}

    def error(self, ceiling: Limits | None = None) -> Trap | None:
        """The run's trap as an error, or None; `ceiling`: the limits of the node whose user called (a run here out of
        fuel then offers no more --fuel than that node takes)."""
        if self.ok:
            return None
        o = self.outcome
        memory = f" and {o.memory_pages} {plural_for(o.memory_pages, 'page')} of memory for {self.billed_us / 1e6:g} s"
        charged = (f"; charged {format_credits(self.charge)} credits for {o.fuel_consumed:,} fuel "
                   f"({'metered' if o.metering == provenance.METERING_EXACT else 'bounded by the time it ran'})"
                   + (memory if o.memory_pages else ""))
        hint = hint_here(o.trap_kind, o.limit, ceiling, o.hint)
        return Trap(o.message + charged, kind=o.trap_kind, hint=hint, **{**self._facts(), **(o.limit or {})})


class ComputeService:
    def __init__(self, *, db: Database, identity: Identity, data_dir: Path, config: ComputeSection) -> None:
        self.ceiling = Limits(config.fuel, config.memory, config.timeout)
        self.memory_price = config.memory_price  # micro-credits per 64 KiB page-second (ledger/pricing.py)
        self.threads = max(2, config.threads)  # two at least: one spinning call must not block the next
        self.engine = eng.make_engine()
        self.fingerprint = eng.fingerprint()
        # What a replay needs to reproduce a run bit for bit: named in every provenance record.
        self._engine_facts = {"wasmtime": eng.WASMTIME_VERSION, "fingerprint": self.fingerprint.hex(),
                              "nan_canonicalization": eng.SETTINGS["cranelift_nan_canonicalization"]}
        self.loop_engine = sandbox.LoopEngine(self.engine, self.threads + 1)  # small invokes, web tries
        self.ticker = eng.EpochTicker(*self.loop_engine.engines)
        self.pool = Workers(self.threads, "xsc-wasm")  # a call is handed to an idle thread directly
        self.store = ComputeStore(db)
        self.registry = ModuleRegistry(engine=self.engine, fingerprint=self.fingerprint, store=self.store,
                                       secret=artifacts.load_or_create_secret(data_dir), pool=self.pool,
                                       max_module_size=config.max_module_size,
                                       peer_compile_timeout=config.peer_compile_timeout)
        self.identity = identity
        self.journal = Journal(db, identity)
        self.provenance_records = ProvenanceRecords(self.store, self.journal)
        self.inline = {"inline": 0, "inline_retried": 0}  # calls run on the event loop; tries run again on the pool
        self.running = 0  # calls executing right now
        self._running_lock = threading.Lock()
        self.max_queued = config.max_queued
        self.admitted = 0  # calls running or waiting for a thread (changed on the event loop only)
        self._budgets: dict[tuple[Limits, int, int], int] = {}  # (limits, rate, memory price) -> budget (a few)

    def start(self) -> None:
        self.ticker.start()

    async def check_ticker(self) -> dict:
        """The `compute:epoch-ticker` check of /health.  Without the ticker no wall-clock limit holds: a
        spinning module would keep its thread until it ran out of fuel."""
        return {"componentType": "component", "status": "pass" if self.ticker.alive else "fail",
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    async def close(self) -> None:
        await self.journal.close()
        self.pool.shutdown(wait=True)
        self.registry.close()
        self.ticker.stop()

    def status(self) -> dict[str, Any]:
        return {"wasmtime": eng.WASMTIME_VERSION, "threads": self.threads, "limits": self.ceiling.to_json(),
                "max_module_size": self.registry.max_module_size, "running": self.running, "admitted": self.admitted,
                "max_queued": self.max_queued, "epoch_ticker": "sleeping" if self.ticker.sleeping.is_set() else "ticking",
                **self.registry.status(), **self.inline}

    async def invoke(self, call: InvokeCall, *, requester: str, rate: int, deal: dict[str, Any] | None = None,
                     owed: Callable[[Run], Rows] | None = None,
                     together: bool = False) -> Run:
        """Run one call on the pool; a trap is a Run too (it is metered and recorded), bad input raises.

        `rate` is the deal's price (micro-credits per million fuel), and `deal` what the provenance
        record says of the deal the call runs under; `owed(run)` gives records written durably with the
        run's provenance record (what the run owes: ledger/tabs.py).  `together`: it comes with others (a peer's
        batch), so it is a concurrent call even if it is admitted first (tried on the loop; its record joins theirs
        in one group)."""
        if self.admitted >= self.max_queued:
            raise ComputeBusy(f"the node is busy: {self.admitted} calls are running or waiting "
                              f"for one of its {self.threads} threads", hint="retry in a moment",
                              admitted=self.admitted)
        self.admitted += 1
        try:
            # A lone call goes to the pool, which runs it AND writes its record (one hop); among concurrent calls
            # (whose records share a group commit anyway) a small one runs here and waits only for its group.
            inline = self._try_inline(call, requester, rate, deal, owed) if self.admitted > 1 or together else None
            if inline is not None:  # one hop: the record's group commit
                run, record, module_hash, puts = inline
                await self.journal.append(record, module_hash, puts)
                return run
            # One hop: the worker parses, runs, records and writes (or joins the group being written), and the
            # run comes back once its record is on disk.
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self.pool.submit(self._invoke, call, requester, rate, deal, owed, loop, future)
            return await future
        finally:
            self.admitted -= 1

    def check(self, call: InvokeCall) -> None:
        """Refuse a call that could not run here (no such module or export, bad arguments) without running it."""
        self._arguments(call)

    def recorded_args(self, call: InvokeCall) -> tuple[list[dict[str, Any]], list[str] | None]:
        """What a run's record names of `call`'s arguments: the typed values, and a WASI run's argv (else None)."""
        _, signature, values, argv = self._arguments(call)
        return typed(signature.params, values), argv

    def _arguments(self, call: InvokeCall, prepared: sandbox.Prepared | None = None
                   ) -> tuple[sandbox.Prepared, Signature, list, list[str] | None]:
        if prepared is None:
            prepared = self.registry.prepared(call.module_hash)
        if prepared.info.status != "active":
            raise ModuleDisabled(f"module {call.module} is disabled on this node",
                                 hint=f"enable it: xsc compute enable {call.module}")
        signature = self._signature(prepared.info, call.function)
        if prepared.info.imports and not call.wasi:
            mods.check_imports(prepared.info.imports, wasi=False)
        if call.wasi and not signature.params:
            # A WASI program's arguments are its argv (argv[0] is the module id).
            return prepared, signature, [], [call.module, *(str(a) for a in call.args)]
        return prepared, signature, parse_args(call.function, signature, call.args), \
            [call.module] if call.wasi else None

    def _try_inline(self, call: InvokeCall, requester: str, rate: int, deal: dict[str, Any] | None,
                    owed: Callable[[Run], Rows] | None
                    ) -> tuple[Run, dict[str, Any], bytes, tuple] | None:
        """Run a small call on the event loop, without a thread-pool round trip; None if it must go to the pool.

        Only a module in memory, small, without a start function or WASI, and an export not known to be slow,
        is tried, within INLINE_FUEL and INLINE_TICKS (so the loop is never held long: a spinning call is stopped
        by its fuel or the epoch deadline, and `/health` goes on answering).  A call that returns within them
        gave the result and the fuel it would have given under its own limits (a fresh Store, no host
        imports: nothing else can differ).  A call that traps is run again on the pool under its own limits,
        from scratch (the try left nothing behind), and if it ran out of the try's fuel or of its time while it
        had the CPU, its export is marked slow and never tried on the loop again."""
        if call.wasi:
            return None
        cached = self.registry.cached(call.module_hash)
        if cached is None or not cached.inline_ok():
            return None
        prepared, signature, values, argv = self._arguments(call, cached)  # bad input is refused here, as on the pool
        target = prepared.callable(call.function, signature)
        if target.slow:
            return None
        limits = self.limits(call)
        trial = Limits(min(limits.fuel, INLINE_FUEL), limits.memory, limits.timeout)
        started = time.time_ns()
        with self.running_call():
            outcome = self.loop_engine.run(prepared, call.function, signature, values, trial, on_loop=True,
                                           deadline_ticks=min(eng.deadline_ticks(limits.timeout), INLINE_TICKS))
        if outcome.trap_kind is not None:
            self.inline["inline_retried"] += 1
            # Slow: it ran out of the try's fuel, or of its time while it had the CPU.  A try that met its deadline
            # having run for less than half a tick was kept from running (a busy machine, another thread holding
            # the GIL): that says nothing of the export, which is tried inline again next time (up to
            # INLINE_PREEMPTED such tries in a row: on a machine that busy, a spinning export is not tried forever).
            preempted = outcome.trap_kind == "deadline" and outcome.cpu_ns < eng.TICK * 1e9 / 2
            target.preempted = target.preempted + 1 if preempted else 0
            if outcome.trap_kind in ("out-of-fuel", "deadline") and target.preempted in (0, INLINE_PREEMPTED):
                target.slow = True
            return None
        target.preempted = 0
        self.inline["inline"] += 1
        run, record, puts = self._finish(call, prepared, signature, values, argv, limits, outcome, started,
                                         requester, rate, deal, owed)
        return run, record, prepared.module_hash, puts

    def _invoke(self, call: InvokeCall, requester: str, rate: int, deal: dict[str, Any] | None,
                owed: Callable[[Run], Rows] | None, loop: asyncio.AbstractEventLoop,
                future: asyncio.Future) -> None:
        """On a worker: parse, run and record a call, and write its record (journal.commit), which answers
        `future` with the Run once the record is durable; bad input, or any failure, answers it at once."""
        try:
            prepared, signature, values, argv = self._arguments(call)
            limits = self.limits(call)
            started = time.time_ns()
            with self.running_call():
                outcome = sandbox.run(self.engine, prepared, call.function, signature, values, limits, argv)
            run, record, puts = self._finish(call, prepared, signature, values, argv, limits, outcome, started,
                                             requester, rate, deal, owed)
        except BaseException as exc:  # refused (bad arguments, no such export) or failed: nothing to write
            _answer_soon(loop, future, exc)
            return
        self.journal.commit(record, prepared.module_hash, puts, loop, future, run)

    def _finish(self, call: InvokeCall, prepared: sandbox.Prepared, signature: Signature, values: list,
                argv: list[str] | None, limits: Limits, outcome: sandbox.Outcome, started: int, requester: str,
                rate: int, deal: dict[str, Any] | None,
                owed: Callable[[Run], Rows] | None) -> tuple[Run, dict[str, Any], tuple]:
        run = Run(provenance.new_id().hex(), call.module, call.function, signature.results, outcome, limits,
                  0, requester, call.wasi, rate, self.memory_price)
        run.charge = price_compute(outcome.fuel_consumed, rate, outcome.memory_pages, run.billed_us, self.memory_price)
        record = self._record(run, signature, values, argv, started, deal)
        return run, record, owed(run) if owed is not None else ()

    def program(self, module_id: str, entrypoint: str) -> tuple[sandbox.Prepared, Signature]:
        """A WASI program's module and entrypoint, ready to run (compute/jobs.py); refused if it cannot run."""
        call = InvokeCall(module_id, entrypoint, wasi=True)
        try:
            return self._arguments(call)[:2]
        except WrongArgumentCount:  # (an invoke's words, "call it as: NAME I32", which a program cannot be given)
            signature = self._signature(self.registry.prepared(call.module_hash).info, entrypoint)
            raise InvalidArgument(f"{entrypoint}{signature} takes parameters: a job or a web function runs a WASI "
                                  "program's entrypoint, which is given none", hint="name an export without "
                                  "parameters, e.g. _start, or call this one with: xsc compute invoke") from None

    def execute(self, prepared: sandbox.Prepared, entrypoint: str, signature: Signature, argv: list[str],
                limits: Limits, streams: sandbox.Streams, deadline_ticks: int | None = None) -> sandbox.Outcome:
        """On a worker: run a WASI program with `streams` as its world (a job, a web request)."""
        with self.running_call():
            return sandbox.run(self.engine, prepared, entrypoint, signature, [], limits, argv, streams=streams,
                               deadline_ticks=deadline_ticks)

    @contextlib.contextmanager
    def running_call(self):
        """Count a call in `running` while it runs: on a worker, on the loop, or in a web runner's process."""
        with self._running_lock:
            self.running += 1
        try:
            yield
        finally:
            with self._running_lock:
                self.running -= 1

    def job_run(self, module_id: str, entrypoint: str, signature: Signature, argv: list[str], limits: Limits,
                outcome: sandbox.Outcome, started: int, requester: str, rate: int, deal: dict[str, Any],
                facts: dict[str, Any]) -> tuple[Run, dict[str, Any]]:
        """A job's run, charged, and its provenance record naming `facts` (its inputs and outputs)."""
        run = Run(provenance.new_id().hex(), module_id, entrypoint, signature.results, outcome, limits,
                  0, requester, True, rate, self.memory_price)
        run.charge = price_compute(outcome.fuel_consumed, rate, outcome.memory_pages, run.billed_us, self.memory_price)
        record = self._record(run, signature, [], argv, started, deal)
        record["job"] = facts
        return run, record

    def _signature(self, info: ModuleInfo, function: str) -> Signature:
        export = info.export(function)
        if export is not None and export.callable:
            return export.signature
        functions = ", ".join(e.name for e in info.exports if e.kind == "func") or "none"
        if not function:  # (an empty argument on a command line)
            raise InvalidArgument("the function to call is empty", hint=f"name one of its functions: {functions}")
        if export is None:
            raise ExportNotFound(f"module {info.id} has no export named {function!r}",
                                 hint=f"its functions: {functions}", functions=functions.split(", "))
        if export.signature is None:
            raise NotAFunction(f"export {function!r} is a {export.kind}, not a function",
                               hint=f"call one of its functions: {functions}")
        problem = export.signature.callable_problem()
        if problem:
            raise UnsupportedSignature(f"{function}{export.signature} cannot be invoked: {problem}")
        return export.signature

    def budget(self, call: InvokeCall, rate: int) -> int:
        """The most `call` may cost at `rate` (its whole fuel, its memory limit for its whole timeout): what is
        held before it runs."""
        limits = self.limits(call)
        key = (limits, rate, self.memory_price)
        found = self._budgets.get(key) if type(rate) is int else None  # (True == 1: only ints share a key)
        if found is None:
            found = price_budget(limits.fuel, rate, limits.memory, round(limits.timeout * 1e6), self.memory_price)
            if len(self._budgets) >= 256:
                self._budgets.clear()
            self._budgets[key] = found
        return found

    def limits(self, call: InvokeCall) -> Limits:
        """The limits a call runs under: what it asks for, never more than the node's ceiling."""
        return resolve(self.ceiling, call.fuel, call.memory, call.timeout)

    def _record(self, run: Run, signature: Signature, values: list, argv: list[str] | None,
                started_ns: int, deal: dict[str, Any] | None) -> dict[str, Any]:
        """The run's provenance record (signed and linked to the module's previous one by the journal)."""
        o = run.outcome
        record: dict[str, Any] = {"engine": self._engine_facts,
            "version": provenance.VERSION, "id": run.provenance_id, "module": run.module, "function": run.function,
            "args": typed(signature.params, values), "outcome": "ok" if run.ok else "trap",
            "fuel_limit": run.limits.fuel, "fuel_consumed": o.fuel_consumed, "metering": o.metering,
            "memory_limit": run.limits.memory, "timeout_us": round(run.limits.timeout * 1e6),
            "wall_time_us": o.duration_ns // 1000, "node": self.identity.id, "requester": run.requester,
            "timestamp": provenance.timestamp(started_ns), "charge": run.charge,
            "memory_pages": o.memory_pages, "fuel_price": run.rate, "memory_price": run.memory_price,
        }
        if deal is not None:
            record["deal"] = deal
        if run.ok:
            record["results"] = typed(signature.results, o.results or [])
        else:
            record["trap"] = {"kind": o.trap_kind, "message": o.message}
        if argv is not None:
            record["wasi"] = {"argv": argv, "exit_code": o.exit_code, "stdout_bytes": len(o.stdout) + o.stdout_dropped,
                              "stderr_bytes": len(o.stderr) + o.stderr_dropped,
                              "stdout_sha256": provenance.stream_sha256(o.stdout.decode("utf-8", "replace")),
                              "stderr_sha256": provenance.stream_sha256(o.stderr.decode("utf-8", "replace"))}
        return record


def _answer_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future, error: BaseException) -> None:
    """From a worker: fail `future` on its loop."""
    def fail() -> None:
        if not future.done():
            future.set_exception(error)
    try:
        loop.call_soon_threadsafe(fail)
    except RuntimeError:  # the loop is closed: nobody waits for it
        pass

