"""Web runners (xsc/compute/web_runners.py, web_runner.py): child processes that run the tries of small web
requests.  A runner killed with kill -9 loses no request and is replaced; a request alone on the node is tried on
the loop, one beside another in the runner; a spinning function's try comes back from it and the request runs on
a worker until its deadline while others are served; a runner that sends more than a runner may is dropped; a
runner that is sent more than a node sends ends; a kill -9 of the node takes its runner with it; and a node whose
address space is limited (ulimit -v) has runners with an unpooled engine, which serve its functions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import select
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest

from tests.support.compute import deploy, request_in_flight, wasm
from tests.support.peers import api, http
from tests.support.nodes import free_port, kill_all
from tests.support.waiting import eventually, eventually_async
from xsc.compute import engine as eng
from xsc.compute import runner_wire as wire
from xsc.compute import web_runners
from xsc.compute.web_runners import RunnerLink
from xsc.config import load_config
from xsc.devnet import NodeProcess
from xsc.errors import ConfigError
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


@pytest.fixture
async def web(node_factory):
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": 100000},
                              compute={"web_runners": 1})
    on_loop = node.app[NODE].functions.on_loop
    cgi = await deploy(node, "cgi", wasi=True)
    response = await node.post("/v1/compute/functions", json={"name": "hello", "module": cgi, "concurrency": 64})
    assert response.status == 201, await response.json()
    await on_loop.runners.ready()
    return node, f"http://127.0.0.1:{port}", on_loop


async def _load(session: aiohttp.ClientSession, url: str, clients: int, each: int) -> list[int]:
    statuses: list[int] = []

    async def client() -> None:
        for _ in range(each):
            async with session.get(url) as response:
                await response.read()
                statuses.append(response.status)

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


async def test_a_runner_killed_mid_load_loses_no_request_and_is_replaced(web) -> None:
    node, base, on_loop = web
    first = await on_loop.runners.ready()
    async with aiohttp.ClientSession() as session:
        # Stopped, it holds the tries sent to it: they are in flight when it is killed.
        os.kill(first.pid, signal.SIGSTOP)
        held = asyncio.ensure_future(_load(session, f"{base}/fn/hello/", 8, 1))
        await eventually_async(lambda: first.in_flight >= 4, "tries waiting on the stopped runner")
        response = await node.get("/v1/node/status")
        assert (await response.json())["compute"]["running"] >= first.in_flight  # its tries count as running
        os.kill(first.pid, signal.SIGKILL)
        assert await held == [200] * 8
        assert on_loop.failed_over >= 4
        second = await on_loop.runners.ready()
        assert second.pid != first.pid and on_loop.runners.started == 2
        # Killed again while it answers a load: every request is answered 200, by a runner or a worker.
        before = on_loop.in_runner
        load = asyncio.ensure_future(_load(session, f"{base}/fn/hello/", 8, 40))
        await eventually_async(lambda: on_loop.in_runner >= before + 20 or load.done(), "the new runner's answers")
        os.kill(second.pid, signal.SIGKILL)
        assert await load == [200] * 320
        third = await on_loop.runners.ready()
        assert third.pid not in (first.pid, second.pid)
        status, body = await _get(session, f"{base}/fn/hello/there")
        assert status == 200 and b"PATH_INFO=/there" in body
    assert on_loop.runners.status()["ended"] == ["it ended", "it ended"]


async def test_a_request_alone_on_the_node_is_tried_on_the_loop_and_one_beside_another_in_the_runner(web):
    node, base, on_loop = web
    async with aiohttp.ClientSession() as session:
        status, body = await _get(session, f"{base}/fn/hello/")
        assert status == 200 and b"REQUEST_METHOD=GET" in body
        # Tried: kept, or thrown away because the busy machine kept the loop from the CPU past the try's deadline.
        assert _tries(on_loop) == 1 and on_loop.in_runner == 0  # no runner woken for it
        # The first request started the runner; on a busy machine it may not be up yet.
        link = await on_loop.runners.ready()
        async with request_in_flight(node, "127.0.0.1", _port(base)):
            status, body = await _get(session, f"{base}/fn/hello/")
            assert status == 200 and b"REQUEST_METHOD=GET" in body
            # Answered by the runner (`link.runs`), whether its try was kept or thrown away as kept from the CPU.
            assert _tries(on_loop) == 2 and link.runs == 1
        status, _ = await _get(session, f"{base}/fn/hello/")
        assert status == 200 and _tries(on_loop) == 3 and link.runs == 1  # alone again once it has gone


def _tries(on_loop) -> int:
    return on_loop.runs + on_loop.retried


async def test_a_spinning_try_comes_back_from_the_runner_and_runs_to_its_deadline_while_others_are_served(web):
    node, base, on_loop = web
    spin = await deploy(node, "spin", wasi=True)
    response = await node.post("/v1/compute/functions", json={"name": "spin", "module": spin,
                                                              "limits": {"timeout": 2}})
    assert response.status == 201
    link = await on_loop.runners.ready()
    async with aiohttp.ClientSession() as session, request_in_flight(node, "127.0.0.1", _port(base)):
        spinning = asyncio.ensure_future(_get(session, f"{base}/fn/spin/"))
        await eventually_async(lambda: on_loop.retried == 1, "the spinning try's answer from the runner")
        assert link.runs >= 1 and on_loop.status()["live"][0]["pid"] == link.pid
        served = await _load(session, f"{base}/fn/hello/", 4, 5)
        assert served == [200] * 20 and not spinning.done()  # answered while the spinning request still runs
        status, body = await spinning
        assert status == 504 and b"deadline" in body
        # (not `retried == 1`: on a busy machine a hello try kept from the CPU is tried again too)
        assert on_loop.failed_over == 0 and link.ended is None


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as response:
        return response.status, await response.read()


async def test_a_runner_answer_longer_than_a_runner_may_send_is_refused_and_its_tries_go_to_workers() -> None:
    ours, theirs = socket.socketpair()
    ended: list[RunnerLink] = []
    link = RunnerLink(ours, None, eng.fingerprint(), lambda _: None, ended.append)
    theirs.sendall(wire.frame(wire.READY, 0, eng.fingerprint()))
    await eventually_async(lambda: link.ready, "the runner's READY")
    answer = link.run(b"\1" * 32, lambda: b"module", b"run")
    # Only the head of an answer over MAX_ANSWER_FRAME is sent: the link refuses it before reading the rest.
    theirs.sendall(wire.HEAD.pack(wire.MAX_ANSWER_FRAME + 1, wire.KEPT, 1))
    assert await answer is None
    assert ended == [link] and "may not" in link.ended and f"{wire.MAX_ANSWER_FRAME + 1:,}" in link.ended
    theirs.close()


async def _fake_runner(patience: float = 30.0) -> tuple[RunnerLink, socket.socket, list[RunnerLink]]:
    """A link whose runner's end is the test's: what the node sends it is read from `theirs`."""
    ours, theirs = socket.socketpair()
    ended: list[RunnerLink] = []
    link = RunnerLink(ours, None, eng.fingerprint(), lambda _: None, ended.append, patience=patience)
    theirs.sendall(wire.frame(wire.READY, 0, eng.fingerprint()))
    await eventually_async(lambda: link.ready, "the runner's READY")
    return link, theirs, ended


def _frames(sock: socket.socket, count: int) -> list[tuple[int, int]]:
    """The kind and request id of the next `count` frames the node sent."""
    got, data = [], b""
    while len(got) < count:
        data += sock.recv(65536)
        while (found := wire.head(data, wire.MAX_MODULE_FRAME)) is not None and len(data) >= found[0]:
            got.append(found[1:])
            data = data[found[0]:]
    return got


async def test_a_runner_that_answers_nothing_while_tries_wait_is_dropped() -> None:
    link, theirs, ended = await _fake_runner(patience=0.2)
    answer = link.run(b"\1" * 32, lambda: b"module", b"run")
    assert await answer is None  # the event: the link's patience ran out, its try goes to a worker
    assert ended == [link] and "answered nothing" in link.ended
    theirs.close()


async def test_a_runner_answer_to_no_waiting_try_is_refused() -> None:
    link, theirs, ended = await _fake_runner()
    answer = link.run(b"\1" * 32, lambda: b"module", b"run")
    theirs.sendall(wire.frame(wire.UNKNOWN, 77, b""))
    assert await answer is None
    assert "request 77" in link.ended
    theirs.close()


async def test_a_module_the_runner_dropped_is_sent_again_with_its_next_try() -> None:
    link, theirs, ended = await _fake_runner()
    module = b"\2" * 32
    first = link.run(module, lambda: b"module", b"run")
    assert await asyncio.to_thread(_frames, theirs, 2) == [(wire.MODULE, 0), (wire.RUN, 1)]
    theirs.sendall(wire.frame(wire.UNKNOWN, 1, b""))
    assert await first == (wire.UNKNOWN, None)  # tried on the loop instead
    second = link.run(module, lambda: b"module", b"run")
    assert await asyncio.to_thread(_frames, theirs, 2) == [(wire.MODULE, 0), (wire.RUN, 2)]
    third = link.run(module, lambda: b"module", b"run")  # kept this time: not sent again
    assert await asyncio.to_thread(_frames, theirs, 1) == [(wire.RUN, 3)]
    theirs.sendall(wire.frame(wire.TOSSED, 2, wire.tossed_body("deadline", 5)) +
                   wire.frame(wire.TOSSED, 3, wire.tossed_body("", 6)))
    assert await second == (wire.TOSSED, ("deadline", 5)) and await third == (wire.TOSSED, ("", 6))
    assert not ended and link.runs == 3
    link.end("the test is over")
    theirs.close()


async def test_what_a_runner_was_sent_is_remembered_for_the_most_recently_run_modules_only(monkeypatch) -> None:
    """The modules served are whoever places a function here: the link remembers those it sent a runner for the
    MOST_MODULES most recently run; one run meanwhile stays sent, one forgotten is sent again with its next try."""
    monkeypatch.setattr(web_runners, "MOST_MODULES", 4)
    link, theirs, ended = await _fake_runner()
    modules = [bytes([n]) * 32 for n in range(10)]
    link.run(modules[0], lambda: b"module", b"run")
    frames = 2
    for module in modules[1:]:
        link.run(module, lambda: b"module", b"run")
        link.run(modules[0], lambda: b"module", b"run")  # in use all along: never sent again
        frames += 3
    sent = await asyncio.to_thread(_frames, theirs, frames)
    assert [kind for kind, _ in sent].count(wire.MODULE) == 10
    link.run(modules[1], lambda: b"module", b"run")  # long forgotten: sent again
    link.run(b"\xff" * 32, lambda: b"module", b"run")  # a new one (what follows is read whatever came before)
    assert [kind for kind, _ in await asyncio.to_thread(_frames, theirs, 3)][:3] == [wire.MODULE, wire.RUN, wire.MODULE]
    assert not ended
    link.end("the test is over")
    theirs.close()


async def test_a_runner_whose_engine_is_not_the_nodes_is_not_used() -> None:
    ours, theirs = socket.socketpair()
    ended: list[RunnerLink] = []
    link = RunnerLink(ours, None, eng.fingerprint(), lambda _: None, ended.append)
    theirs.sendall(wire.frame(wire.READY, 0, b"\0" * 32))
    await eventually_async(lambda: ended, "the link's end")
    assert not link.ready and "settings" in link.ended
    theirs.close()


@pytest.mark.parametrize("kind,length", [(wire.RUN, wire.MAX_RUN_FRAME + 1), (wire.MODULE, wire.MAX_MODULE_FRAME + 1)])
def test_a_runner_sent_a_frame_longer_than_a_node_sends_ends(kind: int, length: int) -> None:
    ours, theirs = socket.socketpair()
    runner = subprocess.Popen([sys.executable, "-m", "xsc.compute.web_runner", str(theirs.fileno()), str(os.getpid())],
                              pass_fds=(theirs.fileno(),), stderr=subprocess.PIPE)
    theirs.close()
    try:
        ready = ours.recv(wire.HEAD.size + 32)
        assert ready[4] == wire.READY
        ours.sendall(wire.HEAD.pack(length, kind, 1))
        assert runner.wait(timeout=60) == 3
        assert f"{length:,} bytes, over the".encode() in runner.stderr.read()
    finally:
        runner.kill()
        runner.wait()
        runner.stderr.close()
        ours.close()


def test_a_kill_9_of_the_node_takes_its_runner_with_it(node_process) -> None:
    port = free_port()
    node = node_process("n", env={"XSC_NODE_WEB_LISTEN": f"127.0.0.1:{port}", "XSC_COMPUTE_WEB_RUNNERS": "1"})
    assert f"web functions at http://127.0.0.1:{port}/fn/NAME/" in node.log.read_text()  # where callers go
    status, body = http(node.url, "POST", "/v1/modules?wasi=true", wasm("cgi"), {"Authorization": f"Bearer {node.token}"})
    assert status in (200, 201), body
    status, body = api(node, "POST", "/v1/compute/functions", {"name": "hello", "module": body["id"]})
    assert status == 201, body

    def runner_pid() -> int | None:
        assert http(f"http://127.0.0.1:{port}", "GET", "/fn/hello/")[0] == 200
        live = api(node, "GET", "/v1/node/status")[1]["web_tries"]["live"]
        return next((r["pid"] for r in live if r["ready"]), None)

    pid = eventually(runner_pid, "a ready runner")
    gone = os.pidfd_open(pid)
    try:
        node.kill()  # kill -9
        readable, _, _ = select.select([gone], [], [], 60)  # a deadline against a hang: the event is its exit
        assert readable == [gone]
    finally:
        os.close(gone)


# The command after it run with its address space limited (`ulimit -v`), as a host's limits may start a node.
LIMITED = "import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({0}, {0})); os.execvp(sys.argv[1], sys.argv[1:])"


def test_a_node_whose_address_space_is_too_small_for_a_runners_pool_serves_from_unpooled_runners(tmp_path) -> None:
    """Under a limit that leaves room for the node and for an instance or two, but not for the slots of a pooled
    engine (eng.POOL_SLOTS of eng.POOL_MEMORY reserved up front), its runners make an unpooled engine, say so once
    each, and serve; and the node runs the calls it tries on its loop in its own engine, and says so once."""
    limit = eng.POOL_SLOTS * eng.POOL_MEMORY * 3 // 4
    port = free_port()
    node = NodeProcess(tmp_path / "n", env={"XSC_NODE_WEB_LISTEN": f"127.0.0.1:{port}", "XSC_COMPUTE_WEB_RUNNERS": "1"},
                       prefix=[sys.executable, "-c", LIMITED.format(limit)])
    try:
        node.start()
        status, body = http(node.url, "POST", "/v1/modules?wasi=true", wasm("cgi"),
                            {"Authorization": f"Bearer {node.token}"})
        assert status in (200, 201), body
        status, body = api(node, "POST", "/v1/compute/functions", {"name": "hello", "module": body["id"]})
        assert status == 201, body
        base = f"http://127.0.0.1:{port}"

        def ready_runner() -> dict | None:
            assert http(base, "GET", "/fn/hello/")[0] == 200  # the first request starts the runner
            assert "panicked" not in node.log.read_text()  # wasmtime aborts a process whose pool it cannot map
            tries = api(node, "GET", "/v1/node/status")[1]["web_tries"]
            return next((runner for runner in tries["live"] if runner["ready"]), None)

        runner = eventually(ready_runner, "a ready runner")

        def served_by_the_runner() -> bool:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:  # beside one another: tried in the runner
                assert set(pool.map(lambda _: http(base, "GET", "/fn/hello/")[0], range(8))) == {200}
            return api(node, "GET", "/v1/node/status")[1]["web_tries"]["in_runner"] > 0

        eventually(served_by_the_runner, "a request answered by the runner")
        tries = api(node, "GET", "/v1/node/status")[1]["web_tries"]
        assert tries["started"] == 1 and tries["ended"] == [] and tries["live"][0]["pid"] == runner["pid"]
        log = node.log.read_text()
        assert log.count("unpooled engine") == 1 and "panicked" not in log
        assert log.count("the calls tried on the event loop run in the node's engine: ") == 1  # the node's own
        assert f"web runner {runner['pid']}: an unpooled engine: " in log  # in the node's log, said to be the runner's
    finally:
        kill_all([node])


def test_web_runners_is_set_from_the_environment_and_bounded(tmp_path) -> None:
    assert load_config(tmp_path, environ={"XSC_COMPUTE_WEB_RUNNERS": "0"}).compute.web_runners == 0
    assert load_config(tmp_path, environ={"XSC_COMPUTE_WEB_RUNNERS": "2"}).compute.web_runners == 2
    for bad in ("-1", "65", "many"):
        with pytest.raises(ConfigError, match="web_runners"):
            load_config(tmp_path, environ={"XSC_COMPUTE_WEB_RUNNERS": bad})


def test_the_wire_carries_a_try_and_its_answer_whole_and_refuses_what_is_cut_short() -> None:
    run = wire.RunFrame(b"\7" * 32, 100_000, 1 << 20, 5.0, 2, 64, "_start", ["mod", "a=b"],
                        [("PATH_INFO", "/x=y"), ("EMPTY", "")], b"body")
    assert wire.read_run(wire.run_body(run)) == run
    kept = wire.KeptFrame(12, 3, 4, 5, None, [-7, 1.5], b"Status: 200\n\nhi", b"")
    assert wire.read_kept(wire.kept_body(kept)) == kept
    assert wire.read_tossed(wire.tossed_body("deadline", 9)) == ("deadline", 9)
    # an item holding a NUL is not sent (tried on the loop instead)
    assert wire.run_body(wire.RunFrame(b"\7" * 32, 1, 1, 1.0, 1, 0, "_start", ["m"], [("A", "x\0y")], b"")) is None
    body = wire.run_body(run)
    for cut in (10, len(body) - 1):
        with pytest.raises(wire.WireError):
            wire.read_run(body[:cut])
    with pytest.raises(wire.WireError, match="over the"):
        wire.head(wire.HEAD.pack(wire.MAX_ANSWER_FRAME + 1, wire.KEPT, 1), wire.MAX_ANSWER_FRAME)
