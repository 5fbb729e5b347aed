"""The TCP congestion control of the sockets nodes talk to each other on (`peers.congestion`, default bbr).

A share travels between nodes that may be far apart, on paths that lose packets.  A loss-based congestion control
(cubic, most hosts' default; reno) halves its window at every loss: at a 100 ms round trip and 1% loss one
connection carries a few hundred KB/s whatever the path's capacity, and a 4 MiB batch of a put outlasts the peer
request timeout (docs/peers.md).  BBR paces by the bandwidth and round trip it measures and does not take a random
loss for congestion.  Linux lets a socket choose its own (`TCP_CONGESTION`): the peer client's sockets choose it
before they connect, the node's listening sockets before they accept (an accepted socket keeps its listener's).

A kernel without the algorithm (module not loaded: ENOENT) or that does not let this process use it (not in
net.ipv4.tcp_allowed_congestion_control and no CAP_NET_ADMIN: EPERM) leaves the socket on the host's default;
the node works as before and `congestion_in_use` says what its sockets got."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Callable

log = logging.getLogger(__name__)

_warned: set[str] = set()  # algorithms whose refusal was logged (once a process: every socket would say it again)


def _tcp(sock: socket.socket) -> bool:
    return sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6)


def choose(sock: socket.socket, name: str) -> str | None:
    """Ask for congestion control `name` on a TCP socket (nothing if `name` is empty or the socket is not TCP);
    a refusal leaves the host's default.  Returns the algorithm the socket uses (None: not a TCP socket on Linux)."""
    if not _tcp(sock) or not hasattr(socket, "TCP_CONGESTION"):
        return None
    if name:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
        except OSError as exc:
            if name not in _warned:
                _warned.add(name)
                log.warning("peer connections use the host's TCP congestion control: %s refused (%s); on a long "
                            "path with loss a loss-based one carries little (load it: modprobe tcp_%s, and add it "
                            "to net.ipv4.tcp_allowed_congestion_control)", name, exc.strerror or exc, name)
    return in_use(sock)


def in_use(sock: socket.socket) -> str | None:
    """The congestion control a TCP socket uses (None: not a TCP socket on Linux)."""
    if not _tcp(sock) or not hasattr(socket, "TCP_CONGESTION"):
        return None
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).split(b"\0", 1)[0].decode()


def socket_factory(name: str, dialable: Callable[[str], bool] | None = None) -> Callable[[tuple], socket.socket]:
    """An aiohttp `TCPConnector(socket_factory=...)`: each socket is made as aiohttp makes it, then `choose`n
    before it connects (the handshake's first packets already go under it).  `dialable` (config.dialable): the
    addresses a peer's name may have resolved to; any other is refused (OSError) before a socket is made."""

    def make(addr_info: tuple) -> socket.socket:
        family, type_, proto, _, address = addr_info
        if dialable is not None and family in (socket.AF_INET, socket.AF_INET6) and not dialable(address[0]):
            raise OSError(errno.EACCES, f"{address[0]} is on this machine or its network, where no peer of this "
                                        "node can be")
        sock = socket.socket(family=family, type=type_, proto=proto)
        try:
            choose(sock, name)
        except BaseException:
            sock.close()
            raise
        return sock

    return make


__all__ = ["choose", "in_use", "socket_factory"]
