"""A matched remote invoke against a direct local one, on two real nodes, in the same run.

    python -m bench.bench_market_network [--calls 300] [--seconds 3]

Node A offers no compute (XSC_MARKET_OFFER_COMPUTE=false), so the market sends its invokes to node B,
which runs them and is paid by receipt; B offers compute, so the same call sent to B runs there.  Node A0
is A on the old path (XSC_PEERS_CHANNEL_AUTH=false: no client certificate, every peer request signed,
digested and replay-checked), measured in the same run against the same B.  Prints
the end-to-end latency of `add 1 2` through A's HTTP API (remote) and through B's (direct) at
concurrency 1 (p50, p90) and 8 (invokes/s), the latency a remote invoke adds, and the raw steps it is
made of, measured in this run: an fsync of a LevelDB batch, a signed peer request that does no work,
and the ledger's authorize + countersign + complete of one payment by receipt (in process, two ledgers).
Targets: a matched remote invoke adds < 20 ms over a direct one; paid through tabs, it adds
< 2 ms, and remote throughput at concurrency 8 >= 0.8x direct.  At concurrency 8 it also prints how many of A's
calls went to B in batches (net/compute.py: InvokeBatcher) and the nodes' CPU per call (on a busy machine the
wall-clock rates say more about the other load than about the nodes; CPU per call does not).  A run at
concurrency 2 (smaller batches) against one more at 8 splits each node's CPU per remote call into a part per
batch request (HTTP, TLS, the signature, B's group commit) and a part per call: what batching can and cannot save.

The remote path waits for synced ledger writes that the direct one does not (the direct invoke's
settlement is group-committed after the answer): run with TMPDIR=/dev/shm (tmpfs, where an fsync costs
nothing) to see how much of the added latency is the disk and how much is work.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from xsc.devnet import NodeProcess

from .common import UNLIMITED_USER, cpu_seconds, main_thread_times
from .report import Report

ROOT = Path(__file__).resolve().parent.parent
ADD = ROOT / "fixtures" / "wasm" / "add.wasm"
TARGET_ADDED_MS = 20.0  # a matched remote invoke adds < 20 ms over a direct one
TARGET_ADDED_MS_PAID = 2.0  # remote paid invokes, p50 overhead over local < 2 ms
TARGET_ADDED_MS_CHANNEL = 1.0  # remote calls on connections proven by client certificates: p50 added < 1 ms
TARGET_REMOTE_RATIO = 0.8  # remote paid invokes >= 0.8x local throughput at c=8
INVOKE = json.dumps({"module": hashlib.sha256(ADD.read_bytes()).hexdigest(), "function": "add",
                     "args": ["1", "2"]}).encode()


# --- two nodes ---------------------------------------------------------------------------------
class Node(NodeProcess):
    """A node process of this bench (xsc.devnet), started at once; `id` is known once `wait_up` returned."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str], peer: str | None = None) -> None:
        super().__init__(data_dir, args=["--log-level", "warning", *(["--peer", peer] if peer else [])], env=env,
                         name=name)
        self.id = ""
        self.spawn()

    async def wait_up(self) -> None:
        await asyncio.to_thread(self.wait_listening, 120)  # a loaded machine starts a node slowly
        self.id = (self.health() or {})["serviceId"]


class Conn:
    """A minimal keep-alive HTTP/1.1 client, so the client's own CPU use stays small next to the nodes'."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> None:
        self.reader, self.writer, self.token = reader, writer, token

    @classmethod
    async def open(cls, port: int, token: str) -> "Conn":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, token)

    async def call(self, method: str, path: str, body: bytes = b"",
                   content_type: str = "application/json") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        if self.token:
            head += f"Authorization: Bearer {self.token}\r\n"
        if body:
            head += f"Content-Type: {content_type}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        answer = await self.reader.readuntil(b"\r\n\r\n")
        length = int(answer.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return int(answer.split(b" ", 2)[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()


async def _checked(conn: Conn, method: str, path: str, body: bytes = b"", content_type: str = "application/json"):
    status, payload = await conn.call(method, path, body, content_type)
    if status >= 300:
        raise SystemExit(f"{method} {path} answered {status}: {payload[:300]!r}")
    return json.loads(payload)


async def _wait_for_ask(a: Node, b: Node, timeout: float = 30.0) -> None:
    """Until A's market book holds B's compute ask (the gossip that makes the remote match possible)."""
    conn = await Conn.open(a.port, a.token)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            book = await _checked(conn, "GET", "/v1/market/book?kind=compute")
            if any(ask["owner"] == b.id for row in book["books"] for ask in row["asks"]):
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise SystemExit(f"node A's market book never got node B's compute ask within {timeout:g} s")


# --- load ----------------------------------------------------------------------------------------
async def _invokes(node: Node, calls: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies of `calls` invokes of add 1 2 sent back to back on `concurrency` connections, and the
    wall time of them all."""
    conns = [await Conn.open(node.port, node.token) for _ in range(concurrency)]
    latencies: list[float] = []
    left = calls

    async def worker(conn: Conn) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t = time.perf_counter()
            status, payload = await conn.call("POST", "/v1/compute/invoke", INVOKE)
            latencies.append(time.perf_counter() - t)
            if status != 200:
                raise SystemExit(f"invoke on {node.name} answered {status}: {payload[:300]!r}")

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    return latencies, time.perf_counter() - start


