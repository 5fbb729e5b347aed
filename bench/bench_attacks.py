"""Attacks of strangers against a real node process, each repeated for a few seconds while another process times
/health; after each, the operator's put, get and invoke and `ledger verify`.

    python -m bench.bench_attacks [--only NAME[,NAME...]] [--seconds 4] [--watch] [--json F]

A 2-node devnet (xsc/devnet.py: node ids without proof of work, so the attacker's fresh keys reach past
admission, the hardest case for the node); node-0 is the target, node-1 its honest peer.  The attacker is
this process, a stranger on loopback address 127.0.0.2 with fresh Ed25519 keys, sending the payloads the attack
tests send (tests/support/attacks.py, tests/support/shares.py).  bench.common.HealthProbe runs in its own process
and times GET /health on a fresh connection (and on a kept-alive one) every 50 ms, so that the attacker's threads
do not distort it.  --watch runs the nodes under bench/loop_watch.py: what held node-0's event loop past 30 ms of
its CPU in each phase is printed after the table.

One row per attack: what the node answered (status and problem code, counted), /health p50/p99/max over the
attack's seconds (with what node-0's event loop thread did during the max sample: `ran` on a core, or `waited` for
one behind the machine's other work, and how long its other threads waited for one, `others`: a thread holding the
GIL and waiting for a core holds the loop up too; `kept`: the max on the kept-alive connection) and the ratio of p50 to the quiet phase measured first in the same run (a second quiet phase
ends the run: a drift between the two is the machine's load, not the node), the node's anonymous RSS at most,
the 1-minute load average, and after the attack whether put+get, invoke and `ledger verify` (both nodes) work.
/health must answer within 100 ms throughout: p99 and max are held to that (`over` marks a row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import aiohttp

from xsc.devnet import HOST, Devnet, NodeProcess
from xsc.identity import HEADER_TIMESTAMP, Identity, parse_public_id
from xsc.ledger import price_storage
from xsc.ledger.core.model import MAX_U63
from xsc.net import PeerClient
from xsc.storage.holder_client import RemoteHolder
from xsc.net.compute import INVOKE_PATH, MODULES_PATH
from xsc.storage import holder as holder_limits
from xsc.storage.core.leases import MAX_DURATION
from xsc.storage.core.wire import share_path

from tests.support import attacks as hostile
from tests.support.peers import http
from tests.support.waiting import eventually
from tests.support.shares import DEAL_PRICE, EncodedFile, lease, place

from . import bench_floods
from .common import HealthProbe

ATTACKER = bench_floods.ATTACKER  # the attacker's own loopback address (the sampler's is 127.0.0.1)
LIMIT_MS = 100.0  # /health answers within this during every attack
ENV = {"XSC_AUDIT_BLOCKS_PER_ROUND": "0", "XSC_AUDIT_SCRUB_RATE": "0", "XSC_HEALTH_PROBE_INTERVAL": "5",
       "XSC_PEERS_GOSSIP_INTERVAL": "2"}
TEN_YEARS = 3650 * 86400


# --- the target -------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """node-0 as the attacker and the operator see it."""

    node: NodeProcess
    peer: NodeProcess
    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession | None = None
    add_module: str = ""  # the operator's `add` module on node-0 (deployed at setup)
    state: dict = field(default_factory=dict)  # what an attack's setup leaves for its rounds

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def id(self) -> str:
        return self.state.setdefault("id", http(self.url, "GET", "/health")[1]["serviceId"])

    def call(self, coro):
        """Run a coroutine on the attacker's event loop (its aiohttp session lives there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def holder(self, identity: Identity, price: int | None = DEAL_PRICE, payer: str | None = None) -> RemoteHolder:
        """node-0 as a share holder, for `identity`, over TLS pinned to its id."""
        return RemoteHolder(PeerClient(identity, self.session, 30.0), self.id, self.url, price, payer)

    def peer_request(self, signer: Identity, method: str, path: str, body: bytes,
                     content_type: str = "application/json", **headers: str) -> tuple[int, object]:
        """A signed peer request in plaintext (node-0 takes those from loopback)."""
        return http(self.url, method, path, body,
                    {**hostile.signed(signer, method, path, body, self.id, content_type), **headers}, ATTACKER)

    def user(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
             ) -> tuple[int, object]:
        return http(self.url, method, path, body, {"Authorization": f"Bearer {self.node.token}",
                                                   "Content-Type": content_type})


