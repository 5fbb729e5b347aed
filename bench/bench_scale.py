"""What one node of a devnet costs as the devnet grows: idle CPU, memory and peer traffic per node, and a put and get.

    python -m bench.bench_scale [--sizes 6,8,16,32,64] [--settle 60] [--idle 60] [--size 64] [--rounds 3]
                                [--no-transfer]

For each size N, one after the other on this machine: `Devnet(N)` started, then waited for until every node knows
every other (or 300 s; the nodes still lagging are counted), left idle for --settle seconds, then for --idle seconds
over which each node's CPU (/proc/PID/stat), its anonymous memory at the end (/proc/PID/status RssAnon) and the
bytes its own requests to peers sent and received (`xsc_peer_bytes`, node/metrics.py) are read, each node over its
own window; node-0's allocation bytes per round (`GET /v1/allocation`); then --rounds puts and gets of --size MiB
from node-0 (`xsc store put`, `store get` to /dev/null: the median and the first, which also opens node-0's
connections to the holders, are printed; the ratios are the medians'). Prints a row per size and the ratios the
network's growth is held to: idle CPU, memory and bytes sent per node at the largest size against the size 8
(targets at most 1.2x, 1.2x, 1.5x), and put and get at 32 nodes against 6 (at least 0.8x). All nodes share this
machine's cores: from about 32 nodes their idling alone takes a good part of them, which is what the figures are
about.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from xsc.devnet import Devnet, NodeProcess
from xsc.storage.core.capability import Capability

from .bench_network import _file, _put_get
from .common import UNLIMITED_USER, cpu_seconds, run_xsc_measured
from .report import Report

MiB = 1024 * 1024
PEERED_TIMEOUT = 300.0
_TRAFFIC = re.compile(r'^xsc_peer_bytes_total\{direction="(sent|received)",route="([^"]*)"\} (\S+)$', re.M)


@dataclass
class Row:
    nodes: int
    up_s: float
    lagging: int
    cpu_pct: float  # of one core, per node, idle
    anon_mib: float  # per node, at the end of the idle window
    sent_per_min: float  # bytes per node per minute, idle
    received_per_min: float
    alloc_bytes_per_round: float | None  # node-0's
    sent_by_route: dict[str, float]  # bytes per node per minute, idle, by the peer route they went to
    datagrams_per_min: float  # the hash table's UDP datagrams sent per node per minute, idle (not in the bytes)
    put_mbs: float | None = None  # the median of the rounds
    get_mbs: float | None = None
    first_put_mbs: float | None = None  # the first round's
    first_get_mbs: float | None = None
    far_get_mbs: float | None = None  # the same file got from a node that holds none of it
    far_by_table: bool | None = None  # ... which found its holders through the hash table


def _get(node: NodeProcess, path: str) -> bytes:
    request = urllib.request.Request(node.url + path, headers={"Authorization": f"Bearer {node.token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read()


def _traffic(node: NodeProcess) -> dict[tuple[str, str], float]:
    """(direction, route) -> bytes the node's requests to peers have moved so far."""
    return {(way, route): float(value) for way, route, value in _TRAFFIC.findall(_get(node, "/metrics").decode())}


def _per_minute(before: list[dict], after: list[dict], minutes: float) -> dict[tuple[str, str], float]:
    """Bytes per node per minute moved between two readings of every node, by (direction, route)."""
    moved: dict[tuple[str, str], float] = {}
    for b, a in zip(before, after):
        for key, value in a.items():
            moved[key] = moved.get(key, 0.0) + value - b.get(key, 0.0)
    return {key: value / len(after) / minutes for key, value in moved.items()}


def _datagrams(node: NodeProcess) -> int:
    return json.loads(_get(node, "/v1/node/status"))["dht"]["sent"]


def _anon_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Reading:
    """One node's counters at one moment: CPU seconds, peer bytes by (direction, route), datagrams sent."""
    at: float
    cpu: float
    traffic: dict[tuple[str, str], float]
    datagrams: int


def _read(node: NodeProcess) -> Reading:
    # The HTTP readings first and the clock and CPU last: with 64 nodes on 2 cores a node may take seconds to
    # answer, and that wait must not fall inside the window its CPU is divided by.
    traffic, datagrams = _traffic(node), _datagrams(node)
    return Reading(time.perf_counter(), cpu_seconds(node.pid), traffic, datagrams)


