"""The S3 gateway against the native path, measured in the same run.

    python -m bench.bench_s3 [PUT_MIB] [RANGE_MIB] [KEYS] [--fronts serve,node]  (defaults 256, 1024, 10000)

Each measure is taken through each front in turn, on the same node and objects: `xsc s3 serve` (a process of its
own over the node's user API), then the node's own listener (`node.s3_listen`: the node restarted to answer S3
itself, as a node serves one front at a time).

- PutObject and GetObject of a PUT_MIB object through boto3, as ratios to the native `xsc store put` / `xsc store
  get` of the same file on the same node (target >= 0.8x); the puts in 4 rounds, the native put and the PutObject
  first in turn, the gets in 5 (medians), next to the same GetObject as raw signed HTTP and the node's own HTTP
  answer (`GET /v1/store/files/CAP`), both read alike by this process (their speeds and the node's CPU per GiB), and
  the CPU of the process answering S3;
  the node's anonymous memory at most during the PutObjects and during the native puts;
- 4 KiB ranged GetObject of a RANGE_MIB object: p50 and p90 latency (target p50 < 20 ms), next to the
  same ranged read asked of the node's API directly and to one segment's AES-GCM decryption;
- ListObjectsV2 of KEYS keys, all pages (target < 1 s), next to the node's own index listing.

The KEYS objects are recorded in the bucket index directly (the listing never reads their files; storing
10,000 files through the market would measure puts, not listing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xsc.devnet import xsc_command
from xsc.s3.core import sigv4

from .common import AnonSampler, cpu_seconds, free_port, peak_rss_mib, start_node

MiB = 1024 * 1024
# Rounds of puts, each a native put and a PutObject, the one or the other first in turn: the second put into the node
# pays LevelDB's compaction of the first's tables with its own (~0.3 s more of its background thread's CPU for 256 MiB).
ROUNDS = 4
GET_ROUNDS = 5  # a get takes a fraction of a put's time: more rounds for the same steadiness


def _start_front(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = data_dir.parent / "s3.log"
    proc = subprocess.Popen([*xsc_command(), "--data-dir", str(data_dir), "s3", "serve", "--listen",
                             f"127.0.0.1:{port}"], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if b"xsc s3 serving" in log.read_bytes():
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("xsc s3 serve did not start")


def _xsc(data_dir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*xsc_command(), "--data-dir", str(data_dir), *args], check=True, **kwargs)


def _file(path: Path, size: int) -> None:
    chunk = os.urandom(16 * MiB)
    with path.open("wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[: size % len(chunk)])


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _client(url: str, key: dict):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, aws_access_key_id=key["access_key"],
                        aws_secret_access_key=key["secret_key"], region_name="us-east-1",
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


class _Runs:
    """Each measure's runs: seconds, the CPU seconds of the process answering S3 (the node itself, for its own
    listener) and of the node, and the node's anonymous memory at most (sampled while it ran)."""

    def __init__(self, node_pid: int, front_pid: int) -> None:
        self.node_pid, self.front_pid = node_pid, front_pid
        self.runs: dict[str, list[tuple[float, float, float, float]]] = {}

    def run(self, name: str, fn) -> None:
        front_cpu, node_cpu = cpu_seconds(self.front_pid), cpu_seconds(self.node_pid)
        with AnonSampler(self.node_pid, interval=0.01) as anon:
            seconds = _timed(fn)
        self.runs.setdefault(name, []).append((seconds, cpu_seconds(self.front_pid) - front_cpu,
                                               cpu_seconds(self.node_pid) - node_cpu, anon.peak_mib))

    def median(self, name: str, what: int = 0) -> float:
        return statistics.median(run[what] for run in self.runs[name])

    def ratios(self, over: str, under: str) -> list[float]:
        """Per round, the time of `over` divided by that of `under` (a speed ratio of `under` to `over`)."""
        return [a[0] / b[0] for a, b in zip(self.runs[over], self.runs[under])]

    def anon_peak(self, name: str) -> float:
        return max(run[3] for run in self.runs[name])


