"""Jobs placed on a provider by the market (compute/sent_jobs.py, compute/hosted_jobs.py), on real nodes with real
HTTP between them: the user's node offers no compute, so its jobs run elsewhere, over the bytes it sends; their
outputs are stored by the user's node, the provider is paid once per job, and the lineage names it and verifies.
A provider whose outputs do not match what it signed is not paid and is struck; a provider takes only the bytes it
was promised, and only as many jobs of a sender as its quota."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import re

import aiohttp
import pytest

from tests.support.cli import ok, xsc_in_process
from tests.support.compute import deploy, placed, signed_under_the_first_rule, wasm
from tests.support.jobs import (QUIET, balances, compiled, compiled_for, countersigning_the_cap, network, owed_paid,
                                read_file, reading,
                                restarted, run_job, settle, verified)
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async
from xsc import codec, keys
from xsc.compute import hosted_jobs, provenance, provider_tabs, remote_tabs, sent_jobs
from xsc.compute import jobs as jobs_module
from xsc.compute.jobspec import parse_job
from xsc.compute.provider_tabs import compile_price
from xsc.compute.wasi_io import io_fuel
from xsc.errors import Conflict, PeerRefused, PeerUnreachable, ReplayCacheFull, StorageFull
from xsc.node import CLIENT_IDENTITY, IDENTITY, TOKEN
from xsc.node.appkeys import NODE
from xsc.units import format_credits

DATA = b"some stored words\nand more of them\n" * 1000




async def _put(node, data: bytes) -> str:
    response = await node.post("/v1/store/files", data=data)
    assert response.status == 201, await response.text()
    return (await response.json())["capability"]


async def test_a_job_runs_on_a_provider_over_the_bytes_sent_and_its_outputs_are_stored_here(node_factory) -> None:
    gateway, providers = await network(node_factory, providers=2)  # three nodes; the user's offers no compute
    module = await deploy(gateway, "outputs", wasi=True)
    cap = await _put(gateway, DATA)
    before = {p.app[IDENTITY].id: balances(gateway, p) for p in providers}
    status, job = await run_job(gateway, {"module": module, "stdin": cap, "inputs": [f"{cap}:/in/data"]})
    assert status == 201, job
    provider = next(p for p in providers if p.app[IDENTITY].id == job["provider"])
    provider_id, before = job["provider"], before[job["provider"]]
    assert job["state"] == "done" and job["executions"] == 1
    outputs = {o["name"]: o for o in job["outputs"]}
    assert sorted(outputs) == ["out/a.txt", "out/b.txt", "out/c.txt"]
    assert await read_file(gateway, outputs["out/c.txt"]["capability"]) == DATA
    assert outputs["out/c.txt"]["sha256"] == hashlib.sha256(DATA).hexdigest()
    # Stored by the gateway, like its own puts: the provider never held the capability.
    listed = await (await gateway.get("/v1/store/files")).json()
    assert {o["capability"] for o in job["outputs"]} <= {f["capability"] for f in listed["files"]}

    # Paid once: the provider's record of the run, and its account credited exactly the job's charge and compiling
    # the module pushed to it (it lacked it), with the job's tab.
    records = (await (await provider.get("/v1/compute/provenance?limit=100")).json())["records"]
    assert [r["record"]["id"] for r in records if r["record"].get("job", {}).get("id") == job["id"]] == \
        [job["provenance"]]
    await settle(gateway)
    owed = job["charge"] + compiled(job, "outputs")
    after = balances(gateway, provider)
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed) and job["charge"] > 0
    assert gateway.app[NODE].market.weights.counters()["delivered_by"][provider_id] == owed  # counted once
    for node in (gateway, provider):
        await verified(node)
    # Each side's `xsc ledger history` names the job the payment was for (its tab's job reference).
    for node, account, kind in ((gateway, "client", "payment"), (provider, "node", "receipt")):
        shown = [ok(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "ledger", "history",
                                            account, *args, env={"XSC_TOKEN": node.app[TOKEN], "COLUMNS": "80"}))
                 for args in (["--json"], [])]
        assert [(e["kind"], e["amount"], e["job"]) for e in json.loads(shown[0]) if e.get("for_job") == job["id"]] \
            == [(kind, owed, remote_tabs.job_tab(job["id"]))], shown[0]
        assert f"job id {job['id']}" in [line.strip().rstrip(",") for line in shown[1].splitlines()], shown[1]
    # `xsc compute job` names the payment's entry, as the gateway's history lists it.
    (paid,) = [e["id"] for e in (await (await gateway.get("/v1/ledger/accounts/client/history")).json())["entries"]
               if e.get("for_job") == job["id"]]
    shown = ok(await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "job",
                                       job["id"], env={"XSC_TOKEN": gateway.app[TOKEN], "COLUMNS": "80"}))
    assert [line.split() for line in shown.splitlines() if line.strip().startswith(("payment", "entry"))] == \
        [["payment", format_credits(owed), "credits"], ["entry", paid]], shown

    # The lineage names the provider and checks its signature and the output it signed.
    tree = await (await gateway.get(f"/v1/compute/lineage/{outputs['out/c.txt']['capability']}")).json()
    made = tree["made_by"]
    assert made["node"] == provider_id and made["signature_valid"] and made["output_signed"]
    (read,) = made["inputs"]
    assert read["path"] == "/in/data" and read["sha256"] == hashlib.sha256(DATA).hexdigest()

    # Nothing of the job is left on the provider once its outputs are fetched.
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}
    assert not any(provider.app[NODE].hosted_jobs.work_dir.iterdir())


async def test_a_provider_whose_output_does_not_match_what_it_signed_is_not_paid_and_is_struck(
        node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    provider_id = provider.app[IDENTITY].id
    module = await deploy(gateway, "outputs", wasi=True)
    hosted = provider.app[NODE].hosted_jobs
    honest = hosted.output

    async def flipped(sender, job, index, offset):  # the provider signs one thing and sends another
        data = await honest(sender, job, index, offset)
        return bytes([data[0] ^ 1]) + data[1:] if data and offset == 0 else data

    monkeypatch.setattr(hosted, "output", flipped)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    assert status == 502 and problem["code"] == "forged-result", problem
    assert "not paid" in problem["detail"] and "\n" not in problem["detail"]
    assert struck == [provider_id]
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before  # nothing stored
    await settle(gateway)
    # Nothing is paid: the job's authorization is dropped, so the provider's receipt for it stays unpaid.
    assert balances(gateway, provider)[0] == before[0]
    assert gateway.app[NODE].ledger.pending() == [] and gateway.app[NODE].ledger.holding() == {}
    for node in (gateway, provider):
        await verified(node)


async def test_a_provider_answering_streams_other_than_it_signed_is_not_paid_and_is_struck(
        node_factory, monkeypatch) -> None:
    """A provider's record signs the hash of each stream it answers: one that answers another stdout (a result the
    user reads, made up) is held to the record as one that answers other outputs."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    hosted = provider.app[NODE].hosted_jobs
    honest, compute = hosted.run, provider.app[NODE].compute
    signing = compute._record

    def unhashed(*args, **kwargs):  # a provider whose records do not sign their streams yet: its runs still hold
        record = signing(*args, **kwargs)
        for key in ("stdout_sha256", "stderr_sha256"):
            record["wasi"].pop(key)
        return record

    monkeypatch.setattr(compute, "_record", unhashed)
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"older")
    assert status == 201, job
    monkeypatch.setattr(compute, "_record", signing)
    await settle(gateway)

    async def made_up(sender, job):
        answer = await honest(sender, job)
        return {**answer, "run": {**answer["run"], "stdout": "the answer is 42\n"}}

    monkeypatch.setattr(hosted, "run", made_up)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    assert status == 502 and problem["code"] == "forged-result" and "stdout" in problem["detail"], problem
    assert struck == [provider.app[IDENTITY].id]
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]