async def _batches(node: Node) -> tuple[int, int, int, int]:
    """Batch requests node has sent to providers, the calls in them, the batches sent before a request in flight
    returned, and the queues that waited for the callers of a returned request (/v1/node/status; 0 before they
    existed)."""
    conn = await Conn.open(node.port, node.token)
    try:
        part = (await _checked(conn, "GET", "/v1/node/status")).get("remote_compute") or {}
    finally:
        await conn.close()
    return part.get("batches", 0), part.get("batched_calls", 0), part.get("stalled", 0), part.get("gathered", 0)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _cpu_at(a: Node, b: Node, calls: int, concurrency: int) -> tuple[float, float, float]:
    """Remote invokes at `concurrency`: A's and B's CPU per call (us) and the calls per batch request (what the
    concurrency-8 blocks measure too, for split_cpu)."""
    before, cpu_a, cpu_b = await _batches(a), cpu_seconds(a.pid), cpu_seconds(b.pid)
    lat, _ = await _invokes(a, calls, concurrency)
    used_a, used_b = cpu_seconds(a.pid) - cpu_a, cpu_seconds(b.pid) - cpu_b
    after = await _batches(a)
    return used_a / len(lat) * 1e6, used_b / len(lat) * 1e6, (after[1] - before[1]) / max(1, after[0] - before[0])


def split_cpu(low: tuple[float, float, float], high: tuple[float, float, float]) -> dict[str, tuple[float, float]]:
    """Each node's CPU per call as (per batch request, per call), from two runs at different batch sizes:
    cpu per call = per_batch / calls_per_batch + per_call (least assumptions: two points, two unknowns)."""
    (a_lo, b_lo, n_lo), (a_hi, b_hi, n_hi) = low, high
    if n_hi - n_lo < 1:  # the batches came out the same size: nothing to split
        return {}
    out = {}
    for name, lo, hi in (("A", a_lo, a_hi), ("B", b_lo, b_hi)):
        per_batch = (lo - hi) / (1 / n_lo - 1 / n_hi)
        out[name] = (per_batch, hi - per_batch / n_hi)
    return out


# --- raw steps, in this process --------------------------------------------------------------------
def raw_fsync(tmp: Path, repeat: int = 50) -> float:
    """Median time of one synced LevelDB write batch (what every durable ledger step waits for)."""
    import plyvel

    tmp.mkdir(parents=True, exist_ok=True)
    db = plyvel.DB(str(tmp / "fsync"), create_if_missing=True)
    times = []
    try:
        for i in range(repeat):
            t = time.perf_counter()
            with db.write_batch(sync=True) as batch:
                batch.put(b"k%d" % i, os.urandom(200))
            times.append(time.perf_counter() - t)
    finally:
        db.close()
    return statistics.median(times)


