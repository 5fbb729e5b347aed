"""Replicated jobs (compute/job_placing.py: JobPlacing.replicated) on real nodes with real HTTP between them: a
deterministic job runs on R providers at once, the ones whose outputs and fuel agree are paid, the others are
refused and struck, and with no agreement nothing is paid or stored.  The user's node offers no compute."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections import Counter
from decimal import Decimal

import aiohttp
import click
import pytest
import pytest_asyncio

from tests.support.cli import error_line, ok, xsc_in_process
from tests.support.compute import deploy, peer_with_provider
from tests.support.jobs import (QUIET, balances, compiled_for, countersigning_the_cap, network, owed_paid, read_file,
                                reading, restarted, run_job, settle, settled, verified)
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async
from xsc.compute import hosted_jobs, remote_tabs, sent_jobs
from xsc.compute.job_answers import rerun_hint
from xsc.errors import PeerUnreachable
from xsc.node import IDENTITY, TOKEN
from xsc.node.appkeys import METRICS, NODE
from xsc.peers.admission import Quarantine
from xsc.units import format_credits


async def _done_each_replica_run_and_paid_once(gateway, providers, before, job: dict) -> None:
    """The job done, each provider's replica run once and paid its charge once, with compiling the module `outputs`
    pushed to it for the job (`before`: their balances)."""
    assert job["state"] == "done" and all(r["paid"] for r in job["replicas"]), job
    for provider in providers:
        assert _jobs_paid_on(provider) == [job["run"]]  # ran once
    await owed_paid(gateway, job)
    charges = {r["provider"]: r["charge"] for r in job["replicas"]}
    for provider, earned in zip(providers, before):
        owed = charges[provider.app[IDENTITY].id] + await compiled_for(provider, job["run"], "outputs")
        assert balances(gateway, provider)[1] - earned == owed and charges[provider.app[IDENTITY].id] > 0


def _jobs_paid_on(provider) -> list[str]:
    """The job ids of the runs a provider recorded."""
    records = provider.app[NODE].compute.provenance_records.recent(10_000)
    return [r["record"]["job"]["id"] for r in records if "job" in r["record"]]


def _runs_since(provider, before: list[str]) -> list[str]:
    """The job ids of the runs `provider` recorded since it had recorded `before` (its _jobs_paid_on then), sorted."""
    return sorted((Counter(_jobs_paid_on(provider)) - Counter(before)).elements())


# The tests that change none of its nodes (no patch, stop or strike), ask their own jobs and count balances and runs
# from what they started with share one network: a gateway and three providers (tests/compute/conftest.py).
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def three_providers(file_nodes):
    return await network(file_nodes, providers=3)


@pytest_asyncio.fixture(loop_scope="module")
async def shared(three_providers):
    """The file's network, with every tab a test before left open paid."""
    gateway, providers = three_providers
    await settled(gateway)
    return gateway, providers


def _hinted(said: str, after: str) -> list[str]:
    """The words of the command a CLI error's hint names `after` its lead-in (up to the next comma, or the hint's
    end), less `xsc`."""
    words = re.split(r"[,)]", said.split(after, 1)[1], maxsplit=1)[0].split()
    assert words[0] == "xsc", said
    return words[1:]


def _flip_outputs_of(monkeypatch, liar) -> None:
    """`liar` flips the first byte of every output its programs leave, before it hashes and signs them."""
    real = hosted_jobs.run_program

    async def run_program(compute, *args, **kwargs):
        ran = await real(compute, *args, **kwargs)
        if compute is liar.app[NODE].compute:
            for _, path, size in ran.files:
                if size:
                    data = path.read_bytes()
                    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
        return ran

    monkeypatch.setattr(hosted_jobs, "run_program", run_program)


def _add_fuel_on(monkeypatch, liar) -> None:
    """`liar` bills one more unit of fuel than its runs used."""
    compute = liar.app[NODE].compute
    real = compute.job_run

    def job_run(module_id, entrypoint, signature, argv, limits, outcome, *rest):
        outcome.fuel_consumed += 1
        return real(module_id, entrypoint, signature, argv, limits, outcome, *rest)

    monkeypatch.setattr(compute, "job_run", job_run)


def _other_stdout_on(monkeypatch, liar) -> None:
    """`liar` answers its runs with a stdout of its own making (its record signs the stream's length, not its bytes):
    what the user reads of a job that prints its result."""
    hosted = liar.app[NODE].hosted_jobs
    real = hosted._run

    async def run(job):
        answer = await real(job)
        answer["run"]["stdout"] = answer["stdout"] = "forged\n"
        return answer

    monkeypatch.setattr(hosted, "_run", run)


async def test_100_deterministic_jobs_on_three_replicas_agree_and_each_provider_is_paid_once_per_job(
        shared) -> None:
    gateway, providers = shared
    module = await deploy(gateway, "sha256", wasi=True)
    before = [balances(gateway, p) for p in providers]
    ran_before = [_jobs_paid_on(p) for p in providers]
    charges = {p.app[IDENTITY].id: 0 for p in providers}
    # (a test before may have pushed it)
    lacked = [not p.app[NODE].compute.registry.has_module(module) for p in providers]
    ids = []
    for n in range(100):
        data = bytes(range(256)) * n + b"%d" % n
        status, job = await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 3},
                                 stdin=data)
        assert status == 201, job
        assert job["stdout"] == hashlib.sha256(data).hexdigest() + "\n"
        assert sorted(r["provider"] for r in job["replicas"]) == sorted(charges) and all(
            r["paid"] for r in job["replicas"])
        assert len({r["fuel_consumed"] for r in job["replicas"]}) == 1  # the bill agrees too
        for r in job["replicas"]:
            charges[r["provider"]] += r["charge"]
        assert job["charged"] == sum(r["charge"] for r in job["replicas"])
        ids.append(job["run"])  # what its providers know it as
    for provider, earlier in zip(providers, ran_before):
        assert _runs_since(provider, earlier) == sorted(ids)  # each ran every job, once
    for provider, pushed in zip(providers, lacked):  # compiling the module, pushed for the first job to each lacking it
        charges[provider.app[IDENTITY].id] += await compiled_for(provider, ids[0], "sha256") if pushed else 0
    await settle(gateway)
    paid = before[0][0] - balances(gateway, providers[0])[0]
    assert paid == sum(charges.values())
    for provider, (_, earned) in zip(providers, before):
        assert balances(gateway, provider)[1] - earned == charges[provider.app[IDENTITY].id]
    for node in (gateway, *providers):
        await verified(node)


