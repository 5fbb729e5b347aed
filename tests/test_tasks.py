"""xsc.tasks.Workers: calls handed to idle threads directly, results and errors back on the loop, a backlog
run in order when every thread is busy, and a shutdown that runs what is queued."""

from __future__ import annotations

import asyncio
import threading

import pytest

from xsc.tasks import Workers


async def test_results_and_errors_come_back_on_the_loop() -> None:
    workers = Workers(2, "test-workers")
    try:
        assert await workers.run(lambda a, b: a + b, 2, 3) == 5
        assert await workers.run(threading.current_thread) is not threading.current_thread()

        def fail() -> None:
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            await workers.run(fail)
    finally:
        workers.shutdown()


async def test_calls_beyond_the_threads_wait_and_all_run() -> None:
    workers = Workers(2, "test-workers")
    gate = threading.Event()
    try:
        blocked = [workers.run(gate.wait) for _ in range(2)]  # both threads busy
        queued = [workers.run(lambda i=i: i * i) for i in range(20)]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in queued)
        gate.set()
        assert await asyncio.gather(*blocked) == [True, True]
        assert await asyncio.gather(*queued) == [i * i for i in range(20)]
    finally:
        workers.shutdown()


async def test_a_lone_caller_keeps_one_thread() -> None:
    workers = Workers(4, "test-workers")
    try:
        used = {await workers.run(threading.get_ident) for _ in range(50)}
        assert len(used) <= 2  # the thread that just went idle is handed the next call (rarely another, if it was slow to)
    finally:
        workers.shutdown()


async def test_shutdown_runs_what_is_queued_then_refuses() -> None:
    workers = Workers(1, "test-workers")
    gate = threading.Event()
    first = workers.run(gate.wait)
    done: list[int] = []
    queued = [workers.run(done.append, i) for i in range(5)]
    stopper = threading.Thread(target=workers.shutdown)
    stopper.start()
    gate.set()
    await asyncio.gather(first, *queued)
    stopper.join(5)
    assert done == [0, 1, 2, 3, 4] and not stopper.is_alive()
    with pytest.raises(RuntimeError):
        workers.run(len, "x")


async def test_a_cancelled_caller_does_not_break_the_thread() -> None:
    workers = Workers(1, "test-workers")
    gate = threading.Event()
    try:
        waiting = asyncio.ensure_future(workers.run(gate.wait))
        await asyncio.sleep(0.01)
        waiting.cancel()
        gate.set()
        assert await workers.run(lambda: 7) == 7
    finally:
        workers.shutdown()
