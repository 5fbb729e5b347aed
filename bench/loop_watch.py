"""`python bench/loop_watch.py <xsc arguments>`: the real `xsc` CLI, whose node reports in its log what holds its
event loop: a watchdog thread reads the loop thread's own CPU clock every 5 ms, and when one callback has used
more than XSC_LOOP_WATCH_MS (default 30) ms of CPU it prints that callback's stack once, with its CPU and wall
times so far.  CPU time, not wall time: on a loaded machine a callback of 5 ms of work can take 200 ms of wall
time while the loop waits for a core, and that is the machine, not the node.  Used by
`python -m bench.bench_attacks --watch` (the log lines start with `loop-watch[MONOTONIC]:`).  The node runs on
asyncio's loop under the watch, whatever node.event_loop says."""

from __future__ import annotations

import asyncio.events
import gc
import os
import sys
import threading
import time
import traceback

LIMIT = float(os.environ.get("XSC_LOOP_WATCH_MS", "30")) / 1000
_state: dict = {}  # the callback running on the loop thread: its start (cpu, wall) and whether it was reported
_run = asyncio.events.Handle._run


def _timed(self) -> None:
    if "clock" not in _state:
        _state["thread"] = threading.get_ident()
        _state["clock"] = time.pthread_getcpuclockid(_state["thread"])
        threading.Thread(target=_watch, name="loop-watch", daemon=True).start()
    if threading.get_ident() != _state["thread"]:  # another thread's loop: not the node's
        return _run(self)
    _state["current"] = (time.clock_gettime(_state["clock"]), time.perf_counter(), False)
    try:
        _run(self)
    finally:
        started = _state.pop("current", None)
        if started is not None and started[2]:
            cpu = time.clock_gettime(_state["clock"]) - started[0]
            samples = sorted(_state.get("samples", {}).items(), key=lambda kv: -kv[1])[:8]
            print(f"loop-watch[{time.monotonic():.3f}]: done after {cpu * 1000:.0f} ms cpu, {(time.perf_counter() - started[1]) * 1000:.0f}"
                  f" ms wall: {self!r:.200}; samples every 5 ms after the first report: "
                  + "; ".join(f"{n}x {where}" for where, n in samples), file=sys.stderr, flush=True)


def _where(frame) -> str:
    """The innermost frame of xsc's own code (else the innermost frame) as `file:line function`."""
    inner = frame
    while frame is not None:
        if "/xsc/" in frame.f_code.co_filename:
            return f"{frame.f_code.co_filename.rsplit('/xsc/', 1)[1]}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return f"{inner.f_code.co_filename.rsplit('/', 1)[-1]}:{inner.f_lineno} {inner.f_code.co_name}" if inner else "?"


def _watch() -> None:
    """Past the limit, print the callback's stack once, then sample where it is every 5 ms until it ends (the
    samples are printed with its end: where its CPU went)."""
    loop_thread = _state["thread"]
    while True:
        time.sleep(0.005)
        current = _state.get("current")
        if current is None:
            continue
        frame = sys._current_frames().get(loop_thread)
        if current[2]:
            if frame is not None:
                where = _where(frame)
                _state["samples"][where] = _state["samples"].get(where, 0) + 1
            continue
        cpu = time.clock_gettime(_state["clock"]) - current[0]
        if cpu > LIMIT:
            stack = "".join(traceback.format_stack(frame, limit=14)) if frame else "(no frame)"
            if _state.get("current") is current:
                _state["samples"] = {}
                _state["current"] = (*current[:2], True)
                print(f"loop-watch[{time.monotonic():.3f}]: a callback has held the loop {cpu * 1000:.0f} ms of cpu, "
                      f"{(time.perf_counter() - current[1]) * 1000:.0f} ms wall, in:\n{stack}", file=sys.stderr,
                      flush=True)


_gc_started: list[float] = []


def _gc(phase: str, info: dict) -> None:
    """Report every garbage collection that takes more than half the limit (a pause of the whole process)."""
    if phase == "start":
        _gc_started[:] = [time.thread_time(), time.perf_counter()]
    elif _gc_started:
        cpu = time.thread_time() - _gc_started[0]
        if cpu > LIMIT / 2:
            print(f"loop-watch[{time.monotonic():.3f}]: gc of generation {info['generation']} took {cpu * 1000:.0f} ms "
                  f"cpu, {(time.perf_counter() - _gc_started[1]) * 1000:.0f} ms wall ({info['collected']} collected; "
                  f"{len(gc.get_objects())} objects tracked, {gc.get_freeze_count()} frozen)", file=sys.stderr,
                  flush=True)


gc.callbacks.append(_gc)
asyncio.events.Handle._run = _timed
os.environ["XSC_NODE_EVENT_LOOP"] = "asyncio"  # the watch times asyncio's callbacks: uvloop runs its own

if __name__ == "__main__":
    from xsc.cli import main

    sys.argv[0] = "xsc"
    main()
