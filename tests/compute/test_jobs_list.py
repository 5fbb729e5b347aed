"""`xsc compute jobs` (GET /v1/compute/jobs): the user's jobs newest first, by pages, each id whole, so that a job
whose answer was lost (the CLI stopped, the node died mid-job) can be found again."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import plyvel

from tests.support.cli import error_line, ok
from tests.support.compute import WASM, deploy
from tests.support.jobs import run_job
from xsc import codec, keys
from xsc.compute import provenance
from xsc.compute.job_records import JobRecords
from xsc.compute.job_retention import JobRetention
from xsc.db import open_database
from xsc.node.appkeys import NODE
from xsc.node.datadir import DB_DIR

WC = str(WASM / "wc.wasm")
USER = bytes(range(32))


def _run(node, stdin: bytes) -> str:
    return json.loads(ok(node.xsc("compute", "run", WC, "--json", input=stdin)))["id"]


def _listed(node, *args: str) -> dict:
    return json.loads(ok(node.xsc("compute", "jobs", "--json", *args)))


def test_jobs_are_listed_newest_first_a_page_at_a_time(xsc_node) -> None:
    assert ok(xsc_node.xsc("compute", "jobs")) == "no jobs yet (run one with: xsc compute run MODULE.wasm)\n"
    ran = [_run(xsc_node, f"{n} words\n".encode()) for n in range(3)]
    page = _listed(xsc_node)
    assert [j["id"] for j in page["jobs"]] == ran[::-1] and page["next"] is None
    first = page["jobs"][-1]
    assert first["state"] == "done" and first["replicas"] == 1 and first["charge"] > 0
    assert first["module"] == json.loads(ok(xsc_node.xsc("compute", "job", ran[0], "--json")))["module"]

    newest = _listed(xsc_node, "--limit", "2")
    assert [j["id"] for j in newest["jobs"]] == ran[:0:-1] and newest["next"]
    rest = _listed(xsc_node, "--limit", "2", "--before", newest["next"])
    assert [j["id"] for j in rest["jobs"]] == ran[:1] and rest["next"] is None

    _run(xsc_node, b"0 words\n")  # the oldest run again: first now, and listed once
    assert [j["id"] for j in _listed(xsc_node)["jobs"]] == [ran[0], ran[2], ran[1]]


def test_the_list_fits_80_columns_with_every_id_whole(xsc_node) -> None:
    ran = [_run(xsc_node, f"{n}\n".encode()) for n in range(3)]
    shown = ok(xsc_node.xsc("compute", "jobs", "--limit", "2", env={"COLUMNS": "80"}))
    lines = shown.splitlines()
    assert all(len(line) <= 80 for line in lines), shown
    # no module has a name: no column of them (a "-" there read as no module), each id under its job
    assert lines[0].split() == ["started", "(UTC)", "state", "charge", "(credits)", "replicas"], shown
    module = json.loads(ok(xsc_node.xsc("compute", "job", ran[0], "--json")))["module"]
    assert sum(line.strip() == f"module {module}" for line in lines) == 2 and " - " not in shown, shown
    assert [line.strip() for line in lines if line.strip() in ran] == ran[:0:-1], shown  # each id whole, on its own
    assert lines[-1].startswith("more: xsc compute jobs --before ") and lines[-1].endswith(" --limit 2"), shown
    again = lines[-1].removeprefix("more: xsc compute jobs ").split()
    assert ran[0] in ok(xsc_node.xsc("compute", "jobs", *again))
    wide = ok(xsc_node.xsc("compute", "jobs")).splitlines()  # not a terminal: one line a job, its id first
    assert [line.split()[0] for line in wide[1:]] == ran[::-1]


def test_a_page_is_bounded_and_a_bad_cursor_said_in_one_line(xsc_node) -> None:
    over = xsc_node.xsc("compute", "jobs", "--limit", "1001")
    assert over.returncode == 2 and over.stderr.decode().startswith("xsc: usage error: "), over.stderr
    line = error_line(xsc_node.xsc("compute", "jobs", "--before=not-a-cursor"))
    assert line.startswith("xsc: error: not a cursor of the list of jobs: 'not-a-cursor'"), line
    assert "no job" in error_line(xsc_node.xsc("compute", "job", "ab" * 32))
    assert "xsc compute jobs" in error_line(xsc_node.xsc("compute", "job", "ab" * 32))


async def test_the_api_refuses_a_page_past_its_bound(node_factory) -> None:
    node = await node_factory("node")
    for query, said in [("limit=1001", "limit must be a whole number from 1 to 1000"),
                        ("before=AAAA", "not a cursor of the list of jobs")]:
        response = await node.get(f"/v1/compute/jobs?{query}")
        problem = await response.json()
        assert response.status == 400 and problem["detail"].startswith(said), problem


def test_a_start_lists_the_jobs_of_a_node_that_kept_no_list(xsc_node) -> None:
    ran = [_run(xsc_node, f"{n}\n".encode()) for n in range(2)]
    xsc_node.stop()
    db = plyvel.DB(str(xsc_node.data_dir / DB_DIR))
    try:
        for key in db.iterator(prefix=keys.jobs_began(b""), include_value=False):  # every user's
            db.delete(key)
        for key in db.iterator(prefix=keys.jobs_listed(b""), include_value=False):  # as a store that never had them
            db.delete(key)
    finally:
        db.close()
    xsc_node.start()
    assert [j["id"] for j in _listed(xsc_node)["jobs"]] == ran[::-1]


def _record(db, jid: str, began_ns: int) -> None:
    """A job's record as a node that kept no list of jobs wrote it."""
    job = {"id": jid, "state": "done", "created": provenance.timestamp(began_ns), "outputs": [], "inputs": []}
    db.put(keys.job(USER, bytes.fromhex(jid)), codec.dumps(job))


