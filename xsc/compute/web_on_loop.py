"""Small web requests are tried without a worker's hand-over: in a web runner if the node has one (a child process
on a core of its own: compute/web_runners.py), else on the event loop's thread.  A request alone on the node (no
other web request in flight) is tried on the loop even with a runner: the loop has nothing else to do meanwhile,
and a runner's try would cost its caller two wakes of sleeping processes (the runner's, then the loop's).

A request is tried when nothing in it can block its thread: its function mounts no stored files, its module
is small, has no start function and does not import `poll_oneoff` (the one WASI call that sleeps; without
preopened directories or sockets every other one answers at once), and its body is at most ON_LOOP_BODY bytes
(one of no declared length is read that far first, and handed whole to a worker's run if it goes on).  Its
stdin, stdout and stderr are in-memory files (compute/web_trial.py).  The try runs with the GIL released (so the
epoch ticker stops it) within INLINE_FUEL and INLINE_TICKS, as a small invoke's does (compute/service.py): a run
that ends within them gave what it would under its own limits (a fresh Store, the same memory limit, the same
world).  Any other end, or an answer over ON_LOOP_ANSWER bytes, is thrown away and the request run on a worker
from scratch; one that ran out of the try's fuel or time while it had the CPU, or wrote too much, marks its
export, never tried again.  What a try can cost the node is bounded by those limits: its time, and what it writes
into the memfds meanwhile (emptied right after).  A runner's try is judged the same way from what the runner
answers; a runner that ends before it answers leaves the request to a worker's run.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from . import engine as eng
from . import runner_wire as wire
from . import sandbox
from .limits import Limits
from .service import INLINE_FUEL, INLINE_PREEMPTED, INLINE_TICKS, ComputeService
from .wasi_io import Streams
from .web_runners import MOST_MODULES, Runners
from .web_trial import ON_LOOP_ANSWER, Memfds, Tried

ON_LOOP_BODY = 16 * 1024  # bytes of a request body a try may take (its stdin fuel comes first)
BLOCKING_IMPORTS = frozenset({"poll_oneoff"})  # WASI calls that may hold the thread (a sleep)


class LoopRuns:
    """Tries of small requests, in a runner or on the loop, and the memfds of those on the loop (one set: runs on
    the loop are serial)."""

    def __init__(self, compute: ComputeService, runners: int = 0) -> None:
        self.compute = compute
        self.memfds = Memfds()
        self.runners = Runners(runners, compute.fingerprint) if runners else None
        # At most MOST_MODULES of each, the oldest forgotten first (judged again if ever needed):
        self._verdicts: OrderedDict[bytes, bool] = OrderedDict()  # module hash -> whether its calls may be tried
        self._slow: OrderedDict[tuple[bytes, str], int] = OrderedDict()  # (module, export) -> tries kept from the CPU
        #                                                                  in a row; -1: slow
        self.runs = 0  # requests answered from a try (status, tests)
        self.in_runner = 0  # of them, tried in a runner
        self.retried = 0  # tries run again on a worker
        self.failed_over = 0  # tries whose runner ended before it answered: run on a worker

    def close(self) -> None:
        self.memfds.close()
        if self.runners is not None:
            self.runners.close()

    def status(self) -> dict:
        return {"runs": self.runs, "in_runner": self.in_runner, "retried": self.retried,
                "failed_over": self.failed_over, **(self.runners.status() if self.runners is not None else {})}

    def may_try(self, prepared: sandbox.Prepared, entrypoint: str, mounts: bool, content_length: int | None) -> bool:
        """Whether a request may be tried (decided before its body is read)."""
        if mounts or (content_length or 0) > ON_LOOP_BODY or self._slow.get((prepared.module_hash, entrypoint)) == -1:
            return False
        verdict = self._verdicts.get(prepared.module_hash)
        if verdict is None:
            info = prepared.info
            verdict = prepared.wasi_pre is not None and not info.start and info.size <= sandbox.QUICK_INSTANTIATE_SIZE \
                and not any(i.name in BLOCKING_IMPORTS for i in prepared.module.imports)
            _keep(self._verdicts, prepared.module_hash, verdict)
        return verdict

    def judged(self) -> int:
        """Modules and exports whose tries were judged, kept (tests)."""
        return len(self._verdicts) + len(self._slow)

    async def attempt(self, prepared: sandbox.Prepared, entrypoint: str, signature, argv: list[str], limits: Limits,
                      streams: Streams, body: bytes, alone: bool = False
                      ) -> tuple[sandbox.Outcome, bytes, bytes] | None:
        """The try's outcome, stdout and stderr; None if the request must go to a worker (see the module's doc).
        `alone`: no other web request is in flight (tried on the loop)."""
        trial = Limits(min(limits.fuel, INLINE_FUEL + streams.prepaid_fuel), limits.memory, limits.timeout)
        ticks = min(eng.deadline_ticks(limits.timeout), INLINE_TICKS)
        tried = None
        link = self.runners.pick() if self.runners is not None else None  # started with the first request
        if alone:
            link = None
        run = None if link is None or not self.runners.sendable(prepared) else wire.run_body(wire.RunFrame(
            prepared.module_hash, trial.fuel, trial.memory, trial.timeout, ticks, streams.prepaid_fuel, entrypoint,
            argv, list(streams.env.items()), body))
        if link is not None and run is not None:
            with self.compute.running_call():
                answer = await link.run(prepared.module_hash, lambda: self.runners.module(prepared), run)
            if answer is None:
                self.failed_over += 1
                return None
            tried = _tried(answer)
            self.in_runner += tried is not None and tried.kept
        if tried is None:
            tried = self.memfds.run(self._try, prepared, entrypoint, signature, argv, trial, ticks,
                                    streams, body)
        if not tried.kept:
            self._judge(prepared.module_hash, entrypoint, tried.outcome)
            self.retried += 1
            return None
        self._slow.pop((prepared.module_hash, entrypoint), None)
        self.runs += 1
        return tried.outcome, tried.stdout, tried.stderr

    def _try(self, prepared: sandbox.Prepared, entrypoint: str, signature, argv: list[str], limits: Limits,
             streams: Streams, deadline_ticks: int | None = None) -> sandbox.Outcome:
        """A try on the loop, in the loop's engine (sandbox.LoopEngine)."""
        with self.compute.running_call():
            return self.compute.loop_engine.run(prepared, entrypoint, signature, [], limits, argv,
                                                streams=streams, deadline_ticks=deadline_ticks)

    def _judge(self, module_hash: bytes, entrypoint: str, outcome: sandbox.Outcome) -> None:
        """A try thrown away: its export marked slow if it ran out of the try's fuel or time while it had the CPU,
        or wrote too much.  A try stopped at its deadline having run for less than half a tick was kept from
        the CPU (a busy machine): tried again, up to INLINE_PREEMPTED times in a row."""
        key = (module_hash, entrypoint)
        if outcome.trap_kind not in (None, "out-of-fuel", "deadline"):
            return  # a failure the worker's run reports under its own limits; says nothing of its speed
        preempted = outcome.trap_kind == "deadline" and outcome.cpu_ns < eng.TICK * 1e9 / 2
        count = self._slow.get(key, 0) + 1 if preempted else 0
        _keep(self._slow, key, -1 if not preempted or count >= INLINE_PREEMPTED else count)


def _keep(kept: OrderedDict, key: Any, value: Any) -> None:
    kept[key] = value
    kept.move_to_end(key)
    if len(kept) > MOST_MODULES:
        kept.popitem(last=False)


def _tried(answer: tuple[int, object]) -> Tried | None:
    """What a runner answered, as a try on the loop would have given it; None: the runner lacked the module."""
    kind, value = answer
    if kind == wire.KEPT:
        assert isinstance(value, wire.KeptFrame)
        outcome = sandbox.Outcome(value.results, fuel_consumed=value.fuel_consumed, duration_ns=value.duration_ns,
                                  cpu_ns=value.cpu_ns, memory_pages=value.memory_pages, exit_code=value.exit_code)
        return Tried(outcome, True, value.stdout, value.stderr)
    if kind == wire.TOSSED:
        trap_kind, cpu_ns = value  # type: ignore[misc]
        return Tried(sandbox.Outcome(None, trap_kind=trap_kind or None, cpu_ns=cpu_ns), False, b"", b"")
    return None


__all__ = ["LoopRuns", "ON_LOOP_ANSWER", "ON_LOOP_BODY"]
