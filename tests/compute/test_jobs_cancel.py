"""A job cancelled by its user while it runs (compute/job_cancels.py): stopped at its next tick, charged what it used,
nothing of its outputs stored, its record `cancelled`, its waiting caller told in one line; the refusals; a provider
silent past the cancel's grace (job_cancels.CANCEL_GRACE), paid nothing for a record it answers later."""

from __future__ import annotations

import asyncio

from tests.support.cli import error_line, ok, xsc_in_process
from tests.support.compute import deploy
from tests.support.jobs import QUIET, run_job, running_on
from tests.support.waiting import eventually_async
from xsc import keys
from xsc.node import TOKEN
from xsc.node.appkeys import NODE

LONG = {"compute": {"timeout": 600, "fuel": 200_000_000_000}}  # a spinning job runs until cancelled: a minute or so
SPIN_LIMITS = {"timeout": 600, "fuel": 200_000_000_000}


def _cli(node, *args: str):
    return asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), *args,
                             env={"XSC_TOKEN": node.app[TOKEN]})


async def _spinning(node) -> dict:
    """The job running at `node` once its program runs (it spins until cancelled)."""
    async def under_way():
        jobs = (await (await node.get("/v1/compute/jobs")).json())["jobs"]
        running = [j for j in jobs if j["state"] == "running"]
        return node.app[NODE].compute.admitted >= 1 and running and running[0]

    return await eventually_async(under_way, "the spinning job to run", 30)


async def test_a_job_cancelled_while_it_runs_is_stopped_charged_what_it_used_and_stores_nothing(node_factory):
    node = await node_factory("node", **QUIET, **LONG)
    spin = await deploy(node, "spin", wasi=True)
    files_before = (await (await node.get("/v1/store/files")).json())["files"]
    running = asyncio.ensure_future(run_job(node, {"module": spin, "outputs": True, "limits": SPIN_LIMITS}))
    job = await _spinning(node)
    line = (await _cli(node, "compute", "cancel", job["id"])).stderr.decode().strip()
    status, told = await running  # stopped at its next tick, not at its minute's end
    assert (status, told["code"]) == (409, "job-cancelled"), told
    assert told["detail"].startswith("the job was cancelled while it ran: charged "), told
    assert told["hint"] == f"run it again with: xsc compute rerun {job['id']}", told
    cancelled = await (await node.get(f"/v1/compute/jobs/{job['id']}")).json()
    assert cancelled["state"] == "cancelled" and cancelled["outputs"] == [] and cancelled["executions"] == 1
    assert 0 < cancelled["charge"] == told["charged"], cancelled  # what it used up to the stop, metered
    assert line == f"cancelled the job {job['id']}: charged {_credits(cancelled['charge'])} credits for what it " \
        "used, nothing of its outputs stored", line
    assert (await (await node.get("/v1/store/files")).json())["files"] == files_before
    with node.app[NODE].db.iterator(prefix=keys.JOB_OUTPUTS) as links:
        assert list(links) == []  # no lineage for it
    assert not list((node.app[NODE].jobs.work_dir).glob("job-*"))  # nothing half-written left behind
    listed = (await (await node.get("/v1/compute/jobs")).json())["jobs"]
    assert [j["state"] for j in listed if j["id"] == job["id"]] == ["cancelled"]
    shown = ok(await _cli(node, "compute", "job", job["id"]))
    assert "cancelled" in shown and "its user cancelled it while it ran" in shown, shown


async def test_a_cancel_of_a_job_that_ended_or_of_none_is_refused_naming_the_list(node_factory):
    node = await node_factory("node", **QUIET, **LONG)
    wc = await deploy(node, "wc", wasi=True)
    status, done = await run_job(node, {"module": wc, "stdin": "-"}, stdin=b"a b\n")
    assert status == 201, done
    response = await node.post(f"/v1/compute/jobs/{done['id']}/cancel")
    problem = await response.json()
    assert (response.status, problem["code"]) == (409, "job-not-running"), problem
    assert "it is done" in problem["detail"] and "xsc compute jobs" in problem["hint"], problem
    line = error_line(await _cli(node, "compute", "cancel", done["id"][:12]))
    assert line == f"xsc: error: the job {done['id']} cannot be cancelled: it is done (cancel a job while it runs: " \
        "xsc compute jobs lists them with their state)", line
    response = await node.post(f"/v1/compute/jobs/{'ab' * 32}/cancel")
    assert (response.status, (await response.json())["code"]) == (404, "job-not-found")
    line = error_line(await _cli(node, "compute", "cancel", "ab" * 32))
    assert f"no job {'ab' * 32}" in line and "xsc compute jobs" in line, line
    assert "not a job id" in error_line(await _cli(node, "compute", "cancel", "zz"))
    assert (await (await node.get(f"/v1/compute/jobs/{done['id']}")).json())["state"] == "done"


