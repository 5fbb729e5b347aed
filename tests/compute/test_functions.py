"""Web functions (compute/functions.py) on a real node: served WAGI style on their own listener, to anyone; hostile
callers refused one by one while others are served; every request charged to the owner, no more than its cap."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import logging
import os
import shutil
from typing import Any

import aiohttp
import pytest

from tests.support.compute import call_at_once, deploy, head_before_its_body
from tests.support.disks import tmpfs
from tests.support.nodes import close_node, free_port, serve
from tests.support.waiting import eventually_async
from xsc import keys
from xsc.compute import functions, provenance, web_output
from xsc.compute.web_on_loop import ON_LOOP_BODY
from xsc.ledger import price_budget
from xsc.node import CLIENT_IDENTITY
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


@pytest.fixture
async def web(node_factory):
    """A node serving functions on a listener of their own: (the node, the functions' base URL)."""
    return await _web_node(node_factory, 50)


@pytest.fixture
async def strict_web(node_factory):
    """As `web`, its callers held to 5 requests a second (bursts of 10): a burst of 150 is limited however slowly
    a loaded machine sends it, unless it takes 28 s."""
    return await _web_node(node_factory, 5)


async def _web_node(node_factory, rate: float):
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": rate})
    return node, f"http://127.0.0.1:{port}"


async def _serve(node, **function) -> dict:
    response = await node.post("/v1/compute/functions", json=function)
    answer = await response.json()
    assert response.status == 201, answer
    return answer


async def _get(url: str, method: str = "GET", **kwargs) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kwargs) as response:
            return response.status, response.headers.copy(), await response.read()


async def test_a_function_answers_a_request_wagi_style_with_its_headers_and_its_body(web) -> None:
    node, base = web
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="hello", module=module)
    status, headers, body = await _get(f"{base}/fn/hello/world?x=1", headers={"X-Caller": "me"})
    assert status == 200 and headers["X-Hello"] == "yes" and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for line in ("REQUEST_METHOD=GET", "PATH_INFO=/world", "QUERY_STRING=x=1", "HTTP_X_CALLER=me"):
        assert line in text.splitlines(), text
    big = os.urandom(10 * 1024 * 1024)
    status, _, body = await _get(f"{base}/fn/hello/upload", "POST", data=big)
    assert status == 200 and body.endswith(big) and f"CONTENT_LENGTH={len(big)}" in body[:4096].decode("latin-1")
    # One request after another (their runs' pipes used again by the worker that ran them): each its own answer.
    for n in range(4):
        text = (await _get(f"{base}/fn/hello/next-{n}"))[2].decode()
        assert f"PATH_INFO=/next-{n}" in text.splitlines() and text.count("\nPATH_INFO=") == 1, text
    # The user API is not on this origin, and a function is not on the user API's; what is no function's path is a
    # 404 problem, whatever the method.
    for path, method in (("/v1/node/status", "GET"), ("/", "GET"), ("/fn/", "POST"), ("/fnx/hello/", "DELETE")):
        status, headers, body = await _get(f"{base}{path}", method)
        assert status == 404 and headers["Content-Type"].startswith("application/problem+json"), (path, body)
        assert json.loads(body)["code"] == "not-found", path


