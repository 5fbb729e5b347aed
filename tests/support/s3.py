"""A real node process and a real `xsc s3 serve` process in front of it (or the node's own S3 listener,
`node.s3_listen`), and boto3 clients for them."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.nodes import NodeProcess, free_port, run_xsc, xsc_command
from tests.support.waiting import eventually
from xsc import devnet
from xsc.buckets.marks import FileMarks

SEGMENT = 64 * 1024  # small segments: ranged reads at segment edges stay fast
NODE_ENV = {"XSC_STORAGE_SEGMENT_SIZE": str(SEGMENT), "XSC_STORAGE_CAPACITY": "4GiB"}


class FrontProcess:
    """A real `xsc s3 serve` process for the node of a data dir."""

    def __init__(self, data_dir: Path, port: int | None = None, extra: list[str] | None = None,
                 node: str | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or {}  # XSC_* settings the front reads from the node's config (node.auth_failure_limit ...)
        self.node = node  # the node's URL, for a front whose data dir is not the node's (--node)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"{data_dir.name}-s3.log"

    def spawn(self) -> int:
        """Start the process, not waiting for it to serve: the offset in its log its lines begin at."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = devnet.popen(
                [*xsc_command(), "--data-dir", str(self.data_dir), *(["--node", self.node] if self.node else []),
                 "s3", "serve", "--listen",
                 f"127.0.0.1:{self.port}", *self.extra], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env})
        return offset

    def start(self, timeout: float = 120.0) -> "FrontProcess":
        offset = self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xsc s3 serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if b"xsc s3 serving" in self.log.read_bytes()[offset:]:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"xsc s3 serve did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def listing_model(keys: list[str], prefix: str, delimiter: str) -> tuple[list[str], list[str]]:
    """The plain definition of a listing of `keys` (contents, common prefixes), in S3's order (UTF-8 bytes)."""
    contents, prefixes = [], []
    for key in sorted(keys, key=str.encode):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            contents.append(key)
        elif key[:cut + len(delimiter)] not in prefixes:
            prefixes.append(key[:cut + len(delimiter)])
    return contents, prefixes

def create_key(data_dir: Path, user: str | None = None) -> dict:
    result = run_xsc("--data-dir", str(data_dir), "s3", "keys", "create", "--json", *(["--user", user] if user else []))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def code_of(info) -> tuple[str, int]:
    """The S3 error code and HTTP status of a botocore ClientError caught by pytest.raises."""
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def boto3_client(url: str, key: dict, region_name: str = "us-east-1", **config):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, aws_access_key_id=key["access_key"],
                        aws_secret_access_key=key["secret_key"], region_name=region_name,
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config))


class InNodeFront:
    """The S3 front a node runs itself on `node.s3_listen` (started and stopped with the node)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        pass


class Gateway:
    """A node and its S3 front, started in `root`: `xsc s3 serve` in a process of its own, or (`in_node`) the node's
    own S3 listener."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, *, in_node: bool = False,
                 front_args: list[str] | None = None) -> None:
        s3_port = free_port() if in_node else None
        self.front_args = front_args or []  # `xsc s3 serve`'s own options (--region ...)
        listen = {"XSC_NODE_S3_LISTEN": f"127.0.0.1:{s3_port}"} if in_node else {}
        self.node = NodeProcess(root / "node", free_port(), env={**NODE_ENV, **listen, **(env or {})})
        self.env = env or {}  # the front reads the node's settings too
        self.front: FrontProcess | InNodeFront | None = InNodeFront(s3_port) if s3_port else None
        self.key: dict = {}

    def start(self) -> "Gateway":
        self.node.start()
        self.key = create_key(self.node.data_dir)
        if self.front is None:
            self.front = FrontProcess(self.node.data_dir, extra=self.front_args, env=self.env).start()
        return self

    def client(self, **config):
        return boto3_client(self.front.url, self.key, **config)

    def stop(self) -> None:
        if self.front:
            self.front.stop()
        if self.node.proc and self.node.proc.poll() is None:
            self.node.stop()


def store_files(node: NodeProcess) -> list[dict]:
    result = node.xsc("store", "ls", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def export_index(node: NodeProcess) -> dict:
    result = node.xsc("s3", "export-index")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def sign_headers(method: str, url: str, key: dict, headers: dict[str, str],
                 payload_hash: str = "UNSIGNED-PAYLOAD") -> dict[str, str]:
    """Headers of a request signed with SigV4 (by the gateway's own client-side signer: for raw requests)."""
    from urllib.parse import urlsplit

    from xsc.s3.core import sigv4

    parts = urlsplit(url)
    return sigv4.sign_headers(method, parts.path, parts.query, parts.netloc, headers, key["access_key"],
                              key["secret_key"], time.time(), payload_hash=payload_hash)


def signed_exchange(conn: http.client.HTTPConnection, base: str, key: dict, method: str, path: str,
                    body: bytes = b"") -> tuple[int, bytes]:
    """A request signed with `key` for the S3 endpoint at `base`, sent whole on `conn`: its answer's status and
    body (for requests a client library would not send as they are: on a connection kept open, say)."""
    answer, read = signed_answer(conn, base, key, method, path, body)
    return answer.status, read


def signed_answer(conn: http.client.HTTPConnection, base: str, key: dict, method: str, path: str,
                  body: bytes = b"") -> tuple[http.client.HTTPResponse, bytes]:
    """As `signed_exchange`, the answer itself (its headers) with its body."""
    headers = sign_headers(method, base + path, key, {"Content-Length": str(len(body))})
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for header, value in headers.items():
        conn.putheader(header, value)
    conn.endheaders(body)
    answer = conn.getresponse()
    return answer, answer.read()


def index_and_files(node: NodeProcess) -> tuple[set[str], set[str], dict]:
    """The capabilities the bucket index refers to, those of the store's S3 files, and the export itself."""
    index = export_index(node)
    referenced = {p["cap"] for b in index["buckets"] for o in b["objects"].values() for p in o["parts"]}
    referenced |= {p["cap"] for u in index["uploads"] for p in u["parts"]}
    marks = FileMarks.load(node.data_dir)
    files = set(marks.files(store_files(node)))
    return referenced, files, index


def reserved(node: NodeProcess) -> int:
    """What the node's store holds room for, puts under way among it."""
    return json.loads(node.xsc("node", "status", "--json").stdout)["storage"]["reserved"]


def half_sent_put(gateway: Gateway, path: str, size: int, key: dict | None = None,
                  headers: dict[str, str] | None = None) -> http.client.HTTPConnection:
    """A PUT signed with `key` (the gateway's own if none), with `headers`, whose body is half sent, once the node has
    begun storing it."""
    url = gateway.front.url + path
    headers = sign_headers("PUT", url, key or gateway.key, {"Content-Length": str(size), **(headers or {})})
    conn = http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=60)
    conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(os.urandom(size // 2))
    eventually(lambda: reserved(gateway.node) > 0, "the node to begin storing the upload", 120)
    return conn
