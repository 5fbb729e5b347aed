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

import pytest

from xsc.net.dial import dial
from xsc.netem.delayline import in_namespace

from tests.support.netns import needs_netns

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


async def _dialled_retransmissions() -> int:
    """The retransmissions of a socket `dial` connected."""
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    try:
        with await dial("127.0.0.1", server.sockets[0].getsockname()[1], "") as sock:
            return _retransmitted(sock)
    finally:
        server.close()


@needs_netns
def test_a_connect_whose_syn_is_lost_is_raced_by_one_that_needs_no_retransmission(lossy_namespace: str) -> None:
    with in_namespace(lossy_namespace):
        assert asyncio.run(_dialled_retransmissions()) == 0


def test_a_refused_connect_raises() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: a connect is refused
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(dial("127.0.0.1", port, ""))