async def test_the_run_a_cancel_stops_says_so_in_one_line_and_exits_non_zero(node_factory):
    node = await node_factory("node", **QUIET, **LONG)
    spin = await deploy(node, "spin", wasi=True)
    running = asyncio.ensure_future(_cli(node, "compute", "run", spin, "--no-stdin", "--timeout", "600", "--fuel",
                                         "200000000000"))
    job = await _spinning(node)
    response = await node.post(f"/v1/compute/jobs/{job['id']}/cancel")
    cancelled = await response.json()
    assert response.status == 200 and cancelled["state"] == "cancelled", cancelled
    result = await running
    assert result.stderr.decode().strip().splitlines() == [
        f"xsc: error: the job was cancelled while it ran: charged {_credits(cancelled['charge'])} credits for what "
        f"it used, nothing of its outputs stored (run it again with: xsc compute rerun {job['id']})"], result.stderr
    assert result.returncode == 1


async def test_a_job_cancelled_before_its_run_began_runs_nothing_and_is_charged_nothing(node_factory, monkeypatch):
    node = await node_factory("node", **QUIET, **LONG)
    spin = await deploy(node, "spin", wasi=True)
    holding, go_on = asyncio.Event(), asyncio.Event()
    monkeypatch.setattr(node.app[NODE].jobs, "_execute", _cancelled_first(node.app[NODE].jobs, holding, go_on))
    running = asyncio.ensure_future(run_job(node, {"module": spin, "limits": SPIN_LIMITS}))
    await holding.wait()
    (jid,) = [j["id"] for j in (await (await node.get("/v1/compute/jobs")).json())["jobs"] if j["state"] == "running"]
    cancel = asyncio.ensure_future(node.post(f"/v1/compute/jobs/{jid}/cancel"))
    await eventually_async(lambda: node.app[NODE].jobs.cancels.cancelled(jid), "the cancel to be asked")
    go_on.set()
    status, told = await running
    assert (status, told["code"]) == (409, "job-cancelled") and "before it ran" in told["detail"], told
    response = await cancel
    job = await response.json()
    assert response.status == 200 and job["state"] == "cancelled" and job["executions"] == 0, job
    assert job.get("charge", 0) == 0 and "before it ran" in job["error"], job


def _cancelled_first(jobs, holding: asyncio.Event, go_on: asyncio.Event):
    """The job service's `_execute`, entered once the test has asked for the cancel: as if the cancel came while
    the job was placed, before its run began."""
    real = jobs._execute

    async def execute(*args, **kwargs):
        holding.set()
        await go_on.wait()
        return await real(*args, **kwargs)

    return execute


def _credits(micro: int) -> str:
    from xsc.units import format_credits

    return format_credits(micro)