async def raw_ledger_trio(tmp: Path, repeat: int = 50) -> tuple[float, float, float]:
    """Median of authorize (payer's ledger), countersign (payee's ledger) and complete (payer's), each
    awaited in turn, as a remote invoke does them; two ledgers in two LevelDBs, like two nodes."""
    import plyvel

    from xsc.identity import Identity
    from xsc.ledger import decode_authorization, decode_entry, encode_authorization
    from xsc.ledger.service import LedgerService

    payer, payee = Identity.generate(), Identity.generate()
    tmp.mkdir(parents=True, exist_ok=True)
    dbs = [plyvel.DB(str(tmp / name), create_if_missing=True) for name in ("payer", "payee")]
    gateway = LedgerService(dbs[0], 10**15, client=payer)
    provider = LedgerService(dbs[1], 10**15, node=payee)
    steps: list[tuple[float, float, float]] = []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            auth = await gateway.authorize(payer, payee.public_key, 400_000, "compute:bench", ttl=600)
            t1 = time.perf_counter()
            wire = decode_authorization(encode_authorization(auth))
            receipt = await provider.countersign(payee, wire, 1, {"fuel": 7})
            t2 = time.perf_counter()
            await gateway.complete(payer, decode_entry(receipt.encode()))
            steps.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    finally:
        await gateway.close()
        await provider.close()
        for db in dbs:
            db.close()
    return tuple(statistics.median(s[i] for s in steps) for i in range(3))  # type: ignore[return-value]


async def raw_round_trips(b: Node, repeat: int = 200, channel: bool = False) -> tuple[float, float, float]:
    """Median round trip to B of an unsigned GET /health on a kept-alive connection, and of a signed
    peer request that does no work (POST /v1/peer/challenge) through the nodes' own PeerClient, on the kept-alive
    connection paid invokes use; and B's CPU per such signed request (us).  `channel`: the request goes unsigned
    on a connection its client certificate proves, as a node's own requests do by default."""
    import aiohttp

    from xsc.identity import Identity
    from xsc.net import PeerClient

    conn = await Conn.open(b.port, "")
    plain = []
    for _ in range(repeat):
        t = time.perf_counter()
        await conn.call("GET", "/health")
        plain.append(time.perf_counter() - t)
    await conn.close()
    signed = []
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, 10.0, channel=channel)
        cpu = cpu_seconds(b.pid)
        for _ in range(repeat):
            t = time.perf_counter()
            await client.request(b.url, "POST", "/v1/peer/challenge", json={"nonce": os.urandom(16).hex()}, to=b.id,
                                 kept=True, max_size=1 << 20)  # as the invokes are sent
            signed.append(time.perf_counter() - t)
        cpu = cpu_seconds(b.pid) - cpu
        client.close()
    return statistics.median(plain), statistics.median(signed), cpu / repeat * 1e6


