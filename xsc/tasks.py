"""How blocking work runs off the event loop (the CPU pool; `Workers` for a hot path's short calls), how a periodic
loop runs, and how many calls run at once.

    await in_pool(pool, fn, *args)          fn(*args) in the node's CPU pool (hashing, crypto, LevelDB)
    await commits.add(item)                 item written by GroupCommit's write_all in the next group: the
                                            items added while one group is written go together in one write
    await sends.send(item, size)            item sent by GroupSend's send_all with those added while the groups
                                            before it were under way: one request carries many small ones
                                            (`sends.submit(item, size, ended)`: the same, as a future,
                                            and ended() once the item went with its group or was dropped)
    await workers.run(fn, *args)            fn(*args) on one of a fixed set of threads, handed it directly
    workers.submit(fn, *args)               the same, nothing handed back (fn delivers its own result)
    await in_threads(stop, *fns)            each fn() on a thread of its own, for blocking work as long as a
                                            client takes (a large get passed to its socket); `stop` ends them
    woken_loop(name, wake, period, step)    a loop: await step(), then again once wake is set or period passes
    task = every(name, period, step)        await step() every period() seconds until cancelled;
                                            a failed round is logged and never ends the loop
    await woken(event, seconds)             wait until event is set or seconds pass; whether it is set
    await to_its_end(step, ended)           await step, which runs on to its end if the caller is cancelled,
                                            then ended() (a write the other end goes on with: its record)
    await waited_out(future, ended)         await future (a thread's write), which a cancelled caller waits
                                            for before its cancellation goes on; ended(outcome) once it
                                            ended with one, cancelled or not
    await stop(*tasks)                      cancel background tasks and wait for them to end
    await unless_set(step, event)           await step, cut short (cancelled and waited for) once event is set;
                                            whether it ran to its end
    await at_most(n, calls)                 await calls (an iterable of awaitables) n at a time at most
    async with locks.one(key):              one holder per key at a time (`Locks`), a key kept only while it is
                                            held or awaited
    await pacer.start()                     wait for a turn to start: at most `rate` starts a second
    refill(tokens, since, now, rate, burst) a token bucket's tokens now (the pacer's, the node's rate limits)
    Quota                                   per-key quotas a service is handed (node/limits.py: RateLimiter)
    now_ms()                                the wall clock in milliseconds, as signed records carry it
    run(main, event_loop)                   main run to its end on a new loop: uvloop's or asyncio's own
    Supervisor                              the node's services started in order, their loops run and watched (a
                                            crashed loop logged and started again), all stopped in reverse
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sized
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def in_pool(pool: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


class Workers:
    """A fixed set of threads running blocking calls for the event loop, each call handed to an idle thread
    directly (ThreadPoolExecutor's threads all wait on one queue: a call wakes one, which wakes the next to
    look at the queue again, and the two trade the GIL for nothing), and its result set on the loop without
    concurrent.futures' Future and callbacks.  Calls that find every thread busy wait in order.  For short
    calls on a hot path (a wasm call and its provenance record)."""

    def __init__(self, count: int, name: str) -> None:
        self._lock = threading.Lock()  # the idle threads and the backlog
        self._idle: list[queue.SimpleQueue] = []  # the inboxes of idle threads (one waiter each)
        self._backlog: deque[tuple] = deque()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, args=(queue.SimpleQueue(),), name=f"{name}_{i}",
                                          daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """fn(*args) on a thread; the future (of the running loop) of its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._hand((loop, future, fn, args))
        return future

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) on a thread, from any thread, and nothing handed back: fn delivers its own outcome (an
        exception it lets out is logged).  For work whose result another thread hands on (compute/journal.py)."""
        self._hand((None, None, fn, args))

    def _hand(self, job: tuple) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the workers are shut down")
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self._backlog.append(job)
        if inbox is not None:
            inbox.put(job)

    def _work(self, inbox: queue.SimpleQueue) -> None:
        while True:
            with self._lock:
                if self._backlog:
                    job = self._backlog.popleft()
                else:
                    job = _IDLE
                    self._idle.append(inbox)
            if job is _IDLE:
                job = inbox.get()
            if job is None:  # shut down
                return
            loop, future, fn, args = job
            del job
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # handed to the caller
                outcome = (False, exc)
            if loop is None:  # submitted: fn handed on its own outcome
                if not outcome[0]:
                    log.error("%s failed", getattr(fn, "__qualname__", fn), exc_info=outcome[1])
                del fn, args, outcome
                continue
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the loop is closed: nobody waits for it
                pass
            del loop, future, fn, args, outcome

    def shutdown(self, wait: bool = True) -> None:
        """Run the calls already queued, then end the threads; no call is taken after this."""
        with self._lock:
            if self._closed:
                idle = []
            else:
                self._closed = True
                idle, self._idle = self._idle, []
                # One stop each: idle threads get theirs now, busy ones after the queued calls.
                self._backlog.extend([None] * (len(self._threads) - len(idle)))
        for inbox in idle:
            inbox.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


_IDLE = object()


async def in_threads(stop: threading.Event, *fns: Callable[[], None]) -> None:
    """Each fn() on a thread of its own, started now: for blocking work that lasts as long as a client takes to read
    (a get passed on to its socket), which would hold a pool thread, or a Workers thread, from every other caller
    meanwhile.  The fns see `stop` and end soon after it is set.  When one raises, `stop` is set, every thread is
    waited for and its exception raised here; when this is cancelled, `stop` is set and the threads are waited for
    before the cancellation goes on, so that nothing they use (a socket, say) is closed under them."""
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in fns]

    def run(fn: Callable[[], None], future: asyncio.Future) -> None:
        try:
            outcome = (True, fn())
        except BaseException as exc:  # handed to the caller
            stop.set()
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(_settle, future, outcome)
        except RuntimeError:  # the loop is closed: nobody waits for it
            pass

    for i, (fn, future) in enumerate(zip(fns, done)):
        threading.Thread(target=run, args=(fn, future), name=f"xsc-{getattr(fn, '__name__', 'fn')}_{i}",
                         daemon=True).start()
    cancelled = False
    while not all(f.done() for f in done):
        try:  # (a cancelled `wait` leaves the futures it waits for as they are)
            await asyncio.wait([f for f in done if not f.done()], return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            cancelled = True
        if cancelled or any(f.done() and f.exception() is not None for f in done):
            stop.set()
    errors = [f.exception() for f in done]  # every one retrieved, though only the first is raised
    if cancelled:
        raise asyncio.CancelledError
    for error in errors:
        if error is not None:
            raise error


class GroupCommit(Generic[T]):
    """Group commit: `add(item)` waits for `write_all(items)`, run in the pool with every item added while the
    group before was written (at most `max_group`), so that many small writes share one synced write.
    `write_all` answers each item's result, or the exception that item raises (a failed write raises for all).
    The thread that wrote a group writes the next one at once if items are waiting, without handing back to the
    event loop in between (a hop each way costs a wake-up, and on a busy machine a wait for a core).

    An item still waiting when its caller is cancelled leaves the queue (it is never written, so the caller's
    clean-up may undo what it prepared); one whose group is being written is waited for before the cancellation
    goes on, so that what follows sees whether it was written."""

    def __init__(self, write_all: Callable[[list[T]], list[Any]], pool: Executor | None, max_group: int = 256) -> None:
        self.write_all, self.pool, self.max_group = write_all, pool, max_group
        self._lock = threading.Lock()  # the queue and whether a thread is writing (the loop's and the writer's)
        self._queue: list[tuple[T, asyncio.Future]] = []
        self._writing = False
        self.groups = 0  # group writes (tests, status)

    async def add(self, item: T) -> Any:
        loop = asyncio.get_running_loop()
        waiting = (item, loop.create_future())
        with self._lock:
            self._queue.append(waiting)
            start, self._writing = not self._writing, True
        if start:
            try:
                loop.run_in_executor(self.pool, self._write_groups, loop)
            except RuntimeError:  # the pool is shut down (the node is closing): nothing will be written
                with self._lock:
                    self._queue = [w for w in self._queue if w is not waiting]
                    self._writing = False
                raise
        try:
            return await asyncio.shield(waiting[1])
        except asyncio.CancelledError:
            with self._lock:
                queued = any(w is waiting for w in self._queue)
                if queued:
                    self._queue = [w for w in self._queue if w is not waiting]
            if not queued:
                await asyncio.wait([waiting[1]])
                if not waiting[1].cancelled():
                    waiting[1].exception()  # its outcome was seen: what follows reads it from the store
            raise

    def _write_groups(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the pool: write groups until none is waiting, each one's outcomes handed to the loop."""
        while True:
            with self._lock:
                group, self._queue = self._queue[:self.max_group], self._queue[self.max_group:]
                if not group:
                    self._writing = False
                    return
                self.groups += 1
            try:
                outcomes = self.write_all([item for item, _ in group])
            except Exception as exc:  # nothing of the group was written
                outcomes = [exc] * len(group)
            try:
                loop.call_soon_threadsafe(_settle_group, group, outcomes)
            except RuntimeError:  # the loop is closed: nobody waits for them
                pass


