"""The GIL switch interval and an event loop beside threads running Python: why a node sets 1 ms.

Run: .venv/bin/python -m bench.bench_gil [--samples 150] [--threads 2]

A minimal aiohttp server (its own process) answers GET /health after one hop to its default executor, as the
node's /health does, while `--threads` threads of that process run pure Python (a node's CPU pool matching a deal,
clearing a market or parsing a large body).  This process times /health on a fresh connection and on a kept-alive
one every 20 ms, for the switch intervals below; the raw step is the same server with no such thread, measured in
the same run, and every figure is printed as a ratio to it.  The node sets `GIL_SWITCH_INTERVAL`
(xsc/node/app.py); CPython's default is 5 ms.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import time

from xsc.node.app import GIL_SWITCH_INTERVAL

from .common import serve_script
from .report import Report

SERVER = r"""
import asyncio, sys, threading
from aiohttp import web
sys.setswitchinterval(float(sys.argv[2]))
def python_work():
    while True:
        sum(i * i for i in range(20000))
for _ in range(int(sys.argv[3])):
    threading.Thread(target=python_work, daemon=True).start()
async def health(request):
    await asyncio.get_running_loop().run_in_executor(None, len, "x")
    return web.json_response({"status": "pass"})
app = web.Application()
app.router.add_get("/health", health)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
INTERVALS = (0.005, GIL_SWITCH_INTERVAL, 0.0005)


def _get(conn: http.client.HTTPConnection) -> None:
    conn.request("GET", "/health")
    conn.getresponse().read()


def measure(interval: float, threads: int, samples: int) -> dict[str, list[float]]:
    """Seconds per /health on a fresh and on a kept-alive connection, `threads` Python threads beside the loop."""
    with serve_script(SERVER, str(interval), str(threads)) as (port, _):
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        out: dict[str, list[float]] = {"fresh": [], "kept": []}
        for _ in range(samples):
            started = time.perf_counter()
            fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            _get(fresh)
            fresh.close()
            out["fresh"].append(time.perf_counter() - started)
            started = time.perf_counter()
            _get(kept)
            out["kept"].append(time.perf_counter() - started)
            time.sleep(0.02)
        kept.close()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=150, help="/health samples per switch interval")
    parser.add_argument("--threads", type=int, default=2, help="threads running Python beside the event loop")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    raw = measure(GIL_SWITCH_INTERVAL, 0, args.samples)
    raw_p50 = statistics.median(raw["fresh"])
    print(f"raw step: /health on a fresh connection, no Python thread beside the loop: p50 {raw_p50 * 1e3:.2f} ms, "
          f"max {max(raw['fresh']) * 1e3:.2f} ms")
    report = Report("gil")
    report.add("raw: fresh /health p50, loop alone", raw_p50 * 1e3, "ms")
    for interval in INTERVALS:
        got = measure(interval, args.threads, args.samples)
        line = []
        for kind in ("fresh", "kept"):
            values = sorted(got[kind])
            p50, p99, top = values[len(values) // 2], values[int(len(values) * 0.99)], values[-1]
            line.append(f"{kind} p50 {p50 * 1e3:.1f} ms ({p50 / raw_p50:.0f}x raw), p99 {p99 * 1e3:.1f}, "
                        f"max {top * 1e3:.1f} ({top / raw_p50:.0f}x raw)")
            report.add(f"{kind} /health p50 / raw, switch {interval * 1e3:g} ms", p50 / raw_p50, "x")
            report.add(f"{kind} /health max / raw, switch {interval * 1e3:g} ms", top / raw_p50, "x")
        mark = " (the node's)" if interval == GIL_SWITCH_INTERVAL else ""
        print(f"switch interval {interval * 1e3:g} ms{mark}, {args.threads} Python threads: " + "; ".join(line))
    report.write()


if __name__ == "__main__":
    main()
