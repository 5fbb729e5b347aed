"""Shared fixtures: node configs in temp dirs, an in-process node on a free port, node processes.

The building blocks are in tests/support (nodes.py); node processes come from xsc/devnet.py."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop
from aiohttp.test_utils import TestClient
from hypothesis import settings

from tests.support.cli import ThreadedNode
from tests.support.forker import Forker
from tests.support.nodes import NodeProcess, close_node, free_port, kill_all, node_config, serve
from xsc import devnet
from xsc.devnet import DEVNET_ENV, claim_listen_ports, share_listen_ports
from xsc.ledger.store import SELF_CHECK_ENV
from xsc.node.collector import Collector
from xsc.storage.gateway_get import Plaintext

# pytest keeps each test module with its asserts rewritten (a pyc beside it) for the other workers and the next run,
# unless no bytecode is to be written (PYTHONDONTWRITEBYTECODE): every worker would rewrite every module at every
# run, ~16 s of CPU each.  Only the test processes write it: the nodes and commands they start keep the setting.
sys.dont_write_bytecode = False
# No property test fails for being slow: an example's time says how loaded the machine is, not whether the code is right.
settings.register_profile("xsc", deadline=None)
settings.load_profile("xsc")
os.environ.setdefault(SELF_CHECK_ENV, "1")  # the ledger verifies the signatures it makes (node processes too)
for _name, _value in DEVNET_ENV.items():  # every node a test starts is of a devnet unless the test says otherwise
    os.environ.setdefault(_name, _value)
if "PYTEST_XDIST_WORKER" in os.environ:  # workers start nodes side by side: each picks ports from a slice of its own
    share_listen_ports(int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw")),
                       int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
PORTS_CLAIMED = pytest.StashKey()


def pytest_configure(config: pytest.Config) -> None:
    """The run (its workers start after this, and slice what it claims) draws its nodes' ports from a slice of the
    range no other run on the machine draws from: the workers of two suites run side by side share no slice."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        config.stash[PORTS_CLAIMED] = claim_listen_ports()


def pytest_unconfigure(config: pytest.Config) -> None:
    claim = config.stash.get(PORTS_CLAIMED, None)
    if claim is not None:
        claim.close()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """The loops an async test runs on: asyncio's (XSC_TEST_EVENT_LOOP=uvloop: uvloop's); a test marked `both_loops`
    (the node's listener, driven in this process) on both, as `xsc node start` runs on either (node.event_loop)."""
    if item.get_closest_marker("both_loops"):
        return LOOPS
    name = os.environ.get("XSC_TEST_EVENT_LOOP", "asyncio")
    return {name: LOOPS[name]}


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """Each worker imports the test modules first, starting from a point of its own (worker i of n at i/n of the
    list), before it collects them in order.  Every worker collects every module, and a module's first import
    rewrites its asserts (~70 ms of CPU each here) and keeps the result for the next: collected in the same order
    at once, each module was rewritten by every worker; so each rewrites about its share."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    worker = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    root, asked = Path(session.config.rootpath), _asked_paths(session.config)
    modules = sorted(".".join(path.relative_to(root).with_suffix("").parts)
                     for path in (root / "tests").rglob("test_*.py")
                     if any(path == where or where in path.parents for where in asked))
    start = len(modules) * worker // count
    for name in modules[start:] + modules[:start]:
        try:
            importlib.import_module(name)
        except KeyboardInterrupt:
            raise
        except BaseException:  # an error, or a module's skip: the collection imports it again and reports it
            sys.modules.pop(name, None)


def _asked_paths(config: pytest.Config) -> list[Path]:
    """The files and folders the run collects (its arguments, without a test's `::name`)."""
    return [Path(config.invocation_params.dir, arg.split("::")[0]).resolve() for arg in config.args]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with a slow test first, each file's tests kept together and in order: `make test`'s workers
    (`--dist worksteal`) then start the multi-node tests early and end the run on short ones, where a run ending
    on one worker's last multi-node test left the other core idle for its length."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


# Seconds between the full collections of a test process that scan everything it holds (node/collector.py).
RESCAN_SECONDS = 60.0
COLLECTOR = Collector(rescan_seconds=RESCAN_SECONDS)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A test process collects its garbage as a node does (node/collector.py): what survives a full collection
    leaves the collector's sight.  A worker holds more as the run goes on (aiohttp's cache of handlers keeps
    closed nodes' apps, the market's and allocation's caches their orders and commitments), 500,000-900,000
    objects by the end, and each full collection scanned them all: 200-300 ms each, 7% of a worker's CPU.  A rescan
    a minute bounds how long garbage in cycles among frozen objects waits."""
    COLLECTOR.install()


@pytest.fixture
def collector_paused():
    """The test process's collector policy off while a test runs, for a test that collects garbage and checks what
    was found: nothing it makes is frozen meanwhile (a full collection could freeze it while alive, and its own
    collection would then not see it), and no rescan brings back in sight what other tests left frozen."""
    COLLECTOR.uninstall()
    try:
        yield
    finally:
        COLLECTOR.install()


@pytest.fixture(scope="session", autouse=True)
def forked_processes():
    """`xsc` processes forked from one that has imported xsc, sparing each the imports' CPU (forker.py)."""
    forker = Forker()
    devnet.popen = forker.popen
    yield
    devnet.popen = subprocess.Popen
    forker.close()


@pytest.fixture
def make_config(tmp_path: Path):
    """make_config(name="node", storage={"capacity": ...}, ...) -> NodeConfig in its own temp data dir."""

    def make(name: str = "node", **sections):
        return node_config(tmp_path, name, **sections)

    return make


@pytest.fixture
async def node_factory(make_config):
    """await node_factory(name="node", storage={...}) -> an in-process node on a free port.

    It is an aiohttp TestClient that sends the node's token; `.app` is the running
    app (its services, database and config).  All are closed at teardown."""
    clients: list[TestClient] = []

    async def start(name: str = "node", **sections) -> TestClient:
        client = await serve(make_config(name, **sections))
        clients.append(client)
        return client

    yield start
    for client in clients:
        await close_node(client)


@pytest.fixture
async def node(node_factory):
    """An in-process node with the default configuration (see node_factory)."""
    return await node_factory()


@pytest.fixture
def node_process(tmp_path: Path):
    """node_process(name="n1", extra_args=[...]) -> a started NodeProcess; all are killed at teardown."""
    started: list[NodeProcess] = []

    def start(name: str = "node", extra_args: list[str] | None = None, env: dict[str, str] | None = None,
              port: int | None = None) -> NodeProcess:
        proc = NodeProcess(tmp_path / name, port or free_port(), extra_args or (), env)
        started.append(proc)
        return proc.start()

    yield start
    kill_all(started)


@pytest.fixture
def cli_node(tmp_path: Path):
    """cli_node(name="node", **sections) -> a started ThreadedNode: a node in this process, on a loop of its own
    thread, that `.xsc(...)` runs the click app against (like a NodeProcess, without a process); stopped at
    teardown."""
    started: list[ThreadedNode] = []

    def start(name: str = "node", **sections) -> ThreadedNode:
        node = ThreadedNode(node_config(tmp_path, name, **sections))
        started.append(node)
        return node.start()

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def passed_on(monkeypatch) -> list[int]:
    """The bytes of each get that went through `Plaintext.pass_on` (-1: it raised)."""
    calls: list[int] = []
    real = Plaintext.pass_on

    async def counting(self, write):
        try:
            calls.append(await real(self, write))
        except BaseException:
            calls.append(-1)
            raise
        return calls[-1]

    monkeypatch.setattr(Plaintext, "pass_on", counting)
    return calls
