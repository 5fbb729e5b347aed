"""Small objects: 1 KiB puts through the user API and through the S3 front, against a minimal aiohttp JSON handler
measured in the same run.

    python -m bench.bench_small_objects [--seconds S] [--no-devnet | --only-devnet] [--in-node-filled]

Starts a node process and `xsc s3 serve` in front of it, then times, one after the other (in-node last, on a fresh
node of its own that answers S3 itself, `node.s3_listen`: a node serves one front):
  minimal   a minimal aiohttp handler reading a 1 KiB body and answering JSON (its own process), at concurrency 8
  put       POST /v1/store/files of 1 KiB (a whole put: market, encryption, RS(4,2), deals) at concurrency 1 and 8
  s3        PutObject of 1 KiB through the front at concurrency 8, signed (SigV4, the payload's SHA-256) and sent by
            the same aiohttp client as `put`, so the ratio of the two is the front's cost, not the client's;
            both again at concurrency 32 (more small objects on their way at once: the front sends them together)
  in-node   the same PutObjects to the node's own S3 listener (the front in the node's process, no request between
            them) at concurrency 8 and 32 (--in-node-filled: the first node restarted to answer S3 itself, over the
            files and deals the phases before filled its data dir with, as its front reconciles them)
  boto3     the same through boto3 (8 threads): what a Python program using the SDK sees (the SDK's own CPU per
            request is about that of the front and the node together on these 2 cores)
  s3 1001   1,001 PutObjects one after another (boto3)
  devnet    POST /v1/store/files of 1 KiB at concurrency 8 to the first node of a 6-node devnet (skip: --no-devnet;
            alone: --only-devnet), with the CPU per put of the gateway and of each other node
and prints the issue's figures: put at concurrency 8 / minimal (target at least 0.1), put at concurrency 8 /
put at concurrency 1 (at least 2), in-node / put at concurrency 8 (at least 0.8; s3 / put beside it), 1,001
PutObjects (under 10 s),
puts a second on the devnet (at least 100), and the load average as the run began and ended (on a loaded machine
the figures are lower: every phase shares its cores with whatever else runs).

For put, s3 and in-node at concurrency 8 it also prints where an object's time went, per object: what each process's
event loop ran and how long it waited for a core (Linux schedstat), the CPU of every process together, and the
put's CPU over the PutObject's: the rate the two reach together tends to that ratio wherever the cores, not
the waits, bound them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from xsc.devnet import Devnet, free_port
from xsc.s3.core import sigv4

from .bench_s3 import _start_front, _xsc
from .common import UNLIMITED_USER, cpu_seconds, main_thread_times, serve_script, start_node
from .report import Report

KiB = 1024
MINIMAL_SERVER = """
import sys
from aiohttp import web
async def handler(request):
    body = await request.read()
    return web.json_response({"capability": "x" * 120, "size": len(body)}, status=201)
app = web.Application()
app.router.add_post("/v1/store/files", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def posts(url: str, token: str, concurrency: int, seconds: float) -> float:
    """1 KiB POSTs from `concurrency` clients for `seconds`: requests a second (every answer must be 201)."""
    done = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.post(url + "/v1/store/files", data=os.urandom(KiB)) as response:
                    await response.read()
                    if response.status != 201:
                        raise SystemExit(f"a put answered {response.status}")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def put_objects(url: str, key: dict, bucket: str, concurrency: int, seconds: float) -> float:
    """1 KiB PutObjects from `concurrency` clients for `seconds`, each signed with SigV4 over its payload's SHA-256:
    requests a second (every answer must be 200)."""
    done = 0
    deadline = time.perf_counter() + seconds
    run = os.urandom(4).hex()  # new keys each call: no overwrites
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def client(worker: int) -> None:
            nonlocal done
            n = 0
            while time.perf_counter() < deadline:
                await put_object(session, url, key, f"/{bucket}/aio/{run}/{worker}/{n}")
                done += 1
                n += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(w) for w in range(concurrency)))
        return done / (time.perf_counter() - started)