# --- the run ----------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, tmp: Path) -> None:
    # The raw steps before and after the nodes' runs: the disk is shared, and an fsync's cost drifts.
    fsync_before = raw_fsync(tmp / "before")
    ledger_before = await raw_ledger_trio(tmp / "before")

    quiet = {"XSC_HEALTH_PROBE_INTERVAL": "5", **UNLIMITED_USER}
    nodes: list[Node] = []
    try:
        b = Node("B", tmp / "node-b", quiet)
        nodes.append(b)
        await b.wait_up()
        a = Node("A", tmp / "node-a", {**quiet, "XSC_MARKET_OFFER_COMPUTE": "false"}, peer=b.url)
        nodes.append(a)
        a0 = Node("A0", tmp / "node-a0", {**quiet, "XSC_MARKET_OFFER_COMPUTE": "false",
                                          "XSC_PEERS_CHANNEL_AUTH": "false"}, peer=b.url)
        nodes.append(a0)
        await a.wait_up()
        await a0.wait_up()
        for remote_node in (a, a0):
            await _wait_for_ask(remote_node, b)
            conn = await Conn.open(remote_node.port, remote_node.token)
            await _checked(conn, "POST", "/v1/modules", ADD.read_bytes(), "application/wasm")
            first = await _checked(conn, "POST", "/v1/compute/invoke", INVOKE)  # ships the module to B
            if first.get("provider") != b.id:
                raise SystemExit(f"node {remote_node.name}'s invoke did not run on B: {first}")
            await conn.close()
        conn_b = await Conn.open(b.port, b.token)
        await _checked(conn_b, "POST", "/v1/modules", ADD.read_bytes(), "application/wasm")
        direct_first = await _checked(conn_b, "POST", "/v1/compute/invoke", INVOKE)
        if direct_first.get("provider") != b.id:
            raise SystemExit(f"node B's invoke did not run on B: {direct_first}")
        await conn_b.close()

        plain_rt, signed_rt, signed_cpu = await raw_round_trips(b)
        _, channel_rt, channel_cpu = await raw_round_trips(b, channel=True)
        for node in (a, a0, b):  # warm up every path
            await _invokes(node, 30, 1)
        # Blocks of each in turn, so a burst of other work on the machine hits all alike.
        remote: list[float] = []
        remote_old: list[float] = []
        direct: list[float] = []
        block = max(1, args.calls // 5)
        for _ in range(5):
            remote += (await _invokes(a, block, 1))[0]
            remote_old += (await _invokes(a0, block, 1))[0]
            direct += (await _invokes(b, block, 1))[0]
        # Concurrency 8, in alternating blocks too: as many calls as each node serves in about --seconds in all
        # (from its c1 rate); the rate is all calls over all the blocks' wall time.
        # The nodes' CPU over those blocks too: on a busy machine CPU per call says more than wall time.
        c8: dict[str, tuple[list[float], float]] = {"remote": ([], 0.0), "remote-old": ([], 0.0),
                                                    "direct": ([], 0.0)}
        cpu8 = {(name, side): 0.0 for name in c8 for side in "AB"}
        loop8 = {(name, side): 0.0 for name in c8 for side in "AB"}  # of it, the event-loop (main) threads'
        c1 = {"remote": remote, "remote-old": remote_old, "direct": direct}
        batches_before = await _batches(a)
        for _ in range(3):
            for name, node, sender in (("remote", a, a), ("remote-old", a0, a0), ("direct", b, a)):
                per_call = statistics.median(c1[name])
                cpu_a, cpu_b = cpu_seconds(sender.pid), cpu_seconds(b.pid)
                loop_a, loop_b = main_thread_times(sender.pid)[0], main_thread_times(b.pid)[0]
                lat, wall = await _invokes(node, max(30, int(args.seconds / per_call * 2 / 3)), 8)
                cpu8[name, "A"] += cpu_seconds(sender.pid) - cpu_a
                cpu8[name, "B"] += cpu_seconds(b.pid) - cpu_b
                loop8[name, "A"] += main_thread_times(sender.pid)[0] - loop_a
                loop8[name, "B"] += main_thread_times(b.pid)[0] - loop_b
                c8[name] = (c8[name][0] + lat, c8[name][1] + wall)
        batches = [after - before for after, before in zip(await _batches(a), batches_before)]
        # Smaller batches (concurrency 2) against these: how much of each node's CPU is per batch request.
        low = await _cpu_at(a, b, max(30, int(args.seconds / statistics.median(remote) / 2)), 2)
        b_cpu = cpu_seconds(b.pid)
        a_cpu = cpu_seconds(a.pid)
    finally:
        for node in nodes:
            node.stop()
    fsync_after = raw_fsync(tmp / "after")
    ledger_after = await raw_ledger_trio(tmp / "after")
    fsync = (fsync_before + fsync_after) / 2
    authorize_s, countersign_s, complete_s = ((x + y) / 2 for x, y in zip(ledger_before, ledger_after))
    trio = authorize_s + countersign_s + complete_s

    ms = 1e3
    r50, r90, d50, d90 = _pct(remote, .5), _pct(remote, .9), _pct(direct, .5), _pct(direct, .9)
    added = r50 - d50
    added_old = _pct(remote_old, .5) - d50
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"both nodes and this client share them")
    print(f"raw steps in this process (mean of before and after the nodes ran): fsync of a LevelDB batch "
          f"{fsync * ms:.2f} ms (before {fsync_before * ms:.2f}, after {fsync_after * ms:.2f}); ledger authorize "
          f"{authorize_s * ms:.2f} + countersign {countersign_s * ms:.2f} + complete {complete_s * ms:.2f} = "
          f"{trio * ms:.2f} ms (before {sum(ledger_before) * ms:.2f}, "
          f"after {sum(ledger_after) * ms:.2f})")
    print(f"raw round trips to B: GET /health {plain_rt * ms:.3f} ms; signed peer request with no work "
          f"(POST /v1/peer/challenge, PeerClient) {signed_rt * ms:.3f} ms ({signed_rt / plain_rt:.1f}x), B's CPU "
          f"{signed_cpu:.0f} us a request; the same unsigned on a connection its client certificate proves "
          f"{channel_rt * ms:.3f} ms ({channel_rt / plain_rt:.1f}x), B's CPU {channel_cpu:.0f} us a request")
    print(f"direct invoke on B, concurrency 1: p50 {d50 * ms:.2f} ms, p90 {d90 * ms:.2f} ms ({len(direct)} calls)")
    print(f"remote invoke via A (matched to B, paid by receipt), concurrency 1: p50 {r50 * ms:.2f} ms, "
          f"p90 {r90 * ms:.2f} ms ({len(remote)} calls) = {r50 / d50:.1f}x direct p50")
    print(f"remote invoke via A0 (old path: every peer request signed), concurrency 1: p50 "
          f"{_pct(remote_old, .5) * ms:.2f} ms, p90 {_pct(remote_old, .9) * ms:.2f} ms ({len(remote_old)} calls)")
    for name in ("direct", "remote", "remote-old"):
        lat, wall_s = c8[name]
        print(f"{name} invoke, concurrency 8: {len(lat) / wall_s:,.0f} invokes/s, p50 {_pct(lat, .5) * ms:.2f} ms, "
              f"p90 {_pct(lat, .9) * ms:.2f} ms ({len(lat)} calls)")
    rate_r, rate_old, rate_d = (len(c8[n][0]) / c8[n][1] for n in ("remote", "remote-old", "direct"))
    us = {k: v / len(c8[k[0]][0]) * 1e6 for k, v in cpu8.items()}
    calls_r = len(c8["remote"][0])
    requests_per_call = (batches[0] + calls_r - batches[1]) / max(1, calls_r)  # batch requests + calls sent alone
    print(f"node CPU per call at concurrency 8: direct B {us['direct', 'B']:.0f} us (A idle {us['direct', 'A']:.0f}); "
          f"remote A {us['remote', 'A']:.0f} + B {us['remote', 'B']:.0f} = "
          f"{us['remote', 'A'] + us['remote', 'B']:.0f} us "
          f"({(us['remote', 'A'] + us['remote', 'B']) / us['direct', 'B']:.2f}x direct)")
    # Cores the nodes kept busy (rate x CPU per call).  A remote pair keeping under one busy takes turns (each batch
    # waits on the other node): its rate is then about the direct one times direct B's CPU per call over A's and B's.
    print(f"node cores busy at concurrency 8 (of {os.cpu_count()}): direct B {rate_d * us['direct', 'B'] / 1e6:.2f}; "
          f"remote A {rate_r * us['remote', 'A'] / 1e6:.2f} + B {rate_r * us['remote', 'B'] / 1e6:.2f}; direct B's CPU "
          f"per call over A's and B's: {us['direct', 'B'] / (us['remote', 'A'] + us['remote', 'B']):.2f}")
    loop_us = {k: v / len(c8[k[0]][0]) * 1e6 for k, v in loop8.items()}
    print(f"of it, the event-loop threads' at concurrency 8 (the rest: the nodes' other threads, B's provenance "
          f"journal writer and wasm pool): direct B {loop_us['direct', 'B']:.0f} us "
          f"(others {us['direct', 'B'] - loop_us['direct', 'B']:.0f}); remote A {loop_us['remote', 'A']:.0f} "
          f"(others {us['remote', 'A'] - loop_us['remote', 'A']:.0f}) + B {loop_us['remote', 'B']:.0f} us "
          f"(others {us['remote', 'B'] - loop_us['remote', 'B']:.0f}); a batch's calls pass A's loop, then B's, "
          f"one after the other")
    at = batches[1] / max(1, batches[0])  # calls per batch at concurrency 8
    print(f"remote calls at concurrency 8 sent in batches: {batches[1]} of {len(c8['remote'][0])} calls, in "
          f"{batches[0]} batch requests ({at:.1f} calls per batch, {batches[2]} sent "
          f"before the request in flight returned, {batches[3]} waited for returned callers); the rest alone: "
          f"{requests_per_call:.3f} signed requests per call")
    print(f"remote throughput at concurrency 8 = {rate_r / rate_d:.2f}x direct "
          f"(old path, A0: {rate_old / rate_d:.2f}x); "
          f"node CPU per remote call: A {us['remote', 'A']:.0f} + B {us['remote', 'B']:.0f} us, old path A0 "
          f"{us['remote-old', 'A']:.0f} + B {us['remote-old', 'B']:.0f} us")
    print(f"added p50 at concurrency 1: {added * ms:.2f} ms (old path {added_old * ms:.2f} ms)")
    high = (us["remote", "A"], us["remote", "B"], at)
    split = split_cpu(low, high)
    if split:
        print(f"node CPU per remote call split in two (concurrency 2: {low[2]:.1f} calls per batch, A {low[0]:.0f} + "
              f"B {low[1]:.0f} us a call; 8: {at:.1f}, A {high[0]:.0f} + B {high[1]:.0f} us): " + "; ".join(
                  f"{name} {per_batch:.0f} us per batch request + {per_call:.0f} us per call" for name, (per_batch, per_call)
                  in split.items()) + f"; at {at:.1f} calls a batch the per-batch part is "
              f"{sum(v[0] for v in split.values()) / at / (high[0] + high[1]):.0%} of the two nodes' CPU per call; "
              f"B's per batch request = {split['B'][0] / max(signed_cpu, 1):.1f}x its CPU for a signed request "
              "doing no work")
    rest = added - trio - signed_rt
    # On tmpfs an fsync costs nothing: a ratio to it would mean nothing.
    per_fsync = f"{added / fsync:.1f}x an fsync" if fsync > 50e-6 else "no real fsync here"
    print(f"added by a remote invoke (remote p50 - direct p50): {added * ms:.2f} ms = {added / signed_rt:.1f}x a "
          f"signed peer round trip, {per_fsync}; of which the raw ledger trio {trio * ms:.2f} ms "
          f"+ one signed peer round trip {signed_rt * ms:.2f} ms; the rest {rest * ms:.2f} ms")
    print(f"node CPU over the whole run: A {a_cpu:.1f} s, B {b_cpu:.1f} s")
    met = added * ms < TARGET_ADDED_MS
    print(f"target added latency < {TARGET_ADDED_MS:g} ms: {added * ms:.2f} ms -> {'met' if met else 'NOT met'}")
    report = Report("market_network")
    report.add("raw: signed peer round trip", signed_rt * ms, "ms")
    report.add("raw: ledger authorize + countersign + complete", trio * ms, "ms")
    report.add("direct invoke p50, c=1", d50 * ms, "ms")
    report.add("remote invoke p50, c=1", r50 * ms, "ms")
    report.add("added p50, remote - direct", added * ms, "ms", target=TARGET_ADDED_MS, op="<")
    report.add("added p50, paid", added * ms, "ms", target=TARGET_ADDED_MS_PAID, op="<")
    report.add("direct invokes/s, c=8", rate_d, "/s")
    report.add("remote invokes/s, c=8", rate_r, "/s")
    report.add("remote/direct rate c=8", rate_r / rate_d, "x", target=TARGET_REMOTE_RATIO, op=">=")
    report.add("old path (signed) remote/direct rate c=8", rate_old / rate_d, "x")
    report.add("old path (signed) added p50", added_old * ms, "ms")
    report.add("raw: unsigned peer round trip on a certified connection", channel_rt * ms, "ms")
    report.add("remote signed requests per call, c=8", requests_per_call, "")
    report.add("remote node cores busy (A + B), c=8", rate_r * (us["remote", "A"] + us["remote", "B"]) / 1e6, "")
    for (name, side), value in sorted(loop_us.items()):
        if name != "direct" or side == "B":
            report.add(f"{name} node {side} event-loop thread CPU per call, c=8", value, "us")
    for name, (per_batch, per_call) in split.items():
        report.add(f"node {name} CPU per remote batch request", per_batch, "us")
        report.add(f"node {name} CPU per remote call, batch part aside", per_call, "us")
    report.write()
    met = added * ms < TARGET_ADDED_MS_PAID and rate_r / rate_d >= TARGET_REMOTE_RATIO
    print(f"target added latency < {TARGET_ADDED_MS_CHANNEL:g} ms: {added * ms:.2f} ms -> "
          f"{'met' if added * ms < TARGET_ADDED_MS_CHANNEL else 'NOT met'}; load average now "
          f"{os.getloadavg()[0]:.2f} (above 1.5: the figures are noise)")
    print(f"targets (remote invokes paid through tabs): added latency < {TARGET_ADDED_MS_PAID:g} ms "
          f"({added * ms:.2f} ms), remote/direct rate at concurrency 8 >= {TARGET_REMOTE_RATIO} "
          f"({rate_r / rate_d:.2f}x) -> {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="invokes at concurrency 1, on each node")
    parser.add_argument("--seconds", type=float, default=3.0, help="about how long each concurrency-8 phase runs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="xsc-bench-mnet-"))
    try:
        asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
