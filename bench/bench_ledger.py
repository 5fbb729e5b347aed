"""Ledger benchmark: settlements/s and `xsc ledger verify` over many entries, as ratios to raw Ed25519.

    .venv/bin/python -m bench.bench_ledger [--settlements N] [--entries N] [--concurrency N]

A settlement is: the payer's authorization (sign), the payee's receipt (sign), the payer's payment
(sign), validation (3 verifies + the chain rules) and one synced LevelDB write batch per group.
So its crypto floor is 3 sign+verify pairs; the "crypto share" line says how close we are to it.
Verify is timed end to end: a real node process, `xsc ledger verify` over --entries entries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import plyvel
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xsc.devnet import xsc_command

from .common import start_node
from .report import Report
from xsc.identity import CLIENT_KEY_FILE, NODE_KEY_FILE, Identity
from xsc.ledger import LedgerService

THREADS = os.cpu_count() or 2


def raw_ed25519(seconds: float = 1.5) -> dict[str, float]:
    """Sign+verify pairs/s of a ~450-byte message: one thread, and one thread per core."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    message = os.urandom(450)

    def pairs(deadline: float) -> int:
        n = 0
        while time.perf_counter() < deadline:
            public.verify(key.sign(message), message)
            n += 1
        return n

    start = time.perf_counter()
    single = pairs(start + seconds) / (time.perf_counter() - start)
    with ThreadPoolExecutor(THREADS) as pool:
        start = time.perf_counter()
        total = sum(pool.map(pairs, [start + seconds] * THREADS))
        parallel = total / (time.perf_counter() - start)
    verify_start, n = time.perf_counter(), 0
    signature = key.sign(message)
    while time.perf_counter() < verify_start + seconds / 2:
        public.verify(signature, message)
        n += 1
    verifies = n / (time.perf_counter() - verify_start)
    return {"pairs_1": single, "pairs_all": parallel, "verify_1": verifies}


async def settle_many(db_path: Path, payer: Identity, payee: Identity, total: int, concurrency: int) -> float:
    db = plyvel.DB(str(db_path), create_if_missing=True)
    service = LedgerService(db, 10**15, node=payee, client=payer, threads=THREADS)
    try:
        async def worker(count: int) -> None:
            for i in range(count):
                await service.settle(payer, payee, 1 + i % 1000, {"fuel": i}, f"bench-{i}")

        start = time.perf_counter()
        shares = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
        await asyncio.gather(*(worker(share) for share in shares))
        elapsed = time.perf_counter() - start
        return total / elapsed
    finally:
        await service.close()
        db.close()


async def settle_aggregated(db_path: Path, payer: Identity, payee: Identity, total: int) -> tuple[float, int]:
    """Invokes settled through tabs (ledger/tabs.py): hold the budget, owe the metered amount, and let the tabs
    settle as they fill; returns (settled invokes/s, ledger transfers made)."""
    from xsc.ledger.tabs import Tabs

    db = plyvel.DB(str(db_path), create_if_missing=True)
    service = LedgerService(db, 10**15, node=payee, client=payer, threads=THREADS)
    tabs = Tabs(ledger=service, identities=[payer, payee], interval=3600)
    try:
        start = time.perf_counter()
        for i in range(total):
            await service.hold(payer, 250_000)
            tabs.owe(payer, payee, i.to_bytes(16, "big"), 1 + i % 1000, i, held=250_000)
            if tabs._ready:
                await tabs.flush()
        await tabs.flush()
        elapsed = time.perf_counter() - start
        assert tabs.settled_refs == total and service.holding() == {}
        return total / elapsed, service.store.state(payer.public_key).seq
    finally:
        await service.close()
        db.close()


def verify_with_cli(data_dir: Path) -> tuple[float, dict]:
    xsc = [*xsc_command(), "--data-dir", str(data_dir)]
    node = start_node(data_dir)
    try:
        start = time.perf_counter()
        result = subprocess.run([*xsc, "ledger", "verify", "--json"], capture_output=True, timeout=600)
        elapsed = time.perf_counter() - start
        report = json.loads(result.stdout)
        if result.returncode != 0 or not report["ok"]:
            raise RuntimeError(f"verify failed: {result.stderr.decode()} {report['violations'][:5]}")
        return elapsed, report
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settlements", type=int, default=6000, help="settlements to time (default 6000)")
    parser.add_argument("--entries", type=int, default=100_000, help="entries to verify (default 100000)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent settling tasks (default 64)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xsc-bench-ledger-"))
    try:
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        figures = Report("ledger")
        raw = raw_ed25519()
        print(f"raw Ed25519 sign+verify: {raw['pairs_1']:,.0f} pairs/s on 1 thread, "
              f"{raw['pairs_all']:,.0f} pairs/s on {THREADS} threads; verify alone {raw['verify_1']:,.0f}/s")

        payer, payee = Identity.generate(), Identity.generate()
        rate = asyncio.run(settle_many(work / "settle-db", payer, payee, args.settlements, args.concurrency))
        floor = raw["pairs_all"] / 3
        print(f"settlements: {rate:,.0f}/s ({args.settlements} settlements, {args.concurrency} concurrent tasks; "
              f"target >= 2,000/s)")
        print(f"  = {rate / raw['pairs_all']:.3f} x raw sign+verify pairs/s ({THREADS} threads); crypto floor is "
              f"3 pairs per settlement = {floor:,.0f}/s, so crypto share {rate / floor:.0%}")
        figures.add("raw: Ed25519 sign+verify pairs, all threads", raw["pairs_all"], "/s")
        figures.add("settlements", rate, "/s", target=2000, op=">=")
        figures.add("settlements x raw sign+verify pairs", rate / raw["pairs_all"], "x")

        agg, transfers = asyncio.run(settle_aggregated(work / "tabs-db", payer, payee, 20 * args.settlements))
        print(f"aggregated settlement (tabs): {agg:,.0f} settled invokes/s ({20 * args.settlements:,} invokes in "
              f"{transfers} ledger transfers; target >= 5,000/s) = {agg / rate:.1f}x one transfer per invoke")

        data_dir = work / "node"
        data_dir.mkdir()
        node_key = Identity.load_or_create(data_dir / NODE_KEY_FILE)
        client_key = Identity.load_or_create(data_dir / CLIENT_KEY_FILE)
        start = time.perf_counter()
        asyncio.run(settle_many(data_dir / "db", client_key, node_key, args.entries // 2, args.concurrency))
        build = time.perf_counter() - start
        print(f"built {args.entries // 2 * 2:,} entries in {build:.1f} s")
        elapsed, report = verify_with_cli(data_dir)
        per_s = report["entries"] / elapsed
        print(f"xsc ledger verify: {report['entries']:,} entries, {report['signatures']:,} signatures in "
              f"{elapsed:.2f} s end to end (node-side {report['seconds']:.2f} s): {per_s:,.0f} entries/s "
              f"(target >= 5,000/s)")
        sig_floor = raw["verify_1"] * THREADS / (report["signatures"] / report["entries"])
        print(f"  = {report['signatures'] / elapsed / (raw['verify_1'] * THREADS):.2f} x raw verify/s on {THREADS} "
              f"threads; crypto floor at {report['signatures'] / report['entries']:.1f} signatures per entry "
              f"= {sig_floor:,.0f} entries/s")
        figures.add(f"verify, {report['entries']:,} entries", per_s, "entries/s", target=5000, op=">=")
        figures.write()
        print(f"load average at the end {os.getloadavg()[0]:.2f} (other work on the machine skews every figure)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
