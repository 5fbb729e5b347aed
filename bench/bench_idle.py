"""What an idle node costs as its network grows: CPU per node per minute, by thread, at 3, 7 and 15 nodes.

    python -m bench.bench_idle [--sizes 3,7,15] [--seconds 20]

For each size N, one after the other on this machine: `Devnet(N)` started, then waited for until it has settled
(every node knows every other, and every node's market holds the offer of every peer it wants: `GET
/v1/market/status`, `peers_in_book` = `peers`), then left alone for --seconds while the CPU each thread of each node
ran is read (/proc/PID/task/TID/schedstat, nanoseconds) with the times the thread was woken (its voluntary context
switches).  Prints, per size, the CPU ms per node per minute (mean and busiest node), the event loop's thread (the
main one) apart from the others, its wake-ups a second, and the ratio to the raw step measured in the same run: a
bare asyncio loop in a process of its own whose timers wake it as often as a node's loop was woken, each wake-up
doing nothing (the least an idle node waking so often could spend).  Then how a node's cost grows with the network:
the largest size's against the smallest's, a figure with no target: below 7 nodes a node's neighbourhood (the peers
it recognises, at most `market.recognised_at_most`, 6) is the whole network, and what a node sends and answers grows
with it by design until it is full; that a node's cost stays flat past that is bench_scale's target (8 nodes against
64).  The threads other than the event loop are named by their `comm`
(Python names them `xsc`, as the process); a node's idle work is nearly all on its event loop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from xsc.devnet import Devnet, get_json

from .common import UNLIMITED_USER
from .report import Report

SETTLE_TIMEOUT = 60.0  # seconds for a devnet to settle; the nodes still lagging are counted and the run goes on

# A bare loop woken `rate` times a second by a timer that does nothing, for `seconds`: prints the CPU seconds the
# process spent meanwhile (the interpreter's start, the loop's making and the exit apart).
_BARE_LOOP = """
import asyncio, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
async def main():
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    def tick():
        if loop.time() < end:
            loop.call_later(1 / rate, tick)
    began = time.process_time()
    tick()
    await asyncio.sleep(seconds)
    print(time.process_time() - began)
asyncio.run(main())
"""


@dataclass
class Sample:
    ns: int  # nanoseconds on a CPU (schedstat)
    wakeups: int  # voluntary context switches


def _threads(pid: int) -> dict[int, tuple[str, Sample]]:
    """Each live thread of `pid`: its comm and what it ran so far (threads ending meanwhile are left out)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except (OSError, ValueError):
            continue
        wakeups = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt"))
        out[int(tid)] = (comm, Sample(ns, wakeups))
    return out


def _settled(net: Devnet) -> bool:
    """Every node knows every other, and holds the market offer of every peer it wants."""
    if net.lagging():
        return False
    for node in net:
        answer = get_json(node.url + "/v1/market/status", node.token)
        if answer is None or answer[0] != 200 or answer[1]["peers_in_book"] < answer[1]["peers"]:
            return False
    return True


@dataclass
class Row:
    nodes: int
    settle_s: float
    settled: bool
    loop_ms: list[float]  # per node, the event loop's thread, CPU ms a minute
    other_ms: list[float]  # per node, every other thread together
    wakeups: float  # the event loop's wake-ups a second, the mean over the nodes
    by_comm: dict[str, float]  # other threads' CPU ms a minute per node, by comm


def _measure(n: int, seconds: float, root: Path) -> Row:
    net = Devnet(root / f"devnet-{n}", n, env=UNLIMITED_USER)
    with net:
        net.start(120)
        began = time.monotonic()
        while not (settled := _settled(net)) and time.monotonic() - began < SETTLE_TIMEOUT:
            time.sleep(0.5)
        settle_s = time.monotonic() - began
        before = {node.pid: _threads(node.pid) for node in net}
        started = time.monotonic()
        time.sleep(seconds)
        after = {node.pid: _threads(node.pid) for node in net}
        elapsed = time.monotonic() - started
    per_minute = 60 / elapsed / 1e6  # ns over the window -> ms a minute
    loop_ms, other_ms, wakeups, by_comm = [], [], 0.0, {}
    for pid, threads in after.items():
        other = 0.0
        for tid, (comm, sample) in threads.items():
            old = before[pid].get(tid, (comm, Sample(0, 0)))[1]
            ms = (sample.ns - old.ns) * per_minute
            if tid == pid:
                loop_ms.append(ms)
                wakeups += (sample.wakeups - old.wakeups) / elapsed
            else:
                other += ms
                by_comm[comm] = by_comm.get(comm, 0.0) + ms / n
        other_ms.append(other)
    return Row(n, settle_s, settled, loop_ms, other_ms, wakeups / n, by_comm)


def _bare_loop_ms(wakeups: float, seconds: float) -> float:
    """CPU ms a minute of a bare asyncio loop woken `wakeups` times a second by a timer that does nothing."""
    out = subprocess.run([sys.executable, "-c", _BARE_LOOP, str(max(wakeups, 0.1)), str(seconds)], check=True,
                         capture_output=True, text=True).stdout
    return float(out) * 1000 * 60 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,7,15", help="devnet sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="the idle window measured at each size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="xsc-bench-idle-") as tmp:
        for n in sizes:
            rows.append(_measure(n, args.seconds, Path(tmp)))
    wakeups = max(r.wakeups for r in rows)
    bare = _bare_loop_ms(wakeups, args.seconds)
    print(f"idle window {args.seconds:.0f} s per size; load average {os.getloadavg()[0]:.2f} (2 cores)")
    print(f"raw: a bare asyncio loop woken {wakeups:.1f} times a second by timers: {bare:.1f} ms of CPU a minute")
    print(f"{'nodes':>5} {'settled s':>9} {'ms/min/node':>11} {'busiest':>8} {'loop':>7} {'others':>7} "
          f"{'wakeups/s':>9} {'x raw':>6}")
    report = Report("idle")
    report.add("raw: bare asyncio loop woken as often as a node's, CPU", bare, "ms/min")
    for r in rows:
        total = [a + b for a, b in zip(r.loop_ms, r.other_ms)]
        mean = sum(total) / len(total)
        print(f"{r.nodes:5d} {r.settle_s:9.1f}{' ' if r.settled else '!'} {mean:10.1f} {max(total):8.1f} "
              f"{sum(r.loop_ms) / len(total):7.1f} {sum(r.other_ms) / len(total):7.1f} {r.wakeups:9.1f} "
              f"{mean / bare if bare else float('nan'):6.1f}")
        others = ", ".join(f"{comm} {ms:.1f}" for comm, ms in sorted(r.by_comm.items(), key=lambda kv: -kv[1])[:4])
        print(f"      other threads by comm, ms/min/node: {others or 'none'}")
        report.add(f"{r.nodes} nodes: idle CPU per node", mean, "ms/min")
        report.add(f"{r.nodes} nodes: the event loop's wake-ups per node", r.wakeups, "/s")
    if not all(r.settled for r in rows):
        print("! not settled within the timeout: measured all the same")
    first, last = rows[0], rows[-1]
    growth = (sum(last.loop_ms) + sum(last.other_ms)) / last.nodes / (
        (sum(first.loop_ms) + sum(first.other_ms)) / first.nodes)
    print(f"a node's idle CPU at {last.nodes} nodes against {first.nodes}: {growth:.2f} x")
    report.add(f"idle CPU per node, {last.nodes} nodes x {first.nodes}", growth, "x")
    report.write()


if __name__ == "__main__":
    main()
