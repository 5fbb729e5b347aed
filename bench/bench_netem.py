"""A devnet behind an emulated wide-area network: a put and get with and without delay and loss, and the health.

    python -m bench.bench_netem [--nodes 6] [--size 64] [--delay 0.05] [--loss 0.01] [--watch 60] [--congestion reno]

Needs root, `ip` and `iptables` (xsc/netem).  Two runs, one after the other, each on a fresh `--nodes` devnet in
network namespaces (`Devnet(..., network=NetnsNetwork(...))`): first with no delay and no loss, then with every
packet entering a node's namespace held --delay seconds and dropped with probability --loss (node to node, a
round trip crosses two namespaces: twice the delay).  In each, once every node knows and has probed every other up:
a put of --size MiB through node-0 and a get of it (`xsc store put`, `store get` to /dev/null, run in node-0's
namespace: a user's CLI runs beside its node, which it finds by its data dir), after the raw steps they rest on:
one fresh TCP connection carrying --size MiB from node-1's namespace to node-2's, and one carrying a share's bytes,
a quarter of it (k = 4: each of the six shares is a quarter of the file); the put's, node-0's namespace sending a
share's bytes to each of the five others' at once, and the get's, four of them each sending one to node-0's at once,
every stream on a fresh connection (each printed as --size MiB over the seconds it took, beside the put or get:
what cold TCP carries on that path, with the host's socket buffers); then a second file of the same size put and got
right after it (what a user putting several files in a row sees), then --watch seconds more of the nodes' ordinary
work (probes every 10 s, audits every 10 s here).  Over each run, from every node's `GET /v1/health/peers` and
`GET /v1/node/status`: failed probes (each one marks the peer down until the next succeeds), probes asked again (a
challenge without an answer made once more before it counts), audits answered, failed and unanswered, repairs
started.  `--congestion`: the namespaces' default TCP congestion control (a new
namespace gets the host's, bbr here; most hosts' is loss-based, cubic, and a namespace may be given only those of
net.ipv4.tcp_allowed_congestion_control, so reno stands for it), what a node's sockets get where it cannot choose
its own (xsc/net/congestion.py).  Targets (the network row of docs/peers.md): put and get with delay and
loss at least 0.5x of those without; no failed probe, failed audit or repair under them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from xsc.devnet import Devnet, NodeProcess
from xsc.netem.delayline import in_namespace
from xsc.netem.namespaces import NetnsNetwork, check

from .bench_network import _file, _put_get
from .common import UNLIMITED_USER
from .report import Report

MiB = 1024 * 1024
UP_TIMEOUT = 180.0
ENV = {**UNLIMITED_USER, "XSC_AUDIT_INTERVAL": "10"}


@dataclass
class Run:
    delay: float
    loss: float
    put_mbs: float | None = None
    get_mbs: float | None = None
    probes: int = 0
    probes_failed: int = 0
    probes_asked_again: int = 0  # challenges that found no answer and were made once more (a probe's second attempt)
    last_errors: list[str] | None = None
    audits_ok: int = 0
    audits_failed: int = 0
    audits_unanswered: int = 0
    repairs_started: int = 0
    raw_mbs: float | None = None  # one fresh TCP stream of --size MiB from node-1's namespace to node-2's
    raw_share_mbs: float | None = None  # the same, of one share's bytes (a quarter of --size)
    # The raw steps a put and a get rest on, as --size MiB over the seconds they took: node-0's namespace sending a
    # share's bytes to five holders' at once, and four holders' each sending one to node-0's, on fresh connections.
    raw_put_mbs: float | None = None
    raw_get_mbs: float | None = None
    later_put_mbs: float | None = None  # a second file put and got right after the first
    later_get_mbs: float | None = None


# The raw step: a TCP stream between two nodes' namespaces, on the path a share takes to its holder.
_SINK = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(); print(s.getsockname()[1], flush=True)
c, _ = s.accept()
while c.recv(1 << 20): pass
c.send(b"k")
"""
_SOURCE = """
import socket, sys, time
data, size = b"x" * (1 << 20), int(sys.argv[3])
started = time.monotonic()
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
for _ in range(size >> 20): c.sendall(data)
c.shutdown(socket.SHUT_WR); c.recv(1)
print(time.monotonic() - started)
"""


