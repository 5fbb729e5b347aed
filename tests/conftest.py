"""Shared fixtures: node configs in temp dirs, an in-process node on a free port, node processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from xsc.config import NodeConfig, load_config
from xsc.node import TOKEN, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def make_config(tmp_path: Path):
    """make_config(name="node", storage={"capacity": ...}, ...) -> NodeConfig in its own temp data dir."""

    def make(name: str = "node", **sections) -> NodeConfig:
        port = free_port()
        overrides = {"node": {"listen": f"127.0.0.1:{port}"}, **sections}
        return load_config(tmp_path / name, overrides=overrides, environ={})

    return make


@pytest.fixture
async def node_factory(make_config):
    """await node_factory(name="node", storage={...}) -> an in-process node on a free port.

    It is an aiohttp TestClient that sends the node's token; `.app` is the running
    app (its services, database and config).  All are closed at teardown."""
    clients: list[TestClient] = []

    async def start(name: str = "node", **sections) -> TestClient:
        config = make_config(name, **sections)
        app = create_app(config)
        server = TestServer(app, host="127.0.0.1", port=int(config.node.listen.rsplit(":", 1)[1]))
        client = TestClient(server)
        await client.start_server()
        client.session.headers["Authorization"] = f"Bearer {app[TOKEN]}"
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def node(node_factory):
    """An in-process node with the default configuration (see node_factory)."""
    return await node_factory()


class NodeProcess:
    """A real `xsc node start` process."""

    def __init__(self, data_dir: Path, port: int, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.extra_args = extra_args or []
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "xsc", "--data-dir", str(self.data_dir), "node", "start",
                "--listen", f"127.0.0.1:{self.port}", *self.extra_args]

    def start(self, timeout: float = 20.0) -> "NodeProcess":
        cmd = self.command()
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"node did not start: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    @property
    def token(self) -> str:
        return (self.data_dir / "api-token").read_text().strip()

    def xsc(self, *args: str, input: bytes | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run the real `xsc` CLI against this node."""
        return run_xsc("--data-dir", str(self.data_dir), *args, input=input, timeout=timeout)


def run_xsc(*args: str, input: bytes | None = None, timeout: float = 120.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xsc", *args], input=input, capture_output=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def node_process(tmp_path: Path):
    """node_process(name="n1", extra_args=[...]) -> a started NodeProcess; all are stopped at teardown."""
    started: list[NodeProcess] = []

    def start(name: str = "node", extra_args: list[str] | None = None, env: dict[str, str] | None = None,
              port: int | None = None) -> NodeProcess:
        proc = NodeProcess(tmp_path / name, port or free_port(), extra_args, env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc and proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
