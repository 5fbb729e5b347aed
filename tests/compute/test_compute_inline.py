"""One hop per call: a small call runs on the event loop, without a thread-pool round trip, and
answers exactly what it would have on the pool; a call too big for an inline try runs on the pool under its
own limits, and its export is not tried inline again."""

from __future__ import annotations

import asyncio

from tests.support.compute import deploy, invoke
from tests.support.waiting import eventually_async

from xsc.compute import sandbox
from xsc.compute.limits import Limits
from xsc.node.appkeys import NODE


async def _concurrently(node, module: str, function: str, *args, **options) -> tuple[int, dict]:
    """The call as if another one were in flight (a lone call goes to the pool, which also writes its record):
    one more call counted as admitted while it runs."""
    compute = node.app[NODE].compute
    compute.admitted += 1
    try:
        return await invoke(node, module, function, *args, **options)
    finally:
        compute.admitted -= 1


def _unhurried(monkeypatch) -> None:
    """A quiet machine: an inline try kept from the CPU until its deadline (a busy one, CI's) is tried again, so
    what a try finds of an export is its fuel and its time on the CPU, never the machine's load."""
    real_run = sandbox.run

    def unhurried(*args, **kwargs) -> sandbox.Outcome:
        while (outcome := real_run(*args, **kwargs)).trap_kind == "deadline" and kwargs.get("deadline_ticks"):
            pass
        return outcome

    monkeypatch.setattr(sandbox, "run", unhurried)


def _pool_run(compute, module: str, function: str, args: list, fuel: int) -> sandbox.Outcome:
    """The call as the pool runs it: under its own limits, whatever an inline try would have allowed."""
    prepared = compute.registry.prepared(bytes.fromhex(module))
    signature = prepared.info.export(function).signature
    return sandbox.run(compute.engine, prepared, function, signature, args, Limits(fuel, 2**20, 1.0))


async def test_a_small_call_runs_inline_and_answers_as_the_pool_would(node, monkeypatch) -> None:
    compute = node.app[NODE].compute
    _unhurried(monkeypatch)
    module = await deploy(node, "fibonacci")
    status, body = await invoke(node, module, "fib", 12, fuel=10_000_000)  # alone: on the pool
    assert status == 200 and compute.inline["inline"] == 0, body
    status, body = await _concurrently(node, module, "fib", 12, fuel=10_000_000)
    assert status == 200, body
    assert compute.inline["inline"] == 1 and compute.inline["inline_retried"] == 0
    # tried in the loop's own engine, whose instances are made in slots kept mapped; answered as the pool's engine
    assert compute.loop_engine.engine is not compute.engine
    assert compute.registry.prepared(bytes.fromhex(module)).loop_copy is not None
    pool = _pool_run(compute, module, "fib", [12], 10_000_000)
    assert [r["value"] for r in body["results"]] == pool.results == [144]
    assert body["fuel_consumed"] == pool.fuel_consumed and body["fuel_limit"] == 10_000_000
    record = (await (await node.get(f"/v1/compute/provenance/{body['provenance']}")).json())["record"]
    assert record["fuel_limit"] == 10_000_000 and record["fuel_consumed"] == pool.fuel_consumed


async def test_a_module_the_loops_engine_does_not_load_is_tried_in_the_nodes_engine(node, monkeypatch, caplog) -> None:
    compute = node.app[NODE].compute
    _unhurried(monkeypatch)
    module = await deploy(node, "fibonacci")
    loop_engine, deserialize = compute.loop_engine.engine, sandbox.wasmtime.Module.deserialize

    def refused_by_the_loops_engine(engine, artifact):
        if engine is loop_engine:
            raise sandbox.wasmtime.WasmtimeError("incompatible module: the engine's settings differ")
        return deserialize(engine, artifact)

    monkeypatch.setattr(sandbox.wasmtime.Module, "deserialize", refused_by_the_loops_engine)
    for n in (12, 13):
        status, body = await _concurrently(node, module, "fib", n, fuel=10_000_000)
        assert status == 200, body
        pool = _pool_run(compute, module, "fib", [n], 10_000_000)
        assert [r["value"] for r in body["results"]] == pool.results and body["fuel_consumed"] == pool.fuel_consumed
    assert compute.inline["inline"] == 2 and compute.inline["inline_retried"] == 0  # both tried on the loop
    prepared = compute.registry.prepared(bytes.fromhex(module))
    assert prepared.loop_copy is prepared  # the node's own module, in the node's engine
    said = [r.getMessage() for r in caplog.records if "does not load in the engine of the calls" in r.getMessage()]
    assert len(said) == 1 and "incompatible module" in said[0], said  # once, with wasmtime's words