def _put_get(s3, url: str, key: dict, data_dir: Path, node, tmp: Path, src: Path, front_pid: int) -> dict:
    """PutObject and GetObject of `src` against `xsc store put/get` of the same file, in interleaved rounds (for gets
    also the same GetObject as raw signed HTTP and the node's own HTTP answer, both read alike by this process), so
    that a burst of load from elsewhere does not land on one side only; each ratio is of the median times.
    `front_pid`: the process that answers S3 (the node itself, for its own listener)."""
    token = (data_dir / "api-token").read_text().strip()
    cap_out = tmp / "cap.txt"
    runs = _Runs(node.pid, front_pid)
    caps = []

    def s3_put() -> None:
        with src.open("rb") as f:
            s3.put_object(Bucket="bench", Key="object.bin", Body=f)

    def native_put() -> None:
        _xsc(data_dir, "store", "put", str(src), stdout=cap_out.open("wb"), stderr=subprocess.DEVNULL)
        caps.append(cap_out.read_text().split()[-1])

    for round_ in range(ROUNDS):
        # The node's capacity holds a few copies only: the last round's files go first, untimed on both sides (an
        # overwrite would time the old object's removal with the PutObject).
        if caps:
            _xsc(data_dir, "store", "rm", caps[-1], stdout=subprocess.DEVNULL)
            s3.delete_object(Bucket="bench", Key="object.bin")
        puts = [("native put", native_put), ("s3 put", s3_put)]
        for name, fn in puts if round_ % 2 == 0 else puts[::-1]:
            runs.run(name, fn)
    cap = caps[-1]

    def native_get() -> None:
        with open(os.devnull, "wb") as devnull:  # to stdout: `-o FILE` renames a finished file into place
            _xsc(data_dir, "store", "get", cap, stdout=devnull)

    def s3_get() -> None:
        body = s3.get_object(Bucket="bench", Key="object.bin")["Body"]
        while body.read(4 * MiB):
            pass

    def read_all(request: urllib.request.Request) -> None:
        buffer = memoryview(bytearray(4 * MiB))
        with urllib.request.urlopen(request) as response:
            while response.readinto(buffer):
                pass

    def node_get() -> None:
        read_all(urllib.request.Request(f"{node.url}/v1/store/files/{cap}",
                                        headers={"Authorization": f"Bearer {token}"}))

    def s3_http_get() -> None:
        """The same GetObject as raw signed HTTP read as `node_get` reads: the front's answer, without boto3's."""
        headers = sigv4.sign_headers("GET", "/bench/object.bin", "", urlsplit(url).netloc, {}, key["access_key"],
                                     key["secret_key"], time.time(), payload_hash=sigv4.EMPTY_SHA256)
        read_all(urllib.request.Request(f"{url}/bench/object.bin", headers=headers))

    for _ in range(GET_ROUNDS):
        for name, fn in (("native get", native_get), ("s3 get", s3_get), ("s3 http get", s3_http_get),
                         ("node get", node_get)):
            runs.run(name, fn)
    _xsc(data_dir, "store", "rm", cap, stdout=subprocess.DEVNULL)
    s3.delete_object(Bucket="bench", Key="object.bin")
    size = src.stat().st_size
    native_put, put_s = runs.median("native put"), runs.median("s3 put")
    native_get_s, get_s = runs.median("native get"), runs.median("s3 get")
    node_get_s, s3_http_s = runs.median("node get"), runs.median("s3 http get")
    gib = size / 2**30
    return {"put": {"native_MBps": size / native_put / 1e6, "s3_MBps": size / put_s / 1e6,
                    "ratio": native_put / put_s, "target_ratio": 0.8, "rounds": ROUNDS,
                    "round_ratios": runs.ratios("native put", "s3 put"),
                    "node_anon_peak_mib": runs.anon_peak("s3 put"),
                    "native_node_anon_peak_mib": runs.anon_peak("native put")},
            "get": {"native_MBps": size / native_get_s / 1e6, "s3_MBps": size / get_s / 1e6,
                    "ratio": native_get_s / get_s, "target_ratio": 0.8, "rounds": GET_ROUNDS,
                    "round_ratios": runs.ratios("native get", "s3 get"),
                    "node_http_MBps": size / node_get_s / 1e6, "ratio_to_node_http": node_get_s / get_s,
                    "s3_http_MBps": size / s3_http_s / 1e6, "http_ratio": node_get_s / s3_http_s,
                    "http_round_ratios": runs.ratios("node get", "s3 http get"),
                    "front_cpu_seconds": runs.median("s3 get", 1),
                    "node_cpu_per_gib": {name: runs.median(f"{name} get", 2) / gib for name in ("s3 http", "node")},
                    "node_anon_peak_mib": runs.anon_peak("s3 get"), "runs": runs.runs}}