def test_records_written_before_the_list_are_listed_and_a_forgotten_job_leaves_it(tmp_path) -> None:
    db = open_database(tmp_path / "db")
    records = JobRecords(db, USER)
    now = time.time_ns()
    for n, jid in enumerate(("11" * 32, "22" * 32, "33" * 32)):
        _record(db, jid, now - (3 - n) * 10**9)
    assert records.page(10, None) == ([], None)  # not in the list yet
    assert records.list_unlisted() == 3 and records.list_unlisted() == 0
    _record(db, "44" * 32, now)  # what a start found listed once is never walked for again
    assert records.list_unlisted() == 0 and "44" * 32 not in [j["id"] for j in records.page(10, None)[0]]
    db.delete(keys.job(USER, bytes.fromhex("44" * 32)))
    jobs, _ = records.page(10, None)
    assert [j["id"] for j in jobs] == ["33" * 32, "22" * 32, "11" * 32]

    key = keys.job(USER, bytes.fromhex("22" * 32))
    assert JobRetention(db).forget(key, hashlib.sha256(db.get(key)).digest(), [])
    assert [j["id"] for j in records.page(10, None)[0]] == ["33" * 32, "11" * 32]
    assert len(list(db.iterator(prefix=keys.jobs_began(USER)))) == 2

    earlier = records.load("11" * 32)
    records.begin("11" * 32, {**earlier, "created": provenance.timestamp(now)}, earlier)  # run again: on top, once
    assert [j["id"] for j in records.page(10, None)[0]] == ["11" * 32, "33" * 32]
    assert len(list(db.iterator(prefix=keys.jobs_began(USER)))) == 2