async def test_a_stored_site_is_served_with_ranges(web) -> None:
    node, base = web
    page, image = b"<html><img src=image.png></html>", os.urandom(5 * 1024 * 1024)
    caps = []
    for data in (page, image):
        response = await node.post("/v1/store/files", data=data)
        caps.append((await response.json())["capability"])
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="site", module=module, entrypoint="files",
                 inputs=[f"{caps[0]}:/in/index.html", f"{caps[1]}:/in/image.png"])
    assert (await _get(f"{base}/fn/site/index.html"))[2] == page
    status, headers, body = await _get(f"{base}/fn/site/image.png")  # streamed as its function writes it
    assert body == image and headers["Content-Length"] == str(len(image)) and "Transfer-Encoding" not in headers
    status, headers, body = await _get(f"{base}/fn/site/image.png", headers={"Range": "bytes=100-199"})
    assert status == 206 and body == image[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(image)}"
    status, _, _ = await _get(f"{base}/fn/site/missing.png")
    assert status == 404
    # A HEAD is told the file's length (its answer waits for the run's end, as a range's does), with no body; a 200
    # says ranges may be asked for, as a browser's media player and a download manager look for.
    status, headers, body = await _get(f"{base}/fn/site/image.png", "HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(image)), headers
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, _ = await _get(f"{base}/fn/site/index.html")
    assert headers["Accept-Ranges"] == "bytes" and headers["Content-Length"] == str(len(page))
    # A file's answer carries a validator (fixtures/wasm/cgi.wat makes it of the tag the node gives each mounted
    # file): a browser's revalidation is 304 with no body, a resumed download's If-Range its rest.
    etag = headers["ETag"]
    assert etag == f'"{_mount_tag(caps[0])}"', etag
    status, headers, body = await _get(f"{base}/fn/site/index.html", headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and headers["ETag"] == etag
    status, _, body = await _get(f"{base}/fn/site/index.html", headers={"Range": "bytes=6-", "If-Range": etag})
    assert status == 206 and body == page[6:]
    # Served again, its files staged again: the same tag, so a cache's copy is still good, and a strong one.
    await _serve(node, name="site", module=module, entrypoint="files", env={"AGAIN": "1"},
                 inputs=[f"{caps[0]}:/in/index.html", f"{caps[1]}:/in/image.png"])
    status, headers, body = await _get(f"{base}/fn/site/index.html", headers={"If-None-Match": etag})
    assert status == 304 and headers["ETag"] == etag
    assert (await _get(f"{base}/fn/site/index.html", headers={"If-Match": etag}))[2] == page
    assert (await _get(f"{base}/fn/site/image.png", "HEAD"))[1]["ETag"] == f'"{_mount_tag(caps[1])}"'


async def test_a_stored_sites_root_is_its_index_and_its_stylesheet_and_script_have_their_types(web) -> None:
    # The README's static site: a browser asks for /fn/NAME/ first, and applies a stylesheet (or runs a script) only
    # if it is served as one, never as application/octet-stream.
    node, base = web
    files = {"index.html": b"<link rel=stylesheet href=style.css><script src=app.js></script>",
             "style.css": b"h1{color:red}", "app.js": b"1", "logo.png": b"\x89PNG", "data.bin": b"\x00"}
    inputs = []
    for name, data in files.items():
        response = await node.post("/v1/store/files", data=data)
        inputs.append(f"{(await response.json())['capability']}:/in/{name}")
    await _serve(node, name="site", module=await deploy(node, "cgi", wasi=True), entrypoint="files", inputs=inputs)
    status, headers, body = await _get(f"{base}/fn/site/")
    assert (status, headers["Content-Type"], body) == (200, "text/html", files["index.html"])
    for name, kind in (("index.html", "text/html"), ("style.css", "text/css"), ("app.js", "text/javascript"),
                       ("logo.png", "image/png"), ("data.bin", "application/octet-stream")):
        status, headers, body = await _get(f"{base}/fn/site/{name}")
        assert (status, headers["Content-Type"], body) == (200, kind, files[name]), name
    # A directory there is none of has no index: 404, as a file there is none of.
    assert (await _get(f"{base}/fn/site/docs/"))[0] == 404


def _mount_tag(cap: str) -> str:
    """The tag a node gives a stored file a function mounts: SHA-256 over a tag, its key and its manifest hash."""
    key, manifest_hash = (base64.b32decode(part.upper() + "=" * (-len(part) % 8)) for part in cap.split(":")[2:4])
    return hashlib.sha256(b"xsc:mount-tag:v1:" + key + manifest_hash).hexdigest()


async def test_an_answer_is_sent_while_its_function_runs_and_cut_short_if_the_run_then_fails(web) -> None:
    node, base = web
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="trickle", module=module, entrypoint="trickle", limits={"timeout": 1.0})

    def trickle() -> dict:
        return next(f for f in node.app[NODE].functions.functions() if f["name"] == "trickle")

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/fn/trickle/") as response:
            assert response.status == 200 and response.headers["Content-Type"] == "text/plain"
            assert await response.content.readexactly(6) == b"first\n"
            assert trickle()["in_flight"] == 1  # its first line came while it still runs
            with pytest.raises(aiohttp.ClientPayloadError):  # its deadline: the body is cut, never taken as whole
                await response.read()
    counted = await eventually_async(lambda: trickle()["requests"] == 1 and trickle(), "the run to be counted")
    assert counted["errors"] == 1 and counted["in_flight"] == 0 and counted["spend"] > 0  # recorded and charged
    # A caller that hangs up once the answer has started: the run goes on to its end, and is charged all the same.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/fn/trickle/") as response:
            assert await response.content.readexactly(6) == b"first\n"
            response.close()
    again = await eventually_async(lambda: trickle()["requests"] == 2 and trickle(), "the second run to be counted")
    assert again["in_flight"] == 0 and again["spend"] > counted["spend"]  # its run charged too


async def test_a_304_or_412_decided_from_a_running_functions_head_is_answered_as_its_run_ends(web) -> None:
    """An answer's head read while its run goes on decides a 304 (`If-None-Match: *`) or a 412 (an `If-Match` its
    answer, with no ETag, cannot hold).  Neither has a body to send before the run ends: a run that then fails (here its
    deadline) is answered its failure, 504, and its record says the same trap; none is answered 304 or 412."""
    node, base = web
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="stale", module=module, entrypoint="trickle", limits={"timeout": 1.0})

    def records() -> list[dict]:
        return [r["record"] for r in node.app[NODE].compute.provenance_records.recent(10)
                if r["record"].get("job", {}).get("function") == "stale"]

    for condition in ({"If-None-Match": "*"}, {"If-Match": '"v1"'}):
        status, headers, body = await _get(f"{base}/fn/stale/", headers=condition)
        assert status == 504 and json.loads(body)["code"] == "function-timeout", (condition, status, body[:200])
    found = await eventually_async(lambda: len(records()) == 2 and records(), "both runs to be recorded")
    assert [r["trap"]["kind"] for r in found] == ["deadline", "deadline"], found


async def test_a_function_at_its_caps_still_redirects_a_get_of_its_path_without_the_slash(web) -> None:
    # A redirect runs nothing: a browser sent to /fn/NAME while the function runs its most at once, or has spent its
    # hour, is sent on to /fn/NAME/, which is what is refused.
    node, base = web
    cgi, spin = await deploy(node, "cgi", wasi=True), await deploy(node, "spin", wasi=True)
    await _serve(node, name="loop", module=spin, limits={"timeout": 1.0}, concurrency=1)
    await _serve(node, name="spent", module=cgi, spend_cap=0)
    looping = asyncio.ensure_future(_get(f"{base}/fn/loop/"))
    await eventually_async(lambda: any(f["name"] == "loop" and f["in_flight"] == 1
                                       for f in node.app[NODE].functions.functions()), "the loop to run")
    for name, refused in (("loop", 503), ("spent", 402)):
        for method in ("GET", "HEAD"):
            status, headers, _ = await _get(f"{base}/fn/{name}?x=1", method, allow_redirects=False)
            assert status == 301 and headers["Location"] == f"/fn/{name}/?x=1", (name, method, status, headers)
        assert (await _get(f"{base}/fn/{name}/"))[0] == refused, name
    assert (await looping)[0] == 504


