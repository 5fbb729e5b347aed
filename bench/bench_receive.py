"""What moving a share's blocks between two processes costs each of them, per GiB, over loopback on this machine.

    .venv/bin/python -m bench.bench_receive [--mib 512]

A get on a devnet moves every block it reads from a holder to the gateway: the holder writes 256 KiB blocks
(an aiohttp StreamResponse, chunked, as node/http/shares.py does) and the gateway reads them.  This measures
the CPU seconds per GiB of the sender and of the receiver, each in its own process, plain and over TLS 1.3
with the nodes' own contexts (xsc/net/tls.py: certificates of node keys, the client's pinned), and over TLS paced
at --pace MB/s (a connection of a six-node put on this machine runs that slowly: each byte then costs a reader
more), for three ways of receiving:
- aiohttp's client, `response.content.readexactly(block)` (what storage/holder_client.py does);
- asyncio streams, `StreamReader.readexactly(block)` (what net/kept.py does for small answers);
- an asyncio BufferedProtocol that has each block decrypted straight into a buffer of its own (the least
  copying asyncio allows: one recv into the TLS layer's buffer, one decryption into the block).
No node runs: the figures are the transport's floor and what each reader adds to it, the raw steps beside
the gateway's and holders' CPU per GiB that bench_network prints.

Then the other way, as a put moves a share's blocks to its holder: an aiohttp client sends SEND_BATCH bodies of
blocks (`Pieces`, SEND_AHEAD in flight, as storage/holder_client.py does) to a server that reads each as
node/http/shares.py does (`iter_any`, then `split_blocks`), over TLS 1.3 with the node's read buffers and malloc
thresholds; at full speed, then paced at --pace MB/s for the bodies in flight together (each WRITE_PIECE sent after
its share of a second): what a holder takes in on its two connections in a six-node put on this machine.  The
server's CPU per GiB is a holder loop's floor at that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from xsc.devnet import free_port
from xsc.heap import set_malloc_thresholds
from xsc.identity import Identity
from xsc.net import tls
from xsc.net.peer_client import WRITE_PIECE, Pieces
from xsc.storage.core import layout
from xsc.storage.core.wire import split_blocks
from xsc.storage.remote import SEND_AHEAD, SEND_BATCH

from .report import Report

BLOCK = 256 * 1024  # a block of a 1 MiB segment
GiB = 1 << 30


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sender(answers: multiprocessing.Queue, total: int, use_tls: bool, pace: float | None = None) -> None:
    """An aiohttp server whose one route streams `total` bytes in BLOCK writes (`pace`: at that many bytes a
    second); puts (port, node id), then the CPU seconds of each answer it streamed."""
    identity = Identity.generate()
    context = tls.server_context(identity, Path(tempfile.mkdtemp(prefix="xsc-bench-receive-"))) if use_tls else None
    block = os.urandom(BLOCK)

    async def blocks(request: web.Request) -> web.StreamResponse:
        started = _cpu()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for _ in range(total // BLOCK):
            await response.write(block)
            if pace:
                await asyncio.sleep(BLOCK / pace)
        try:
            await response.write_eof()
        except ConnectionError:
            pass  # a reader that has its blocks may close first
        answers.put(_cpu() - started)
        return response

    app = web.Application()
    app.router.add_get("/blocks", blocks)
    asyncio.run(_serve(app, context, answers, identity.id))


async def _aiohttp_reader(port: int, context, total: int) -> None:
    scheme = "https" if context else "http"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{scheme}://127.0.0.1:{port}/blocks", ssl=context or False) as response:
            for _ in range(total // BLOCK):
                await response.content.readexactly(BLOCK)


async def _stream_reader(port: int, context, total: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, limit=1 << 20)
    writer.write(b"GET /blocks HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    for _ in range(total // BLOCK):
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        await reader.readexactly(size)
        await reader.readexactly(2)
    writer.close()


class _Blocks(asyncio.BufferedProtocol):
    """Reads a chunked answer of BLOCK-sized chunks: framing into a small buffer, each block into its own."""

    def __init__(self, total: int, done: asyncio.Future) -> None:
        self.left, self.done = total, done
        self.frame = bytearray(64 * 1024)  # the head and chunk size lines
        self.framed = 0
        self.block: memoryview | None = None  # the block being filled, and how much of it is
        self.filled = 0
        self.head = True

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.block is not None:
            return self.block[self.filled:]
        return memoryview(self.frame)[self.framed:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.block is not None:
            self.filled += nbytes
            if self.filled == len(self.block):
                self.block, self.left = None, self.left - self.filled
                if self.left <= 0:
                    self.done.set_result(None)
            return
        self.framed += nbytes
        self._parse()

    def _parse(self) -> None:
        while self.block is None and self.left > 0:
            view = bytes(self.frame[:self.framed])
            if self.head:
                end = view.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head, rest = False, view[end + 4:]
            else:
                start = 2 if view.startswith(b"\r\n") else 0  # the end of the block before
                end = view.find(b"\r\n", start)
                if end < 0:
                    return
                size, rest = int(view[start:end], 16), view[end + 2:]
                self.block, self.filled = memoryview(bytearray(size)), min(size, len(rest))
                self.block[:self.filled] = rest[:self.filled]
                rest = rest[self.filled:]
                if self.filled == size:
                    self.block, self.left = None, self.left - size
            self.frame[:len(rest)], self.framed = rest, len(rest)
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the answer ended early"))


async def _buffered_reader(port: int, context, total: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Blocks(total, done), "127.0.0.1", port, ssl=context)
    transport.write(b"GET /blocks HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    await done
    transport.close()


READERS = {"aiohttp client": _aiohttp_reader, "asyncio streams": _stream_reader, "buffered protocol": _buffered_reader}


def measure(total: int, use_tls: bool, pace: float | None = None) -> dict[str, tuple[float, float, float]]:
    """Per reader: (MB/s, receiver CPU s/GiB, sender CPU s/GiB)."""
    answers: multiprocessing.Queue = multiprocessing.Queue()
    sender = multiprocessing.Process(target=_sender, args=(answers, total, use_tls, pace), daemon=True)
    sender.start()
    try:
        port, node = answers.get(timeout=60)
        context = tls.client_context(node, Identity.generate()) if use_tls else None
        out = {}
        for name, reader in READERS.items():
            started, wall = _cpu(), time.perf_counter()
            asyncio.run(reader(port, context, total))
            wall, used = time.perf_counter() - wall, _cpu() - started
            out[name] = (total / wall / 1e6, used * GiB / total, answers.get(timeout=60) * GiB / total)
        return out
    finally:
        sender.terminate()
        sender.join()


SEGMENT = 1 << 20  # of the uploaded pretend file, whose blocks the bodies carry
UPLOAD_FILE = 1 << 40  # its size: split_blocks takes any body of whole blocks from its first segment


def _holder(answers: multiprocessing.Queue) -> None:
    """An aiohttp server over TLS taking segment bodies as a holder does; puts (port, node id).  GET /cpu: the CPU
    seconds it has spent."""
    identity = Identity.generate()
    context = tls.server_context(identity, Path(tempfile.mkdtemp(prefix="xsc-bench-receive-")))
    tls.share_read_buffers()
    set_malloc_thresholds()

    async def segments(request: web.Request) -> web.Response:
        chunks = [chunk async for chunk in request.content.iter_any()]
        return web.json_response({"blocks": len(split_blocks(chunks, UPLOAD_FILE, SEGMENT, 0))})

    async def cpu(request: web.Request) -> web.Response:
        return web.json_response({"cpu": _cpu()})

    app = web.Application(client_max_size=2 * SEND_BATCH)
    app.router.add_put("/segments", segments)
    app.router.add_get("/cpu", cpu)
    asyncio.run(_serve(app, context, answers, identity.id))


async def _serve(app: web.Application, context, answers, node_id: str) -> None:
    """`app` on a free port (TLS with `context`, if any), told to the parent as (port, node id); until killed."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    answers.put((port, node_id))
    await asyncio.Event().wait()


