"""xsc/netem/nfqueue.py: the queue protocol's messages, built and read within their declared lengths."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, strategies as st

from xsc.netem import nfqueue
from xsc.netem.nfqueue import config_messages, packet_ids, verdict_batch


def packet_message(packet_id: int) -> bytes:
    """A queued packet's announcement as the kernel sends it (a packet header attribute, padded)."""
    attr = struct.pack("=HH", 4 + 7, nfqueue.NFQA_PACKET_HDR) + struct.pack("!IHB", packet_id, 0x0800, 1) + b"\0"
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(0)) + attr
    return struct.pack("=IHHII", 16 + len(body), (nfqueue.NFNL_SUBSYS_QUEUE << 8) | nfqueue.NFQNL_MSG_PACKET, 0, 0,
                       0) + body


def test_announced_packets_are_read_in_order() -> None:
    assert list(packet_ids(packet_message(7) + packet_message(8))) == [7, 8]


def test_a_verdict_batch_accepts_every_packet_up_to_its_id() -> None:
    message = verdict_batch(3, 41)
    length, kind, flags = struct.unpack_from("=IHH", message)
    assert length == len(message) and kind == (3 << 8) | 3 and flags == nfqueue.NLM_F_REQUEST
    assert struct.unpack_from("!H", message, 18)[0] == 3  # the queue number, big-endian
    assert struct.unpack_from("!II", message, 24) == (nfqueue.NF_ACCEPT, 41)


def test_binding_asks_for_metadata_only_and_an_acknowledgement_each() -> None:
    bind, params, maxlen, flags = config_messages(0, 1000)
    assert all(struct.unpack_from("=H", m, 6)[0] & nfqueue.NLM_F_ACK for m in (bind, params, maxlen, flags))
    assert struct.unpack_from("!IB", params, 24) == (0, nfqueue.NFQNL_COPY_META)  # copy range 0: no payload
    assert struct.unpack_from("!I", maxlen, 24) == (1000,)
    with pytest.raises(ValueError, match="queue number"):
        verdict_batch(70000, 1)


def test_a_refusal_from_the_kernel_raises() -> None:
    error = struct.pack("=IHHII", 36, nfqueue.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16
    with pytest.raises(OSError, match="refused"):
        list(packet_ids(error))
    ack = struct.pack("=IHHII", 36, nfqueue.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", 0) + b"\0" * 16
    assert list(packet_ids(ack)) == []


def test_a_message_longer_than_the_datagram_is_not_read() -> None:
    whole = packet_message(5)
    assert list(packet_ids(whole[:-4])) == []
    assert list(packet_ids(whole + whole[:10])) == [5]


@given(st.binary(max_size=512))
def test_any_bytes_are_read_without_a_crash(data: bytes) -> None:
    try:
        ids = list(packet_ids(data))
    except OSError:
        return
    assert all(0 <= i < 2**32 for i in ids)