async def test_a_function_served_with_a_spend_cap_of_0_says_so_and_how_its_owner_raises_it(web) -> None:
    node, base = web  # a cap of 0 is never anything but spent: its callers are not told to come back within the hour
    await _serve(node, name="free", module=await deploy(node, "cgi", wasi=True), spend_cap=0)
    status, headers, body = await _get(f"{base}/fn/free/")
    problem = json.loads(body)
    assert (status, problem["code"]) == (402, "spend-cap-reached"), (status, body)
    assert problem["detail"] == ("this function's owner lets it spend nothing (its spend cap is 0 micro-credits an "
                                 "hour): it serves no request"), problem
    assert problem["hint"] == "its owner raises the cap by serving it again: xsc compute serve free MODULE --spend-cap " \
        "MICROCREDITS", problem


async def test_hostile_callers_are_refused_while_others_are_served(strict_web) -> None:
    node, base = strict_web
    cgi, spin = await deploy(node, "cgi", wasi=True), await deploy(node, "spin", wasi=True)
    await _serve(node, name="hello", module=cgi, max_body=1024)
    await _serve(node, name="loop", module=spin, limits={"timeout": 1.0}, concurrency=1)
    await _serve(node, name="cookie", module=cgi, entrypoint="cookie")
    looping = asyncio.ensure_future(_get(f"{base}/fn/loop/"))
    await eventually_async(lambda: any(f["name"] == "loop" and f["in_flight"] == 1
                                       for f in node.app[NODE].functions.functions()), "the loop to run")
    status, headers, body = await _get(f"{base}/fn/loop/")  # past its concurrency (1)
    assert status == 503 and headers["Content-Type"].startswith("application/problem+json"), body
    assert json.loads(body)["detail"] == "the function runs 1 request already, its most at once", body
    assert (await _get(f"{base}/fn/hello/meanwhile"))[0] == 200  # served while the loop runs
    status, headers, body = await looping
    assert status == 504 and headers["Content-Type"].startswith("application/problem+json")
    assert b"deadline" in body  # stopped by its deadline (an epoch interrupt), not by the end of its fuel
    problem = json.loads(body)  # its limit named, with its value and what raises it
    assert (problem["limit"], problem["limit_value"], problem["raised_by"]) == (
        "timeout", 1.0, "xsc compute serve --timeout"), problem

    def stopped() -> list[dict]:  # its record is written once it was answered
        return [r["record"] for r in node.app[NODE].compute.provenance_records.recent(50)
                if r["record"].get("job", {}).get("function") == "loop"]

    await eventually_async(lambda: stopped(), "the stopped run to be recorded")
    assert [r["trap"]["kind"] for r in stopped()] == ["deadline"]
    status, _, body = await _get(f"{base}/fn/hello/", "POST", data=b"x" * 2048)
    assert status == 413 and b"Traceback" not in body
    assert (json.loads(body)["limit"], json.loads(body)["limit_value"]) == ("max_body", 1024)  # declared: refused unread
    status, headers, body = await _get(f"{base}/fn/cookie/")
    assert status == 200 and body == b"ok\n" and headers["X-Kept"] == "yes"
    assert "Set-Cookie" not in headers and headers.get("Connection") != "close"
    # One address past its rate is 429 (and past the function's concurrency, 503); another is still served.
    answers = await asyncio.gather(*(_get(f"{base}/fn/hello/") for _ in range(150)))
    statuses = [a[0] for a in answers]
    assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429, 503}
    assert all(a[1]["Content-Type"].startswith("application/problem+json") for a in answers if a[0] != 200)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as other:
        async with other.get(f"{base}/fn/hello/") as response:  # from 127.0.0.2
            assert response.status == 200


async def test_a_function_served_without_a_module_is_told_a_function_needs_one(web) -> None:
    node, _ = web
    response = await node.post("/v1/compute/functions", json={"name": "site"})
    problem = await response.json()
    assert (response.status, problem["code"]) == (400, "invalid-argument"), problem
    assert problem["detail"] == "a web function needs a module id (field 'module')", problem


async def test_a_caller_hanging_up_mid_body_is_one_info_line_and_the_next_is_served(web, caplog) -> None:
    node, base = web
    await _serve(node, name="hello", module=await deploy(node, "cgi", wasi=True))
    caplog.set_level(logging.INFO)
    port = int(base.rsplit(":", 1)[1])
    for _ in range(3):  # a body declared whole, a part of it sent, then the connection closed
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /fn/hello/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 300_000)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    await eventually_async(lambda: sum("client disconnected during POST" in r.getMessage()
                                       for r in caplog.records) == 3, "the node to log the three hang-ups")
    assert (await _get(f"{base}/fn/hello/after"))[0] == 200

    async def chunks():  # no declared length: read past the cap before it is refused
        for _ in range(3):
            yield b"x" * 1024 * 1024
    await _serve(node, name="small", module=await deploy(node, "cgi", wasi=True), max_body=1024 * 1024)
    status, headers, body = await _get(f"{base}/fn/small/", "POST", data=chunks())
    assert status == 413 and headers["Content-Type"].startswith("application/problem+json"), body
    problem = json.loads(body)  # the limit named, its value and the flag its owner raises it with
    assert (problem["limit"], problem["limit_value"]) == ("max_body", 1024 * 1024), problem
    assert problem["raised_by"] == "xsc compute serve --max-body" and "--max-body" in problem["hint"], problem
    said = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert said == [], [r.getMessage() for r in said]
    assert list(node.app[NODE].functions.work_dir.glob("stdin-*")) == []  # the bodies' files removed


