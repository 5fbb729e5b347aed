"""Helpers for compute tests: the wasm fixtures and small HTTP wrappers around a node."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import wasmtime

from xsc import codec
from xsc.compute import provenance, sandbox
from xsc.compute.web_on_loop import ON_LOOP_BODY
from xsc.compute.modules import ModuleInfo
from xsc.ledger.core import merkle
from xsc.node.appkeys import NODE

from .waiting import eventually_async


WASM = Path(__file__).resolve().parents[2] / "fixtures" / "wasm"


def signed_under_the_first_rule(identity, bodies: list[bytes]) -> list[dict]:
    """Canonical records signed as a batch under the first batch rule: the tree's top without the count, under
    provenance.OLD_BATCH_TAG (what a node's store may still hold; nothing signs so now)."""
    top, (_, proofs) = merkle.unsized_root(bodies), merkle.tree(bodies)
    signature = identity.sign(provenance.OLD_BATCH_TAG + top).hex()
    return [{"batch": {"count": len(bodies), "index": i, "proof": [p.hex() for p in proof], "root": top.hex(),
                       "signature": signature}, "record": codec.loads(body)} for i, (body, proof) in
            enumerate(zip(bodies, proofs))]


def placed(signed: dict, index: int, count: int) -> dict:
    """The signed record claiming another place in its batch (its proof and signature as they are)."""
    return {**signed, "batch": {**signed["batch"], "index": index, "count": count}}


def prepared_wasi(engine, name: str):
    """The fixture `name` (a WASI module) ready to run in the sandbox on `engine`, as the node prepares it."""
    module = wasmtime.Module.from_file(engine, str(WASM / f"{name}.wasm"))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    info = ModuleInfo(name, 0, [], ["wasi_snapshot_preview1.fd_write (func)"], provenance.timestamp(time.time_ns()),
                      start=False)
    return sandbox.Prepared(name.encode(), module, info, linker.instantiate_pre(module))


def wasm(name: str) -> bytes:
    return (WASM / f"{name}.wasm").read_bytes()


def module_id(name: str) -> str:
    return hashlib.sha256(wasm(name)).hexdigest()


async def deploy(client, name: str, *, wasi: bool = False) -> str:
    response = await client.post("/v1/modules", data=wasm(name), params={"wasi": "true"} if wasi else None)
    body = await response.json()
    assert response.status in (200, 201), body
    return body["id"]


async def invoke(client, module: str, function: str, *args, **options) -> tuple[int, dict]:
    response = await client.post("/v1/compute/invoke",
                                 json={"module": module, "function": function, "args": list(args), **options})
    return response.status, await response.json()


async def call(client, name: str, function: str, *args, **options) -> dict:
    """Deploy a fixture and invoke it; the call must succeed."""
    status, body = await invoke(client, await deploy(client, name, wasi=options.get("wasi", False)), function,
                                *args, **options)
    assert status == 200, body
    return body


def values(body: dict) -> list:
    return [r["value"] for r in body["results"]]


async def peer_with_provider(gateway, provider) -> None:
    """The gateway adds the provider as a peer and waits until its market book holds the provider's offer."""
    await gateway.app[NODE].peers.add(provider.app[NODE].peers.url)

    async def offered():
        await gateway.app[NODE].market.fill_book()
        return gateway.app[NODE].market.book.get(provider.app[NODE].peers.identity.id)

    await eventually_async(offered, "the provider's offer in the gateway's book", 30)


def answering(provider, monkeypatch, change) -> None:
    """The provider answers each call on a tab as `change` makes its honest answer (a provider that lies)."""
    paid = provider.app[NODE].paid
    run_on_tab = paid._run_on_tab

    async def lying(*args, **kwargs):
        return change(await run_on_tab(*args, **kwargs))

    monkeypatch.setattr(paid, "_run_on_tab", lying)


async def call_at_once(url: Callable[[int], str], held: Callable[[], int], callers: int = 8,
                       each: int = 40) -> tuple[list[int], list[tuple[int, int]]]:
    """`callers` clients calling a web function `each` times one after another (GET url(n)): every answer's status,
    and after each answer (what `held` says is held, the requests still in flight)."""
    in_flight, samples, statuses = 0, [], []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=callers)) as session:
        async def caller() -> None:
            nonlocal in_flight
            for n in range(each):
                in_flight += 1
                async with session.get(url(n)) as response:
                    await response.read()
                    statuses.append(response.status)
                in_flight -= 1
                samples.append((held(), in_flight))

        await asyncio.gather(*(caller() for _ in range(callers)))
    return statuses, samples


async def invoke_at_once(client, module: str, held: Callable[[], int], *, callers: int = 8, each: int = 25,
                         fuel: int) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """`callers` calling add(1, 2) `each` times one after another while what `held` says is held is sampled at every
    turn of the loop and after each answer: every answer's status, its charge, and the samples (held, calls in
    flight)."""
    in_flight, samples, statuses, charges = 0, [], [], []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            samples.append((held(), in_flight))
            await asyncio.sleep(0)

    async def caller() -> None:
        nonlocal in_flight
        for _ in range(each):
            in_flight += 1
            status, body = await invoke(client, module, "add", 1, 2, fuel=fuel)
            in_flight -= 1
            statuses.append(status)
            charges.append(body.get("charge", 0))
            samples.append((held(), in_flight))

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(caller() for _ in range(callers)))
    done.set()
    await watcher
    return statuses, charges, samples


async def head_before_its_body(web_listen: str, path: str, length: int) -> bytes:
    """The head a web listener (HOST:PORT) answers a POST to `path` declaring a body of `length` bytes, before a byte
    of that body is sent (a body refused for its length is refused unread)."""
    host, port = web_listen.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def request_in_flight(node, host: str, port: int):
    """A request to a web function kept in flight meanwhile (its head sent, its body once the block ends): a node's
    web request is then never alone, so that a node with a web runner tries it there (compute/web_on_loop.py).  Its
    function, `held`, serves the cgi fixture; the request's declared body is too long for a try, so it is never
    tried (it runs on a worker once its body has come)."""
    response = await node.post("/v1/compute/functions", json={"name": "held", "module": await deploy(node, "cgi",
                                                                                                   wasi=True)})
    assert response.status == 201, await response.json()
    reader, writer = await asyncio.open_connection(host, port)

    async def held() -> int:
        listed = await (await node.get("/v1/compute/functions")).json()
        return next(f["in_flight"] for f in listed["functions"] if f["name"] == "held")

    async def ended() -> bool:
        return await held() == 0

    try:
        writer.write(f"POST /fn/held/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: {ON_LOOP_BODY + 1}\r\n\r\n"
                     .encode())
        await writer.drain()
        await eventually_async(held, "the held request's admission")
        yield
        writer.write(b"x" * (ON_LOOP_BODY + 1))
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    await eventually_async(ended, "the held request's end")


def compiler_processes(parent: int) -> list[int]:
    """The pids of the peer-module compiler processes (compute/compiler.py) that process `parent` started and that
    have not ended (a zombie has)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and b"xsc.compute.compiler" in command:
            found.append(int(entry))
    return found


def fake_caps(n: int) -> list[str]:
    """`n` capabilities well formed and of no file: a map's inputs that are recorded, never read."""
    import base64

    key = base64.b32encode(bytes(32)).decode().lower().rstrip("=")
    return [f"xsc:chk:{key}:{base64.b32encode(i.to_bytes(32, 'big')).decode().lower().rstrip('=')}:4:2:6"
            for i in range(n)]
