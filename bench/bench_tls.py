"""What TLS costs peer traffic: two 2-node devnets on this machine, one with TLS (the default), one without.

    .venv/bin/python -m bench.bench_tls [--size MIB] [--rounds N] [--puts N]

Both networks run at once and are measured in turns (plain, TLS, plain, TLS, ...), so the load of
this shared machine falls on both alike; the figures are TLS / plaintext ratios from this one run,
and raw steps measured here too:
- signed peer round trip: a probe round over one peer, timed inside the prober (sign a challenge,
  send it on a kept-alive connection, the peer checks and signs its answer, the prober checks it);
- a new connection: TCP connect, and TCP connect + TLS 1.3 handshake with the key pinned;
- storage put between two nodes: `xsc store put` on node 0; the market places the 6 shares on
  both nodes, and the shares on node 1 (about half of 1.5x the file) cross the peer link.  (Not all
  six on node 1: a holder takes at most 4 segment bodies in flight from one sender.)
- raw: AES-256-GCM (the TLS cipher's work per byte) and an Ed25519 sign+verify pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xsc.devnet import Devnet, run_xsc
from xsc.net import tls

from .report import Report

MiB = 1024 * 1024
QUIET = {"XSC_HEALTH_PROBE_INTERVAL": "86400", "XSC_PEERS_GOSSIP_INTERVAL": "86400",
         "XSC_AUDIT_BLOCKS_PER_ROUND": "0"}


def raw_aes_gcm(seconds: float = 1.0) -> float:
    """Bytes per second of AES-256-GCM over 16 KiB records (TLS's record size)."""
    aead, data, nonce = AESGCM(os.urandom(32)), os.urandom(16 * 1024), os.urandom(12)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        aead.encrypt(nonce, data, None)
        n += 1
    return n * len(data) / (time.perf_counter() - start)


def raw_sign_verify(seconds: float = 1.0) -> float:
    key = Ed25519PrivateKey.generate()
    public, message = key.public_key(), os.urandom(300)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        public.verify(key.sign(message), message)
        n += 1
    return (time.perf_counter() - start) / n


def _api(url: str, token: str, method: str, path: str) -> dict:
    request = urllib.request.Request(url + path, method=method, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


async def _connects(port: int, node: str | None, count: int) -> float:
    """Median seconds of a new connection to the node's port: TCP only (node None), or TCP + pinned TLS."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context(node) if node else None)
        times.append(time.perf_counter() - start)
        writer.close()
        await writer.wait_closed()
    return statistics.median(times)


def _file(path: Path, size: int) -> None:
    chunk = os.urandom(min(size, 16 * MiB))
    with path.open("wb") as f:
        left = size
        while left:
            f.write(chunk[:left])
            left -= min(left, len(chunk))


class Net:
    def __init__(self, root: Path, tls_on: bool) -> None:
        self.name = "TLS" if tls_on else "plaintext"
        self.devnet = Devnet(root / self.name, 2, env={**QUIET, "XSC_PEERS_TLS": "true" if tls_on else "false"})
        self.rounds: list[float] = []
        self.puts: list[float] = []
        self.remote = 0  # shares of the last put on the other node

    def start(self) -> None:
        self.devnet.start(120)
        first = self.devnet.first
        deadline = time.monotonic() + 60
        while not (peers := _api(first.url, first.token, "GET", "/v1/peers")["peers"]):
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: node 1 did not join node 0")
            time.sleep(0.1)
        self.peer_url, self.peer_id = peers[0]["url"], peers[0]["id"]
        self.me = _api(first.url, first.token, "GET", "/v1/peers")["self"]["id"]
        for _ in range(10):  # warm up: connections, caches
            self.probe()

    def probe(self) -> float:
        first = self.devnet.first
        result = _api(first.url, first.token, "POST", "/v1/health/probe")
        if result["ok"] != 1:
            raise SystemExit(f"{self.name}: a probe failed: {result['results']}")
        return result["seconds"]

    def put(self, src: Path) -> float:
        args = ["--data-dir", str(self.devnet.first.data_dir)]
        start = time.perf_counter()
        result = run_xsc(*args, "store", "put", str(src), "--json", timeout=600)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"{self.name}: put failed: {result.stderr.decode()[-400:]}")
        capability = json.loads(result.stdout)["capability"]
        check = json.loads(run_xsc(*args, "store", "check", capability, "--json", timeout=120).stdout)
        self.remote = sum(1 for share in check.get("shares", []) if share.get("node") == self.peer_id)
        run_xsc(*args, "store", "rm", capability, timeout=120)
        return seconds

    def stop(self) -> None:
        self.devnet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="MiB per put (default 64)")
    parser.add_argument("--rounds", type=int, default=300, help="probe rounds per network (default 300)")
    parser.add_argument("--puts", type=int, default=3, help="puts per network (default 3; the best counts)")
    args = parser.parse_args()
    size = args.size * MiB

    aes, pair = raw_aes_gcm(), raw_sign_verify()
    with tempfile.TemporaryDirectory(prefix="xsc-bench-tls-") as tmp:
        root = Path(tmp)
        nets = [Net(root, False), Net(root, True)]
        try:
            for net in nets:
                net.start()
            plain, secure = nets
            port = int(secure.peer_url.rsplit(":", 1)[1])
            tcp = asyncio.run(_connects(port, None, 200))
            handshake = asyncio.run(_connects(port, secure.peer_id, 200))
            for _ in range(args.rounds):  # in turns: the machine's load falls on both alike
                for net in nets:
                    net.rounds.append(net.probe())
            src = root / "input.bin"
            _file(src, size)
            for _ in range(args.puts):
                for net in nets:
                    net.puts.append(net.put(src))
        finally:
            for net in nets:
                net.stop()

    rtt = {net.name: statistics.median(net.rounds) for net in nets}
    put = {net.name: size / min(net.puts) for net in nets}
    print(f"raw AES-256-GCM, 16 KiB records:      {aes / 1e9:8.2f} GB/s")
    print(f"raw Ed25519 sign+verify pair:         {pair * 1e6:8.1f} µs")
    print(f"new connection, TCP:                  {tcp * 1e6:8.1f} µs (median of 200)")
    print(f"new connection, TCP + TLS 1.3 pinned: {handshake * 1e6:8.1f} µs = {handshake / tcp:.1f}x TCP, "
          f"{handshake / pair:.1f} sign+verify pairs")
    for name in rtt:
        print(f"signed peer round trip, {name:9}:    {rtt[name] * 1e6:8.1f} µs (median of {args.rounds}, kept-alive)")
    print(f"  TLS / plaintext:                    {rtt['TLS'] / rtt['plaintext']:8.2f}x")
    for name in put:
        remote = next(net.remote for net in nets if net.name == name)
        print(f"put {args.size} MiB on 2 nodes, {name:9}: {put[name] / 1e6:6.1f} MB/s "
              f"(best of {args.puts}; {remote} of 6 shares on the other node)")
    print(f"  TLS / plaintext:                    {put['TLS'] / put['plaintext']:8.2f}x  "
          f"(the link's TLS bytes are {put['TLS'] * 1.5 * secure.remote / 6 / aes:.1%} of one core's AES-GCM)")
    report = Report("tls")
    report.add("raw: AES-256-GCM 16 KiB records", aes / 1e9, "GB/s")
    report.add("raw: Ed25519 sign+verify pair", pair * 1e6, "us")
    report.add("new connection TCP", tcp * 1e6, "us")
    report.add("new connection TCP + TLS 1.3 pinned", handshake * 1e6, "us")
    report.add("signed peer round trip, plaintext", rtt["plaintext"] * 1e6, "us")
    report.add("signed peer round trip, TLS", rtt["TLS"] * 1e6, "us")
    report.add("round trip TLS / plaintext", rtt["TLS"] / rtt["plaintext"], "x", target=1.5, op="<=")
    report.add(f"put {args.size} MiB on 2 nodes, plaintext", put["plaintext"] / 1e6, "MB/s")
    report.add(f"put {args.size} MiB on 2 nodes, TLS", put["TLS"] / 1e6, "MB/s")
    report.add("put TLS / plaintext", put["TLS"] / put["plaintext"], "x", target=0.8, op=">=")
    report.write()


if __name__ == "__main__":
    main()