async def test_an_answer_past_its_cap_is_refused_until_its_head_is_sent_and_cut_off_after(web, monkeypatch) -> None:
    """An answer that goes over its cap before any of it is sent is refused whole (502); one that goes over once its
    head is out (streamed while its run goes on) cannot take back its status: its body is cut short, never ends
    whole-looking.  Either way its run is recorded and paid.  Which of the two happens is decided here by what the
    function writes, not by the clock: an answer streams once STREAM_BYTES of it are read (the STREAM_AFTER seconds
    that also start it are set out of reach, so a loaded machine cannot start one early)."""
    node, base = web
    monkeypatch.setattr(functions, "STREAM_AFTER", 3600.0)
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="echo", module=module)
    url = f"{base}/fn/echo/"
    monkeypatch.setattr(functions, "MAX_RESPONSE", 64 * 1024)  # below STREAM_BYTES: over before it may stream
    status, _, body = await _get(url, "POST", data=os.urandom(200 * 1024))
    assert status == 502 and b"went over its cap" in body  # the echo of its body is more than it may answer
    # An echo longer than its pipe holds: read by the loop while it runs, and refused at the cap.
    status, _, body = await _get(url, "POST", data=os.urandom(web_output.PIPE_BYTES * 2))
    assert status == 502 and b"went over its cap" in body
    # A cap far past STREAM_BYTES, and an echo past it and past its pipe (its run waits for the loop to read it):
    # its head goes out once STREAM_BYTES are read, long before the cap.
    monkeypatch.setattr(functions, "MAX_RESPONSE", web_output.PIPE_BYTES * 2)
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=os.urandom(web_output.PIPE_BYTES * 4)) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    status, _, body = await _get(url, "POST", data=b"small")
    assert status == 200 and body.endswith(b"small")

    def runs() -> list[dict]:
        return [r["record"] for r in node.app[NODE].compute.provenance_records.recent(10)
                if r["record"].get("job", {}).get("function") == "echo"]

    await eventually_async(lambda: len(runs()) == 4, "the four runs to be recorded")
    assert all(r["charge"] > 0 for r in runs())  # the refused runs are recorded and paid too


async def test_a_run_whose_answer_is_refused_is_signed_as_the_trap_its_caller_was_told(web, monkeypatch) -> None:
    """An answer refused for the fuel its bytes cost, or for its cap, by a run that had not trapped: its signed record
    says so (`"outcome": "trap"`, the kind and the message its caller's 502 gave), never "ok", and still verifies;
    `compute provenance` (its HTTP route) shows it."""
    node, base = web
    module = await deploy(node, "cgi", wasi=True)
    # Its stdin (paid before it runs) and its run fit its fuel; the bytes of its answer, as many again, do not.
    await _serve(node, name="thrifty", module=module, entrypoint="raw", limits={"fuel": 600_000})
    await _serve(node, name="wordy", module=module, entrypoint="raw")
    body = b"Content-Type: text/plain\n\n" + b"x" * 100_000
    status, _, problem = await _get(f"{base}/fn/thrifty/", "POST", data=body, headers={"Range": "bytes=0-"})
    assert status == 502 and b"more than its fuel limit has left" in problem, problem[:300]
    monkeypatch.setattr(functions, "MAX_RESPONSE", 64 * 1024)
    status, _, problem = await _get(f"{base}/fn/wordy/", "POST", data=body, headers={"Range": "bytes=0-"})
    assert status == 502 and b"its stdout went over its cap" in problem, problem[:300]

    def runs() -> dict[str, str]:
        return {r["record"]["job"]["function"]: r["record"]["id"]
                for r in node.app[NODE].compute.provenance_records.recent(10) if "job" in r["record"]}

    found = await eventually_async(lambda: len(runs()) == 2 and runs(), "both runs to be recorded")
    for name, kind, said in (("thrifty", "out-of-fuel", "more than its fuel limit has left"),
                             ("wordy", "output-limit", "its stdout went over its cap")):
        signed = await (await node.get(f"/v1/compute/provenance/{found[name]}")).json()
        record = provenance.check(signed, stored=True)
        assert record["outcome"] == "trap" and "results" not in record, record
        assert record["trap"]["kind"] == kind and said in record["trap"]["message"], record["trap"]
        assert record["charge"] > 0, record


def _bodies_held_open(monkeypatch) -> list:
    """Each request body written to a file for a worker's run is held open from then on (the handles, to close)."""
    held, body_to = [], functions._body_to

    async def kept_open(*args, **kwargs):
        path, size = await body_to(*args, **kwargs)
        if path is not None:
            held.append(open(path, "rb"))  # closed by the test, later than the node answers
        return path, size

    monkeypatch.setattr(functions, "_body_to", kept_open)
    return held


