"""The epoch ticker keeps the engine's epoch at the ticks elapsed on the clock, however late it wakes."""

from __future__ import annotations

import dataclasses
import threading

from tests.support.compute import prepared_wasi
from tests.support.waiting import eventually
from xsc.compute import sandbox
from xsc.compute.engine import IDLE_AFTER, EpochTicker, make_engine, owed_ticks
from xsc.compute.limits import Limits
from xsc.compute.values import Signature
from xsc.compute.wasi_io import Streams


class CountingEngine:
    def __init__(self) -> None:
        self.epoch = 0
        self.changed = threading.Condition()

    def increment_epoch(self) -> None:
        with self.changed:
            self.epoch += 1
            self.changed.notify_all()


def test_a_late_wake_up_adds_every_tick_that_passed():
    """A ticker starved for 1.5 s (the clock jumps) catches up at its next wake-up, instead of adding one tick
    per wake-up and so letting a call run for as many late wake-ups as its deadline has ticks."""
    now = [100.0]
    engine = CountingEngine()
    ticker = EpochTicker(engine, tick=0.01, clock=lambda: now[0])
    ticker.start()
    try:
        with ticker.running():  # a call under way: the ticker stays awake
            now[0] += 1.5  # 150 ticks pass while the ticker is not running
            with engine.changed:
                assert engine.changed.wait_for(lambda: engine.epoch >= 150, timeout=30)
            now[0] += 0.5
            with engine.changed:
                assert engine.changed.wait_for(lambda: engine.epoch >= 200, timeout=30)
    finally:
        ticker.stop()
    assert engine.epoch == 200  # never ahead of the clock: a call is never cut short


def test_one_ticker_keeps_each_of_its_engines_epochs_and_is_each_ones_ticker():
    """A node's compute has two engines (the second for the calls tried on its event loop) and one ticker: each
    engine's epoch follows the clock, each names the ticker as its own, and a stop leaves neither named."""
    now = [100.0]
    engines = CountingEngine(), CountingEngine()
    ticker = EpochTicker(*engines, tick=0.01, clock=lambda: now[0])
    ticker.start()
    try:
        with ticker.running():
            now[0] += 0.5  # 50 ticks
            assert owed_ticks(engines[0]) == owed_ticks(engines[1])
            for engine in engines:
                with engine.changed:
                    assert engine.changed.wait_for(lambda: engine.epoch >= 50, timeout=30)
            assert owed_ticks(engines[1]) == 0
    finally:
        ticker.stop()
    assert [engine.epoch for engine in engines] == [50, 50]
    now[0] += 1.0
    assert owed_ticks(engines[0]) == owed_ticks(engines[1]) == 0  # stopped: no engine's ticker any longer


def test_a_stop_that_comes_as_the_ticker_falls_asleep_ends_it():
    """A stop between the ticker's wake-up and its going to sleep is not slept through: the node's close would wait
    on the ticker for ever."""
    now = [0.0]
    engine = CountingEngine()
    ticker = EpochTicker(engine, tick=0.01, clock=lambda: now[0])
    stopper = threading.Thread(target=ticker.stop)

    def clock() -> float:
        if threading.current_thread().name == "xsc-epoch" and not stopper.is_alive() and stopper.ident is None:
            stopper.start()  # as the ticker finds itself idle, the stop comes ...
            ticker._stop.wait(0.5)  # ... and sets its flags, if it can before the ticker goes on
        return now[0]

    now[0] = IDLE_AFTER + 1.0  # idle since its start: its first wake-up puts it to sleep
    ticker._clock = clock
    ticker.start()
    eventually(lambda: stopper.ident is not None, "the stop begun")
    stopper.join(30)
    assert not stopper.is_alive() and not ticker.alive


def test_an_idle_ticker_sleeps_and_the_call_that_wakes_it_owes_nothing():
    """An idle node is not woken a hundred times a second; the epoch stands still while no call runs, and the
    next call's ticks count from when it started, not from before the sleep."""
    now = [100.0]
    engine = CountingEngine()
    ticker = EpochTicker(engine, tick=0.125, clock=lambda: now[0])  # the clock's steps are whole ticks, exactly
    ticker.start()
    try:
        with ticker.running():
            now[0] += 0.5
            with engine.changed:
                assert engine.changed.wait_for(lambda: engine.epoch >= 4, timeout=30)
        assert not ticker.sleeping.is_set()
        now[0] += IDLE_AFTER
        assert ticker.sleeping.wait(30)
        now[0] += 3600  # an hour without a call: nothing to tick for
        with ticker.running():
            assert not ticker.sleeping.is_set() and owed_ticks(engine) == 0
            now[0] += 0.25
            with engine.changed:
                assert engine.changed.wait_for(lambda: engine.epoch >= 6, timeout=30)
    finally:
        ticker.stop()
    assert engine.epoch == 6


def test_the_clock_standing_still_adds_nothing():
    engine = CountingEngine()
    ticker = EpochTicker(engine, tick=0.001, clock=lambda: 5.0)
    ticker.start()
    threading.Event().wait(0.05)  # some wake-ups, no time on the clock
    ticker.stop()
    assert engine.epoch == 0


def test_a_call_starting_while_the_ticker_is_late_gets_what_it_owes_on_top_of_its_deadline():
    """Else its deadline would count from an epoch behind the clock, and the catch-up would cut it short."""
    now = [0.0]
    engine = CountingEngine()
    ticker = EpochTicker(engine, tick=3600, clock=lambda: now[0])  # it will not wake during the test
    ticker.start()
    try:
        assert owed_ticks(engine) == 0
        now[0] += 0.5 * 3600
        assert owed_ticks(engine) == 0
        now[0] += 10 * 3600
        assert owed_ticks(engine) == 10 and engine.epoch == 0
    finally:
        ticker.stop()
    assert owed_ticks(engine) == 0  # a stopped ticker is forgotten


def test_a_call_gets_its_whole_deadline_however_long_its_set_up_took():
    """The deadline counts from the moment the module starts, as the call's duration does: a thread that waits
    for a core, or a process stopped, between the Store's making and the call takes nothing from the call."""
    engine = make_engine()
    prepared = prepared_wasi(engine, "cgi")
    now = [0.0]
    ticker = EpochTicker(engine, tick=0.01, clock=lambda: now[0])
    ticker.start()

    @dataclasses.dataclass
    class StalledStreams(Streams):
        def config(self, argv, stdout, stderr):
            now[0] += 2.0  # the call's whole 1 s deadline, twice, passes while its streams are set up ...
            eventually(lambda: owed_ticks(engine) == 0, "the ticker's catch-up")  # ... and the ticker counted it
            return super().config(argv, stdout, stderr)

    try:
        outcome = sandbox.run(engine, prepared, "_start", Signature((), ()), [], Limits(10**7, 1 << 20, 1.0), ["cgi"],
                              streams=StalledStreams())
    finally:
        ticker.stop()
    assert outcome.trap_kind is None, outcome.message
    assert b"Content-Type" in outcome.stdout