class GroupSend(Generic[T]):
    """Group sending, on the loop: `send(item, size)` answers what `send_all(items)` answers for the item, where
    a group is what was added while `flights` groups were under way (at most `max_items` items and `max_bytes` of
    their sizes; an item larger than that goes alone).  A lone item goes at once; under load, many share one
    request.  `send_all` answers each item's result, or the exception that item raises; an exception it raises
    itself fails its whole group.  An item whose caller is cancelled before its group goes is not sent."""

    def __init__(self, send_all: Callable[[list[T]], Awaitable[list[Any]]], *, max_items: int, max_bytes: int,
                 flights: int = 2) -> None:
        self.send_all, self.max_items, self.max_bytes, self.flights = send_all, max_items, max_bytes, flights
        self._queue: deque[_Queued[T]] = deque()
        self._senders: set[asyncio.Task] = set()  # held: the loop keeps only weak references to tasks
        self._sending = 0  # senders under way (counted down as one finds nothing more to send)
        self.groups = 0  # groups sent (tests, status)
        self.items = 0  # items in them

    async def send(self, item: T, size: int) -> Any:
        return await self.submit(item, size)

    def submit(self, item: T, size: int, ended: Callable[[], None] = lambda: None) -> asyncio.Future:
        """`send`, its answer a future, answered as soon as its group is.  `ended()` once the item has gone with its
        group (whatever its outcome) or was dropped, its future done before its group went: what counts it under
        way counts it until then, even if the future is cancelled while its group is on its way (it still goes)."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(item, size, future, ended))
        if self._sending < self.flights:
            self._sending += 1
            sender = asyncio.ensure_future(self._send_groups())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return future

    @property
    def waiting(self) -> int:
        """Items added and not yet sent (tests, status)."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued nor under way: dropping it loses nothing."""
        return not self._queue and not self._sending

    async def _send_groups(self) -> None:
        try:
            while group := self._take():
                self.groups += 1
                self.items += len(group)
                try:
                    outcomes = await self.send_all([queued.item for queued in group])
                    if len(outcomes) != len(group):  # no caller is left waiting for an answer that never comes
                        raise RuntimeError(f"{len(outcomes)} outcomes for a group of {len(group)}")
                except Exception as exc:
                    outcomes = [exc] * len(group)
                except BaseException:  # cancelled (the sender is closing): its callers are told so
                    for queued in group:
                        queued.future.cancel()
                        queued.ended()
                    raise
                _settle_group([(None, queued.future) for queued in group], outcomes)
                for queued in group:
                    queued.ended()
        finally:
            self._sending -= 1

    async def close(self) -> None:
        """Stop sending: groups under way are cancelled (their callers with them), the queued ones too."""
        while self._queue:
            queued = self._queue.popleft()
            queued.future.cancel()
            queued.ended()
        await stop(*self._senders)

    def _take(self) -> list[_Queued[T]]:
        group: list[_Queued[T]] = []
        size = 0
        while self._queue and len(group) < self.max_items:
            queued = self._queue[0]
            if group and size + queued.size > self.max_bytes:
                break
            self._queue.popleft()
            if queued.future.done():  # its caller went away while it waited: nothing of it is sent
                queued.ended()
            else:
                group.append(queued)
                size += queued.size
        return group


