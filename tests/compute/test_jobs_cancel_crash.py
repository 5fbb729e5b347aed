"""A cancel through a kill -9, on real node processes: of a job run on the user's own node, killed once the cancel's
intent is written and before the run it stops is recorded (the job `cancelled` at the restart, nothing charged); of a
job on a provider, of either node (after the restart both are consistent: the job `cancelled`, the provider paid what
its run used once or, with no answer, nothing; each ledger verified); of the user's node before its provider heard the
cancel, which the start sends again (the provider stops the run and is paid what its signed record says, once; a
provider silent to it is given up after the cancel's grace, job_cancels.CANCEL_GRACE, its tab dropped unpaid)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.compute import WASM
from tests.support.jobs import compiled, provider_pair
from tests.support.nodes import kill_all, start_xsc
from tests.support.peers import api, node_id
from tests.support.waiting import eventually
from xsc.compute.jobspec import job_id, parse_job

# Runs spin until cancelled: a long timeout and fuel for it.
ENV = {"XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3", "XSC_COMPUTE_TIMEOUT": "600", "XSC_COMPUTE_FUEL": "200000000000"}
UNSENT = [sys.executable, str(Path(__file__).parents[1] / "support" / "unsent_cancel_node.py")]


def _running(provider) -> int:
    return api(provider, "GET", "/v1/node/status")[1]["compute"]["running"]


def _stopping_by_cancel(tmp_path: Path, started: list):
    """A gateway and a provider, `xsc compute run` of a spinning job on the gateway run on the provider, and `xsc
    compute cancel` of it under way, once the provider's run has stopped (the moment to kill either node):
    (gateway, provider, the run command, the job's id, the cancel's thread)."""
    gateway, provider, module = provider_pair(tmp_path, "spin.wasm", started, ENV)
    running, jid, cancel = _cancelling(gateway, provider, module)
    eventually(lambda: _running(provider) == 0, "the provider's run stopped", timeout=120, poll=0.01)
    return gateway, provider, running, jid, cancel


def _cancelling(gateway, provider, module: str):
    """`xsc compute run` of the spinning `module` on the gateway, once its provider runs it, and `xsc compute cancel`
    of it begun: (the run command, the job's id, the cancel's thread)."""
    running = start_xsc("--data-dir", str(gateway.data_dir), "compute", "run", module, "--no-stdin",
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    eventually(lambda: _running(provider) >= 1, "the provider running the job", timeout=120, poll=0.01)
    jid = job_id(parse_job({"module": module}), None, [])
    cancel = threading.Thread(target=gateway.xsc, args=("compute", "cancel", jid), daemon=True)
    cancel.start()
    return running, jid, cancel


def _settled(gateway, jid: str) -> dict:
    return eventually(lambda: (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1])["state"]
                      not in ("running", "storing") and j, "the job settled at the start", timeout=120)


def _paid_once(gateway, provider, job: dict) -> None:
    """The job's provider paid its charge and compiling the module pushed to it, once, and told to forget the job;
    each ledger verified."""
    eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
               "the job's payment settled", timeout=120)
    assert api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"] == job["charge"] + compiled(job, "spin")
    eventually(lambda: api(provider, "GET", "/v1/node/status")[1]["hosted_jobs"]["hosted"] == 0,
               "the provider told to forget the job", timeout=120)
    _verified(gateway, provider)


def _verified(*nodes) -> None:
    for node in nodes:
        status, report = api(node, "GET", "/v1/ledger/verify")
        assert status == 200 and report["ok"], report


@pytest.mark.slow
def test_a_gateway_killed_as_its_cancel_stops_the_run_ends_it_cancelled_at_restart_and_pays_what_it_used_once(
        tmp_path: Path) -> None:
    started: list = []
    try:
        gateway, provider, running, jid, cancel = _stopping_by_cancel(tmp_path, started)
        gateway.kill()  # its record of the job still `running`, sent to the provider
        running.wait(30)
        cancel.join(30)
        gateway.start()
        job = _settled(gateway, jid)  # its provider's kept answer taken at the start: the run it stopped
        assert job["state"] == "cancelled" and job["executions"] == 1 and job["outputs"] == [], job
        assert job["provider"] == node_id(provider) and job["charge"] > 0, job
        _paid_once(gateway, provider, job)
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_provider_killed_as_a_cancel_stops_its_run_leaves_the_job_cancelled_and_paid_at_most_what_it_answered(
        tmp_path: Path) -> None:
    """The provider killed the moment its run stops: as it records the run, answers it, or just after. Whichever came
    first, the job is `cancelled` and the provider is paid what its answer charged if that answer reached the
    gateway, else nothing (its tab dropped as an unanswered run's); each ledger verifies."""
    started: list = []
    try:
        gateway, provider, running, jid, cancel = _stopping_by_cancel(tmp_path, started)
        provider.kill()
        _, err = running.communicate(timeout=120)
        assert "xsc: error: the job was cancelled while it ran" in err.decode(), err
        cancel.join(120)
        provider.start()
        job = json.loads(gateway.xsc("compute", "job", jid, "--json").stdout)
        assert job["state"] == "cancelled" and job["outputs"] == [], job
        answered = job["executions"] == 1  # its answer came: charged what it used; none: nothing
        assert answered == (job.get("charge", 0) > 0) and answered == ("did not answer" not in job["error"]), job
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's tab paid or dropped", timeout=120)
        # Answered, with compiling the module pushed to it (its tab paid); unanswered, its tab dropped whole.
        owed = job["charge"] + compiled(job, "spin") if answered else 0
        assert api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"] == owed
        assert api(provider, "GET", "/v1/node/status")[1]["hosted_jobs"]["hosted"] == 0
        _verified(gateway, provider)
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_node_killed_as_it_cancels_a_run_here_ends_the_job_cancelled_at_restart_charging_nothing(
        node_process) -> None:
    """The job's program sleeps in its host (sleepy.wasm: 10 s at a time), where no tick reaches it: the node is killed
    with the cancel's intent in the job's record, the run still under way and nothing of it recorded."""
    node = node_process("node", env={**ENV, "XSC_COMPUTE_TIMEOUT": "3600"})
    deployed = node.xsc("compute", "deploy", str(WASM / "sleepy.wasm"), "--wasi")
    assert deployed.returncode == 0, deployed.stderr
    module = deployed.stdout.decode().strip()
    running = start_xsc("--data-dir", str(node.data_dir), "compute", "run", module, "--no-stdin",
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jid = job_id(parse_job({"module": module}), None, [])
    eventually(lambda: api(node, "GET", "/v1/node/status")[1]["compute"]["running"] >= 1, "the job running",
               timeout=120, poll=0.01)
    cancel = threading.Thread(target=node.xsc, args=("compute", "cancel", jid), daemon=True)
    cancel.start()
    asked = eventually(lambda: "cancel_asked" in (j := api(node, "GET", f"/v1/compute/jobs/{jid}")[1]) and j,
                       "the cancel's intent written", timeout=120, poll=0.01)
    node.kill()
    assert asked["state"] == "running" and asked["executions"] == 0, asked  # its run not recorded yet
    running.wait(30)
    cancel.join(30)
    node.start()
    job = _settled(node, jid)
    assert job["state"] == "cancelled" and job["executions"] == 0 and job.get("charge", 0) == 0, job
    assert job["error"] == "its user cancelled it while it ran, then the node stopped while the job ran: nothing is " \
        "charged", job
    assert job["error_hint"] == f"run it again with: xsc compute rerun {jid}", job
    records = api(node, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
    assert [r for r in records if r["record"].get("job", {}).get("id") == jid] == []  # no run of it recorded
    _verified(node)


def _cancel_unsent(tmp_path: Path, started: list):
    """A gateway whose cancels never reach their providers (tests/support/unsent_cancel_node.py) and a provider running
    a spinning job of its user's; the gateway killed once `xsc compute cancel` has written the cancel's intent in the
    job's record, the provider still running the job: (gateway, provider, the job's id)."""
    gateway, provider, module = provider_pair(tmp_path, "spin.wasm", started, ENV)
    gateway.stop()
    gateway.launcher = UNSENT
    gateway.start()
    eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["participants"] == 2, "the market again")
    running, jid, cancel = _cancelling(gateway, provider, module)
    asked = eventually(lambda: "cancel_asked" in (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1]) and j,
                       "the cancel's intent written", timeout=120, poll=0.01)
    gateway.kill()
    assert asked["state"] == "running" and asked["sent"]["provider"] == node_id(provider), asked
    running.wait(30)
    cancel.join(30)
    assert _running(provider) == 1  # it never heard the cancel
    gateway.launcher = None
    return gateway, provider, jid


def _settled_with_provider_frozen(gateway, provider, jid: str) -> dict:
    """The gateway started again with its provider frozen (SIGSTOP: still frozen on return, the caller resumes it):
    the job `jid` once the start settled it."""
    provider.send(signal.SIGSTOP)
    gateway.start()
    return _settled(gateway, jid)


def _balance(node) -> int:
    return api(node, "GET", "/v1/ledger/accounts/node")[1]["balance"]


@pytest.mark.slow
def test_a_start_sends_a_cancel_its_provider_never_heard_which_stops_the_run_and_is_paid_its_record_once(
        tmp_path: Path) -> None:
    started: list = []
    try:
        gateway, provider, jid = _cancel_unsent(tmp_path, started)
        gateway.start()
        job = _settled(gateway, jid)
        assert job["state"] == "cancelled" and job["executions"] == 1 and job["outputs"] == [], job
        assert job["provider"] == node_id(provider) and job["charge"] > 0, job
        assert _running(provider) == 0  # stopped by the cancel the start sent
        records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
        (record,) = [r["record"] for r in records if r["record"].get("job", {}).get("id") == jid]
        assert record["trap"]["kind"] == "cancelled" and record["charge"] == job["charge"], record
        _paid_once(gateway, provider, job)  # what its record says
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_start_whose_provider_is_silent_to_the_cancel_it_sends_ends_the_job_cancelled_its_tab_dropped_unpaid(
        tmp_path: Path) -> None:
    """The provider frozen (SIGSTOP) as the gateway starts again: the cancel the start sends is not answered within
    the cancel's grace, so the job ends `cancelled` while the provider is still frozen, nothing paid."""
    started: list = []
    try:
        gateway, provider, jid = _cancel_unsent(tmp_path, started)
        try:
            job = _settled_with_provider_frozen(gateway, provider, jid)
            eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                       "the job's tab dropped", timeout=120)
        finally:
            provider.send(signal.SIGCONT)
        assert job["state"] == "cancelled" and job["executions"] == 0 and job.get("charge", 0) == 0, job
        assert job["error"] == "its user cancelled it while it ran, and its provider did not answer: nothing is " \
            "charged", job
        assert _balance(provider) == 0
        _verified(gateway, provider)
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_provider_frozen_through_the_starts_cancel_hears_it_once_it_resumes_though_the_gateway_restarted_again(
        tmp_path: Path) -> None:
    """The provider frozen (SIGSTOP) as the gateway starts again, so the job ends `cancelled`, unpaid, its cancel not
    heard; the gateway killed and started once more while the provider is still frozen; then the provider resumed
    (SIGCONT).  The cancel kept owed on the gateway's disk is sent again and the provider stops the run, rather than
    run it to its timeout (ten minutes) for nobody to pay."""
    started: list = []
    try:
        gateway, provider, jid = _cancel_unsent(tmp_path, started)
        try:
            job = _settled_with_provider_frozen(gateway, provider, jid)
            assert job["state"] == "cancelled" and job.get("charge", 0) == 0, job
            assert "its provider did not answer" in job["error"], job
            gateway.kill()
            logged = gateway.log.stat().st_size
            gateway.start()
            eventually(lambda: "1 cancels their providers have not heard: sent again" in
                       gateway.log.read_text(errors="replace")[logged:], "the start to read the cancel owed",
                       timeout=120)
        finally:
            provider.send(signal.SIGCONT)
        eventually(lambda: _running(provider) == 0, "the provider's run stopped by the cancel sent again", timeout=120)

        def recorded() -> list:
            records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
            return [r["record"] for r in records if r["record"].get("job", {}).get("id") == jid]

        (record,) = eventually(recorded, "the provider's record of the run it stopped", timeout=120)
        assert record["trap"]["kind"] == "cancelled", record
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's tab dropped", timeout=120)
        assert _balance(provider) == 0  # its record of the run it stopped is not paid: its tab was dropped
        _verified(gateway, provider)
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_start_whose_provider_refuses_connections_ends_the_job_cancelled_unpaid(tmp_path: Path) -> None:
    """The provider killed (kill -9) before the gateway starts again, so its port refuses connections: the start's
    cancel is not heard, and the job ends `cancelled`, nothing paid; the provider, started again, was paid nothing."""
    started: list = []
    try:
        gateway, provider, jid = _cancel_unsent(tmp_path, started)
        provider.kill()
        gateway.start()
        job = _settled(gateway, jid)
        assert job["state"] == "cancelled" and job["executions"] == 0 and job.get("charge", 0) == 0, job
        assert job["error"] == "its user cancelled it while it ran, and its provider did not answer: nothing is " \
            "charged", job
        assert "connection refused" in gateway.log.read_text(errors="replace")  # what the cancel met
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's tab dropped", timeout=120)
        provider.start()
        assert _balance(provider) == 0
        _verified(gateway, provider)
    finally:
        kill_all(started)
