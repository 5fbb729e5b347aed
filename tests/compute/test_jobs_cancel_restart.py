"""A remote job's cancel that a kill -9 of the user's node cut off before its provider heard it, on real node
processes: the next start sends it again.  The provider then stops the run, and is paid what its signed record of the
run it stopped says, once; a provider silent to it at the start is given up after the cancel's grace
(job_cancels.CANCEL_GRACE), the job `cancelled` and its tab dropped unpaid."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.jobs import provider_pair
from tests.support.nodes import kill_all, start_xsc
from tests.support.peers import api, node_id
from tests.support.waiting import eventually
from xsc.compute.jobspec import job_id, parse_job

ENV = {"XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3", "XSC_COMPUTE_TIMEOUT": "600", "XSC_COMPUTE_FUEL": "200000000000"}
UNSENT = [sys.executable, str(Path(__file__).parents[1] / "support" / "unsent_cancel_node.py")]


def _running(provider) -> int:
    return api(provider, "GET", "/v1/node/status")[1]["compute"]["running"]


def _cancel_unsent(tmp_path: Path, started: list):
    """A gateway whose cancels never reach their providers (tests/support/unsent_cancel_node.py) and a provider running
    a spinning job of its user's; the gateway killed once `xsc compute cancel` has written the cancel's intent in the
    job's record, the provider still running the job: (gateway, provider, the job's id)."""
    gateway, provider, module = provider_pair(tmp_path, "spin.wasm", started, ENV)
    gateway.stop()
    gateway.launcher = UNSENT
    gateway.start()
    eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["participants"] == 2, "the market again")
    running = start_xsc("--data-dir", str(gateway.data_dir), "compute", "run", module, "--no-stdin",
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    eventually(lambda: _running(provider) >= 1, "the provider running the job", timeout=120, poll=0.01)
    jid = job_id(parse_job({"module": module}), None, [])
    cancel = threading.Thread(target=gateway.xsc, args=("compute", "cancel", jid), daemon=True)
    cancel.start()
    asked = eventually(lambda: "cancel_asked" in (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1]) and j,
                       "the cancel's intent written", timeout=120, poll=0.01)
    gateway.kill()
    assert asked["state"] == "running" and asked["sent"]["provider"] == node_id(provider), asked
    running.wait(30)
    cancel.join(30)
    assert _running(provider) == 1  # it never heard the cancel
    gateway.launcher = None
    return gateway, provider, jid


def _settled(gateway, jid: str) -> dict:
    return eventually(lambda: (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1])["state"]
                      not in ("running", "storing") and j, "the job settled at the start", timeout=120)


def _verified(*nodes) -> None:
    for node in nodes:
        status, report = api(node, "GET", "/v1/ledger/verify")
        assert status == 200 and report["ok"], report


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
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's payment settled", timeout=120)
        assert _balance(provider) == job["charge"]  # what its record says, once
        eventually(lambda: api(provider, "GET", "/v1/node/status")[1]["hosted_jobs"]["hosted"] == 0,
                   "the provider told to forget the job", timeout=120)
        _verified(gateway, provider)
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
        provider.send(signal.SIGSTOP)
        try:
            gateway.start()
            job = _settled(gateway, jid)
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
