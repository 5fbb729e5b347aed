"""S3 front fuzzing: random requests, mostly signed, against a real node and `xsc s3 serve` (or, --in-node, the node's
own S3 listener).

    python -m bench.s3_fuzz [--requests N] [--seed S] [--in-node]

Each request is drawn from what S3 clients send and what a hostile one may: every method, bucket names valid and not,
keys with spaces, non-ASCII, dots, newlines, a percent or 1,100 bytes, the subresources and list parameters the
front knows and those it does not (with bad values), conditional, copy, range, checksum, encryption and metadata
headers with good and bad values, and bodies from empty to XML documents (multipart completions, multi-object
deletes, one with an entity, one with 1,200 keys, one naming versions) to 70,000 bytes.  One request in twenty goes
unsigned.  Each answer must be a success, a 501, or an error with its S3 XML document; the front and its node must
stay up.
A failing case prints the request; the seed replays the run.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import requests

from tests.support.s3 import Gateway, sign_headers

BUCKETS = ["fuzz-a", "fuzz-b", "Bad_Bucket", "a", "x" * 70, "fuzz-a.b", "..", "fuzz%2Fa"]
KEYS = ["k", "dir/k", "a b", "ü/ß", "%00", "..", "../x", "k?x", "x" * 1100, "", "k\n", "k%", "dir/", "//k"]
SUBRESOURCES = [
    "", "acl", "versioning", "uploads", "uploadId=bogus", "uploadId=", "partNumber=1", "partNumber=0", "partNumber=-1",
    "partNumber=99999", "partNumber=x", "tagging", "policy", "cors", "lifecycle", "delete", "list-type=2",
    "list-type=2&max-keys=-1", "list-type=2&max-keys=abc", "list-type=2&continuation-token=%00zz",
    "list-type=2&start-after=zz&prefix=%0A&delimiter=/", "max-keys=1000000", "marker=zz", "prefix=&delimiter=",
    "location", "versions", "uploads&max-uploads=-3", "uploadId=x&partNumber=1", "restore", "select&select-type=2",
    "encoding-type=url", "encoding-type=bogus", "response-content-type=%00", "versionId=1", "versionId=null",
    "versionId=", "versionId=3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH", "versionId=null&partNumber=1", "x-id=GetObject",
    "list-type=1", "list-type=3", "fetch-owner=true&list-type=2", "max-parts=-1&uploadId=x",
    "part-number-marker=z&uploadId=y", "uploads&key-marker=k&upload-id-marker=%C3%A9", "uploads&upload-id-marker=x",
    "uploads&key-marker=dir/&delimiter=/&max-uploads=1", "uploads&key-marker=%FF&prefix=dir/&max-uploads=0",
    "uploads&key-marker=k&upload-id-marker=..%2F&encoding-type=url"]
HEADERS = [
    ("Range", ["bytes=0-0", "bytes=-1", "bytes=5-1", "bytes=abc", "bytes=0-0,2-3", "items=0-1",
               "bytes=99999999999999999999-"]),
    ("If-Match", ['"x"', "*", ""]), ("If-None-Match", ["*", '"x"']),
    ("If-Modified-Since", ["Wed, 21 Oct 2015 07:28:00 GMT", "garbage", ""]),
    ("If-Unmodified-Since", ["Wed, 21 Oct 2035 07:28:00 GMT", "x"]),
    ("Content-MD5", ["", "xx", "1B2M2Y8AsgTpgAmY7PhCfg=="]),
    ("x-amz-copy-source", ["fuzz-a/k", "/fuzz-a/k", "nobucket/x", "fuzz-a", "%", "fuzz-a/k?versionId=1",
                           "fuzz-a/k?versionId=null", "fuzz-a/k?versionId=", "fuzz-a/%00"]),
    ("x-amz-copy-source-range", ["bytes=0-0", "bytes=x", "bytes=10-0"]),
    ("x-amz-metadata-directive", ["COPY", "REPLACE", "bogus"]),
    ("x-amz-meta-a", ["ü", "x" * 3000, ""]), ("Content-Type", ["", "text/plain", "multipart/form-data; boundary=x"]),
    ("x-amz-server-side-encryption", ["AES256", "aws:kms", "x"]),
    ("x-amz-server-side-encryption-customer-algorithm", ["AES256"]),
    ("x-amz-acl", ["public-read", "private", "x"]), ("x-amz-storage-class", ["STANDARD", "GLACIER", "x"]),
    ("x-amz-tagging", ["a=b", "%%%"]), ("Content-Encoding", ["aws-chunked", "gzip", "x"]),
    ("x-amz-decoded-content-length", ["5", "-1", "x"]), ("Expect", ["100-continue"]),
    ("x-amz-copy-source-if-match", ['"x"']), ("x-amz-copy-source-if-modified-since", ["garbage"]),
    ("Cache-Control", ["no-cache"]), ("Expires", ["garbage"]), ("x-amz-checksum-crc32", ["AAAAAA==", "x"]),
    ("x-amz-checksum-crc64nvme", ["AAAAAAAAAAA=", "AAAAAA=="]), ("x-amz-trailer", ["x-amz-checksum-crc32c"]),
    ("x-amz-sdk-checksum-algorithm", ["CRC32", "CRC64NVME", "x"]), ("x-amz-request-payer", ["requester"]),
    ("x-amz-object-lock-mode", ["GOVERNANCE"]), ("x-amz-website-redirect-location", ["/x"])]
BODIES = [
    b"", b"hello", b"<x/>",
    b'<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"x"</ETag></Part></CompleteMultipartUpload>',
    b"<Delete><Object><Key>k</Key></Object></Delete>",
    b"<Delete><Object><Key>k</Key><VersionId>null</VersionId></Object><Object><Key>k</Key><VersionId>%00</VersionId>"
    b"</Object><Object><Key>dir/k</Key><VersionId/></Object></Delete>",
    b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1200 + b"</Delete>",
    b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><Delete><Object><Key>&a;</Key></Object></Delete>",
    b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>",
    b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
    b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>",
    b"\xff\xfe\x00", b"x" * 70000, b"5;chunk-signature=abc\r\nhello\r\n0;chunk-signature=def\r\n\r\n"]
METHODS = ["GET", "GET", "PUT", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"]
# The fuzz's wrong signatures come from one address as fast as it sends them: past node.auth_failure_limit's burst the
# front would answer them all SlowDown (tests/s3/test_s3_auth_failures.py), and the fuzz would see nothing else.
UNTHROTTLED = {"XSC_NODE_AUTH_FAILURE_LIMIT": "1000"}


@dataclass
class Stats:
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    sent: int = 0


@dataclass
class Case:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    signed: bool

    def __str__(self) -> str:
        return (f"{self.method} {self.path}{'?' + self.query if self.query else ''} headers {self.headers} "
                f"body {self.body[:60]!r}{'...' if len(self.body) > 60 else ''}{'' if self.signed else ' (unsigned)'}")


def draw(rng: random.Random) -> Case:
    method = rng.choice(METHODS)
    bucket = rng.choice(BUCKETS) if rng.random() < 0.4 else "fuzz-a"
    path = "/" + quote(bucket, safe="%") if rng.random() < 0.95 else "/"
    if path != "/" and rng.random() < 0.6:
        path += "/" + quote(rng.choice(KEYS), safe="/%")
    query = rng.choice(SUBRESOURCES) if rng.random() < 0.3 else ""
    if rng.random() < 0.2:
        query = "&".join(filter(None, [query, rng.choice(SUBRESOURCES)]))
    headers = dict(rng.choice(HEADERS) for _ in range(rng.choice([0, 0, 1, 2, 3])))
    headers = {name: rng.choice(values) for name, values in headers.items()}
    body = rng.choice(BODIES) if method in ("PUT", "POST") or rng.random() < 0.05 else b""
    return Case(method, path, query, headers, body, rng.random() < 0.95)


def send(session: requests.Session, url: str, key: dict, case: Case, rng: random.Random) -> requests.Response | None:
    """The answer, its body as sent (not decoded), or None for a request the client library itself refuses."""
    full = url + case.path + (f"?{case.query}" if case.query else "")
    headers = case.headers
    if case.signed:
        payload = hashlib.sha256(case.body).hexdigest() if rng.random() < 0.7 else "UNSIGNED-PAYLOAD"
        headers = sign_headers(case.method, full, key, headers, payload_hash=payload)
    try:
        response = session.request(case.method, full, headers=headers, data=case.body, timeout=60, stream=True)
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL):
        return None
    response._content = response.raw.read(decode_content=False)  # an object stored gzip-encoded comes back so
    return response


def check(case: Case, response: requests.Response) -> str | None:
    status = response.status_code
    if status >= 500 and status != 501:
        return f"{status} for {case}: {response.content[:300]!r}"
    if status >= 400 and case.method != "HEAD" and b"<Error>" not in response.content:
        return f"{status} without an S3 error document for {case}: {response.content[:200]!r}"
    return None


def fuzz(url: str, key: dict, count: int, seed: int, alive: Callable[[], bool] = lambda: True,
         progress: bool = True) -> Stats:
    rng, stats, session = random.Random(seed), Stats(), requests.Session()
    for bucket in ("fuzz-a", "fuzz-b"):
        send(session, url, key, Case("PUT", f"/{bucket}", "", {}, b"", True), rng)
    send(session, url, key, Case("PUT", "/fuzz-a/k", "", {}, b"hello world", True), rng)
    started = time.monotonic()
    for i in range(count):
        case = draw(rng)
        response = send(session, url, key, case, rng)
        if response is None:
            continue
        stats.sent += 1
        stats.statuses[response.status_code] += 1
        failure = check(case, response)
        if failure:
            stats.failures.append(failure)
            print(f"FAILURE: {failure}", flush=True)
        if not alive():
            stats.failures.append(f"the front or its node exited after {case}")
            break
        if progress and (i + 1) % 1000 == 0:
            print(f"  {i + 1}/{count} requests, {len(stats.failures)} failures, {time.monotonic() - started:.0f} s",
                  flush=True)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: random, printed)")
    parser.add_argument("--in-node", action="store_true", help="the node's own S3 listener, not `xsc s3 serve`")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"s3 fuzz: seed {seed} (replay with --seed {seed})", flush=True)
    with tempfile.TemporaryDirectory(prefix="xsc-s3-fuzz-") as tmp:
        gateway = Gateway(Path(tmp), UNTHROTTLED, in_node=args.in_node).start()
        front = getattr(gateway.front, "proc", None)  # the node's own listener has no process of its own
        try:
            stats = fuzz(gateway.front.url, gateway.key, args.requests, seed,
                         alive=lambda: (front is None or front.poll() is None) and gateway.node.proc.poll() is None)
        finally:
            gateway.stop()
    print(f"s3 fuzz, seed {seed}: {stats.sent} requests; statuses {dict(sorted(stats.statuses.items()))}; "
          f"{len(stats.failures)} failures")
    sys.exit(1 if stats.failures else 0)


if __name__ == "__main__":
    main()