async def test_the_nodes_own_functions_bodies_and_answers_are_written_only_while_its_disk_has_room(
        web, monkeypatch) -> None:
    """A function the node serves itself answers strangers too: its files, bodies and answers are written only while
    the disk keeps its margin free, as a placed function's are (507, a problem body; what was written removed)."""
    node, base = web
    served_here = node.app[NODE].functions
    monkeypatch.setattr(served_here.room, "margin", 1 << 20)
    module = await deploy(node, "cgi", wasi=True)
    shutil.rmtree(served_here.work_dir, ignore_errors=True)
    with tmpfs(served_here.work_dir, "8m"):
        key = base64.b32encode(bytes(32)).decode().lower().rstrip("=")
        too_big = f"xsc:chk:{key}:{key}:4:2:{10 << 20}:/in/page"  # refused by its size: never read, never stored
        response = await node.post("/v1/compute/functions", json={"name": "site", "module": module,
                                                                   "entrypoint": "files", "inputs": [too_big]})
        problem = await response.json()
        assert (response.status, problem["code"]) == (507, "storage-full") and "mounts" in problem["detail"], problem
        assert not list(served_here.work_dir.glob("in-*"))
        await _serve(node, name="raw", module=module, entrypoint="raw")
        # a body declared larger than the room: refused before a byte of it is read
        head = await head_before_its_body(node.app[NODE].config.node.web_listen, "/fn/raw/", 10 << 20)
        assert head.startswith(b"HTTP/1.1 507 ") and b"application/problem+json" in head, head
        # A body that fits (5 MiB), answered as it is: its answer finds room for a MiB or two, then none.  Its room
        # comes back with the answer, though a handle on it outlives the run (wasmtime's on a run's stdin may, on a
        # busy machine): held open here until the end.
        held = _bodies_held_open(monkeypatch)
        body = b"Content-Type: application/octet-stream\n\n" + b"x" * (5 << 20)
        status, _, problem = await _get(f"{base}/fn/raw/", "POST", data=body, headers={"Range": "bytes=0-"})
        assert status == 507 and json.loads(problem)["code"] == "storage-full", problem[:300]
        assert "answer" in json.loads(problem)["detail"], problem
        assert len(held) == 1
        left = [(path.name, path.stat().st_size) for path in served_here.work_dir.rglob("*")]
        assert shutil.disk_usage(served_here.work_dir).free > 7 << 20, left  # its files removed
        assert (await _get(f"{base}/fn/raw/", "POST", data=b"Content-Type: text/plain\n\nfits"))[::2] == (200, b"fits")
        for handle in held:
            handle.close()


async def test_an_answer_over_its_cap_before_its_head_is_sent_is_never_streamed(monkeypatch, tmp_path) -> None:
    """Once what a run wrote is past its cap and nothing of its answer is sent, the answer waits for the run's end
    (refused whole, 502) however long the run goes on: never a head sent for an answer already refused."""
    monkeypatch.setattr(functions, "STREAM_AFTER", 0.0)  # streamed as soon as its head is read, if at all
    monkeypatch.setattr(functions, "FOLLOW_AFTER", 0.0)
    loop = asyncio.get_running_loop()
    stdout = web_output.Spill(tmp_path, loop, 64)
    stdout.take([b"Content-Type: text/plain\n\nfirst\n", b"x" * 64])
    assert stdout.over
    run = loop.create_future()  # the run goes on (its next write fails)
    deciding = asyncio.ensure_future(functions._head_while_running(stdout, run))
    for _ in range(10):  # turns of the loop, past the one its head would be streamed in
        await asyncio.sleep(0)
    assert not deciding.done()
    run.set_result(None)
    assert await deciding is None


@pytest.mark.parametrize("where", ["on the loop", "on a worker"])
async def test_a_node_out_of_file_descriptors_answers_503_and_serves_the_next_request(web, monkeypatch,
                                                                                      where) -> None:
    node, base = web
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="hello", module=module)
    # A body too long for a run on the loop goes to a worker, whose pipes the node cannot make; a short one runs
    # on the loop, whose in-memory files it cannot make (the node's first run on the loop makes them).
    body = os.urandom(ON_LOOP_BODY + 1) if where == "on a worker" else b"short"
    module_of, name = (web_output, "pipe_held") if where == "on a worker" else (os, "memfd_create")
    making = getattr(module_of, name)

    def exhausted(*args) -> tuple[int, int]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    services = node.app[NODE]
    owner = node.app[CLIENT_IDENTITY].public_key
    await eventually_async(lambda: services.ledger.held(owner) == 0, "nothing held for the owner")
    monkeypatch.setattr(module_of, name, exhausted)
    status, headers, answer = await _get(f"{base}/fn/hello/", "POST", data=body)
    assert status == 503 and headers["Content-Type"].startswith("application/problem+json")
    assert b"file descriptor" in answer and b"Traceback" not in answer
    assert services.ledger.held(owner) == 0  # the request's budget is given back
    monkeypatch.setattr(module_of, name, making)
    assert (await _get(f"{base}/fn/hello/", "POST", data=body))[0] == 200
    assert next(f for f in node.app[NODE].functions.functions() if f["name"] == "hello")["in_flight"] == 0


async def test_the_owner_pays_exactly_what_its_requests_cost_and_no_more_than_its_cap(node_factory) -> None:
    port = free_port()
    # Settled when this test flushes, not each second: however long a busy machine takes over the requests.
    node = await node_factory("paying", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": 100_000},
                              ledger={"tab_interval": 3600})
    base = f"http://127.0.0.1:{port}"
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="hello", module=module)
    services = node.app[NODE]
    await services.tabs.flush()
    owner = node.app[CLIENT_IDENTITY].public_key
    before = services.ledger.store.state(owner)
    compiled = dict(services.compute.registry.stats)
    requests, at_once = 1000, 8  # the function's concurrency: none is refused
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=at_once)) as session:
        async def one(n: int) -> int:
            async with session.get(f"{base}/fn/hello/{n}?n={n}") as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(n) for n in range(requests)))
    assert statuses == [200] * requests
    assert services.compute.registry.stats == compiled  # each request instantiated the prepared module: none compiled

    def recorded() -> list[dict]:  # a caller is answered before its run's record is written
        return [r["record"] for r in services.compute.provenance_records.recent(2 * requests)
                if r["record"].get("job", {}).get("function") == "hello"]

    runs = await eventually_async(lambda: len(recorded()) == requests and recorded(), "every run to be recorded")
    assert len(runs) == requests and len({r["job"]["request"] for r in runs}) == requests
    charged = sum(r["charge"] for r in runs)

    async def paid() -> bool:  # the owner's tab with its node: the runs settled in aggregate
        await services.tabs.flush()
        return before.balance - services.ledger.store.state(owner).balance == charged > 0

    await eventually_async(paid, "the owner to have paid for every run")
    after = services.ledger.store.state(owner)
    assert 1 <= after.seq - before.seq < 10  # a transfer per settlement, not one per request
    listed = {f["name"]: f for f in (await (await node.get("/v1/compute/functions")).json())["functions"]}
    assert listed["hello"]["spend"] == charged and listed["hello"]["requests"] == requests