async def test_replicas_whose_outputs_are_refused_agree_on_the_trap_they_signed_and_are_paid(node_factory,
                                                                                            monkeypatch) -> None:
    """Replicas of a job whose outputs are over its bytes_out each sign the run as the trap its caller is told
    (`output-limit`): they agree, each is paid, none is struck, and nothing is stored."""
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "outputs", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    status, problem = await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 2,
                                              "limits": {"bytes_out": 10}}, stdin=b"abc")
    assert status == 413 and problem["code"] == "over-cap" and "over its bytes_out (10)" in problem["detail"], problem
    assert struck == [] and all(r["paid"] for r in problem["replicas"]) and len(problem["replicas"]) == 2, problem
    for provider in providers:
        (signed,) = [r for r in provider.app[NODE].compute.provenance_records.recent(10) if "job" in r["record"]]
        record = signed["record"]
        assert record["outcome"] == "trap" and record["trap"]["kind"] == "output-limit", record
        assert record["job"]["outputs"] == [] and record["job"]["id"] == problem["run"], record
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before


async def test_replicas_stopped_mid_run_for_their_outputs_agree_on_the_trap_and_are_each_paid_what_they_metered(
        node_factory, monkeypatch) -> None:
    """Replicas of a job that writes to /out without end are each stopped at a tick of their provider's clock, so
    how far each ran (its fuel, its bill) is not the program's to fix: they agree on the trap (`output-limit`), none
    is struck, and each is paid the charge it metered."""
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "hoard", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    status, problem = await run_job(gateway, {"module": module, "deterministic": True, "replicas": 2,
                                              "limits": {"bytes_out": 1 << 20, "timeout": 5}})
    assert status == 413 and problem["code"] == "over-cap", problem
    assert struck == [] and len(problem["replicas"]) == 2 and all(r["paid"] for r in problem["replicas"]), problem
    assert problem["charge"] == sum(r["charge"] for r in problem["replicas"]), problem


@pytest.mark.parametrize("lie", [_flip_outputs_of, _add_fuel_on, _other_stdout_on],
                         ids=["flipped-byte", "one-more-fuel", "other-stdout"])
async def test_a_replica_that_disagrees_is_not_paid_and_is_struck_and_the_honest_two_are(
        node_factory, monkeypatch, lie) -> None:
    gateway, providers = await network(node_factory, providers=3)
    liar, liar_id = providers[0], providers[0].app[IDENTITY].id
    lie(monkeypatch, liar)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    module = await deploy(gateway, "outputs", wasi=True)
    before = [balances(gateway, p) for p in providers]
    status, job = await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 3},
                             stdin=b"the honest bytes")
    assert status == 201, job
    paid = {r["provider"]: r["paid"] for r in job["replicas"]}
    assert paid == {p.app[IDENTITY].id: p is not liar for p in providers}
    assert struck == [liar_id]
    assert job["stdout"] == ""  # the program prints nothing
    c_txt = next(o for o in job["outputs"] if o["name"] == "out/c.txt")
    assert await read_file(gateway, c_txt["capability"]) == b"the honest bytes"  # the outputs are the honest ones
    await settle(gateway)
    # The honest two, each with compiling the module pushed to it, and no more (the liar's tab dropped whole).
    compiles = [await compiled_for(p, job["run"], "outputs") for p in providers[1:]]
    assert before[0][0] - balances(gateway, providers[0])[0] == job["charged"] + sum(compiles)
    for node in (gateway, *providers):
        await verified(node)


async def test_replicas_that_all_disagree_are_none_of_them_paid_and_nothing_is_stored(node_factory,
                                                                                       monkeypatch) -> None:
    gateway, providers = await network(node_factory, providers=3)
    _flip_outputs_of(monkeypatch, providers[0])
    _add_fuel_on(monkeypatch, providers[1])
    module = await deploy(gateway, "outputs", wasi=True)
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    before = balances(gateway, providers[2])
    status, problem = await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 3},
                                 stdin=b"bytes")
    assert status == 502 and problem["code"] == "replicas-disagree", problem
    assert "nothing is paid" in problem["detail"]
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before
    await settle(gateway)
    assert balances(gateway, providers[2])[0] == before[0]


class Crash(Exception):
    """The gateway's process ending there: nothing after it runs, nothing is undone."""


