"""xsc.tasks.Workers: calls handed to idle threads directly, results and errors back on the loop, a backlog
run in order when every thread is busy, and a shutdown that runs what is queued.  xsc.tasks.Pacer: starts a
second, in order.  xsc.tasks.in_threads: long blocking work on threads of its own, stopped together.
xsc.tasks.Supervisor: services started in order, a crashed loop started again, all stopped in
reverse.  xsc.tasks.run: the event loop node.event_loop names."""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
import threading

import pytest
import uvloop

from xsc.config import load_config
from xsc.errors import ConfigError
from xsc.tasks import (GroupCommit, GroupSend, Locks, Pacer, Supervisor, Workers, at_most, in_threads, refill, run,
                       stop, to_its_end, unless_set, waited_out, woken, woken_loop)


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
        used = set()
        for _ in range(50):
            used.add(await workers.run(threading.get_ident))
            while len(workers._idle) < 4:  # its answer can come before the thread is idle again: wait for that
                await asyncio.sleep(0.001)
        assert len(used) == 1  # the thread that last went idle is handed the next call
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


async def test_the_pacer_lets_a_burst_start_then_its_rate_in_the_order_asked() -> None:
    clock = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # a clock that moves only when someone waits
        slept.append(seconds)
        clock[0] += seconds
        await asyncio.sleep(0)

    pacer = Pacer(100, 3, clock=lambda: clock[0], sleep=sleep)
    started: list[tuple[int, float]] = []

    async def starter(i: int) -> None:
        await pacer.start()
        started.append((i, clock[0]))

    await asyncio.gather(*(starter(i) for i in range(8)))
    assert [i for i, _ in started] == list(range(8))  # in the order asked
    assert [at for _, at in started[:3]] == [0.0, 0.0, 0.0]  # the burst, at once
    assert [round(at, 6) for _, at in started[3:]] == [0.01, 0.02, 0.03, 0.04, 0.05]  # then 100 a second
    assert len(slept) == 5  # one waiter sleeps at a time: no wake-up of every waiter per start
    clock[0] += 10.0
    await asyncio.gather(*(starter(i) for i in range(3)))  # idle long enough: a full burst again, never more
    assert len(slept) == 5


async def _sleeper(wait, event: asyncio.Event) -> None:
    while True:
        await wait(event, 30)
        event.clear()


async def _cancel_as_it_is_woken(wait) -> asyncio.Task:
    """A loop that sleeps until woken is cancelled in the same turn as its event is set, after the event's own
    waiter has ended (the order a node's close met it in): the loop must end."""
    event = asyncio.Event()
    task = asyncio.create_task(_sleeper(wait, event))
    await asyncio.sleep(0)
    event.set()
    await asyncio.sleep(0)  # the event's waiter ends; the loop is not yet resumed
    task.cancel()
    await asyncio.wait((task,), timeout=1.0)
    return task


async def test_a_loop_woken_and_cancelled_in_the_same_turn_ends() -> None:
    task = await _cancel_as_it_is_woken(woken)
    assert task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12 rewrote wait_for on asyncio.timeout (CPython gh-96764)")
async def test_wait_for_on_this_python_loses_that_cancellation() -> None:
    # Why `woken` exists (CPython gh-86296): should a Python release keep the cancellation here, `woken` can go.
    async def wait_for(event: asyncio.Event, seconds: float) -> None:
        await asyncio.wait_for(event.wait(), seconds)

    task = await _cancel_as_it_is_woken(wait_for)
    try:
        assert not task.done()
    finally:
        while not task.done():
            task.cancel()
            await asyncio.wait((task,), timeout=0.1)


