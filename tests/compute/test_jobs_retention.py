"""Compute's records kept only while something needs them (compute.record_retention): a job whose files are all
gone goes once its retention has passed, with its outputs' links and its providers' signed runs; one whose file is
still stored, or read by a job kept, a running one and one owing a provider stay.  A call's provenance record goes
as long after, once what it owes is settled."""

from __future__ import annotations

import json
import os
import time

import plyvel

from tests.support.cli import error_line, ok
from tests.support.compute import WASM
from tests.support.waiting import eventually
from xsc import codec, keys
from xsc.compute import provenance
from xsc.compute.job_retention import JobRetention
from xsc.compute.store import ComputeStore
from xsc.db import open_database
from xsc.node.datadir import DB_DIR
from xsc.storage.core.capability import Capability

OUTPUTS = str(WASM / "outputs.wasm")
USER = bytes(range(32))
HOUR_NS = 3600 * 10**9


def _run(node, *args: str, stdin: bytes | None = None) -> dict:
    return json.loads(ok(node.xsc("compute", "run", OUTPUTS, *args, "--json", **({"input": stdin} if stdin else {}))))


def _gone(node, job: dict) -> bool:
    answer = node.xsc("compute", "job", job["id"], "--json")
    return answer.returncode == 1 and "no job" in error_line(answer)


def _rm(node, job: dict) -> None:
    for output in job["outputs"]:
        ok(node.xsc("store", "rm", output["capability"]))


def test_records_of_jobs_nothing_needs_go_after_their_retention_and_the_others_stay(cli_node, tmp_path) -> None:
    node = cli_node(compute={"record_retention": 1})  # swept every tenth of a second
    source = tmp_path / "source"
    source.write_bytes(b"words to copy\n")
    cap = ok(node.xsc("store", "put", str(source))).split()[0]
    kept = _run(node, "--stdin", cap, "--input", f"{cap}:/in/data")  # its files stay stored
    first = _run(node, "--stdin", cap, "--input", f"{cap}:/in/other")  # a chain: `last` reads first's c.txt
    middle = next(o for o in first["outputs"] if o["name"] == "out/c.txt")["capability"]
    last = _run(node, "--stdin", middle, "--input", f"{middle}:/in/last")  # (/in/data: `kept` run again)
    removed = _run(node, stdin=b"piped\n")  # its files are removed
    _rm(node, first)  # the file `last` read is gone, and `last`'s are stored: its lineage still passes by `first`
    _rm(node, removed)

    # The sweep that forgets the newest job, its files removed last, weighed every other one past its retention too.
    eventually(lambda: _gone(node, removed), "the job whose files are gone to be forgotten")
    for job in (kept, first, last):
        assert json.loads(ok(node.xsc("compute", "job", job["id"], "--json")))["state"] == "done"
    shown = next(o for o in last["outputs"] if o["name"] == "out/c.txt")["capability"]
    tree = json.loads(ok(node.xsc("compute", "lineage", shown, "--json")))["made_by"]
    assert tree["job"] == last["id"] and tree["inputs"][0]["made_by"]["job"] == first["id"]

    _rm(node, last)  # the chain goes from its end: `last`, then `first`, which nothing reads any more
    eventually(lambda: _gone(node, last) and _gone(node, first), "the chain of jobs to be forgotten")
    assert json.loads(ok(node.xsc("compute", "job", kept["id"], "--json")))["outputs"] == kept["outputs"]
    listed = {f["capability"] for f in json.loads(ok(node.xsc("store", "ls", "--json")))}
    assert listed == {cap, *(o["capability"] for o in kept["outputs"])}
    node.stop()
    db = plyvel.DB(str(node.data_dir / DB_DIR))
    try:
        records = [codec.loads(v)["id"] for _, v in db.iterator(prefix=keys.JOBS)]
        links = {k[len(keys.JOB_OUTPUTS):] for k in db.iterator(prefix=keys.JOB_OUTPUTS, include_value=False)}
    finally:
        db.close()
    assert records == [kept["id"]]
    assert links == {Capability.parse(o["capability"]).storage_index for o in kept["outputs"]}


