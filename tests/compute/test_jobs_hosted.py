"""A provider's side of jobs other nodes place on it (compute/hosted_jobs.py), on real nodes: what a job reserves
(its sender's trust line, its tab) is held by the job once it is taken, and given back exactly once whatever
ends it: a failure of the provider's own disk, its sender giving it up, or a stop while it runs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil

import pytest

from tests.support.compute import deploy
from tests.support.disks import tmpfs
from tests.support.jobs import compiled, network, run_job, settled
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async
from xsc.compute import hosted_jobs, sent_jobs
from xsc.compute.jobspec import parse_job
from xsc.errors import PeerRefused
from xsc.net.compute import close_tab
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

EMPTY = hashlib.sha256(b"").hexdigest()
HANG = 20.0  # a deadline against a hang, never a timing assertion


async def _tab(gateway, provider):
    """A tab of the gateway's with the provider, reserved for one job: the gateway's node, the provider's id and
    url, its price, the tab (give it back with `node.paid.gateway_tabs.answered(tab, 10**6, None)`)."""
    node = gateway.app[NODE]
    provider_id, url = provider.app[IDENTITY].id, provider.app[NODE].peers.url
    price = provider.app[NODE].market.offer.honoured_ask("compute")
    return node, provider_id, url, price, await node.paid.gateway_tabs.reserve(provider_id, price, 10**6)


def _body(node, price: int, tab, spec: dict, data: list[dict]) -> dict:
    """A job's begin as the gateway sends it, on `tab`."""
    return {"spec": spec, "price": price, "authorization": tab.hex, "deal": {},
            "memory_price": node.compute.memory_price, "data": data}


async def _begin(gateway, provider, module: str) -> tuple[str, str]:
    """Send the provider a job reading an empty stdin, on a tab of the gateway's; its id there, and the tab's
    authorization (hex)."""
    node, provider_id, url, price, tab = await _tab(gateway, provider)
    body = _body(node, price, tab, parse_job({"module": module, "stdin": "-"}).canonical(),
                 [{"path": "stdin", "size": 0, "sha256": EMPTY, "verify_hash": ""}])
    try:
        return await sent_jobs.wire.begin(node.client, url, provider_id, body), tab.hex
    finally:
        node.paid.gateway_tabs.answered(tab, 10**6, None)


@pytest.mark.parametrize("disk, status, code, why", [("nr_inodes=1", 507, "disk-full", "disk is full"),
                                                     ("ro", 500, "internal-error", "(Read-only file system)")])
async def test_a_job_whose_files_the_provider_cannot_make_gives_its_reservations_back_at_once(
        node_factory, disk, status, code, why) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(provider, "outputs", wasi=True)
    hosted = provider.app[NODE].hosted_jobs
    shutil.rmtree(hosted.work_dir, ignore_errors=True)
    with tmpfs(hosted.work_dir, "4g", disk):  # room by its size, yet no directory can be made in it
        with pytest.raises(PeerRefused) as refused:
            await _begin(gateway, provider, module)
    details = refused.value.details
    assert (details["peer_status"], details["peer_code"]) == (status, code), details
    assert why in refused.value.message, refused.value.message
    line = provider.app[NODE].trust.line(gateway.app[IDENTITY].id)
    assert line["reserved"] == 0, line  # not held until the job would be dropped as idle
    assert provider.app[NODE].paid.provider_tabs.kept == 0  # nor on its tab: nothing runs or is reserved under it
    assert hosted.status() == {"hosted": 0}
    assert await _begin(gateway, provider, module)  # the disk back: the sender's next job is taken


