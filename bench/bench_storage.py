"""Put and get of a large file through a node's HTTP API, against the raw steps measured in the same run.

    python -m bench.bench_storage [SIZE_MIB] [--puts N]      (default 1024, 1 put)

Prints MB/s for put and get, each as a ratio to the raw steps of its pipeline
(AES-GCM, zfec encode, SHA-256, LevelDB put of 256 KiB values), the CPU per GiB the
node and the CLI spent on each (where the node computes its parity with ISA-L, the put also as a ratio to the
pipeline with that step in place of zfec's; and to the node's blocks database alone taking a put's blocks in the
order a put writes them: LevelDB syncs each table it writes, so where the disk is slower than the CPU its pace bounds
a put), the peak RSS of the node and of the CLI, and the MB of
tables LevelDB's compactions rewrote (merged) and moved down whole (from the LOGs of both its databases).  With
--puts N, N files are put one after another (the later ones into a node that holds the
earlier) and each put's figures printed; the first put's are the ones reported.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import plyvel
import zfec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xsc import keys
from xsc.node.datadir import BLOCKS_DIR, DB_DIR, open_blocks
from xsc.storage.core import erasure, isal

from .common import AnonSampler, best_of, cpu_seconds, peak_rss_mib, run_xsc_measured, start_node
from .report import Report

MiB = 1024 * 1024


def raw_steps(tmp: Path, total: int = 256 * MiB) -> dict[str, float]:
    """Single-thread throughput (bytes/s) of each raw step over `total` bytes."""
    segment = os.urandom(MiB)
    n = total // MiB
    aead = AESGCM(os.urandom(32))
    block = len(segment) // 4
    primary = tuple(segment[i * block:(i + 1) * block] for i in range(4))
    encoder = zfec.Encoder(4, 6)
    value = os.urandom(256 * 1024)

    def leveldb() -> None:
        path = tmp / "raw-leveldb"
        shutil.rmtree(path, ignore_errors=True)
        db = plyvel.DB(str(path), create_if_missing=True, compression=None, write_buffer_size=64 * MiB)
        for i in range(n * 4):
            db.put(i.to_bytes(8, "big"), value)
        db.close()

    def leveldb_get() -> None:  # the values leveldb() wrote, read back (a get reads its blocks so)
        db = plyvel.DB(str(tmp / "raw-leveldb"))
        for i in range(n * 4):
            db.get(i.to_bytes(8, "big"))
        db.close()

    def node_blocks() -> None:  # a put's blocks, in the order it writes them, into the node's blocks database alone
        root = tmp / "raw-blocks"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        db = open_blocks(root)
        storage_index = os.urandom(16)
        for segment_index in range(n):
            for share in range(erasure.N):
                db.put(keys.block(storage_index, share, segment_index), value)
        db.close()

    def file_write() -> None:
        with (tmp / "raw-write.bin").open("wb") as f:
            for _ in range(n):
                f.write(segment)
        (tmp / "raw-write.bin").unlink()

    parity = erasure.parity_coder()  # the node's, where it is not zfec's
    steps = {
        # Results are dropped at once: this process's RSS is inherited by the CLI children it forks.
        "aes-gcm": lambda: all(aead.encrypt(i.to_bytes(12, "big"), segment, None) for i in range(n)),
        "zfec-encode": lambda: all(encoder.encode(primary, (4, 5)) for _ in range(n)),
        **({"isal-parity": lambda: all(parity(primary, block) for _ in range(n))}
           if isinstance(parity, isal.Parity) else {}),
        "sha256": lambda: all(hashlib.sha256(segment).digest() for _ in range(n)),
        "leveldb-put": leveldb,
        "leveldb-get": leveldb_get,
        "node-blocks": node_blocks,  # (a put's input a second: it writes 1.5x as many bytes of blocks)
        "file-write": file_write,
    }
    return {name: total / best_of(fn, 2) for name, fn in steps.items()}


def _put_pipeline(raw: dict[str, float], parity: str) -> float:
    """Bytes/s of a put's raw steps one after another: per byte of input AES once, the parity once, SHA-256 over
    1.5x, LevelDB put of 1.5x."""
    return 1 / (1 / raw["aes-gcm"] + 1 / raw[parity] + 1.5 / raw["sha256"] + 1.5 / raw["leveldb-put"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size_mib", nargs="?", type=int, default=1024, help="the file's size in MiB (1024)")
    parser.add_argument("--puts", type=int, default=1, help="files put one after another before the gets (1)")
    args = parser.parse_args()
    size_mib = args.size_mib
    size = size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="xsc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        raw = raw_steps(tmp)
        src = tmp / "input.bin"
        with src.open("wb") as f:
            chunk = os.urandom(16 * MiB)
            for _ in range(size // len(chunk)):
                f.write(chunk)
            f.write(chunk[: size % len(chunk)])
        data_dir = tmp / "node"
        node = start_node(data_dir, "--storage-capacity", f"{max(3, 2 * args.puts) * size + 64 * MiB}")
        xsc = ["--data-dir", str(data_dir)]
        try:
            leveldb_log = Compactions([data_dir / DB_DIR / "LOG", data_dir / BLOCKS_DIR / "LOG"])
            leveldb_log.since()  # what the node's start wrote
            with AnonSampler(node.pid) as anon:
                puts = []
                for i in range(args.puts):
                    with open(tmp / "cap.txt", "wb") as out:
                        cpu, cli = cpu_seconds(node.pid), _children_cpu()
                        put_s, put_rss, rc = run_xsc_measured([*xsc, "store", "put", str(src)], stdout=out,
                                                              stderr=subprocess.DEVNULL)
                        put_cpu, put_cli = cpu_seconds(node.pid) - cpu, _children_cpu() - cli
                    assert rc == 0, "put failed"
                    if i == 0:
                        cap = (tmp / "cap.txt").read_text().split()[-1]
                    puts.append((put_s, put_rss, put_cpu, put_cli, *leveldb_log.since()))
                put_s, put_rss, put_cpu, put_cli = puts[0][:4]
                get_s, get_rss, rc = run_xsc_measured([*xsc, "store", "get", cap, "-o", str(tmp / "out.bin")])
                assert rc == 0, "get failed"
                with open(os.devnull, "wb") as devnull:
                    cpu, cli = cpu_seconds(node.pid), _children_cpu()
                    stream_s, _, rc = run_xsc_measured([*xsc, "store", "get", cap], stdout=devnull)
                    get_cpu, get_cli = cpu_seconds(node.pid) - cpu, _children_cpu() - cli
                assert rc == 0, "get to stdout failed"
            tail_rewritten, tail_moved = leveldb_log.since()
            node_rss = peak_rss_mib(node.pid)
        finally:
            node.stop()
        same = _digest(src) == _digest(tmp / "out.bin")

    mb = 1e6
    put_raw = _put_pipeline(raw, "zfec-encode")
    put_raw_isal = _put_pipeline(raw, "isal-parity") if "isal-parity" in raw else None
    # (the whole command is timed: CLI start-up included)
    # A get reads the 4 data blocks from LevelDB, SHA-256 over 1x and AES once.
    get_raw = 1 / (1 / raw["aes-gcm"] + 1 / raw["sha256"] + 1 / raw["leveldb-get"])
    print(f"file: {size_mib} MiB, output identical: {same}")
    for name, rate in raw.items():
        print(f"raw {name:<12} {rate / mb:8.0f} MB/s (one thread)")
    print(f"raw put pipeline, one thread: {put_raw / mb:6.0f} MB/s;  raw get pipeline: {get_raw / mb:6.0f} MB/s")
    put_rate, get_rate, stream_rate = size / put_s, size / get_s, size / stream_s
    print(f"put  {put_rate / mb:7.0f} MB/s  = {put_rate / put_raw:5.2f} x the one-thread raw put pipeline "
          f"(target >= 150 MB/s, >= 1.3x)")
    if put_raw_isal is not None:
        print(f"     {'':7}         = {put_rate / put_raw_isal:5.2f} x that pipeline with the node's parity step, ISA-L's "
              f"({put_raw_isal / mb:.0f} MB/s), in place of zfec's")
    print(f"     {'':7}         = {put_rate / raw['node-blocks']:5.2f} x the node's blocks database alone taking a put's "
          f"blocks in order ({raw['node-blocks'] / mb:.0f} MB/s of input, {raw['node-blocks'] / put_raw:.2f} x the "
          f"pipeline: LevelDB syncs each table it writes, so where the disk is slower than the CPU, that is about "
          f"the most a put reaches)")
    gib = size / 2**30
    for i, (s, _, node_cpu, cli_cpu, rewritten_i, moved_i) in enumerate(puts):
        print(f"put {i + 1}: {size / s / mb:7.0f} MB/s = {size / s / put_raw:5.2f} x, CPU per GiB node {node_cpu / gib:.2f} "
              f"+ CLI {cli_cpu / gib:.2f} s; LevelDB's compactions that ended during it rewrote {rewritten_i / mb:.0f} "
              f"MB of tables and moved {moved_i / mb:.0f} MB down whole (a put writes {1.5 * size / mb:.0f} MB of blocks)")
    print(f"after the last put (during the gets), LevelDB's compactions rewrote {tail_rewritten / mb:.0f} MB of tables "
          f"and moved {tail_moved / mb:.0f} MB down whole")
    print(f"get  {stream_rate / mb:7.0f} MB/s  = {stream_rate / get_raw:5.2f} x the one-thread raw get pipeline "
          f"(CLI to stdout, /dev/null; target >= 300 MB/s, >= 1.3x)")
    print(f"get  {get_rate / mb:7.0f} MB/s  = {get_rate / raw['file-write']:5.2f} x raw file write "
          f"(CLI -o FILE: bounded by this machine's disk)")
    print(f"peak RSS: node {node_rss:.0f} MiB (of which anonymous at most {anon.peak_mib:.0f} MiB; the rest is "
          f"LevelDB's read-only mmap of its table files, i.e. page cache), CLI put {put_rss:.0f} MiB, "
          f"CLI get {get_rss:.0f} MiB (target < 300 MB each)")
    print(f"CPU per GiB, node + CLI (start-up included): put {put_cpu / gib:.2f} + {put_cli / gib:.2f} s, get to "
          f"/dev/null {get_cpu / gib:.2f} + {get_cli / gib:.2f} s; the one-thread raw pipelines "
          f"{2**30 / put_raw:.2f} s (put), {2**30 / get_raw:.2f} s (get); load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (above 1.5 on 2 cores: the figures are noise)")
    report = Report("storage")
    report.add("raw put pipeline, one thread", put_raw / mb, "MB/s")
    report.add("raw get pipeline, one thread", get_raw / mb, "MB/s")
    report.add(f"put {size_mib} MiB", put_rate / mb, "MB/s", target=150, op=">=")
    report.add("put x raw put pipeline", put_rate / put_raw, "x", target=1.3, op=">=")
    if put_raw_isal is not None:
        report.add("put x raw put pipeline with ISA-L's parity", put_rate / put_raw_isal, "x")
    report.add("put x the node's blocks database alone", put_rate / raw["node-blocks"], "x")
    report.add("the node's blocks database alone x raw put pipeline", raw["node-blocks"] / put_raw, "x")
    report.add(f"get {size_mib} MiB to stdout", stream_rate / mb, "MB/s", target=300, op=">=")
    report.add("get x raw get pipeline", stream_rate / get_raw, "x", target=1.3, op=">=")
    report.add("node CPU per GiB put", put_cpu / gib, "s")
    report.add("CLI CPU per GiB put", put_cli / gib, "s")
    if args.puts == 1:
        report.add("LevelDB tables rewritten by the put", (puts[0][4] + tail_rewritten) / mb, "MB")
    report.add("node CPU per GiB get to stdout", get_cpu / gib, "s")
    report.add("CLI CPU per GiB get to stdout", get_cli / gib, "s")
    report.add(f"get {size_mib} MiB -o FILE", get_rate / mb, "MB/s")
    report.add("node peak RSS", node_rss * MiB / mb, "MB", target=300, op="<")
    report.add("node peak anonymous RSS", anon.peak_mib * MiB / mb, "MB", target=200, op="<")
    report.add("node peak anonymous memory", anon.peak_mib, "MiB", target=150, op="<")
    report.add("CLI put peak RSS", put_rss * MiB / mb, "MB", target=300, op="<")
    report.add("CLI get peak RSS", get_rss * MiB / mb, "MB", target=300, op="<")
    report.add("output identical", float(same), "", target=1, op=">=")
    report.write()


class Compactions:
    """What the compactions of the node's LevelDBs (its records, its blocks) wrote, from their LOGs: the bytes of
    tables merged and written again, and of tables moved down a level whole (no bytes written), since the last
    reading."""

    def __init__(self, paths: list[Path]) -> None:
        self.offsets = {path: 0 for path in paths}

    def since(self) -> tuple[int, int]:
        new = ""
        for path, offset in self.offsets.items():
            text = path.read_text(errors="replace")
            new, self.offsets[path] = new + text[offset:], len(text)
        rewritten = sum(int(n) for n in re.findall(r"Compacted .*? => (\d+) bytes", new))
        moved = sum(int(n) for n in re.findall(r"Moved #\d+ to level-\d+ (\d+) bytes", new))
        return rewritten, moved


def _children_cpu() -> float:
    """User + system CPU of this process's children waited for so far: the CLI runs, once each has ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(16 * MiB):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    main()