async def test_callers_answered_before_their_records_are_written_hold_only_what_their_runs_cost(node_factory) -> None:
    # Ten budgets of credit, eight callers at a time: were each answered run's whole budget held until its record
    # is written (after the answer), a backlog of them would refuse callers (402) on a busy machine.
    fuel, memory, timeout, rate = 2_000_000, 16 * 2**20, 2, 40
    budget = price_budget(fuel, rate, memory, timeout * 1_000_000, 10)
    port = free_port()
    node = await node_factory("held", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": 100_000},
                              ledger={"credit_limit": 10 * budget}, market={"compute_bid": rate})
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="hello", module=module, limits={"fuel": fuel, "memory": memory, "timeout": timeout})
    services = node.app[NODE]
    ledger, payer = services.ledger, node.app[CLIENT_IDENTITY].public_key
    statuses, samples = await call_at_once(lambda n: f"http://127.0.0.1:{port}/fn/hello/{n}",
                                           lambda: ledger.held(payer))
    assert set(statuses) == {200}, sorted(set(statuses))
    def recorded() -> list[dict]:
        return [r["record"] for r in services.compute.provenance_records.recent(1000)
                if r["record"].get("job", {}).get("function") == "hello"]

    runs = await eventually_async(lambda: len(recorded()) == len(statuses) and recorded(), "every run to be recorded")
    metered = sum(r["charge"] for r in runs)
    assert metered < budget  # far below the limit: only holds could have refused a caller
    worst = max(held - flying * budget for held, flying in samples)
    assert worst <= metered, f"held credit exceeded the budgets in flight by {worst} (all metered: {metered})"


async def test_past_its_hourly_cap_a_function_answers_402_even_after_a_restart(make_config) -> None:
    port = free_port()
    config = make_config("capped", **QUIET, node={"web_listen": f"127.0.0.1:{port}"})
    url = f"http://127.0.0.1:{port}/fn/capped/"

    async def spent(node) -> int:
        return {f["name"]: f for f in (await (await node.get("/v1/compute/functions")).json())["functions"]}[
            "capped"]["spent_this_hour"]

    node = await serve(config)
    try:
        module = await deploy(node, "cgi", wasi=True)
        await _serve(node, name="capped", module=module)
        assert (await _get(url))[0] == 200
        charge = await spent(node)
        # Served again with a cap just over what the first request cost (a request's charge counts its wall time, so
        # two cost the same only on a quiet machine): its hour keeps the first, so one more is served.
        await _serve(node, name="capped", module=module, spend_cap=charge + 1)
        assert [(await _get(url))[0] for _ in range(3)] == [200, 402, 402]
        total = await spent(node)
        assert total > charge
    finally:
        await close_node(node)
    node = await serve(config)
    try:
        status, headers, body = await _get(url)
        assert status == 402 and headers["Content-Type"].startswith("application/problem+json"), body
        assert await spent(node) == total  # nothing more charged
        [listed] = (await (await node.get("/v1/compute/functions")).json())["functions"]
        assert listed["spend"] == total, listed  # spent in all: at least the hour it kept, not 0 again
    finally:
        await close_node(node)


async def test_a_function_served_for_hours_keeps_an_hours_spend(node_factory, monkeypatch) -> None:
    """What a function spent is kept by the minute, in memory and with its runs' records (`c/s/`), for its hourly
    cap: anyone calling it once a minute would add one of each for as long as it is served.  A new minute drops
    those past the hour, in memory and on disk."""
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": 1000})
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="busy", module=module)
    minute = [functions._minute()]
    monkeypatch.setattr(functions, "_minute", lambda: minute[0])
    for _ in range(3 * functions.HOUR_MINUTES):  # three hours of callers, one a minute
        minute[0] += 1
        assert (await _get(f"http://127.0.0.1:{port}/fn/busy/"))[0] == 200
    await node.app[NODE].compute.journal.flush()
    with node.app[NODE].db.iterator(prefix=keys.function_spends("busy")) as it:
        kept = [int.from_bytes(value, "big") for _, value in it]
    assert len(kept) == functions.HOUR_MINUTES
    listed = (await (await node.get("/v1/compute/functions")).json())["functions"][0]
    assert listed["spent_this_hour"] == sum(kept) and listed["spend"] > sum(kept)


async def test_a_function_on_the_market_paid_for_hours_keeps_an_hours_receipts(node_factory, monkeypatch) -> None:
    """What receipts for a function's requests on the market paid is kept by the minute, one row a receipt (`c/v/`,
    written with its payment); a new minute drops those past the hour, in memory and on disk."""
    node = await node_factory("owner", **QUIET, market={"offer_compute": False})
    module = await deploy(node, "cgi", wasi=True)
    await _serve(node, name="far", module=module, on_market=True, spend_cap=10**9)
    web, db = node.app[NODE].functions, node.app[NODE].db
    minute = [functions._minute()]
    monkeypatch.setattr(functions, "_minute", lambda: minute[0])
    for n in range(3 * functions.HOUR_MINUTES):  # three hours of tabs, one paid a minute
        minute[0] += 1
        tab = n.to_bytes(32, "big")
        with db.write_batch(sync=True) as batch:  # as the payment's own batch writes them
            for key, value in web.paying("far", tab, 5).items():
                batch.put(key, value)
        await web.paid_for("far", tab, 5)
    with db.iterator(prefix=keys.function_paids("far")) as it:
        kept = [int.from_bytes(value, "big") for _, value in it]
    assert kept == [5] * functions.HOUR_MINUTES
    listed = (await (await node.get("/v1/compute/functions")).json())["functions"][0]
    assert listed["spent_this_hour"] == sum(kept) and listed["spend"] == 5 * 3 * functions.HOUR_MINUTES


