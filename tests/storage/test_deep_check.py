"""Every file verified, or verified and repaired where damaged, in one run (`POST /v1/store/verify`, `.../repair`,
storage/deep_check.py): its lines say how many files and bytes are done and which file each line is about; a file
that cannot be repaired is reported and the run goes on; a file removed while the run goes is passed over; a client
that goes away leaves the files begun to finish and begins no more."""

from __future__ import annotations

import asyncio
import json
import os

from xsc.node.appkeys import NODE
from xsc.storage import Capability
from xsc.storage import deep_check
from xsc.storage.deep_check import VERIFIED_AT_ONCE

from tests.support.waiting import eventually_async

SEG = 4096
NDJSON = {"Accept": "application/x-ndjson"}


async def _store_node(node_factory):
    return await node_factory(storage={"segment_size": SEG, "capacity": 4 * 1024 * 1024})


async def _put(client, name: str, size: int = 3 * SEG) -> str:
    resp = await client.post("/v1/store/files", data=os.urandom(size), params={"name": name},
                             headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["capability"]


def _drop(client, cap: str, shares: list[int]) -> None:
    for share in shares:
        assert client.app[NODE].gateway.store.delete_share(Capability.parse(cap).storage_index, share)


async def _lines(client, action: str) -> list[dict]:
    resp = await client.post(f"/v1/store/{action}", headers=NDJSON)
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson", await resp.text()
    return [json.loads(line) for line in (await resp.read()).splitlines()]


async def test_verify_of_every_file_tells_files_and_bytes_done_then_each_files_state(node_factory) -> None:
    node = await _store_node(node_factory)
    caps = [await _put(node, f"f{i}", (i + 1) * SEG) for i in range(3)]
    _drop(node, caps[1], [4])
    lines = await _lines(node, "verify")
    progress, result = [line["progress"] for line in lines[:-1]], lines[-1]["result"]
    assert progress[0] == {"files_done": 0, "files_total": 3, "bytes_done": 0, "bytes_total": 6 * SEG}
    assert all(p["files_total"] == 3 and p["bytes_total"] == 6 * SEG for p in progress)
    done = [(p["files_done"], p["bytes_done"]) for p in progress]
    assert done == sorted(done) and done[-1] == (3, 6 * SEG)
    steps = [p for p in progress if "stage" in p]  # each file's own verify lines, named by the file they are about
    assert {p["file"] for p in steps} == set(caps) and all(p["stage"] == "verify" for p in steps)
    ended = {p["file"]: p["state"] for p in progress if "state" in p}
    assert ended == {caps[0]: "healthy", caps[1]: "damaged", caps[2]: "healthy"}
    assert {f["capability"]: (f["state"], f["intact"]) for f in result["files"]} == {
        caps[0]: ("healthy", 6), caps[1]: ("damaged", 5), caps[2]: ("healthy", 6)}
    assert not result["healthy"] and not result["stopped"]
    assert {f["capability"]: f.get("detail") for f in result["files"]} == {  # why it is damaged
        caps[0]: None, caps[1]: "share 4 missing", caps[2]: None}
    plain = await (await node.post("/v1/store/verify")).json()  # a JSON call: the same answer, once it is done
    assert plain == result


async def test_repair_of_every_file_mends_the_damaged_and_goes_on_past_one_it_cannot(node_factory) -> None:
    node = await _store_node(node_factory)
    caps = [await _put(node, f"f{i}") for i in range(3)]
    _drop(node, caps[0], [0, 1, 2])  # 3 of 6 left: fewer than the 4 a rebuild needs
    _drop(node, caps[1], [5])
    result = await (await node.post("/v1/store/repair")).json()
    outcome = {f["capability"]: f for f in result["files"]}
    assert outcome[caps[0]]["state"] == "not recoverable", outcome[caps[0]]
    assert outcome[caps[0]]["detail"].startswith("only 3 of 6 shares are intact"), outcome[caps[0]]
    assert outcome[caps[1]]["state"] == "repaired" and outcome[caps[1]]["repaired"] == [5], outcome[caps[1]]
    assert outcome[caps[2]]["state"] == "healthy" and "repaired" not in outcome[caps[2]]
    assert not result["healthy"]
    check = await (await node.get(f"/v1/store/files/{caps[1]}/check")).json()
    assert check["healthy"]


async def test_a_file_removed_while_the_run_goes_is_passed_over(node_factory, monkeypatch) -> None:
    node = await _store_node(node_factory)
    for i in range(4):
        await _put(node, f"f{i}")
    first, second, third, last = [f["capability"] for f in (await (await node.get("/v1/store/files")).json())["files"]]
    _drop(node, first, [3])
    storage = node.app[NODE].storage
    verify = storage.verify

    async def removing(cap, progress=None):
        if str(cap) == first:  # the last file is removed before its turn comes
            await storage.removals.remove(Capability.parse(last))
        if str(cap) == second:  # this one as its verify begins
            await storage.removals.remove(cap)
        return await verify(cap, progress)

    monkeypatch.setattr(deep_check, "VERIFIED_AT_ONCE", 1)  # one file after another: the last one's turn comes later
    monkeypatch.setattr(storage, "verify", removing)
    result = (await _lines(node, "repair"))[-1]["result"]
    assert [(f["capability"], f["state"]) for f in result["files"]] == [
        (first, "repaired"), (second, "removed"), (third, "healthy"), (last, "removed")], result
    assert result["healthy"], result


async def test_a_run_whose_client_went_away_finishes_the_files_begun_and_begins_no_more(node_factory,
                                                                                       monkeypatch) -> None:
    node = await _store_node(node_factory)
    for i in range(VERIFIED_AT_ONCE + 2):
        await _put(node, f"f{i}")
    listed = [f["capability"] for f in (await (await node.get("/v1/store/files")).json())["files"]]
    storage = node.app[NODE].storage
    begun, go_on, runs = [], asyncio.Event(), []
    verify, run_all = storage.verify, storage.deep_check

    async def held(cap, progress=None):
        begun.append(str(cap))
        await go_on.wait()
        return await verify(cap, progress)

    async def noted(repair, progress=None, going_on=lambda: True):
        run = {"going_on": going_on}
        runs.append(run)
        run["answer"] = await run_all(repair, progress, going_on)
        return run["answer"]

    monkeypatch.setattr(storage, "verify", held)
    monkeypatch.setattr(storage, "deep_check", noted)
    resp = await node.post("/v1/store/verify", headers=NDJSON)
    assert "progress" in json.loads(await resp.content.readline())
    await eventually_async(lambda: len(begun) == VERIFIED_AT_ONCE, "the first files begun")
    resp.close()  # the client goes away (a Ctrl-C of the CLI)
    await eventually_async(lambda: not runs[0]["going_on"](), "the node saw its client go")
    go_on.set()
    await eventually_async(lambda: "answer" in runs[0], "the run ended")
    answer = runs[0]["answer"]
    assert sorted(begun) == sorted(listed[:VERIFIED_AT_ONCE]) and answer["stopped"] and not answer["healthy"]
    assert [f["state"] for f in answer["files"]] == ["healthy"] * VERIFIED_AT_ONCE


async def test_a_second_run_asked_for_while_one_goes_is_refused_and_one_may_start_once_it_ended(node_factory,
                                                                                                monkeypatch) -> None:
    """The CLI's `verify --all` while the dashboard's Repair damaged goes: a 409 that says which run goes."""
    node = await _store_node(node_factory)
    await _put(node, "f0")
    storage = node.app[NODE].storage
    begun, go_on, verify = asyncio.Event(), asyncio.Event(), storage.verify

    async def held(cap, progress=None):
        if not begun.is_set():  # the first run's verify, held until the others were asked for
            begun.set()
            await go_on.wait()
        return await verify(cap, progress)

    monkeypatch.setattr(storage, "verify", held)
    first = asyncio.ensure_future(node.post("/v1/store/repair"))
    await begun.wait()
    try:
        for action, headers in (("verify", {}), ("repair", NDJSON)):
            refused = await node.post(f"/v1/store/{action}", headers=headers)
            problem = await refused.json(content_type=None)
            assert refused.status == 409 and refused.content_type == "application/problem+json", problem
            assert problem["code"] == "deep-check-running" and problem["running"] == "repair", problem
            assert problem["detail"].startswith("a repair of every file is running already"), problem
            assert problem["hint"] == "wait for it to end, then start this run again", problem
    finally:
        go_on.set()
    assert (await (await first).json())["healthy"]
    again = await node.post("/v1/store/verify")
    assert again.status == 200 and (await again.json())["healthy"]
