"""Nodes talking to each other: raw HTTP to a node, waiting for a condition, a gateway with peers, two nodes that
know each other's offers, a peer that lies with megabytes and a client that counts what it read of them, and telling
a test's own connections to a loopback server from strays."""

from __future__ import annotations

import http.client as httplib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from xsc.devnet import free_ports

from .nodes import Devnet
from .waiting import eventually

# Short gossip and probe intervals, so that tests see joins, probes and failures within a second or two (a node
# probes a peer it learns of at once).  A probe round a second: at five a second, six idle nodes probing each other
# kept half a core busy.  Automatic repair off (tests that want it set the threshold themselves), or it would move
# shares off nodes that a test kills and restarts on purpose.
FAST = {"XSC_PEERS_GOSSIP_INTERVAL": "0.3", "XSC_HEALTH_PROBE_INTERVAL": "1", "XSC_HEALTH_PROBE_TIMEOUT": "2",
        "XSC_AUDIT_REPAIR_AFTER_FAILURES": "1000000"}


def http(url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
         source: str | None = None) -> tuple[int, Any]:
    """One request on a fresh connection (from the loopback address `source` if given): (status, JSON or bytes)."""
    parts = urlsplit(url)
    conn = httplib.HTTPConnection(parts.hostname, parts.port, timeout=30,
                                  source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


def api(node, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    """The user API of a NodeProcess, with its token."""
    headers = {"Authorization": f"Bearer {node.token}"}
    body = b""
    if payload is not None:
        body = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    return http(node.url, method, path, body, headers)


def node_id(node) -> str:
    return http(node.url, "GET", "/health")[1]["serviceId"]


def known_ids(node) -> set[str]:
    status, body = api(node, "GET", "/v1/peers")
    assert status == 200, body
    return {p["id"] for p in body["peers"]}


def peer_health(node, peer: str) -> dict | None:
    status, body = api(node, "GET", "/v1/health/peers")
    assert status == 200, body
    return next((p for p in body["peers"] if p["id"] == peer), None)


def start_star(tmp_path: Path, n: int, gateway_env: dict, others_env: dict | list[dict], started: list
               ) -> tuple[list, list[str]]:
    """A gateway and n-1 nodes that joined it (data dirs n0, n1, ...), started at once (appended to `started`
    for the teardown), once the gateway knows them all and has probed them up: (nodes, ids), the gateway first.
    `others_env`: the other nodes' environment, or each one's."""
    others = others_env if isinstance(others_env, list) else [others_env] * (n - 1)
    net = Devnet(tmp_path, n, env=FAST, envs=[gateway_env, *others], name="n{}")
    started.extend(net)
    net.spawn().wait_listening(90)
    gateway, nodes = net.first, list(net)
    ids = [node_id(node) for node in nodes]
    eventually(lambda: known_ids(gateway) >= set(ids[1:])
               and all((peer_health(gateway, i) or {}).get("up") for i in ids[1:]),
               "the gateway to know the other nodes and see them up", timeout=90)
    return nodes, ids


def joined_at_once(node_process, gateway, names: list[str], env: dict) -> list:
    """Nodes `names` started at once by the node_process fixture, each with `--peer` the gateway (listening
    already: each joins it as it starts); in the order of `names`."""
    ports = free_ports(len(names))  # chosen here: threads choosing their own might choose one twice
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda name, port: node_process(name, ["--peer", gateway.url], dict(env), port),
                             names, ports))


def wait_for_storage_offers(gateway, count: int) -> None:
    """Until the gateway's market holds `count` storage offers, its own among them: knowing a node is not yet
    holding its offer, and a put keeps at home the shares its market has no provider for."""
    eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["providers"]["storage"] >= count,
               f"the gateway's market to hold {count} storage offers")


def kill_all(started: list) -> None:
    """kill -9 every node process of `started` still running (a test's teardown)."""
    for node in started:
        if node.proc and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


def offering_pair(thread_node) -> tuple[Any, Any, str]:
    """Two in-process nodes (probes and gossip quiet), `a` knowing `b` and its storage offer in its book: (a, b, b's
    id)."""
    a, b = thread_node("a", **QUIET), thread_node("b", **QUIET)
    b_id = json.loads(b.xsc("node", "status", "--json").stdout)["id"]
    assert a.xsc("peers", "add", b.url).exit_code == 0
    eventually(lambda: any(o["owner"] == b_id for k in json.loads(a.xsc("market", "book", "--json").stdout)["books"]
                           for o in k["asks"]), "the peer's offer in the book", 30)
    return a, b, b_id


def answering_megabytes(head: bytes, fill: bytes, mib: int = 8):
    """An aiohttp handler of a lying peer: `head`, then `mib` MiB of `fill` (valid JSON inside a string), then the
    string and object closed, in 256 KiB writes, until the asker stops reading."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            await response.write(head)
            for _ in range(mib * 4):
                await response.write(fill * (256 * 1024))
            await response.write(b'"}')
        except ConnectionError:  # the asker stopped reading
            pass
        return response
    return answer


READ_AHEAD = 256 * 1024  # what a connection may have taken in past a bound before the client stopped reading


class Received:
    """A counter for a PeerClient's Meter: the bytes of answers it read (or took in), whatever the route."""

    def __init__(self) -> None:
        self.received = 0

    def labels(self, way: str, route: str):
        from types import SimpleNamespace

        from xsc.net.traffic import RECEIVED

        def inc(size: int) -> None:
            if way == RECEIVED:
                self.received += size
        return SimpleNamespace(inc=inc)


@asynccontextmanager
async def lying_peer(*routes: tuple[str, str], mib: int = 8) -> AsyncIterator[str]:
    """An in-process peer answering each (method, path) with `mib` MiB of JSON (answering_megabytes): its URL."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    app = web.Application()
    for method, path in routes:
        app.router.add_route(method, path, answering_megabytes(b'{"x": "', b"0", mib))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@asynccontextmanager
async def metered_client() -> AsyncIterator[tuple[Any, Received]]:
    """A PeerClient of a fresh identity (plaintext, on loopback) and the count of the answer bytes it took in."""
    import aiohttp

    from xsc.identity import Identity
    from xsc.net.peer_client import PeerClient
    from xsc.net.traffic import Meter

    counted = Received()
    meter = Meter(counted)
    async with aiohttp.ClientSession(trace_configs=[meter.trace()]) as session:
        client = PeerClient(Identity.generate(), session, 30.0, tls=False, meter=meter)
        try:
            yield client, counted
        finally:
            client.close()


def dialled_from_here(writer: Any) -> bool:
    """Whether the connection an asyncio server's `writer` serves was dialled by a socket of this process (the
    test's own in-process nodes and clients).  In a full suite a port the system hands a test's server may be one
    another process's node knew a peer at, and that node may still be dialling it: a server that counts
    connections counts only these.  (Linux: the dialling socket is found in /proc while it waits for an answer.)"""
    dialled_from, dialled_to = writer.get_extra_info("peername")[1], writer.get_extra_info("sockname")[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)) == (dialled_from,
                                                                                                       dialled_to):
                    inodes.add(f"socket:[{fields[9]}]")
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in inodes:
                return True
        except OSError:  # closed meanwhile
            continue
    return False