async def test_woken_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await woken(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await woken(event, 5) is True


async def test_stop_cancels_again_a_task_that_lost_its_cancellation_and_says_so(caplog) -> None:
    swallowed = []

    async def deaf() -> None:
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # lost once, as wait_for can lose one

    task = asyncio.create_task(deaf(), name="xsc-deaf")
    await asyncio.sleep(0)
    await asyncio.wait_for(stop(task, None, grace=0.05), 5)
    assert task.cancelled() and swallowed
    assert "xsc-deaf did not end when cancelled" in caplog.text


async def test_stop_takes_the_outcome_of_a_task_that_failed() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await stop(task)  # no raise, and no "exception was never retrieved" later
    assert isinstance(task.exception(), RuntimeError)


async def test_a_step_unless_an_event_is_set_ends_its_way_or_is_cut_short_and_waited_for_once_it_is() -> None:
    done, ended, event = asyncio.Event(), [], asyncio.Event()

    async def step() -> None:
        try:
            await done.wait()
        finally:
            ended.append(True)

    async def fails() -> None:
        raise RuntimeError("boom")

    done.set()
    assert await unless_set(step(), event) is True
    with pytest.raises(RuntimeError):
        await unless_set(fails(), event)
    done.clear()
    cut = asyncio.ensure_future(unless_set(step(), event))
    await asyncio.sleep(0)
    assert not cut.done()
    event.set()
    assert await cut is False and ended == [True, True]  # the step ended before unless_set did


async def test_woken_lets_other_tasks_run_even_when_the_event_is_already_set() -> None:
    # A loop whose round sets its own event (more to do) must not keep the event loop to itself.
    event, ran = asyncio.Event(), []
    event.set()

    async def other() -> None:
        ran.append(True)

    task = asyncio.create_task(other())
    assert await woken(event, 5) is True
    assert ran
    await task


def test_a_bucket_refills_at_its_rate_up_to_its_burst_and_never_loses_tokens_to_a_clock_going_back() -> None:
    assert refill(1.0, 10.0, 10.5, rate=4, burst=8) == 3.0
    assert refill(1.0, 10.0, 20.0, rate=4, burst=8) == 8
    assert refill(1.0, 10.0, 9.0, rate=4, burst=8) == 1.0


class _Service:
    """A service with one loop that crashes on its first run and then waits to be stopped."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name, self.journal = name, journal
        self.runs = 0
        self.running = asyncio.Event()

    def start(self) -> None:
        self.journal.append(f"start {self.name}")

    def loops(self) -> dict:
        return {f"{self.name}-loop": self._loop}

    async def _loop(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("first run fails")
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.journal.append(f"loop of {self.name} stopped")
            raise

    async def close(self) -> None:
        self.journal.append(f"close {self.name}")


async def test_the_supervisor_starts_in_order_restarts_a_crashed_loop_and_stops_in_reverse() -> None:
    journal: list[str] = []
    first, second = _Service("first", journal), _Service("second", journal)
    supervisor = Supervisor(restart_first=0.01)
    supervisor.add("first", first)
    supervisor.add("second", second)
    assert journal == ["start first", "start second"]
    await asyncio.wait_for(asyncio.gather(first.running.wait(), second.running.wait()), 10)
    status = supervisor.status()
    assert status["first-loop"] == {"service": "first", "running": True, "restarts": 1,
                                    "last_error": "RuntimeError: first run fails"}
    assert [t.get_name() for t in supervisor.tasks("second")] == ["xsc-second-loop"]
    await supervisor.pause("second")
    assert supervisor.tasks("second") == [] and supervisor.status()["second-loop"]["running"] is False
    second.running.clear()
    supervisor.resume("second")
    await asyncio.wait_for(second.running.wait(), 10)
    await supervisor.close()
    assert journal[2:] == ["loop of second stopped", "loop of second stopped", "close second", "loop of first stopped",
                           "close first"]
    assert supervisor.status() == {}


async def test_a_service_whose_close_fails_leaves_the_services_before_it_to_close_all_the_same(caplog) -> None:
    """A full disk refusing the market's last write at its close: the ledger, added before it, still closes."""
    journal: list[str] = []
    first, second = _Service("first", journal), _Service("second", journal)

    async def full() -> None:
        raise OSError(28, "No space left on device")

    second.close = full  # type: ignore[method-assign]
    supervisor = Supervisor(restart_first=0.01)
    supervisor.add("first", first)
    supervisor.add("second", second)
    await supervisor.close()
    assert journal[-1] == "close first" and supervisor.status() == {}
    # a full disk is the operator's to mend: said in a line; any other failure, a bug, with its traceback
    assert "closing second: the data dir's disk is full" in caplog.text and "Traceback" not in caplog.text
    caplog.clear()

    async def broken() -> None:
        raise RuntimeError("a bug")

    again = Supervisor(restart_first=0.01)
    again.add("first", _Service("first", journal))
    broke = _Service("second", journal)
    broke.close = broken  # type: ignore[method-assign]
    again.add("second", broke)
    await again.close()
    assert "closing second failed" in caplog.text and "Traceback" in caplog.text


async def test_a_group_commit_writes_what_came_during_a_write_together_and_answers_each_item() -> None:
    groups: list[list[int]] = []
    gate = threading.Event()

    def write_all(items: list[int]) -> list:
        gate.wait(10)  # the first group is written while the others come
        groups.append(items)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    commits = GroupCommit(write_all, None)
    first = asyncio.ensure_future(commits.add(0))
    await asyncio.sleep(0)  # the first group's write has begun
    rest = [asyncio.ensure_future(commits.add(i)) for i in range(1, 6)]
    gate.set()
    assert await first == 0
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert groups == [[0], [1, 2, 3, 4, 5]] and commits.groups == 2
    assert [o if isinstance(o, int) else str(o) for o in outcomes] == ["odd 1", 20, "odd 3", 40, "odd 5"]


async def test_a_group_commit_whose_pool_is_shut_down_refuses_each_item_and_never_hangs() -> None:
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    commits = GroupCommit(lambda items: items, pool)
    for item in (1, 2):
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(commits.add(item), 10)


async def test_group_sends_go_at_once_alone_then_together_while_others_are_under_way_each_answered() -> None:
    groups: list[list[int]] = []
    gates: list[asyncio.Event] = []

    async def send_all(items: list[int]) -> list:
        groups.append(items)
        gates.append(gate := asyncio.Event())
        await gate.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    sends = GroupSend(send_all, max_items=3, max_bytes=100, flights=2)
    first = asyncio.ensure_future(sends.send(0, 1))
    while len(gates) < 1:  # a lone item waits for nothing
        await asyncio.sleep(0)
    second = asyncio.ensure_future(sends.send(1, 1))
    while len(gates) < 2:  # nor does one while fewer than `flights` groups are under way
        await asyncio.sleep(0)
    rest = [asyncio.ensure_future(sends.send(i, 1)) for i in range(2, 7)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert groups == [[0], [1]]  # the others wait for a group to come back
    gates[0].set()
    assert await first == 0
    while len(gates) < 3:
        await asyncio.sleep(0)
    for gate in gates[1:]:
        gate.set()
    while not all(task.done() for task in rest):
        for gate in gates:
            gate.set()
        await asyncio.sleep(0)
    with pytest.raises(ValueError, match="odd 1"):
        await second
    assert groups[2] == [2, 3, 4] and sorted(sum(groups, [])) == list(range(7))  # at most max_items a group
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert [o if isinstance(o, int) else str(o) for o in outcomes] == [20, "odd 3", 40, "odd 5", 60]
    assert (sends.groups, sends.items) == (len(groups), 7)


async def test_a_group_send_bounds_a_group_by_bytes_fails_a_whole_group_it_could_not_send_and_skips_the_cancelled() -> None:
    groups: list[list[str]] = []
    release = asyncio.Event()

    async def send_all(items: list[str]) -> list:
        groups.append(items)
        await release.wait()
        if "boom" in items:
            raise ConnectionError("the node went away")
        return items

    sends = GroupSend(send_all, max_items=10, max_bytes=10, flights=1)
    first = asyncio.ensure_future(sends.send("first", 1))
    await asyncio.sleep(0)
    big = asyncio.ensure_future(sends.send("big", 50))  # over max_bytes: alone in its group
    small = [asyncio.ensure_future(sends.send(name, 4)) for name in ("a", "b", "c")]
    gone = asyncio.ensure_future(sends.send("gone", 1))
    boom = asyncio.ensure_future(sends.send("boom", 1))
    await asyncio.sleep(0)
    gone.cancel()  # its caller went away while it waited: never sent
    release.set()
    assert await first == "first" and await big == "big"
    assert [await task for task in small[:2]] == ["a", "b"]
    for task in (small[2], boom):  # the group the sender could not send fails whole
        with pytest.raises(ConnectionError):
            await task
    assert groups == [["first"], ["big"], ["a", "b"], ["c", "boom"]]
    await sends.close()


async def test_a_group_send_whose_sender_answers_too_few_outcomes_fails_the_group_rather_than_hang() -> None:
    async def send_all(items: list[int]) -> list:
        return items[:-1]

    sends = GroupSend(send_all, max_items=4, max_bytes=10)
    callers = [asyncio.ensure_future(sends.send(i, 1)) for i in range(3)]
    outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 10)
    assert all(isinstance(o, RuntimeError) and "2 outcomes for a group of 3" in str(o) for o in outcomes)


async def test_closing_a_group_send_cancels_its_callers_and_its_queue() -> None:
    async def send_all(items: list[int]) -> list:
        await asyncio.Event().wait()  # never answers
        return items

    sends = GroupSend(send_all, max_items=1, max_bytes=10, flights=1)
    callers = [asyncio.ensure_future(sends.send(i, 1)) for i in range(3)]
    await asyncio.sleep(0)
    await sends.close()
    for caller in callers:
        with pytest.raises(asyncio.CancelledError):
            await caller


async def test_a_woken_loop_steps_at_once_again_when_woken_and_goes_on_after_a_failed_round() -> None:
    wake, rounds, count = asyncio.Event(), asyncio.Queue(), 0

    async def step() -> None:
        nonlocal count
        count += 1
        await rounds.put("round")
        if count % 2 == 0:
            raise RuntimeError("every second round fails")

    for wait_first, at_once in ((False, True), (True, False)):
        task = asyncio.create_task(woken_loop("test", wake, 3600, step, wait_first=wait_first)())
        if at_once:
            assert await asyncio.wait_for(rounds.get(), 10) == "round"  # no wait before the first round
        for _ in range(2):  # each wake is a round; a failed one does not end the loop
            wake.set()
            assert await asyncio.wait_for(rounds.get(), 10) == "round"
        await stop(task)
        while not rounds.empty():
            rounds.get_nowait()


async def test_at_most_keeps_the_limit_in_flight_answers_in_order_and_starts_no_task_for_nothing() -> None:
    running, most = 0, 0

    async def call(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        running -= 1
        return i

    assert await at_most(3, (call(i) for i in range(10))) == list(range(10)) and most == 3
    tasks = len(asyncio.all_tasks())
    loop = asyncio.get_running_loop()
    made = []
    factory = loop.get_task_factory()
    loop.set_task_factory(lambda lp, coro, **kw: made.append(coro) or asyncio.Task(coro, loop=lp, **kw))
    try:
        assert await at_most(8, iter([])) == [] and await at_most(8, []) == []
        assert made == []
        assert await at_most(8, [call(1), call(2)]) == [1, 2] and len(made) == 2  # as many workers as calls
    finally:
        loop.set_task_factory(factory)
    assert len(asyncio.all_tasks()) == tasks


async def test_at_most_cancelled_before_its_workers_start_leaves_no_call_never_awaited() -> None:
    made: list = []
    first_made = asyncio.Event()

    async def call(i: int) -> int:
        return i

    def calls():
        for i in range(10):
            made.append(c := call(i))
            first_made.set()
            yield c

    task = asyncio.ensure_future(at_most(4, calls()))
    await first_made.wait()  # at_most made the first call to see there is one; its workers have not started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(made) == 1 and inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED

    handed = [call(i) for i in range(3)]
    task = asyncio.ensure_future(at_most(1, handed))
    await asyncio.sleep(0)  # one turn of the loop: at_most hands the list to a worker that has not started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in handed)


async def test_at_most_a_failing_call_ends_the_calls_under_way_and_takes_no_more() -> None:
    ended: list[int] = []
    taken: list[int] = []

    async def waits(i: int) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(i)

    async def fails() -> None:
        raise ValueError("refused")

    def calls():
        for i in range(6):
            taken.append(i)
            yield fails() if i == 2 else waits(i)

    tasks = len(asyncio.all_tasks())
    with pytest.raises(ValueError, match="refused"):
        await at_most(3, calls())
    assert sorted(ended) == [0, 1] and taken == [0, 1, 2] and len(asyncio.all_tasks()) == tasks


async def test_in_threads_runs_each_on_its_own_thread_and_a_failure_stops_the_others_and_is_raised() -> None:
    stop_event = threading.Event()
    seen: list[str] = []

    def waits() -> None:  # runs until stopped, as a writer waiting on a slow client does
        seen.append(threading.current_thread().name)
        while not stop_event.wait(0.01):
            pass
        seen.append("stopped")

    def fails() -> None:
        raise ValueError("this segment cannot be read")

    with pytest.raises(ValueError, match="cannot be read"):
        await in_threads(stop_event, waits, fails)
    assert stop_event.is_set() and seen[-1] == "stopped"  # the other thread had ended before the error came out
    assert seen[0] != threading.current_thread().name

    stop_event.clear()
    done: list[int] = []
    await in_threads(stop_event, lambda: done.append(1), lambda: done.append(2))
    assert sorted(done) == [1, 2] and not stop_event.is_set()


async def test_in_threads_cancelled_stops_its_threads_and_waits_for_them_before_the_cancellation_goes_on() -> None:
    stop_event, started = threading.Event(), threading.Event()
    ended: list[bool] = []

    def waits() -> None:
        started.set()
        while not stop_event.wait(0.01):
            pass
        ended.append(True)

    task = asyncio.ensure_future(in_threads(stop_event, waits, waits))
    await asyncio.get_running_loop().run_in_executor(None, started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stop_event.is_set() and ended == [True, True]


async def test_a_step_run_to_its_end_goes_on_past_its_cancelled_caller_and_says_when_it_ended() -> None:
    go, ended = asyncio.Event(), []

    async def step() -> str:
        await go.wait()
        return "written"

    caller = asyncio.ensure_future(to_its_end(step(), lambda: ended.append("ended")))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ended == []  # the step still runs
    go.set()
    while not ended:
        await asyncio.sleep(0)
    assert ended == ["ended"]
    assert await to_its_end(step(), lambda: ended.append("again")) == "written" and ended[-1] == "again"


async def test_a_caller_cancelled_as_a_threads_write_runs_waits_for_it_however_often_it_is_cancelled() -> None:
    writing, go = threading.Event(), threading.Event()
    written: list[str] = []

    def write() -> str:
        writing.set()
        go.wait(30)
        written.append("written")
        return "written"

    async def caller() -> str:
        outcome = await waited_out(asyncio.get_running_loop().run_in_executor(None, write))
        written.append("after")  # (never: the cancellation goes on once the write has ended)
        return outcome

    task = asyncio.ensure_future(caller())
    assert await asyncio.to_thread(writing.wait, 30)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # again, as a stop does after its grace
    await asyncio.sleep(0)
    assert not task.done() and written == []  # it waits for the write
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert written == ["written"]
    assert await waited_out(asyncio.get_running_loop().run_in_executor(None, write)) == "written"


async def test_what_follows_a_threads_write_follows_it_once_it_ended_written_cancelled_or_not() -> None:
    """`ended(outcome)` once the write ended with one, before a cancelled caller's cancellation goes on; never for a
    write that raised."""
    writing, go = threading.Event(), threading.Event()
    ended: list[str] = []

    def write(outcome: str) -> str:
        writing.set()
        go.wait(30)
        if outcome == "refused":
            raise OSError("no space left on device")
        return outcome

    def run(outcome: str) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(None, write, outcome)

    async def cancelled_as_written(outcome: str) -> None:  # its caller cancelled once the write has begun
        writing.clear()
        go.clear()
        task = asyncio.ensure_future(waited_out(run(outcome), ended.append))
        assert await asyncio.to_thread(writing.wait, 30)
        task.cancel()
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    await cancelled_as_written("written as cancelled")
    assert ended == ["written as cancelled"]
    assert await waited_out(run("written"), ended.append) == "written" and ended[-1] == "written"
    await cancelled_as_written("refused")
    with pytest.raises(OSError):
        await waited_out(run("refused"), ended.append)
    assert ended == ["written as cancelled", "written"]


async def test_an_item_submitted_goes_with_its_group_whether_or_not_its_answer_is_awaited() -> None:
    sent: list[list[str]] = []

    async def send_all(items: list[str]) -> list[str]:
        sent.append(items)
        return [item.upper() for item in items]

    groups = GroupSend(send_all, max_items=8, max_bytes=100)
    first, second = groups.submit("a", 1), groups.submit("b", 1)
    assert await second == "B"
    assert await first == "A" and sorted(i for g in sent for i in g) == ["a", "b"]
    await groups.close()


async def test_an_item_counts_as_under_way_until_its_group_is_sent_even_if_its_caller_is_cancelled() -> None:
    release = asyncio.Event()
    sent: list[list[str]] = []

    async def send_all(items: list[str]) -> list[str]:
        sent.append(items)
        await release.wait()
        return [item.upper() for item in items]

    groups = GroupSend(send_all, max_items=8, max_bytes=100, flights=1)
    ended: list[str] = []
    first = groups.submit("a", 1, lambda: ended.append("a"))
    await asyncio.sleep(0)  # the first group is on its way
    queued = groups.submit("b", 1, lambda: ended.append("b"))
    dropped = groups.submit("c", 1, lambda: ended.append("c"))
    first.cancel()  # its group goes on
    dropped.cancel()  # before its group goes: it is not sent
    release.set()
    assert await queued == "B"
    assert sent == [["a"], ["b"]] and sorted(ended) == ["a", "b", "c"]
    await groups.close()


async def test_items_of_a_closed_group_send_are_told_they_ended() -> None:
    async def send_all(items: list[str]) -> list[str]:
        await asyncio.Event().wait()  # never answers
        return items

    groups = GroupSend(send_all, max_items=1, max_bytes=100, flights=1)
    ended: list[str] = []
    in_flight = groups.submit("a", 1, lambda: ended.append("a"))
    await asyncio.sleep(0)
    waiting = groups.submit("b", 1, lambda: ended.append("b"))
    await groups.close()
    assert in_flight.cancelled() and waiting.cancelled() and sorted(ended) == ["a", "b"]


async def test_in_threads_raises_the_first_failure_and_leaves_no_other_unretrieved(collector_paused) -> None:
    reported: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: reported.append(context))
    stop_event = threading.Event()

    def fails_first() -> None:
        raise ValueError("this segment cannot be read")

    def fails_once_stopped() -> None:
        stop_event.wait(10)
        raise ConnectionResetError("the client is gone")

    try:
        with pytest.raises(ValueError, match="cannot be read"):
            await in_threads(stop_event, fails_first, fails_once_stopped)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def test_locks_keep_a_key_only_while_it_is_held_or_awaited_however_its_work_ends() -> None:
    locks: Locks[str] = Locks()
    for n in range(1000):  # keys a stranger names, each used once
        async with locks.one(f"k{n}"):
            assert locks.locked(f"k{n}") and len(locks) == 1
    with pytest.raises(ValueError):
        async with locks.one("fails"):
            raise ValueError("the work failed")
    entered = asyncio.Event()

    async def held_forever(key: str) -> None:
        async with locks.one(key):
            entered.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(held_forever("busy"))
    await entered.wait()
    waiter = asyncio.create_task(held_forever("busy"))  # cancelled while it waits
    await asyncio.sleep(0)
    assert locks.waiting("busy") == 1 and len(locks) == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert locks.waiting("busy") == 0 and locks.locked("busy")  # the holder's lock is untouched
    holder.cancel()  # cancelled while it holds
    await asyncio.gather(holder, return_exceptions=True)
    assert len(locks) == 0 and not locks.locked("busy")


async def test_a_key_handed_to_its_waiter_is_not_taken_afresh_by_a_newcomer() -> None:
    """The holder lets go and the waiter has not run yet: a newcomer then waits for the waiter, never runs with it."""
    locks: Locks[str] = Locks()
    inside: list[str] = []
    most = 0
    first_in, let_go = asyncio.Event(), asyncio.Event()

    async def work(name: str, first: bool = False) -> None:
        nonlocal most
        async with locks.one("si"):
            inside.append(name)
            most = max(most, len(inside))
            if first:
                first_in.set()
                await let_go.wait()
            await asyncio.sleep(0)
            inside.remove(name)

    a = asyncio.create_task(work("a", first=True))
    await first_in.wait()
    b = asyncio.create_task(work("b"))
    await asyncio.sleep(0)
    assert locks.waiting("si") == 1
    let_go.set()
    while not a.done():
        await asyncio.sleep(0)
    c = asyncio.create_task(work("c"))  # a let go; b is woken, not yet in
    await asyncio.gather(b, c)
    assert most == 1 and len(locks) == 0


def test_the_node_runs_on_the_event_loop_its_config_names(tmp_path) -> None:
    """node.event_loop: asyncio's unless the config or XSC_NODE_EVENT_LOOP says uvloop; any other name is refused."""
    async def loop_kind() -> type:
        return type(asyncio.get_running_loop())

    assert load_config(tmp_path / "a", environ={}).node.event_loop == "asyncio"
    assert not issubclass(run(loop_kind(), load_config(tmp_path / "a", environ={}).node.event_loop), uvloop.Loop)
    chosen = load_config(tmp_path / "b", environ={"XSC_NODE_EVENT_LOOP": "uvloop"}).node.event_loop
    assert run(loop_kind(), chosen) is uvloop.Loop
    with pytest.raises(ConfigError, match="must be uvloop or asyncio"):
        load_config(tmp_path / "c", environ={"XSC_NODE_EVENT_LOOP": "trio"})
