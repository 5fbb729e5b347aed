"""Web functions against a minimal aiohttp handler and a store get, measured in the same run.

    python -m bench.bench_web [--seconds S] [--size MIB]

Starts a node process serving fixtures/wasm/cgi.wasm at /fn/hello/ on its web listener, and the same module's
`files` entrypoint with a stored file of --size MiB (default 64) mounted; then times, one after the other:
  minimal   GET on a minimal aiohttp handler answering a few bytes (its own process): the floor of any HTTP server
  hello     GET /fn/hello/ on the node's web listener (a run in the sandbox, metered, recorded, charged)
at concurrency 1 and 8 for --seconds each, and
  get       `xsc store get CAP -o FILE` of the stored file
  served    GET /fn/site/data of the same file through the function (read from its mount, sent whole)
and prints hello's rate as a ratio to minimal's (target at least 0.3 at concurrency 8), hello's p50 at
concurrency 1 (target under 2 ms), and served's rate as a ratio to get's (target at least 0.5); and the CPU a
hello request cost at concurrency 8 in the node (all its threads), in its web runners (its child processes) and
in the client, from their /proc times over that phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from xsc.devnet import free_port, xsc_command

from .common import UNLIMITED_USER, serve_script, start_node
from .report import Report

MiB = 1024 * 1024
CGI = Path(__file__).resolve().parent.parent / "fixtures" / "wasm" / "cgi.wasm"
MINIMAL_SERVER = """
import sys
from aiohttp import web
async def handler(request):
    return web.Response(text="hello\\n", headers={"X-Hello": "yes"})
app = web.Application()
app.router.add_get("/fn/hello/", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def load(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    """GET `url` from `concurrency` clients for `seconds`: requests a second, p50 and p99 latency (s)."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def client() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    if failures:
        raise SystemExit(f"{failures} requests to {url} were not 200")
    return {"rate": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99)]}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def split(node_pid: int, url: str, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """hello at concurrency 8, and what a request cost each process in CPU microseconds."""
    pids = {"node": [node_pid], "runners": children(node_pid)}
    before = {k: sum(map(cpu_seconds, v)) for k, v in pids.items()}
    client = time.process_time()
    figures = asyncio.run(load(url, 8, seconds))
    client = time.process_time() - client
    requests = figures["rate"] * seconds
    used = {k: sum(map(cpu_seconds, v)) - before[k] for k, v in pids.items()}
    return figures, {**{k: v / requests * 1e6 for k, v in used.items()}, "client": client / requests * 1e6}


async def fetch_seconds(url: str, size: int) -> float:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(url) as response:
            got = len(await response.read())
        if got != size:
            raise SystemExit(f"the function served {got} bytes, not {size}")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each load phase")
    parser.add_argument("--size", type=int, default=64, help="MiB of the served file")
    args = parser.parse_args()
    size = args.size * MiB
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report = Report("web")
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp_dir:
        tmp = Path(tmp_dir)
        port = free_port()
        env = {**UNLIMITED_USER, "XSC_NODE_WEB_LISTEN": f"127.0.0.1:{port}", "XSC_NODE_WEB_RATE_LIMIT": "1000000",
               "XSC_COMPUTE_TIMEOUT": "120"}  # serving a large file takes longer than a call's default 5 s
        node = start_node(tmp / "node", "--log-level", "WARNING", env=env)
        xsc = [*xsc_command(), "--data-dir", str(node.data_dir)]
        try:
            source = tmp / "data"
            with open(source, "wb") as out:
                for _ in range(args.size):
                    out.write(os.urandom(MiB))
            cap = subprocess.run([*xsc, "store", "put", str(source)], check=True, capture_output=True,
                                 text=True).stdout.split()[0]
            subprocess.run([*xsc, "compute", "serve", "hello", str(CGI), "--concurrency", "64"], check=True,
                           capture_output=True)
            subprocess.run([*xsc, "compute", "serve", "site", str(CGI), "--entrypoint", "files", "--input",
                            f"{cap}:/in/data", "--timeout", "120"], check=True, capture_output=True)
            figures = {}
            with serve_script(MINIMAL_SERVER) as (minimal_port, _):
                for c in (1, 8):
                    figures[("minimal", c)] = asyncio.run(load(f"http://127.0.0.1:{minimal_port}/fn/hello/", c,
                                                               args.seconds))
                    if c == 1:
                        figures[("hello", c)] = asyncio.run(load(f"http://127.0.0.1:{port}/fn/hello/", c,
                                                                 args.seconds))
                    else:
                        figures[("hello", c)], costs = split(node.pid, f"http://127.0.0.1:{port}/fn/hello/",
                                                             args.seconds)
            started = time.perf_counter()
            subprocess.run([*xsc, "store", "get", cap, "-o", str(tmp / "copy")], check=True, capture_output=True)
            get_s = time.perf_counter() - started
            served_s = asyncio.run(fetch_seconds(f"http://127.0.0.1:{port}/fn/site/data", size))
        finally:
            node.stop()
    for (what, c), m in sorted(figures.items()):
        print(f"{what:8} c={c}: {m['rate']:,.0f} requests/s, p50 {m['p50'] * 1e3:.2f} ms, p99 {m['p99'] * 1e3:.2f} ms")
    ratio = figures[("hello", 8)]["rate"] / figures[("minimal", 8)]["rate"]
    print(f"hello / minimal at concurrency 8: {ratio:.2f} (target at least 0.3)")
    print(f"hello p50 at concurrency 1: {figures[('hello', 1)]['p50'] * 1e3:.2f} ms (target under 2)")
    print("CPU a hello request cost at concurrency 8: " + ", ".join(f"{k} {v:.0f} us" for k, v in costs.items()))
    print(f"{args.size} MiB: store get {get_s:.2f} s, served by the function {served_s:.2f} s: "
          f"{get_s / served_s:.2f} of get's speed (target at least 0.5)")
    report.add("hello function / minimal aiohttp handler, requests/s at concurrency 8", ratio, "x", target=0.3,
               op=">=")
    report.add("hello function p50 at concurrency 1", figures[("hello", 1)]["p50"] * 1e3, "ms", target=2, op="<")
    report.add(f"a mounted {args.size} MiB file served / store get, speed", get_s / served_s, "x", target=0.5,
               op=">=")
    report.write()


if __name__ == "__main__":
    main()
