"""The front's node over its user API (`xsc s3 serve`: s3/remote.RemoteNode), against a node in this process: a file
opened and closed before a byte is read gives its response, and its connection to the node, back at once; small
objects go on the front's own kept-alive connections, their keys whole whatever they hold, and what the node answers
there is bounded and checked (against a server of the test's own that answers as told)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time

import pytest

from xsc.buckets.core.names import DEFAULT_USER
from xsc.buckets.objects import SmallPut
from xsc.client import aio
from xsc.client.aio import NodeApi
from xsc.client.sync import error_from_problem
from xsc.buckets.marks import FileMarks
from xsc.errors import ConfigError, InvalidArgument, NodeNotRunning, NodeStopping, XscError
from xsc.identity import Identity
from xsc.net.tls import server_context
from xsc.node.appkeys import CONFIG, IN_FLIGHT, NODE, TOKEN
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


async def _link(node) -> RemoteNode:
    api = NodeApi(str(node.make_url("")), node.app[TOKEN])
    await api.start()
    return RemoteNode(api)


async def test_a_front_starts_with_its_nodes_key_and_refuses_to_with_another(node, tmp_path) -> None:
    """`xsc s3 serve`'s link, given the front's file marks, starts once the node has proven the same key on a challenge
    of its own; with another key it refuses to start, in one line naming the front's key file and the command that
    copies the node's; a link given no marks checks nothing, whatever key the front holds.  The node proves its key on
    a challenge alone: a front's file name is refused as one."""
    url, token = str(node.make_url("")), node.app[TOKEN]
    other = FileMarks.load(tmp_path / "front")  # a data dir of the front's own, its key made there
    for marks in (FileMarks.load(node.app[CONFIG].data_dir), None):
        link = RemoteNode(NodeApi(url, token), marks)
        await link.start()
        try:
            assert await link.files() == []
        finally:
            await link.close()
    refused = RemoteNode(NodeApi(url, token), other)
    with pytest.raises(ConfigError) as err:
        await refused.start()
    await refused.close()
    said, here = err.value.with_hint, str(other.path)
    assert "\n" not in said and said.startswith(f"{here} is not the key of the node at {url}"), said
    assert f"scp 127.0.0.1:NODE_DATA_DIR/s3-files.key {here}, then start xsc s3 serve again" in said, said
    for challenge in (other.name("b/k"), "ab" * 31, "AB" * 32, 7):
        response = await node.post("/v1/s3/marks/proof", json={"challenge": challenge})
        assert response.status == 400 and (await response.json())["code"] == "bad-request", challenge


async def test_a_key_check_the_node_could_not_answer_at_start_is_made_before_a_file_is_stored(
        node, tmp_path, monkeypatch, caplog) -> None:
    """A front that started while its node could not answer the key's check (busy, or not up yet) checks before it
    stores a file: with another key than the node's it refuses every store, in one line naming its key file and the
    command that copies the node's, and stores nothing; with the node's key it stores."""
    url, token, index = str(node.make_url("")), node.app[TOKEN], node.app[NODE].s3_index

    def busy(challenge: object) -> str:
        raise NodeStopping("the node is stopping", hint="retry once it is back")

    mine, other = FileMarks.load(node.app[CONFIG].data_dir), FileMarks.load(tmp_path / "front")
    monkeypatch.setattr(index.marks, "proof", busy)
    links = [RemoteNode(NodeApi(url, token), marks) for marks in (mine, other)]
    for link in links:
        await link.start()  # unchecked: it starts, and says so
    monkeypatch.undo()
    same, refused = links
    try:
        kept = mine.name("b/kept")
        assert (await same.put_file(_body(b"kept"), 4, kept))["size"] == 4
        for name in ("b/one", "b/two"):
            with pytest.raises(ConfigError) as err:
                await refused.put_file(_body(b"lost"), 4, other.name(name))
            said, here = err.value.with_hint, str(other.path)
            assert "\n" not in said and said.startswith(f"{here} is not the key of the node at {url}"), said
            assert f"scp 127.0.0.1:NODE_DATA_DIR/s3-files.key {here}, then start xsc s3 serve again" in said, said
        with pytest.raises(ConfigError):
            await refused.put_small(_put("b", "small", b"lost"))
        said_here = [r.getMessage() for r in caplog.records if r.name == "xsc.s3.remote"]
        assert sum("checked before a file is stored" in line for line in said_here) == 2, said_here  # as they started
        assert [line for line in said_here if "is not the key" in line] == [said]  # said once
        assert [f["name"] for f in await same.files()] == [kept]  # nothing of the refused front's stored
    finally:
        for link in links:
            await link.close()


def _put(bucket: str, key: str, data: bytes) -> SmallPut:
    record = {"content_type": "", "metadata": {}, "headers": {}, "etag": hashlib.md5(data).hexdigest(),
              "modified": time.time()}
    return SmallPut(bucket, key, DEFAULT_USER, "s3:test", record, data)


async def test_small_objects_keep_their_keys_whole_and_share_a_connection(node) -> None:
    link = await _link(node)
    try:
        await link.create_bucket("names", DEFAULT_USER)
        keys = ["a b+c", "d/e%2Ff?g=h&i=j#k", "line\r\nbreak", "\u00fcn\u00efc\u00f6de"]
        for key in keys:  # alone, as an object too large to share a request is sent
            await link.put_small(_put("names", key, os.urandom(100 * 1024)))
        results = await link.put_small_group([_put("names", key + " grouped", os.urandom(1024)) for key in keys])
        assert all("capability" in r for r in results)
        for key in keys:
            assert (await link.object("names", key, DEFAULT_USER))["size"] == 100 * 1024
            assert (await link.object("names", key + " grouped", DEFAULT_USER))["size"] == 1024
        assert link.api.kept_opened == 1  # one after the other, every one of them on the same connection
    finally:
        await link.close()