async def test_a_provider_answering_its_outputs_a_byte_a_request_is_not_paid_and_is_asked_once_an_output(
        node_factory, monkeypatch) -> None:
    """An honest provider answers each piece of an output whole (a chunk, or what is left): one that answers a byte
    at a time would keep the user's job fetching for days (a request a byte of a 256 MiB bytes_out), then be paid."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    hosted = provider.app[NODE].hosted_jobs
    honest, asked = hosted.output, []

    async def dripping(sender, job, index, offset):
        asked.append(index)
        return (await honest(sender, job, index, offset))[:1]

    monkeypatch.setattr(hosted, "output", dripping)
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"a few bytes to drip " * 20)
    assert status == 502 and problem["code"] == "forged-result", problem
    assert asked == [0]  # the first short piece ends it
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]


async def test_a_provider_that_dropped_a_job_by_its_keep_limit_while_it_was_fetched_is_not_struck(
        node_factory, monkeypatch) -> None:
    """A provider keeps a run's outputs for IDLE and the time to fetch them at SLOWEST_LINK: a sender slower than that
    meets a 404 part way through.  The provider dropped the job by its own rule, sent nothing unlike what it signed:
    the job fails, unpaid, and the provider is not struck as a forger is."""
    monkeypatch.setattr(hosted_jobs, "IDLE", 2.0)  # the keep limit lowered, so the test need not fetch for minutes
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    hosted, fetch, asked = provider.app[NODE].hosted_jobs, sent_jobs.wire.fetch, []

    async def slow(client, url, provider_id, job, output, offset):  # past the keep limit after the first output
        if output == 1 and not asked:
            asked.append(output)
            await eventually_async(lambda: hosted.status()["hosted"] == 0, "the provider to drop the job", 30)
        return await fetch(client, url, provider_id, job, output, offset)

    monkeypatch.setattr(sent_jobs.wire, "fetch", slow)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"fetched too slowly")
    assert status >= 400 and problem["code"] != "forged-result" and asked == [1], problem
    assert struck == []
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]  # nothing the gateway stored, nothing paid


async def test_a_job_goes_to_another_provider_when_one_forges_its_outputs(node_factory, monkeypatch) -> None:
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "outputs", wasi=True)
    forger = providers[0].app[NODE].hosted_jobs
    honest = forger.output

    async def flipped(sender, job, index, offset):
        data = await honest(sender, job, index, offset)
        return data[::-1] if len(data) > 1 else data + b"!"

    monkeypatch.setattr(forger, "output", flipped)
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"hello there")
    assert status == 201, job
    assert job["provider"] == providers[1].app[IDENTITY].id  # never the forger's outputs
    outputs = {o["name"]: o for o in job["outputs"]}
    assert await read_file(gateway, outputs["out/c.txt"]["capability"]) == b"hello there"


async def test_a_job_every_provider_failed_keeps_each_ones_failure_in_its_record(node_factory, monkeypatch) -> None:
    # Each provider the job went to failed it in turn: its record (and `xsc compute job`) says who failed it, when and
    # how, not the last one's error alone.
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "outputs", wasi=True)
    for provider in providers:
        hosted = provider.app[NODE].hosted_jobs
        monkeypatch.setattr(hosted, "output", lambda *args, honest=hosted.output: _flipped(honest, *args))
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"hello there")
    assert status == 502 and problem["code"] == "forged-result", problem
    job = await (await gateway.get(f"/v1/compute/jobs/{problem['id']}")).json()
    ids = {provider.app[IDENTITY].id for provider in providers}
    assert {a["provider"] for a in job["attempts"]} == ids and len(job["attempts"]) == 2, job
    assert all("not the size and hash it signed" in a["error"] and a["at"] for a in job["attempts"]), job
    assert job["error"] == job["attempts"][-1]["error"] and "attempts_more" not in job
    shown = ok(await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "job",
                                       problem["id"], env={"XSC_TOKEN": gateway.app[TOKEN], "COLUMNS": "80"}))
    failed = [line.split()[-1] for line in shown.splitlines() if line.strip().startswith("failed")]
    assert failed == [a["provider"] for a in job["attempts"]], shown
    assert shown.count("not the size and hash it signed") == 3, shown  # (and the error)


async def _flipped(honest, sender, job, index, offset) -> bytes:
    data = await honest(sender, job, index, offset)
    return data[::-1] if len(data) > 1 else data + b"!"


async def test_a_provider_runs_nothing_over_bytes_that_are_not_the_ones_promised(node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    send = sent_jobs.wire.send

    async def altered(client, url, provider_id, job, offset, data):
        await send(client, url, provider_id, job, offset, b"X" + data[1:])

    monkeypatch.setattr(sent_jobs.wire, "send", altered)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"the real bytes")
    assert status == 502 and "do not match the SHA-256" in problem["detail"], problem
    records = (await (await provider.get("/v1/compute/provenance?limit=100")).json())["records"]
    assert not [r for r in records if "job" in r["record"]]  # it ran nothing
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}  # and forgot the job
    held = provider.app[NODE].trust.line(gateway.app[IDENTITY].id)
    assert held["reserved"] == 0, held


async def test_a_sender_gets_no_more_jobs_at_once_than_its_quota_nor_a_job_over_its_bytes_in(node_factory) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(provider, "outputs", wasi=True)
    node = gateway.app[NODE]
    provider_id, url = provider.app[IDENTITY].id, provider.app[NODE].peers.url
    empty = hashlib.sha256(b"").hexdigest()
    price = provider.app[NODE].market.offer.honoured_ask("compute")
    tab = await node.paid.gateway_tabs.reserve(provider_id, price, 10**6)

    def body(size: int, bytes_in: int | None = None) -> dict:
        spec = {"module": module, "stdin": "-"}
        if bytes_in is not None:
            spec["limits"] = {"bytes_in": bytes_in}
        return {"spec": parse_job(spec).canonical(), "price": price, "authorization": tab.hex, "deal": {},
                "memory_price": node.compute.memory_price,
                "data": [{"path": "stdin", "size": size, "sha256": empty if size == 0 else "ab" * 32,
                          "verify_hash": ""}]}

    with pytest.raises(PeerRefused) as over:
        await sent_jobs.wire.begin(node.client, url, provider_id, body(2048, bytes_in=1024))
    assert over.value.details["peer_code"] == "over-cap"
    for _ in range(hosted_jobs.PER_SENDER):
        await sent_jobs.wire.begin(node.client, url, provider_id, body(0))
    with pytest.raises(PeerRefused) as refused:
        await sent_jobs.wire.begin(node.client, url, provider_id, body(0))
    assert refused.value.details["peer_status"] == 429, refused.value.details
    node.paid.gateway_tabs.answered(tab, 10**6, None)


async def _a_job_on_a_tab_of_its_own(node_factory, label: str):
    """A gateway and a provider, and what the gateway sends to begin a job on the provider under a tab reserved for
    it alone (`label`: the job id's two hex digits): (gateway, provider, tab, budget, the begin's body)."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(provider, "outputs", wasi=True)
    node = gateway.app[NODE]
    price = provider.app[NODE].market.offer.honoured_ask("compute")
    spec = parse_job({"module": module, "stdin": "-"})
    budget = node.compute.budget(jobs_module.InvokeCall(spec.module, spec.entrypoint, list(spec.argv), spec.fuel,
                                                        spec.memory, spec.timeout, True), price)
    tab = await node.paid.gateway_tabs.reserve_alone(provider.app[IDENTITY].id, price, budget, label * 32)
    body = {"spec": spec.canonical(), "price": price, "authorization": tab.hex, "deal": {},
            "memory_price": node.compute.memory_price,
            "data": [{"path": "stdin", "size": 0, "sha256": hashlib.sha256(b"").hexdigest(), "verify_hash": ""}]}
    return gateway, provider, tab, budget, body


async def test_a_job_asked_to_run_once_its_tabs_authorization_expired_is_refused_and_runs_nothing(
        node_factory, monkeypatch) -> None:
    """A sender that takes its time between a job's bytes and its run (a request every few minutes keeps the job) asks
    for it only once the tab's authorization has expired: no receipt can be signed under it any more, so the run is
    refused and the job dropped, its reservations released, rather than run for nothing."""
    import types

    gateway, provider, tab, budget, body = await _a_job_on_a_tab_of_its_own(node_factory, "ab")
    node, provider_id, url = gateway.app[NODE], provider.app[IDENTITY].id, provider.app[NODE].peers.url
    job = await sent_jobs.wire.begin(node.client, url, provider_id, body)
    later = types.SimpleNamespace(time=lambda: tab.auth.expires_at + 1)
    with monkeypatch.context() as patched:
        patched.setattr(provider_tabs, "time", later)  # (ProviderTabs.start: the expiry checked)
        with pytest.raises(PeerRefused) as refused:
            await sent_jobs.wire.run(node.client, url, provider_id, job, timeout=60, most=1 << 20)
    assert refused.value.details["peer_code"] == "authorization-expired", refused.value.details
    records = (await (await provider.get("/v1/compute/provenance?limit=100")).json())["records"]
    assert not [r for r in records if "job" in r["record"]]  # it ran nothing
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}
    assert provider.app[NODE].trust.line(gateway.app[IDENTITY].id)["reserved"] == 0
    assert provider.app[NODE].paid.provider_tabs.kept == 0
    node.paid.gateway_tabs.answered(tab, budget, None)


async def test_a_job_taken_while_its_tab_is_closed_is_refused_not_run_unpaid(node_factory, monkeypatch) -> None:
    """A sender that closes its tab while the provider reads that tab to take a job under it: the close is answered
    (nothing ran), so the job is refused, not kept under a tab its sender was told is closed, to run and never be
    paid."""
    from xsc.net.compute import close_tab

    gateway, provider, tab, budget, body = await _a_job_on_a_tab_of_its_own(node_factory, "cd")
    node, provider_id, url = gateway.app[NODE], provider.app[IDENTITY].id, provider.app[NODE].peers.url
    ledger = provider.app[NODE].ledger
    read, reading_the_tab, go_on = ledger.receipt_for, asyncio.Event(), asyncio.Event()

    async def paused(authorization_id):
        if authorization_id == tab.auth.id and not reading_the_tab.is_set():  # the job's: the close's go on
            reading_the_tab.set()
            await go_on.wait()
        return await read(authorization_id)

    monkeypatch.setattr(ledger, "receipt_for", paused)
    begun = asyncio.ensure_future(sent_jobs.wire.begin(node.client, url, provider_id, body))
    try:
        await asyncio.wait_for(reading_the_tab.wait(), 60)
        with pytest.raises(PeerRefused) as closed:
            await close_tab(node.client, url, provider_id, tab.hex)
        assert closed.value.details["peer_code"] == "nothing-owed", closed.value.details
    finally:
        go_on.set()
    with pytest.raises(PeerRefused) as refused:
        await begun
    assert refused.value.details["peer_code"] == "authorization-replayed", refused.value.details
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}
    assert provider.app[NODE].trust.line(gateway.app[IDENTITY].id)["reserved"] == 0
    node.paid.gateway_tabs.answered(tab, budget, None)


async def test_a_job_on_a_busy_node_is_refused_with_nothing_stored_and_recorded_as_refused(node_factory) -> None:
    node = await node_factory("busy", **QUIET, compute={"max_queued": 1})
    spin = await deploy(node, "spin", wasi=True)
    outputs = await deploy(node, "outputs", wasi=True)
    long = asyncio.ensure_future(run_job(node, {"module": spin, "limits": {"timeout": 3}}))
    service = node.app[NODE].compute
    await eventually_async(lambda: _admitted(service), "the spinning job to be running", 10)
    files_before = (await (await node.get("/v1/store/files")).json())["files"]
    status, problem = await run_job(node, {"module": outputs, "stdin": "-"}, stdin=b"x")
    assert status == 503 and problem["code"] == "compute-busy", problem
    assert "retry" in problem["hint"]
    assert (await (await node.get("/v1/store/files")).json())["files"] == files_before
    refused = [j for j in _jobs(node) if j["module"] == outputs]
    assert [j["state"] for j in refused] == ["refused"]
    status, trapped = await long
    assert status == 422 and trapped["state"] == "failed", trapped  # the spinning job ran out of fuel or time


async def test_a_job_whose_stdin_stalls_is_refused_and_leaves_nothing_behind(node_factory, monkeypatch) -> None:
    monkeypatch.setattr(jobs_module, "STDIN_STALL", 0.3)
    node = await node_factory("stall", **QUIET)
    module = await deploy(node, "outputs", wasi=True)
    url = node.make_url("/v1/compute/jobs")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = json.dumps({"module": module, "stdin": "-"}).encode() + b"\nthe first bytes"
    writer.write(f"POST /v1/compute/jobs HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer "
                 f"{node.app[TOKEN]}\r\nContent-Type: application/x-xsc-job\r\nContent-Length: 100000\r\n\r\n"
                 .encode() + head)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 20)  # no more bytes come: refused after the stall
    writer.close()
    assert b" 408 " in status_line, status_line
    assert not any((node.app[NODE].config.data_dir / "jobs").iterdir())  # its work directory is gone