@pytest.mark.parametrize("cut", ["before-the-verdict", "after-the-verdict"])
async def test_a_replica_that_disagrees_is_judged_once_through_a_stop_as_its_verdict_is_written(
        node_factory, monkeypatch, cut) -> None:
    """The gateway's process ends just before the replicas' verdict is written (they are compared at the start), or
    just after it, before the liar's tab is dropped (the start resumes the job): either way the liar is struck once,
    by the gateway that wrote the verdict, listed as having answered unlike the others and not paid, and the honest
    two are paid once."""
    gateway, providers = await network(node_factory, providers=3)
    liar, liar_id = providers[0], providers[0].app[IDENTITY].id
    _flip_outputs_of(monkeypatch, liar)
    struck: list[tuple[Quarantine, str]] = []  # by the gateway before the stop and after it
    strike = Quarantine.strike
    monkeypatch.setattr(Quarantine, "strike", lambda self, node, why, **kw: struck.append((self, node)) or strike(
        self, node, why, **kw))
    node = gateway.app[NODE]

    async def ended(*args, **kwargs):
        raise Crash()

    module = await deploy(gateway, "outputs", wasi=True)
    before = [balances(gateway, p)[1] for p in providers]
    with monkeypatch.context() as patched:
        patched.setattr(node.jobs.answers, "node_failed", ended)  # (what the node does of its failures, had it lived)
        if cut == "before-the-verdict":
            patched.setattr(node.jobs.answers, "answer_kept", ended)
        else:  # the first await after it: dropping the liar's tab
            patched.setattr(node.paid.gateway_tabs, "abandon", ended)
        status, _ = await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 3},
                                  stdin=b"the honest bytes")
        assert status == 500
    (left,) = node.jobs.records.all_jobs()
    if cut == "before-the-verdict":
        assert left["state"] == "running" and "replicating" in left, left
    else:
        assert left["state"] == "storing" and [r["provider"] for r in left["answered"]["refused"]] == [liar_id]
    jid = left["id"]
    gateway, job = await restarted(node_factory, gateway, jid)
    assert job["state"] == "done", job
    assert {r["provider"]: r["paid"] for r in job["replicas"]} == {p.app[IDENTITY].id: p is not liar
                                                                   for p in providers}
    (unlike,) = [r for r in job["replicas"] if r["provider"] == liar_id]
    assert "error" not in unlike and unlike["charge"] == 0, unlike  # it answered, unlike the others
    judge = node if cut == "after-the-verdict" else gateway.app[NODE]
    assert struck == [(judge.quarantine, liar_id)]
    c_txt = next(o for o in job["outputs"] if o["name"] == "out/c.txt")
    assert await read_file(gateway, c_txt["capability"]) == b"the honest bytes"
    await owed_paid(gateway, job)
    await settle(gateway)
    charges = {r["provider"]: r["charge"] for r in job["replicas"]}
    for provider, earned in zip(providers, before):  # each honest one's with compiling the module pushed to it
        compile = 0 if provider is liar else await compiled_for(provider, job["run"], "outputs")
        assert balances(gateway, provider)[1] - earned == charges[provider.app[IDENTITY].id] + compile
    for each in (gateway, *providers):
        await verified(each)


async def test_a_stop_while_a_replicas_outputs_are_fetched_pays_it_once_at_the_start(node_factory,
                                                                                      monkeypatch) -> None:
    """A graceful stop cancels the job's request while one replica's outputs are fetched (the other two checked):
    that provider did the work, and the next start fetches them again, compares the three and pays each once."""
    gateway, providers = await network(node_factory, providers=3)
    held = providers[2].app[IDENTITY].id
    fetch, reached = sent_jobs.wire.fetch, asyncio.Event()

    async def held_back(client, url, provider, *args, **kwargs):
        if provider == held:
            reached.set()
            await asyncio.Event().wait()
        return await fetch(client, url, provider, *args, **kwargs)

    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    before = [balances(gateway, p)[1] for p in providers]
    with monkeypatch.context() as patched:
        patched.setattr(sent_jobs.wire, "fetch", held_back)
        running = asyncio.ensure_future(jobs.run({"module": module, "stdin": "-", "deterministic": True,
                                                  "replicas": 3}, reading(b"the honest bytes")))
        await asyncio.wait_for(reached.wait(), 60)
        await eventually_async(lambda: sorted(r["step"] for r in jobs.records.all_jobs()[0]["replicating"].values())
                               == ["checked", "checked", "fetching"], "the other two replicas checked")
        running.cancel()  # what the stop does to the requests still in flight
        with contextlib.suppress(asyncio.CancelledError):
            await running
    (jid,) = [j["id"] for j in jobs.records.all_jobs()]
    gateway, job = await restarted(node_factory, gateway, jid)
    await _done_each_replica_run_and_paid_once(gateway, providers, before, job)
    await verified(gateway)


@pytest.mark.parametrize("where", ["run", "fetch"])
async def test_a_stop_while_the_start_asks_a_replica_again_or_fetches_its_outputs_again_pays_it_once_at_the_next(
        node_factory, monkeypatch, where) -> None:
    """A stop cuts one replica short (its answer on its way back, or its outputs being fetched); the next start, asking
    that provider again (`answer_again`) or fetching its outputs again (`refetched`), is stopped at that moment too;
    the start after that finishes the job once and pays each replica once."""
    gateway, providers = await network(node_factory, providers=3)
    held, step = providers[2].app[IDENTITY].id, {"run": "sent", "fetch": "fetching"}[where]
    before = [balances(gateway, p)[1] for p in providers]
    with monkeypatch.context() as patched:
        reached = await _stopped_with_one_replica_held(gateway, held, where, patched)
        jobs = gateway.app[NODE].jobs
        (jid,) = [j["id"] for j in jobs.records.all_jobs()]
        await close_node(gateway)
        reached.clear()
        gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
        await asyncio.wait_for(reached.wait(), 60)  # the start is asking that replica again, or fetching again
        job = gateway.app[NODE].jobs.records.load(jid)
        assert job["state"] == "running" and job["replicating"][held]["step"] == step, job
        await close_node(gateway)
    gateway, job = await restarted(node_factory, gateway, jid)
    await _done_each_replica_run_and_paid_once(gateway, providers, before, job)
    assert gateway.app[NODE].ledger.pending() == [] and gateway.app[NODE].ledger.holding() == {}
    for each in (gateway, *providers):
        await verified(each)