@dataclass(slots=True)
class _Queued(Generic[T]):
    """An item waiting for its group: its size, its caller's answer, and what is told once it is sent or dropped."""
    item: T
    size: int
    future: asyncio.Future
    ended: Callable[[], None]


def _settle_group(group: list[tuple[Any, asyncio.Future]], outcomes: list[Any]) -> None:
    for (_, done), outcome in zip(group, outcomes):
        if done.done():
            continue
        if isinstance(outcome, BaseException):
            done.set_exception(outcome)
        else:
            done.set_result(outcome)


def now_ms() -> int:
    return int(time.time() * 1000)


def _settle(future: asyncio.Future, outcome: tuple[bool, Any]) -> None:
    if future.cancelled():
        return
    ok, value = outcome
    future.set_result(value) if ok else future.set_exception(value)


def jittered(seconds: float, jitter: float) -> float:
    """`seconds` varied by +-jitter of itself, so that nodes started together do not act in lockstep."""
    return seconds * random.uniform(1 - jitter, 1 + jitter) if jitter else seconds


def periodic(name: str, period: Callable[[], float] | float, step: Callable[[], Awaitable[Any]], *,
             jitter: float = 0.0, first: float | None = None) -> Callable[[], Awaitable[None]]:
    """A loop (for a service's `loops()`, run by the Supervisor) that awaits `step()` every `period` seconds (a
    number, or a callable read each round), varied by +-jitter; `first` is the wait before the first round
    (default: one period).  A failed round is logged and the loop goes on."""

    async def loop() -> None:
        wait = first
        while True:
            seconds = period() if callable(period) else period
            await asyncio.sleep(jittered(seconds, jitter) if wait is None else wait)
            wait = None
            try:
                await step()
            except Exception:  # a failed round must never end the loop
                log.exception("%s failed", name)

    return loop


