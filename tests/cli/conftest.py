"""The real `xsc` CLI run in-process (click's CliRunner isolation around `run_cli`, so exit codes
and error lines are the ones users see) against a real node serving from a thread of this process."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from xsc.cli import cli
from xsc.cli.output import run_cli
from xsc.config import load_config

from ..conftest import free_port


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def xsc(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `xsc ARGS...` in this process, as `main()` does; COLUMNS is unset unless `env` sets it."""
    runner = CliRunner()
    with runner.isolation(input=input, env={"COLUMNS": None, "XSC_HOME": None, "XSC_NODE": None,
                                            "XSC_TOKEN": None, **(env or {})}) as (out, err, _):
        try:
            run_cli(cli, list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return Result(code, out.getvalue().decode(), err.getvalue().decode())


class ThreadNode:
    """A real node (the app `xsc node start` serves) on a free port, run by a thread of this process."""

    def __init__(self, data_dir: Path, **sections) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = load_config(data_dir, overrides={"node": {"listen": f"127.0.0.1:{self.port}"}, **sections},
                                  environ={})
        self.app = None  # the running aiohttp app (its services and database)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "ThreadNode":
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from aiohttp import web

        from xsc.node import create_app
        from xsc.node import datadir

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.app = create_app(self.config)
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            datadir.record_url(self.data_dir, self.url)
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(60)

    def xsc(self, *args: str, **kw) -> Result:
        return xsc("--data-dir", str(self.data_dir), *args, **kw)


@pytest.fixture
def thread_node(tmp_path: Path):
    """thread_node(name="node", storage={...}) -> a started ThreadNode; all are stopped at teardown."""
    nodes: list[ThreadNode] = []

    def start(name: str = "node", **sections) -> ThreadNode:
        node = ThreadNode(tmp_path / name, **sections).start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
