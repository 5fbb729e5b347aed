"""The kernel's nfnetlink queue protocol, as much of it as a delay line needs (linux/netfilter/nfnetlink_queue.h).

Packets that an `iptables ... -j NFQUEUE --queue-num Q` rule sends to queue Q wait in the kernel until a
process bound to Q gives a verdict.  `QueueSocket` binds one queue in the network namespace it was created in,
asks for the packets' metadata only (never a byte of their payload), and releases them in order with batch
verdicts: one message accepts every queued packet whose id is at most the one it names.

The message codecs (`config_messages`, `verdict_batch`, `packet_ids`) are pure and bounded: a message from the
kernel is parsed only as far as its declared lengths, which are checked against the bytes received."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Iterator

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1  # metadata only: the kernel copies no payload
NFQA_CFG_F_GSO = 4  # hand GSO packets over whole, as the stack built them (no segmenting for the queue)
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR, NLMSG_DONE = 2, 3

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NFGENMSG = struct.Struct("=BBH")  # family, version, queue number (big-endian: packed by hand)
_NLATTR = struct.Struct("=HH")  # length, type
HEADER = _NLMSGHDR.size + _NFGENMSG.size


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    return _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload + b"\0" * (_align(len(payload)) - len(payload))


def _message(kind: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    if not 0 <= queue <= 0xFFFF:
        raise ValueError(f"queue number {queue} is not 0 to 65535")
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body


def config_messages(queue: int, maxlen: int) -> list[bytes]:
    """Bind `queue`, copy metadata only, hold up to `maxlen` packets, take GSO packets whole (each message asks
    for an acknowledgement, so a refusal is seen)."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    bind = _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
    params = _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
    length = _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
    gso = _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_GSO)) + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO))
    return [_message(NFQNL_MSG_CONFIG, queue, attrs, seq, flags) for seq, attrs in enumerate((bind, params, length, gso), 1)]


def verdict_batch(queue: int, last_id: int, seq: int = 0) -> bytes:
    """Accept every packet of `queue` whose id is at most `last_id`."""
    return _message(NFQNL_MSG_VERDICT_BATCH, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last_id)), seq)


def packet_ids(data: bytes | memoryview) -> Iterator[int]:
    """The ids of the queued packets announced in `data` (one datagram from the kernel, holding one or more
    messages); an error the kernel reports raises OSError; anything malformed ends the reading."""
    view = memoryview(data)
    offset = 0
    while offset + _NLMSGHDR.size <= len(view):
        length, kind, _flags, _seq, _port = _NLMSGHDR.unpack_from(view, offset)
        if length < _NLMSGHDR.size or offset + length > len(view):
            return
        if kind == NLMSG_ERROR and length >= _NLMSGHDR.size + 4:
            code = -struct.unpack_from("=i", view, offset + _NLMSGHDR.size)[0]
            if code:
                raise OSError(code, f"the kernel refused a queue request: {errno.errorcode.get(code, code)}")
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET and length >= HEADER:
            found = _packet_id(view[offset + HEADER:offset + length])
            if found is not None:
                yield found
        offset += _align(length)


def _packet_id(attrs: memoryview) -> int | None:
    offset = 0
    while offset + _NLATTR.size <= len(attrs):
        length, kind = _NLATTR.unpack_from(attrs, offset)
        if length < _NLATTR.size or offset + length > len(attrs):
            return None
        if kind & 0x3FFF == NFQA_PACKET_HDR and length >= _NLATTR.size + 4:
            return struct.unpack_from("!I", attrs, offset + _NLATTR.size)[0]
        offset += _align(length)
    return None


class QueueSocket:
    """One bound queue in the network namespace this object is created in (the socket stays there)."""

    def __init__(self, queue: int, maxlen: int = 100_000, rcvbuf: int = 16 << 20) -> None:
        self.queue = queue
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE: past rmem_max (root only)
            self.sock.bind((0, 0))
            for message in config_messages(queue, maxlen):
                self.sock.send(message)
                for _ in packet_ids(self.sock.recv(4096)):
                    pass  # the acknowledgement (an error raises)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self._buffer = bytearray(65536)
        self.overflows = 0  # announcements the socket had no room for (their packets go with a later batch)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 4096) -> list[int]:
        """The ids of packets queued since the last read (at most `limit` datagrams read)."""
        ids: list[int] = []
        for _ in range(limit):
            try:
                size = self.sock.recv_into(self._buffer)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                self.overflows += 1
                continue
            ids.extend(packet_ids(memoryview(self._buffer)[:size]))
        return ids

    def accept_through(self, last_id: int) -> None:
        self.sock.send(verdict_batch(self.queue, last_id))

    def close(self) -> None:
        self.sock.close()