def _run_id(at_ns: int) -> str:
    return (at_ns.to_bytes(8, "big") + os.urandom(8)).hex()


def _cap() -> str:
    return str(Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10))


def _job(db, jid: str, began_ns: int, run: str, **fields) -> dict:
    job = {"id": jid, "state": "done", "created": provenance.timestamp(began_ns), "provenance": run, "outputs": [],
           "inputs": [], **fields}
    db.put(keys.job(USER, bytes.fromhex(jid)), codec.dumps(job))
    return job


def test_a_run_a_provider_signed_goes_with_its_job_and_a_pending_tab_keeps_it(tmp_path) -> None:
    db = open_database(tmp_path / "db")
    records = JobRetention(db)
    now = time.time_ns()
    old, recent = now - 48 * HOUR_NS, now - HOUR_NS
    run, loose_run, new_run = _run_id(old), _run_id(old), _run_id(recent)
    output = _cap()
    si = Capability.parse(output).storage_index
    remote = _job(db, "11" * 32, old, run, outputs=[{"name": "out", "capability": output}],
                  paid_on=[{"provider": "p", "authorization": "aa" * 32, "charge": 5}])
    _job(db, "22" * 32, old, "", state="running")  # a start resumes it
    _job(db, "33" * 32, recent, new_run)  # not past its retention
    db.put(keys.job_output(si), codec.dumps({"job": remote["id"], "user": USER.hex(), "provenance": run}))
    for kept_run in (run, loose_run, new_run):
        db.put(keys.job_run(bytes.fromhex(kept_run)), b"{}")
    stray = os.urandom(32)  # a link whose job's record is gone
    db.put(keys.job_output(stray), codec.dumps({"job": "44" * 32, "user": USER.hex(), "provenance": loose_run}))
    before = now - 24 * HOUR_NS

    owing = records.forgettable(before, lambda _: False, {"aa" * 32}, 256)
    assert owing.jobs == []  # its provider is still to be paid what its record says
    assert set(owing.loose) == {keys.job_output(stray), keys.job_run(bytes.fromhex(loose_run))}
    held = records.forgettable(before, lambda s: s == si, set(), 256)
    assert held.jobs == []  # its file is still stored

    found = records.forgettable(before, lambda _: False, set(), 256)
    [(jid, key, digest, others)] = found.jobs
    assert jid == remote["id"] and set(others) == {keys.job_output(si), keys.job_run(bytes.fromhex(run))}
    assert records.forgettable(before, lambda _: False, set(), 1).loose == found.loose[:1]  # bounded a pass
    assert records.forget(key, digest, others)
    records.forget_loose(found.loose)
    again = records.forgettable(before, lambda _: False, set(), 256)
    assert again.jobs == again.loose == []
    assert [codec.loads(v)["id"] for _, v in db.iterator(prefix=keys.JOBS)] == ["22" * 32, "33" * 32]
    assert [k for k in db.iterator(prefix=keys.JOB_RUNS, include_value=False)] == [keys.job_run(bytes.fromhex(new_run))]
    assert list(db.iterator(prefix=keys.JOB_OUTPUTS)) == []


def test_a_job_run_again_since_it_was_found_is_not_forgotten(tmp_path) -> None:
    db = open_database(tmp_path / "db")
    records = JobRetention(db)
    old = time.time_ns() - 48 * HOUR_NS
    _job(db, "55" * 32, old, "")
    [(jid, key, digest, others)] = records.forgettable(old + HOUR_NS, lambda _: False, set(), 256).jobs
    _job(db, jid, time.time_ns(), "", state="running")
    assert not records.forget(key, digest, others)
    assert db.get(key) is not None


ADD = str(WASM / "add.wasm")


