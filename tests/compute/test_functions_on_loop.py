"""Small web requests tried in a web runner or on the event loop's thread (xsc/compute/web_on_loop.py): answered
as a worker would answer them, and sent to a worker whenever a try could block its thread, was cut short, or wrote
too much.  Each case runs with no runner (tried on the loop) and with one (the fixture waits until it is ready, and
keeps another request in flight meanwhile: a request alone on the node is tried on the loop even with a runner)."""

from __future__ import annotations

import contextlib
import os

import aiohttp
import pytest
import wasmtime

from tests.support.compute import deploy, request_in_flight
from tests.support.nodes import free_port
from xsc.compute import web_on_loop
from xsc.compute.wasi_io import OUTPUT_CAP
from xsc.compute.web_on_loop import ON_LOOP_BODY
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
HEAD = "Content-Type: text/plain\\n\\n"


@pytest.fixture(params=[0, 1], ids=["on-loop", "runner"])
async def web(node_factory, request, monkeypatch):
    # A try a busy machine keeps from the CPU until its deadline is thrown away and its request answered by a worker
    # (`retried`), as designed; here such tries never make an export count as slow, so each request is tried.
    monkeypatch.setattr(web_on_loop, "INLINE_PREEMPTED", 1 << 30)
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": 1000},
                              compute={"web_runners": request.param})
    on_loop = node.app[NODE].functions.on_loop
    async with contextlib.AsyncExitStack() as stack:
        if request.param:
            await on_loop.runners.ready()
            # with another request in flight, none is alone: each is tried in the runner
            await stack.enter_async_context(request_in_flight(node, "127.0.0.1", port))
        yield node, f"http://127.0.0.1:{port}", on_loop
    # every try answered was answered where the case says
    assert on_loop.in_runner == (on_loop.runs if request.param else 0)


async def _serve(node, **function) -> None:
    response = await node.post("/v1/compute/functions", json=function)
    assert response.status == 201, await response.json()


async def _upload(node, wat: str) -> str:
    response = await node.post("/v1/modules", data=wasmtime.wat2wasm(wat), params={"wasi": "true"})
    body = await response.json()
    assert response.status in (200, 201), body
    return body["id"]


def _tries(on_loop) -> int:
    """Requests tried (in the runner or on the loop): answered from the try, or from a worker's run when a busy
    machine kept the try from the CPU."""
    return on_loop.runs + on_loop.retried


async def _ask(url: str, method: str = "GET", data=None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, data=data) as response:
            return response.status, await response.read()


async def _chunked(data: bytes):
    """A body of no declared length (sent chunked)."""
    for at in range(0, len(data), 4096):
        yield data[at:at + 4096]


def _writer(extra_imports: str = "", pieces: int = 1, fd: int = 1) -> str:
    """A WASI program that answers a CGI head, then writes `pieces` times its 64 KiB page past the head to `fd`."""
    return f"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  {extra_imports}
  (memory (export "memory") 2)
  (data (i32.const 0) "{HEAD}")
  (func (export "_start") (local $n i32)
    (i32.store (i32.const 65536) (i32.const 0))
    (i32.store (i32.const 65540) (i32.const {len(HEAD) - 2}))
    (drop (call $fd_write (i32.const 1) (i32.const 65536) (i32.const 1) (i32.const 65552)))
    (i32.store (i32.const 65544) (i32.const 1024))
    (i32.store (i32.const 65548) (i32.const 64512))
    (block $done (loop $more
      (br_if $done (i32.ge_u (local.get $n) (i32.const {pieces})))
      (drop (call $fd_write (i32.const {fd}) (i32.const 65544) (i32.const 1) (i32.const 65552)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $more)))))