async def test_an_output_published_just_before_its_job_fails_is_removed_and_a_file_of_the_users_is_not(
        node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    spec = {"module": module, "stdin": "-"}
    jid = jobs_module.job_id(parse_job(spec), hashlib.sha256(b"abc").hexdigest(), [])
    name = f"job:{jid}:out/a.txt"  # the name the job's first output is stored under
    response = await gateway.post(f"/v1/store/files?name={name}", data=b"the user's own file")
    assert response.status == 201, await response.text()
    own = (await response.json())["capability"]
    storage = gateway.app[NODE].jobs.storage
    put = storage.put

    async def published_then_cut(*args, **kwargs):  # the file is published; what the job does next never happens
        await put(*args, **kwargs)
        raise PeerUnreachable("cut short")

    monkeypatch.setattr(storage, "put", published_then_cut)
    status, problem = await run_job(gateway, spec, stdin=b"abc")
    assert status == 502 and problem["code"] == "peer-unreachable", problem
    listed = (await (await gateway.get("/v1/store/files")).json())["files"]
    assert [f["capability"] for f in listed if f["name"].startswith(f"job:{jid}")] == [own]
    assert await read_file(gateway, own) == b"the user's own file"
    (job,) = [j for j in _jobs(gateway) if j["id"] == jid]
    assert job["state"] == "failed" and job["outputs"] == [] and "could not be stored" in job["error"], job


async def _admitted(service) -> bool:
    return service.admitted >= 1


def _jobs(node) -> list[dict]:
    with node.app[NODE].db.iterator(prefix=keys.JOBS) as found:
        return [codec.loads(value) for _, value in found]


async def test_outputs_a_provider_signs_past_the_jobs_bytes_out_are_not_fetched_nor_paid(node_factory,
                                                                                         monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    compute = provider.app[NODE].compute
    real = compute.job_run

    def job_run(*args):
        facts = args[-1]
        for output in facts.get("outputs", []):  # signed, and answered, as a terabyte each
            output["size"] = 10**12
        return real(*args)

    monkeypatch.setattr(compute, "job_run", job_run)
    fetched: list[int] = []
    fetch = sent_jobs.wire.fetch
    monkeypatch.setattr(sent_jobs.wire, "fetch", lambda *a: fetched.append(1) or fetch(*a))
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    assert status == 502 and problem["code"] == "forged-result" and "bytes_out" in problem["detail"], problem
    assert fetched == []  # refused from what it signed, before a byte of it was asked for
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]


def _another_module(args: list) -> None:
    args[0] = hashlib.sha256(b"a cheaper program").hexdigest()


def _another_price(args: list) -> None:
    args[8] = args[8] * 2 + 1  # its charge worked out from it: a record consistent with itself, not with the deal


def _another_input(args: list) -> None:
    args[-1]["inputs"][0]["verify_hash"] = "ab" * 32 + ":" + "cd" * 32  # a lineage leading to a file never read


def _another_argv(args: list) -> None:
    args[3] = [args[3][0], "--cheap"]


def _no_text(args: list) -> None:
    """The record as it ran; only the answer's stdout is changed (a list, not text: see the test)."""


def _more_fuel_than_the_job_allows(args: list) -> None:
    """A record that says the run was let burn more fuel than the job allows, and burnt it: its charge still within
    the job's budget (its memory and time claimed less)."""
    limits, outcome = args[4], args[5]
    args[4] = dataclasses.replace(limits, fuel=limits.fuel * 2)
    outcome.fuel_consumed, outcome.memory_pages = limits.fuel + 1, 1


def _longer_than_the_job_allows(args: list) -> None:
    """A record that says the run was let run past the job's timeout, in more memory than it allows."""
    limits, outcome = args[4], args[5]
    args[4] = dataclasses.replace(limits, timeout=limits.timeout * 4, memory=limits.memory * 2)
    outcome.duration_ns, outcome.memory_pages = round(limits.timeout * 2e9), 1


def _outputs_of_a_trap(args: list) -> None:
    """A run signed (and answered) as a trap, with the outputs of a run that ended well: none is stored of a trap."""
    args[5].trap_kind, args[5].message = "unreachable", "the module trapped"


@pytest.mark.parametrize("tamper", [_another_module, _another_price, _another_input, _another_argv, _no_text,
                                    _outputs_of_a_trap, _more_fuel_than_the_job_allows, _longer_than_the_job_allows])
async def test_a_provider_whose_signed_record_is_not_the_run_asked_for_is_not_paid_and_is_struck(
        node_factory, monkeypatch, tamper) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    cap = await _put(gateway, DATA)
    compute = provider.app[NODE].compute
    real = compute.job_run

    def job_run(*args):  # signed by the provider's own journal: a valid signature over what it says
        args = list(args)
        tamper(args)
        return real(*args)

    monkeypatch.setattr(compute, "job_run", job_run)
    if tamper is _no_text:  # an answer whose stdout is not text: the user's CLI would print a list
        hosted = provider.app[NODE].hosted_jobs
        honest = hosted._run

        async def listed(job):
            answer = await honest(job)
            return {**answer, "run": {**answer["run"], "stdout": ["not", "text"]}}

        monkeypatch.setattr(hosted, "_run", listed)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-", "inputs": [f"{cap}:/in/data"],
                                              "limits": {"fuel": 10**9, "memory": "32MiB", "timeout": 4}}, stdin=b"abc")
    assert status == 502 and problem["code"] == "forged-result", problem
    assert "not paid" in problem["detail"] and "\n" not in problem["detail"]
    assert struck == [provider.app[IDENTITY].id]
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before  # nothing stored
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]
    for node in (gateway, provider):
        await verified(node)


def _batch(signed: dict, **changes) -> dict:
    return {**signed, "batch": {**signed["batch"], **changes}}


async def _run_with_provenance_changed(gateway, provider, monkeypatch, change):
    """A job run by `provider`, whose answer's signed record is `change(record)`: (the nodes the gateway struck, the
    balances before, the run's (status, body))."""
    module = await deploy(gateway, "outputs", wasi=True)
    hosted = provider.app[NODE].hosted_jobs
    honest = hosted._run

    async def changed(job):
        answer = await honest(job)
        return {**answer, "provenance": change(answer["provenance"])}

    monkeypatch.setattr(hosted, "_run", changed)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    before = balances(gateway, provider)
    return struck, before, await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")


@pytest.mark.parametrize("respell, where", [
    (lambda s: _batch(s, signature=s["batch"]["signature"].upper()), "batch.signature is"),
    (lambda s: _batch(s, root=s["batch"]["root"].upper()), "batch.root is"),
    (lambda s: _batch(s, count=bool(s["batch"]["count"])), "batch.count is true"),
    (lambda s: {**s, "signature": s["batch"]["signature"]}, "signature is not a field"),
], ids=["signature-upper-case", "root-upper-case", "count-true", "signature-beside-batch"])
async def test_a_provider_answering_its_signed_record_respelled_is_not_paid_and_is_struck(
        node_factory, monkeypatch, respell, where) -> None:
    """Each respelling holds to the record's signature and proof: taken, it would be a second record of one run."""
    gateway, (provider,) = await network(node_factory)
    struck, before, (status, problem) = await _run_with_provenance_changed(gateway, provider, monkeypatch, respell)
    assert status == 502 and problem["code"] == "forged-result" and where in problem["detail"], problem
    assert "canonical form" in problem["detail"] or "not a field" in problem["detail"]
    assert struck == [provider.app[IDENTITY].id]
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]


def _in_batch(provider, signed: dict, of: int, at: int, sign=None) -> dict:
    """The provider's record signed again by it, as item `at` of a batch of `of` (beside records of other runs)."""
    me = provider.app[IDENTITY]
    bodies = [codec.canonical({"id": f"{i:032x}", "node": me.id}) for i in range(of)]
    bodies[at] = codec.canonical(signed["record"])
    if sign is not None:
        return sign(me, bodies)[at]
    return codec.loads(provenance.sign_batch(me, bodies)[at])


@pytest.mark.parametrize("resign, refused", [
    (lambda p, s: _in_batch(p, s, 3, 0), None),
    (lambda p, s: placed(_in_batch(p, s, 3, 0), 0, 4), "not signed by it"),
    (lambda p, s: placed(_in_batch(p, s, 2, 1), 2, 3), "not signed by it"),
    (lambda p, s: _in_batch(p, s, 3, 0, signed_under_the_first_rule), "first batch rule"),
], ids=["item-0-of-3", "item-0-of-3-as-0-of-4", "item-1-of-2-as-2-of-3", "first-rule"])
async def test_a_provider_answering_its_record_at_another_place_in_its_batch_is_not_paid_and_is_struck(
        node_factory, monkeypatch, resign, refused) -> None:
    """One signed record, one place: its index and count are covered by the signature (a record signed under the
    first rule, whose root did not pin them, is the provider's to respell, so it is refused from a provider)."""
    gateway, (provider,) = await network(node_factory)
    struck, before, (status, problem) = await _run_with_provenance_changed(
        gateway, provider, monkeypatch, lambda signed: resign(provider, signed))
    if refused is None:  # the record signed again in a batch of three, at its place: taken
        assert status == 201 and struck == [], problem
        return
    assert status == 502 and problem["code"] == "forged-result" and refused in problem["detail"], problem
    assert struck == [provider.app[IDENTITY].id]
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]


async def test_a_provider_that_answers_an_earlier_run_of_the_same_job_is_not_paid_for_it_again(
        node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    spec = {"module": module, "stdin": "-"}
    status, first = await run_job(gateway, spec, stdin=b"abc")
    assert status == 201, first
    hosted = provider.app[NODE].hosted_jobs
    honest, answers = hosted._run, []

    async def replayed(job):  # the same bytes out, under the record (and charge) of the first run
        answer = await honest(job)
        answers.append(answer)
        return {**answer, "run": answers[0]["run"], "provenance": answers[0]["provenance"]} \
            if len(answers) > 1 else answer

    monkeypatch.setattr(hosted, "_run", replayed)
    status, again = await run_job(gateway, spec, stdin=b"abc")  # captured by the patch as the provider's first
    assert status == 201 and again["provenance"] != first["provenance"], again
    await settle(gateway)  # the runs so far paid: what follows is the replay's alone
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, spec, stdin=b"abc")
    assert status == 502 and problem["code"] == "forged-result" and "replay" in problem["detail"], problem
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]
    job = await (await gateway.get(f"/v1/compute/jobs/{first['id']}")).json()
    assert job["executions"] == 2  # the replayed run is not counted as one


