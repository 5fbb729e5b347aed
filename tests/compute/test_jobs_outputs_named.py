"""Every file a job stores is named by its job's record (with its link to the run that wrote it) or removed: a put
that fails after others published theirs, the write that ends a remote run failing where the next one does not, and
(tests/compute/test_jobs_outputs_crash.py) a kill -9 between an output's put and the write of the job's record."""

from __future__ import annotations

import errno

from tests.support.compute import deploy
from tests.support.jobs import balances, compiled_for, failing_after, network, run_job, settle
from xsc import codec, keys
from xsc.errors import InsufficientCredit
from xsc.node.appkeys import NODE


async def _job_files(node, jid: str) -> list[dict]:
    files = (await (await node.get("/v1/store/files")).json())["files"]
    return [f for f in files if f["name"].startswith(f"job:{jid}")]


def _unnamed(node) -> list[str]:
    """The files the node lists whose names say a job stored them and that no job's record names."""
    jobs = node.app[NODE].jobs
    named = {o["capability"] for job in jobs.records.all_jobs() for o in [*job.get("outputs", []),
                                                                        *job.get("replacing", [])]}
    with jobs.storage.store.db.iterator(prefix=keys.FILES) as files:
        return [r["capability"] for _, raw in files if (r := codec.loads(raw)).get("name", "").startswith("job:")
                and r["capability"] not in named]


async def test_outputs_a_job_stored_before_a_later_put_failed_are_removed_with_the_record_naming_none(
        node_factory, monkeypatch) -> None:
    node = await node_factory("node")
    jobs = node.app[NODE].jobs
    spec = {"module": await deploy(node, "outputs", wasi=True), "stdin": "-"}
    failing_after(jobs.storage, monkeypatch, 2, InsufficientCredit("too little credit for the put", hint="add credit"))
    status, problem = await run_job(node, spec, b"abc")
    monkeypatch.undo()
    assert status == 402 and problem["code"] == "insufficient-credit", problem
    jid = problem["id"]
    record = jobs.records.load(jid)
    assert record["state"] == "failed" and record["outputs"] == [], record
    assert await _job_files(node, jid) == []  # the two it published: gone with the record that named them
    assert _unnamed(node) == []


async def test_a_remote_job_whose_ending_write_fails_once_fails_with_its_stored_outputs_removed(
        node_factory, monkeypatch) -> None:
    """The write that ends a remote run (done, its outputs' links) fails once, and the write that records it failed
    does not: its provider is paid what it answered, and the outputs it stored go with the record that names none."""
    gateway, (provider,) = await network(node_factory)
    jobs = gateway.app[NODE].jobs
    module = await deploy(gateway, "outputs", wasi=True)
    before = balances(gateway, provider)

    def failing(*args):
        monkeypatch.undo()
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(jobs.records, "finished", failing)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, b"abc")
    assert (status, problem["code"]) == (503, "node-failed"), problem
    jid = problem["id"]
    record = jobs.records.load(jid)
    assert record["state"] == "failed" and record["outputs"] == [], record
    assert await _job_files(gateway, jid) == []
    assert _unnamed(gateway) == []
    await settle(gateway)
    # Paid what it answered, once, and compiling the module pushed to it.
    owed = problem["charged"] + await compiled_for(provider, jid, "outputs")
    after = balances(gateway, provider)
    assert problem["charged"] > 0 and (after[0] - before[0], after[1] - before[1]) == (-owed, owed)