async def test_a_page_holds_up_to_a_thousand_jobs_each_read_from_its_summary(node_factory) -> None:
    node = await node_factory("node")
    records = node.app[NODE].jobs.records
    now = time.time_ns()
    ids = [hashlib.sha256(bytes([n])).hexdigest() for n in range(150)]
    for n, jid in enumerate(ids):
        job = {"id": jid, "state": "done", "created": provenance.timestamp(now + n * 1000), "outputs": [],
               "inputs": [], "module": "ab" * 32, "executions": 1, "charge": n, "charge_total": 2 * n,
               "stdout": "x" * 1000}
        records.begin(jid, job, None)
    # A summary is what a page reads: the record (up to a MiB of a deterministic job's streams) is not
    records.db.put(keys.job(records.user, bytes.fromhex(ids[0])), b"not a record a page reads")
    response = await node.get("/v1/compute/jobs?limit=1000")
    page = await response.json()
    assert response.status == 200 and page["next"] is None, page
    assert [j["id"] for j in page["jobs"]] == ids[::-1]
    assert page["jobs"][0] == {"id": ids[-1], "state": "done", "started": provenance.timestamp(now + 149_000),
                               "charge": 149, "charge_total": 298, "module": "ab" * 32, "module_name": None,
                               "replicas": 1, "executions": 1}


def test_a_record_written_before_summaries_were_kept_is_listed_from_itself(tmp_path) -> None:
    db = open_database(tmp_path / "db")
    records = JobRecords(db, USER)
    now = time.time_ns()
    older, newer = "11" * 32, "22" * 32
    _record(db, older, now - 10**9)  # its record and its place in the list, no summary
    db.put(records.began(older, records.load(older)), b"")
    records.begin(newer, {"id": newer, "state": "done", "created": provenance.timestamp(now), "outputs": [],
                          "inputs": [], "charge": 7}, None)
    assert db.get(keys.job_summary(USER, bytes.fromhex(older))) is None
    jobs, _ = records.page(10, None)
    assert [(j["id"], j["state"], j["charge"], j["charge_total"]) for j in jobs] == [(newer, "done", 7, 7),
                                                                                    (older, "done", 0, 0)]
    key = keys.job(USER, bytes.fromhex(newer))
    assert JobRetention(db).forget(key, hashlib.sha256(db.get(key)).digest(), [])  # its summary goes with it
    assert db.get(keys.job_summary(USER, bytes.fromhex(newer))) is None
    assert [j["id"] for j in records.page(10, None)[0]] == [older]


def test_a_failed_job_shows_its_error_with_the_command_that_fixes_it_and_when_it_started(xsc_node) -> None:
    failed = error_line(xsc_node.xsc("compute", "run", WC, "--fuel", "1000", input=b"a few words\n"))
    listed = _listed(xsc_node)["jobs"][0]
    record = json.loads(ok(xsc_node.xsc("compute", "job", listed["id"], "--json")))
    assert listed["state"] == record["state"] == "failed" and record["error_hint"], record
    assert f"({record['error_hint']})" in failed  # the hint the run's refusal gave
    lines = ok(xsc_node.xsc("compute", "job", listed["id"])).splitlines()
    error = next(line for line in lines if line.startswith("error:"))
    assert error.split(None, 1)[1] == f"{record['error']} ({record['error_hint']})", lines
    # the list's start and the job's are one moment under one word (its JSON field stays `created`)
    started = ok(xsc_node.xsc("compute", "jobs")).splitlines()[1].split()[1:3]
    assert f"started: {' '.join(started)} UTC" in [" ".join(line.split()) for line in lines], lines
    assert not any(line.startswith("created") for line in lines) and record["created"] == listed["started"]


async def test_a_job_is_read_off_the_event_loop(node_factory, monkeypatch) -> None:
    """A job's record and its providers' payments are LevelDB reads, a record as large as its outputs: the node reads
    them in its pool, the loop meanwhile serving other requests."""
    node = await node_factory("reader")
    status, ran = await run_job(node, {"module": await deploy(node, "wc", wasi=True)}, b"a b\n")
    assert status == 201, ran
    jobs, threads = node.app[NODE].jobs, []
    read = jobs.job

    def job(jid: str) -> dict:
        threads.append(threading.current_thread())
        return read(jid)

    monkeypatch.setattr(jobs, "job", job)
    shown = await (await node.get(f"/v1/compute/jobs/{ran['id']}")).json()
    assert shown["id"] == ran["id"] and shown["state"] == "done", shown
    assert threads and threading.main_thread() not in threads, threads