@pytest.mark.parametrize("where", ["run", "fetch"])
async def test_a_replica_the_start_fails_to_reach_once_is_asked_again_and_paid_once(node_factory, monkeypatch,
                                                                                    where) -> None:
    """A stop while one replica's answer is on its way back (or its outputs are fetched); at the start, the first
    dial to its provider, asking for that answer again (or for its outputs again), fails before the question reaches
    it (as a handshake does on a busy machine): it is asked again, and its run, done, is counted and paid once with
    the others', not lost."""
    gateway, providers = await network(node_factory, providers=3)
    held = providers[2].app[IDENTITY].id
    before = [balances(gateway, p)[1] for p in providers]
    with monkeypatch.context() as patched:
        await _stopped_with_one_replica_held(gateway, held, where, patched)
    jobs = gateway.app[NODE].jobs
    real = getattr(sent_jobs.wire, where)
    (jid,) = [j["id"] for j in jobs.records.all_jobs()]
    dials: list[str] = []

    async def failed_dial(client, url, provider, *args, **kwargs):
        if provider == held and not dials:
            dials.append(provider)
            raise PeerUnreachable(f"peer {url} is unreachable: [ssl: wrong_version_number] wrong version number",
                                  url=url, reason="wrong version number", sent=False)
        return await real(client, url, provider, *args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, where, failed_dial)
    gateway, job = await restarted(node_factory, gateway, jid)
    assert dials == [held]
    await _done_each_replica_run_and_paid_once(gateway, providers, before, job)


async def test_a_job_that_is_not_deterministic_is_refused_for_replication_up_front(shared) -> None:
    gateway, _ = shared
    module = await deploy(gateway, "outputs", wasi=True)
    status, problem = await run_job(gateway, {"module": module, "replicas": 3})
    assert status == 400 and "only a deterministic job can be replicated" in problem["detail"], problem


async def test_a_job_on_more_replicas_than_the_market_offers_providers_is_refused_before_any_runs(node_factory
                                                                                                   ) -> None:
    """Two providers and a job on three replicas: 503 `too-few-providers`, saying how many the market offers and
    that none ran, with the command that runs it on fewer; not that replicas disagreed, since none ran."""
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "outputs", wasi=True)
    status, problem = await run_job(gateway, {"module": module, "deterministic": True, "replicas": 3})
    assert status == 503 and problem["code"] == "too-few-providers", problem
    assert problem["detail"] == "the market offers 2 other providers for this job at its price, and its 3 " \
                                "replicas need one each: none ran, nothing is paid", problem
    (first,) = gateway.app[NODE].jobs.records.all_jobs()
    assert problem["hint"].startswith(f"run it on fewer with: xsc compute rerun {first['id']} --replicas 2, or again "
                                      "once more are offered"), problem
    failed = await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "run", module,
                                     "--no-stdin", "--deterministic", "--replicas", "3", "--agree", "3",
                                     env={"XSC_TOKEN": gateway.app[TOKEN]})
    line = error_line(failed)
    assert line.startswith("xsc: error: the market offers 2 other providers for this job at its price") \
        and "disagree" not in line, line
    assert {job["state"] for job in gateway.app[NODE].jobs.records.all_jobs()} == {"refused"}
    assert [_jobs_paid_on(p) for p in providers] == [[], []]  # none ran
    for body in (b'{"module": "x"}', b"[2]", b"{"):  # a rerun changes the guarantee, nothing else
        response = await gateway.post(f"/v1/compute/jobs/{first['id']}/rerun", data=body)
        assert response.status == 400, await response.text()
    # The command the hint names works as written: the same run on the two providers there are, both agreeing.
    (asked,) = [j for j in gateway.app[NODE].jobs.records.all_jobs() if j["guarantee"]["agree"] == 3]
    hinted = _hinted(failed.stderr.decode(), "run it on fewer with: ")
    assert hinted == ["compute", "rerun", asked["id"], "--replicas", "2", "--agree", "2"], failed.stderr
    ran = await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), *hinted,
                                  env={"XSC_TOKEN": gateway.app[TOKEN]})
    assert "on the 2 replicas asked, 2 of them paid" in ran.stderr.decode(), ran.stderr


def _parsed(words: list[str]) -> dict:
    """What the CLI's parser makes of `xsc WORDS` (nothing run): the command's parameters."""
    from xsc.cli import cli

    context, command, rest = click.Context(cli, info_name="xsc"), cli, list(words)
    while isinstance(command, click.Group):
        name, rest = rest[0], rest[1:]
        command = command.get_command(context, name)
        context = click.Context(command, parent=context, info_name=name)
    return command.make_context(context.info_name, rest, parent=context.parent).params


def test_a_replicated_jobs_hints_for_a_job_whose_stdin_came_with_it_are_commands_the_cli_takes() -> None:
    """A job that read its stdin from its request is not run again by id: the hint with another guarantee pipes it
    to `xsc compute run` with the flags that replicate it, each one `run` takes."""
    job = {"id": "ab" * 32, "module": "cd" * 32, "guarantee": {"replicas": 3, "agree": 3},
           "again": {"stdin": "-", "deterministic": True, "replicas": 3, "agree": 3}}
    for guarantee, replicas, agree in (({"agree": 2}, 3, 2), ({"replicas": 2, "agree": 2}, 2, 2),
                                       ({"replicas": 2}, 2, None), ({}, 3, 3),
                                       ({"replicas": 1}, None, None)):
        hint = rerun_hint(job, **guarantee)
        words = hint.split(" | ", 1)[1].split()
        assert words[0] == "xsc", hint
        params = _parsed(words[1:])
        assert (params["stdin"], params["deterministic"], params["replicas"], params["agree"]) == (
            "-", True, replicas, agree), hint