def test_serve_functions_and_unserve_from_the_cli(cli_node) -> None:
    import json
    import urllib.error
    import urllib.request

    from tests.support.compute import WASM

    port = free_port()
    node = cli_node("cli", node={"web_listen": f"127.0.0.1:{port}"})
    done = node.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--env", "GREETING=hi", "--timeout", "2")
    url = f"http://127.0.0.1:{port}/fn/hello/"
    assert done.returncode == 0 and done.stdout.decode() == f"serving hello at {url}\n", done.stderr
    with urllib.request.urlopen(url + "x") as response:
        assert "GREETING=hi" in response.read().decode().splitlines()
    listed = json.loads(node.xsc("compute", "functions", "--json").stdout)["functions"]
    assert [(f["name"], f["requests"], f["url"]) for f in listed] == [("hello", 1, url)]
    assert "hello" in node.xsc("compute", "functions").stdout.decode()
    # Names with odd characters: refused, and never taken for another function's.
    for odd in ("hello\n", "hello?x", "hello/x", "../hello", "Hello"):
        refused = node.xsc("compute", "serve", odd, str(WASM / "cgi.wasm"))
        assert refused.returncode != 0 and len(refused.stderr.decode().strip().splitlines()) == 1, odd
        gone = node.xsc("compute", "unserve", odd)
        assert gone.returncode != 0 and len(gone.stderr.decode().strip().splitlines()) == 1, odd
    listed = json.loads(node.xsc("compute", "functions", "--json").stdout)["functions"]
    assert [f["name"] for f in listed] == ["hello"]
    assert node.xsc("compute", "unserve", "hello").returncode == 0
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/fn/hello/x")
        raise AssertionError("an unserved function answered")
    except urllib.error.HTTPError as err:
        assert err.code == 404 and json.loads(err.read())["code"] == "not-found"
    gone = node.xsc("compute", "unserve", "hello")
    assert gone.returncode != 0 and len(gone.stderr.decode().strip().splitlines()) == 1


def test_serve_takes_its_body_cap_as_a_size_as_every_size_flag_does(cli_node) -> None:
    """--max-body takes 64KiB as --memory takes 16MiB (and bytes, as before); a bad size or one past what a function
    may take is one line naming it; the HTTP API takes the size's text too, and refuses what is no size."""
    import json
    import urllib.error
    import urllib.request

    from tests.support.cli import error_line
    from tests.support.compute import WASM

    port = free_port()
    node = cli_node("body-cap", node={"web_listen": f"127.0.0.1:{port}"})
    assert node.xsc("compute", "serve", "small", str(WASM / "cgi.wasm"), "--max-body", "1KiB").returncode == 0
    assert node.xsc("compute", "serve", "bytes", str(WASM / "cgi.wasm"), "--max-body", "100").returncode == 0
    listed = json.loads(node.xsc("compute", "functions", "--json").stdout)["functions"]
    assert {f["name"]: f["max_body"] for f in listed} == {"small": 1024, "bytes": 100}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/fn/small/", data=b"x" * 1025, method="POST")
    try:
        urllib.request.urlopen(request)
        raise AssertionError("a body past its cap was taken")
    except urllib.error.HTTPError as err:
        problem = json.loads(err.read())
        assert err.code == 413 and (problem["limit"], problem["limit_value"]) == ("max_body", 1024), problem
        assert problem["hint"].endswith("xsc compute serve --max-body SIZE"), problem
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/fn/small/", data=b"x" * 1024)) as ok:
        assert ok.status == 200
    assert error_line(node.xsc("compute", "serve", "big", str(WASM / "cgi.wasm"), "--max-body", "2GiB")) == \
        "xsc: error: max_body 2.0 GiB is more than a function may take (1.0 GiB) (ask for at most 1.0 GiB)"
    assert "xsc: error: max_body: not a size: '10XB'" in error_line(node.xsc("compute", "serve", "big",
                                                                             str(WASM / "cgi.wasm"), "--max-body", "10XB"))


async def test_a_functions_body_cap_is_bytes_or_a_size_and_nothing_else(web) -> None:
    """max_body in the API: bytes or a size's text (what `serve --max-body` sends), at most 1 GiB; what is no size
    (true, a float, a negative number, a word, a list) is refused before the function is served."""
    node, _ = web
    module = await deploy(node, "cgi", wasi=True)
    for bad in (True, -1, 1.5, "many", [1], "2GiB"):
        refused = await node.post("/v1/compute/functions", json={"name": "odd", "module": module, "max_body": bad})
        problem = await refused.json()
        assert refused.status == 400 and problem["code"] in ("invalid-argument", "limit-too-high"), (bad, problem)
    assert (await _serve(node, name="text", module=module, max_body="2KiB"))["max_body"] == 2048
    listed = (await (await node.get("/v1/compute/functions")).json())["functions"]
    assert [(f["name"], f["max_body"]) for f in listed] == [("text", 2048)]