async def test_a_job_given_up_gives_its_reservations_back_at_that_moment(node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(provider, "outputs", wasi=True)
    node, sender, provider_id = provider.app[NODE], gateway.app[IDENTITY].id, provider.app[IDENTITY].id

    def held() -> tuple:
        return node.trust.line(sender)["reserved"], node.paid.provider_tabs.kept, node.hosted_jobs.status()["hosted"]

    # A job its sender leaves without a request is given up IDLE after the last one, not at a later round.
    monkeypatch.setattr(hosted_jobs, "IDLE", 0.5)
    await _begin(gateway, provider, module)
    assert held()[0] > 0 and held()[1:] == (1, 1)
    await eventually_async(lambda: held() == (0, 0, 0), "the idle job dropped and its reservations given back", 10)
    monkeypatch.undo()
    # Its sender closes the job's tab before asking for its run (its node restarted): the job is given up as the
    # close is answered, not at the provider's next look at its jobs.
    _, authorization = await _begin(gateway, provider, module)
    assert held()[0] > 0 and held()[1:] == (1, 1)
    with pytest.raises(PeerRefused) as closed:
        await close_tab(gateway.app[NODE].client, node.peers.url, provider_id, authorization)
    assert closed.value.details["peer_code"] == "nothing-owed", closed.value
    assert held() == (0, 0, 0)


async def test_a_job_its_provider_stops_while_it_runs_ends_stopped_unrecorded_and_is_placed_again(
        node_factory, monkeypatch) -> None:
    """A run still going STOP_GRACE into its provider's stop is stopped, and has ended before the stop goes on to
    close the stores it writes: nothing of it recorded or charged, its reservation (the sender's trust line, its
    tab) given back once.  Its sender is answered 503 `node-stopping`, marked cut short, and takes it as the provider
    going away: the job goes to another provider (which stops too here: the user reads the stop, not a cap its outputs
    were over), and the job is `interrupted`, as one cut short by its own node's stop, not `refused` as one no
    provider began."""
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "spin", wasi=True)
    sender = gateway.app[IDENTITY].id
    monkeypatch.setattr(hosted_jobs, "STOP_GRACE", 0.01)  # the stop gives up waiting while the job spins
    ends: list[tuple] = []
    for provider in providers:
        node = provider.app[NODE]

        def counted_used(gateway_id, budget, run, used=node.paid.used) -> None:
            if gateway_id == sender:
                ends.append(("line", budget, run))
            used(gateway_id, budget, run)

        def counted_ran(tab, budget, run, staged=False, ran=node.paid.provider_tabs.ran) -> None:
            ends.append(("tab", budget, run))
            ran(tab, budget, run, staged)

        monkeypatch.setattr(node.paid, "used", counted_used)
        monkeypatch.setattr(node.paid.provider_tabs, "ran", counted_ran)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "limits": {"timeout": 5}}))

    async def spinning(left: list) -> object:
        for provider in left:
            if (await (await provider.get("/v1/node/status")).json())["compute"]["running"] >= 1:
                return provider
        return None

    left = list(providers)
    while left:  # the job runs on one provider, then, that one stopped, on the other
        provider = await eventually_async(lambda: spinning(left), "the job running on a provider")
        left.remove(provider)
        node = provider.app[NODE]
        (listed,) = (await (await gateway.get("/v1/compute/jobs")).json())["jobs"]
        sent = await (await gateway.get(f"/v1/compute/jobs/{listed['id']}")).json()
        ends.clear()  # (the market's checks of the sender before the job reserve and release too)
        await node.hosted_jobs.close()  # the stop's part of jobs, before the journal and the ledger close
        (tab_end, line_end) = ends  # given back once, by the run that held it, before the stop went on
        assert (tab_end[0], line_end[0]) == ("tab", "line") and tab_end[1:] == line_end[1:] == (tab_end[1], None)
        assert node.trust.line(sender)["reserved"] == 0 and node.hosted_jobs.status() == {"hosted": 0}
        # Of the job, only compiling the module pushed to it was used: its tab pays it (the run was charged nothing).
        assert node.trust.line(sender)["used"] == compiled(sent, "spin")
        records = (await (await provider.get("/v1/compute/provenance?limit=100")).json())["records"]
        assert not [r for r in records if "job" in r["record"]], records  # nothing of it recorded
    status, problem = await running
    assert status == 503 and problem["peer_code"] == "node-stopping" and problem["peer_cut_short"], problem
    assert problem["detail"] == ("the job was cut short: its provider stopped while it ran, and no other provider "
                                 "took it: nothing is paid"), problem
    assert problem["hint"] == f"run it again with: xsc compute rerun {problem['id']}", problem  # its id once
    job = await (await gateway.get(f"/v1/compute/jobs/{problem['id']}")).json()
    assert job["state"] == "interrupted" and job["outputs"] == [], job
    assert job["error"] == ("its provider stopped while it ran, and no other provider took it: nothing is paid"
                            ) and job["error_hint"] == problem["hint"], job
    await settled(gateway)  # the job's tabs, each holding the compile of the module pushed to its provider, paid
    for provider in providers:
        line = provider.app[NODE].trust.line(sender)
        assert line["used"] == line["paid"] > 0 and provider.app[NODE].paid.provider_tabs.kept == 0, line
    assert gateway.app[NODE].ledger.holding() == {}