def _idle_row(count: int, up_s: float, lagging: int, nodes: list[NodeProcess], idle: float) -> Row:
    """Each node's CPU, bytes and datagrams per second of its own window (from its first reading to its second,
    `idle` seconds apart), averaged over the nodes."""
    before = [_read(n) for n in nodes]
    after = []
    for node, b in zip(nodes, before):
        time.sleep(max(0.0, b.at + idle - time.perf_counter()))
        after.append(_read(node))
    minutes = [(a.at - b.at) / 60 for a, b in zip(after, before)]
    moved: dict[tuple[str, str], float] = {}
    for b, a, m in zip(before, after, minutes):
        for key, value in a.traffic.items():
            moved[key] = moved.get(key, 0.0) + (value - b.traffic.get(key, 0.0)) / m / len(nodes)
    cpu_pct = sum(100 * (a.cpu - b.cpu) / (m * 60) for a, b, m in zip(after, before, minutes)) / len(nodes)
    datagrams = sum((a.datagrams - b.datagrams) / m for a, b, m in zip(after, before, minutes)) / len(nodes)
    return Row(count, up_s, lagging, cpu_pct, sum(_anon_mib(n.pid) for n in nodes) / len(nodes),
               sum(v for (way, _), v in moved.items() if way == "sent"),
               sum(v for (way, _), v in moved.items() if way == "received"), None,
               {route: round(v) for (way, route), v in sorted(moved.items(), key=lambda kv: -kv[1])
                if way == "sent" and v > 0}, datagrams)


def _measure(root: Path, count: int, idle: float, settle: float, src: Path | None, rounds: int) -> Row:
    started = time.perf_counter()
    with Devnet(root, count, env=UNLIMITED_USER).start(timeout=PEERED_TIMEOUT) as net:
        lagging = len(net.wait_peered(PEERED_TIMEOUT))
        up_s = time.perf_counter() - started
        time.sleep(settle)  # joining's own traffic (first probes, first offers) is not idling
        nodes = list(net)
        row = _idle_row(count, up_s, lagging, nodes, idle)
        row.alloc_bytes_per_round = json.loads(_get(net.first, "/v1/allocation")).get("bytes_per_round")
        print(f"{count} nodes, idle: {asdict(row)}", flush=True)
        if src is not None:
            size, puts, gets, placed = src.stat().st_size, [], [], None
            for _ in range(rounds):
                try:
                    put_s, get_s, placed = _put_get(net.first.data_dir, src)
                except AssertionError as failed:  # what xsc said is in the output above
                    print(f"{count} nodes: the {failed}", flush=True)
                    break
                puts.append(size / put_s / 1e6)
                gets.append(size / get_s / 1e6)
                print(f"{count} nodes: put {puts[-1]:.1f} MB/s, get {gets[-1]:.1f} MB/s", flush=True)
            if puts:
                row.put_mbs, row.get_mbs = statistics.median(puts), statistics.median(gets)
                row.first_put_mbs, row.first_get_mbs = puts[0], gets[0]
                _far_get(nodes, placed, row, size)
    return row


def _far_get(nodes: list[NodeProcess], placed: dict, row: Row, size: int) -> None:
    """The file got from a node that holds none of its shares and never saw its put: through the hash table?"""
    far = next((n for n in nodes[1:] if json.loads(_get(n, "/health"))["serviceId"] not in placed["placement"]), None)
    if far is None:
        return
    with open(os.devnull, "wb") as devnull:
        seconds, _, rc = run_xsc_measured(["--data-dir", str(far.data_dir), "store", "get", placed["capability"]],
                                          stdout=devnull)
    if rc == 0:
        si = Capability.parse(placed["capability"]).storage_index.hex()[:16]
        row.far_get_mbs = size / seconds / 1e6
        row.far_by_table = f"found the holders of {si} through the hash table" in far.log.read_text()