async def test_a_job_on_a_provider_is_stopped_there_by_its_sender_alone_and_paid_what_it_used_once(node_factory):
    from tests.support.jobs import balances, compiled, network, settle, verified
    from xsc.compute import sent_jobs
    from xsc.errors import PeerRefused
    from xsc.node import IDENTITY

    gateway, providers = await network(node_factory, 2, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "limits": SPIN_LIMITS}))

    async def sent():
        jobs = (await (await gateway.get("/v1/compute/jobs")).json())["jobs"]
        job = jobs and await (await gateway.get(f"/v1/compute/jobs/{jobs[0]['id']}")).json()
        busy = [p for p in providers if (await (await p.get("/v1/node/status")).json())["compute"]["running"] >= 1]
        return job and "sent" in job and busy and (job, busy[0])

    job, runner = await eventually_async(sent, "the job running on a provider", 30)
    before = balances(gateway, runner)
    (stranger,) = [p for p in providers if p is not runner]
    url = gateway.app[NODE].paid.peers.peer(job["sent"]["provider"]).url
    try:  # another node's cancel of it: none of its business, not even its id
        await sent_jobs.wire.cancel(stranger.app[NODE].paid.client, url, job["sent"]["provider"], job["sent"]["job"],
                                    30)
        raise AssertionError("a stranger's cancel was taken")
    except PeerRefused as err:
        assert err.details.get("peer_status") == 404, err.details
    assert (await (await runner.get("/v1/node/status")).json())["compute"]["running"] >= 1  # it still runs
    response = await gateway.post(f"/v1/compute/jobs/{job['id'][:8]}/cancel")
    cancelled = await response.json()
    assert response.status == 200 and cancelled["state"] == "cancelled", cancelled
    assert cancelled["provider"] == runner.app[IDENTITY].id and cancelled["outputs"] == [], cancelled
    status, told = await running
    assert (status, told["code"]) == (409, "job-cancelled") and told["charged"] == cancelled["charge"] > 0, told
    budget = job["sent"]["budget"]
    assert cancelled["charge"] <= budget  # what it used up to the stop, metered by the provider, within its budget
    assert [p["provider"] for p in cancelled["paid_on"]] == [runner.app[IDENTITY].id], cancelled
    await settle(gateway)
    owed = cancelled["charge"] + compiled(job, "spin")  # what it used, and compiling the module pushed to it
    after = balances(gateway, runner)
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed)  # once
    assert runner.app[NODE].hosted_jobs.status() == {"hosted": 0}
    assert runner.app[NODE].trust.line(gateway.app[IDENTITY].id)["reserved"] == 0
    await verified(gateway)
    await verified(runner)


async def _cancelled_unanswered(gateway, provider, module: str) -> None:
    """A spinning job run on `provider` and cancelled once it runs there, its provider's answer never coming in time:
    the job `cancelled`, nothing charged, and its caller told so."""
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "limits": SPIN_LIMITS}))
    job = await running_on(gateway, provider)
    response = await gateway.post(f"/v1/compute/jobs/{job['id']}/cancel")
    cancelled = await response.json()
    assert response.status == 200 and cancelled["state"] == "cancelled", cancelled
    assert cancelled["error"] == "its user cancelled it while it ran, and its provider did not answer: nothing is " \
        "charged", cancelled
    status, told = await running
    assert (status, told["code"]) == (409, "job-cancelled") and told["charged"] == 0, told


