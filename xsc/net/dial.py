"""A TCP connection to a peer, raced by a second attempt when the first has not connected within RACE_AFTER.

A connect whose first packet (SYN) or its answer (SYN-ACK) is lost waits the kernel's initial retransmission
timeout, a second, before either is sent again.  On a path losing 1% of packets each way that is 2% of connects, and
a get on a long path opens eight connections to each of three or four holders at once (storage/remote.py): about
two such gets in five (1 - 0.98^24) wait a second more for one range than for the others, as one traced did
(docs/peers.md, "Over an emulated wide-area network").  A second attempt started after RACE_AFTER, RFC 8305's
connection attempt delay, connects in a round trip instead; the first of the two to connect is kept, the other
closed.  Where a round trip is shorter than RACE_AFTER only a lost packet starts a second attempt; on a longer one
every connect is made twice.

`dial` makes the connections of net/into.py (a get's ranges) and net/kept.py (paid invokes, small puts).  The peer
session's (aiohttp) are not raced: its connector, given an address twice to race, also tried a failed TLS handshake
again on the second (docs/peers.md)."""

from __future__ import annotations

import asyncio
import socket
from typing import Callable
from urllib.parse import urlsplit

import aiohappyeyeballs

from .congestion import socket_factory

RACE_AFTER = 0.25  # seconds before a second attempt races a connect not yet made (RFC 8305, section 8)
OWN_NAME_TIMEOUT = 10.0  # seconds a node's start waits for its own host name to resolve


async def dial(host: str, port: int, congestion: str,
               dialable: Callable[[str], bool] | None = None) -> socket.socket:
    """A connected TCP socket to host:port under congestion control `congestion` (congestion.choose), each address
    the name resolves to tried twice, in order, if `dialable` lets it (congestion.socket_factory); raises OSError
    when no attempt connects."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return await aiohappyeyeballs.start_connection([info for info in infos for _ in range(2)],
                                                   happy_eyeballs_delay=RACE_AFTER,
                                                   socket_factory=socket_factory(congestion, dialable))


async def own_addresses(url: str) -> list[str] | None:
    """The addresses the host name of this node's own URL resolves to as it starts, for config.dialable to tell
    whether the node is at a public address (asked once: peers are dialled without a look-up of the node's own
    name); [] for a URL naming its host by address, None for a name that did not resolve."""
    host = (urlsplit(url).hostname or "").strip("[]")
    if not host:
        return []
    try:
        socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
        return []
    except (OSError, UnicodeError, ValueError):
        pass
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
                                       OWN_NAME_TIMEOUT)
    except (OSError, UnicodeError, ValueError, TimeoutError):
        return None
    return [info[4][0] for info in infos] or None


__all__ = ["OWN_NAME_TIMEOUT", "RACE_AFTER", "dial", "own_addresses"]