def _ratio(rows: dict[int, Row], field: str, big: int, small: int) -> float | None:
    if big not in rows or small not in rows:
        return None
    a, b = getattr(rows[big], field), getattr(rows[small], field)
    return a / b if a is not None and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="6,8,16,32,64", help="devnet sizes, comma-separated")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idling measured at each size")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds left idle after peering before the measured idling begins")
    parser.add_argument("--size", type=int, default=64, help="MiB put and got from node-0")
    parser.add_argument("--rounds", type=int, default=3, help="puts and gets at each size (their median counts)")
    parser.add_argument("--no-transfer", action="store_true", help="measure idling only")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    load_before = os.getloadavg()
    rows: dict[int, Row] = {}
    with tempfile.TemporaryDirectory(prefix="xsc-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        src = None
        if not args.no_transfer:
            src = tmp / "input.bin"
            _file(src, args.size * MiB)
        for count in sizes:
            print(f"{count} nodes: starting", flush=True)
            rows[count] = _measure(tmp / f"n{count}", count, args.idle, args.settle, src, max(1, args.rounds))
            print(f"{count} nodes: {asdict(rows[count])}", flush=True)
    print(f"load average {load_before[0]:.2f} as the run began, {os.getloadavg()[0]:.2f} as it ended "
          f"({os.cpu_count()} cores)")
    print(f"{'nodes':>5} {'up s':>6} {'lag':>4} {'cpu %':>6} {'anon MiB':>8} {'sent/min':>10} {'recv/min':>10} "
          f"{'alloc B/rd':>10} {'put MB/s':>8} {'get MB/s':>8}")
    for r in rows.values():
        print(f"{r.nodes:>5} {r.up_s:>6.1f} {r.lagging:>4} {r.cpu_pct:>6.2f} {r.anon_mib:>8.1f} "
              f"{r.sent_per_min:>10,.0f} {r.received_per_min:>10,.0f} "
              f"{'-' if r.alloc_bytes_per_round is None else f'{r.alloc_bytes_per_round:,.0f}':>10} "
              f"{'-' if r.put_mbs is None else f'{r.put_mbs:.1f}':>8} {'-' if r.get_mbs is None else f'{r.get_mbs:.1f}':>8}")
    for r in rows.values():
        if r.first_put_mbs is not None:
            print(f"{r.nodes:>5} nodes: the first put and get {r.first_put_mbs:.1f} and {r.first_get_mbs:.1f} MB/s "
                  f"(the medians above: {r.put_mbs:.1f} and {r.get_mbs:.1f})")
    for r in rows.values():
        if r.far_get_mbs is not None:
            print(f"{r.nodes:>5} nodes: a get from a node holding none of the file {r.far_get_mbs:.1f} MB/s, "
                  f"its holders found through the hash table: {r.far_by_table}")
    print("hash table datagrams sent per node per minute, idle: "
          + ", ".join(f"{r.nodes} nodes {r.datagrams_per_min:,.0f}" for r in rows.values()))
    print("peer bytes sent per node per minute, idle, by route (the largest six):")
    for r in rows.values():
        print(f"{r.nodes:>5}  " + ", ".join(f"{k} {v:,.0f}" for k, v in list(r.sent_by_route.items())[:6]))
    report = Report("scale")
    for r in rows.values():
        report.add(f"{r.nodes} nodes: idle CPU per node", r.cpu_pct, "% of a core")
        report.add(f"{r.nodes} nodes: anonymous memory per node", r.anon_mib, "MiB")
        report.add(f"{r.nodes} nodes: peer bytes sent per node per minute", r.sent_per_min, "B")
    big = max(sizes)
    for field, what, target, op, small in (("cpu_pct", "idle CPU per node", 1.2, "<=", 8),
                                           ("anon_mib", "anonymous memory per node", 1.2, "<=", 8),
                                           ("sent_per_min", "peer bytes sent per node per minute", 1.5, "<=", 8)):
        ratio = _ratio(rows, field, big, small)
        if ratio is not None:
            report.add(f"{what}, {big} nodes / {small}", ratio, "x", target=target, op=op)
    for field, what in (("put_mbs", "put"), ("get_mbs", "get")):
        ratio = _ratio(rows, field, 32, 6)
        if ratio is not None:
            report.add(f"{args.size} MiB {what}, 32 nodes / 6 (medians)", ratio, "x", target=0.8, op=">=")
        first = _ratio(rows, f"first_{field}", 32, 6)
        if first is not None:
            report.add(f"{args.size} MiB {what}, 32 nodes / 6 (first rounds)", first, "x")
    report.write()


if __name__ == "__main__":
    main()