async def test_a_job_whose_provider_answers_neither_its_cancel_nor_its_run_ends_cancelled_unpaid(node_factory,
                                                                                                monkeypatch):
    """Its provider silent (its run's request, and its cancel's, never answered): the job ends `cancelled` once the
    cancel's grace has passed (job_cancels.CANCEL_GRACE), not at its run request's own timeout."""
    from tests.support.jobs import balances, compiled, network, settle, verified
    from xsc.compute import job_cancels, provider_stops, sent_jobs
    from xsc.errors import PeerUnreachable

    monkeypatch.setattr(job_cancels, "CANCEL_GRACE", 1.0)  # (its run request's timeout: 600 s and a minute)
    gateway, (provider,) = await network(node_factory, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    real_run = sent_jobs.wire.run

    async def unanswered(client, url, provider_id, job, timeout, most):  # the provider's answer never comes
        running = asyncio.ensure_future(real_run(client, url, provider_id, job, timeout=timeout, most=most))
        try:
            await asyncio.Event().wait()
        finally:
            running.cancel()

    async def cancel_unanswered(*args, **kwargs):
        raise PeerUnreachable("peer is unreachable: connection refused")

    monkeypatch.setattr(sent_jobs.wire, "run", unanswered)
    monkeypatch.setattr(provider_stops.wire, "cancel", cancel_unanswered)
    before = balances(gateway, provider)
    await _cancelled_unanswered(gateway, provider, module)
    await settle(gateway)  # its tab's authorization dropped, as an unanswered run's: nothing paid
    assert balances(gateway, provider) == before and gateway.app[NODE].ledger.pending() == []
    await verified(gateway)
    provider.app[NODE].hosted_jobs.cut_short()  # (its run goes on there, unasked: stopped rather than waited for)


async def test_a_provider_whose_answer_to_a_cancel_comes_past_its_grace_is_not_paid_for_its_late_record(
        node_factory, monkeypatch) -> None:
    """The provider stops the run and signs its `cancelled` record, but its answer is held past the cancel's grace:
    the job ends `cancelled` then, nothing paid, and the record the provider signed is not paid either."""
    from tests.support.jobs import balances, compiled, network, settle, verified
    from xsc.compute import job_cancels, sent_jobs

    monkeypatch.setattr(job_cancels, "CANCEL_GRACE", 1.0)
    gateway, (provider,) = await network(node_factory, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    real_run, late = sent_jobs.wire.run, asyncio.Event()

    async def held(client, url, provider_id, job, timeout, most):  # answered, but never in time
        await real_run(client, url, provider_id, job, timeout=timeout, most=most)
        late.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(sent_jobs.wire, "run", held)
    before = balances(gateway, provider)
    await _cancelled_unanswered(gateway, provider, module)
    await late.wait()  # its provider did stop the run, and signed what it used

    async def signed():
        records = (await (await provider.get("/v1/compute/provenance?limit=100")).json())["records"]
        return [r for r in records if r["record"].get("trap", {}).get("kind") == "cancelled"]

    (record,) = await eventually_async(signed, "the provider's record of the run it stopped")
    assert record["record"]["charge"] > 0, record
    await settle(gateway)
    await eventually_async(lambda: gateway.app[NODE].ledger.pending() == [], "its tab dropped")
    assert balances(gateway, provider) == before  # the late record is not paid
    for node in (gateway, provider):
        await verified(node)


async def test_a_tagged_request_names_the_job_it_runs_while_it_runs_and_no_other(node_factory):
    import json

    node = await node_factory("node", **QUIET, **LONG)
    spin = await deploy(node, "spin", wasi=True)
    tag = "ab" * 16
    body = json.dumps({"module": spin, "limits": SPIN_LIMITS}).encode() + b"\n"
    running = asyncio.ensure_future(node.post(f"/v1/compute/jobs?asker={tag}", data=body,
                                              headers={"Content-Type": "application/x-xsc-job"}))
    job = await _spinning(node)

    async def asked(asker: str) -> dict:
        return await (await node.get("/v1/compute/jobs", params={"asker": asker})).json()

    assert await asked(tag) == {"id": job["id"]}
    assert await asked("cd" * 16) == {"id": None} and await asked("not a tag") == {"id": None}
    assert (await node.post(f"/v1/compute/jobs/{job['id']}/cancel")).status == 200
    assert (await running).status == 409
    assert await asked(tag) == {"id": None}  # forgotten once its run ended


async def test_a_job_cancelled_while_its_bytes_go_to_its_provider_never_runs_there_and_pays_nothing(node_factory,
                                                                                                   monkeypatch):
    from tests.support.jobs import balances, compiled, network, settle, verified
    from xsc.compute import sent_jobs
    from xsc.node import IDENTITY

    gateway, (provider,) = await network(node_factory, **LONG)
    module = await deploy(gateway, "wc", wasi=True)
    real_send, sending, go_on = sent_jobs.wire.send, asyncio.Event(), asyncio.Event()

    async def held_send(*args, **kwargs):  # the provider took the job; its bytes wait
        sending.set()
        await go_on.wait()
        return await real_send(*args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "send", held_send)
    before = balances(gateway, provider)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"a b\n" * 1000))
    await sending.wait()
    (jid,) = [j["id"] for j in (await (await gateway.get("/v1/compute/jobs")).json())["jobs"]]
    sent = (await (await gateway.get(f"/v1/compute/jobs/{jid}")).json())
    cancel = asyncio.ensure_future(gateway.post(f"/v1/compute/jobs/{jid}/cancel"))
    await eventually_async(lambda: provider.app[NODE].hosted_jobs.status() == {"hosted": 0},
                           "the provider to drop the job")  # cancelled by its sender before it ran
    go_on.set()
    status, told = await running
    assert (status, told["code"]) == (409, "job-cancelled") and "before it ran" in told["detail"], told
    job = await (await cancel).json()
    assert job["state"] == "cancelled" and job["executions"] == 0 and job.get("charge", 0) == 0, job
    assert job["error"] == "its user cancelled it before it ran: nothing is charged for its run", job
    assert provider.app[NODE].trust.line(gateway.app[IDENTITY].id)["reserved"] == 0
    await settle(gateway)
    # Nothing ran; compiling the module pushed for it was done, its price held before the push: that is paid.
    compile = compiled(sent, "wc")
    assert balances(gateway, provider) == (before[0] - compile, before[1] + compile)
    assert gateway.app[NODE].ledger.pending() == []
    await verified(gateway)


