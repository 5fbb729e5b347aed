"""A remote job's cancel as a start finishes it, and a cancel nobody asked for, on in-process nodes: a provider that
had dropped the job unrun when the start's cancel came (`cancelled` before it ran, nothing charged); one that answers
the start's cancel and then not the question for its run's answer (given up within the cancel's grace, not at the
job's timeout); a cancelled job whose checked answer a stop left storing (resumed with no failure logged); a provider
that signs its run stopped by a cancel its sender never sent (refused, struck, unpaid)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from tests.support.compute import deploy
from tests.support.jobs import (QUIET, balances, compiled, network, owed_paid, read_file, reading, running_on, settle,
                                settled, verified)
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async
from xsc.compute import hosted_data, job_cancels, provider_stops, remote_recovery, sent_jobs
from xsc.errors import XscError
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

LONG = {"compute": {"timeout": 600, "fuel": 200_000_000_000}}  # a spinning job runs until cancelled
SPIN = {"limits": {"timeout": 600, "fuel": 200_000_000_000}}


async def _pair(node_factory, wasm: str):
    """A gateway and its one provider, the program `wasm` deployed on the gateway: (gateway, provider, its id)."""
    gateway, (provider,) = await network(node_factory, **LONG)
    return gateway, provider, await deploy(gateway, wasm, wasi=True)


async def _spinning(gateway, provider, module: str):
    """The spinning job `module` run by the gateway's user, once its provider runs it: (its run, its record)."""
    running = asyncio.ensure_future(gateway.app[NODE].jobs.run({"module": module, **SPIN}, None))
    return running, await running_on(gateway, provider)


async def _unsent(paid, provider, hosted):  # the stop comes before the cancel is sent
    await asyncio.Event().wait()


async def _stopped(*requests) -> None:
    """What the gateway's stop does to the requests still in flight."""
    for request in requests:
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError, XscError):
            await request


async def _cancel_written_then_stopped(gateway, jid: str, running) -> None:
    """The cancel of job `jid` written in its record (`cancel_asked`), then the gateway stopped (`running`, the job's
    run, cut short as its stop cuts it) before its provider heard it (nor, sent again, heard it then)."""
    jobs = gateway.app[NODE].jobs
    with contextlib.ExitStack() as patched:
        for module, name, value in ((provider_stops, "ask_to_stop", _unsent), (job_cancels, "CANCEL_GRACE", 3600.0)):
            old = getattr(module, name)
            setattr(module, name, value)
            patched.callback(setattr, module, name, old)
        cancel = asyncio.ensure_future(jobs.cancel(jid))
        await eventually_async(lambda: "cancel_asked" in jobs.records.load(jid), "the cancel's intent written")
        await _stopped(running, cancel)
        await close_node(gateway)


async def _settled_at_start(node_factory, jid: str):
    gateway = await node_factory("gateway", **QUIET, **LONG, market={"offer_compute": False})

    async def ended():
        found = await (await gateway.get(f"/v1/compute/jobs/{jid}")).json()
        return found["state"] not in ("running", "storing") and found

    return gateway, await eventually_async(ended, "the job settled at the start", 60)


async def test_a_start_whose_cancel_finds_the_job_dropped_unrun_says_it_was_cancelled_before_it_ran(
        node_factory, monkeypatch) -> None:
    """The job's bytes all sent, its run not asked for yet when the cancel is written and the gateway stops: the
    provider, asked to stop it at the start, drops it unrun and says so (`ran`: false), so the job was cancelled
    before it ran, nothing charged, not "while it ran, and its provider did not answer"."""
    gateway, provider, module = await _pair(node_factory, "spin")
    before = balances(gateway, provider)
    jobs = gateway.app[NODE].jobs
    asking = asyncio.Event()

    async def never_asked(*args, **kwargs):  # the stop comes as the run is to be asked for
        asking.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patched:
        patched.setattr(sent_jobs.wire, "run", never_asked)
        running = asyncio.ensure_future(jobs.run({"module": module, **SPIN}, None))
        await asyncio.wait_for(asking.wait(), 60)
        (job,) = jobs.records.all_jobs()
        await _cancel_written_then_stopped(gateway, job["id"], running)
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 1}  # staged, never run
    gateway, job = await _settled_at_start(node_factory, job["id"])
    assert job["state"] == "cancelled" and job["executions"] == 0 and job.get("charge", 0) == 0, job
    assert job["error"] == "its user cancelled it before it ran: nothing is charged for its run", job
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}  # dropped as the cancel asked
    await settled(gateway)  # its tab dropped
    assert balances(gateway, provider)[1] == before[1]
    for node in (gateway, provider):
        await verified(node)


