"""One S3 DeleteObjects of many small objects against putting them, measured in the same run.

    python -m bench.bench_s3_delete [--objects N] [--concurrency C] [--fronts node,serve]  (defaults 1000, 16)

For each front in turn, on a fresh node (`node`: the node's own S3 listener, `node.s3_listen`; `serve`: `xsc s3
serve`, a process of its own over the node's user API): N PutObjects of 1 KiB at concurrency C (signed SigV4 over
the payload's SHA-256, sent by aiohttp), then one DeleteObjects of the N keys (boto3; S3 allows 1,000 keys a request),
answered once their files are removed from the store. Prints both times and the delete's over the puts' (target at
most 0.5: a batch removal writes per batch, where the puts each publish their own file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from .bench_s3 import _start_front, _xsc
from .bench_small_objects import put_object
from .common import UNLIMITED_USER, free_port, start_node
from .report import Report

async def put_objects(url: str, key: dict, bucket: str, names: list[str], concurrency: int) -> float:
    """PutObject of 1 KiB under each of `names`, `concurrency` at a time: the seconds all took."""
    todo = iter(names)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def client() -> None:
            for name in todo:
                await put_object(session, url, key, f"/{bucket}/{name}")

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - started


def _front(tmp: Path, which: str, objects: int, concurrency: int) -> tuple[float, float]:
    import boto3
    from botocore.config import Config

    data_dir, port = tmp / which, free_port()
    env = {**UNLIMITED_USER, **({"XSC_NODE_S3_LISTEN": f"127.0.0.1:{port}"} if which == "node" else {})}
    node = start_node(data_dir, "--log-level", "WARNING", env=env)
    front = None
    try:
        key = json.loads(_xsc(data_dir, "s3", "keys", "create", "--json", capture_output=True).stdout)
        if which == "node":
            url = f"http://127.0.0.1:{port}"
        else:
            front, url = _start_front(data_dir)
        s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=key["access_key"],
                          aws_secret_access_key=key["secret_key"], region_name="us-east-1",
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                        read_timeout=600, retries={"max_attempts": 1}))
        s3.create_bucket(Bucket="del")
        names = [f"o/{n:05d}" for n in range(objects)]
        put = asyncio.run(put_objects(url, key, "del", names, concurrency))
        started = time.perf_counter()
        answer = s3.delete_objects(Bucket="del", Delete={"Objects": [{"Key": k} for k in names], "Quiet": True})
        deleted = time.perf_counter() - started
        if answer.get("Errors"):
            raise SystemExit(f"DeleteObjects answered errors: {answer['Errors'][:3]}")
        if s3.list_objects_v2(Bucket="del").get("KeyCount"):
            raise SystemExit("objects are left after DeleteObjects")
        return put, deleted
    finally:
        if front is not None:
            front.terminate()
            front.wait(10)
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000, help="objects put, then deleted in one request (1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="PutObjects at once (16)")
    parser.add_argument("--fronts", default="node,serve", help="node (its own S3 listener), serve (xsc s3 serve)")
    args = parser.parse_args()
    report = Report("s3_delete")
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-s3-delete-") as tmp:
        for which in args.fronts.split(","):
            put, deleted = _front(Path(tmp), which, args.objects, args.concurrency)
            print(f"{which}: {args.objects:,} PutObjects of 1 KiB at concurrency {args.concurrency}: {put:.2f} s; one "
                  f"DeleteObjects of them: {deleted:.2f} s; delete / puts {deleted / put:.2f}")
            report.add(f"one DeleteObjects of {args.objects:,} 1 KiB objects / their PutObjects at concurrency "
                       f"{args.concurrency}, {which}", deleted / put, "x", target=0.5, op="<=")
            report.add(f"one DeleteObjects of {args.objects:,} 1 KiB objects, {which}", deleted, "s")
    print(f"load average as it ended: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report.write()


if __name__ == "__main__":
    main()