async def test_a_mounted_file_that_cannot_be_read_is_refused_naming_its_input(web) -> None:
    """Of the files a function mounts, the one whose capability says another size or manifest, or whose file is
    gone, is the one `serve`'s refusal names (as a job's names its input), and nothing is served."""
    node, base = web
    caps = []
    for data in (b"first\n", b"second\n", b"soon removed\n"):
        caps.append((await (await node.post("/v1/store/files", data=data)).json())["capability"])
    assert (await node.delete(f"/v1/store/files/{caps[2]}")).status == 200
    key, digest, k, m, size = caps[1].split(":")[2:]
    module = await deploy(node, "cgi", wasi=True)
    for lie in (":".join(["xsc", "chk", key, digest, k, m, str(int(size) + 1)]),
                ":".join(["xsc", "chk", key, caps[0].split(":")[3], k, m, size]), caps[2]):
        refused = await node.post("/v1/compute/functions", json={
            "name": "site", "module": module, "entrypoint": "files", "inputs": [f"{caps[0]}:/in/a", f"{lie}:/in/b"]})
        problem = await refused.json()
        # (its status is the store's for that capability: a get of it answers the same)
        assert refused.status >= 400 and problem["detail"].startswith("input /in/b cannot be read: "), problem
        assert "/in/a" not in problem["detail"], problem
    assert (await (await node.get("/v1/compute/functions")).json())["functions"] == []
    assert (await _get(f"{base}/fn/site/a"))[0] == 404


def test_a_function_served_by_a_node_without_a_web_listener_says_how_to_give_it_one(cli_node) -> None:
    import json

    from tests.support.compute import WASM

    node = cli_node("no-web")
    done = node.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines() == [
        "xsc: warning: this node has no web listener, so no one can call it yet (give it one: "
        "xsc config set node.web_listen 127.0.0.1:7080, then restart the node)"]
    listed = json.loads(node.xsc("compute", "functions", "--json").stdout)["functions"]
    assert [(f["name"], f["url"]) for f in listed] == [("hello", None)]
    # given one, and not restarted yet: the command that fixes it is the restart, not the setting again
    assert node.xsc("config", "set", "node.web_listen", "127.0.0.1:7080").returncode == 0
    done = node.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"))
    assert done.returncode == 0 and done.stderr.decode().splitlines() == [
        "xsc: warning: this node has no web listener, so no one can call it yet (node.web_listen is 127.0.0.1:7080 in "
        "its config.toml, used from its next start: restart the node)"], done.stderr


def test_the_functions_table_says_its_amounts_are_credits(cli_node) -> None:
    import json
    import urllib.request

    from tests.support.compute import WASM
    from xsc.units import format_credits

    port = free_port()
    node = cli_node("credits", node={"web_listen": f"127.0.0.1:{port}"})
    assert node.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--spend-cap", "2500000").returncode == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/fn/hello/") as response:
        response.read()
    [listed] = json.loads(node.xsc("compute", "functions", "--json").stdout)["functions"]
    assert listed["spend"] > 0 and listed["spend_cap"] == 2_500_000  # micro-credits, as --spend-cap takes them
    lines = node.xsc("compute", "functions", env={"COLUMNS": "80"}).stdout.decode().splitlines()
    assert lines[0].split()[-5:] == ["credits", "spent", "this", "hour", "cap/hour"], lines
    assert lines[1].split()[-3:] == [format_credits(listed["spend"]), format_credits(listed["spent_this_hour"]),
                                     "2.500000"], lines
    assert all(len(line) <= 80 for line in lines if not line.strip().startswith(("module", "served")))


def test_the_functions_table_fits_80_columns_with_a_name_as_long_as_names_go_whole(cli_node) -> None:
    """A function's name may be 63 characters: the table still fits 80 columns, each name whole (on a line under its
    row once the module and URL under theirs leave no room), and short names stay in their column."""
    from tests.support.compute import WASM

    node = cli_node("long-names", node={"web_listen": f"127.0.0.1:{free_port()}"})
    long = "a" + "-123456789" * 6 + "-x"
    assert len(long) == 63
    for name in ("hello", "site"):
        assert node.xsc("compute", "serve", name, str(WASM / "cgi.wasm")).returncode == 0
    lines = node.xsc("compute", "functions", env={"COLUMNS": "80"}).stdout.decode().splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == ["name", "hello", "site"], lines
    assert node.xsc("compute", "serve", long, str(WASM / "cgi.wasm")).returncode == 0
    lines = node.xsc("compute", "functions", env={"COLUMNS": "80"}).stdout.decode().splitlines()
    # (a URL is whole too: the long name's, 94 characters, on a line of its own beside its label)
    assert all(len(line) <= 80 or line.strip() == f"served at http://{node.config.node.web_listen}/fn/{long}/"
               for line in lines), lines
    under = [item.strip() for line in lines for item in line.split(",")]
    assert {f"name {name}" for name in (long, "hello", "site")} <= set(under), lines
    assert node.xsc("compute", "unserve", long).returncode == 0  # the name as the table gave it


def test_a_function_on_the_market_no_provider_can_serve_says_why_in_the_owners_list(cli_node) -> None:
    import json

    from tests.support.compute import WASM
    from tests.support.waiting import eventually

    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    owner = cli_node("owner", **quiet, market={"offer_compute": False}, node={"placement_interval": 0.25})
    provider = cli_node("provider", **quiet)  # offers compute, but has no web listener to serve functions at
    assert owner.xsc("peers", "add", provider.url).returncode == 0
    served = owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market")
    # served (it is placed once a provider can take it), and told at once that none can now
    assert served.returncode == 0 and served.stderr.decode().startswith(
        "xsc: warning: no provider with a web listener (node.web_listen) offers compute on the market now"), served

    def unplaced() -> str | None:
        [listed] = json.loads(owner.xsc("compute", "functions", "--json").stdout)["functions"]
        return listed.get("not_placed")

    why = eventually(unplaced, "the owner's list to say why it is not placed", 30)
    # the provider is never asked (it could not serve it): the market offers no provider with a web listener
    assert "its need of a provider with a web listener (node.web_listen)" in why and "refused" not in why, why
    table = " ".join(owner.xsc("compute", "functions", env={"COLUMNS": "80"}).stdout.decode().split())
    assert f"(not placed: {why})" in table, table
