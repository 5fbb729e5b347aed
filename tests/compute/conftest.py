"""Fixtures of compute tests (helpers are in tests/support/compute.py)."""

from __future__ import annotations

import pytest


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
