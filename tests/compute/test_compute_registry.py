"""The module registry (name, version, description, status; disable, enable, rm), provenance that lasts
(batch-signed records verifiable alone, engine facts, a per-module chain) and replays."""

from __future__ import annotations

import copy

from tests.support.compute import deploy, invoke, wasm

from xsc.compute import provenance
from xsc.node.appkeys import NODE


async def test_registry_facts_disable_enable_and_rm(node_factory) -> None:
    node = await node_factory()
    response = await node.post("/v1/modules", data=wasm("add"),
                               params={"name": "adder", "version": "1.0", "description": "adds two i32"})
    info = await response.json()
    assert (info["name"], info["version"], info["description"], info["status"]) == ("adder", "1.0", "adds two i32",
                                                                                    "active")
    module = info["id"]
    status, body = await invoke(node, module, "add", 1, 2)
    assert status == 200, body
    first = body["provenance"]

    response = await node.put(f"/v1/modules/{module}/status", json={"status": "disabled"})
    assert (await response.json())["status"] == "disabled"
    status, problem = await invoke(node, module, "add", 1, 2)
    assert status == 409 and problem["code"] == "module-disabled", problem
    # the id whole in the message and in the command that fixes it: the user copies it from there
    assert f"module {module} is disabled" in problem["detail"] and problem["hint"].endswith(
        f"xsc compute enable {module}"), problem
    await node.put(f"/v1/modules/{module}/status", json={"status": "active"})
    status, body = await invoke(node, module, "add", 2, 2)
    assert status == 200 and body["results"][0]["value"] == 4

    response = await node.delete(f"/v1/modules/{module}")
    assert response.status == 200
    status, problem = await invoke(node, module, "add", 1, 2)
    assert status == 404 and problem["code"] == "module-not-found"
    record = await (await node.get(f"/v1/compute/provenance/{first}")).json()
    assert provenance.is_valid(record)  # the records of a removed module are kept

    response = await node.put(f"/v1/modules/{module}/status", json={"status": "active"})
    assert response.status == 404  # removed; a bad status is a 400:
    module = await deploy(node, "add")
    response = await node.put(f"/v1/modules/{module}/status", json={"status": "sleeping"})
    assert response.status == 400


async def test_records_are_batch_signed_chained_per_module_and_name_the_engine(node_factory) -> None:
    node = await node_factory()
    module = await deploy(node, "add")
    import asyncio

    results = await asyncio.gather(*(invoke(node, module, "add", n, 1) for n in range(6)))
    ids = [body["provenance"] for _, body in results]
    records = [await (await node.get(f"/v1/compute/provenance/{i}")).json() for i in ids]
    for signed in records:
        assert provenance.is_valid(signed) and "batch" in signed and "signature" not in signed
        engine = signed["record"]["engine"]
        assert engine["nan_canonicalization"] is True and engine["wasmtime"] and len(engine["fingerprint"]) == 64
    # One chain per module: every record but the first links to another of them, and they form one line.
    previous = {r["record"]["id"]: r["record"]["previous"] for r in records}
    assert sorted(p is None for p in previous.values()) == [False] * 5 + [True]
    assert set(previous.values()) - {None} < set(previous)
    # Each record verifies alone; altering the record, the proof or the root breaks it.
    signed = records[0]
    for change in ("record", "proof", "root"):
        bad = copy.deepcopy(signed)
        if change == "record":
            bad["record"]["fuel_consumed"] += 1
        elif change == "proof":
            bad["batch"]["proof"] = (["00" * 32] + bad["batch"]["proof"])[:max(1, len(bad["batch"]["proof"]))]
            bad["batch"]["count"] = max(2, bad["batch"]["count"])
        else:
            bad["batch"]["root"] = "11" * 32
        assert not provenance.is_valid(bad), change
    modules = await (await node.get(f"/v1/modules/{module}")).json()
    assert modules["invocations"] == 6


async def test_replay_reruns_a_record_and_finds_it_identical(node_factory) -> None:
    node = await node_factory()
    module = await deploy(node, "fibonacci")
    status, body = await invoke(node, module, "fib", 20, fuel=5_000_000)
    assert status == 200, body
    answer = await (await node.post(f"/v1/compute/provenance/{body['provenance']}/replay")).json()
    assert answer["identical"] is True and answer["same_engine"] is True, answer
    assert answer["replay"] != body["provenance"] and answer["fuel_consumed"] == body["fuel_consumed"]
    replayed = node.app[NODE].compute.provenance_records.get(answer["replay"])["record"]
    assert replayed["deal"] == {"replay_of": body["provenance"]}
    await node.app[NODE].tabs.flush()  # a replay is a paid run like any other
    history = await (await node.get("/v1/ledger/accounts/client/history?expand=true")).json()
    covered = {ref for e in history["entries"] for ref in e.get("covered", [])}
    assert {body["provenance"], answer["replay"]} <= covered
    response = await node.post("/v1/compute/provenance/" + "0" * 32 + "/replay")
    assert response.status == 404