def woken_loop(name: str, wake: asyncio.Event, period: Callable[[], float | None] | float,
               step: Callable[[], Awaitable[Any]], *, wait_first: bool = False) -> Callable[[], Awaitable[None]]:
    """A loop (for a service's `loops()`) that awaits `step()` at once (or after one wait, `wait_first`), then again
    each time `wake` is set or `period` seconds pass (a number, or a callable read each round: None, until `wake` is
    set).  A failed round is logged ("NAME failed") and the loop goes on."""

    async def wait() -> None:
        await woken(wake, period() if callable(period) else period)
        wake.clear()

    async def loop() -> None:
        if wait_first:
            await wait()
        while True:
            try:
                await step()
            except Exception:  # a failed round must never end the loop
                log.exception("%s failed", name)
            await wait()

    return loop


def every(name: str, period: Callable[[], float] | float, step: Callable[[], Awaitable[Any]], *,
          jitter: float = 0.0, first: float | None = None) -> asyncio.Task:
    """`periodic`'s loop as a task started now (for loops not run by the Supervisor)."""
    return asyncio.create_task(periodic(name, period, step, jitter=jitter, first=first)(), name=f"xsc-{name}")


async def woken(event: asyncio.Event, seconds: float | None, *also: asyncio.Event) -> bool:
    """Wait until `event` (or one of `also`) is set or `seconds` have passed (None: until it is set); whether `event`
    is set.  A loop that sleeps until it is woken uses this, never `wait_for(event.wait(), seconds)`: on Python 3.11 a
    cancellation that arrives just as the event is set is lost there (wait_for returns normally), the loop never ends
    and the node's close waits for it forever.  Nor under `asyncio.timeout` in the caller's task, though cheaper:
    before 3.11.3 (Debian 12's 3.11.2) its expiry in a task that once swallowed a cancellation is raised as a
    cancellation."""
    # tasks even when an event is set: the caller always yields
    waiters = [asyncio.ensure_future(e.wait()) for e in (event, *also)]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return event.is_set()


STOP_GRACE = 5.0  # seconds a cancelled task has to end before it is cancelled again


_RUNNING_ON: set[asyncio.Future] = set()  # `to_its_end` steps: the loop holds tasks only weakly


async def to_its_end(step: Awaitable[T], ended: Callable[[], None]) -> T:
    """`step` awaited, and run to its end even if the caller is cancelled meanwhile (then its outcome is dropped);
    `ended()` once it has ended, however.  For a step whose other end goes on regardless (a record asked of the
    node): what counts it under way must count it until it ends, not until its caller does.  A coroutine runs as a
    task of its own; a future (a GroupSend's) is watched as it is."""
    task = asyncio.ensure_future(step)
    _RUNNING_ON.add(task)

    def done(task: asyncio.Future) -> None:
        _RUNNING_ON.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its caller may be gone, and the outcome was the caller's to report
        ended()

    task.add_done_callback(done)
    return await asyncio.shield(task)


