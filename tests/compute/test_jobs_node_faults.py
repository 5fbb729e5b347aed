"""A job the node itself fails (an OSError of its disk while it stages the job's bytes or stores its outputs, not an
XscError): its record says so at once, as the next start would have settled it, its caller is answered a problem of
its own (not the node's 500), the money stays exact, and a start leaves the record as it was."""

from __future__ import annotations

import asyncio
import errno

import pytest

from tests.support.cli import error_line, xsc_in_process
from tests.support.compute import deploy
from tests.support.jobs import (balances, compiled_for, failing_after, network, owed_paid, read_file, restarted,
                                run_job, settle, verified)
from tests.support.waiting import eventually_async
from tests.support.nodes import close_node
from xsc.compute import remote_answers
from xsc.node import CLIENT_IDENTITY, TOKEN
from xsc.node.appkeys import NODE


async def _files(node) -> list[dict]:
    return (await (await node.get("/v1/store/files")).json())["files"]


async def test_a_job_whose_outputs_the_nodes_full_disk_cannot_store_is_interrupted_uncharged_and_stays_so(
        node_factory, monkeypatch) -> None:
    node = await node_factory("node")
    jobs = node.app[NODE].jobs
    user = node.app[CLIENT_IDENTITY].public_key
    spec = {"module": await deploy(node, "outputs", wasi=True), "stdin": "-"}
    balance = jobs.ledger.store.state(user).balance
    failing_after(jobs.storage, monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    status, problem = await run_job(node, spec, b"abc")
    monkeypatch.undo()
    assert (status, problem["code"]) == (507, "disk-full"), problem
    jid = problem["id"]
    assert problem["detail"] == f"the job {jid} was cut short: the node failed: OSError: [Errno 28] No space left " \
        "on device"
    assert problem["hint"] == f"run it again with its stdin: ... | xsc compute run {spec['module']} --stdin -"
    record = jobs.records.load(jid)
    assert record["state"] == "interrupted" and record["outputs"] == [], record
    assert record["error"] == "the node failed: OSError: [Errno 28] No space left on device"
    assert record["error_hint"] == problem["hint"]
    assert not [f for f in await _files(node) if f["name"].startswith(f"job:{jid}")]  # the one it published: gone
    assert (jobs.ledger.store.state(user).balance, jobs.ledger.held(user)) == (balance, 0)  # nothing charged or held
    shown = await (await node.get(f"/v1/compute/jobs/{jid}")).json()
    assert shown["state"] == "interrupted", shown

    await close_node(node)
    node = await node_factory("node")
    await node.app[NODE].jobs.recovered.wait()
    assert node.app[NODE].jobs.records.load(jid) == record  # the start found nothing left to settle
    status, again = await run_job(node, spec, b"abc")  # and the job runs again, as its hint says
    assert status == 201 and again["id"] == jid and again["state"] == "done", again


async def test_a_job_whose_bytes_the_node_cannot_stage_is_answered_its_failure_and_leaves_no_record(
        node_factory, monkeypatch) -> None:
    node = await node_factory("node")
    jobs = node.app[NODE].jobs
    spec = {"module": await deploy(node, "outputs", wasi=True), "stdin": "-"}

    async def failing(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(jobs.inputs, "_copy", failing)
    status, problem = await run_job(node, spec, b"abc")
    assert (status, problem["code"]) == (503, "node-failed"), problem
    assert problem["detail"] == "the node failed: OSError: [Errno 5] Input/output error", problem
    assert (await (await node.get("/v1/compute/jobs")).json())["jobs"] == []  # nothing of it recorded
    assert not any(jobs.work_dir.glob("job-*"))  # nor left on disk


async def test_a_remote_job_whose_checked_outputs_the_node_cannot_store_pays_its_provider_and_fails(
        node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    before = balances(gateway, provider)
    failing_after(jobs.storage, monkeypatch, 0, OSError(errno.EIO, "Input/output error"))
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, b"abc")
    monkeypatch.undo()
    assert (status, problem["code"]) == (503, "node-failed"), problem
    assert "its outputs could not be stored: the node failed: OSError: [Errno 5] Input/output error" \
        in problem["detail"], problem
    record = jobs.records.load(problem["id"])
    assert record["state"] == "failed" and record["outputs"] == [], record  # it ran: its provider did the work
    assert record["error"] == "its outputs could not be stored: the node failed: OSError: [Errno 5] Input/output error"
    await settle(gateway)
    # Paid what it answered, once, and compiling the module pushed to it.
    owed = problem["charged"] + await compiled_for(provider, problem["id"], "outputs")
    after = balances(gateway, provider)
    assert problem["charged"] > 0 and (after[0] - before[0], after[1] - before[1]) == (-owed, owed)


async def test_a_remote_job_the_node_fails_once_its_record_says_done_is_answered_done_and_paid_once(
        node_factory, monkeypatch) -> None:
    """An OSError after the write that ended the run (the job done, its provider owed what the record says), as its
    answer is made: its caller told the job is done and the node failed then, never that it was cut short; the record
    stays done, its provider is paid by the running node what it answered, and the start pays nothing more."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    before = balances(gateway, provider)

    def failing(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(remote_answers, "answered_with", failing)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, b"abc")
    monkeypatch.undo()
    assert (status, problem["code"]) == (503, "node-failed"), problem
    jid = problem["id"]
    assert problem["detail"] == "the job is done, but then the node failed: OSError: [Errno 5] Input/output error"
    assert (problem["hint"], problem["state"]) == (f"see it with: xsc compute job {jid}", "done"), problem
    record = jobs.records.load(jid)
    assert record["state"] == "done" and record["outputs"] and record["paid_on"], record
    assert await read_file(gateway, {o["name"]: o for o in record["outputs"]}["out/c.txt"]["capability"]) == b"abc"
    await owed_paid(gateway, record)  # by the running node
    paid = balances(gateway, provider)
    owed = record["charge"] + await compiled_for(provider, record["id"], "outputs")  # and the module pushed to it
    assert record["charge"] > 0 and (paid[0] - before[0], paid[1] - before[1]) == (-owed, owed)  # once

    gateway, _ = await restarted(node_factory, gateway, jid)
    assert gateway.app[NODE].jobs.records.load(jid) == record  # the start found it done, and paid nothing more
    await settle(gateway)
    assert balances(gateway, provider) == paid
    assert gateway.app[NODE].ledger.held(gateway.app[CLIENT_IDENTITY].public_key) == 0
    await verified(gateway)


async def test_a_remote_job_whose_ending_write_fails_is_told_as_its_record_stands_and_its_provider_paid_once(
        node_factory, monkeypatch) -> None:
    """The write that ends a remote run (done, with its outputs' links) fails, and so does every write after it: its
    caller is told the job ran and its record still says `storing` until the next start marks it interrupted (what
    that start then does), not that it is done nor that it was cut short; its provider, whose answer was checked, is
    paid by the running node what it answered, once, and the start pays nothing more."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    before = balances(gateway, provider)
    failing_now: list[bool] = []

    def failing(*args):
        failing_now.append(True)
        raise OSError(errno.EIO, "Input/output error")

    save, begin = jobs.records.save, jobs.storage.removals.begin

    async def removing(*args):  # (the write that records it failed takes its outputs out of the listing)
        return failing() if failing_now else await begin(*args)

    monkeypatch.setattr(jobs.records, "finished", failing)
    monkeypatch.setattr(jobs.records, "save", lambda *args: failing() if failing_now else save(*args))
    monkeypatch.setattr(jobs.storage.removals, "begin", removing)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, b"abc")
    monkeypatch.undo()
    assert (status, problem["code"], problem["state"]) == (503, "node-failed", "storing"), problem
    jid = problem["id"]
    assert problem["detail"] == f"the job {jid} ran, but the write that ends it failed (the node failed: OSError: " \
        "[Errno 5] Input/output error): its record says storing until the node's next start marks it interrupted"
    assert problem["hint"] == f"run it again with its stdin: ... | xsc compute run {module} --stdin -", problem
    assert jobs.records.load(jid)["state"] == "storing"
    ((authorization, charge),) = [(pay["authorization"], pay["charge"])
                                  for pay in jobs.records.load(jid)["answered"]["pays"]]
    await eventually_async(lambda: authorization not in {a.id.hex() for a in jobs.ledger.pending()},
                           "the job's tab paid while the node runs", 30)
    paid = balances(gateway, provider)
    owed = charge + await compiled_for(provider, jid, "outputs")  # and compiling the module pushed to it
    assert charge > 0 and (paid[0] - before[0], paid[1] - before[1]) == (-owed, owed)

    gateway, job = await restarted(node_factory, gateway, jid)
    assert job["state"] == "interrupted" and job["outputs"] == [], job  # as its caller was told
    assert not [f for f in await _files(gateway) if f["name"].startswith(f"job:{jid}")]
    await settle(gateway)
    assert balances(gateway, provider) == paid  # paid once
    assert gateway.app[NODE].ledger.held(gateway.app[CLIENT_IDENTITY].public_key) == 0
    await verified(gateway)


@pytest.mark.parametrize("where", ["forget", "invoked"])
async def test_a_remote_job_the_node_fails_between_keeping_its_checked_answer_and_storing_it_pays_once(
        node_factory, monkeypatch, where) -> None:
    """An OSError once the checked answer and what it owes are written (`storing`), before its outputs are stored:
    as its provider is told to forget the job, or as the market is told the fuel it spent.  The job is interrupted
    at once, and its provider, whose tab is still open, paid what it answered, once; a start changes nothing."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    user = gateway.app[CLIENT_IDENTITY].public_key
    before = balances(gateway, provider)
    kept, answer_kept = [], jobs.answers.answer_kept

    async def keeping(job, returned, *args):
        kept.append((job["id"], await answer_kept(job, returned, *args)))
        return kept[-1][1]

    def failing(*args):
        assert jobs.records.load(kept[0][0])["state"] == "storing"  # the window
        raise OSError(errno.EIO, "Input/output error")

    async def failing_async(*args):
        failing()

    monkeypatch.setattr(jobs.answers, "answer_kept", keeping)
    if where == "forget":
        monkeypatch.setattr(jobs.sent, "_forget", failing_async)
    else:
        monkeypatch.setattr(jobs.dealing, "invoked", failing)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, b"abc")
    monkeypatch.undo()
    assert (status, problem["code"]) == (503, "node-failed"), problem
    jid = problem["id"]
    assert problem["detail"] == f"the job {jid} was cut short: the node failed: OSError: [Errno 5] Input/output error"
    record = jobs.records.load(jid)
    assert record["state"] == "interrupted" and record["outputs"] == [] and "answered" not in record, record
    ((_, returned),) = kept
    charge = returned.run["charge"]
    await eventually_async(lambda: returned.authorization not in {a.id.hex() for a in jobs.ledger.pending()},
                           "the job's tab paid", 30)
    after = balances(gateway, provider)
    owed = charge + await compiled_for(provider, jid, "outputs")  # what it answered, once, and the module's compile
    assert charge > 0 and (after[0] - before[0], after[1] - before[1]) == (-owed, owed)
    assert jobs.ledger.held(user) == 0

    gateway, _ = await restarted(node_factory, gateway, jid)
    assert gateway.app[NODE].jobs.records.load(jid) == record
    await settle(gateway)
    assert balances(gateway, provider) == after and gateway.app[NODE].ledger.held(user) == 0
    assert not any((gateway.app[NODE].config.data_dir / "jobs").glob("answered-*"))  # its kept outputs removed
    await verified(gateway)


async def test_a_maps_input_whose_job_the_node_failed_is_recorded_failed_naming_the_job(node_factory,
                                                                                        monkeypatch) -> None:
    node = await node_factory("node")
    jobs = node.app[NODE].jobs
    cap = (await (await node.post("/v1/store/files", data=b"mapped\n")).json())["capability"]
    module = await deploy(node, "outputs", wasi=True)
    made = await (await node.post("/v1/compute/maps", json={"spec": {"module": module}, "as": "-", "over": [cap],
                                                           "inputs": [cap]})).json()
    failing_after(jobs.storage, monkeypatch, 0, OSError(errno.EIO, "Input/output error"))
    answer = await node.post(f"/v1/compute/maps/{made['id']}/inputs/0")
    problem = await answer.json()
    assert (answer.status, problem["code"]) == (503, "node-failed"), problem
    shown = await (await node.get(f"/v1/compute/maps/{made['id']}")).json()
    (entry,) = shown["results"]
    assert (shown["failed"], entry["state"], entry["job"]) == (1, "failed", problem["id"]), shown
    assert "the node failed: OSError: [Errno 5] Input/output error" in entry["error"], entry
    assert jobs.records.load(problem["id"])["state"] == "interrupted"


def test_a_failure_of_the_nodes_own_is_told_on_one_line_and_a_full_disk_as_such() -> None:
    from xsc.compute.job_answers import node_failure

    bug = node_failure(RuntimeError("a bug's words\nover lines\n" + "x" * 1000))
    assert (bug.code, bug.message) == ("node-failed", ("the node failed: RuntimeError: a bug's words over lines " +
                                                        "x" * 1000)[:400])
    assert node_failure(OSError(errno.ENOSPC, "No space left on device")).code == "disk-full"


async def test_the_clis_line_for_a_job_its_node_failed_names_the_command_that_runs_it_again_and_asks_once(
        node_factory, monkeypatch) -> None:
    """A job's POST answered 503 `node-failed` is not sent again by the CLI: the job's stdin went with it (a pipe is
    not read twice), and a run again may cost again (a provider whose checked answer came is paid for it).  Its one
    line says the failure and names the command that runs the job again; the node was asked once."""
    node = await node_factory("node")
    jobs = node.app[NODE].jobs
    module = await deploy(node, "outputs", wasi=True)
    failing_after(jobs.storage, monkeypatch, 0, OSError(errno.EIO, "Input/output error"))
    asked = []
    run_streamed = jobs.run_streamed
    monkeypatch.setattr(jobs, "run_streamed", lambda read: asked.append(1) or run_streamed(read))
    result = await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "run", module,
                                     "--stdin", "-", input=b"abc", env={"XSC_TOKEN": node.app[TOKEN]})
    monkeypatch.undo()
    line = error_line(result)
    assert line.startswith("xsc: error: the job ") and " was cut short: the node failed: OSError: [Errno 5] " \
        "Input/output error (run it again with its stdin: ... | xsc compute run " in line, line
    assert line.endswith(f"xsc compute run {module} --stdin -)"), line
    assert asked == [1]
