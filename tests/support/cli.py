"""The `xsc` click app run in this process (click.testing) against a node, instead of a new Python per command.

- `xsc_in_process(*args)` answers like `subprocess.run` of the real command (returncode, stdout and stderr as
  bytes): the same `run_cli` wrapper maps errors to one line and exit codes.
- `ThreadedNode(config)`: a node served in this process on an event loop of its own thread, so a test (sync)
  can run CLI commands against it as it would against a node process: `node.xsc("store", "ls")`.  `stop()`
  and `start()` again on the same data dir and port.  Real processes stay for what needs one (kill -9,
  signals)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Mapping

from aiohttp import web
from click.testing import CliRunner

from xsc.cli import cli
from xsc.cli.output import run_cli
from xsc.config import NodeConfig
from xsc.node import create_app, datadir
from xsc.serve.listener import NodeRunner


def xsc_in_process(*args: str, input: bytes | None = None,
                   env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `xsc ARGS` in this process; its outcome as a CompletedProcess (stdout and stderr are bytes)."""
    saved = sys.argv
    # Output to a pipe (tables fitted to PIPE_WIDTH, one line a job), whatever COLUMNS this process has (pytest-xdist
    # workers export 80).
    with CliRunner().isolation(input=input, env={"COLUMNS": None, **(env or {})}) as (out, err, _):
        sys.argv = ["xsc", *args]
        try:
            run_cli(cli)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        finally:
            sys.argv = saved
        sys.stdout.flush()
        sys.stderr.flush()
        return subprocess.CompletedProcess(["xsc", *args], code, out.getvalue(), err.getvalue())


def ok(result: subprocess.CompletedProcess) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a command that must have failed."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("xsc: error: ")
    return lines[-1]


class ThreadedNode:
    """A node's app served on 127.0.0.1 by an event loop in a thread of this process."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.port = int(config.node.listen.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> "ThreadedNode":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"node {self.data_dir.name}", daemon=True)
        self._thread.start()
        try:
            self._call(self._serve(), timeout)
        except BaseException:
            self._end_loop()
            raise
        return self

    async def _serve(self) -> None:
        self.app = create_app(self.config)
        self._runner = NodeRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        datadir.record_url(self.data_dir, self.url)  # as `xsc node start` does: the CLI finds it by its data dir

    def _call(self, coroutine, timeout: float):
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def submit(self, coroutine) -> concurrent.futures.Future:
        """Run `coroutine` on the node's loop (a run of the node's own, going on while the test runs the CLI)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def stop(self, timeout: float = 60.0) -> None:
        """Shut the node down as a SIGTERM would (its cleanup runs); the data dir stays."""
        if self._loop is None:
            return
        try:
            if self._runner is not None:
                self._call(self._runner.cleanup(), timeout)
        finally:
            self._runner = self.app = None
            self._end_loop()

    def _end_loop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        self._loop = self._thread = None

    @property
    def token(self) -> str:
        return (self.data_dir / "api-token").read_text().strip()

    def xsc(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run the `xsc` CLI (in this process) against this node."""
        return xsc_in_process("--data-dir", str(self.data_dir), "--node", self.url, *args, input=input, env=env)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def xsc(*args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> Result:
    """Run `xsc ARGS...` in this process, as `main()` does (exit codes and error lines as users see them)."""
    done = xsc_in_process(*args, input=input, env=env)
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


class TextNode:
    """A ThreadedNode whose `xsc` names only its data dir (the CLI finds the node through node.url)
    and answers in text."""

    def __init__(self, node: ThreadedNode) -> None:
        self.node = node

    def __getattr__(self, name: str):
        return getattr(self.node, name)

    def xsc(self, *args: str, **kw) -> Result:
        return xsc("--data-dir", str(self.node.data_dir), *args, **kw)
