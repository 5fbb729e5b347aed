"""Floods and slow clients against a real node process: its memory, its connections and /health meanwhile.

    python -m bench.bench_floods [--idle 2000] [--slow 200] [--requests 3000] [--seconds 8] [--json out.json]

One node (xsc/devnet.py) with its defaults but smaller rates.  Phases, each held for --seconds:
- baseline: nothing but the sampler;
- idle: --idle sockets opened and held without a request, and 50 slowloris sockets trickling one byte of a
  request head every half second;
- slow bodies: --slow requests that stop mid-body (an invoke and a put that declare more bytes than they send);
- user flood: --requests requests with the user's token from 8 threads, as fast as they go;
- peer flood: --requests signed requests from one peer key from 8 threads.
Throughout, a sampler reads the node's resident memory (anonymous and file, from /proc/PID/status, as
xsc/node/metrics.py does), its open descriptors, and times GET /health on a fresh connection every 50 ms.
Figures per phase: RSS, descriptors, the node's CPU seconds, /health latency p50/p99/max and its ratio to the baseline phase's.
tests/node/test_floods.py runs it with small numbers and checks the bounds that are not timings.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from xsc.devnet import HOST, NodeProcess
from xsc.identity import Identity, sign_request
from xsc.serve.connections import raise_fd_limit

from .common import HealthProbe


@dataclass
class Sample:
    phase: str
    anonymous: int
    file: int
    fds: int
    cpu: float  # the node's CPU seconds so far (user + system): steadier than /health's wall time on a busy box
    health_status: int | None  # GET /health on a fresh connection; None: no answer
    health_seconds: float
    kept_status: int | None  # the same on one kept-alive connection: the node's event loop without its accept queue
    kept_seconds: float


@dataclass
class Figures:
    samples: list[Sample] = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # per phase: answers by status, sockets closed by the node...
    config: dict = field(default_factory=dict)

    def phase(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == name]

    def summary(self) -> dict:
        out = {}
        base = self.phase("baseline")
        base_p50 = statistics.median([s.health_seconds for s in base]) if base else None
        for name in dict.fromkeys(s.phase for s in self.samples):
            samples = self.phase(name)
            fresh = _latency(s.health_seconds for s in samples)
            kept = _latency(s.kept_seconds for s in samples)
            out[name] = {
                "samples": len(samples),
                "rss_anon_max_mib": round(max(s.anonymous for s in samples) / 2**20, 1),
                "rss_file_max_mib": round(max(s.file for s in samples) / 2**20, 1),
                "fds_max": max(s.fds for s in samples),
                "node_cpu_s": round(samples[-1].cpu - samples[0].cpu, 3),
                "health_not_200": sum(1 for s in samples if s.health_status != 200 or s.kept_status != 200),
                **{f"health_{k}_ms": v for k, v in fresh.items()},
                **{f"kept_health_{k}_ms": v for k, v in kept.items()},
                "health_p50_x_baseline": round(fresh["p50"] / 1000 / base_p50, 2) if base_p50 else None,
                **self.counts.get(name, {}),
            }
        return out


def _latency(seconds) -> dict:
    ordered = sorted(seconds)
    return {"p50": round(statistics.median(ordered) * 1000, 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max": round(ordered[-1] * 1000, 2)}


def _closed_by_peer(sock: socket.socket, until: float = 0.0) -> bool:
    """Has the node closed this socket (or answered on it and closed it), by the monotonic time `until`?"""
    sock.settimeout(max(0.0, until - time.monotonic()))
    try:
        data = sock.recv(65536)
        return data == b"" or data.startswith(b"HTTP/1.1 503") or data.startswith(b"HTTP/1.1 408")
    except (BlockingIOError, TimeoutError):
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


ATTACKER = "127.0.0.2"  # the idle and slow sockets come from their own loopback address (its per-address cap)


def _connect(node: NodeProcess) -> socket.socket:
    return socket.create_connection((HOST, node.port), timeout=5, source_address=(ATTACKER, 0))


def hold_idle(node: NodeProcess, n: int, trickle: int, seconds: float, grace: float = 0.0) -> dict:
    """Open n idle sockets and `trickle` slowloris ones, hold them `seconds`; count what the node closed
    (by then, or within `grace` seconds more)."""
    idle, slow, failed = [], [], 0
    started = time.monotonic()
    for i in range(n + trickle):
        try:
            sock = _connect(node)
        except OSError:
            failed += 1
            continue
        (slow if i < trickle else idle).append(sock)
    connecting = time.monotonic() - started  # a slower burst is accepted a few at a time: more loop turns
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    deadline, sent = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        for sock in slow:
            try:
                sock.send(head[sent % len(head):sent % len(head) + 1])
            except OSError:
                pass
        sent += 1
        time.sleep(0.5)
    until = time.monotonic() + grace
    counts = {"opened": len(idle) + len(slow), "connect_failed": failed, "connect_seconds": round(connecting, 2),
              "idle_closed_by_node": sum(_closed_by_peer(s, until) for s in idle),
              "slowloris_closed_by_node": sum(_closed_by_peer(s, until) for s in slow)}
    for sock in idle + slow:
        sock.close()
    return counts


def slow_bodies(node: NodeProcess, token: str, n: int, seconds: float) -> dict:
    """n requests that declare a body and stop sending it part way (half invokes, half puts)."""
    socks = []
    for i in range(n):
        try:
            sock = _connect(node)
        except OSError:
            continue
        path = "/v1/compute/invoke" if i % 2 else "/v1/store/files?name=slow"
        kind = "application/json" if i % 2 else "application/octet-stream"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {kind}\r\n"
                     f"Content-Length: 200000\r\n\r\n".encode() + b"{" + b" " * 1000)
        socks.append(sock)
    time.sleep(seconds)
    closed = sum(_closed_by_peer(s) for s in socks)
    for sock in socks:
        sock.close()
    return {"sent": len(socks), "closed_by_node": closed}


def flood(node: NodeProcess, n: int, headers_for, path: str, body: bytes, threads: int = 8) -> dict:
    """n requests over `threads` keep-alive connections; answers counted by status."""
    statuses: dict[int, int] = {}
    retry_after_ok, problem_ok = [True], [True]
    lock = threading.Lock()

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection(HOST, node.port, timeout=30)
        for _ in range(count):
            try:
                conn.request("POST" if body else "GET", path, body=body or None, headers=headers_for(path, body))
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, node.port, timeout=30)
                status = 0
            else:
                status = response.status
                if status == 429:
                    ok = int(response.getheader("Retry-After", "0")) >= 1
                    problem = response.getheader("Content-Type", "").startswith("application/problem+json") and \
                        json.loads(data).get("code") == "quota-exceeded"
                    if not ok or not problem:
                        retry_after_ok[0] = retry_after_ok[0] and ok
                        problem_ok[0] = problem_ok[0] and problem
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    workers = [threading.Thread(target=worker, args=(n // threads + (i < n % threads),)) for i in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    return {"answers": {str(k): v for k, v in sorted(statuses.items())}, "per_second": round(n / seconds),
            "429_has_retry_after": retry_after_ok[0], "429_has_problem_body": problem_ok[0]}


def run(work: Path, *, idle: int, slow: int, requests: int, seconds: float, env: dict | None = None,
        grace: float = 0.0) -> Figures:
    """Start a node in `work`, run every phase against it, stop it; the figures.  `grace`: how much longer
    than the idle phase to wait for the node to close the idle sockets it kept."""
    raise_fd_limit()  # this process holds the idle sockets
    config = {"XSC_AUDIT_BLOCKS_PER_ROUND": "0", "XSC_AUDIT_SCRUB_RATE": "0", "XSC_HEALTH_PROBE_INTERVAL": "3600",
              "XSC_PEERS_RATE_LIMIT": "200", "XSC_NODE_USER_RATE_LIMIT": "200", **(env or {})}
    figures = Figures(config=config)
    node = NodeProcess(work / "node", env=config, log=work / "node.log").start(timeout=60)
    token = (work / "node" / "api-token").read_text().strip()
    peer = Identity.generate()
    try:
        with HealthProbe(HOST, node.port, node.pid) as probe:
            probe.mark("baseline")
            time.sleep(seconds)
            probe.mark("idle")
            figures.counts["idle"] = hold_idle(node, idle, 50, seconds, grace)
            probe.mark("slow_bodies")
            figures.counts["slow_bodies"] = slow_bodies(node, token, slow, seconds)
            probe.mark("user_flood")
            figures.counts["user_flood"] = flood(
                node, requests, lambda p, b: {"Authorization": f"Bearer {token}"}, "/v1/node/status", b"")
            probe.mark("peer_flood")
            challenge = json.dumps({"nonce": "ab" * 16}).encode()
            figures.counts["peer_flood"] = flood(
                node, requests, lambda p, b: {**sign_request(peer, "POST", p, b), "Content-Type": "application/json"},
                "/v1/peer/challenge", challenge)
            probe.mark("after")
            time.sleep(min(seconds, 2))
        figures.samples = [Sample(d["phase"], d["anonymous"], d["file"], d["fds"], d["cpu"], d["fresh_status"],
                                  d["fresh_seconds"], d["kept_status"], d["kept_seconds"]) for d in probe.samples()]
        figures.counts.setdefault("after", {})["node_alive"] = node.alive()
    finally:
        node.stop()
    return figures


def report(figures: Figures) -> str:
    """Two tables (80 columns): what the node held, and how /health answered (ms, fresh and kept-alive)."""
    summary = figures.summary()
    lines = [f"floods against one node process ({', '.join(f'{k}={v}' for k, v in figures.config.items())})",
             f"{'phase':<12} {'RSS anon':>9} {'RSS file':>9} {'fds':>6} {'node CPU s':>11} {'p50/base':>9}"]
    for name, s in summary.items():
        lines.append(f"{name:<12} {s['rss_anon_max_mib']:>7} M {s['rss_file_max_mib']:>7} M {s['fds_max']:>6} "
                     f"{s['node_cpu_s']:>11} {s['health_p50_x_baseline'] or '-':>9}")  # '-': no baseline sample
    lines.append(f"{'/health ms':<12} {'fresh p50':>9} {'p99':>7} {'max':>7}  {'kept p50':>8} {'p99':>7} {'max':>7} "
                 f"{'not 200':>7}")
    for name, s in summary.items():
        lines.append(f"{name:<12} {s['health_p50_ms']:>9} {s['health_p99_ms']:>7} {s['health_max_ms']:>7}  "
                     f"{s['kept_health_p50_ms']:>8} {s['kept_health_p99_ms']:>7} {s['kept_health_max_ms']:>7} "
                     f"{s['health_not_200']:>7}")
    for name, counts in figures.counts.items():
        lines.append(f"  {name}: {counts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=2000, help="idle sockets held")
    parser.add_argument("--slow", type=int, default=200, help="requests that stop mid-body")
    parser.add_argument("--requests", type=int, default=3000, help="requests per flood")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each phase is held")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xsc-floods-") as tmp:
        figures = run(Path(tmp), idle=args.idle, slow=args.slow, requests=args.requests, seconds=args.seconds)
    print(report(figures))
    from .report import Report

    out = Report("floods")
    for name, phase in figures.summary().items():
        out.add(f"{name}: /health p50", phase["health_p50_ms"], "ms")
        out.add(f"{name}: /health max", phase["health_max_ms"], "ms", target=100, op="<")
        out.add(f"{name}: /health p50 x baseline", phase["health_p50_x_baseline"] or 0, "x")
        out.add(f"{name}: RSS anonymous max", phase["rss_anon_max_mib"], "MiB", target=200, op="<")
        out.add(f"{name}: open descriptors max", phase["fds_max"], "")
    out.write()
    if args.json:
        args.json.write_text(json.dumps({"summary": figures.summary(), "counts": figures.counts,
                                         "config": figures.config}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