def _raw_stream(network: NetnsNetwork, size: int) -> float:
    """MB/s of one fresh TCP connection carrying `size` bytes from node 1's namespace to node 2's."""
    sink = subprocess.Popen([*network.exec_prefix(2), sys.executable, "-c", _SINK, network.address(2)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = sink.stdout.readline().strip()
        took = subprocess.run([*network.exec_prefix(1), sys.executable, "-c", _SOURCE, network.address(2), port,
                               str(size)], capture_output=True, text=True, timeout=600, check=True)
        return size / float(took.stdout) / 1e6
    finally:
        sink.kill()
        sink.wait()


def _socket_in(network: NetnsNetwork, index: int) -> socket.socket:
    """A TCP socket of node `index`'s namespace (a socket stays in the namespace it was made in)."""
    with in_namespace(network.namespace(index)):
        return socket.socket()


def _raw_fan(network: NetnsNetwork, pairs: list[tuple[int, int]], size: int) -> float:
    """Seconds until each (sender, receiver) pair of namespaces has carried `size` bytes on a fresh TCP connection
    of its own, all started at once, and each receiver has said so (as a holder answers a batch)."""
    listeners, senders = [], []
    try:
        for sender, receiver in pairs:
            listener = _socket_in(network, receiver)
            listeners.append(listener)
            listener.bind((network.address(receiver), 0))
            listener.listen()
            senders.append(_socket_in(network, sender))
        start = threading.Barrier(len(pairs) + 1)
        ended: list[float] = []

        def send(sock: socket.socket, to: tuple[str, int]) -> None:
            data = b"x" * (1 << 20)
            start.wait()
            sock.connect(to)
            for offset in range(0, size, len(data)):
                sock.sendall(data[:size - offset])
            sock.recv(1)
            ended.append(time.monotonic())

        def receive(listener: socket.socket) -> None:
            conn, _ = listener.accept()
            with conn:
                buffer, left = bytearray(1 << 20), size
                while left:
                    got = conn.recv_into(buffer, min(left, len(buffer)))
                    if not got:
                        return
                    left -= got
                conn.sendall(b"k")

        threads = [threading.Thread(target=receive, args=(listener,)) for listener in listeners]
        threads += [threading.Thread(target=send, args=(sock, listener.getsockname()))
                    for sock, listener in zip(senders, listeners)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.monotonic()
        for thread in threads:
            thread.join(600)
        if len(ended) != len(pairs):
            raise SystemExit(f"a raw stream did not end: {len(ended)} of {len(pairs)}")
        return max(ended) - began
    finally:
        for sock in listeners + senders:
            sock.close()


def _get(node: NodeProcess, path: str) -> dict:
    request = urllib.request.Request(node.url + path, headers={"Authorization": f"Bearer {node.token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _all_probed_up(net: Devnet) -> bool:
    for node in net:
        peers = _get(node, "/v1/health/peers")["peers"]
        if len(peers) != len(net) - 1 or not all(p.get("up") for p in peers):
            return False
    return True


def _health(net: Devnet, run: Run) -> None:
    """The probes and audits every node made so far, and the repairs it started."""
    errors = []
    for node in net:
        view = _get(node, "/v1/health/peers")
        run.probes_asked_again += view["probes_asked_again"]
        if view["last_asked_again"]:
            errors.append(f"{node.name}, asked again after: {view['last_asked_again']}")
        for peer in view["peers"]:
            probes = peer.get("probes_1h") or 0
            run.probes += probes
            run.probes_failed += round(probes * (1 - (peer.get("ratio_1h") or 0))) if probes else 0
            if peer.get("last_error"):
                errors.append(f"{node.name}: {peer['last_error']}")
        audits = _get(node, "/v1/node/status")["audits"]
        run.audits_ok += audits["audits_ok"]
        run.audits_failed += audits["audits_failed"]
        run.audits_unanswered += audits["audits_unanswered"]
        run.repairs_started += (audits["repairs"] + audits["repairs_failed"] + audits["repair_queue"]
                                + bool(audits["repairing"]))
    run.last_errors = errors[:10]


def _measure(root: Path, count: int, delay: float, loss: float, src: Path, later: Path, watch: float,
             congestion: str | None = None) -> Run:
    run = Run(delay, loss)
    network = NetnsNetwork(root, count, delay, loss, congestion=congestion)
    with Devnet(root, count, env=ENV, network=network).start(timeout=UP_TIMEOUT) as net:
        lagging = net.wait_peered(UP_TIMEOUT)
        if lagging:
            raise SystemExit(f"{[n.name for n in lagging]} did not learn of every node in {UP_TIMEOUT:g} s")
        deadline = time.monotonic() + UP_TIMEOUT
        while not _all_probed_up(net):
            if time.monotonic() > deadline:
                raise SystemExit(f"the nodes did not probe each other up in {UP_TIMEOUT:g} s")
            time.sleep(0.5)
        default = subprocess.run([*network.exec_prefix(0), "cat", "/proc/sys/net/ipv4/tcp_congestion_control"],
                                 capture_output=True, text=True).stdout.strip()
        print(f"delay {delay:g} s, loss {loss:g}: {count} nodes up (their namespaces' default congestion control "
              f"{default}), load {os.getloadavg()[0]:.2f}", flush=True)
        size = src.stat().st_size
        run.raw_mbs = _raw_stream(network, size)
        run.raw_share_mbs = _raw_stream(network, size // 4)
        holders = range(1, count)  # a put of k=4, m=2 sends one share, a quarter of the file, to each of them
        run.raw_put_mbs = size / _raw_fan(network, [(0, h) for h in holders], size // 4) / 1e6
        run.raw_get_mbs = size / _raw_fan(network, [(h, 0) for h in holders[:4]], size // 4) / 1e6
        put_s, get_s, _ = _put_get(net.first.data_dir, src, network.exec_prefix(0))  # the CLI beside its node
        run.put_mbs, run.get_mbs = size / put_s / 1e6, size / get_s / 1e6
        put_s, get_s, _ = _put_get(net.first.data_dir, later, network.exec_prefix(0))
        run.later_put_mbs, run.later_get_mbs = size / put_s / 1e6, size / get_s / 1e6
        print(f"delay {delay:g} s, loss {loss:g}: raw TCP node to node {run.raw_mbs:.1f} MB/s (a share's bytes: "
              f"{run.raw_share_mbs:.1f}); put {run.put_mbs:.1f} MB/s, its raw step {run.raw_put_mbs:.1f} "
              f"({run.put_mbs / run.raw_put_mbs:.2f}x); get {run.get_mbs:.1f} MB/s, its raw step {run.raw_get_mbs:.1f} "
              f"({run.get_mbs / run.raw_get_mbs:.2f}x); a second file right after: put {run.later_put_mbs:.1f}, get "
              f"{run.later_get_mbs:.1f} MB/s", flush=True)
        time.sleep(watch)  # the nodes' own probes and audits over the stored file: what is measured
        _health(net, run)
    if network.leftovers() or network.delay_line_running():
        raise SystemExit(f"the network was not taken down: {network.leftovers()}")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=6, help="devnet size")
    parser.add_argument("--size", type=int, default=64, help="MiB put and got through node-0")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds each packet entering a namespace is held")
    parser.add_argument("--loss", type=float, default=0.01, help="share of packets entering a namespace dropped")
    parser.add_argument("--watch", type=float, default=60.0, help="seconds of probes and audits after the get")
    parser.add_argument("--congestion", default=None,
                        help="the namespaces' default TCP congestion control (default: the host's)")
    args = parser.parse_args()
    check()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="xsc-bench-netem-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "input.bin"
        later = tmp / "later.bin"
        _file(src, args.size * MiB)
        _file(later, args.size * MiB)
        plain = _measure(tmp / "plain", args.nodes, 0.0, 0.0, src, later, args.watch, args.congestion)
        print(f"no delay: {asdict(plain)}", flush=True)
        slow = _measure(tmp / "slow", args.nodes, args.delay, args.loss, src, later, args.watch, args.congestion)
        print(f"delay and loss: {asdict(slow)}", flush=True)
    print(f"load average {load_before[0]:.2f} as the run began, {os.getloadavg()[0]:.2f} as it ended "
          f"({os.cpu_count()} cores)")
    report = Report("netem")
    for run, name in ((plain, "no delay"), (slow, f"{args.delay * 1000:g} ms, {args.loss:.0%} loss")):
        report.add(f"{args.size} MiB put, {args.nodes} nodes, {name}", run.put_mbs, "MB/s")
        report.add(f"{args.size} MiB get, {args.nodes} nodes, {name}", run.get_mbs, "MB/s")
        report.add(f"{args.size} MiB raw TCP stream node to node, {name}", run.raw_mbs, "MB/s")
        report.add(f"{args.size / 4:g} MiB (a share) raw TCP stream node to node, {name}", run.raw_share_mbs, "MB/s")
        report.add(f"raw step of the put (a share to each of {args.nodes - 1} holders at once), {name}", run.raw_put_mbs,
                   "MB/s")
        report.add(f"raw step of the get (a share from each of 4 holders at once), {name}", run.raw_get_mbs, "MB/s")
        report.add(f"put / its raw step, {name}", run.put_mbs / run.raw_put_mbs, "x")
        report.add(f"get / its raw step, {name}", run.get_mbs / run.raw_get_mbs, "x")
        report.add(f"probes made, {name}", run.probes, "")
        report.add(f"probes asked again (a challenge without an answer), {name}", run.probes_asked_again, "")
        report.add(f"audits answered, {name}", run.audits_ok, "")
    report.add("put with delay and loss / without", slow.put_mbs / plain.put_mbs, "x", target=0.5, op=">=")
    report.add("get with delay and loss / without", slow.get_mbs / plain.get_mbs, "x", target=0.5, op=">=")
    report.add("a second file right after, put with delay and loss / without", slow.later_put_mbs / plain.later_put_mbs,
               "x")
    report.add("a second file right after, get with delay and loss / without", slow.later_get_mbs / plain.later_get_mbs,
               "x")
    report.add("raw TCP stream with delay and loss / without", slow.raw_mbs / plain.raw_mbs, "x")
    report.add("put with delay and loss / the raw TCP stream with them", slow.put_mbs / slow.raw_mbs, "x")
    report.add("get with delay and loss / the raw TCP stream with them", slow.get_mbs / slow.raw_mbs, "x")
    report.add("raw put step with delay and loss / without", slow.raw_put_mbs / plain.raw_put_mbs, "x")
    report.add("raw get step with delay and loss / without", slow.raw_get_mbs / plain.raw_get_mbs, "x")
    report.add("probes that said down, with delay and loss", slow.probes_failed, "", target=0, op="<=")
    report.add("audits failed or unanswered, with delay and loss", slow.audits_failed + slow.audits_unanswered, "",
               target=0, op="<=")
    report.add("repairs started, with delay and loss", slow.repairs_started, "", target=0, op="<=")
    report.write()


if __name__ == "__main__":
    main()