async def test_a_run_holds_its_providers_stop_saying_so_and_a_forced_stop_cuts_it_short_at_once(
        node_factory, caplog, monkeypatch) -> None:
    """A provider's stop waits for a job's run (its sender's request for it), and says so; forced (a second SIGINT
    or SIGTERM), it waits no more, neither for the request nor for the run's grace: the run is stopped at once and
    ends as a run the stop cuts short ends (nothing of it charged, its reservation given back once)."""
    caplog.set_level(logging.INFO, logger="xsc.serve.stop")
    gateway, (provider,) = await network(node_factory, compute={"timeout": 600})
    module = await deploy(gateway, "spin", wasi=True)
    sender, node = gateway.app[IDENTITY].id, provider.app[NODE]
    ends: list[tuple] = []

    def counted_ran(tab, budget, run, staged=False, ran=node.paid.provider_tabs.ran) -> None:
        ends.append((budget, run))
        ran(tab, budget, run, staged)

    monkeypatch.setattr(node.paid.provider_tabs, "ran", counted_ran)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "limits": {"timeout": 600}}))
    await eventually_async(lambda: running.done() or node.compute.status()["running"] >= 1, "the job running")
    assert not running.done(), running.result()
    closing = asyncio.ensure_future(close_node(provider))
    try:
        await eventually_async(lambda: "stopping: waiting for 1 request in flight (POST /v1/peer/compute/jobs/{job}/run)"
                               in caplog.text, "the stop to say it waits for the run")
        assert not closing.done()
        provider.server.runner.force()
        await asyncio.wait_for(closing, HANG)  # (unforced: 30 s for the request, then the run's grace)
    finally:
        closing.cancel()
    assert [run for _, run in ends] == [None]  # its tab given back once, charged nothing
    assert node.trust.line(sender)["reserved"] == 0 and node.hosted_jobs.status() == {"hosted": 0}
    # Its tab is kept holding the compile of the module pushed for the job alone, which only it pays (its sender, cut
    # off mid-run, drops it: a run whose answer never came is not paid).
    assert node.paid.provider_tabs.kept == 1
    assert "cutting short 1 request in flight (POST /v1/peer/compute/jobs/{job}/run)" in caplog.text
    status, problem = await asyncio.wait_for(running, HANG)  # its sender saw the provider go away mid-run
    assert status == 502 and "was cut short" in problem["detail"], problem


