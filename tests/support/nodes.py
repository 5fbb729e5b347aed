"""Nodes for tests: in-process (a config in a temp dir, served on a free port) and as processes (xsc.devnet)."""

from __future__ import annotations

import asyncio
import errno
import io
import subprocess
from pathlib import Path
from typing import Iterable

from aiohttp.test_utils import TestClient, TestServer

from xsc import devnet
from xsc.config import NodeConfig, load_config
from xsc.devnet import Devnet, NodeProcess, free_port, run_xsc, xsc_command
from xsc.node import TOKEN, create_app
from xsc.serve.listener import NodeRunner

__all__ = ["Devnet", "NodeProcess", "free_port", "run_xsc", "start_xsc", "xsc_command", "node_config", "serve", "kill_all",
           "NodeServer"]


# Test nodes are one operator's loopback network, like a devnet (xsc.devnet.DEVNET_ENV): ids without proof of
# work, and credit for each other without recognition.  Tests of admission and trust set these themselves.  Which
# remote answers are checked is drawn at random (compute/spot_checks.py): the tests of the checks ask for them.
TEST_DEFAULTS = {"peers": {"min_difficulty": 0}, "ledger": {"stranger_credit": 10**15}, "compute": {"check_rate": 0}}


def start_xsc(*args: str, **popen_args) -> subprocess.Popen:
    """The `xsc` command started with `args` and left running (`popen_args` as subprocess.Popen takes them):
    through `devnet.popen`, so in the suite it is forked as every node and CLI run is (forker.py)."""
    return devnet.popen([*xsc_command(), *args], **popen_args)


def node_config(root: Path, name: str = "node", **sections) -> NodeConfig:
    """A NodeConfig with its data dir `root/name`, listening on a free loopback port, not read from the
    environment; `sections` override the config file's sections ({"storage": {"capacity": ...}}), key by key
    over TEST_DEFAULTS."""
    overrides = {**sections, "node": {"listen": f"127.0.0.1:{free_port()}", **sections.get("node", {})}}
    for section, values in TEST_DEFAULTS.items():
        overrides[section] = {**values, **overrides.get(section, {})}
    return load_config(root / name, overrides=overrides, environ={})


class NodeServer(TestServer):
    """aiohttp's TestServer with the node's own runner: its port answers peers over TLS, as `xsc node start`'s does."""

    async def _make_runner(self, **kwargs) -> NodeRunner:
        # aiohttp's test server cancels a handler whose client went away; `xsc node start` lets it run to its end.
        return NodeRunner(self.app, **{**kwargs, "handler_cancellation": False})


async def serve(config: NodeConfig, attempts: int = 4) -> TestClient:
    """Run a node's app in this process on its configured port: a started TestClient that sends the node's
    token; `.app` is the running app (its services, database and config).  Close it to stop the node.

    A free port can be taken by another test process between the moment it was chosen and the bind: then
    the node starts again on another free port (its data dir and database are released in between)."""
    for attempt in range(attempts):
        app = create_app(config)
        server = NodeServer(app, host="127.0.0.1", port=int(config.node.listen.rsplit(":", 1)[1]))
        client = TestClient(server)
        try:
            await client.start_server()
        except OSError as err:
            await client.close()
            if err.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
            config = config.model_copy(update={"node": config.node.model_copy(
                update={"listen": f"127.0.0.1:{free_port()}"})})
            continue
        client.session.headers["Authorization"] = f"Bearer {app[TOKEN]}"
        return client
    raise AssertionError("unreachable")


CLOSE_SECONDS = 45.0


async def close_node(client: TestClient) -> None:
    """Close an in-process node; one that has not closed within CLOSE_SECONDS fails its test with every asyncio
    task's stack (what it waits for), where a hang would only show threads at the test's timeout."""
    try:
        await asyncio.wait_for(asyncio.shield(client.close()), CLOSE_SECONDS)
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        raise AssertionError(f"the node did not close within {CLOSE_SECONDS:g} s; its tasks:\n{stacks.getvalue()}")


def kill_all(nodes: Iterable[NodeProcess]) -> None:
    """kill -9 every node process still running (a test's teardown: nothing of theirs is kept)."""
    for node in nodes:
        if node.alive():
            node.kill()


async def silent_connections(port: int, n: int, timeout: float = 60.0) -> list[bytes]:
    """What each of `n` connections to 127.0.0.1:`port` that send nothing is sent before the server closes it."""
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    try:
        return await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in opened)), timeout)
    finally:
        for _, writer in opened:
            writer.close()
