"""A connect whose first packet is lost is raced by a second attempt (xsc/net/dial.py, which net/into.py connects
with): in a network namespace whose iptables rule drops every other SYN, the first included, the connection made is
the second attempt's, which needed no retransmission (without the race it is the first's, made by its SYN sent again
a second later)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess

import aiohttp
import pytest

from xsc.net.dial import RacingConnector, dial
from xsc.netem.delayline import in_namespace

from tests.netem.test_netns_devnet import needs_netns

TOTAL_RETRANS = 100  # offset of tcpi_total_retrans in struct tcp_info (linux/tcp.h): a SYN sent again counts


def _retransmitted(sock: socket.socket) -> int:
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), TOTAL_RETRANS)[0]


@pytest.fixture
def lossy_namespace():
    """A namespace with its loopback up and every other SYN it receives dropped, from the first on."""
    name = f"xsc-dialtest-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--syn", "-m",
                        "statistic", "--mode", "nth", "--every", "2", "--packet", "0", "-j", "DROP"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def _connect_twice() -> tuple[int, int]:
    """The retransmissions of a socket from `dial` and of the peer session's connection."""
    seen = asyncio.Event()  # the session's connection looked at: its answer's body may come (and free it)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n")
            await seen.wait()
            writer.write(b"x")
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sock = await dial("127.0.0.1", port, "")
        with sock:
            dialled = _retransmitted(sock)
        async with aiohttp.ClientSession(connector=RacingConnector()) as session:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                session_made = _retransmitted(response.connection.transport.get_extra_info("socket"))
                seen.set()
                assert await response.read() == b"x"
        return dialled, session_made
    finally:
        server.close()


@needs_netns
def test_a_connect_whose_syn_is_lost_is_raced_by_one_that_needs_no_retransmission(lossy_namespace: str) -> None:
    with in_namespace(lossy_namespace):
        dialled, session_made = asyncio.run(_connect_twice())
    assert (dialled, session_made) == (0, 0)


def test_a_refused_connect_raises() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: a connect is refused
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(dial("127.0.0.1", port, ""))