async def test_replicas_lost_with_no_other_provider_fail_the_job_saying_how_many_agreed_answered_otherwise_and_were_lost(
        node_factory, monkeypatch) -> None:
    """A replica whose provider never answers (its run timed out) is lost, not unlike the others: with no other
    provider to take its place, the job fails as `replicas-lost`, in figures, with the commands that fix it."""
    gateway, providers = await network(node_factory, providers=3)
    gone = providers[0].app[IDENTITY].id
    run = sent_jobs.wire.run

    async def timed_out(client, url, provider, *args, **kwargs):
        if provider == gone:
            raise PeerUnreachable(f"provider {url}: timed out", url=url, reason="timed out", sent=True)
        return await run(client, url, provider, *args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "run", timed_out)
    module = await deploy(gateway, "outputs", wasi=True)
    failed = await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "run", module,
                                     "--no-stdin", "--deterministic", "--replicas", "3", "--agree", "3",
                                     env={"XSC_TOKEN": gateway.app[TOKEN]})
    line = error_line(failed)
    assert "2 of the 3 replicas asked agree, fewer than the 3 it asks; 0 answered otherwise, 1 was lost " \
           "(1 timed out): nothing is paid or stored" in line, line
    assert "disagree" not in line, line  # none answered otherwise: lost, not disagreeing
    (job,) = gateway.app[NODE].jobs.records.all_jobs()
    assert _hinted(failed.stderr.decode(), "run it again with: ") == ["compute", "rerun", job["id"]], failed.stderr
    assert line.endswith(f"(run it again with: xsc compute rerun {job['id']}, or with --agree 2 to ask fewer to "
                         "agree)") and line.count(job["id"]) == 1, line
    assert job["state"] == "refused" and not any(r["paid"] for r in job["replicas"]), job
    assert [r["lost"] for r in job["replicas"] if "lost" in r] == ["timed out"], job["replicas"]
    shown = ok(await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "job",
                                       job["id"], env={"XSC_TOKEN": gateway.app[TOKEN]}))
    assert f"  replica  not paid  lost: timed out  {gone}" in shown, shown
    status, problem = await run_job(gateway, {"module": module, "deterministic": True, "replicas": 3, "agree": 3})
    assert status == 502 and problem["code"] == "replicas-lost" and "disagree" not in problem["detail"], problem
    await settle(gateway)
    for provider in providers:
        assert balances(gateway, provider)[1] == 0  # nothing paid
    # The command the hint names works as written with --agree 2: the two that answer are enough for that agreement.
    fewer = ["compute", "rerun", job["id"], "--agree", "2"]
    ran = await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), *fewer,
                                  env={"XSC_TOKEN": gateway.app[TOKEN]})
    assert "on the 3 replicas asked, 2 of them paid" in ok(ran) + ran.stderr.decode(), ran.stderr


async def test_a_replica_whose_provider_went_away_is_placed_again_on_a_provider_the_book_holds_without_a_lookup(
        node_factory, monkeypatch) -> None:
    """Three providers, a job on two replicas, and the first provider asked gone: its replica is placed again on the
    third at once, from the book, without asking the hash table for more providers (the one gone is no reason to)."""
    gateway, providers = await network(node_factory, providers=3)
    run, gone = sent_jobs.wire.run, []

    async def went_away(client, url, provider, *args, **kwargs):
        if not gone or provider == gone[0]:
            gone.append(provider)
            raise PeerUnreachable(f"provider {url}: connection refused", url=url, reason="connection refused",
                                  sent=True)
        return await run(client, url, provider, *args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "run", went_away)
    lookup, looked_up = gateway.app[NODE].market.lookup, []
    find = lookup.find
    monkeypatch.setattr(lookup, "find", lambda kind, wanted: looked_up.append((kind, wanted)) or find(kind, wanted))
    module = await deploy(gateway, "sha256", wasi=True)
    ran = await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "run", module,
                                  "--stdin", "-", "--deterministic", "--replicas", "2", input=b"bytes",
                                  env={"XSC_TOKEN": gateway.app[TOKEN]})
    ok(ran)  # said as asked: the one placed again is no third replica
    assert "on the 2 replicas asked (1 placed again), 2 of them paid" in ran.stderr.decode(), ran.stderr
    (job,) = gateway.app[NODE].jobs.records.all_jobs()
    assert job["state"] == "done", job
    assert {r["provider"]: r["paid"] for r in job["replicas"]} == {p.app[IDENTITY].id: p.app[IDENTITY].id != gone[0]
                                                                   for p in providers}, job["replicas"]
    assert looked_up == []