async def test_a_sender_asking_for_the_run_of_bytes_that_did_not_match_their_hash_gets_nothing_run_or_signed(
        node_factory) -> None:
    """The sender names a stdin's SHA-256, sends other bytes, then asks for the run anyway: the provider would sign a
    record that its program read bytes of that hash.  The job is dropped as the bytes fail, its reservations back."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(provider, "outputs", wasi=True)
    sender = gateway.app[IDENTITY].id
    node, provider_id, url, price, tab = await _tab(gateway, provider)
    named = hashlib.sha256(b"the named bytes").hexdigest()
    body = _body(node, price, tab, parse_job({"module": module, "stdin": "-"}).canonical(),
                 [{"path": "stdin", "size": 15, "sha256": named, "verify_hash": ""}])
    job = await sent_jobs.wire.begin(node.client, url, provider_id, body)
    with pytest.raises(PeerRefused) as mismatched:
        await sent_jobs.wire.send(node.client, url, provider_id, job, 0, b"the other bytes")
    assert mismatched.value.details["peer_status"] == 400, mismatched.value.details
    with pytest.raises(PeerRefused) as refused:
        await sent_jobs.wire.run(node.client, url, provider_id, job, timeout=60, most=1 << 20)
    assert refused.value.details["peer_status"] == 404, refused.value.details
    records = (await (await provider.get("/v1/compute/provenance?limit=100")).json())["records"]
    assert not [r for r in records if "job" in r["record"]]  # nothing ran, nothing signed
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}
    assert provider.app[NODE].trust.line(sender)["reserved"] == 0
    node.paid.gateway_tabs.answered(tab, 10**6, None)


async def test_jobs_taken_at_once_are_promised_no_more_disk_than_there_is_between_them(node_factory,
                                                                                       monkeypatch) -> None:
    """Each job's data and outputs fit the free disk, both together do not: the second is refused (507), not taken
    to fill the disk under the node's own database as its bytes come."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(provider, "outputs", wasi=True)
    monkeypatch.setattr(hosted_jobs, "DISK_MARGIN", 1 << 20)
    hosted = provider.app[NODE].hosted_jobs
    size = 24 << 20
    spec = parse_job({"module": module, "stdin": "-", "limits": {"bytes_in": size, "bytes_out": 1 << 20}})
    node, provider_id, url, price, tab = await _tab(gateway, provider)
    body = _body(node, price, tab, spec.canonical(),
                 [{"path": "stdin", "size": size, "sha256": "ab" * 32, "verify_hash": ""}])
    shutil.rmtree(hosted.work_dir, ignore_errors=True)
    try:
        with tmpfs(hosted.work_dir, "40m"):
            job = await sent_jobs.wire.begin(node.client, url, provider_id, body)
            with pytest.raises(PeerRefused) as refused:
                await sent_jobs.wire.begin(node.client, url, provider_id, body)
            assert refused.value.details["peer_status"] == 507, refused.value.details
            assert hosted.status() == {"hosted": 1}
            await sent_jobs.wire.forget(node.client, url, provider_id, job)
    finally:
        node.paid.gateway_tabs.answered(tab, 10**6, None)


@pytest.mark.parametrize("path", ["/in/..", "/in/.", "/in/../../etc/passwd", "/in/a/b", "/in/", "/out/x", "in/x"])
async def test_a_sent_job_naming_an_input_outside_its_own_file_under_in_is_refused_before_anything_is_taken(
        node_factory, path) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(provider, "outputs", wasi=True)
    sender = gateway.app[IDENTITY].id
    node, provider_id, url, price, tab = await _tab(gateway, provider)
    spec = {**parse_job({"module": module}).canonical(), "inputs": [path]}
    body = _body(node, price, tab, spec, [{"path": path, "size": 0, "sha256": EMPTY, "verify_hash": ""}])
    try:
        with pytest.raises(PeerRefused) as refused:
            await sent_jobs.wire.begin(node.client, url, provider_id, body)
    finally:
        node.paid.gateway_tabs.answered(tab, 10**6, None)
    assert refused.value.details["peer_status"] == 400, refused.value.details
    assert "/in/NAME" in refused.value.message, refused.value.message
    hosted = provider.app[NODE].hosted_jobs
    assert hosted.status() == {"hosted": 0} and provider.app[NODE].trust.line(sender)["reserved"] == 0
    assert not hosted.work_dir.exists() or not any(hosted.work_dir.iterdir())


