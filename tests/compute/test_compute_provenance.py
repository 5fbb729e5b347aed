"""Every run, returned or trapped, leaves a provenance record signed by the node.

Most tests share one node of the default configuration (file_node): each reads the records of its own runs."""

from __future__ import annotations

import hashlib

import pytest

from tests.support.compute import deploy, invoke, placed, signed_under_the_first_rule
from xsc import codec, keys
from xsc.compute import provenance
from xsc.errors import BadProvenanceSignature
from xsc.identity import Identity
from xsc.node import CLIENT_IDENTITY, DB, IDENTITY
from xsc.node.appkeys import NODE


@pytest.fixture
def node(file_node):
    return file_node


async def record(node, provenance_id: str) -> dict:
    response = await node.get(f"/v1/compute/provenance/{provenance_id}")
    assert response.status == 200
    return await response.json()


async def test_record_of_a_returned_call(node):
    add = await deploy(node, "add")
    status, body = await invoke(node, add, "sub", "-5", "0x3")
    signed = await record(node, body["provenance"])
    assert provenance.is_valid(signed)
    r = signed["record"]
    app = node.server.app
    assert r["id"] == body["provenance"]
    assert (r["module"], r["function"], r["outcome"]) == (add, "sub", "ok")
    assert r["args"] == [{"type": "i32", "value": -5}, {"type": "i32", "value": 3}]
    assert r["results"] == [{"type": "i32", "value": -8}]
    assert r["fuel_consumed"] == body["fuel_consumed"] > 0 and r["metering"] == "exact"
    assert r["node"] == app[IDENTITY].id
    assert r["requester"] == app[CLIENT_IDENTITY].id == body["requester"]
    assert r["fuel_limit"] == 10_000_000_000 and r["memory_limit"] == 64 * 1024 * 1024
    assert r["timeout_us"] == 5_000_000 and r["wall_time_us"] >= 0
    assert r["timestamp"].endswith("Z")
    rate = body["deal"]["price"]  # the market's price for the call
    assert r["charge"] == body["charge"] == -(-r["fuel_consumed"] * rate // 1_000_000)  # rounded up


async def test_record_of_a_trapped_call_is_charged_what_it_could_use_in_its_time(node):
    spin = await deploy(node, "loop")
    status, body = await invoke(node, spin, "spin", timeout=0.2, fuel=5_000_000_000)
    assert body["kind"] == "deadline"
    signed = await record(node, body["provenance"])
    assert provenance.is_valid(signed)
    r = signed["record"]
    assert r["outcome"] == "trap" and r["trap"]["kind"] == "deadline"
    assert "results" not in r
    # wasmtime reports ~0 fuel for a call-free loop stopped by its deadline: it is charged what it could have
    # burnt in the time it ran (at most 4e9 fuel a second), not its whole 5e9 budget.
    assert r["metering"] == "time-bounded"
    assert r["fuel_consumed"] == body["fuel_consumed"]
    assert r["wall_time_us"] * 4_000 <= r["fuel_consumed"] <= (r["wall_time_us"] + 1) * 4_000
    assert r["fuel_consumed"] < r["fuel_limit"] or r["wall_time_us"] >= 1_250_000
    assert r["charge"] == -(-r["fuel_consumed"] * r["deal"]["price"] // 1_000_000)
    assert f"charged {body['charge'] // 1_000_000}." in body["detail"] and "bounded by the time it ran" in body["detail"]


async def test_floats_are_recorded_as_exact_text(node):
    arith = await deploy(node, "arith")
    status, body = await invoke(node, arith, "add_f32", "0.1", "nan")
    r = (await record(node, body["provenance"]))["record"]
    assert r["args"] == [{"type": "f32", "value": "0.1"}, {"type": "f32", "value": "nan"}]
    assert r["results"] == [{"type": "f32", "value": "nan"}]


async def test_wasi_record(node):
    module = await deploy(node, "wasi_hello", wasi=True)
    status, body = await invoke(node, module, "args", "a", "b", wasi=True)
    r = (await record(node, body["provenance"]))["record"]
    assert r["wasi"] == {"argv": [module, "a", "b"], "exit_code": None, "stdout_bytes": len(body["stdout"]),
                         "stderr_bytes": 0, "stdout_sha256": hashlib.sha256(body["stdout"].encode()).hexdigest(),
                         "stderr_sha256": hashlib.sha256(b"").hexdigest()}


async def test_rejected_calls_leave_no_record(node):
    add = await deploy(node, "add")
    await invoke(node, add, "add", "1", "2")
    before = (await (await node.get("/v1/compute/provenance")).json())["records"]
    await invoke(node, add, "add", "1")
    await invoke(node, add, "nope")
    after = (await (await node.get("/v1/compute/provenance")).json())["records"]
    assert after == before


async def test_list_is_newest_first_and_limited(node):
    add = await deploy(node, "add")
    ids = [(await invoke(node, add, "add", str(i), "0"))[1]["provenance"] for i in range(5)]
    listed = (await (await node.get("/v1/compute/provenance", params={"limit": "3"})).json())["records"]
    assert [r["record"]["id"] for r in listed] == ids[::-1][:3]
    assert all(provenance.is_valid(r) for r in listed)


async def test_tampering_is_detected(node):
    add = await deploy(node, "add")
    status, body = await invoke(node, add, "add", "1", "2")
    signed = await record(node, body["provenance"])
    signed["record"]["results"][0]["value"] = 4
    assert not provenance.is_valid(signed)


async def test_a_record_stored_under_the_first_batch_rule_is_served_and_listed_valid(node):
    """What a node signed under the first rule stays valid where it is stored: the list (the dashboard's) says so, and
    the record is served as stored; held as a stranger's, it is refused."""
    add = await deploy(node, "add")
    status, body = await invoke(node, add, "add", "1", "2")
    app = node.server.app
    signed = await record(node, body["provenance"])
    old = signed_under_the_first_rule(app[IDENTITY], [codec.canonical(signed["record"])])[0]
    app[DB].put(keys.provenance(bytes.fromhex(body["provenance"])), codec.canonical(old))
    assert await record(node, body["provenance"]) == old
    response = await node.get("/v1/compute/provenance", params={"limit": "10"})
    listed = [r for r in (await response.json())["records"] if r["record"]["id"] == body["provenance"]]
    assert [(r["signature_valid"], r["signature_rule"]) for r in listed] == [(True, "batch/1")]
    assert provenance.check(old, stored=True) == signed["record"] and not provenance.is_valid(old)


async def test_provenance_lookup_errors(node):
    response = await node.get("/v1/compute/provenance/" + "0" * 32)
    assert response.status == 404 and (await response.json())["code"] == "provenance-not-found"
    response = await node.get("/v1/compute/provenance/xyz")
    assert response.status == 400 and "not a provenance id" in (await response.json())["detail"]
    response = await node.get("/v1/compute/provenance", params={"limit": "0"})
    assert response.status == 400


async def test_records_survive_a_restart(file_compute_node):
    node = await file_compute_node("n")
    add = await deploy(node, "add")
    status, body = await invoke(node, add, "add", "2", "2")
    await node.close()
    node = await file_compute_node("n")
    signed = await record(node, body["provenance"])
    assert provenance.is_valid(signed) and signed["record"]["results"][0]["value"] == 4


def _journal_record(n: int, node_id: str) -> dict:
    return {"version": provenance.VERSION, "id": provenance.new_id().hex(), "module": "ab" * 32, "function": "f",
            "args": [{"type": "i32", "value": n}], "outcome": "ok", "results": [], "node": node_id}


def test_records_are_durable_before_they_are_signed_and_signed_after_a_crash(tmp_path):
    """A record is on disk (synced) when its write returns; its batch signature follows.  If the process dies in
    between (the journal is dropped without closing, the database reopened), the journal signs it on opening."""
    import plyvel

    from xsc import keys
    from xsc.compute.journal import Journal, unsigned
    from xsc.identity import Identity

    identity = Identity.generate()
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    journal = Journal(db, identity)
    records = [_journal_record(n, identity.id) for n in range(5)]
    for r in records[:3]:
        journal._write([(r, b"m" * 32, ())])  # alone
    journal._write([(r, b"m" * 32, ()) for r in records[3:]])  # a group of two
    stored = [db.get(keys.provenance(bytes.fromhex(r["id"]))) for r in records]
    assert all(unsigned(d) for d in stored)  # durable, not signed yet
    assert [provenance.decode(d)["record"]["previous"] for d in stored] == [None] + [r["id"] for r in records[:4]]
    db.close()  # the process died: nothing signed them

    db = plyvel.DB(str(tmp_path / "db"))
    Journal(db, identity)  # opening signs what was left unsigned
    for r in records:
        signed = provenance.decode(db.get(keys.provenance(bytes.fromhex(r["id"]))))
        assert provenance.is_valid(signed) and signed["record"] == r and signed["batch"]["count"] == 5
    assert list(db.iterator(prefix=keys.UNSIGNED)) == []
    db.close()


async def test_records_written_before_their_signature_are_signed_when_read(file_compute_node, monkeypatch):
    from xsc.compute import journal as journal_module

    monkeypatch.setattr(journal_module, "SIGN_DELAY", 3600.0)  # nothing is signed unless a read asks
    node = await file_compute_node()  # its own: no record of another test's is waiting for its signature
    add = await deploy(node, "add")
    journal = node.server.app[NODE].compute.journal
    journal.sign_pending()
    batches = journal.signed_batches
    ids = [(await invoke(node, add, "add", str(i), "1"))[1]["provenance"] for i in range(6)]
    assert journal.signed_batches == batches  # answered before any signature
    signed = [await record(node, i) for i in ids]  # the first read signs them all
    assert all(provenance.is_valid(s) for s in signed) and journal.signed_batches == batches + 1
    assert {s["batch"]["count"] for s in signed} == {6} and len({s["batch"]["signature"] for s in signed}) == 1
    assert [s["record"]["previous"] for s in signed[1:]] == ids[:-1]
    listed = await (await node.get("/v1/compute/provenance?limit=6")).json()
    assert [r["record"]["id"] for r in listed["records"]] == ids[::-1] and all(r["signature_valid"] for r in listed["records"])


@pytest.mark.slow
def test_kill_9_right_after_answers_keeps_every_acknowledged_record_and_signs_it(node_process):
    """Records are answered before their batch is signed: a kill -9 in that window loses none of them, and
    the restarted node signs them (real node process)."""
    from tests.support.compute import WASM
    from tests.support.peers import api, http

    node = node_process("n")
    status, body = http(node.url, "POST", "/v1/modules", (WASM / "add.wasm").read_bytes(),
                        {"Authorization": f"Bearer {node.token}"})
    assert status in (200, 201), body
    module, acked = body["id"], []
    for i in range(40):
        status, body = api(node, "POST", "/v1/compute/invoke", {"module": module, "function": "add", "args": [i, 1]})
        assert status == 200, body
        acked.append(body["provenance"])
    node.kill()  # within the signing delay of the last answers
    node.start()
    for provenance_id in acked:
        status, signed = api(node, "GET", f"/v1/compute/provenance/{provenance_id}")
        assert status == 200 and provenance.is_valid(signed), signed
    status, listed = api(node, "GET", "/v1/compute/provenance?limit=100")
    assert {r["record"]["id"] for r in listed["records"]} == set(acked)
    assert all(r["signature_valid"] for r in listed["records"])



ME = Identity.generate()
BATCH = [codec.loads(s) for s in provenance.sign_batch(ME, [codec.canonical({"id": f"{i:032x}", "node": ME.id})
                                                          for i in range(3)])]
SINGLE = codec.loads(provenance.sign(ME, {"id": "0" * 32, "node": ME.id}))


def _batch(**changes) -> dict:
    return {**BATCH[0], "batch": {**BATCH[0]["batch"], **changes}}


def test_a_record_as_its_node_signs_it_is_its_one_spelling() -> None:
    assert all(provenance.is_valid(s) and provenance.respelled(s) is None for s in (*BATCH, SINGLE))


@pytest.mark.parametrize("respelled, where", [
    (_batch(proof=[p.upper() for p in BATCH[0]["batch"]["proof"]]), "batch.proof.0 is"),
    ({**SINGLE, "signature": SINGLE["signature"].upper()}, "signature is"),
    ({**SINGLE, "note": ""}, "note is not a field"),
], ids=["proof-upper-case", "v1-signature-upper-case", "v1-extra-field"])
def test_a_record_respelled_holds_to_its_signature_and_is_named(respelled, where) -> None:
    assert provenance.is_valid(respelled) and where in provenance.respelled(respelled)


def test_an_index_or_count_of_true_or_false_is_named_and_holds_to_nothing() -> None:
    for respelled, where in ((_batch(index=False), "batch.index is false"),
                             (_batch(count=True), "batch.count is true")):
        assert where in provenance.respelled(respelled) and not provenance.is_valid(respelled, stored=True)


@pytest.mark.parametrize("of, at, index, count", [(3, 0, 0, 4), (2, 1, 2, 3), (3, 2, 1, 2), (5, 4, 2, 3)])
def test_a_record_holds_at_its_own_index_and_count_only(of, at, index, count) -> None:
    """The signature covers a root that commits to the count, so a record claims no other place in its batch;
    under the first rule each of these records held at the other place too."""
    bodies = [codec.canonical({"id": f"{i:032x}", "node": ME.id}) for i in range(of)]
    signed = codec.loads(provenance.sign_batch(ME, bodies)[at])
    assert provenance.is_valid(signed)
    assert not provenance.is_valid(placed(signed, index, count))
    assert not provenance.is_valid(placed(signed, index, count), stored=True)
    assert provenance.is_valid(placed(signed_under_the_first_rule(ME, bodies)[at], index, count), stored=True)


def test_a_record_signed_under_the_first_rule_verifies_as_stored_and_from_no_stranger() -> None:
    old = signed_under_the_first_rule(ME, [codec.canonical({"id": f"{i:032x}", "node": ME.id}) for i in range(3)])
    for signed in old:
        assert provenance.respelled(signed) is None  # its bytes are the form a node wrote
        assert provenance.is_valid(signed, stored=True) and provenance.old_rule(signed)
        assert not provenance.is_valid(signed)  # from another node: refused
        with pytest.raises(BadProvenanceSignature):
            provenance.check(signed)
    assert provenance.check(old[0], stored=True) == old[0]["record"]
    assert not any(provenance.old_rule(s) for s in (*BATCH, SINGLE))
    # A batch of the current rule read as the first rule's (its tag swapped) holds under neither.
    tagged = {**BATCH[0], "batch": {**BATCH[0]["batch"], "signature": ME.sign(
        provenance.OLD_BATCH_TAG + bytes.fromhex(BATCH[0]["batch"]["root"])).hex()}}
    assert not provenance.is_valid(tagged, stored=True)