def _objects(data_dir: Path, node_url: str, token: str, tmp: Path, range_mib: int, n_keys: int) -> str:
    """The buckets, and the objects every front reads: `bench/big.bin` (RANGE_MIB, its file put by `xsc store put`)
    and the `listing` bucket's keys, recorded through the node's user API before any front runs; big.bin's
    capability."""
    for bucket in ("bench", "listing"):
        _node_json(node_url, token, f"/v1/s3/buckets/{bucket}", method="PUT")
    big = tmp / "big.bin"
    _file(big, range_mib * MiB)
    put = json.loads(_xsc(data_dir, "store", "put", "--json", str(big), capture_output=True).stdout)
    big.unlink()
    _node_json(node_url, token, "/v1/s3/buckets/bench/object?key=big.bin", method="PUT",
               body={"parts": [{"cap": put["capability"], "size": range_mib * MiB}], "etag": "0" * 32})
    record = {"parts": [{"cap": "xsc:chk:listing-bench", "size": 1}], "etag": "0" * 32, "content_type": "text/plain"}
    keys = [f"dir{i % 10}/sub{i % 100}/file{i:06d}" for i in range(n_keys)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: _node_json(node_url, token, f"/v1/s3/buckets/listing/object?key={k}", method="PUT",
                                           body=record), keys))
    return put["capability"]


def _ranged(s3, node_url: str, token: str, big_cap: str, size: int) -> dict:
    """200 4 KiB ranged GetObjects of big.bin, each beside the same range asked of the node's user API."""
    rng = random.Random(7)
    offsets = [rng.randrange(0, size - 4096) for _ in range(200)]
    s3_lat, node_lat = [], []
    for offset in offsets:
        header = f"bytes={offset}-{offset + 4095}"
        t = time.perf_counter()
        body = s3.get_object(Bucket="bench", Key="big.bin", Range=header)["Body"].read()
        s3_lat.append(time.perf_counter() - t)
        assert len(body) == 4096
        t = time.perf_counter()
        request = urllib.request.Request(f"{node_url}/v1/store/files/{big_cap}",
                                         headers={"Authorization": f"Bearer {token}", "Range": header})
        with urllib.request.urlopen(request) as response:
            assert len(response.read()) == 4096
        node_lat.append(time.perf_counter() - t)
    aead, segment = AESGCM(os.urandom(32)), os.urandom(MiB)
    sealed = aead.encrypt(b"\0" * 12, segment, None)
    decrypt = min(_timed(lambda: aead.decrypt(b"\0" * 12, sealed, None)) for _ in range(20))
    return {"s3_p50_ms": _pct(s3_lat, 50), "s3_p90_ms": _pct(s3_lat, 90), "node_p50_ms": _pct(node_lat, 50),
            "segment_decrypt_ms": decrypt * 1000, "target_p50_ms": 20}