def answer(status: int, body: object) -> str:
    """A status and its problem code: what the node answered."""
    code = body.get("code") if isinstance(body, dict) else None
    return f"{status} {code}" if code else str(status)


def refused(err: Exception) -> str:
    details = getattr(err, "details", {}) or {}
    return f"{details.get('peer_status', 'error')} {details.get('peer_code', type(err).__name__)}"


async def _try(coro) -> str:
    try:
        await coro
        return "ok"
    except Exception as err:  # a refusal is what the attack is answered with
        return refused(err)


# --- the attacks: (setup, one round) each --------------------------------------------------------------------------
def v128_setup(t: Target) -> None:
    pass


def v128_round(t: Target) -> list[str]:
    """Deploys of v128 modules by the user, a call of a v128 export, and a stranger's pushes of them."""
    out = []
    status, info = t.user("POST", "/v1/modules", hostile.wasm_of(hostile.V128_PARAM), "application/wasm")
    out.append(answer(status, info))
    if status in (200, 201):
        status, body = t.user("POST", "/v1/compute/invoke",
                              json.dumps({"module": info["id"], "function": "f", "args": [1]}).encode())
        out.append(answer(status, body))
    for wat in (hostile.V128_GLOBAL, hostile.V128_RESULT):
        out.append(answer(*t.user("POST", "/v1/modules", hostile.wasm_of(wat), "application/wasm")))
    for wat in (hostile.V128_PARAM, hostile.V128_GLOBAL, hostile.GC_ARRAY):
        out.append(answer(*t.peer_request(Identity.generate(), "PUT", MODULES_PATH, hostile.wasm_of(wat),
                                          "application/wasm")))
    return out


def receipt_setup(t: Target) -> None:
    """The stranger places a share on node-0 at its price, naming a throwaway payer."""
    attacker, payer = Identity.generate(), Identity.generate()
    f = EncodedFile(5000)
    t.call(place(t.holder(attacker, payer=payer.id), f, 0))
    t.state.update(attacker=attacker, payer=payer, file=f)


def receipt_round(t: Target) -> list[str]:
    """Receipts of 2^63-1, of one more than due, and from another payer (two of 2^63-1 overflowed the ledger)."""
    attacker, payer, f = t.state["attacker"], t.state["payer"], t.state["file"]
    end = int(time.time())
    start = end - 1
    due = price_storage(f.share_bytes, end - start, DEAL_PRICE)
    out = []
    for signer_payer, amount in ((payer, MAX_U63), (payer, due + 1), (Identity.generate(), due)):
        body = json.dumps(hostile.receipt_claim(signer_payer, t.id, f, start, end, amount)).encode()
        out.append(answer(*t.peer_request(attacker, "POST", "/v1/peer/ledger/receipts", body)))
    return out


def _peers_of_node(t: Target, strangers: list[Identity], timeout: float = 120.0) -> None:
    """Make these keys peers of node-0 with self-signed descriptors (as any node can), 16 new ones a message, sent
    again until node-0 knows them all: one address adds 256 new nodes at once, then 32 a second."""
    deadline = time.monotonic() + timeout
    missing = strangers
    while missing:
        for at in range(0, len(missing), 16):
            body = json.dumps({"descriptors": hostile.fake_descriptors(missing[at:at + 16])}).encode()
            t.peer_request(strangers[0], "POST", "/v1/peer/descriptors", body)
        status, known = t.user("GET", "/v1/peers")
        assert status == 200, known
        ids = {p["id"] for p in known["peers"]}
        missing = [s for s in missing if s.id not in ids]
        if missing and time.monotonic() > deadline:
            raise SystemExit(f"node-0 took {len(strangers) - len(missing)} of {len(strangers)} fake peers")
        if missing:
            time.sleep(1.0)