async def test_a_start_whose_provider_answers_its_cancel_but_not_for_the_runs_answer_gives_it_up_unpaid(
        node_factory, monkeypatch) -> None:
    """The provider stops its run as the start's cancel asks and answers that, then holds the question for the run's
    answer (its route never answers it): the start gives it up within the cancel's grace, the job `cancelled`,
    nothing paid, while the question is still held (the job's own timeout, ten minutes, is not waited for)."""
    gateway, provider, module = await _pair(node_factory, "spin")
    before = balances(gateway, provider)
    running, job = await _spinning(gateway, provider, module)
    await _cancel_written_then_stopped(gateway, job["id"], running)
    hosted, held = provider.app[NODE].hosted_jobs, asyncio.Event()
    holders: list[asyncio.Task] = []

    async def holding(sender, job_id_):
        held.set()
        holders.append(asyncio.current_task())
        await asyncio.Event().wait()

    monkeypatch.setattr(hosted, "run", holding)
    gateway, job = await _settled_at_start(node_factory, job["id"])
    assert held.is_set() and provider.app[NODE].compute.admitted == 0  # stopped, its answer asked for and held
    assert job["state"] == "cancelled" and job["executions"] == 0 and job.get("charge", 0) == 0, job
    assert job["error"] == "its user cancelled it while it ran, and its provider did not answer: nothing is " \
        "charged", job
    await settled(gateway)  # its tab dropped
    assert balances(gateway, provider)[1] == before[1]
    await _stopped(*holders)  # as the provider's stop would, once its bound ran out: the question is held for good


async def test_a_start_that_resumes_a_cancelled_jobs_stored_answer_logs_no_failure(node_factory, monkeypatch,
                                                                                  caplog) -> None:
    """The provider's record of the run its cancel stopped checked and written down (`storing`), the stop before the
    job was written `cancelled`: the start ends it so, paid once, and logs no failure to store it."""
    gateway, provider, module = await _pair(node_factory, "spin")
    jobs = gateway.app[NODE].jobs
    answers = jobs.answers

    async def stopped(*args):  # the node stops as the answer's outputs are stored
        raise asyncio.CancelledError()

    with monkeypatch.context() as patched:
        patched.setattr(answers, "store_answered", stopped)
        running, job = await _spinning(gateway, provider, module)
        await jobs.cancel(job["id"])
        await _stopped(running)
    job = answers.records.load(job["id"])
    assert job["state"] == "storing" and "cancel_asked" in job, job
    caplog.set_level(logging.INFO, logger=remote_recovery.__name__)
    await jobs.recovery.recover_one(job)
    job = answers.records.load(job["id"])
    assert job["state"] == "cancelled" and job["executions"] == 1 and job["charge"] > 0, job
    assert [r.getMessage() for r in caplog.records if r.name == remote_recovery.__name__] == []
    await settle(gateway)
    assert balances(gateway, provider)[1] == job["charge"] + compiled(job, "spin")  # (the module pushed to it)


