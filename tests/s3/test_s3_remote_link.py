"""The front's node over its user API (`xsc s3 serve`: s3/remote.RemoteNode), against a node in this process: a file
opened and closed before a byte is read gives its response, and its connection to the node, back at once."""

from __future__ import annotations

import os

from xsc.client.aio import NodeApi
from xsc.node.appkeys import IN_FLIGHT, TOKEN
from xsc.s3.remote import RemoteNode

from tests.support.waiting import eventually_async

MiB = 1024 * 1024


async def _body(data: bytes):
    yield data


async def test_files_opened_and_closed_unread_release_their_connections_at_once(node) -> None:
    api = NodeApi(str(node.make_url("")), node.app[TOKEN])
    await api.start()
    link = RemoteNode(api)
    try:
        data = os.urandom(24 * MiB)  # more than the sockets between the two hold: an unread get stays in flight
        cap = (await link.put_file(_body(data), len(data), "unread"))["capability"]
        connections = node.server.runner.server.connections  # the node's, as the front's connector opened them
        before = len(connections)
        closed = []
        for _ in range(20):
            body = await link.open_file(cap)
            await body.aclose()
            closed.append(body)  # a caller may still hold what it closed: that must not hold the connection
        await eventually_async(lambda: node.app[IN_FLIGHT].count == 0, "the node's gets ended")
        await eventually_async(lambda: len(connections) <= before, "the gets' connections closed")
        body = await link.open_file(cap, 5, 9)  # and the link still reads
        try:
            assert b"".join([chunk async for chunk in body]) == data[5:10]
        finally:
            await body.aclose()
    finally:
        await link.close()
