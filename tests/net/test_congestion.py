"""The congestion control of the sockets peers talk on (xsc/net/congestion.py): chosen where the kernel allows it,
the host's default where it refuses, and a node works either way."""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from xsc.config import load_config
from xsc.errors import ConfigError
from xsc.health import new_nonce
from xsc.net import congestion
from xsc.node.appkeys import NODE
from xsc.serve.listener import GuardedNodeRunner, NodeSite
from xsc.storage.core import layout
from xsc.storage.core.capability import Capability
from xsc.storage.core.wire import share_path

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_CONGESTION"), reason="TCP_CONGESTION is Linux's")

FAST = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


def _host_default() -> str:
    return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()


def _other_than_default() -> str:
    """An algorithm this process may choose that is not the host's default (reno is never restricted)."""
    allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
    others = [name for name in ["bbr", "reno", *allowed] if name in allowed and name != _host_default()]
    if not others:
        pytest.skip("no congestion control allowed here besides the host's default")
    return others[0]


class _Refusing(socket.socket):
    """A socket whose kernel refuses the algorithm asked, as one not in net.ipv4.tcp_allowed_congestion_control
    refuses a process without CAP_NET_ADMIN."""

    def setsockopt(self, level, option, value, *rest):  # type: ignore[override]
        if (level, option) == (socket.IPPROTO_TCP, socket.TCP_CONGESTION):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return super().setsockopt(level, option, value, *rest)


def test_a_socket_gets_the_algorithm_asked_where_the_kernel_allows_it() -> None:
    name = _other_than_default()
    with socket.socket() as sock:
        assert congestion.in_use(sock) == _host_default()
        assert congestion.choose(sock, name) == name
        assert congestion.in_use(sock) == name


def test_an_algorithm_refused_leaves_the_host_default_and_says_so_once(caplog, monkeypatch) -> None:
    caplog.set_level(logging.WARNING, logger="xsc.net.congestion")
    monkeypatch.setattr(congestion, "_warned", set())  # as in a fresh process: a test before may have met these names
    for make, name in ((socket.socket, "xsc_no_such_cc"), (_Refusing, "xsc_refused_cc")):
        for _ in range(2):
            with make() as sock:
                assert congestion.choose(sock, name) == _host_default()
        said = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert len(said) == 1 and "host's TCP congestion control" in said[0]


def test_nothing_asked_and_what_is_not_tcp_is_left_alone() -> None:
    with socket.socket() as sock:
        assert congestion.choose(sock, "") == _host_default()
    with socket.socket(type=socket.SOCK_DGRAM) as sock:
        assert congestion.choose(sock, "bbr") is None
        assert congestion.in_use(sock) is None


def test_a_listener_s_algorithm_is_its_accepted_connections() -> None:
    name = _other_than_default()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert congestion.choose(listener, name) == name
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert congestion.in_use(accepted) == name


def test_the_connector_s_sockets_choose_before_they_connect() -> None:
    name = _other_than_default()
    make = congestion.socket_factory(name)
    with make((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 1))) as sock:
        assert congestion.in_use(sock) == name
    with make((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 1))) as sock:
        assert sock.gettimeout() is None and sock.fileno() >= 0  # a socket as aiohttp would have made it


def test_peers_congestion_must_be_a_kernel_name(tmp_path) -> None:
    assert load_config(tmp_path, environ={}).peers.congestion == "bbr"
    assert load_config(tmp_path, environ={"XSC_PEERS_CONGESTION": ""}).peers.congestion == ""
    for bad in ("BBR", "bbr;reboot", "a" * 16, "cubic "):
        with pytest.raises(ConfigError, match="congestion"):
            load_config(tmp_path, environ={"XSC_PEERS_CONGESTION": bad})


def _tcp_sockets(wanted) -> list[str | None]:
    """The algorithm of each IPv4 TCP socket of this process for which `wanted(sock)` holds (the kernel's view)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not stat.S_ISSOCK(os.fstat(int(fd)).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        with sock:
            try:
                if sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM and wanted(sock):
                    found.append(congestion.in_use(sock))
            except OSError:
                continue
    return found


def _connected_to(port: int) -> list[str | None]:
    """The algorithm of each socket of this process connected to `port` on loopback (the connections a node's client
    keeps to a peer)."""
    return _tcp_sockets(lambda sock: sock.getpeername()[1] == port)


async def _peer_sockets_algorithms(node_factory, chosen: str) -> list[str | None]:
    """The algorithms of a's connections to b: its session's, its kept requests' and its reads of blocks'."""
    a = await node_factory("a", health=FAST["health"], peers={"gossip_interval": 3600, "congestion": chosen})
    b = await node_factory("b", **FAST)
    peers_a, b_url, b_id = a.app[NODE].peers, b.app[NODE].peers.url, b.app[NODE].peers.identity.id
    await peers_a.add(b_url)
    response = await peers_a.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": new_nonce()}, max_size=1 << 20)
    assert response.status == 200
    client = peers_a.client
    await client.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": new_nonce()}, to=b_id, kept=True,
                         max_size=1 << 20)
    data = os.urandom(1000)  # one segment (under any segment size), every share of it held by b
    stored = await b.post("/v1/store/files", data=data, headers={"Connection": "close"})  # none of a's connections
    cap = Capability.parse((await stored.json())["capability"])
    length = layout.segment_block_length(len(data))
    await client.read_into(b_url, f"{share_path(cap.storage_index, 0)}/blocks?from=0&count=1", [length], to=b_id)
    assert client._kept.opened == 1 and client._into.opened == 1
    return _connected_to(URL(b_url).port)


async def test_a_node_s_peer_connections_use_its_choice(node_factory) -> None:
    name = _other_than_default()
    algorithms = await _peer_sockets_algorithms(node_factory, name)
    assert algorithms and set(algorithms) == {name}


async def test_a_node_works_where_its_choice_is_refused(node_factory) -> None:
    algorithms = await _peer_sockets_algorithms(node_factory, "xsc_no_such_cc")
    assert algorithms and set(algorithms) == {_host_default()}


def _accepted_on(port: int) -> list[str | None]:
    """The algorithm of each connection this process accepted on `port`."""
    return _tcp_sockets(lambda sock: sock.getsockname()[1] == port and sock.getpeername())


async def _up(_: web.Request) -> web.Response:
    return web.Response(text="up")


@pytest.mark.both_loops
@pytest.mark.parametrize("chosen", ["other", "xsc_no_such_cc"])
async def test_the_node_s_port_gives_its_connections_its_choice_or_the_host_s(chosen: str) -> None:
    name = _other_than_default() if chosen == "other" else chosen
    app = web.Application()
    app.router.add_get("/", _up)
    runner = GuardedNodeRunner(app, max_connections=64, max_per_ip=64)
    await runner.setup()
    site = NodeSite(runner, "127.0.0.1", 0, name)
    try:
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert await response.text() == "up"
                expected = name if chosen == "other" else _host_default()
                assert site.congestion_in_use == expected and _accepted_on(port) == [expected]
    finally:
        await runner.cleanup()