@pytest.mark.parametrize("ran", [False, True], ids=["taken", "run"])
async def test_a_job_goes_in_its_time_however_often_its_sender_asks_about_it(node_factory, monkeypatch, ran) -> None:
    """A request now and then (a piece of data of no bytes, an output asked for before the run, or after it) would
    hold the job's place (of MAX_HOSTED, all senders'), what it reserved and its files for good: a job is kept IDLE
    and the time to send its data, unless it runs, and IDLE and the time to fetch its outputs from its run."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(provider, "outputs", wasi=True)
    monkeypatch.setattr(hosted_jobs, "IDLE", 2.0)  # a loaded machine may take 0.5 s from the run to the first fetch
    node, sender = gateway.app[NODE], gateway.app[IDENTITY].id
    provider_id, url = provider.app[IDENTITY].id, provider.app[NODE].peers.url
    job, _ = await _begin(gateway, provider, module)
    if ran:
        answer = await sent_jobs.wire.run(node.client, url, provider_id, job, timeout=60, most=1 << 20)
        assert [o["name"] for o in answer["outputs"]] == ["out/a.txt", "out/b.txt", "out/c.txt"]

    async def asking() -> int:
        asked = 0
        while True:  # each answered at once: the job is never idle
            try:
                if ran:
                    await sent_jobs.wire.fetch(node.client, url, provider_id, job, 0, 0)
                else:
                    await sent_jobs.wire.send(node.client, url, provider_id, job, 0, b"")
            except PeerRefused as gone:
                assert gone.details["peer_status"] == 404, gone.details
                return asked
            asked += 1
            await asyncio.sleep(0.01)  # a sender asking now and then, within the peers' rate (1,000 work units a s)

    assert await asyncio.wait_for(asking(), 30) > 0
    hosted = provider.app[NODE].hosted_jobs
    assert hosted.status() == {"hosted": 0} and not any(hosted.work_dir.iterdir())
    assert provider.app[NODE].trust.line(sender)["reserved"] == 0


async def test_a_run_asked_of_a_provider_whose_stop_is_forced_is_refused_and_the_job_recorded_refused(
        node_factory, monkeypatch) -> None:
    """The run of a job whose bytes are all sent, asked for once its provider's stop is forced (no run begins any
    more): the provider refuses it 503 `node-stopping`, runs and records nothing, and gives back what it reserved
    once the sender forgets the job; the sender's tab pays nothing.  With no other provider, the user reads the stop
    and the job's record is `refused` with the same words, nothing stored."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    node, sender = provider.app[NODE], gateway.app[IDENTITY].id
    run, asking, stopped = sent_jobs.wire.run, asyncio.Event(), asyncio.Event()

    async def held(*args, **kwargs):  # the gateway asks for the run only once the provider's stop is forced
        asking.set()
        await stopped.wait()
        return await run(*args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "run", held)
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc"))
    await asyncio.wait_for(asking.wait(), HANG)
    assert node.hosted_jobs.status() == {"hosted": 1}
    provider.server.runner.force()  # a second SIGTERM: what runs is cut short, no run begins
    stopped.set()
    status, problem = await asyncio.wait_for(running, HANG)
    assert status == 503 and problem["peer_code"] == "node-stopping", problem
    jid = problem["id"]
    assert problem["detail"] == (f"the job {jid} did not run: its provider stopped before its run began, and no "
                                 "other provider took it: nothing is paid"), problem
    assert "peer_cut_short" not in problem, problem
    assert problem["hint"] == f"run it again with its stdin: ... | xsc compute run {module} --stdin -", problem
    job = await (await gateway.get(f"/v1/compute/jobs/{jid}")).json()
    assert job["state"] == "refused" and job["executions"] == 0 and job["outputs"] == [], job
    assert problem["detail"] == f"the job {jid} did not run: {job['error']}" and job["error_hint"] == problem["hint"]
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before
    ledger = gateway.app[NODE].ledger  # (the tab is closed once the answer is in: nothing held, nothing pending)
    await eventually_async(lambda: ledger.holding() == {} and ledger.pending() == [], "the sender's tab to pay nothing")
    await eventually_async(lambda: node.hosted_jobs.status() == {"hosted": 0}, "the provider to forget the job")
    assert node.trust.line(sender)["reserved"] == 0 and node.paid.provider_tabs.kept == 0
    records = (await (await provider.get("/v1/compute/provenance?limit=100")).json())["records"]
    assert not [r for r in records if "job" in r["record"]], records  # nothing of it run or recorded