async def test_a_cancel_cuts_the_sending_of_a_jobs_large_input_at_once_and_nothing_more_of_it_is_sent(node_factory,
                                                                                                     monkeypatch):
    """The provider reads the job's first megabyte, then its link stalls on the next (its route reads nothing more of
    it until the test's end: only the send's own timeout, peers.request_timeout, 10 s, would end it).  The cancel cuts
    that send at once: the job ends `cancelled` before it ran while that send is still stalled, nothing more sent, the
    provider holding nothing of it (the cancel itself dropped it there) and nothing paid."""
    from tests.support.jobs import balances, compiled, network, settle, verified
    from xsc.compute import sent_jobs
    from xsc.node import IDENTITY
    from xsc.node.http import hosted_jobs as route

    gateway, (provider,) = await network(node_factory, **LONG)
    module = await deploy(gateway, "wc", wasi=True)
    real_read, real_send = route.read_body, sent_jobs.wire.send
    stalled, release, sent = asyncio.Event(), asyncio.Event(), []

    async def stalling(request):  # the second piece's bytes wait in the link
        if request.match_info["offset"] != "0":
            stalled.set()
            await release.wait()
        return await real_read(request)

    async def counted(client, url, provider_id, job, offset, data):
        sent.append(offset)
        return await real_send(client, url, provider_id, job, offset, data)

    monkeypatch.setattr(route, "read_body", stalling)
    monkeypatch.setattr(sent_jobs.wire, "send", counted)
    before = balances(gateway, provider)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"a b\n" * (3 << 18)))
    await stalled.wait()
    (jid,) = [j["id"] for j in (await (await gateway.get("/v1/compute/jobs")).json())["jobs"]]
    sending = list(sent)
    compile = compiled(await (await gateway.get(f"/v1/compute/jobs/{jid}")).json(), "wc")  # of the module pushed
    response = await gateway.post(f"/v1/compute/jobs/{jid}/cancel")
    job = await response.json()
    assert response.status == 200 and job["state"] == "cancelled" and not release.is_set(), job  # the send still stalled
    assert job["executions"] == 0 and job.get("charge", 0) == 0, job
    assert job["error"] == "its user cancelled it before it ran: nothing is charged for its run", job
    status, told = await running
    assert (status, told["code"]) == (409, "job-cancelled") and "before it ran" in told["detail"], told
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}  # dropped as its cancel was answered
    assert provider.app[NODE].trust.line(gateway.app[IDENTITY].id)["reserved"] == 0
    release.set()  # the stalled piece's request, cut by its sender, is taken by no job
    await settle(gateway)
    assert sent == sending == [0, 1 << 20], sent  # nothing sent once the cancel came
    # Nothing ran: compiling the module pushed for it alone is paid.
    assert balances(gateway, provider) == (before[0] - compile, before[1] + compile)
    assert gateway.app[NODE].ledger.pending() == []
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}
    await verified(gateway)
    await verified(provider)


async def test_a_cancel_its_provider_refuses_with_a_5xx_is_owed_still_and_sent_again_until_the_run_stops(
        node_factory, monkeypatch) -> None:
    """A provider answering a cancel 503 (stopping, or failing) has said nothing of the job: the cancel stays owed
    and is sent again, and its run there stops once it is heard."""
    from tests.support.jobs import network
    from xsc.compute import provider_stops
    from xsc.errors import PeerRefused

    monkeypatch.setattr(provider_stops, "RETRY", 0.2)
    gateway, (provider,) = await network(node_factory, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    real_cancel, refusals = provider_stops.wire.cancel, []

    async def cancel(client, url, provider_id, job, timeout):
        if not refusals:
            refusals.append(job)
            raise PeerRefused(f"peer {url} refused: 503 node-stopping", peer_status=503, peer_code="node-stopping")
        return await real_cancel(client, url, provider_id, job, timeout)

    monkeypatch.setattr(provider_stops.wire, "cancel", cancel)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "limits": SPIN_LIMITS}))
    job = await running_on(gateway, provider)
    cancelled = await (await gateway.post(f"/v1/compute/jobs/{job['id']}/cancel")).json()
    assert cancelled["state"] == "cancelled" and refusals, cancelled
    assert (await running)[1]["code"] == "job-cancelled"
    await eventually_async(lambda: provider.app[NODE].hosted_jobs.status() == {"hosted": 0},
                           "the provider's run stopped by the cancel sent again", 30)
    stops = gateway.app[NODE].jobs.cancels.stops
    await eventually_async(lambda: not stops._owed and stops.store.stops_owed() == {}, "the cancel forgotten, heard")