"""


async def test_small_requests_run_on_the_loop_and_answer_as_a_worker_would(web) -> None:
    node, base, on_loop = web
    cgi = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="hello", module=cgi)
    await _serve(node, name="tight", module=cgi, max_body=100)
    small = os.urandom(ON_LOOP_BODY)
    status, body = await _ask(f"{base}/fn/hello/there?x=1")
    assert status == 200 and {"PATH_INFO=/there", "QUERY_STRING=x=1"} <= set(body.decode().splitlines())
    status, body = await _ask(f"{base}/fn/hello/", "POST", small)
    assert status == 200 and body.endswith(small) and f"CONTENT_LENGTH={len(small)}" in body[:4096].decode("latin-1")
    status, body = await _ask(f"{base}/fn/hello/", "POST", _chunked(small))  # no declared length, short enough
    assert status == 200 and body.endswith(small)
    assert _tries(on_loop) == 3
    compute = node.app[NODE].compute  # tried on the loop: in the loop's pooled engine; else in the runner's own
    assert compute.loop_engine.engine is not compute.engine
    assert (compute.registry.prepared(bytes.fromhex(cgi)).loop_copy is not None) == (on_loop.runners is None)
    # A body of no declared length, too long for the loop: what was read for the try reaches the worker's run first.
    large = os.urandom(4 * ON_LOOP_BODY + 17)
    status, body = await _ask(f"{base}/fn/hello/", "POST", _chunked(large))
    assert status == 200 and body.endswith(large) and _tries(on_loop) == 3
    status, body = await _ask(f"{base}/fn/tight/", "POST", _chunked(b"x" * 101))  # over its max_body, undeclared
    assert status == 413 and b"Traceback" not in body and _tries(on_loop) == 3


async def test_a_module_that_may_sleep_is_never_run_on_the_loop(web) -> None:
    node, base, on_loop = web
    sleeper = await _upload(node, _writer('(import "wasi_snapshot_preview1" "poll_oneoff" '
                                          '(func $poll (param i32 i32 i32 i32) (result i32)))'))
    await _serve(node, name="sleeper", module=sleeper)
    status, body = await _ask(f"{base}/fn/sleeper/")
    assert status == 200 and len(body) == 64512
    assert on_loop.runs == 0 and on_loop.retried == 0


async def test_an_answer_too_long_for_the_loop_is_made_again_on_a_worker(web, monkeypatch) -> None:
    node, base, on_loop = web
    # A try kept from the CPU by a busy machine until its deadline is tried again (INLINE_PREEMPTED): here the first
    # try decides, whether it wrote too much or was kept from the CPU before it could.
    monkeypatch.setattr(web_on_loop, "INLINE_PREEMPTED", 1)
    module = await _upload(node, _writer(pieces=web_on_loop.ON_LOOP_ANSWER // 64512 + 2))
    await _serve(node, name="long", module=module)
    for asked in range(2):
        status, body = await _ask(f"{base}/fn/long/")
        assert status == 200 and len(body) == 64512 * (web_on_loop.ON_LOOP_ANSWER // 64512 + 2)
        assert on_loop.runs == 0 and on_loop.retried == 1  # tried once: its export is known to write too much


async def test_a_try_that_runs_out_of_its_time_goes_to_a_worker_and_is_not_tried_again(web, monkeypatch) -> None:
    node, base, on_loop = web
    monkeypatch.setattr(web_on_loop, "INLINE_PREEMPTED", 1)  # as above: a busy machine's first try decides too
    spin = await deploy(node, "spin", wasi=True)
    await _serve(node, name="loop", module=spin, limits={"timeout": 0.3})
    for asked in range(2):
        status, body = await _ask(f"{base}/fn/loop/")
        assert status == 504 and b"deadline" in body  # the worker's run, stopped by its own deadline
        assert on_loop.retried == 1 and on_loop.runs == 0


async def test_a_run_on_the_loop_whose_stderr_goes_over_its_cap_is_refused_as_on_a_worker(web) -> None:
    node, base, on_loop = web
    module = await _upload(node, _writer(pieces=OUTPUT_CAP // 64512 + 2, fd=2))
    await _serve(node, name="noisy", module=module)
    status, body = await _ask(f"{base}/fn/noisy/")
    assert status == 502 and b"stderr went over its cap" in body and b"Traceback" not in body
    assert _tries(on_loop) == 1


def test_the_judgements_of_tries_are_kept_for_the_most_recent_modules_only(monkeypatch) -> None:
    """The modules served are whoever places a function here: whether a module's calls may be tried is kept for the
    MOST_MODULES most recent (judged again, the same, if one forgotten comes back)."""
    from types import SimpleNamespace

    monkeypatch.setattr(web_on_loop, "MOST_MODULES", 8)
    runs = web_on_loop.LoopRuns(compute=None)

    def module(n: int, size: int = 100):
        return SimpleNamespace(module_hash=n.to_bytes(32, "big"), wasi_pre=object(),
                               info=SimpleNamespace(start=None, size=size), module=SimpleNamespace(imports=[]))

    assert not runs.may_try(module(0, size=1 << 40), "_start", False, 0)  # too large to try
    for n in range(1, 1000):
        assert runs.may_try(module(n), "_start", False, 0)
    assert runs.judged() == 8 and not runs.may_try(module(0, size=1 << 40), "_start", False, 0)