async def test_replicas_that_do_not_agree_after_one_placed_again_are_said_in_the_replicas_asked(node_factory,
                                                                                                 monkeypatch) -> None:
    """Three replicas asked, all three to agree; one lost (timed out) and placed again on a fourth provider, which
    answers otherwise: the error counts the three asked, and says one was placed again, never "of 4 replicas"."""
    gateway, providers = await network(node_factory, providers=4)
    run, asked = sent_jobs.wire.run, []

    async def first_times_out(client, url, provider, *args, **kwargs):
        asked.append(provider)
        if provider == asked[0]:
            raise PeerUnreachable(f"provider {url}: timed out", url=url, reason="timed out", sent=True)
        return await run(client, url, provider, *args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "run", first_times_out)
    ids = {p.app[NODE].compute: p.app[IDENTITY].id for p in providers}
    real = hosted_jobs.run_program

    async def the_fourth_lies(compute, *args, **kwargs):
        ran = await real(compute, *args, **kwargs)
        if len(asked) > 3 and ids[compute] == asked[3]:  # the replica placed again
            for _, path, size in ran.files:
                if size:
                    data = path.read_bytes()
                    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
        return ran

    monkeypatch.setattr(hosted_jobs, "run_program", the_fourth_lies)
    module = await deploy(gateway, "outputs", wasi=True)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 3,
                                              "agree": 3}, stdin=b"bytes")
    assert status == 502 and len(set(asked)) == 4, (problem, asked)
    assert problem["detail"] == "2 of the 3 replicas asked agree (1 placed again), fewer than the 3 it asks; " \
                                "1 answered otherwise, 1 was lost (1 timed out): nothing is paid or stored", problem


async def _stopped_before_comparing(gateway, monkeypatch, agree: int) -> dict:
    """The record of a job on three replicas that `agree` must agree on, as a stop leaves it: every replica checked,
    none compared, paid or refused."""
    answers = gateway.app[NODE].jobs.answers
    judged = answers.judged

    async def cut(*args):  # the request's task cancelled, as by the node's stop
        raise asyncio.CancelledError()

    monkeypatch.setattr(answers, "judged", cut)
    module = await deploy(gateway, "outputs", wasi=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 3,
                                "agree": agree}, stdin=b"bytes")
    monkeypatch.setattr(answers, "judged", judged)
    (job,) = answers.records.all_jobs()
    return job


async def test_replicas_a_stop_left_uncompared_are_compared_at_the_start_by_the_agreement_the_job_asked(
        node_factory, monkeypatch) -> None:
    gateway, providers = await network(node_factory, providers=3)
    _flip_outputs_of(monkeypatch, providers[0])
    answers = gateway.app[NODE].jobs.answers
    job = await _stopped_before_comparing(gateway, monkeypatch, agree=3)
    assert sorted(r["step"] for r in job["replicating"].values()) == ["checked"] * 3, job
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    await gateway.app[NODE].jobs.recovery.recover_one(job)
    job = answers.records.load(job["id"])
    assert job["state"] == "refused" and "2 of the 3 replicas asked agree" in job["error"], job
    assert not any(r["paid"] for r in job["replicas"]) and "replicating" not in job
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before
    await settle(gateway)
    for provider in providers:
        assert balances(gateway, provider)[1] == 0  # nothing paid


def _prepayment_refusals(provider) -> float:
    """How many pieces of work `provider` refused for want of prepayment."""
    for line in provider.app[METRICS].render().decode().splitlines():
        if line.startswith('xsc_peer_refusals_total{code="prepayment-required"}'):
            return float(line.split()[-1])
    return 0.0


async def test_replicas_pass_over_a_provider_that_wanted_prepayment_as_a_single_job_does(node_factory) -> None:
    # The cheapest provider extends the gateway no credit: a replica sent to it is refused, once.
    stingy = await node_factory("stingy", **QUIET, ledger={"stranger_credit": 0},
                                market={"compute_ask_floor": 1, "compute_ask_ceiling": 2})
    others = [await node_factory(f"provider{i}", **QUIET, market={"compute_ask_floor": 20, "compute_ask_ceiling": 30})
              for i in range(2)]
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    for provider in (stingy, *others):
        await peer_with_provider(gateway, provider)
    module = await deploy(gateway, "sha256", wasi=True)
    spec = {"module": module, "stdin": "-", "deterministic": True, "replicas": 2}
    await run_job(gateway, spec, b"first")  # stingy asked, and refuses
    assert _prepayment_refusals(stingy) == 1
    for n in range(2):
        status, job = await run_job(gateway, spec, f"then {n}".encode())
        assert status == 201 and sorted(r["provider"] for r in job["replicas"]) == sorted(
            p.app[IDENTITY].id for p in others), job
    assert _prepayment_refusals(stingy) == 1  # never asked again


async def test_the_cli_counts_a_job_of_one_replica_as_one(shared) -> None:
    gateway, _ = shared
    module = await deploy(gateway, "sha256", wasi=True)
    ran = await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "run", module,
                                  "--no-stdin", "--deterministic", "--replicas", "1",
                                  env={"XSC_TOKEN": gateway.app[TOKEN]})
    said = ran.stderr.decode()
    assert ran.returncode == 0 and "on the 1 replica asked, paid (`xsc compute job ID` lists it)" in said, said


async def test_a_replicated_job_lost_to_a_refusal_for_want_of_prepayment_names_the_command_that_pays(
        node_factory) -> None:
    """A replica refused for want of prepayment is lost as "refused"; the job's hint names the prepayment a single
    job's refusal names, with the refusing provider's id whole, and not the provider that ran its replica."""
    stingy = await node_factory("stingy", **QUIET, ledger={"stranger_credit": 0},
                                market={"compute_ask_floor": 1, "compute_ask_ceiling": 2})
    honest = await node_factory("honest", **QUIET, market={"compute_ask_floor": 20, "compute_ask_ceiling": 30})
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    for provider in (stingy, honest):
        await peer_with_provider(gateway, provider)
    module = await deploy(gateway, "sha256", wasi=True)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 2},
                                    b"bytes")
    assert status == 502 and problem["code"] == "replicas-lost", problem
    assert "1 was lost (1 refused)" in problem["detail"], problem
    stingy_id = stingy.app[IDENTITY].id
    assert problem["hint"].startswith("ask its user for credit, or if it owes you: "
                                      f"xsc ledger prepay {stingy_id} CREDITS; then run it again"), problem
    assert honest.app[IDENTITY].id not in problem["hint"], problem