async def test_a_provider_answering_a_job_with_its_signed_answer_to_another_job_is_not_paid_and_is_struck(
        node_factory, monkeypatch) -> None:
    """The whole of a first job's answer (its run, signed record and outputs, all the provider's own) replayed as the
    answer of a second job over other bytes: the record names the first job, so the second pays nothing."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    hosted = provider.app[NODE].hosted_jobs
    honest, answers = hosted._run, []

    async def replayed(job):
        answers.append(await honest(job))
        return answers[0]

    monkeypatch.setattr(hosted, "_run", replayed)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    status, first = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    assert status == 201 and struck == [], first
    await settle(gateway)  # the first job paid: what follows is the second's alone
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"other bytes")
    assert status == 502 and problem["code"] == "forged-result" and "another job" in problem["detail"], problem
    assert struck == [provider.app[IDENTITY].id] and len(answers) == 2
    await settle(gateway)
    assert balances(gateway, provider) == before
    assert (await (await gateway.get(f"/v1/compute/jobs/{first['id']}")).json())["executions"] == 1


async def test_a_provider_whose_program_names_an_output_unprintably_is_paid_not_struck(node_factory,
                                                                                        monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "odd_name", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module})
    assert status == 413 and problem["code"] == "over-cap" and "not printable" in problem["detail"], problem
    assert problem["provider"] == provider.app[IDENTITY].id and struck == []  # it ran the job as it was asked
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before
    await settle(gateway)
    owed = problem["charge"] + await compiled_for(provider, problem["provenance"], "odd_name")  # (pushed to it)
    after = balances(gateway, provider)
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed)
    for node in (gateway, provider):
        await verified(node)


async def test_a_job_whose_outputs_are_refused_is_signed_as_the_trap_its_caller_was_told(node_factory,
                                                                                         monkeypatch) -> None:
    """A job whose outputs are refused (over its bytes_out; their writes' fuel past its limit) by a program that did
    not trap, run on its own node or sent to a provider: its signed record says how they ended (`"outcome": "trap"`,
    the kind and the words its caller's 413 gave), never "ok", names no output, and verifies (`compute provenance`,
    its route); the gateway takes the provider's answer as the run it signed: paid, and nothing struck."""
    gateway, (provider,) = await network(node_factory)
    pid = provider.app[IDENTITY].id
    module = await deploy(gateway, "outputs", wasi=True)
    await deploy(provider, "outputs", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    stdin = b"x" * 100_000  # copied to out/c.txt: its bytes' fuel (paid before it runs) is as much again stored
    cases = (({"bytes_out": 100}, "output-limit", "over its bytes_out (100)", "--bytes-out"),
             ({"fuel": io_fuel(len(stdin)) * 3 // 2}, "out-of-fuel", "its fuel limit has left", "--fuel"))
    before, owed = balances(gateway, provider), 0
    # The gateway's first (it offers no compute: its jobs run on the provider), its tab paid before the provider runs
    # its own, whose charges its node's balance takes as they are settled
    for runs_it in (gateway, provider):
        if runs_it is provider:
            await settle(gateway)
            after = balances(gateway, provider)
            assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed)
        for limits, kind, said, asks in cases:
            status, problem = await run_job(runs_it, {"module": module, "stdin": "-", "limits": limits}, stdin=stdin)
            assert status == 413 and problem["code"] == "over-cap" and said in problem["detail"], problem
            assert asks in problem["hint"], problem  # the limit to raise
            assert problem["provider"] == pid and problem["outputs"] == [], problem
            response = await runs_it.get(f"/v1/compute/provenance/{problem['provenance']}", params={"provider": pid})
            record = provenance.check(await response.json())
            assert record["node"] == pid and record["outcome"] == "trap" and "results" not in record, record
            assert record["trap"]["kind"] == kind and said in record["trap"]["message"], record["trap"]
            assert record["job"]["outputs"] == [] and record["charge"] == problem["charge"] > 0, record
            owed += problem["charge"] if runs_it is gateway else 0
    assert struck == []
    for node in (gateway, provider):
        await verified(node)


async def test_a_job_whose_outputs_its_own_node_cannot_store_is_recorded_charged_and_failed(node_factory) -> None:
    """A job run on its own node, whose outputs that node cannot store (no room for their shares): it ran, so it is
    recorded, its record the trap its caller is told (`storage-full`) naming no output, and charged; its budget is
    held no longer; the job `failed` saying why, not `refused` as one turned down before it ran.  Its answer is the
    put's error naming the job, and says what to do, as its record does: one line in the CLI, the put's fix and the
    command that runs the job again."""
    node = await node_factory("alone", **QUIET, storage={"capacity": 4096})  # no room for a share of 30,000 bytes
    module = await deploy(node, "outputs", wasi=True)
    status, problem = await run_job(node, {"module": module, "stdin": "-"}, stdin=b"abc" * 10_000)
    assert status == 507 and problem["code"] == "storage-full", problem
    jid = problem["id"]
    job = await (await node.get(f"/v1/compute/jobs/{jid}")).json()
    assert job["state"] == "failed" and job["executions"] == 1 and job["outputs"] == [], job
    assert job["error"].startswith("its outputs could not be stored: no node offers room for a share"), job
    assert job["error_hint"] == ("free space, or add nodes with `xsc peers add`, then run it again with its stdin: "
                                 f"... | xsc compute run {module} --stdin -"), job
    assert problem["detail"] == f"the job {jid} ran, but {job['error']}" and problem["hint"] == job["error_hint"]
    assert problem["state"] == "failed" and problem["charged"] == job["charge"] > 0, problem
    record = provenance.check(await (await node.get(f"/v1/compute/provenance/{job['provenance']}")).json())
    assert record["outcome"] == "trap" and record["trap"] == {"kind": "storage-full", "message": job["error"]}, record
    assert record["job"]["outputs"] == [] and record["charge"] == job["charge"] > 0, record
    assert node.app[NODE].ledger.held(node.app[CLIENT_IDENTITY].public_key) == job["charge"]  # its budget's rest back
    shown = await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "run", module,
                                    input=b"abc" * 10_001, env={"XSC_TOKEN": node.app[TOKEN]})  # (other bytes)
    line = shown.stderr.decode().strip()
    assert shown.returncode == 1 and "\n" not in line, line  # one line, saying what failed, with its fix
    others = [j for j in (await (await node.get("/v1/compute/jobs")).json())["jobs"] if j["id"] != jid]
    assert len(others) == 1, line
    again = others[0]
    # the room this node has now: 4,096 bytes less what the first job's removed outputs may still hold
    shown = re.sub(r"the most any offers is (40[0-9][0-9])\)", "the most any offers is N)", line)
    assert shown == (f"xsc: error: the job {again['id']} ran, but its outputs could not be stored: no node offers "
                     "room for a share of this file (7505 bytes; the most any offers is N) (free space, or add "
                     "nodes with `xsc peers add`, then run it again with its stdin: ... | xsc compute run "
                     f"{module} --stdin -)"), line


async def test_a_job_whose_checked_answer_its_node_cannot_store_names_the_job_and_its_provider_is_paid(
        node_factory) -> None:
    """A job run on a provider whose checked answer the user's node cannot store (no room for its outputs' shares
    anywhere): its provider is paid (storing is this node's part), and the user reads the put's error naming the job,
    with what its record says to do: the put's fix, then the command that runs it again."""
    gateway, (provider,) = await network(node_factory, storage={"capacity": 4096})
    module = await deploy(gateway, "outputs", wasi=True)
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc" * 10_000)
    assert status == 507 and problem["code"] == "storage-full", problem
    job = await (await gateway.get(f"/v1/compute/jobs/{problem['id']}")).json()
    assert job["state"] == "failed" and job["outputs"] == [], job
    assert job["error"].startswith("its outputs could not be stored: no node offers room for a share"), job
    assert job["error_hint"] == ("free space, or add nodes with `xsc peers add`, then run it again with its stdin: "
                                 f"... | xsc compute run {module} --stdin -"), job
    assert problem["detail"] == f"the job {job['id']} ran, but {job['error']}" and problem["hint"] == job["error_hint"]
    await settle(gateway)
    owed = problem["charged"] + await compiled_for(provider, job["id"], "outputs")  # (pushed to it)
    after = balances(gateway, provider)
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed), problem
    assert problem["charged"] > 0


async def test_a_provider_whose_record_of_a_refused_job_says_ok_is_not_paid_and_is_struck(node_factory,
                                                                                        monkeypatch) -> None:
    """A provider that answers a job's outputs refused but signs its run "ok" has signed another run than it
    answered: not paid, and struck."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    honest = hosted_jobs.run_program

    async def signed_ok(*args, **kwargs):
        ran = await honest(*args, **kwargs)
        if ran.refusal is not None:  # (its program did not trap: it left too much in /out)
            ran.outcome.trap_kind, ran.outcome.message = None, ""
        return ran

    monkeypatch.setattr(hosted_jobs, "run_program", signed_ok)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-", "limits": {"bytes_out": 10}},
                                    stdin=b"abc")
    assert status == 502 and problem["code"] == "forged-result" and "ended otherwise" in problem["detail"], problem
    assert struck == [provider.app[IDENTITY].id]
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]


async def test_a_job_that_traps_on_a_provider_is_answered_as_its_trap_and_the_provider_paid(node_factory,
                                                                                            monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "spin", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    status, problem = await run_job(gateway, {"module": module, "limits": {"timeout": 0.1}})
    assert status == 422 and problem["kind"] == "deadline" and problem["provider"] == provider.app[IDENTITY].id, \
        problem
    assert struck == [] and problem["charge"] > 0  # the run it signed is the run it answered


async def test_an_earlier_run_on_a_provider_keeps_its_lineage_after_the_job_runs_again(node_factory) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    runs = []
    for _ in range(2):
        status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
        assert status == 201, job
        runs.append(job)
    for job in runs:
        output = next(o for o in job["outputs"] if o["name"] == "out/c.txt")
        made = (await (await gateway.get(f"/v1/compute/lineage/{output['capability']}")).json())["made_by"]
        assert made["provenance"] == job["provenance"] and made["node"] == provider.app[IDENTITY].id
        assert made["signature_valid"] and made["output_signed"], made


async def test_two_runs_of_one_job_at_once_run_one_after_the_other(node_factory, monkeypatch) -> None:
    gateway, _ = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    stage, staged = jobs.inputs.stage, asyncio.Event()
    calls: list[int] = []

    async def counted(*args):
        done = await stage(*args)
        calls.append(1)
        if len(calls) == 2:
            staged.set()
        return done

    execute = jobs._placed

    async def held(*args):  # the first run goes on only once the second has its bytes and its job id
        await staged.wait()
        return await execute(*args)

    monkeypatch.setattr(jobs.inputs, "stage", counted)
    monkeypatch.setattr(jobs, "_placed", held)
    spec = {"module": module, "stdin": "-"}
    answers = await asyncio.gather(run_job(gateway, spec, stdin=b"abc"), run_job(gateway, spec, stdin=b"abc"))
    assert [status for status, _ in answers] == [201, 201], answers
    first, second = sorted((job for _, job in answers), key=lambda job: job["executions"])
    assert (first["executions"], second["executions"]) == (1, 2)  # each run counted
    shown = await (await gateway.get(f"/v1/compute/jobs/{first['id']}")).json()
    assert shown["executions"] == 2 and shown["provenance"] == second["provenance"]
    assert {o["capability"] for o in shown["outputs"]} == {o["capability"] for o in second["outputs"]}


async def test_a_job_whose_inputs_cost_more_fuel_than_it_has_is_refused_before_a_byte_is_read(node_factory,
                                                                                             monkeypatch) -> None:
    gateway, _ = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    cap = await _put(gateway, DATA)  # 35,000 bytes: 140,000 fuel to read
    storage = gateway.app[NODE].storage
    opened: list[str] = []
    real_open = storage.open
    monkeypatch.setattr(storage, "open", lambda c, *a, **kw: opened.append(str(c)) or real_open(c, *a, **kw))
    for spec in ({"stdin": cap}, {"inputs": [f"{cap}:/in/data"]}):
        status, problem = await run_job(gateway, {"module": module, **spec, "limits": {"fuel": 100_000}})
        assert status == 400 and "more than its fuel limit" in problem["detail"], problem
        assert problem["hint"] == "ask for more with --fuel", problem
    assert opened == []  # priced from the capabilities' sizes, nothing fetched


async def test_a_provider_asked_again_for_a_run_answers_that_run_without_running_or_charging_it_again(
        node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    cap = await _put(gateway, DATA)
    before = balances(gateway, provider)
    real_run = sent_jobs.wire.run
    again: list[dict] = []

    async def asked_twice(client, url, provider_id, job, timeout, most):
        # The sender asks again while the run is under way (as its restart does), and once more after it ended.
        first = asyncio.ensure_future(real_run(client, url, provider_id, job, timeout=timeout, most=most))
        again.append(await real_run(client, url, provider_id, job, timeout=timeout, most=most))
        answer = await first
        again.append(await real_run(client, url, provider_id, job, timeout=timeout, most=most))
        return answer

    monkeypatch.setattr(sent_jobs.wire, "run", asked_twice)
    status, job = await run_job(gateway, {"module": module, "stdin": cap})
    assert status == 201, job
    assert [a["run"]["provenance"] for a in again] == [job["provenance"]] * 2 and again[0] == again[1]
    records = (await (await provider.get("/v1/compute/provenance?limit=100")).json())["records"]
    assert [r["record"]["id"] for r in records if "job" in r["record"]] == [job["provenance"]]  # run once
    await settle(gateway)
    after = balances(gateway, provider)
    owed = job["charge"] + compiled(job, "outputs")  # its run, and compiling the module pushed to it
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed) and job["charge"] > 0
    line = provider.app[NODE].trust.line(gateway.app[IDENTITY].id)
    assert line["reserved"] == 0, line


async def test_a_sender_cannot_forget_a_job_while_it_runs(node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "spin", wasi=True)
    real_run, real_forget = sent_jobs.wire.run, sent_jobs.wire.forget
    refused: list[str] = []

    async def run_then_forget(client, url, provider_id, job, timeout, most):
        running = asyncio.ensure_future(real_run(client, url, provider_id, job, timeout=timeout, most=most))

        async def spinning():
            return (await (await provider.get("/v1/node/status")).json())["compute"]["running"] >= 1

        await eventually_async(spinning, "the job running on the provider")
        try:  # its reservation released, its quota place freed and its files removed while it ran: refused
            await real_forget(client, url, provider_id, job)
        except PeerRefused as err:
            refused.append(err.details.get("peer_code"))
        return await running

    monkeypatch.setattr(sent_jobs.wire, "run", run_then_forget)
    # (a deadline long enough for the forget to come while it spins, however busy the machine)
    status, problem = await run_job(gateway, {"module": module, "limits": {"timeout": 2.0}})
    assert status == 422 and problem["kind"] == "deadline", problem
    assert refused == ["conflict"]
    line = provider.app[NODE].trust.line(gateway.app[IDENTITY].id)
    assert line["reserved"] == 0 and provider.app[NODE].hosted_jobs.status() == {"hosted": 0}, line


async def test_a_job_whose_provider_goes_away_while_it_runs_is_interrupted_and_names_its_rerun(node_factory,
                                                                                               monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "spin", wasi=True)
    real_run = sent_jobs.wire.run

    async def cut_while_running(client, url, provider_id, job, timeout, most):
        running = asyncio.ensure_future(real_run(client, url, provider_id, job, timeout=timeout, most=most))

        async def spinning():
            return (await (await provider.get("/v1/node/status")).json())["compute"]["running"] >= 1

        await eventually_async(spinning, "the job running on the provider")
        running.cancel()  # the connection to it cut, as when it is killed
        raise PeerUnreachable(f"peer {url} is unreachable: the connection closed before the answer was complete")

    monkeypatch.setattr(sent_jobs.wire, "run", cut_while_running)
    status, problem = await run_job(gateway, {"module": module, "limits": {"timeout": 2}})
    [job] = (await (await gateway.get("/v1/compute/jobs")).json())["jobs"]
    assert status == 502 and problem["hint"] == f"run it again with: xsc compute rerun {job['id']}", problem
    record = await (await gateway.get(f"/v1/compute/jobs/{job['id']}")).json()
    assert record["state"] == "interrupted" and record["error_hint"] == problem["hint"], record  # not "refused"


@pytest.mark.parametrize("failure", ["dial", "5xx"])
async def test_a_fetch_of_a_jobs_output_that_fails_once_is_asked_again_and_the_provider_paid(node_factory, monkeypatch,
                                                                                             failure) -> None:
    """The first piece of a run job's output asked for is lost to a dial that fails before the question reaches the
    provider (as a handshake does on a busy machine), or to a 5xx: a read asked again cannot change, so it is, and
    the run the provider did is kept and paid, not given up and placed again."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    before = balances(gateway, provider)
    real, failed = sent_jobs.wire.fetch, []

    async def fails_once(client, url, provider_id, *args):
        if not failed:
            failed.append(provider_id)
            if failure == "dial":
                raise PeerUnreachable(f"peer {url} is unreachable: [ssl: wrong_version_number] wrong version number",
                                      url=url, reason="wrong version number", sent=False)
            raise PeerRefused(f"peer {url} refused GET: the node's database failed; see its log", url=url,
                              peer_status=500, peer_code="database-error")
        return await real(client, url, provider_id, *args)

    monkeypatch.setattr(sent_jobs.wire, "fetch", fails_once)
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=DATA)
    assert status == 201 and job["state"] == "done" and job["executions"] == 1, job
    assert failed == [provider.app[IDENTITY].id] and job["provider"] == failed[0]
    outputs = {o["name"]: o for o in job["outputs"]}
    assert await read_file(gateway, outputs["out/c.txt"]["capability"]) == DATA
    await settle(gateway)
    after = balances(gateway, provider)
    owed = job["charge"] + compiled(job, "outputs")  # its run, and compiling the module pushed to it
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed) and job["charge"] > 0