async def waited_out(future: asyncio.Future[T], ended: Callable[[T], None] | None = None) -> T:
    """The outcome of `future`, work that goes on whatever its caller does (a write in a thread): a caller cancelled
    meanwhile (a stop, a request cut short) waits for it to end, then its cancellation goes on.  So what the caller
    does once it has ended (its in-memory record of the write) sees it written or not, never under way, and a stop
    that waits for the caller waits for the write: a synced batch, ended in moments.  `ended(outcome)` follows once
    it ended with one (it raised nothing), whether or not the caller was cancelled meanwhile: what the caller keeps of
    a write that landed."""
    try:
        outcome = await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:  # cancelled again (a stop's after its grace): the write still ends first
                continue
        if ended is not None and not future.cancelled() and future.exception() is None:
            ended(future.result())
        raise
    if ended is not None:
        ended(outcome)
    return outcome


async def stop(*tasks: asyncio.Task | None, grace: float = STOP_GRACE) -> None:
    """Cancel background tasks and wait for them to end.  One still running `grace` seconds later lost its
    cancellation (a library that swallows one, as `wait_for` can): it is cancelled again, with a warning naming it,
    until it ends, so that a node's close never waits forever for one task."""
    given = [t for t in tasks if t is not None]
    for task in given:
        task.cancel()
    running = set(given)
    while running:
        _, running = await asyncio.wait(running, timeout=grace)
        for task in running:
            log.warning("task %s did not end when cancelled: cancelling it again", task.get_name())
            task.cancel()
    await asyncio.gather(*given, return_exceptions=True)  # their outcomes are taken: none is reported as lost


async def unless_set(step: Awaitable[Any], event: asyncio.Event) -> bool:
    """Await `step`, cut short if `event` is set first (cancelled and waited for, as `stop` does); whether it ran to
    its end (an exception it raised goes on).  For a wait that something else may make pointless: a stop forced
    while the node still tells its peers it leaves."""
    task, waiter = asyncio.ensure_future(step), asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            await stop(task)
    if task.cancelled():
        return False
    task.result()
    return True