def test_a_calls_provenance_record_goes_after_its_retention_once_its_tab_is_settled(cli_node) -> None:
    node = cli_node(compute={"record_retention": 1}, ledger={"tab_interval": 0.1})
    runs = [json.loads(ok(node.xsc("compute", "invoke", ADD, "add", "1", str(n), "--json")))["provenance"]
            for n in range(3)]
    assert "valid" in ok(node.xsc("compute", "provenance", runs[0]))
    eventually(lambda: all(node.xsc("compute", "provenance", run).returncode == 1 for run in runs),
               "the calls' records to be forgotten")
    assert f"no provenance record {runs[0]} on this node" in error_line(node.xsc("compute", "provenance", runs[0]))
    assert json.loads(ok(node.xsc("ledger", "verify", "--json")))["ok"]
    assert ok(node.xsc("ledger", "history"))  # the transfers that paid for them stay, with the refs they cover


def test_provenance_records_go_oldest_first_but_those_kept_and_those_awaiting_a_signature(tmp_path) -> None:
    db = open_database(tmp_path / "db")
    store = ComputeStore(db)
    now = time.time_ns()
    ids = [bytes.fromhex(_run_id(now - (10 - i) * HOUR_NS)) for i in range(6)]  # oldest first
    for record_id in ids:
        db.put(keys.provenance(record_id), b"{}")
    db.put(keys.unsigned(ids[1]), b"")
    kept, before = {ids[2]}, now - 5 * HOUR_NS  # ids[5] began after `before`
    assert store.forget_provenance(before, kept.__contains__, 1) == 1  # bounded a pass
    assert store.forget_provenance(before, kept.__contains__, 100) == 2
    left = [k[len(keys.PROVENANCE):] for k in db.iterator(prefix=keys.PROVENANCE, include_value=False)]
    assert left == [ids[1], ids[2], ids[5]]


def test_a_calls_provenance_record_stays_while_its_tab_is_open(cli_node) -> None:
    node = cli_node(compute={"record_retention": 1}, ledger={"tab_interval": 3600, "tab_threshold": 10**12})
    run = json.loads(ok(node.xsc("compute", "invoke", ADD, "add", "1", "2", "--json")))["provenance"]
    removed = _run(node, stdin=b"piped\n")
    _rm(node, removed)
    eventually(lambda: _gone(node, removed), "a sweep to forget what nothing needs")  # the call older still
    assert "valid" in ok(node.xsc("compute", "provenance", run))  # what it owes is not settled yet


def test_what_a_jobs_tabs_were_paid_goes_with_its_job_and_what_no_record_names_goes_alone(tmp_path) -> None:
    db = open_database(tmp_path / "db")
    records = JobRetention(db)
    now = time.time_ns()
    old = now - 48 * HOUR_NS
    paid, other, replaced = "aa" * 32, "bb" * 32, "cc" * 32
    _job(db, "11" * 32, old, _run_id(old), paid_on=[{"provider": "p", "authorization": paid, "charge": 5}])
    _job(db, "22" * 32, now - HOUR_NS, _run_id(now - HOUR_NS),  # not past its retention
         paid_on=[{"provider": "p", "authorization": other, "charge": 5}])
    for authorization in (paid, other, replaced):  # `replaced`: a run before's, no record names it any more
        db.put(keys.job_payment(bytes.fromhex(authorization)), codec.dumps({"amount": 5, "entry": "ee" * 32}))
    found = records.forgettable(now - 24 * HOUR_NS, lambda _: False, set(), 256)
    [(jid, key, digest, others)] = found.jobs
    assert jid == "11" * 32 and keys.job_payment(bytes.fromhex(paid)) in others
    assert keys.job_payment(bytes.fromhex(replaced)) in found.loose
    assert keys.job_payment(bytes.fromhex(other)) not in [*others, *found.loose]
    assert records.forget(key, digest, others)
    records.forget_loose(found.loose)
    assert [k for k in db.iterator(prefix=keys.JOB_PAYMENTS, include_value=False)] == \
        [keys.job_payment(bytes.fromhex(other))]