async def test_a_lineage_over_a_kept_record_in_no_shape_this_node_writes_ends_there(node_factory) -> None:
    gateway, _ = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    cap = await _put(gateway, DATA)
    status, job = await run_job(gateway, {"module": module, "inputs": [f"{cap}:/in/data"]})
    assert status == 201, job
    db = gateway.app[NODE].db
    key = keys.job(gateway.app[NODE].jobs.payer.public_key, bytes.fromhex(job["id"]))
    kept = codec.loads(db.get(key))
    kept["signed"]["record"]["job"]["inputs"] = [{"path": "/in/data", "verify_hash": "zz:not hex"}, 7]
    db.put(key, codec.dumps(kept))  # a provider's record as an older node took it: no longer its signature
    db.put(keys.job_run(bytes.fromhex(job["provenance"])), codec.dumps(kept["signed"]))
    output = job["outputs"][0]["capability"]
    response = await gateway.get(f"/v1/compute/lineage/{output}")
    assert response.status == 200, await response.text()
    made = (await response.json())["made_by"]
    assert not made["signature_valid"] and made["inputs"] == [{"path": "/in/data", "verify_hash": "zz:not hex"}]


@pytest.mark.parametrize("inflated", [False, True])
async def test_a_remote_job_done_but_not_paid_before_a_stop_is_paid_its_charge_at_the_start_and_no_more(
        node_factory, monkeypatch, inflated) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    monkeypatch.setattr(gateway.app[NODE].jobs.sent, "pay", lambda returned: None)  # the stop comes before it
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    assert status == 201 and job["state"] == "done" and job["charge"] > 0, job
    (authorization,) = [a.id.hex() for a in gateway.app[NODE].ledger.pending()
                        if a.job == remote_tabs.job_tab(job["id"])]
    await close_node(gateway)
    ledger = provider.app[NODE].ledger
    if inflated:  # the provider countersigns the tab's whole cap, knowing the gateway's tally died with it
        countersign = ledger.countersign
        monkeypatch.setattr(ledger, "countersign", lambda payee, auth, amount, usage, **kw:
                            countersign(payee, auth, auth.cap, usage, **kw))
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    node = gateway.app[NODE]
    await eventually_async(lambda: _settled(node, authorization), "the job's tab settled at the start", 30)
    paid = next((e.receipt.amount for e in node.ledger.store.history(gateway.app[CLIENT_IDENTITY].public_key, 50)
                 if e.authorization.id.hex() == authorization), None)
    # Its charge, and compiling the module pushed to it (its tab's tally on disk held that price too).
    owed = job["charge"] + compiled(job, "outputs")
    assert (paid, node.paid.gateway_tabs.refused_receipts) == ((None, 1) if inflated else (owed, 0))
    await verified(gateway)