def _listed(s3, url: str, key: dict, node_url: str, token: str, n_keys: int) -> dict:
    """ListObjectsV2 of the `listing` bucket's keys, all pages: raw signed HTTP, boto3, and the node's index."""
    from urllib.parse import quote

    def list_all(**kwargs) -> int:
        count = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="listing", **kwargs):
            count += len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
        return count

    def list_http() -> int:
        """Every page as raw signed HTTP: the gateway's work, without boto3's XML parsing."""
        count, token_ = 0, ""
        host = urlsplit(url).netloc
        while True:
            query = "list-type=2" + (f"&continuation-token={quote(token_, safe='')}" if token_ else "")
            headers = sigv4.sign_headers("GET", "/listing", query, host, {}, key["access_key"],
                                         key["secret_key"], time.time(), payload_hash=sigv4.EMPTY_SHA256)
            with urllib.request.urlopen(urllib.request.Request(f"{url}/listing?{query}",
                                                               headers=headers)) as response:
                body = response.read()
            count += body.count(b"<Contents>")
            if b"<NextContinuationToken>" not in body:
                return count
            token_ = body.split(b"<NextContinuationToken>")[1].split(b"<")[0].decode()

    assert list_all() == n_keys and list_http() == n_keys
    list_s = min(_timed(list_all) for _ in range(3))
    http_s = min(_timed(list_http) for _ in range(3))
    index_s = min(_timed(lambda: _list_index(node_url, token)) for _ in range(3))
    return {"keys": n_keys, "s3_http_seconds": http_s, "boto3_seconds": list_s, "node_index_seconds": index_s,
            "ratio_to_index": http_s / index_s, "target_seconds": 1.0}