def weight_setup(t: Target) -> None:
    strangers = [Identity.generate() for _ in range(len(hostile.HOSTILE) + 1)]
    _peers_of_node(t, strangers)
    t.state["strangers"] = strangers


def weight_round(t: Target) -> list[str]:
    """Commitments with every hostile number (a weight of 1E+20000000 froze a node 25-50 s per put), re-signed
    each round, and one dated an hour ahead."""
    strangers = t.state["strangers"]
    commitments = [hostile.hostile_commitment(s, where, value, t.id)
                   for s, (where, value) in zip(strangers, hostile.HOSTILE)]
    commitments.append(hostile.hostile_commitment(strangers[-1], "timestamp", hostile.now_ms() + 3_600_000, t.id))
    status, body = t.peer_request(strangers[0], "POST", "/v1/peer/market",
                                  json.dumps({"commitments": commitments}).encode())
    held = {c["participant"] for c in body.get("commitments", [])} if isinstance(body, dict) else set()
    return [answer(status, body), "hostile in book" if held & {s.id for s in strangers} else "book clean"]


def free_ask_round(t: Target) -> list[str]:
    """A stranger's ask at price 0 (it won every match, and placement then refused it: every put failed)."""
    stranger = Identity.generate()
    body = json.dumps({"commitments": [hostile.free_ask(stranger)]}).encode()
    status, answer_ = t.peer_request(stranger, "POST", "/v1/peer/market", body)
    held = {c["participant"] for c in answer_.get("commitments", [])} if isinstance(answer_, dict) else set()
    return [answer(status, answer_), "free ask in book" if stranger.id in held else "book clean"]


def forever_round(t: Target) -> list[str]:
    """Uploads with a lease to 2^64-1 and past the longest lease (stored for free, forever, once)."""
    holder = t.holder(Identity.generate())
    f = EncodedFile(100)
    return [t.call(_try(holder.begin(f.si, 0, f.size, f.segment_size, forever)))
            for forever in (2**64 - 1, int(time.time()) + MAX_DURATION + 2 * 86400)]


def reserve_setup(t: Target) -> None:
    t.state["attacker"] = Identity.generate()


def reserve_round(t: Target) -> list[str]:
    """One key reserves more than half the capacity, then more uploads than its quota, then keeps one alive
    with refused (out of order) PUTs."""
    holder = t.holder(t.state["attacker"])

    async def attack() -> list[str]:
        out = [await _try(holder.begin(EncodedFile(1).si, 0, 12 * 1024**3, 1024**2, lease()))]
        uploads = []
        for _ in range(holder_limits.MAX_UPLOADS_PER_SENDER + 1):
            f = EncodedFile(3 * 4096)
            try:
                uploads.append((await holder.begin(f.si, 0, f.size, f.segment_size, lease()), f))
                out.append("ok")
            except Exception as err:
                out.append(refused(err))
        for upload, f in uploads[:2]:
            out.append(await _try(holder.put_segments(upload, 2, f.blocks[0][2:])))
        for upload, _ in uploads:  # room for the next round's (the reaper would abort them in IDLE_TIMEOUT)
            await _try(holder.abort(upload))
        return out

    return t.call(attack())


def bodies_setup(t: Target) -> None:
    """24 keys, each with an upload begun (4 bodies in flight each: MAX_BODIES_PER_SENDER)."""
    uploads = []
    for _ in range(24):
        key = Identity.generate()
        f = EncodedFile(1)
        upload = t.call(t.holder(key).begin(f.si, 0, 64 * 1024**2, 16 * 1024**2, lease()))
        uploads.append((key, upload))
    t.state["uploads"] = uploads