async def _settled(node, authorization: str) -> bool:
    return all(a.id.hex() != authorization for a in node.ledger.pending())


async def test_a_remote_job_asked_for_again_while_its_checked_answer_waits_to_be_stored_is_stored_not_run_again(
        node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    spec = {"module": module, "stdin": "-"}
    outputs = gateway.app[NODE].jobs.outputs
    store = outputs.store

    async def cut(*args):  # what a stop leaves: the checked answer kept, nothing stored, nothing paid
        raise asyncio.CancelledError()

    monkeypatch.setattr(outputs, "store", cut)
    with pytest.raises(aiohttp.ServerDisconnectedError):  # the request's task cancelled, as by the node's stop
        await run_job(gateway, spec, stdin=DATA)
    (job,) = _jobs(gateway)
    assert job["state"] == "storing" and job["outputs"] == [] and job["answered"]["pays"], job
    monkeypatch.setattr(outputs, "store", store)
    before = balances(gateway, provider)
    status, again = await run_job(gateway, spec, stdin=DATA)
    assert status == 201 and again["state"] == "done" and again["executions"] == 1, again
    assert again["provenance"] == job["answered"]["signed"]["record"]["id"]  # the run answered before: not run again
    assert await read_file(gateway, {o["name"]: o for o in again["outputs"]}["out/c.txt"]["capability"]) == DATA
    await eventually_async(lambda: _settled(gateway.app[NODE], job["answered"]["pays"][0]["authorization"]),
                           "the job's tab paid", 30)
    after = balances(gateway, provider)
    assert after[1] - before[1] == again["charge"] + compiled(again, "outputs")  # paid once: its charge and compile
    assert again["charge"] > 0
    assert not any((gateway.app[NODE].config.data_dir / "jobs").iterdir())  # its kept outputs gone once stored


async def test_a_start_asks_after_several_cut_short_jobs_at_once_and_never_more_than_its_bound(
        node_factory, monkeypatch) -> None:
    gateway = await node_factory("gateway", **QUIET)
    jobs = gateway.app[NODE].jobs
    await jobs.recovered.wait()  # the start's own recovery is over: the one below alone finds the records
    count = jobs_module.RECOVER_AT_ONCE * 2 + 3
    for n in range(count):  # each left running on a provider by a stop
        jid = hashlib.sha256(b"%d" % n).hexdigest()
        jobs.records.save(jid, {"id": jid, "state": "running", "spec": {}, "inputs": [], "outputs": [],
                                "executions": 0, "sent": {"provider": "p", "job": "j", "authorization": "00"}})
    at_once, most, asked = 0, 0, []
    full = asyncio.Event()

    async def recover_one(job) -> None:  # each waits until as many as the bound are asked at once (or all are)
        nonlocal at_once, most
        at_once += 1
        most = max(most, at_once)
        asked.append(job["id"])
        if at_once == jobs_module.RECOVER_AT_ONCE or len(asked) == count:
            full.set()
        await full.wait()
        at_once -= 1

    monkeypatch.setattr(jobs.recovery, "recover_one", recover_one)
    async with asyncio.timeout(60):  # one at a time, the first would wait for ever
        await jobs.recover()
    assert most == jobs_module.RECOVER_AT_ONCE and sorted(asked) == sorted(r["id"] for r in jobs.records.all_jobs())


async def test_a_run_whose_tab_a_stop_left_settled_unpaid_is_not_counted_at_the_start(node_factory,
                                                                                      monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory, providers=1)
    module = await deploy(gateway, "outputs", wasi=True)
    answers = gateway.app[NODE].jobs.answers

    async def cut(*args):  # its outputs fetched, not kept: its tab settled unpaid, the provider keeps the job
        raise OSError("cut short")

    async def kept(*args):
        pass

    async def stopped(*args):  # the node stops before the job's failure is written
        raise asyncio.CancelledError()

    monkeypatch.setattr(answers, "answer_kept", cut)
    monkeypatch.setattr(answers.sent, "_forget", kept)
    monkeypatch.setattr(answers, "node_failed", stopped)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True}, stdin=b"bytes")
    (job,) = answers.records.all_jobs()
    assert job["state"] == "running" and "fetching" in job, job
    monkeypatch.undo()
    await gateway.app[NODE].jobs.recovery.recover_one(job)
    job = answers.records.load(job["id"])
    assert job["state"] == "interrupted" and job["outputs"] == [], job  # not paid, so not counted
    await settle(gateway)
    assert balances(gateway, provider)[1] == 0


async def test_a_stop_while_a_checked_answer_is_stored_tells_its_provider_to_forget_the_job_by_its_own_id_at_start(
        node_factory, monkeypatch) -> None:
    """The answer written `storing`, the stop before its provider was told to forget the job: the start stores it,
    pays the provider once and tells it to forget the job by the provider's own id of it (its signed record names the
    job by another), so the provider drops it now rather than keep it until it drops it itself."""
    gateway, (provider,) = await network(node_factory, providers=1)
    module = await deploy(gateway, "outputs", wasi=True)
    answers = gateway.app[NODE].jobs.answers

    async def kept(*args):
        pass

    async def stopped(*args):  # the node stops as the answer's outputs are stored
        raise asyncio.CancelledError()

    monkeypatch.setattr(answers.sent, "_forget", kept)
    monkeypatch.setattr(answers, "store_answered", stopped)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True}, stdin=b"bytes")
    (job,) = answers.records.all_jobs()
    assert job["state"] == "storing" and provider.app[NODE].hosted_jobs.status() == {"hosted": 1}, job
    monkeypatch.undo()
    await gateway.app[NODE].jobs.recovery.recover_one(job)
    job = answers.records.load(job["id"])
    assert job["state"] == "done" and len(job["outputs"]) == 3, job
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}  # told to forget it, by its own id
    await settle(gateway)
    assert balances(gateway, provider)[1] == job["charge"] + compiled(job, "outputs")  # (the module pushed to it)


@pytest.mark.parametrize("where", ["run", "fetch", "fetch-missed-once"])
async def test_a_stop_while_a_provider_runs_a_job_or_its_outputs_are_fetched_pays_the_provider_once_at_the_start(
        node_factory, monkeypatch, where) -> None:
    """A graceful stop cancels the job's request while the provider's answer is on its way back (it ran) or while its
    outputs are fetched: the provider did the work, and the next start finishes the job from it and pays it once,
    even when the start's first dial to it fails before its question reaches it (a busy machine's handshake)."""
    where, missed = where.removesuffix("-missed-once"), where.endswith("-missed-once")
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    real = getattr(sent_jobs.wire, where)
    reached = asyncio.Event()

    async def then_the_stop(*args, **kwargs):
        if where == "run":
            await real(*args, **kwargs)  # it ran: the answer is lost with the stop
        reached.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patched:
        patched.setattr(sent_jobs.wire, where, then_the_stop)
        running = asyncio.ensure_future(jobs.run({"module": module, "stdin": "-"}, reading(b"the job's bytes")))
        await asyncio.wait_for(reached.wait(), 60)
        running.cancel()  # what the stop does to the requests still in flight
        with contextlib.suppress(asyncio.CancelledError):
            await running
    (jid,) = [j["id"] for j in jobs.records.all_jobs()]
    before = balances(gateway, provider)
    dials: list[str] = []

    async def failed_dial(client, url, *args, **kwargs):
        if not dials:
            dials.append(url)
            raise PeerUnreachable(f"peer {url} is unreachable: [ssl: wrong_version_number] wrong version number",
                                  url=url, reason="wrong version number", sent=False)
        return await real(client, url, *args, **kwargs)

    if missed:
        monkeypatch.setattr(sent_jobs.wire, where, failed_dial)
    gateway, job = await restarted(node_factory, gateway, jid)
    assert len(dials) == missed
    assert job["state"] == "done" and job["executions"] == 1 and job["charge"] > 0, job
    c_txt = next(o for o in job["outputs"] if o["name"] == "out/c.txt")
    assert await read_file(gateway, c_txt["capability"]) == b"the job's bytes"
    runs = provider.app[NODE].compute.provenance_records.recent(100)
    assert [r["record"]["id"] for r in runs if r["record"].get("job", {}).get("id") == jid] == [job["provenance"]]
    await owed_paid(gateway, job)
    # Paid for the work it did, once: the run, and compiling the module pushed to it.
    assert balances(gateway, provider)[1] - before[1] == job["charge"] + compiled(job, "outputs")
    await verified(gateway)