async def test_a_job_asked_again_with_other_replicas_or_agreement_is_another_job_whose_runs_are_the_same(
        shared) -> None:
    """The guarantee is part of what was asked: the same job with other --replicas or --agree is another job (its
    own id, record and replays), never refused nor answered from a record made with another guarantee.  What runs
    is the same: each provider is sent the same job id, so the same clocks and random."""
    gateway, providers = shared
    ran_before = [_jobs_paid_on(p) for p in providers]
    module = await deploy(gateway, "clock_random", wasi=True)
    single = {"module": module, "deterministic": True}
    status, once = await run_job(gateway, single)
    assert status == 201 and "replicas" not in once and once["guarantee"] == {"replicas": 1, "agree": 1}, once
    asked = {}
    for guarantee in ({"replicas": 3}, {"replicas": 3, "agree": 3}, {"replicas": 2}):
        status, job = await run_job(gateway, {**single, **guarantee})
        assert status == 201 and not job["replayed"], job
        assert job["guarantee"] == {"agree": guarantee["replicas"] // 2 + 1, **guarantee}, job
        assert len(job["replicas"]) == guarantee["replicas"] and all(r["paid"] for r in job["replicas"]), job
        assert job["stdout"] == once["stdout"], job  # the same run, so the same time and random
        asked[job["id"]] = guarantee
    assert len(asked) == 3 and once["id"] not in asked
    for jid, guarantee in asked.items():  # each answered again from its own record
        status, again = await run_job(gateway, {**single, **guarantee})
        assert status == 201 and again["replayed"] and again["id"] == jid, again
        shown = await (await gateway.get(f"/v1/compute/jobs/{jid}")).json()
        assert shown["guarantee"]["replicas"] == guarantee["replicas"] == len(shown["replicas"]), shown
    # `xsc compute job` says the guarantee and what its charge is made of: each replica, its provider whole
    text = ok(await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "job", jid,
                                      env={"XSC_TOKEN": gateway.app[TOKEN]}))
    assert "guarantee:  2 replicas, at least 2 agreeing" in text, text
    lines = [line.split() for line in text.splitlines() if line.startswith("  replica ")]
    assert sorted((words[-1], words[2:4]) for words in lines) == sorted(
        (r["provider"], [format_credits(r["charge"]), "credits"]) for r in shown["replicas"]), text
    assert sum(Decimal(words[2]) for words in lines) == Decimal(format_credits(shown["charge"]))
    status, again = await run_job(gateway, single)
    assert status == 201 and again["replayed"] and again["id"] == once["id"] and "replicas" not in again, again
    ran = [job for provider, earlier in zip(providers, ran_before) for job in _runs_since(provider, earlier)]
    assert ran == [once["id"]] * (1 + 3 + 3 + 2)  # every run is the job's run, as its providers know it


async def test_a_replica_whose_tab_was_dropped_before_a_stop_is_not_counted_at_the_start(node_factory,
                                                                                          monkeypatch) -> None:
    gateway, providers = await network(node_factory, providers=3)
    answers = gateway.app[NODE].jobs.answers
    job = await _stopped_before_comparing(gateway, monkeypatch, agree=2)
    dropped = sorted(job["replicating"])[0]
    # A stop between dropping a replica's tab and writing it down lost: that replica can no longer be paid.
    await answers.sent.unanswered_after_restart(job["replicating"][dropped]["authorization"])
    await gateway.app[NODE].jobs.recovery.recover_one(job)
    job = answers.records.load(job["id"])
    assert job["state"] == "done", job
    paid = {r["provider"]: r["paid"] for r in job["replicas"]}
    assert paid == {p: p != dropped for p in paid}, job["replicas"]  # not counted, as it is not paid


async def test_replicas_tabs_left_pending_by_a_stop_before_their_runs_were_asked_for_pay_nothing_at_the_start(
        node_factory, monkeypatch) -> None:
    """A kill -9 the moment the three providers took the job, before the record names any replica: three tabs
    pending, each shown to its provider, none held by a record.  No run was asked for, so the payment retry pays none
    of them, whatever their providers countersign."""
    gateway, providers = await network(node_factory, providers=3)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    begin, took = sent_jobs.wire.begin, []

    async def then_the_stop(*args, **kwargs):
        took.append(await begin(*args, **kwargs))  # its id for the job is lost with the stop
        await asyncio.Event().wait()

    with monkeypatch.context() as patched:
        patched.setattr(sent_jobs.wire, "begin", then_the_stop)
        patched.setattr(gateway.app[NODE].paid.gateway_tabs, "answered", lambda *args: None)  # a kill -9 runs none
        running = asyncio.ensure_future(jobs.run({"module": module, "stdin": "-", "deterministic": True,
                                                  "replicas": 3}, reading(b"the job's bytes")))
        await eventually_async(lambda: len(took) == 3, "the three providers took the job", 60)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    (job,) = jobs.records.all_jobs()
    assert "replicating" not in job, job
    tabs = {a.id for a in gateway.app[NODE].ledger.pending() if a.job == remote_tabs.job_tab(job["id"])}
    assert len(tabs) == 3
    before = balances(gateway, providers[0])[0]
    await close_node(gateway)
    for provider in providers:
        countersigning_the_cap(provider)
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    node = gateway.app[NODE]
    await eventually_async(lambda: not tabs & {a.id for a in node.ledger.pending()}, "the tabs settled", 30)
    assert node.paid.gateway_tabs.refused_receipts == 3
    assert balances(gateway, providers[0])[0] == before and node.ledger.holding() == {}
    await verified(gateway)