def bodies_round(t: Target, seconds: float) -> list[str]:
    """96 connections each sending a 4 MiB segment body slowly (64 KiB a quarter second): bodies were buffered
    whole, with no read timeout (96 took a node from 71 MiB to 1.6 GiB)."""
    body = os.urandom(4 * 1024**2)
    socks = []
    for key, upload in t.state["uploads"]:
        path = f"/v1/peer/uploads/{upload}/segments/0"
        for _ in range(4):  # each signed afresh (a nonce is taken once)
            headers = hostile.signed(key, "PUT", path, body, t.id, "application/octet-stream")
            head = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n" + \
                "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            try:
                sock = socket.create_connection((HOST, t.node.port), timeout=5, source_address=(ATTACKER, 0))
                sock.sendall(head.encode())
                socks.append(sock)
            except OSError:
                pass
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and sent < len(body):
        for sock in socks:
            try:
                sock.sendall(body[sent:sent + 65536])
            except OSError:
                pass
        sent += 65536
        time.sleep(0.25)
    out = []
    for sock in socks:  # what the node answered by now (a 408 or 429, or nothing yet)
        sock.settimeout(0.05)
        try:
            data = sock.recv(4096)
            out.append(data.split(b"\r\n", 1)[0][9:12].decode() or "closed")
        except (TimeoutError, BlockingIOError):
            out.append("no answer yet")
        except OSError:
            out.append("reset")
        sock.close()
    return out


def module_push_setup(t: Target) -> None:
    t.state["module"] = hostile.empty_functions(250_000)


def module_push_round(t: Target) -> list[str]:
    """An anonymous push of a module of 250,000 empty functions (8 of them: 555 MiB of artifacts, 2.2 GiB RSS)."""
    return [answer(*t.peer_request(Identity.generate(), "PUT", MODULES_PATH, t.state["module"], "application/wasm"))]


def coholder_setup(t: Target) -> None:
    f = EncodedFile(9000)
    t.call(place(t.holder(Identity.generate()), f, 1))
    t.state["file"] = f


def coholder_round(t: Target) -> list[str]:
    """Another key's begin of a share already held (it overwrote the held-deal record once), and a begin refused
    for its price (it left an fsynced record)."""
    f = t.state["file"]
    stranger = Identity.generate()
    return [t.call(_try(t.holder(stranger).begin(f.si, 1, f.size, f.segment_size, lease()))),
            t.call(_try(t.holder(stranger, price=0).begin(f.si, 2, f.size, f.segment_size, lease())))]


def descriptors_setup(t: Target) -> None:
    """The attacker's keys and descriptors are made before the phase, as on its own machine: made in the phase,
    they took ~135 ms of this machine's CPU a message, beside the node."""
    t.state["messages"] = [(Identity.generate(), json.dumps({"descriptors": hostile.fake_descriptors(
        [Identity.generate() for _ in range(999)], "127.0.0.9", 20000 + 1000 * n)}).encode()) for n in range(8)]


def descriptors_round(t: Target) -> list[str]:
    """One message of 999 self-signed descriptors of fresh keys (it filled the directory for good once), from a
    key of its own.  The 8 messages made at setup go round: each time, up to 16 of a message's nodes are new."""
    n = t.state["round"] = t.state.get("round", -1) + 1
    sender, body = t.state["messages"][n % len(t.state["messages"])]
    return [answer(*t.peer_request(sender, "POST", "/v1/peer/descriptors", body))]


def book_setup(t: Target) -> None:
    """1,000 fresh keys make themselves peers (16 new ones a message: the directory's bound), and each signs six
    commitments, each superseding the one before: every round's is new to the node (past six, the last two
    alternate, stale but each still checked)."""
    strangers = [Identity.generate() for _ in range(1000)]
    _peers_of_node(t, strangers)
    t.state["messages"] = [json.dumps({"commitments": [hostile.honest_commitment(s, t.id, events) for s in strangers]}
                                      ).encode() for events in range(2, 8)]
    t.state["strangers"] = strangers