async def test_a_provider_that_signs_its_run_cancelled_when_its_sender_never_cancelled_it_is_struck_and_unpaid(
        node_factory, monkeypatch) -> None:
    """The provider stops the run itself and answers it as its sender's cancel would have (a trap of kind
    `cancelled`, signed): no cancel was sent, so the record says what did not happen: refused, struck, not paid."""
    gateway, provider, module = await _pair(node_factory, "spin")
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(why) or False)
    before = balances(gateway, provider)
    jobs = gateway.app[NODE].jobs
    running, job = await _spinning(gateway, provider, module)
    hosted = jobs.records.load(job["id"])["sent"]["job"]
    await provider.app[NODE].hosted_jobs.cancel(gateway.app[IDENTITY].id, hosted)  # as if its sender had asked
    try:
        await running
        raise AssertionError("a run its provider stopped unasked was answered")
    except XscError as err:
        told = err
    assert "says its sender cancelled the run, which this node never did: not paid, and struck" in told.message, told
    assert len(struck) == 1 and provider.app[IDENTITY].id in struck[0], struck
    job = jobs.records.load(job["id"])
    assert job["state"] not in ("cancelled", "done") and job.get("charge", 0) == 0, job
    await settled(gateway)  # its tab dropped
    assert balances(gateway, provider) == before
    for node in (gateway, provider):
        await verified(node)


async def test_a_provider_answering_a_cancel_without_saying_whether_the_job_ran_is_struck_and_not_believed(
        node_factory, monkeypatch) -> None:
    """The provider answers the cancel with `ran` that is not true or false (and goes on running the job): the answer
    is not taken (its provider struck for its shape), and, its run's answer not coming within the cancel's grace, the
    job ends `cancelled`, nothing paid."""
    monkeypatch.setattr(job_cancels, "CANCEL_GRACE", 1.0)  # (its run request's timeout: 600 s and a minute)
    gateway, provider, module = await _pair(node_factory, "spin")
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(why) or False)
    heard: list = []
    real_ask = provider_stops.ask_to_stop

    async def asked(*args):
        heard.append(await real_ask(*args))
        return heard[-1]

    async def shapeless(sender, job_id_):
        return {"cancelled": job_id_, "ran": "yes"}

    monkeypatch.setattr(provider.app[NODE].hosted_jobs, "cancel", shapeless)
    monkeypatch.setattr(provider_stops, "ask_to_stop", asked)
    before = balances(gateway, provider)
    jobs = gateway.app[NODE].jobs
    running, job = await _spinning(gateway, provider, module)
    cancelled = await jobs.cancel(job["id"])
    await _stopped(running)
    assert heard[0] == provider_stops.REFUSED, heard  # answered, but not believed
    assert any("answered a cancel without saying whether the job ran" in why for why in struck), struck
    assert cancelled["state"] == "cancelled" and cancelled.get("charge", 0) == 0, cancelled
    assert cancelled["error"] == "its user cancelled it while it ran, and its provider did not answer: nothing is " \
        "charged", cancelled
    await settle(gateway)
    assert balances(gateway, provider) == before
    provider.app[NODE].hosted_jobs.cut_short()  # (its run goes on there, unasked: stopped rather than waited for)


async def test_a_run_that_ended_by_itself_before_the_starts_cancel_is_paid_once_for_its_record_not_cancelled(
        node_factory, monkeypatch) -> None:
    """The provider ran the job to its end, its answer lost with the gateway's stop, the cancel written just before:
    the start's cancel finds the run ended, so the job ends as that run did (`done`, its outputs stored), its
    provider paid once what its one record says, and nothing of it counted as cancelled."""
    gateway, provider, module = await _pair(node_factory, "outputs")
    before = balances(gateway, provider)
    jobs = gateway.app[NODE].jobs
    real_run, ran = sent_jobs.wire.run, asyncio.Event()

    async def lost(*args, **kwargs):  # it ran: its answer is lost with the stop
        await real_run(*args, **kwargs)
        ran.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patched:
        patched.setattr(sent_jobs.wire, "run", lost)
        running = asyncio.ensure_future(jobs.run({"module": module, "stdin": "-"}, reading(b"the job's bytes")))
        await asyncio.wait_for(ran.wait(), 60)
        (job,) = jobs.records.all_jobs()
        await _cancel_written_then_stopped(gateway, job["id"], running)
    gateway, job = await _settled_at_start(node_factory, job["id"])
    assert job["state"] == "done" and job["executions"] == 1 and job["charge"] > 0, job
    c_txt = next(o for o in job["outputs"] if o["name"] == "out/c.txt")
    assert await read_file(gateway, c_txt["capability"]) == b"the job's bytes"
    runs = provider.app[NODE].compute.provenance_records.recent(100)
    (record,) = [r["record"] for r in runs if r["record"].get("job", {}).get("id") == job["id"]]
    assert record["outcome"] == "ok" and record["charge"] == job["charge"], record
    await owed_paid(gateway, job)
    # Its one record, once, and compiling the module pushed to it.
    assert balances(gateway, provider)[1] - before[1] == job["charge"] + compiled(job, "outputs")
    for node in (gateway, provider):
        await verified(node)


