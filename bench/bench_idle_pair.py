"""Two versions of the code idling side by side: each one's idle CPU per node, and the ratio, over the same windows.

    python -m bench.bench_idle_pair [BEFORE_DIR AFTER_DIR] [--nodes 20] [--settle 30] [--seconds 40] [--windows 3]

BEFORE_DIR and AFTER_DIR are checkouts of the project (a `git worktree` of each commit); each devnet's nodes import
`xsc` from their own (PYTHONPATH).  Both devnets start together, wait until every node knows every other, idle for
--settle seconds, then for --windows windows of --seconds each the CPU of every node (/proc/PID/stat) is read at
the same moments.  The machine's speed and its other load move both alike, so their ratio says what a change does
to an idle node's cost where one bench run after another cannot (one 8-node devnet gave 0.66 to 1.93 % of a core
per node in runs an hour apart).  The same directory twice (the default: this checkout) shows the noise of the ratio
itself.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xsc.devnet import Devnet

from .common import UNLIMITED_USER, cpu_seconds
from .report import Report

PEERED_TIMEOUT = 600.0
PROJECT = Path(__file__).resolve().parent.parent


def _per_node(nets: list[Devnet], seconds: float) -> list[float]:
    """% of a core per node of each devnet over one window of `seconds`."""
    before = [[cpu_seconds(node.pid) for node in net] for net in nets]
    started = time.perf_counter()
    time.sleep(seconds)
    after = [[cpu_seconds(node.pid) for node in net] for net in nets]
    elapsed = time.perf_counter() - started
    return [100 * sum(b - a for a, b in zip(old, new)) / len(old) / elapsed for old, new in zip(before, after)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, nargs="?", default=PROJECT, help="checkout of the code before the change")
    parser.add_argument("after", type=Path, nargs="?", default=PROJECT, help="checkout of the code after it")
    parser.add_argument("--nodes", type=int, default=20, help="nodes in each devnet")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds idle before the first window")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of a window")
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xsc-bench-pair-") as tmp:
        nets = [Devnet(Path(tmp) / name, args.nodes, env={**UNLIMITED_USER, "PYTHONPATH": str(code.resolve())})
                for name, code in (("before", args.before), ("after", args.after))]
        try:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda net: net.start(timeout=PEERED_TIMEOUT), nets))
                lagging = list(pool.map(lambda net: len(net.wait_peered(PEERED_TIMEOUT)), nets))
            print(f"{args.nodes} nodes each; not yet knowing every other: before {lagging[0]}, after {lagging[1]}")
            time.sleep(args.settle)
            ratios = []
            for window in range(args.windows):
                before, after = _per_node(nets, args.seconds)
                ratios.append(after / before)
                print(f"window {window + 1}: % of a core per node, before {before:.3f}, after {after:.3f}: "
                      f"{ratios[-1]:.3f}x", flush=True)
        finally:
            for net in nets:
                net.stop()
    report = Report("idle_pair")
    report.add(f"idle CPU per node, after / before, {args.nodes} nodes (median of {args.windows} windows)",
               statistics.median(ratios), "x")
    report.write()


if __name__ == "__main__":
    main()