def book_round(t: Target) -> list[str]:
    """A full book swap from 1,000 peers (no bound on participants once; each flood request blocked the loop ~1 s)."""
    messages, n = t.state["messages"], t.state.setdefault("round", 0)
    t.state["round"] += 1
    message = messages[n] if n < len(messages) else messages[-2 + n % 2]
    return [answer(*t.peer_request(t.state["strangers"][0], "POST", "/v1/peer/market", message))]


def nonces_round(t: Target) -> list[str]:
    """One key's signed requests from 8 threads, as fast as they go (one global nonce cache, full in 2 min)."""
    key = t.state.setdefault("flooder", Identity.generate())
    body = json.dumps({"nonce": "ab" * 16}).encode()
    counts = bench_floods.flood(t.node, 400, lambda p, b: hostile.signed(key, "POST", p, b, t.id),
                                "/v1/peer/challenge", body)
    return [status for status, n in counts["answers"].items() for _ in range(n)]


def replay_round(t: Target) -> list[str]:
    """One authorization sent four times, and an expired one (the provider ran the call before checking)."""
    attacker = Identity.generate()
    provider = parse_public_id(t.id)
    body = hostile.invoke_body(attacker, provider, t.add_module)
    out = [answer(*t.peer_request(attacker, "POST", INVOKE_PATH, body)) for _ in range(4)]
    expired = hostile.invoke_body(attacker, provider, t.add_module, expires_in=-10)
    out.append(answer(*t.peer_request(attacker, "POST", INVOKE_PATH, expired)))
    return out


def leases_round(t: Target) -> list[str]:
    """The user's 10-year puts of 256 KiB (six 10-year puts once committed 192.7 credits against a limit of 100)."""
    return [answer(*t.user("POST", f"/v1/store/files?duration={TEN_YEARS}", os.urandom(256 * 1024),
                           "application/octet-stream"))]


def small_round(t: Target) -> list[str]:
    """The low row: /health without the token, a `²` timestamp header, 100,000 nested arrays on a user and a peer
    route, a share of 65,537 segments, a GC-array module."""
    out = []
    status, health = http(t.url, "GET", "/health", source=ATTACKER)
    figures = any(set(check) - {"componentType", "status", "time"}
                  for checks in health.get("checks", {}).values() for check in checks)
    out.append("health figures shown" if figures else "health without figures")
    key = Identity.generate()
    body = json.dumps({"nonce": "ab" * 16}).encode()
    out.append(answer(*t.peer_request(key, "POST", "/v1/peer/challenge", body, **{HEADER_TIMESTAMP: "²"})))
    out.append(answer(*t.user("POST", "/v1/market/recognize", hostile.DEEP_JSON)))
    out.append(answer(*t.peer_request(key, "POST", "/v1/peer/market", hostile.DEEP_JSON)))
    f = EncodedFile(1)
    terms = {"size": 65_537 * 4096, "segment_size": 4096, "lease_expiry": lease(), "price": DEAL_PRICE}
    out.append(answer(*t.peer_request(key, "POST", share_path(f.si, 0) + "/uploads", json.dumps(terms).encode())))
    out.append(answer(*t.user("POST", "/v1/modules", hostile.wasm_of(hostile.GC_ARRAY), "application/wasm")))
    return out


def allocation_flood_setup(t: Target) -> None:
    """Made before the phase, as on the attacker's machine: the message naming node-1, a peer node-0 knows."""
    t.state["message"] = hostile.forged_allocation(http(t.peer.url, "GET", "/health")[1]["serviceId"])