@pytest.mark.parametrize("stop", ["graceful", "tab-left-pending"])
async def test_a_stop_while_a_jobs_bytes_are_sent_pays_nothing_and_the_start_tells_the_provider_to_forget_it(
        node_factory, monkeypatch, stop) -> None:
    """Nothing ran: the job's tab is closed for a receipt of the compile of the module pushed for it alone, paid, and
    the provider gives up the job it holds (a place of its sender's quota, its budget reserved) as that close is
    answered.  A stop that left the tab pending (a kill -9 before it was closed): the provider, asked for the run's
    answer at the start, has not all its bytes, is told to forget the job, and the tab is closed for the compile alone
    all the same, paid by the start."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    reached, start = asyncio.Event(), balances(gateway, provider)

    async def then_the_stop(*args, **kwargs):
        reached.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patched:
        patched.setattr(sent_jobs.wire, "send", then_the_stop)
        if stop == "tab-left-pending":
            patched.setattr(gateway.app[NODE].paid.gateway_tabs, "answered", lambda *args: None)
        running = asyncio.ensure_future(jobs.run({"module": module, "stdin": "-"}, reading(b"the job's bytes")))
        await asyncio.wait_for(reached.wait(), 60)
        running.cancel()  # what the stop does to the requests still in flight
        with contextlib.suppress(asyncio.CancelledError):
            await running
    (jid,) = [j["id"] for j in jobs.records.all_jobs()]
    ledger, compile = gateway.app[NODE].ledger, compiled(jobs.records.load(jid), "outputs")
    if stop == "graceful":
        await eventually_async(lambda: ledger.pending() == [], "the job's tab closed, its compile paid")
        assert balances(gateway, provider) == (start[0] - compile, start[1] + compile)
        assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}  # given up as its tab's close was answered
    else:
        assert provider.app[NODE].hosted_jobs.status() == {"hosted": 1}
        assert len(ledger.pending()) == 1
    before = balances(gateway, provider)
    await close_node(gateway)
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})

    async def ended():
        job = await (await gateway.get(f"/v1/compute/jobs/{jid}")).json()
        return job["state"] not in ("running", "storing") and job

    job = await eventually_async(ended, "the job ended at the start", 60)
    assert job["state"] == "interrupted" and job["outputs"] == [], job
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}
    await settle(gateway)
    owed = 0 if stop == "graceful" else compile  # (the graceful stop's close paid it)
    assert balances(gateway, provider) == (before[0] - owed, before[1] + owed)
    assert gateway.app[NODE].ledger.pending() == [] and gateway.app[NODE].ledger.holding() == {}
    await verified(gateway)


async def test_a_jobs_tab_left_pending_by_a_stop_before_its_run_was_asked_for_pays_nothing_at_the_start(
        node_factory, monkeypatch) -> None:
    """A kill -9 the moment the provider took the job, before its record names the provider: the job's tab is
    pending, shown to the provider, and no record holds it.  Nothing was asked to run, so the payment retry pays
    nothing for it, and a provider that countersigns a receipt for it anyway is struck (once is enough here) and
    passed over for the next job."""
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    await _stopped_once_the_provider_took_it(gateway, module, monkeypatch)
    (job,) = jobs.records.all_jobs()
    assert "sent" not in job, job
    (tab,) = [a for a in gateway.app[NODE].ledger.pending() if a.job == remote_tabs.job_tab(job["id"])]
    (hostile,) = [p for p in providers if p.app[IDENTITY].public_key == tab.payee]
    (other,) = [p.app[IDENTITY].id for p in providers if p is not hostile]
    before = balances(gateway, hostile)
    await close_node(gateway)
    countersigning_the_cap(hostile)
    gateway = await node_factory("gateway", **{**QUIET, "peers": {**QUIET["peers"], "quarantine_strikes": 1}},
                                 market={"offer_compute": False})
    node = gateway.app[NODE]
    await eventually_async(lambda: _settled(node, tab.id.hex()), "the job's tab settled at the start", 30)
    assert node.paid.gateway_tabs.refused_receipts == 1
    assert balances(gateway, hostile)[0] == before[0]  # its receipt stays on its own chain, unpaid
    assert node.ledger.holding() == {}
    await verified(gateway)
    assert node.quarantine.active(hostile.app[IDENTITY].id) is not None
    status, again = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"the job's bytes")
    assert status == 201 and again["state"] == "done" and again["provider"] == other, again


async def test_a_jobs_tab_closed_while_its_job_waits_for_its_bytes_is_answered_at_once(node_factory,
                                                                                        monkeypatch) -> None:
    """A kill -9 of the gateway the moment the provider took the job: the provider holds the job, waiting for bytes
    that will never come, and the gateway's next start closes the job's tab.  Only the job's sender may close its tab,
    so a job not yet asked to run is given up with it: the provider answers at once what ran under the tab (nothing),
    not that the job is still running until it drops the job itself (hosted_jobs.IDLE), and the job's place here is
    free for the sender's next job."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    price = await _stopped_once_the_provider_took_it(gateway, module, monkeypatch)
    (tab,) = gateway.app[NODE].ledger.pending()
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 1}
    before = balances(gateway, provider)
    await close_node(gateway)
    closes = []
    close_once = provider.app[NODE].paid.provider_tabs.close_once

    async def counted(auth, **kwargs):
        closes.append(auth.id)
        return await close_once(auth, **kwargs)

    provider.app[NODE].paid.provider_tabs.close_once = counted
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    node = gateway.app[NODE]
    await eventually_async(lambda: _settled(node, tab.id.hex()), "the job's tab dropped at the start", 30)
    assert closes == [tab.id]  # answered the first time it was asked
    # Nothing ran; compiling the module pushed for it was done, its price held on the tab's tally: that is paid.
    compile = compile_price(len(wasm("outputs")), price)
    assert balances(gateway, provider) == (before[0] - compile, before[1] + compile) and node.ledger.holding() == {}
    status, again = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"the job's bytes")
    assert status == 201 and again["state"] == "done", again
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}
    await settle(gateway)
    await verified(gateway)
    await verified(provider)


async def test_a_live_job_is_never_given_up_by_its_gateways_retry_nor_its_tab_closed_by_a_stranger(
        node_factory, monkeypatch) -> None:
    """A provider gives a job up when its tab is closed before its run is asked for, so nothing of the job's own
    gateway may close it while the job is live: its payment retry passes over the tab while the job's bytes are being
    sent, and another node that learned the tab's authorization is refused its close.  The provider keeps the job,
    runs it once asked, and is paid its charge once."""
    from xsc.ledger.core.model import encode_authorization
    from xsc.net.compute import close_tab

    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "outputs", wasi=True)
    node = gateway.app[NODE]
    send, sending, go_on = sent_jobs.wire.send, asyncio.Event(), asyncio.Event()

    async def paused(*args, **kwargs):
        sending.set()
        await go_on.wait()
        await send(*args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "send", paused)
    before = {p.app[IDENTITY].id: balances(gateway, p) for p in providers}
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"the job's bytes"))
    try:
        await asyncio.wait_for(sending.wait(), 60)
        (auth,) = node.ledger.pending()
        holder, stranger = sorted(providers, key=lambda p: p.app[IDENTITY].public_key != auth.payee)
        holder_id = holder.app[IDENTITY].id
        assert await node.paid.payments.retry_all() == {}  # the job's tab is not the retry's to close
        with pytest.raises(PeerRefused) as refused:
            await close_tab(stranger.app[NODE].client, holder.app[NODE].peers.url, holder_id,
                            encode_authorization(auth).hex())
        assert refused.value.details["peer_code"] == "forbidden", refused.value.details
        assert holder.app[NODE].hosted_jobs.status() == {"hosted": 1}
    finally:
        go_on.set()
    status, job = await running
    assert status == 201 and job["state"] == "done" and job["provider"] == holder_id, job
    await settle(gateway)
    after = balances(gateway, holder)
    owed = job["charge"] + compiled(job, "outputs")  # its run, and compiling the module pushed to it
    assert (after[0] - before[holder_id][0], after[1] - before[holder_id][1]) == (-owed, owed)
    await verified(gateway)
    await verified(holder)


async def test_a_jobs_tab_a_start_pays_is_still_held_to_its_charge_once_the_job_runs_again(node_factory,
                                                                                          monkeypatch) -> None:
    """A start pays a done job's tab the charge its record names; the provider does not answer that close, and the
    job runs again, its record naming the new run's tab only.  After the next stop the payment retry still pays the
    first tab no more than that charge."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    spec = {"module": module, "stdin": "-"}
    monkeypatch.setattr(gateway.app[NODE].jobs.sent, "pay", lambda returned: None)  # the stop comes before it
    status, job = await run_job(gateway, spec, stdin=b"abc")
    assert status == 201 and job["state"] == "done" and job["charge"] > 0, job
    (first,) = [a.id.hex() for a in gateway.app[NODE].ledger.pending() if a.job == remote_tabs.job_tab(job["id"])]
    await close_node(gateway)
    tabs = provider.app[NODE].paid.provider_tabs
    close_once, asked = tabs.close_once, []

    async def not_now(auth, **kwargs):
        if auth.id.hex() != first:
            return await close_once(auth, **kwargs)
        asked.append(auth.id.hex())
        raise Conflict("not now", hint="close it in a moment")

    tabs.close_once = not_now
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    await eventually_async(lambda: asked, "the start asked the provider to close the job's tab", 30)
    status, again = await run_job(gateway, spec, stdin=b"abc")
    assert status == 201 and again["state"] == "done", again
    (record,) = gateway.app[NODE].jobs.records.all_jobs()
    assert record["executions"] == 2 and first not in [p["authorization"] for p in record["paid_on"]], record
    await close_node(gateway)
    countersigning_the_cap(provider)
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    node = gateway.app[NODE]
    await eventually_async(lambda: _settled(node, first), "the first tab settled at the start", 30)
    paid = [e.receipt.amount for e in node.ledger.store.history(gateway.app[CLIENT_IDENTITY].public_key, 50)
            if e.authorization.id.hex() == first]
    assert (paid, node.paid.gateway_tabs.refused_receipts) == ([], 1)
    await verified(gateway)


async def _stopped_once_the_provider_took_it(gateway, module: str, monkeypatch) -> int:
    """A job run on `gateway` stopped (as a kill -9 would: no tab answered) the moment its provider took it, before
    the gateway kept the provider's id for the job; the price it was placed at."""
    begin, reached, prices = sent_jobs.wire.begin, asyncio.Event(), []

    async def then_the_stop(client, url, provider, body, *args, **kwargs):
        await begin(client, url, provider, body, *args, **kwargs)
        prices.append(body["price"])
        reached.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patched:
        patched.setattr(sent_jobs.wire, "begin", then_the_stop)
        patched.setattr(gateway.app[NODE].paid.gateway_tabs, "answered", lambda *args: None)  # a kill -9 runs none
        running = asyncio.ensure_future(gateway.app[NODE].jobs.run({"module": module, "stdin": "-"},
                                                                   reading(b"the job's bytes")))
        await asyncio.wait_for(reached.wait(), 60)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    return prices[0]


async def test_a_job_after_a_provider_left_looks_up_no_providers_for_the_one_that_left(node_factory,
                                                                                   monkeypatch) -> None:
    """A provider stops (its offer of nothing reaches the gateway as it goes; its probes still say up): the next
    job, placed on the provider left and its outputs stored, never waits on a hash-table lookup that could only
    find the one that left."""
    gateway, (leaving, staying) = await network(node_factory, providers=2)
    module = await deploy(gateway, "outputs", wasi=True)
    node = gateway.app[NODE]
    node.client.unreached = None  # its probes still say up: no request that finds it gone has it probed out of turn
    left = leaving.app[IDENTITY].id
    await close_node(leaving)
    await eventually_async(lambda: node.market.book.get(left) is not None and not node.market.book.get(left).asks,
                           "the leaving provider's offer of nothing in the gateway's book")
    assert left in {d.id for d in node.peers.up_peers()}  # not probed down yet
    looked_up: list[str] = []

    async def unanswered(kind: str, wanted: int, found: dict) -> None:  # datagrams to nodes that cannot answer
        looked_up.append(kind)
        await asyncio.Event().wait()

    monkeypatch.setattr(node.dht, "find_providers", unanswered)
    status, job = await run_job(gateway, {"module": module})
    assert status == 201 and job["provider"] == staying.app[IDENTITY].id, job
    assert looked_up == []