async def _paced(body: list[bytes], rate: float):
    for block in body:
        for start in range(0, len(block), WRITE_PIECE):
            yield block[start:start + WRITE_PIECE]
            await asyncio.sleep(min(WRITE_PIECE, len(block) - start) / rate)


async def _upload(port: int, node: str, total: int, pace: float | None) -> tuple[float, float, float]:
    """(MB/s, server CPU s/GiB, client CPU s/GiB) of `total` bytes of bodies sent, SEND_AHEAD at once."""
    context = tls.client_context(node, Identity.generate())
    block = layout.segment_block_length(SEGMENT)
    body = [os.urandom(block) for _ in range(SEND_BATCH // block)]
    length = sum(map(len, body))
    count = max(1, total // length)
    url = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async def server_cpu() -> float:
            async with session.get(f"{url}/cpu", ssl=context) as response:
                return (await response.json())["cpu"]

        lane = asyncio.Semaphore(SEND_AHEAD)

        async def send() -> None:
            async with lane:
                data = Pieces(body) if pace is None else _paced(body, pace / SEND_AHEAD)
                async with session.put(f"{url}/segments", data=data, ssl=context,
                                       headers={"Content-Length": str(length)}) as response:
                    assert response.status == 200, response.status
                    await response.read()

        before, started, wall = await server_cpu(), _cpu(), time.perf_counter()
        await asyncio.gather(*(send() for _ in range(count)))
        wall, used = time.perf_counter() - wall, _cpu() - started
        server = await server_cpu() - before
    moved = count * length
    return moved / wall / 1e6, server * GiB / moved, used * GiB / moved


def uploads(total: int, pace: float) -> dict[str, tuple[float, float, float]]:
    answers: multiprocessing.Queue = multiprocessing.Queue()
    holder = multiprocessing.Process(target=_holder, args=(answers,), daemon=True)
    holder.start()
    try:
        port, node = answers.get(timeout=60)
        return {"full speed": asyncio.run(_upload(port, node, total, None)),
                f"paced at {pace:g} MB/s": asyncio.run(_upload(port, node, total // 4, pace * 1e6))}
    finally:
        holder.terminate()
        holder.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=512, help="bytes moved per reader, MiB (512)")
    parser.add_argument("--pace", type=float, default=35.0,
                        help="MB/s of the paced runs: a blocks answer, the uploads in flight together (35); "
                             "a quarter of --mib is sent")
    args = parser.parse_args()
    total = args.mib * (1 << 20) // BLOCK * BLOCK
    report = Report("receive")
    print(f"{total >> 20} MiB in {BLOCK >> 10} KiB blocks over loopback; load average {os.getloadavg()[0]:.2f}")
    for use_tls, pace in ((False, None), (True, None), (True, args.pace)):
        link = ("TLS 1.3" if use_tls else "plain") + (f" paced at {pace:g} MB/s" if pace else "")
        for name, (rate, receiver, sender) in measure(total // 4 if pace else total, use_tls,
                                                      pace * 1e6 if pace else None).items():
            print(f"{link:8} {name:18}: {rate:6.0f} MB/s; CPU s/GiB: receiver {receiver:.2f}, sender {sender:.2f}")
            report.add(f"{link} {name}: receiver CPU per GiB", receiver, "s")
            report.add(f"{link} {name}: sender CPU per GiB", sender, "s")
    for name, (rate, server, client) in uploads(total, args.pace).items():
        print(f"TLS 1.3  uploads {name:20}: {rate:6.0f} MB/s; CPU s/GiB: holder {server:.2f}, sender {client:.2f}")
        report.add(f"TLS 1.3 uploads {name}: holder CPU per GiB", server, "s")
        report.add(f"TLS 1.3 uploads {name}: sender CPU per GiB", client, "s")
    report.write()


if __name__ == "__main__":
    main()