async def _stopped_with_one_replica_held(gateway, held: str, where: str, patched) -> asyncio.Event:
    """A job on three replicas run on `gateway`, stopped (its requests in flight cancelled) once two replicas are
    checked and `held`'s is cut short where `where` says: its run's answer on its way back ("run": it ran, the answer
    is lost) or its outputs being fetched ("fetch").  `patched` keeps `held` held back until it is undone; the event
    returned is set each time `held` is reached."""
    real, reached = getattr(sent_jobs.wire, where), asyncio.Event()

    async def held_back(client, url, provider, *args, **kwargs):
        if provider != held:
            return await real(client, url, provider, *args, **kwargs)
        if where == "run":
            await real(client, url, provider, *args, **kwargs)  # it ran (or its kept answer is read): lost
        reached.set()
        await asyncio.Event().wait()

    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    step = {"run": "sent", "fetch": "fetching"}[where]
    patched.setattr(sent_jobs.wire, where, held_back)
    running = asyncio.ensure_future(jobs.run({"module": module, "stdin": "-", "deterministic": True, "replicas": 3},
                                             reading(b"the honest bytes")))
    await asyncio.wait_for(reached.wait(), 60)
    await eventually_async(lambda: sorted(r["step"] for r in jobs.records.all_jobs()[0]["replicating"].values())
                           == sorted(["checked", "checked", step]), "the other two replicas checked")
    running.cancel()  # what the stop does to the requests still in flight
    with contextlib.suppress(asyncio.CancelledError):
        await running
    return reached


async def test_a_job_on_one_replica_whose_only_other_provider_went_away_is_not_placed_on_the_users_own_node(
        node_factory, monkeypatch) -> None:
    """Bob's node offers compute (dearer than Alice's), and he asks a job of one replica: it runs on a node other than
    his, so with Alice's node gone (the connection refused) and no other provider, the job fails saying its replica
    was lost, rather than running on his own node; nothing is paid.  With Alice's node gone from the market too, it
    is refused before it runs.  The same job asked without a replica still runs on his node."""
    bob = await node_factory("bob", **QUIET, market={"compute_ask_floor": 39, "compute_ask_ceiling": 40})
    alice = await node_factory("alice", **QUIET)
    await peer_with_provider(bob, alice)
    alice_id, bob_id = alice.app[IDENTITY].id, bob.app[IDENTITY].id
    run, asked = sent_jobs.wire.run, []

    async def refused(client, url, provider, *args, **kwargs):
        asked.append(provider)
        if provider == alice_id:
            raise PeerUnreachable(f"provider {url}: connection refused", url=url, reason="connection refused")
        return await run(client, url, provider, *args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "run", refused)
    module = await deploy(bob, "sha256", wasi=True)
    spec = {"module": module, "stdin": "-", "deterministic": True, "replicas": 1}
    status, problem = await run_job(bob, spec, b"bytes")
    assert status == 502 and problem["code"] == "replicas-lost", problem
    assert problem["detail"] == "its replica, which runs on a node other than this one, was lost (1 unreachable) " \
        "and no other provider took its place: nothing is paid or stored", problem
    assert problem["hint"].startswith(f"run it again with its stdin: ... | xsc compute run {module} --stdin - "
                                      "--deterministic --replicas 1 once another provider is offered"), problem
    assert problem["hint"].endswith("or ask it without --replicas to let this node run it"), problem
    assert asked == [alice_id] and _jobs_paid_on(bob) == [], asked  # never run on Bob's own node
    (job,) = bob.app[NODE].jobs.records.all_jobs()
    assert job["state"] == "refused" and [(r["provider"], r["paid"]) for r in job["replicas"]] == [
        (alice_id, False)], job
    assert (await bob.delete(f"/v1/peers/{alice_id}")).status < 300  # gone from the market too: only Bob's offered
    status, problem = await run_job(bob, spec, b"other bytes")
    assert status == 503 and problem["code"] == "too-few-providers" and problem["offered"] == 0, problem
    assert problem["hint"].endswith("or ask it without --replicas to let this node run it"), problem
    status, done = await run_job(bob, {k: v for k, v in spec.items() if k != "replicas"}, b"bytes")
    assert status == 201 and done["provider"] == bob_id, done  # asked of no other node, it may run on his


async def test_replicas_their_providers_stop_while_they_run_are_lost_interrupted_not_refused(
        node_factory, monkeypatch) -> None:
    """A replica whose provider's stop cut its run short is lost `interrupted`, as a job run alone is; `refused` is
    left to one the provider never began."""
    gateway, providers = await network(node_factory, providers=2)
    module = await deploy(gateway, "spin", wasi=True)
    monkeypatch.setattr(hosted_jobs, "STOP_GRACE", 0.01)  # the stop gives up waiting while the job spins
    running = asyncio.ensure_future(run_job(gateway, {"module": module, "deterministic": True, "replicas": 2,
                                                      "limits": {"timeout": 5}}))

    async def spinning(provider) -> bool:
        return (await (await provider.get("/v1/node/status")).json())["compute"]["running"] >= 1

    for provider in providers:
        await eventually_async(lambda: spinning(provider), "a replica running on each provider")
    for provider in providers:
        await provider.app[NODE].hosted_jobs.close()  # the stop's part of jobs
    status, problem = await running
    assert status == 502 and "2 were lost (2 interrupted)" in problem["detail"], problem
    job = await (await gateway.get(f"/v1/compute/jobs/{problem['id']}")).json()
    assert [r["lost"] for r in job["replicas"]] == ["interrupted", "interrupted"], job["replicas"]
