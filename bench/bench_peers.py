"""Peers benchmark: the time of one probe round over 6 peers, as ratios to raw steps measured in the same run.

    .venv/bin/python -m bench.bench_peers [--peers N] [--rounds N]

A probe round is what a node does every health.probe_interval: a signed challenge to every known
peer at once, each answer's signature checked, the results recorded in LevelDB.  Its raw steps:
one Ed25519 sign+verify pair (a request signature, or an answer signature), and one loopback HTTP
round trip (aiohttp client to a trivial aiohttp server in another process).  The round is timed
inside the probing node (POST /v1/health/probe runs one and reports its duration).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xsc.devnet import Devnet

from .common import free_port
from .report import Report

TRIVIAL_SERVER = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(text="ok")
app = web.Application()
app.router.add_post("/", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def raw_sign_verify(seconds: float = 1.0) -> float:
    """Seconds per Ed25519 sign+verify pair of a ~300-byte message (about a signed request's canonical form)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    message = os.urandom(300)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        public.verify(key.sign(message), message)
        n += 1
    return (time.perf_counter() - start) / n


async def raw_round_trip(url: str, count: int) -> float:
    """Median seconds of a POST of a small body on a kept-alive loopback connection."""
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count + 20):
            start = time.perf_counter()
            async with session.post(url, data=b'{"nonce":"' + os.urandom(16).hex().encode() + b'"}') as response:
                await response.read()
            times.append(time.perf_counter() - start)
    return statistics.median(times[20:])


def _api(url: str, token: str, method: str, path: str) -> dict:
    request = urllib.request.Request(url + path, method=method, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    pair = raw_sign_verify()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", TRIVIAL_SERVER, str(port)])
    # No background rounds or gossip to disturb the measured ones.
    quiet = {"XSC_HEALTH_PROBE_INTERVAL": "86400", "XSC_PEERS_GOSSIP_INTERVAL": "86400"}
    try:
        with tempfile.TemporaryDirectory(prefix="xsc-bench-peers-") as tmp, \
                Devnet(tmp, 1 + args.peers, env=quiet).start(60) as net:  # the first node probes the others
            prober_url, token = net.first.url, net.first.token
            deadline = time.monotonic() + 60
            while len(_api(prober_url, token, "GET", "/v1/peers")["peers"]) < args.peers:
                if time.monotonic() > deadline:
                    raise SystemExit("the peers did not join the prober")
                time.sleep(0.1)
            rtt = asyncio.run(raw_round_trip(f"http://127.0.0.1:{port}/", 300))
            for _ in range(10):  # warm up connections and caches
                _api(prober_url, token, "POST", "/v1/health/probe")
            rounds, calls = [], []
            for _ in range(args.rounds):
                start = time.perf_counter()
                result = _api(prober_url, token, "POST", "/v1/health/probe")
                calls.append(time.perf_counter() - start)
                if result["ok"] != args.peers:
                    raise SystemExit(f"a probe failed: {result['results']}")
                rounds.append(result["seconds"])
            rtt_after = asyncio.run(raw_round_trip(f"http://127.0.0.1:{port}/", 300))
    finally:
        server.terminate()
        server.wait(30)

    rtt = min(rtt, rtt_after)
    round_s = statistics.median(rounds)
    p90 = statistics.quantiles(rounds, n=10)[-1]
    print(f"raw Ed25519 sign+verify pair:      {pair * 1e6:8.1f} µs")
    print(f"raw loopback HTTP round trip:      {rtt * 1e6:8.1f} µs  (aiohttp, kept-alive, median)")
    print(f"probe round over {args.peers} peers (median): {round_s * 1e6:8.1f} µs  "
          f"(p90 {p90 * 1e6:.1f} µs, {args.rounds} rounds, timed in the prober)")
    print(f"  = {round_s / rtt:.2f} raw round trips, {round_s / pair:.1f} sign+verify pairs; "
          f"{round_s / args.peers * 1e6:.1f} µs per peer")
    print(f"  vs {args.peers} round trips one after another: {round_s / (args.peers * rtt):.2f}x")
    print(f"POST /v1/health/probe end to end:  {statistics.median(calls) * 1e6:8.1f} µs (median)")
    report = Report("peers")
    report.add("raw: Ed25519 sign+verify pair", pair * 1e6, "us")
    report.add("raw: loopback HTTP round trip", rtt * 1e6, "us")
    report.add(f"probe round over {args.peers} peers, median", round_s * 1e6, "us")
    report.add("probe round x raw round trip", round_s / rtt, "x")
    report.add("POST /v1/health/probe end to end", statistics.median(calls) * 1e6, "us")
    report.write()


if __name__ == "__main__":
    main()
