"""Fixtures of compute tests (helpers are in tests/support/compute.py)."""

from __future__ import annotations

import inspect

import pytest
import pytest_asyncio

from tests.support.nodes import close_node, node_config, serve


@pytest.fixture
def compute_node(node_factory):
    """compute_node(name="node", **compute_settings) -> a started in-process node (a TestClient sending the token).

    Starting a second one with the same name reuses the data dir (close the first one before)."""

    async def start(name: str = "node", **compute):
        return await (node_factory(name, compute=compute) if compute else node_factory(name))

    return start


@pytest.fixture
def xsc_node(cli_node):
    """A node the CLI tests drive with `xsc_node.xsc(...)`."""
    return cli_node()


# A file whose tests each send their own requests to a node of the default configuration, and assert nothing of what
# another test left on it, shares one node: file_node; tests that share a network (a gateway and its providers) build
# it of file_nodes in a module fixture of their file.  A test that takes one of these (or file_compute_node) runs on
# the file's event loop, where those nodes run.
# The mark is put on the test's definition too, before pytest-asyncio parametrizes its loop by it: parametrized at
# function scope, the loop (and every module fixture on it) would be set up again for each test.
FILE_LOOP_FIXTURES = {"file_node", "file_nodes", "file_compute_node"}


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if FILE_LOOP_FIXTURES & set(metafunc.fixturenames) and inspect.iscoroutinefunction(metafunc.function):
        metafunc.definition.add_marker(pytest.mark.asyncio(loop_scope="module"), append=False)


def pytest_itemcollected(item: pytest.Item) -> None:
    if FILE_LOOP_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("asyncio"):
        item.add_marker(pytest.mark.asyncio(loop_scope="module"), append=False)  # before the one of asyncio_mode

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def file_node(tmp_path_factory):
    """One in-process node with the default configuration for the whole test file (see above)."""
    client = await serve(node_config(tmp_path_factory.mktemp("file-node")))
    yield client
    await close_node(client)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def file_nodes(tmp_path_factory):
    """file_nodes(name="node", **sections) -> an in-process node for the whole test file, as node_factory starts one
    (see above): a module fixture builds a network of them that several tests share."""
    root, started = tmp_path_factory.mktemp("file-nodes"), []

    async def start(name: str = "node", **sections):
        client = await serve(node_config(root, name, **sections))
        started.append(client)
        return client

    yield start
    for client in started:
        await close_node(client)


@pytest_asyncio.fixture(loop_scope="module")
async def file_compute_node(tmp_path):
    """compute_node for a test of a file that shares `file_node`: a node of its own, on the file's event loop."""
    started = []

    async def start(name: str = "node", **compute):
        client = await serve(node_config(tmp_path, name, **({"compute": compute} if compute else {})))
        started.append(client)
        return client

    yield start
    for client in started:
        await close_node(client)