FRONTS = {"serve": "`xsc s3 serve`", "node": "the node's own S3 listener"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("put_mib", nargs="?", type=int, default=256, help="the object put and got, in MiB (256)")
    parser.add_argument("range_mib", nargs="?", type=int, default=1024, help="the object read by ranges, in MiB (1024)")
    parser.add_argument("keys", nargs="?", type=int, default=10000, help="small objects put and listed (10000)")
    parser.add_argument("--fronts", default="serve,node",
                        help="which fronts to measure, in order: serve (`xsc s3 serve`), node (the node's own "
                             "listener, node.s3_listen, the same node restarted) (serve,node)")
    args = parser.parse_args()
    put_mib, range_mib, n_keys = args.put_mib, args.range_mib, args.keys
    fronts = args.fronts.split(",")
    if not fronts or set(fronts) - set(FRONTS) or len(set(fronts)) != len(fronts):
        parser.error(f"--fronts takes some of {', '.join(FRONTS)}, comma-separated, each once")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="xsc-bench-s3-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "node"
        capacity = ["--storage-capacity", str(2 * (3 * put_mib + range_mib) * MiB + 256 * MiB)]
        s3_port = free_port()
        node = front = None
        src = tmp / "object.bin"
        _file(src, put_mib * MiB)
        try:
            node = start_node(data_dir, *capacity)
            key = json.loads(_xsc(data_dir, "s3", "keys", "create", "--json", capture_output=True).stdout)
            token = (data_dir / "api-token").read_text().strip()
            big_cap, in_node = _objects(data_dir, node.url, token, tmp, range_mib, n_keys), False
            for name in fronts:
                # A node serves one front (the node's own listener refuses `xsc s3 serve`'s writes): each phase runs
                # on the same node, started as that front needs it, over the same objects.
                if name == "serve":
                    if in_node:
                        node.stop(timeout=60)
                        node, in_node = start_node(data_dir, *capacity), False
                    front, url = _start_front(data_dir)
                    front_pid = front.pid
                else:
                    if front is not None:
                        front.terminate()
                        front.wait(30)
                        front = None
                    node.stop(timeout=60)
                    node = start_node(data_dir, *capacity, env={"XSC_NODE_S3_LISTEN": f"127.0.0.1:{s3_port}"})
                    in_node = True
                    url, front_pid = f"http://127.0.0.1:{s3_port}", node.pid
                s3 = _client(url, key)
                phase = results[name] = _put_get(s3, url, key, data_dir, node, tmp, src, front_pid)
                if name == "serve":  # after a PUT_MIB put and gets: bounded? (the node's: its anonymous memory)
                    phase["front_peak_rss_mib"] = peak_rss_mib(front_pid)
                phase["range_4k"] = _ranged(s3, node.url, token, big_cap, range_mib * MiB)
                phase["list"] = _listed(s3, url, key, node.url, token, n_keys)
        finally:
            if front is not None:
                front.terminate()
                front.wait(30)
            if node is not None:
                node.stop(timeout=60)

    load = os.getloadavg()[0]
    print(f"machine load average (1 min): {load:.1f} on {os.cpu_count()} cores")
    for name, r in results.items():
        _report(FRONTS[name], r, put_mib, range_mib)
    print(json.dumps({"bench": "s3", "load": load, **results}))


def _report(front: str, results: dict, put_mib: int, range_mib: int) -> None:
    print(f"--- through {front}")
    for op in ("put", "get"):
        r = results[op]
        print(f"S3 {op:<3} {put_mib} MiB: {r['s3_MBps']:6.0f} MB/s vs native store {op} {r['native_MBps']:6.0f} MB/s"
              f" = {r['ratio']:.2f}x (target >= 0.8x)")
    r = results["put"]
    print(f"  put: medians of {r['rounds']} interleaved rounds (per round: "
          f"{', '.join(f'{x:.2f}x' for x in r['round_ratios'])})")
    print(f"  put: the node's anonymous memory at most {r['node_anon_peak_mib']:.0f} MiB during the PutObjects, "
          f"{r['native_node_anon_peak_mib']:.0f} MiB during the native puts")
    r = results["get"]
    print(f"  get: medians of {r['rounds']} interleaved rounds (per round: "
          f"{', '.join(f'{x:.2f}x' for x in r['round_ratios'])}); the node's own HTTP answer read by this process "
          f"{r['node_http_MBps']:.0f} MB/s (S3 = {r['ratio_to_node_http']:.2f}x of it); the S3 process's CPU per get "
          f"{r['front_cpu_seconds']:.2f} s")
    cpu = r["node_cpu_per_gib"]
    print(f"  raw signed GetObject read as the node's own answer is read: {r['s3_http_MBps']:.0f} MB/s = "
          f"{r['http_ratio']:.2f}x the node's own HTTP answer (per round: "
          f"{', '.join(f'{x:.2f}x' for x in r['http_round_ratios'])}); the node's CPU per GiB "
          f"{cpu['s3 http']:.2f} s against {cpu['node']:.2f} s")
    if "front_peak_rss_mib" in results:
        print(f"peak RSS of xsc s3 serve after the {put_mib} MiB put and get: {results['front_peak_rss_mib']:.0f} MiB "
              "(streaming: independent of the object's size)")
    r = results["range_4k"]
    print(f"S3 4 KiB ranged get of a {range_mib} MiB object: p50 {r['s3_p50_ms']:.1f} ms, p90 {r['s3_p90_ms']:.1f} ms "
          f"(target p50 < 20 ms); the node's own ranged read p50 {r['node_p50_ms']:.1f} ms; one 1 MiB segment's "
          f"AES-GCM decryption {r['segment_decrypt_ms']:.2f} ms")
    r = results["list"]
    print(f"S3 ListObjectsV2 of {r['keys']} keys (all pages, signed HTTP): {r['s3_http_seconds'] * 1000:.0f} ms "
          f"(target < 1 s) = {r['ratio_to_index']:.2f}x the node's own index listing "
          f"({r['node_index_seconds'] * 1000:.0f} ms); through boto3 (its XML parsing included) "
          f"{r['boto3_seconds'] * 1000:.0f} ms")


def _pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] * 1000


def _node_json(url: str, token: str, path: str, method: str = "GET", body: dict | None = None) -> dict:
    from urllib.parse import quote

    request = urllib.request.Request(url + quote(path, safe="/?=&"), method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def _list_index(url: str, token: str) -> int:
    count, start = 0, ""
    while True:
        page = _node_json(url, token, f"/v1/s3/buckets/listing/objects?max_keys=1000&start={start}")
        count += len(page["contents"])
        if not page["truncated"]:
            return count
        start = page["next"]


if __name__ == "__main__":
    main()