def allocation_flood_round(t: Target) -> list[str]:
    """One message of 1,001 forged states and 1,001 forged receipts from a fresh key, ten a second (about 1.5 a
    second froze a node once: each record was parsed and its signature checked on the event loop)."""
    start = time.monotonic()
    got = answer(*t.peer_request(Identity.generate(), "POST", "/v1/peer/allocation", t.state["message"]))
    time.sleep(max(0.0, 0.1 - (time.monotonic() - start)))
    return [got]


@dataclass
class Attack:
    name: str
    row: str  # what the attack does, in short
    round: Callable
    setup: Callable[[Target], None] | None = None
    timed: bool = False  # does one round take the phase's seconds itself?


ATTACKS = [
    Attack("v128-module", "crash any node with a 32-byte v128 module", v128_round),
    Attack("receipt-overflow", "corrupt the ledger with receipts past int64", receipt_round, receipt_setup),
    Attack("huge-weight", "freeze every node with a weight of 1E+20000000", weight_round, weight_setup),
    Attack("free-ask", "fail every put with a stranger's ask at price 0", free_ask_round),
    Attack("forever-lease", "store for free, forever (lease 2^64-1)", forever_round),
    Attack("reserve-capacity", "reserve all capacity and keep it with refused PUTs", reserve_round, reserve_setup),
    Attack("slow-bodies", "exhaust memory with 96 slow 4 MiB segment bodies", bodies_round, bodies_setup, True),
    Attack("module-push", "anonymous pushes of 250k-function modules", module_push_round, module_push_setup),
    Attack("co-holder-begin", "a co-holder's refused begin overwrites the deal", coholder_round, coholder_setup),
    Attack("allocation-flood", "1,001 + 1,001 forged allocation records, 10/s", allocation_flood_round,
           allocation_flood_setup),
    Attack("descriptor-flood", "999 self-signed descriptors in one message", descriptors_round, descriptors_setup),
    Attack("book-flood", "unbounded book participants (gossip break)", book_round, book_setup),
    Attack("nonce-flood", "one key fills the replay cache", nonces_round),
    Attack("replayed-auth", "unlimited remote runs for one authorization", replay_round),
    Attack("low-row", "/health figures, ² header, nested JSON, 65,537 segments, GC", small_round),
    Attack("long-leases", "commit past the credit limit with 10-year puts", leases_round),  # last: it spends credit
]


# --- the operator, after each attack --------------------------------------------------------------------------------
def operator_checks(t: Target) -> dict:
    data = os.urandom(50_000)
    put = t.node.xsc("store", "put", "-", input=data, timeout=120)
    cap = put.stdout.decode().strip()
    got = t.node.xsc("store", "get", cap, timeout=120) if put.returncode == 0 else None
    status, result = t.user("POST", "/v1/compute/invoke",
                            json.dumps({"module": t.add_module, "function": "add", "args": [2, 3]}).encode())
    invoked = status == 200 and [r["value"] for r in result["results"]] == [5]
    verified = []
    for node in (t.node, t.peer):
        run = node.xsc("ledger", "verify", "--json", timeout=120)
        verified.append(run.returncode == 0 and json.loads(run.stdout or b"{}").get("ok") is True)
    return {"put_get": got is not None and got.returncode == 0 and got.stdout == data,
            "put_error": "" if put.returncode == 0 else put.stderr.decode().strip()[-200:],
            "invoke": invoked, "invoke_error": "" if invoked else f"{answer(status, result)}: {str(result)[:200]}",
            "ledger_verify": all(verified), "alive": t.node.alive() and t.peer.alive()}