async def test_a_start_that_finds_a_cancelled_jobs_tab_dropped_still_asks_its_provider_to_stop_the_run(
        node_factory, monkeypatch) -> None:
    """The cancel written, then the job's tab dropped unpaid (as a cancel given up drops it) and the gateway stopped
    before the provider heard the cancel: the start cannot pay the run, so does not count it, but asks the provider to
    stop it rather than leave it running, unpaid, to its timeout, and tells it to forget the job."""
    gateway, provider, module = await _pair(node_factory, "spin")
    before = balances(gateway, provider)
    jobs = gateway.app[NODE].jobs
    running, job = await _spinning(gateway, provider, module)
    await jobs.sent.unanswered_after_restart(jobs.records.load(job["id"])["sent"]["authorization"])
    await _cancel_written_then_stopped(gateway, job["id"], running)
    assert provider.app[NODE].compute.admitted == 1  # it never heard the cancel
    gateway, job = await _settled_at_start(node_factory, job["id"])
    assert job["state"] == "cancelled" and job["executions"] == 0 and job.get("charge", 0) == 0, job
    assert provider.app[NODE].compute.admitted == 0  # stopped by the start's cancel
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}  # and told to forget it
    await settle(gateway)
    assert balances(gateway, provider)[1] == before[1]
    for node in (gateway, provider):
        await verified(node)


async def test_a_cancel_that_comes_as_the_provider_writes_a_piece_of_the_job_drops_it_once_written_and_runs_nothing(
        node_factory, monkeypatch) -> None:
    """The provider is writing a piece of the job's bytes to its disk as the cancel comes: it cannot drop the job
    under that write, so says it did not run it and drops it once the write is done (its tab, closed unpaid, says it
    will never be asked to); the job was cancelled before it ran, nothing of a run paid (compiling the module pushed
    for it is), nothing reserved left."""
    gateway, provider, module = await _pair(node_factory, "wc")
    real_write, writing, written = hosted_data.write, threading.Event(), threading.Event()

    def held(job, data):  # (in the pool: the piece's write waits for the cancel's answer)
        writing.set()
        written.wait(60)
        real_write(job, data)

    monkeypatch.setattr(hosted_data, "write", held)
    before = balances(gateway, provider)
    jobs = gateway.app[NODE].jobs
    running = asyncio.ensure_future(jobs.run({"module": module, "stdin": "-"}, reading(b"a b\n" * 1000)))
    await asyncio.to_thread(writing.wait, 60)
    (jid,) = [j["id"] for j in jobs.records.all_jobs()]
    compile = compiled(jobs.records.load(jid), "wc")
    try:
        cancelled = await jobs.cancel(jid)
        assert provider.app[NODE].hosted_jobs.status() == {"hosted": 1}  # its piece still being written
    finally:
        written.set()
    assert cancelled["state"] == "cancelled" and cancelled["executions"] == 0, cancelled
    assert cancelled["error"] == "its user cancelled it before it ran: nothing is charged for its run", cancelled
    await _stopped(running)
    await eventually_async(lambda: provider.app[NODE].hosted_jobs.status() == {"hosted": 0},
                           "the provider to drop the job once its piece was written")
    assert provider.app[NODE].compute.admitted == 0
    assert provider.app[NODE].trust.line(gateway.app[IDENTITY].id)["reserved"] == 0
    await settled(gateway)
    assert balances(gateway, provider) == (before[0] - compile, before[1] + compile)
    for node in (gateway, provider):
        await verified(node)
