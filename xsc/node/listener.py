"""The node's runner: its one port answers TLS (peers) and plain HTTP (the user: the CLI, the S3 front, the browser).

The connection sniffing is xsc/net/sniff.py; here it is put under aiohttp's runner (every site of the
runner then sniffs: TCPSite, the tests' TestServer), and `TlsOnlySite` is a listener that speaks TLS
only (`node.peer_listen`).  Whether a plaintext connection may carry peer requests is the signature
middleware's decision (`peer_auth.require_tls`), by path and remote address."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..net.sniff import SniffingServer
from .appkeys import TLS_CONTEXT, TLS_SERVED
from .connections import ACCEPT_QUEUE, LISTEN_BACKLOG, GuardedRunner


class _Sniffing:
    """Makes an AppRunner's sites answer TLS (peers) and plain HTTP (the user) on one port."""

    app: web.Application

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)  # type: ignore[call-arg]
        app[TLS_SERVED] = True  # before startup: the node advertises https:// to its peers

    async def _make_server(self) -> Any:
        server = await super()._make_server()  # type: ignore[misc]
        return SniffingServer(server, self.app.get(TLS_CONTEXT))


class NodeRunner(_Sniffing, web.AppRunner):
    """aiohttp's AppRunner, TLS and plain HTTP on one port (in-process test nodes)."""


class GuardedNodeRunner(_Sniffing, GuardedRunner):
    """The node's runner (`xsc node start`): connection caps (connections.py), TLS and plain HTTP on one port."""


class NodeSite(web.TCPSite):
    """The node's port.  asyncio takes at most `backlog` (LISTEN_BACKLOG) connections from the kernel per loop
    turn, and listens with the same number; the kernel's queue is then widened to ACCEPT_QUEUE, so that a burst
    of connects waits in it rather than having its SYNs dropped (a client retries a dropped SYN after 1 s: a
    monitor's fresh connection behind a burst of 2,000 idle connects took 1.1 s)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int) -> None:
        super().__init__(runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG)

    async def start(self) -> None:
        await super().start()
        assert self._server is not None
        for sock in self._server.sockets:
            with sock.dup() as listening:  # the same socket: listen() again only sets its queue's length
                listening.listen(ACCEPT_QUEUE)


class TlsOnlySite(web.BaseSite):
    """A listener that speaks TLS only (`node.peer_listen`): a plaintext client is cut off unanswered."""

    def __init__(self, runner: NodeRunner, host: str, port: int) -> None:
        super().__init__(runner)
        self._host, self._port = host, port

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert isinstance(server, SniffingServer)
        self._server = await asyncio.get_running_loop().create_server(server.tls_only, self._host, self._port,
                                                                      reuse_address=True)


__all__ = ["GuardedNodeRunner", "NodeRunner", "TlsOnlySite"]
