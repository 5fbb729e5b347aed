"""The node's put and get pipeline on one core and on both, in the same run, in process (no HTTP, no CLI).

    python -m bench.bench_pipeline [SIZE_MIB] [--rounds 3]      (default 256)

The real Gateway over a real ShareStore and LevelDB opened as a node opens it (node/datadir.py), a file
of SIZE_MIB random bytes from memory: a put (AES-GCM, zfec, SHA-256 of every block, LevelDB writes) and
a get to nowhere (LevelDB reads, SHA-256 of the data blocks, AES-GCM).  "One core" is the same code with
one pool thread and one segment in flight: the serial pipeline.  "Both cores" is the node's pool (two
threads) and its depth.  Rounds alternate, so a burst of other load hits both alike; the median of each is
printed, with its ratio (target >= 1.3x), the process's CPU per GiB, its peak anonymous memory while the
both-cores rounds ran (target < 150 MiB) and the load average (above 1.5 on two cores the figures are noise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xsc.node.datadir import open_db
from xsc.storage.core.capability import Capability
from xsc.storage.gateway import Gateway
from xsc.storage.share_store import ShareStore

from .report import Report

MiB = 1024 * 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonPeak:
    """The peak anonymous memory of this process, sampled every 20 ms while in the block."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _anon_mib())

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def _put_get(gateway: Gateway, data: bytes) -> tuple[float, float, float, float]:
    """Seconds and process CPU seconds of a put of `data`, then of a get of it to nowhere."""
    view = memoryview(data)
    offset = 0

    async def read(n: int) -> bytes:
        nonlocal offset
        chunk = bytes(view[offset:offset + n])
        offset += len(chunk)
        return chunk

    cpu, t = _cpu(), time.perf_counter()
    result = await gateway.put(read, len(data))
    put_s, put_cpu = time.perf_counter() - t, _cpu() - cpu
    cpu, t = _cpu(), time.perf_counter()
    size, stream = await gateway.open(Capability.parse(result.capability))
    got = 0
    async for chunk in stream:
        got += len(chunk)
    get_s, get_cpu = time.perf_counter() - t, _cpu() - cpu
    assert got == size == len(data)
    gateway.store.delete_file(Capability.parse(result.capability).storage_index)
    return put_s, put_cpu, get_s, get_cpu


async def run(size: int, rounds: int, tmp: Path) -> None:
    data = os.urandom(size)
    db = open_db(tmp)
    store = ShareStore(db, 4 * size + 64 * MiB)
    results: dict[str, list[tuple[float, float, float, float]]] = {"one core": [], "both cores": []}
    one = ThreadPoolExecutor(1, thread_name_prefix="one-core")
    both = ThreadPoolExecutor(2, thread_name_prefix="both-cores")  # the node's CPU_POOL: max(2, threads)
    gateways = {"one core": Gateway(store, one, segment_size=MiB, lease_duration=3600, node_key=bytes(32), depth=1),
                "both cores": Gateway(store, both, segment_size=MiB, lease_duration=3600, node_key=bytes(32))}
    loads = []
    anon = AnonPeak()
    try:
        await _put_get(gateways["both cores"], data[:16 * MiB])  # warm up
        baseline = _anon_mib()
        for _ in range(rounds):
            for name, gateway in gateways.items():
                if name == "both cores":
                    with AnonPeak() as peak:
                        results[name].append(await _put_get(gateway, data))
                    anon.peak = max(anon.peak, peak.peak)
                else:
                    results[name].append(await _put_get(gateway, data))
                loads.append(os.getloadavg()[0])
    finally:
        one.shutdown()
        both.shutdown()
        db.close()

    mb, gib = 1e6, size / 2**30
    med = {name: [statistics.median(r[i] for r in rows) for i in range(4)] for name, rows in results.items()}
    print(f"file: {size // MiB} MiB from memory, {rounds} alternating rounds, medians; load average during the "
          f"run {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} cores"
          + (" (above 1.5: the figures are noise)" if max(loads) > 1.5 else ""))
    report = Report("pipeline")
    for op, at in (("put", 0), ("get", 2)):
        rates = {name: size / m[at] for name, m in med.items()}
        for name, m in med.items():
            print(f"{op} {name:<10} {rates[name] / mb:7.0f} MB/s, process CPU {m[at + 1] / gib:.2f} s per GiB")
        ratio = rates["both cores"] / rates["one core"]
        print(f"{op} both cores / one core: {ratio:.2f}x (target >= 1.3x) -> {'met' if ratio >= 1.3 else 'NOT met'}")
        report.add(f"{op} one core (serial pipeline)", rates["one core"] / mb, "MB/s")
        report.add(f"{op} both cores", rates["both cores"] / mb, "MB/s")
        report.add(f"{op} both cores / one core", ratio, "x", target=1.3, op=">=")
    growth = anon.peak - baseline
    print(f"anonymous memory of this process while both cores ran: peak {anon.peak:.0f} MiB, {growth:.0f} MiB above "
          f"its level before (the {size // MiB} MiB file itself held in memory is in both; target < 150 MiB growth)")
    report.add("anonymous memory growth, both cores", growth, "MiB", target=150, op="<")
    report.add("load average during the run (max)", max(loads), "")
    report.write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size_mib", type=int, nargs="?", default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xsc-bench-pipeline-") as tmp:
        asyncio.run(run(args.size_mib * MiB, args.rounds, Path(tmp)))


if __name__ == "__main__":
    main()
