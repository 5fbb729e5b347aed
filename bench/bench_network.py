"""A file across a 6-node devnet on this machine vs a single node, in the same run; repair of one lost share.

    python -m bench.bench_network [SIZE_MIB]      (default 1024)

Prints put and get MB/s on one node and on six (as a ratio of the single node's, measured in
this run), and the time to rebuild one lost share of the file onto a spare node.  All nodes share
this machine's 2 cores, so the six-node figures include five more processes' work.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from xsc.devnet import Devnet, run_xsc

from .common import run_xsc_measured, start_node
from .report import Report

MiB = 1024 * 1024


def _file(path: Path, size: int) -> None:
    chunk = os.urandom(16 * MiB)
    with path.open("wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[: size % len(chunk)])


def _put_get(data_dir: Path, src: Path) -> tuple[float, float, dict]:
    args = ["--data-dir", str(data_dir)]
    out = src.with_suffix(".json")
    with out.open("wb") as f:
        put_s, _, rc = run_xsc_measured([*args, "store", "put", str(src), "--json"], stdout=f)
    assert rc == 0, "put failed"
    result = json.loads(out.read_text())
    with open(os.devnull, "wb") as devnull:
        get_s, _, rc = run_xsc_measured([*args, "store", "get", result["capability"]], stdout=devnull)
    assert rc == 0, "get failed"
    return put_s, get_s, result


def _xsc(*args: str):
    result = run_xsc(*args, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"xsc {args[2:4]} failed: {result.stderr.decode().strip()}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size_mib", nargs="?", type=int, default=1024, help="the file's size in MiB (1024)")
    size = parser.parse_args().size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="xsc-bench-net-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "input.bin"
        _file(src, size)

        single_dir = tmp / "single"
        node = start_node(single_dir, "--storage-capacity", f"{2 * size + 64 * MiB}")
        try:
            put1, get1, _ = _put_get(single_dir, src)
        finally:
            node.stop(timeout=60)

        env = {"XSC_STORAGE_CAPACITY": str(size + 64 * MiB), "XSC_HEALTH_PROBE_INTERVAL": "0.5"}
        with Devnet(tmp / "devnet", 7, env=env).start() as net:
            net.wait_peered(60)
            gateway = net.first.data_dir
            put6, get6, result = _put_get(gateway, src)
            by_id = {node.health()["serviceId"]: node for node in net}
            victim = next(by_id[i] for i in result["placement"] if by_id[i] is not net.first)
            victim.kill()
            time.sleep(2)  # let the probes see it down, so repair does not pick it
            t = time.perf_counter()
            _xsc("--data-dir", str(gateway), "store", "repair", result["capability"])
            repair_s = time.perf_counter() - t

    mb = 1e6
    print(f"file: {size // MiB} MiB; six-node placement over {len(set(result['placement']))} of 7 nodes "
          f"(one spare for the repair)")
    print(f"single node: put {size / put1 / mb:6.0f} MB/s, get {size / get1 / mb:6.0f} MB/s")
    print(f"six nodes:   put {size / put6 / mb:6.0f} MB/s = {put1 / put6:4.2f} x single (target >= 0.50), "
          f"get {size / get6 / mb:6.0f} MB/s = {get1 / get6:4.2f} x single (target >= 0.70)")
    print(f"repair of one lost share ({size // 4 // MiB} MiB of blocks) onto a spare node: {repair_s:.1f} s "
          f"(target < 30 s for a 1 GiB file)")
    report = Report("network")
    report.add(f"single node put, {size // MiB} MiB", size / put1 / mb, "MB/s")
    report.add(f"single node get, {size // MiB} MiB", size / get1 / mb, "MB/s")
    report.add("6-node put x single node", put1 / put6, "x", target=0.5, op=">=")
    report.add("6-node get x single node", get1 / get6, "x", target=0.7, op=">=")
    # The 30 s target is for a 1 GiB file (the default size); a smaller run's time has no target.
    report.add(f"repair of one share, {size // MiB} MiB file", repair_s, "s",
               **({"target": 30, "op": "<"} if size == 1024 * MiB else {}))
    report.write()


if __name__ == "__main__":
    main()
