"""Compute benchmark: hot invoke over HTTP, compile vs cached load, CLI wall times.

Run: .venv/bin/python -m bench.bench_compute [--seconds 3] [--held 60]

Every figure is printed next to the raw step it builds on, measured in the same run:
- hot invoke of `add` through a real node's HTTP API at concurrency 1 and 8 (invokes/s, p50, p99, node
  CPU per invoke; every invoke paid and its provenance record fsynced before the answer) against an
  in-process fresh Store + instantiate + call, a synced LevelDB write, and a minimal aiohttp JSON handler
  (its own process, the same client) at the same concurrency;
- compiling the fibonacci module against deserializing its cached artifact (with the HMAC check);
- the wall time of `xsc compute invoke` and `xsc --help` against a bare `python -c pass`;
- with --held SECONDS: invokes at concurrency 8 for that long while another connection reads the payer's held
  credit every 100 ms, its most against (8 in flight x a call's budget) + the most metered in one settlement
  interval, and every answer that was not 200 (target: none; a 402 there is credit held for work already done).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from xsc.devnet import xsc_command

from .common import UNLIMITED_USER, cpu_seconds, serve_script, start_node
from .report import Report

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "fixtures" / "wasm"
TARGETS = {"invokes_per_s_c8": 2000, "p50_ms_c1": 1.0, "help_ms": 200}


def _per_call(once, seconds: float) -> float:
    for _ in range(200):
        once()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            once()
        n += 100
    return (time.perf_counter() - start) / n


def raw_fresh_store_call(seconds: float) -> tuple[float, float]:
    """Seconds per call of `add` in this process: (the raw step with wasmtime-py's API: fresh Store with
    fuel, limits and deadline + instantiate + call; the sandbox's own run(), which does the same)."""
    import wasmtime

    from xsc.compute import sandbox
    from xsc.compute.engine import deadline_ticks, make_engine
    from xsc.compute.limits import Limits
    from xsc.compute.modules import ModuleInfo, describe_exports, has_start_function

    engine = make_engine()
    wasm = (WASM / "add.wasm").read_bytes()
    module = wasmtime.Module(engine, wasm)
    limits = Limits(10_000_000_000, 64 * 1024 * 1024, 5.0)

    def raw() -> int:
        store = wasmtime.Store(engine)
        store.set_fuel(limits.fuel)
        store.set_limits(memory_size=limits.memory, table_elements=10_000, instances=1, tables=1, memories=1)
        store.set_epoch_deadline(deadline_ticks(limits.timeout))
        return wasmtime.Instance(store, module, []).exports(store)["add"](store, 1, 2)

    exports = {e.name: e for e in describe_exports(wasm)}
    info = ModuleInfo("", len(wasm), list(exports.values()), [], "", start=has_start_function(wasm))
    prepared = sandbox.Prepared(b"", module, info, None)

    def sandboxed() -> list:
        return sandbox.run(engine, prepared, "add", exports["add"].signature, [1, 2], limits).results

    assert raw() == 3 and sandboxed() == [3]
    return _per_call(raw, seconds), _per_call(sandboxed, seconds)


def compile_vs_load(repeat: int = 20) -> tuple[float, float]:
    import wasmtime

    from xsc.compute import artifacts
    from xsc.compute.engine import make_engine

    engine = make_engine()
    wasm = (WASM / "fibonacci.wasm").read_bytes()
    secret, key = os.urandom(32), b"c/a/bench"
    compile_times, load_times = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        module = wasmtime.Module(engine, wasm)
        compile_times.append(time.perf_counter() - t)
        sealed = artifacts.seal(secret, key, bytes(module.serialize()))
        t = time.perf_counter()
        loaded = wasmtime.Module.deserialize(engine, artifacts.unseal(secret, key, sealed))
        load_times.append(time.perf_counter() - t)
        assert loaded.exports
    return statistics.median(compile_times), statistics.median(load_times)


async def _http_load(port: int, token: str, body: bytes, concurrency: int, seconds: float,
                     answers: list[tuple[float, int, bytes]] | None = None) -> list[float]:
    """Latencies of invokes sent back to back on `concurrency` keep-alive connections (a minimal client,
    so the client's own CPU use stays small next to the node's).  An answer that is not 200 fails the load, unless
    `answers` is given: then every answer is kept there as (time.monotonic(), status, body)."""
    request = (f"POST /v1/compute/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                payload = await reader.readexactly(length)
                latencies.append(time.perf_counter() - t)
                if answers is not None:
                    answers.append((time.monotonic(), int(head[9:12]), payload))
                elif not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"invoke failed: {head[:40]!r} {payload[:200]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _held_while_loaded(port: int, token: str, body: bytes, concurrency: int, seconds: float
                             ) -> tuple[list[tuple[float, int, bytes]], list[int]]:
    """Invokes at `concurrency` for `seconds` (every answer kept) while the payer's held credit is read every
    100 ms on a connection of its own (`GET /v1/ledger/accounts/{payer}`): (answers, held credit samples)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"http://127.0.0.1:{port}/v1/compute/invoke", data=body) as response:
            payer = (await response.json())["requester"]
        answers: list[tuple[float, int, bytes]] = []
        held: list[int] = []
        load = asyncio.ensure_future(_http_load(port, token, body, concurrency, seconds, answers))
        while not load.done():
            async with session.get(f"http://127.0.0.1:{port}/v1/ledger/accounts/{payer}") as response:
                held.append((await response.json())["held"])
            await asyncio.sleep(0.1)
        await load
    return answers, held


def held_credit(port: int, token: str, module_id: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """Under load, held credit never passes (invokes in flight x budget) + one settlement interval's
    metered amount, and no invoke is refused 402 for credit held by others."""
    from xsc.config import ComputeSection, LedgerSection
    from xsc.ledger.core.pricing import price_budget

    body = json.dumps({"module": module_id, "function": "add", "args": ["1", "2"]}).encode()
    answers, held = asyncio.run(_held_while_loaded(port, token, body, concurrency, seconds))
    ok = [(at, json.loads(payload)) for at, status, payload in answers if status == 200]
    statuses = Counter(status for _, status, _ in answers)
    limits = ComputeSection()  # the bench's node runs with the defaults: each call's limits are these
    budget = max(price_budget(limits.fuel, a["deal"]["price"], limits.memory, round(limits.timeout * 1e6),
                              a["cost"]["memory_price"]) for _, a in ok)
    interval = LedgerSection().tab_interval
    charged = sorted((at, a["charge"]) for at, a in ok)
    window, total, first = 0, 0, 0
    for at, charge in charged:  # the most charged in any one settlement interval
        total += charge
        while charged[first][0] < at - interval:
            total -= charged[first][1]
            first += 1
        window = max(window, total)
    return {"invokes": len(answers), "statuses": dict(statuses), "held_max": max(held), "samples": len(held),
            "budget": budget, "interval_metered": window, "bound": concurrency * budget + window}


def http_invoke(port: int, token: str, module_id: str, concurrency: int, seconds: float,
                node_pid: int) -> dict[str, float]:
    body = json.dumps({"module": module_id, "function": "add", "args": ["1", "2"]}).encode()
    asyncio.run(_http_load(port, token, body, concurrency, 0.5))  # warm up
    cpu, t = cpu_seconds(node_pid), time.perf_counter()
    latencies = asyncio.run(_http_load(port, token, body, concurrency, seconds))
    elapsed, cpu = time.perf_counter() - t, cpu_seconds(node_pid) - cpu
    latencies.sort()
    return {"rate": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99)], "n": len(latencies), "node_cpu": cpu / len(latencies)}


# The floor any HTTP API on this machine stands on: aiohttp parsing a JSON body and answering JSON, nothing else.
MINIMAL_SERVER = """
import sys
from aiohttp import web
async def handler(request):
    body = await request.json()
    return web.json_response({"results": [{"type": "i32", "value": 3}], "echo": body["function"]})
app = web.Application()
app.router.add_post("/v1/compute/invoke", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def minimal_json_handler(concurrency: int, seconds: float) -> dict[str, float]:
    with serve_script(MINIMAL_SERVER) as (port, pid):
        return http_invoke(port, "-", "0" * 64, concurrency, seconds, pid)


def synced_write(seconds: float) -> float:
    """Seconds per synced LevelDB write batch of one small record: the durability every acknowledged invoke
    waits for (shared by a group of invokes under load)."""
    import plyvel

    path = tempfile.mkdtemp(prefix="xsc-bench-fsync-")
    db = plyvel.DB(path, create_if_missing=True)
    try:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            with db.write_batch(sync=True) as batch:
                batch.put(n.to_bytes(8, "big"), b"x" * 600)
            n += 1
        return (time.perf_counter() - start) / n
    finally:
        db.close()
        shutil.rmtree(path, ignore_errors=True)


def wall(cmd: list[str], repeat: int = 5, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each load phase")
    parser.add_argument("--held", type=float, default=0.0, metavar="SECONDS",
                        help="then invoke at concurrency 8 for SECONDS (the target's figure: 60) while reading the payer's held "
                             "credit every 100 ms, against its bound, and count every answer that is not 200")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(other work on the machine lowers every figure below)")

    raw, sandboxed = raw_fresh_store_call(min(args.seconds, 2.0))
    print(f"raw step: fresh Store + instantiate + call of add with wasmtime-py, in process: {raw * 1e6:.1f} us "
          f"({1 / raw:,.0f} calls/s on one thread)")
    print(f"the sandbox's run() of the same call, in process: {sandboxed * 1e6:.1f} us ({sandboxed / raw:.2f}x raw)")

    fsync = synced_write(min(args.seconds, 2.0))
    print(f"raw step: one synced LevelDB write batch (the durability an acknowledged invoke waits for): "
          f"{fsync * 1e6:.0f} us")
    minimal = {c: minimal_json_handler(c, args.seconds) for c in (1, 8)}
    for c, m in minimal.items():
        print(f"minimal aiohttp JSON handler, concurrency {c}: {m['rate']:,.0f} requests/s, p50 {m['p50'] * 1e3:.3f} ms, "
              f"server CPU {m['node_cpu'] * 1e6:.0f} us per request")

    data_dir = Path(tempfile.mkdtemp(prefix="xsc-bench-"))
    env = {**os.environ, "XSC_HOME": str(data_dir)}
    xsc = xsc_command()
    node = start_node(data_dir, "--log-level", "WARNING", env=UNLIMITED_USER)
    port = node.port
    report = Report("compute")
    report.add("raw: fresh Store + instantiate + call, in process", raw * 1e6, "us")
    report.add("raw: one synced LevelDB write batch", fsync * 1e6, "us")
    for c, m in minimal.items():
        report.add(f"minimal aiohttp JSON handler requests/s at c={c}", m["rate"], "/s")
    try:
        token = (data_dir / "api-token").read_text().strip()
        add = WASM / "add.wasm"
        subprocess.run([*xsc, "compute", "deploy", str(add)], env=env, check=True, capture_output=True)
        module_id = hashlib.sha256(add.read_bytes()).hexdigest()

        results = {}
        for concurrency in (1, 8):
            r = http_invoke(port, token, module_id, concurrency, args.seconds, node.pid)
            results[concurrency] = r
            print(f"HTTP invoke of add, concurrency {concurrency}: {r['rate']:,.0f} invokes/s "
                  f"({r['rate'] * raw:.2f}x the raw step's single-thread rate), "
                  f"p50 {r['p50'] * 1e3:.3f} ms ({r['p50'] / raw:.1f}x raw), "
                  f"p99 {r['p99'] * 1e3:.3f} ms ({r['p99'] / raw:.1f}x raw), {r['n']} calls; "
                  f"node CPU {r['node_cpu'] * 1e6:.0f} us per invoke ({r['node_cpu'] / raw:.1f}x raw); "
                  f"{r['rate'] / minimal[concurrency]['rate']:.2f}x the minimal JSON handler's rate, "
                  f"p50 {r['p50'] / minimal[concurrency]['p50']:.1f}x its p50, "
                  f"CPU {r['node_cpu'] / minimal[concurrency]['node_cpu']:.1f}x its CPU per request")
            report.add(f"HTTP invokes/s at c={concurrency}", r["rate"], "/s",
                       **({"target": TARGETS["invokes_per_s_c8"], "op": ">="} if concurrency == 8 else {}))
            report.add(f"HTTP invoke p50 at c={concurrency}", r["p50"] * 1e3, "ms",
                       **({"target": TARGETS["p50_ms_c1"], "op": "<"} if concurrency == 1 else {}))
            report.add(f"node CPU per invoke at c={concurrency}", r["node_cpu"] * 1e6, "us")
            report.add(f"invoke rate / minimal JSON handler rate at c={concurrency}",
                       r["rate"] / minimal[concurrency]["rate"], "x", **({"target": 0.3, "op": ">="} if concurrency == 1 else {}))

        compile_s, load_s = compile_vs_load()
        print(f"fibonacci module: compile {compile_s * 1e3:.3f} ms, cached load (HMAC check + deserialize) "
              f"{load_s * 1e3:.3f} ms ({compile_s / load_s:.1f}x faster cached)")

        python_s = wall([sys.executable, "-c", "pass"], env=env)
        invoke_s = wall([*xsc, "compute", "invoke", str(add), "add", "1", "2"], env=env)
        help_s = wall([*xsc, "--help"], env=env)
        print(f"bare python start: {python_s * 1e3:.0f} ms; `xsc compute invoke add.wasm add 1 2`: "
              f"{invoke_s * 1e3:.0f} ms ({invoke_s / python_s:.1f}x); `xsc --help`: {help_s * 1e3:.0f} ms "
              f"({help_s / python_s:.1f}x)")
        report.add("compile fibonacci", compile_s * 1e3, "ms")
        report.add("cached load of fibonacci", load_s * 1e3, "ms")
        report.add("bare python start", python_s * 1e3, "ms")
        report.add("xsc compute invoke add.wasm add 1 2", invoke_s * 1e3, "ms")
        report.add("xsc --help", help_s * 1e3, "ms", target=TARGETS["help_ms"], op="<")

        checks = []
        if args.held:
            h = held_credit(port, token, module_id, 8, args.held)
            refused = sum(n for status, n in h["statuses"].items() if status != 200)
            print(f"held credit under {args.held:g} s of invokes at concurrency 8 ({h['invokes']:,} invokes, answers "
                  f"{h['statuses']}, {h['samples']} reads of the payer's account): at most {h['held_max']:,} "
                  f"micro-credits held, {h['held_max'] / h['bound']:.2f}x its bound {h['bound']:,} (8 in flight x "
                  f"budget {h['budget']:,} + the most metered in one settlement interval, {h['interval_metered']:,})")
            report.add("held credit at c=8, most / bound", h["held_max"] / h["bound"], "x", target=1.0, op="<=")
            report.add("invokes refused under the held-credit load", refused, "", target=0, op="<=")
            checks += [("held credit / its bound at concurrency 8", h["held_max"] / h["bound"], "<=", 1.0),
                       ("invokes refused (402 or other) under that load", refused, "<=", 0)]
        checks += [
            ("invokes/s at concurrency 8", results[8]["rate"], ">=", TARGETS["invokes_per_s_c8"]),
            ("p50 ms at concurrency 1", results[1]["p50"] * 1e3, "<", TARGETS["p50_ms_c1"]),
            ("xsc --help ms", help_s * 1e3, "<", TARGETS["help_ms"]),
            ("invoke rate / minimal JSON handler rate at concurrency 1", results[1]["rate"] / minimal[1]["rate"],
             ">=", 0.3),
        ]
        for name, value, op, target in checks:
            met = value >= target if op == ">=" else value <= target if op == "<=" else value < target
            print(f"target {name} {op} {target}: {value:,.2f} -> {'met' if met else 'NOT met'}")
        report.write()
    finally:
        node.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