# --- the phases ----------------------------------------------------------------------------------------------
def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def figures(samples: list[dict], base_p50: float | None) -> dict:
    """A phase's /health figures: on a fresh connection (p50/p99/max) and on a kept-alive one (max)."""
    if not samples:
        return {"samples": 0}
    latency = sorted(s["fresh_seconds"] for s in samples)
    p50 = statistics.median(latency)
    worst = max(samples, key=lambda s: s["fresh_seconds"])
    return {"samples": len(samples), "health_not_200": sum(1 for s in samples if s["fresh_status"] != 200),
            "worst_ran_ms": round(worst["fresh_ran"] * 1000, 1), "worst_waited_ms": round(worst["fresh_waited"] * 1000, 1),
            "worst_others_waited_ms": round(worst["fresh_others_waited"] * 1000, 1),
            "health_p50_ms": round(p50 * 1000, 2),
            "health_p99_ms": round(latency[min(len(latency) - 1, int(len(latency) * 0.99))] * 1000, 2),
            "health_max_ms": round(latency[-1] * 1000, 2),
            "kept_max_ms": round(max(s["kept_seconds"] for s in samples) * 1000, 2),
            "p50_x_quiet": round(p50 / base_p50, 2) if base_p50 else None,
            "rss_anon_max_mib": round(max(s["anonymous"] for s in samples) / 2**20, 1)}


WATCH = [sys.executable, str(Path(__file__).with_name("loop_watch.py"))]


def _watched(log: Path, start: float, end: float) -> list[str]:
    """The loop-watch reports in a node's log between two monotonic times."""
    out = []
    # a report starts a line; a stack in a report may quote loop_watch.py's own source, "loop-watch[" and all
    for block in re.split(r"^loop-watch\[", log.read_text(errors="replace"), flags=re.M)[1:]:
        at, _, text = block.partition("]: ")
        if start <= float(at) < end:
            out.append(text.strip())
    return out


def run(work: Path, names: list[str] | None = None, seconds: float = 4.0, log=print, watch: bool = False) -> dict:
    chosen = [a for a in ATTACKS if names is None or a.name in names]
    bench_floods.raise_fd_limit()
    net = Devnet(work, 2, env=ENV, launcher=WATCH if watch else None).start(90)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    result = {"config": ENV, "seconds": seconds, "phases": {}}
    target, probe = Target(net[0], net[1], loop), None
    windows: dict[str, tuple[float, float]] = {}
    try:

        async def open_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ATTACKER, 0)))

        target.session = target.call(open_session())
        eventually(lambda: not net.lagging(), "the two nodes to know each other", 60)
        status, info = target.user("POST", "/v1/modules", hostile.wasm_of(hostile.ADD), "application/wasm")
        assert status in (200, 201), info
        target.add_module = info["id"]
        first = operator_checks(target)  # warms the market up: both nodes' books, pools and caches
        if not first["put_get"]:
            raise SystemExit(f"the operator's put fails before any attack: {first}")
        with HealthProbe(HOST, target.node.port, target.node.pid) as probe:
            time.sleep(1.0)

            def quiet(name: str) -> None:
                probe.mark(name)
                start = time.monotonic()
                time.sleep(seconds)
                windows[name] = (start, time.monotonic())
                result["phases"][name] = {"load": _load()}
                probe.mark("between")  # the setups and the operator's checks are no attack's

            quiet("quiet")
            for attack in chosen:
                target.state = {"id": target.id}
                if attack.setup:
                    attack.setup(target)
                answers: Counter = Counter()
                log(f"  {attack.name}: attacking for {seconds:g} s")
                probe.mark(attack.name)
                start = time.monotonic()
                deadline = start + seconds
                rounds = 0
                while time.monotonic() < deadline:
                    got = attack.round(target, seconds) if attack.timed else attack.round(target)
                    answers.update(got)
                    rounds += 1
                windows[attack.name] = (start, time.monotonic())
                probe.mark("between")
                load = _load()
                checks = operator_checks(target)
                result["phases"][attack.name] = {"row": attack.row, "rounds": rounds, "answers": dict(answers),
                                                 "load": load, **checks}
                log(f"  {attack.name}: {rounds} rounds, {dict(answers)}, load {load}")
            quiet("quiet-end")
    finally:
        if target.session is not None:
            target.call(target.session.close())
        loop.call_soon_threadsafe(loop.stop)
        net.stop()
    samples = probe.samples() if probe is not None else []
    result["probe_nice"] = samples[0]["nice"] if samples else None
    base = [s["fresh_seconds"] for s in samples if s["phase"] == "quiet"]
    base_p50 = statistics.median(base) if base else None
    for name, phase in result["phases"].items():
        phase.update(figures([s for s in samples if s["phase"] == name], base_p50))
        if watch:
            phase["loop_watch"] = _watched(net[0].log, *windows[name])
    return result