async def at_most(limit: int, calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await `calls` with at most `limit` in flight, taken in the order given (a generator's next call is made
    only when there is room for it); their results in that order.  A round over every peer of a full directory
    at once (probes, subscriptions) kept a thousand connections' objects alive together, each collection's work.

    When a call raises, or this is cancelled, the calls under way are cancelled and waited for, no further call is
    taken, and the exception goes on; a coroutine taken or handed over that never started is closed."""
    given = iter(calls)
    first = next(given, None)
    if first is None:  # nothing to do: no workers (a pass that finds nothing due is the common case)
        return []
    pending = enumerate(itertools.chain([first], given))
    results: dict[int, T] = {}

    async def worker() -> None:
        for i, call in pending:
            results[i] = await call

    count = max(1, limit) if not isinstance(calls, Sized) else max(1, min(limit, len(calls)))
    workers = [asyncio.ensure_future(worker()) for _ in range(count)]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        try:  # the other workers would run on with nobody to wait for them, taking more calls
            await stop(*workers)
        finally:
            # Workers cancelled before their first step took nothing: the first call, made to see whether there
            # was any, would never be awaited (a list's calls after it, made by the caller, are closed too).
            for _, call in (pending if isinstance(calls, Sized) else [(0, first)]):
                if inspect.iscoroutine(call) and inspect.getcoroutinestate(call) == inspect.CORO_CREATED:
                    call.close()
        raise
    return [results[i] for i in range(len(results))]


class Locks(Generic[T]):
    """One holder per key at a time, each key's lock kept only while a caller holds it or waits for it: keys a
    stranger chooses (a provider, a storage index its records name) then leave nothing behind once their work
    ended, however it ended (an error, a cancellation).  A key is dropped with its last user, never while a
    caller waits for it: a lock dropped as its holder let it go and taken afresh would let a newcomer run
    alongside the waiter it was handed to."""

    def __init__(self) -> None:
        self._held: dict[T, tuple[asyncio.Lock, list[int]]] = {}  # key -> its lock, [callers holding or waiting]

    @contextlib.asynccontextmanager
    async def one(self, key: T):
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = (asyncio.Lock(), [0])
        lock, users = held
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._held[key]

    @contextlib.asynccontextmanager
    async def many(self, keys: Iterable[T]):
        """`one` of each of `keys`, taken in their sorted order: two callers that take some keys alike never each
        hold one the other waits for."""
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(keys)):  # type: ignore[type-var]
                await stack.enter_async_context(self.one(key))
            yield

    def locked(self, key: T) -> bool:
        """Whether a caller holds `key` now."""
        held = self._held.get(key)
        return held is not None and held[0].locked()

    def waiting(self, key: T) -> int:
        """Callers waiting for `key` now, its holder aside."""
        held = self._held.get(key)
        return 0 if held is None else held[1][0] - held[0].locked()

    def __len__(self) -> int:
        """Keys held or awaited now (status, tests)."""
        return len(self._held)


def refill(tokens: float, since: float, now: float, rate: float, burst: float) -> float:
    """A token bucket's tokens at `now`: `tokens` at `since`, `rate` more a second, at most `burst`."""
    return min(burst, tokens + max(0.0, now - since) * rate)


class Quota(Protocol):
    """Per-key quotas of work (xsc.node.limits.RateLimiter), as the node hands them to its services: `check` takes
    `cost`, `require` only asks that `amount` be there, each raising QuotaExceeded (429, saying when to come back);
    `take_up_to` takes what there is, up to `wanted`, and says how much."""

    def check(self, key: str, now: float, what: str, cost: int = 1) -> None: ...
    def require(self, key: str, now: float, what: str, amount: float) -> None: ...
    def take_up_to(self, key: str, now: float, wanted: int) -> int: ...


class Pacer:
    """The one token bucket of the node's own work: over any stretch of time at most `burst + rate x elapsed`.

    `start()` waits for a token, in the order asked: at most `rate` starts a second, in bursts of at most `burst`.
    For work that finishes as soon as it starts (probes of addresses that refuse at once): however many may be in
    flight, only so many begin per turn of the event loop, so a request arriving meanwhile is not queued behind
    all of them.  `take(n)` counts `n` used after the fact (bytes read, blocks deleted) and says how long to wait
    before using more; `spent(n)` waits that long."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] | None = None) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate, self.burst = rate, burst
        self._clock = clock or time.monotonic
        self._sleep = sleep or asyncio.sleep
        self._tokens, self._at = float(burst), self._clock()
        self._turns = asyncio.Lock()  # one waiter sleeps at a time; the others wait their turn in order

    async def start(self) -> None:
        async with self._turns:
            while True:
                now = self._clock()
                self._tokens, self._at = refill(self._tokens, self._at, now, self.rate, self.burst), now
                if self._tokens >= 1 - 1e-9:  # (a sleep of exactly the time missing may leave 0.999...)
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep((1 - self._tokens) / self.rate)

    def take(self, n: float) -> float:
        """Count `n` used now (the bucket may go into debt); how long to wait before using more."""
        now = self._clock()
        self._tokens, self._at = refill(self._tokens, self._at, now, self.rate, self.burst) - n, now
        return max(0.0, -self._tokens / self.rate)

    async def spent(self, n: float) -> None:
        """Count `n` used now and wait off any debt."""
        await self._sleep(self.take(n))


RESTART_FIRST = 1.0  # seconds before a crashed loop is started again; doubled each crash in a row ...
RESTART_MOST = 60.0  # ... up to this
RESTART_QUIET = 60.0  # a loop that ran this long without crashing starts from RESTART_FIRST again


class Service(Protocol):
    """What the supervisor runs: `start()` (sync) and `close()` (sync or a coroutine), and optionally
    `loops()`: name -> a function making the coroutine of each background loop the service needs."""

    def start(self) -> None: ...
    def close(self) -> Any: ...


class _Loop:
    def __init__(self, owner: str, name: str, make: Callable[[], Awaitable[Any]], first: float) -> None:
        self.owner, self.name, self.make = owner, name, make
        self.task: asyncio.Task | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.started_at = 0.0
        self.first = self.delay = first
        self.pending: asyncio.TimerHandle | None = None


class Supervisor:
    """Every background loop of the node, and the services that own them.

    `add(name, service)` starts a service (its `start()`), then each loop it names (`loops()`) as a task; the
    supervisor watches them: a loop that ends by an exception is logged and started again after RESTART_FIRST
    seconds (doubling while it keeps crashing, at most RESTART_MOST); one that returns is done.  `close()` stops
    the services in the reverse order they were added, each one's loops first, then its `close()` (one that fails
    stops none of the others).  `status()` says what runs, how often each loop was restarted and its last error."""

    def __init__(self, *, restart_first: float = RESTART_FIRST) -> None:
        self._services: list[tuple[str, Any, list[_Loop]]] = []
        self._closing = False
        self._restart_first = restart_first

    def add(self, name: str, service: Any) -> None:
        service.start()
        loops = [_Loop(name, loop_name, make, self._restart_first)
                 for loop_name, make in getattr(service, "loops", dict)().items()]
        self._services.append((name, service, loops))
        for loop in loops:
            self._start(loop)

    def _start(self, loop: _Loop) -> None:
        loop.pending = None
        if self._closing:
            return
        loop.started_at = time.monotonic()
        loop.task = asyncio.create_task(loop.make(), name=f"xsc-{loop.name}")
        loop.task.add_done_callback(lambda task, loop=loop: self._ended(loop, task))

    def _ended(self, loop: _Loop, task: asyncio.Task) -> None:
        if self._closing or task.cancelled() or loop.task is not task:
            return
        error = task.exception()
        if error is None:
            return  # a loop that ends by itself is done
        loop.restarts += 1
        loop.last_error = f"{type(error).__name__}: {error}"
        if time.monotonic() - loop.started_at >= RESTART_QUIET:
            loop.delay = loop.first
        log.error("loop %s of %s crashed: starting it again in %.0f s", loop.name, loop.owner, loop.delay,
                  exc_info=error)
        loop.pending = asyncio.get_running_loop().call_later(loop.delay, self._start, loop)
        loop.delay = min(RESTART_MOST, loop.delay * 2)

    async def close(self) -> None:
        """Stop every service in the reverse order they were added: its loops, then its `close()`.  A close that
        fails (a full disk refusing its last write) is logged, and the services added before it close all the
        same: each has its own to write and end."""
        self._closing = True
        while self._services:
            name, service, loops = self._services.pop()
            for loop in loops:
                if loop.pending is not None:
                    loop.pending.cancel()
            await stop(*(loop.task for loop in loops))
            try:
                result = service.close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as err:
                from .db import disk_full  # (here: plyvel is no import of every program that runs tasks)

                if not disk_full(err):
                    log.exception("closing %s failed: closing the services before it all the same", name)
                else:  # what it writes as it closes: said once, not as a traceback
                    log.warning("closing %s: the data dir's disk is full, so it could not write all it keeps; "
                                "closing the services before it all the same", name)

    def _loops_of(self, owner: str) -> list[_Loop]:
        return [loop for name, _, loops in self._services if name == owner for loop in loops]

    async def pause(self, owner: str) -> None:
        """Stop the loops of the service added as `owner` (it stays open): until `resume`, nothing runs them."""
        for loop in self._loops_of(owner):
            if loop.pending is not None:
                loop.pending.cancel()
                loop.pending = None
        await stop(*(loop.task for loop in self._loops_of(owner)))

    def resume(self, owner: str) -> None:
        """Start again the loops of `owner` that are not running."""
        for loop in self._loops_of(owner):
            if loop.task is None or loop.task.done():
                self._start(loop)

    def tasks(self, owner: str) -> list[asyncio.Task]:
        """The running tasks of the loops of the service added as `owner`."""
        return [loop.task for name, _, loops in self._services if name == owner for loop in loops
                if loop.task is not None and not loop.task.done()]

    def status(self) -> dict[str, dict[str, Any]]:
        """loop name -> its owner, whether it runs, how often it was restarted and its last error."""
        return {loop.name: {"service": loop.owner, "running": loop.task is not None and not loop.task.done(),
                            "restarts": loop.restarts, "last_error": loop.last_error}
                for _, _, loops in self._services for loop in loops}


def run(main: Coroutine[Any, Any, T], event_loop: str = "asyncio") -> T:
    """`main` run to its end on a new event loop (asyncio.run's): uvloop's, or asyncio's own (`node.event_loop`).
    Without uvloop (a platform it does not build on) it runs on asyncio's, and says so."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on asyncio's event loop (install it, or set "
                        "node.event_loop = \"asyncio\")")
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