async def test_a_jobs_begin_and_data_are_asked_again_after_a_503_of_a_moment_or_a_lost_answer(node_factory,
                                                                                             monkeypatch) -> None:
    """The provider answers the job's begin 503 once (its replay cache full for a moment), and the answers to the
    begin and to its data are lost to a connection that closed after the provider took them: each is asked again
    and taken once, and the job runs there (it has no other provider to go to), over its bytes once.  A begin
    refused a connection (the provider gone) is not asked again."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    hosted, client = provider.app[NODE].hosted_jobs, gateway.app[NODE].paid.client
    begin, request = hosted.begin, client.request
    said: list[str] = []

    async def full_once(sender, body):
        if "503" not in said:
            said.append("503")
            raise ReplayCacheFull("the replay cache is full for a moment")
        return await begin(sender, body)

    async def answer_lost_once(url, method, path, **kwargs):
        answer = await request(url, method, path, **kwargs)
        step = "begin" if path == sent_jobs.wire.JOBS_PATH else "data" if "/data/" in path else None
        if step is not None and step not in said:
            said.append(step)
            raise PeerUnreachable(f"peer {url} is unreachable: connection closed", url=url,
                                  reason="connection closed", sent=True)
        return answer

    monkeypatch.setattr(hosted, "begin", full_once)
    monkeypatch.setattr(client, "request", answer_lost_once)
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"hello there")
    assert status == 201 and job["provider"] == provider.app[IDENTITY].id, job
    assert said == ["503", "begin", "data"]
    outputs = {o["name"]: o for o in job["outputs"]}
    assert await read_file(gateway, outputs["out/c.txt"]["capability"]) == b"hello there"
    assert hosted.status() == {"hosted": 0}  # no second job staged by the begin asked again
    assert provider.app[NODE].trust.line(gateway.app[IDENTITY].id)["reserved"] == 0

    async def refused(url, method, path, **kwargs):  # the provider gone: its port closed
        if path.startswith(sent_jobs.wire.JOBS_PATH):  # not the market's and allocation's own rounds meanwhile
            said.append(path)
        raise PeerUnreachable(f"peer {url} is unreachable: connection refused", url=url,
                              reason="connection refused", sent=False)

    monkeypatch.setattr(client, "request", refused)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"hello again")
    assert status == 502 and "connection refused" in problem["detail"], problem
    assert said[3:] == [sent_jobs.wire.JOBS_PATH]  # never asked again: the next provider (none here) at once


async def test_a_job_whose_caller_hangs_up_once_it_was_sent_to_a_provider_ends_paid_once_its_outputs_found(
        node_factory, monkeypatch) -> None:
    """The user's request for a job goes away (its client closed the connection, a Ctrl-C of `xsc compute run`) once
    the job was sent to a provider: the job goes on to its end on the user's node, as if it were still asked: done,
    its provider paid its charge once, its record kept and its outputs stored, found by `xsc compute jobs` and read
    back."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    before = balances(gateway, provider)
    run, asked, hung_up = sent_jobs.wire.run, asyncio.Event(), asyncio.Event()

    async def held(*args, **kwargs):  # the run is asked for once the caller has gone
        asked.set()
        await hung_up.wait()
        return await run(*args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "run", held)
    calling = asyncio.ensure_future(run_job(gateway, {"module": module, "stdin": "-"}, stdin=DATA))
    await asyncio.wait_for(asked.wait(), 20)
    calling.cancel()  # the client hangs up: its connection closes while the job is with its provider
    with contextlib.suppress(asyncio.CancelledError):
        await calling
    hung_up.set()
    shown = await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "jobs", "--json",
                                    env={"XSC_TOKEN": gateway.app[TOKEN]})
    (listed,) = json.loads(ok(shown))["jobs"]

    async def ended() -> dict | None:
        job = await (await gateway.get(f"/v1/compute/jobs/{listed['id']}")).json()
        return job if job["state"] not in ("running", "storing") else None

    job = await eventually_async(ended, "the job to end without its caller", 30)
    assert job["state"] == "done" and job["executions"] == 1 and job["provider"] == provider.app[IDENTITY].id, job
    (copy,) = [o for o in job["outputs"] if o["name"] == "out/c.txt"]
    assert await read_file(gateway, copy["capability"]) == DATA
    await owed_paid(gateway, job)
    await settle(gateway)
    after = balances(gateway, provider)
    owed = job["charge"] + compiled(job, "outputs")  # its run, and compiling the module pushed to it
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed) and job["charge"] > 0
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}  # told to forget it once its outputs came
    for node in (gateway, provider):
        await verified(node)


async def test_a_run_answered_after_its_gateway_gave_up_on_it_is_not_paid_and_its_job_paid_once_elsewhere(
        node_factory, monkeypatch) -> None:
    """The first provider's run is held while the gateway gives up on it (its answer timed out) and places the job
    on the second; the held run then ends and is recorded there: only the second is paid, once."""
    gateway, providers = await network(node_factory, providers=2)
    ids = {p.app[NODE].compute: p.app[IDENTITY].id for p in providers}
    module = await deploy(gateway, "outputs", wasi=True)
    asked: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()
    program = hosted_jobs.run_program

    async def held(compute, *args, **kwargs):
        if ids[compute] == asked[0]:
            entered.set()
            await release.wait()
        return await program(compute, *args, **kwargs)

    monkeypatch.setattr(hosted_jobs, "run_program", held)
    run = sent_jobs.wire.run

    async def given_up(client, url, provider, *args, **kwargs):
        asked.append(provider)
        if provider != asked[0]:
            return await run(client, url, provider, *args, **kwargs)
        running = asyncio.ensure_future(run(client, url, provider, *args, **kwargs))
        await entered.wait()
        running.cancel()  # its connection closed, as a timeout closes it
        raise PeerUnreachable(f"provider {url}: timed out", url=url, reason="timed out", sent=True)

    monkeypatch.setattr(sent_jobs.wire, "run", given_up)
    before = {p.app[IDENTITY].id: balances(gateway, p) for p in providers}
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    assert status == 201 and job["provider"] == asked[1] != asked[0], (job, asked)
    late = next(p for p in providers if p.app[IDENTITY].id == asked[0])
    release.set()

    async def recorded():  # the late run ends on its provider, and is written on its tab there
        records = (await (await late.get("/v1/compute/provenance?limit=100")).json())["records"]
        return any(r["record"].get("job", {}).get("id") == job["id"] for r in records)

    await eventually_async(recorded, "the late run recorded on its provider")
    await settle(gateway)
    await eventually_async(lambda: gateway.app[NODE].ledger.pending() == [], "every tab paid or refused")
    paid = {p: balances(gateway, node)[1] - before[p][1] for p, node in
            ((n.app[IDENTITY].id, n) for n in providers)}
    # The one run paid, with compiling the module pushed to its provider; the run given up on, nothing (its tab is
    # dropped whole, the compile of its module with it).
    owed = job["charge"] + compiled(job, "outputs")
    assert paid == {asked[0]: 0, asked[1]: owed} and job["charge"] > 0, paid
    assert balances(gateway, late)[0] - before[asked[0]][0] == -owed  # the user paid the one run
    for node in (gateway, *providers):
        await verified(node)


async def test_a_provider_answering_a_run_past_its_jobs_bound_is_read_no_further_and_not_paid(node_factory,
                                                                                              monkeypatch) -> None:
    """A job keeping 1 KiB of stdout and of stderr is answered by a run some megabytes long: the gateway reads no
    more than an honest answer takes (sent_jobs: wire.run_answer_bound), takes it as a run whose answer was lost,
    and pays nothing of it."""
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    hosted = provider.app[NODE].hosted_jobs
    honest = hosted._run
    bound = sent_jobs.wire.run_answer_bound(1024, 1024)

    async def padded(job):
        answer = await honest(job)
        return {**answer, "run": {**answer["run"], "stdout": "x" * bound}}

    monkeypatch.setattr(hosted, "_run", padded)
    asked: list[int] = []
    run = sent_jobs.wire.run
    monkeypatch.setattr(sent_jobs.wire, "run", lambda *a, most, **kw: asked.append(most) or run(*a, most=most, **kw))
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-",
                                              "limits": {"stdout": 1024, "stderr": 1024}}, stdin=b"abc")
    assert asked == [bound], asked
    assert status == 502 and problem["code"] == "peer-unreachable" and f"more than {bound} bytes" in \
        problem["detail"], problem
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == []
    await settle(gateway)
    assert balances(gateway, provider) == before


def _fault(honest: dict) -> dict:
    raise RuntimeError("a fault of the provider's once the job ran")


@pytest.mark.parametrize("answer", [lambda honest: {**honest, "outputs": "none"}, lambda honest: ["not", "a", "run"],
                                    _fault], ids=["outputs-not-a-list", "not-an-object", "a-fault-once-it-ran"])
async def test_a_run_answered_in_no_shape_of_a_run_or_a_500_is_not_paid_and_its_job_goes_to_another_provider(
        node_factory, monkeypatch, answer) -> None:
    """The first provider asked runs the job and answers what is no run's answer, or a 500: nothing of it can be
    believed, as of an answer that never came (it may have run), so it is not paid and the job goes to the other
    provider."""
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "outputs", wasi=True)
    answered: list[str] = []
    for provider in providers:
        hosted = provider.app[NODE].hosted_jobs

        async def shapeless(job, honest=hosted._run, me=provider.app[IDENTITY].id):
            answered.append(me)
            return answer(await honest(job)) if len(answered) == 1 else await honest(job)

        monkeypatch.setattr(hosted, "_run", shapeless)
    before = {p.app[IDENTITY].id: balances(gateway, p) for p in providers}
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    assert status == 201 and job["provider"] == answered[1] != answered[0], (job, answered)
    assert [a["provider"] for a in job["attempts"]] == [answered[0]], job["attempts"]
    await settle(gateway)
    paid = {i: balances(gateway, p)[1] - before[i][1] for i, p in ((p.app[IDENTITY].id, p) for p in providers)}
    owed = job["charge"] + compiled(job, "outputs")  # with compiling the module pushed to it; the first's tab dropped
    assert paid == {answered[0]: 0, answered[1]: owed} and job["charge"] > 0, paid