async def put_object(session: aiohttp.ClientSession, url: str, key: dict, path: str) -> None:
    """One PutObject of 1 KiB at `path`, signed with SigV4 over its payload's SHA-256 (its answer must be 200)."""
    body = os.urandom(KiB)
    headers = sigv4.sign_headers("PUT", path, "", url.removeprefix("http://"), {"Content-Length": str(len(body))},
                                 key["access_key"], key["secret_key"], time.time(),
                                 payload_hash=hashlib.sha256(body).hexdigest())
    async with session.put(url + path, data=body, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise SystemExit(f"a PutObject answered {response.status}")


class Spent:
    """Per object over one phase: each process's event loop (ran on a core, waited for one) and the CPU of all
    its threads; this process is the client."""

    def __init__(self, **pids: int) -> None:
        self.pids = {**pids, "client": os.getpid()}
        self.before = self._now()

    def _now(self) -> dict[str, tuple[float, float, float]]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {name: (*main_thread_times(pid)[:2], own.ru_utime + own.ru_stime if pid == os.getpid()
                       else cpu_seconds(pid)) for name, pid in self.pids.items()}

    def per(self, objects: float) -> dict[str, tuple[float, float, float]]:
        """name -> (loop ran, loop waited, all threads' CPU), ms per object."""
        after = self._now()
        return {name: tuple(1e3 * (a - b) / objects for a, b in zip(after[name], self.before[name]))
                for name in self.pids}


def spent_line(what: str, spent: dict[str, tuple[float, float, float]]) -> str:
    parts = ", ".join(f"{name} {ran:.2f}/{waited:.2f} ({cpu:.2f})" for name, (ran, waited, cpu) in spent.items())
    return f"  {what}: {parts}; all {sum(cpu for _, _, cpu in spent.values()):.2f} ms"


def devnet_puts(tmp: Path, seconds: float) -> tuple[float, list[float]]:
    """1 KiB puts a second at concurrency 8 to the first node of a 6-node devnet, and the CPU each node spent per
    put (ms; the gateway first)."""
    with Devnet(tmp / "devnet", 6, env=UNLIMITED_USER).start() as net:
        net.wait_peered(120)
        asyncio.run(posts(net.first.url, net.first.token, 8, 1.0))  # the providers' terms, asked once
        cpu = [cpu_seconds(n.pid) for n in net]
        started = time.perf_counter()
        rate = asyncio.run(posts(net.first.url, net.first.token, 8, seconds))
        puts = rate * (time.perf_counter() - started)
        return rate, [(cpu_seconds(n.pid) - before) * 1000 / puts for n, before in zip(net, cpu)]


def devnet_line(rate: float, per_node: list[float]) -> str:
    total = sum(per_node)
    return (f"1 KiB puts on a 6-node devnet, c=8: {rate:,.0f}/s (target at least 100); CPU per put {total:.1f} ms, "
            f"all six nodes (the gateway {per_node[0]:.1f}, the others {' '.join(f'{c:.1f}' for c in per_node[1:])}), "
            f"so {os.cpu_count()} cores hold at most {os.cpu_count() * 1000 / total:,.0f}/s")


def main() -> None:
    import boto3
    from botocore.config import Config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each load phase")
    parser.add_argument("--no-devnet", action="store_true", help="skip the 6-node devnet phase")
    parser.add_argument("--only-devnet", action="store_true", help="only the 6-node devnet phase")
    parser.add_argument("--in-node-filled", action="store_true",
                        help="time the node's own S3 listener on the first node restarted, not on a fresh node")
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in load_before)}")
    if args.only_devnet:
        with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp_name:
            devnet, per_node = devnet_puts(Path(tmp_name), args.seconds)
        load_after = os.getloadavg()
        print(devnet_line(devnet, per_node))
        print(f"load average: {load_before[0]:.2f} as the run began, {load_after[0]:.2f} as it ended (1 minute)")
        report = Report("small_objects_devnet")
        report.add("1 KiB puts at concurrency 8 on a 6-node devnet", devnet, "/s", target=100, op=">=")
        report.add("CPU per put on the 6-node devnet, all nodes", sum(per_node), "ms")
        report.add("load average (1 minute) as the run ended", load_after[0], "")
        report.write()
        return
    with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "node"
        node = start_node(data_dir, "--log-level", "WARNING", env=UNLIMITED_USER)
        front = None
        try:
            with serve_script(MINIMAL_SERVER) as (port, _):
                minimal = asyncio.run(posts(f"http://127.0.0.1:{port}", "-", 8, args.seconds))
            sequential = asyncio.run(posts(node.url, node.token, 1, args.seconds))
            spent, started = Spent(node=node.pid), time.perf_counter()
            concurrent = asyncio.run(posts(node.url, node.token, 8, args.seconds))
            put_spent = spent.per(concurrent * (time.perf_counter() - started))
            concurrent32 = asyncio.run(posts(node.url, node.token, 32, args.seconds))
            key = json.loads(_xsc(data_dir, "s3", "keys", "create", "--json", capture_output=True).stdout)
            front, url = _start_front(data_dir)
            s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=key["access_key"],
                              aws_secret_access_key=key["secret_key"], region_name="us-east-1",
                              config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                            max_pool_connections=16))
            s3.create_bucket(Bucket="small")
            spent, started = Spent(node=node.pid, front=front.pid), time.perf_counter()
            s3_rate = asyncio.run(put_objects(url, key, "small", 8, args.seconds))
            s3_spent = spent.per(s3_rate * (time.perf_counter() - started))
            s3_rate32 = asyncio.run(put_objects(url, key, "small", 32, args.seconds))
            body = os.urandom(KiB)
            deadline = time.perf_counter() + args.seconds

            def put_until(worker: int) -> int:
                n = 0
                while time.perf_counter() < deadline:
                    s3.put_object(Bucket="small", Key=f"c8/{worker}/{n}", Body=body)
                    n += 1
                return n

            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                boto3_rate = sum(pool.map(put_until, range(8))) / (time.perf_counter() - started)
            started = time.perf_counter()
            for n in range(1001):
                s3.put_object(Bucket="small", Key=f"seq/{n}", Body=body)
            seq_s3 = time.perf_counter() - started
            front.terminate()
            front.wait(10)
            front = None
            # A node answers S3 itself (one front a node): a fresh one, as the node was for the puts above, or the
            # same node restarted over what the phases above stored.
            node.stop()
            s3_port, data_dir = free_port(), data_dir if args.in_node_filled else tmp / "node-s3"
            node = start_node(data_dir, "--log-level", "WARNING",
                              env={**UNLIMITED_USER, "XSC_NODE_S3_LISTEN": f"127.0.0.1:{s3_port}"})
            key = json.loads(_xsc(data_dir, "s3", "keys", "create", "--json", capture_output=True).stdout)
            in_node_url = f"http://127.0.0.1:{s3_port}"
            boto3.client("s3", endpoint_url=in_node_url, aws_access_key_id=key["access_key"],
                         aws_secret_access_key=key["secret_key"], region_name="us-east-1",
                         config=Config(signature_version="s3v4", s3={"addressing_style": "path"})
                         ).create_bucket(Bucket="small")
            spent, started = Spent(node=node.pid), time.perf_counter()
            in_node = asyncio.run(put_objects(in_node_url, key, "small", 8, args.seconds))
            in_node_spent = spent.per(in_node * (time.perf_counter() - started))
            in_node32 = asyncio.run(put_objects(in_node_url, key, "small", 32, args.seconds))
        finally:
            if front is not None:
                front.terminate()
                front.wait(10)
            node.stop()
        devnet = None
        if not args.no_devnet:
            devnet, per_node = devnet_puts(tmp, args.seconds)
    load_after = os.getloadavg()
    print(f"minimal aiohttp JSON handler, c=8: {minimal:,.0f} requests/s")
    print(f"1 KiB puts, user API: c=1 {sequential:,.0f}/s, c=8 {concurrent:,.0f}/s")
    print(f"1 KiB PutObject through the front, c=8: {s3_rate:,.0f}/s (boto3: {boto3_rate:,.0f}/s); 1,001 one after "
          f"another (boto3): {seq_s3:.1f} s")
    which = "the first node restarted" if args.in_node_filled else "a fresh node"
    print(f"1 KiB PutObject to the node's own S3 listener ({which}): c=8 {in_node:,.0f}/s, c=32 {in_node32:,.0f}/s")
    print(f"at c=32: puts {concurrent32:,.0f}/s, PutObjects {s3_rate32:,.0f}/s: {s3_rate32 / concurrent32:.2f}, "
          f"in the node {in_node32 / concurrent32:.2f}")
    print(f"put c=8 / minimal: {concurrent / minimal:.3f} (target at least 0.1); c=8 / c=1: "
          f"{concurrent / sequential:.2f} (at least 2); PutObject / put at c=8: in the node {in_node / concurrent:.2f} "
          f"(at least 0.8), through xsc s3 serve {s3_rate / concurrent:.2f}")
    put_cpu, s3_cpu, in_node_cpu = (sum(cpu for _, _, cpu in spent.values())
                                    for spent in (put_spent, s3_spent, in_node_spent))
    print("per object at c=8, ms: each event loop ran/waited for a core (its process's CPU, all threads)")
    print(spent_line("put", put_spent))
    print(spent_line("PutObject", s3_spent))
    print(spent_line("PutObject in the node", in_node_spent))
    print(f"  CPU of a put / of a PutObject, all processes: {put_cpu / in_node_cpu:.2f} in the node, "
          f"{put_cpu / s3_cpu:.2f} through xsc s3 serve (where the cores bound both, the rates' ratio comes to this)")
    if devnet is not None:
        print(devnet_line(devnet, per_node))
    print(f"load average: {load_before[0]:.2f} as the run began, {load_after[0]:.2f} as it ended (1 minute)")
    report = Report("small_objects")
    report.add("1 KiB puts at concurrency 8 / minimal aiohttp JSON handler", concurrent / minimal, "x", target=0.1,
               op=">=")
    report.add("1 KiB puts at concurrency 8 / sequential", concurrent / sequential, "x", target=2, op=">=")
    restarted = " (the first node restarted over what it stored)" if args.in_node_filled else ""
    report.add(f"1 KiB PutObject to the node's own S3 listener{restarted} at concurrency 8 / user-API puts at "
               "concurrency 8", in_node / concurrent, "x", target=0.8, op=">=")
    report.add("1 KiB PutObject through xsc s3 serve at concurrency 8 / user-API puts at concurrency 8",
               s3_rate / concurrent, "x")
    report.add("1 KiB PutObject to the node's own S3 listener at concurrency 32 / user-API puts at concurrency 32",
               in_node32 / concurrent32, "x")
    report.add("1 KiB PutObject through xsc s3 serve at concurrency 32 / user-API puts at concurrency 32",
               s3_rate32 / concurrent32, "x")
    report.add("1 KiB PutObject at concurrency 8 through boto3 / user-API puts at concurrency 8",
               boto3_rate / concurrent, "x")
    report.add("CPU per 1 KiB put / per PutObject in the node at concurrency 8, all processes", put_cpu / in_node_cpu,
               "x")
    report.add("CPU per 1 KiB put / per PutObject through xsc s3 serve at concurrency 8, all processes",
               put_cpu / s3_cpu, "x")
    report.add("1,001 sequential PutObjects", seq_s3, "s", target=10, op="<")
    if devnet is not None:
        report.add("1 KiB puts at concurrency 8 on a 6-node devnet", devnet, "/s", target=100, op=">=")
    report.add("load average (1 minute) as the run ended", load_after[0], "")
    report.write()


if __name__ == "__main__":
    main()