async def test_a_call_past_the_inline_fuel_runs_on_the_pool_and_its_export_stays_there(node, monkeypatch) -> None:
    compute = node.app[NODE].compute
    _unhurried(monkeypatch)  # fib(22)'s try runs out of its fuel, never preempted first (which says nothing of it)
    module = await deploy(node, "fibonacci")
    status, body = await _concurrently(node, module, "fib", 22, fuel=10_000_000)  # about a million fuel
    assert status == 200, body
    assert compute.inline["inline_retried"] == 1 and compute.inline["inline"] == 0
    assert body["fuel_consumed"] == _pool_run(compute, module, "fib", [22], 10_000_000).fuel_consumed > 100_000
    status, body = await _concurrently(node, module, "fib", 2, fuel=10_000_000)  # small, but `fib` is known slow
    assert status == 200 and compute.inline["inline"] == 0 and compute.inline["inline_retried"] == 1
    status, body = await _concurrently(node, module, "fib_iter", 10, fuel=10_000_000)  # another export: inline
    assert status == 200 and compute.inline["inline"] == 1


async def test_a_spinning_call_is_stopped_by_its_own_deadline_and_health_answers_meanwhile(node) -> None:
    compute = node.app[NODE].compute
    module = await deploy(node, "loop")
    spin = asyncio.create_task(_concurrently(node, module, "spin", timeout=1.0))
    # the inline try gives up within a few ticks: the call spins on the pool
    await eventually_async(lambda: compute.running, "the call to spin on the pool", 10, poll=0.01)
    assert (await node.get("/health")).status == 200
    status, body = await spin
    assert status == 422 and body["kind"] == "deadline", body
    assert body["duration_ms"] >= 1000  # its own timeout, not the inline try's
    assert compute.inline["inline_retried"] == 1 and compute.inline["inline"] == 0


async def test_a_try_kept_from_running_until_its_deadline_does_not_mark_the_export_slow(node, monkeypatch) -> None:
    compute = node.app[NODE].compute
    module = await deploy(node, "add")
    real_run = sandbox.run

    def preempted(*args, **kwargs) -> sandbox.Outcome:  # a busy machine: the try met its deadline, barely run
        outcome = real_run(*args, **kwargs)
        if kwargs.get("deadline_ticks") is not None:
            outcome.trap_kind, outcome.message, outcome.results = "deadline", "deadline exceeded", None
            outcome.cpu_ns, outcome.duration_ns = 300_000, 21_000_000
        return outcome

    def unhurried(*args, **kwargs) -> sandbox.Outcome:  # a quiet machine: no try of `add` is kept from the CPU
        while (outcome := real_run(*args, **kwargs)).trap_kind == "deadline":
            pass
        return outcome

    monkeypatch.setattr(sandbox, "run", preempted)
    status, body = await _concurrently(node, module, "add", 1, 2)
    assert status == 200 and body["results"][0]["value"] == 3, body  # run again on the pool
    assert compute.inline == {"inline": 0, "inline_retried": 1}
    monkeypatch.setattr(sandbox, "run", unhurried)
    status, body = await _concurrently(node, module, "add", 1, 2)
    assert status == 200 and compute.inline == {"inline": 1, "inline_retried": 1}  # tried inline again
    monkeypatch.setattr(sandbox, "run", preempted)  # but not forever: three such tries in a row make it slow
    for _ in range(3):
        assert (await _concurrently(node, module, "add", 1, 2))[0] == 200
    monkeypatch.setattr(sandbox, "run", unhurried)
    assert (await _concurrently(node, module, "add", 1, 2))[0] == 200
    assert compute.inline == {"inline": 1, "inline_retried": 4}
