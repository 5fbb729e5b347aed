"""Verify and repair asked for their progress (`Accept: application/x-ndjson`): a line as the walk over the file's
blocks goes, each share's outcome, then the answer a JSON call gets; a failure once the lines began is their last
line; a client gone mid-way leaves the repair to finish."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from xsc.node.appkeys import NODE
from xsc.storage import Capability
from xsc.storage.core import layout
from xsc.storage.gateway_repair import Tally

from tests.support.waiting import eventually_async

SEG = 4096
NDJSON = {"Accept": "application/x-ndjson"}


@pytest.fixture
async def store_node(node_factory):
    return await node_factory(storage={"segment_size": SEG, "capacity": 4 * 1024 * 1024})


async def _put(client, data: bytes) -> str:
    resp = await client.post("/v1/store/files", data=data, params={"name": "f"},
                             headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["capability"]


async def _lines(client, cap: str, action: str) -> list[dict]:
    resp = await client.post(f"/v1/store/files/{cap}/{action}", headers=NDJSON)
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson", await resp.text()
    return [json.loads(line) for line in (await resp.read()).splitlines()]


def _drop(client, cap: str, shares: list[int]) -> None:
    for share in shares:
        assert client.app[NODE].gateway.store.delete_share(Capability.parse(cap).storage_index, share)


async def test_verify_tells_its_progress_then_answers_as_a_json_call_does(store_node) -> None:
    segments = 3 * Tally.STEPS  # more blocks than a stage tells of: told every few
    cap = await _put(store_node, os.urandom(segments * SEG - 100))
    _drop(store_node, cap, [4])
    lines = await _lines(store_node, cap, "verify")
    progress, last = [line["progress"] for line in lines[:-1]], lines[-1]
    assert all(p["stage"] == "verify" and p["total"] == 6 * segments for p in progress)
    done = [p["done"] for p in progress]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 6 * segments
    assert len(progress) <= Tally.STEPS + 1 + 6
    assert [(p["share"], p["status"]) for p in progress if "share" in p] == [
        (0, "ok"), (1, "ok"), (2, "ok"), (3, "ok"), (4, "missing"), (5, "ok")]
    plain = await (await store_node.post(f"/v1/store/files/{cap}/verify")).json()
    assert last == {"result": plain} and not plain["healthy"]


async def test_repair_tells_what_it_reads_then_what_it_rebuilds(store_node) -> None:
    cap = await _put(store_node, os.urandom(5 * SEG))
    _drop(store_node, cap, [0, 5])
    lines = await _lines(store_node, cap, "repair")
    stages = [line["progress"]["stage"] for line in lines[:-1]]
    assert stages[0] == "check" and stages[-1] == "rebuild" and sorted(stages) == stages
    rebuilt = [line["progress"] for line in lines[:-1] if line["progress"]["stage"] == "rebuild"]
    assert rebuilt[-1]["done"] == rebuilt[-1]["total"] == layout.segment_count(5 * SEG, SEG)
    assert lines[-1]["result"]["repaired"] == [0, 5] and lines[-1]["result"]["healthy"]


async def test_a_repair_that_fails_mid_way_ends_its_lines_with_the_problem(store_node) -> None:
    cap = await _put(store_node, os.urandom(3 * SEG))
    _drop(store_node, cap, [0, 1, 2])
    lines = await _lines(store_node, cap, "repair")
    assert "progress" in lines[0] and all("progress" in line for line in lines[:-1])
    problem = lines[-1]["problem"]
    assert problem["status"] == 503 and problem["code"] == "not-enough-shares", problem
    assert "nothing was changed" in problem["detail"] and problem["missing_shares"] == [0, 1, 2]

    async def counted() -> bool:  # its HTTP status went out as 200 with the first line: it is counted by its problem
        text = await (await store_node.get("/metrics")).text()
        return 'xsc_http_requests_total{method="POST",status="503"} 1.0' in text and \
            'xsc_http_errors_total{status="503"} 1.0' in text
    await eventually_async(counted, "the repair counted as the 503 it ended with")
    text = await (await store_node.get("/metrics")).text()
    assert 'xsc_http_requests_total{method="POST",status="200"}' not in text


async def test_a_failure_before_any_line_is_answered_as_a_problem(store_node) -> None:
    unknown = Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10)
    for action in ("verify", "repair"):
        resp = await store_node.post(f"/v1/store/files/{unknown}/{action}", headers=NDJSON)
        assert resp.status == 404 and resp.content_type == "application/problem+json", await resp.text()


async def test_a_repair_whose_client_went_away_goes_on_to_its_end(store_node, monkeypatch) -> None:
    cap = await _put(store_node, os.urandom(3 * SEG + 5))
    _drop(store_node, cap, [0])
    storage, publisher = store_node.app[NODE].storage, store_node.app[NODE].gateway.publisher
    writing, go_on = asyncio.Event(), asyncio.Event()
    publish = publisher.publish

    async def held_up(*args, **kwargs):  # the rebuilt share written, not yet published
        writing.set()
        await go_on.wait()
        return await publish(*args, **kwargs)

    monkeypatch.setattr(publisher, "publish", held_up)
    resp = await store_node.post(f"/v1/store/files/{cap}/repair", headers=NDJSON)
    assert "progress" in json.loads(await resp.content.readline())
    await writing.wait()
    resp.close()  # the client goes away mid-repair
    go_on.set()
    si = Capability.parse(cap).storage_index
    await eventually_async(lambda: not storage.repairing(si), "the repair finished")
    check = await (await store_node.get(f"/v1/store/files/{cap}/check")).json()
    assert check["healthy"] and store_node.app[NODE].gateway.store.shares_held == 6, (check, store_node.app[NODE].gateway.store.shares_held)