def report(result: dict) -> str:
    def yn(value) -> str:
        return "-" if value is None else ("yes" if value else "NO")

    lines = [f"attacks on node-0 of a 2-node devnet, {result['seconds']:g} s each "
             f"(/health every 50 ms from its own process at nice {result.get('probe_nice')}; limit {LIMIT_MS:g} ms)",
             "(during the max sample, node-0's event loop thread ran on a core, or waited for one; its other threads "
             "waited for one `others`: one of them may have held the GIL the loop needed)",
             f"{'attack':<17} {'p50':>7} {'p99':>7} {'max':>7} {'ran':>5} {'waited':>6} {'others':>6} {'kept':>7} "
             f"{'p50/q':>6} {'!200':>4} {'RSS':>6} {'load':>5} {'put/get':>7} {'invoke':>6} {'verify':>6}  answers"]
    for name, p in result["phases"].items():
        if not p.get("samples"):
            lines.append(f"{name:<17} (no samples)")
            continue
        over = " over" if max(p["health_p99_ms"], p["health_max_ms"]) > LIMIT_MS else ""
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(p.get("answers", {}).items(), key=lambda kv: -kv[1]))
        lines.append(f"{name:<17} {p['health_p50_ms']:>7} {p['health_p99_ms']:>7} {p['health_max_ms']:>7} "
                     f"{p['worst_ran_ms']:>5} {p['worst_waited_ms']:>6} {p['worst_others_waited_ms']:>6} {p['kept_max_ms']:>7} "
                     f"{p['p50_x_quiet'] if p['p50_x_quiet'] is not None else '-':>6} {p['health_not_200']:>4} {p['rss_anon_max_mib']:>5}M {p['load']:>5} "
                     f"{yn(p.get('put_get')):>7} {yn(p.get('invoke')):>6} {yn(p.get('ledger_verify')):>6}  "
                     f"{answers}{over}")
        if p.get("put_error"):
            lines.append(f"{'':<17} put failed: {p['put_error']}")
        if p.get("invoke_error"):
            lines.append(f"{'':<17} invoke failed: {p['invoke_error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated attack names: " +
                        ", ".join(a.name for a in ATTACKS))
    parser.add_argument("--seconds", type=float, default=4.0, help="how long each attack is repeated")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--watch", action="store_true", help="run the nodes under bench/loop_watch.py and print "
                        "what held node-0's event loop past 30 ms of CPU in each phase")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else None
    unknown = set(names or ()) - {a.name for a in ATTACKS}
    if unknown:
        parser.error(f"no attack named {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="xsc-attacks-") as tmp:
        result = run(Path(tmp), names, args.seconds, log=lambda line: print(line, file=sys.stderr), watch=args.watch)
    print(report(result))
    for name, phase in result["phases"].items():
        for text in phase.get("loop_watch", []):
            print(f"--- {name}: {text}")
    from .report import Report

    out = Report("attacks")
    for name, p in result["phases"].items():
        if p.get("samples"):
            out.add(f"{name}: /health p99", p["health_p99_ms"], "ms", target=LIMIT_MS, op="<")
            out.add(f"{name}: /health max", p["health_max_ms"], "ms", target=LIMIT_MS, op="<")
            out.add(f"{name}: /health p50 x quiet", p["p50_x_quiet"] or 0, "x")
    out.write()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
