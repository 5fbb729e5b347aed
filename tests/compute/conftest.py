"""Fixtures of compute tests (helpers are in compute_helpers.py)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from xsc.node import TOKEN, create_app


@pytest.fixture
async def compute_node(make_config):
    """compute_node(name="node", **compute_settings) -> a started in-process node (a TestClient sending the token).

    Starting a second one with the same name reuses the data dir (close the first one before)."""
    clients: list[TestClient] = []

    async def start(name: str = "node", **compute) -> TestClient:
        config = make_config(name, compute=compute) if compute else make_config(name)
        app = create_app(config)
        client = TestClient(TestServer(app, host="127.0.0.1", port=int(config.node.listen.rsplit(":", 1)[1])))
        await client.start_server()
        client.session.headers["Authorization"] = f"Bearer {app[TOKEN]}"
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