async def test_a_small_object_the_node_refuses_raises_its_error(node) -> None:
    link = await _link(node)
    try:
        with pytest.raises(InvalidArgument, match="not a group of small objects"):
            await link.api.post_bytes("/v1/s3/objects", b"\x00\x00\x00\x05{not")
    finally:
        await link.close()


@contextlib.asynccontextmanager
async def _started(url: str):
    """A started NodeApi to `url`, closed after."""
    api = NodeApi(url, "token")
    await api.start()
    try:
        yield api
    finally:
        await api.close()


@contextlib.asynccontextmanager
async def _answering(answer: bytes):
    """A NodeApi to a server that reads a request and answers `answer`, then closes the connection."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        async with _started(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}") as api:
            yield api
    finally:
        server.close()
        await server.wait_closed()


async def test_an_answer_over_the_bound_is_refused_before_it_is_read(monkeypatch) -> None:
    monkeypatch.setattr(aio, "MAX_ANSWER", 1000)
    async with _answering(b"HTTP/1.1 201 Created\r\nContent-Length: 1001\r\n\r\n") as api:
        with pytest.raises(XscError, match="more than 1,000 bytes"):
            await api.post_bytes("/v1/s3/objects", b"group")


async def test_an_answer_that_is_not_json_is_refused() -> None:
    async with _answering(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\n{not") as api:
        with pytest.raises(XscError, match="not JSON"):
            await api.post_bytes("/v1/s3/objects", b"group")


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 201 Created\r\nContent-Le", b"not http\r\n\r\n",
                                    b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\n{}"],
                         ids=["nothing", "a cut head", "not HTTP", "a cut body"])
async def test_an_answer_cut_or_not_http_is_a_node_not_answering(answer: bytes) -> None:
    async with _answering(answer) as api:
        with pytest.raises(NodeNotRunning, match="is not answering"):
            await api.post_bytes("/v1/s3/objects", b"group")


async def test_a_node_not_listening_is_a_node_not_answering() -> None:
    async with _answering(b"") as api:
        pass
    async with _started(api.url) as api:  # the server is gone: its port answers no more
        with pytest.raises(NodeNotRunning, match="is not answering"):
            await api.post_bytes("/v1/s3/objects", b"group")


async def test_a_node_url_in_https_is_spoken_to_in_tls(tmp_path) -> None:
    # A node's own certificate is not among the system's roots: the handshake is refused, as aiohttp's client
    # refuses it, rather than plain HTTP sent to a TLS port.
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0,
                                        ssl=server_context(Identity.generate(), tmp_path))
    try:
        async with _started(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}") as api:
            with pytest.raises(NodeNotRunning, match="CERTIFICATE_VERIFY_FAILED"):
                await api.post_bytes("/v1/s3/objects", b"group")
    finally:
        server.close()
        await server.wait_closed()
    assert NodeApi("https://node.example", "t")._port == 443 and NodeApi("http://node.example", "t")._port == 80


def test_what_the_operator_alone_can_mend_is_told_to_an_s3_client_without_the_operators_details(caplog) -> None:
    """A node that does not answer (its URL, the command that starts it with its data dir) and a front whose key is
    not its node's (its key file, the node's URL, the scp that mends it) are the operator's: an S3 client, anyone with
    a key, is told the service is unavailable or cannot do it now; the details go to the front's log."""
    from aiohttp.test_utils import make_mocked_request

    from xsc.s3.server import _error

    for err, code, status in (
            (NodeNotRunning("the node at http://127.0.0.1:7070 is not answering: connection refused",
                            hint="start it with: xsc node start --data-dir /srv/xsc"), "ServiceUnavailable", 503),
            (ConfigError("/srv/front/s3-files.key is not the key of the node at http://127.0.0.1:7070",
                         hint="copy the node's key here: scp 127.0.0.1:NODE_DATA_DIR/s3-files.key /srv/front/"),
             "InternalError", 500),
            # a capability the bucket index refused (400 from the node) is the front's or its records', not the
            # client's request: no InvalidRequest, whose client would change its request in vain
            (error_from_problem(400, b'{"code": "invalid-capability", "status": 400, "detail": "the capability\'s '
                                     b'key is not base32 (/srv/x)", "hint": "check the capability"}'),
             "InternalError", 500)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="xsc.s3.server"):
            response = _error(make_mocked_request("PUT", "/b/k"), err, "ID")
        body = response.body.decode()
        assert response.status == status and f"<Code>{code}</Code>" in body, body
        assert "/srv" not in body and "7070" not in body and "the service" in body, body
        assert err.with_hint in caplog.text, caplog.text


def test_an_unknown_access_key_tells_the_client_nothing_of_the_operators_command(caplog) -> None:
    """Anyone may send a request with a key that is not here (a stranger guessing keys): the command that makes one
    (`xsc s3 keys create`) is the operator's, said in the front's log."""
    from aiohttp.test_utils import make_mocked_request

    from xsc.s3.core.sigv4 import _secret
    from xsc.s3.server import _error

    with pytest.raises(XscError) as refused:
        _secret(lambda key: None, "XSCNOSUCHKEY00000000")
    with caplog.at_level("WARNING", logger="xsc.s3.server"):
        response = _error(make_mocked_request("GET", "/"), refused.value, "ID")
    body = response.body.decode()
    assert response.status == 403 and "<Code>InvalidAccessKeyId</Code>" in body, body
    assert "<Message>the access key does not exist here</Message>" in body and "xsc s3" not in body, body
    assert "InvalidAccessKeyId the access key does not exist here (create one with `xsc s3 keys create`)" \
        in caplog.text, caplog.text
