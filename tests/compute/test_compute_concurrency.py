"""Calls run on a thread pool off the event loop: a spinning module blocks neither the node nor other calls.

These tests assert ordering and concurrency facts (what was still running when something else
answered), never wall-clock bounds (the machine may be loaded)."""

from __future__ import annotations

import asyncio

from tests.support.compute import deploy, invoke
from tests.support.waiting import eventually_async

from xsc.node.appkeys import NODE


async def running_calls(client) -> int:
    status = await (await client.get("/v1/node/status")).json()
    return status["compute"]["running"]


async def wait_until_running(client, count: int) -> None:
    async def running() -> bool:
        return await running_calls(client) >= count

    await eventually_async(running, f"{count} calls running", 10, poll=0.005)


async def test_health_and_other_invokes_answer_while_one_spins(node):
    spin, add = await deploy(node, "loop"), await deploy(node, "add")
    spinning = asyncio.create_task(invoke(node, spin, "spin", timeout=3))
    await wait_until_running(node, 1)

    health = await node.get("/health")
    assert health.status == 200
    status, body = await invoke(node, add, "add", "1", "2")
    assert (status, body["results"][0]["value"]) == (200, 3)
    for _ in range(20):
        status, body = await invoke(node, add, "sub", "-5", "3")
        assert body["results"][0]["value"] == -8
    # All of that was answered while the spinning call was still running.
    assert not spinning.done()
    assert await running_calls(node) == 1

    status, body = await spinning
    assert (status, body["kind"]) == (422, "deadline")


async def test_two_infinite_loops_run_at_once_and_each_ends_at_its_deadline(node):
    spin = await deploy(node, "loop")
    deadline = 1.0
    first = asyncio.create_task(invoke(node, spin, "spin", timeout=deadline))
    second = asyncio.create_task(invoke(node, spin, "spin_calls", timeout=deadline))
    await wait_until_running(node, 2)  # both spin at the same time, on two threads (not one after the other)
    results = await asyncio.gather(first, second)
    assert [(s, b["kind"]) for s, b in results] == [(422, "deadline"), (422, "deadline")]
    for _, body in results:
        assert body["duration_ms"] >= deadline * 1000  # never cut short


async def test_the_call_that_wakes_a_sleeping_epoch_ticker_still_ends_at_its_deadline(node):
    """An idle node's epoch ticker sleeps (it is not woken a hundred times a second for nothing); the call that
    wakes it is stopped at its deadline (without ticks it would spin until its fuel ran out) and not before."""
    spin = await deploy(node, "loop")

    async def sleeping() -> bool:
        return (await (await node.get("/v1/node/status")).json())["compute"]["epoch_ticker"] == "sleeping"

    await eventually_async(sleeping, "the epoch ticker asleep", 30)
    status, body = await invoke(node, spin, "spin", timeout=0.5)
    assert (status, body["kind"]) == (422, "deadline"), body
    assert body["duration_ms"] >= 500


async def test_many_concurrent_invokes_all_answer(node):
    add = await deploy(node, "add")
    answers = await asyncio.gather(*(invoke(node, add, "add", str(i), str(i)) for i in range(64)))
    assert [body["results"][0]["value"] for _, body in answers] == [2 * i for i in range(64)]
    provenance_ids = {body["provenance"] for _, body in answers}
    assert len(provenance_ids) == 64
    modules = await (await node.get("/v1/modules")).json()
    assert {m["id"]: m["invocations"] for m in modules["modules"]}[add] == 64


async def test_calls_past_the_queue_bound_are_refused_at_once(node_factory) -> None:
    import asyncio

    node = await node_factory(compute={"threads": 2, "max_queued": 2, "timeout": 1.0})
    module = await deploy(node, "loop")
    spinning = [asyncio.create_task(invoke(node, module, "spin")) for _ in range(2)]
    service = node.app[NODE].compute
    await eventually_async(lambda: service.admitted == 2, "both calls admitted", 10, poll=0.01)
    status, body = await invoke(node, module, "spin")
    assert status == 503 and body["code"] == "compute-busy", body
    assert [s for s, _ in await asyncio.gather(*spinning)] == [422, 422]  # both hit their deadline
    assert (await node.get("/health")).status == 200
