"""Jobs on six real nodes: outputs stored like any put (one share on each node) and read back with two down; a map
of 100 inputs spread over five providers, one killed midway, every job done and paid once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.compute import WASM
from tests.support.jobs import compiled, provider_pair
from tests.support.nodes import kill_all, start_xsc
from tests.support.peers import FAST, api, http, joined_at_once, node_id, start_star, wait_for_storage_offers
from tests.support.waiting import eventually
from xsc.compute.jobspec import job_id, parse_job
from xsc.compute.provider_tabs import compile_price


@pytest.mark.slow
def test_three_outputs_read_back_byte_exact_with_two_nodes_killed(node_process, tmp_path: Path) -> None:
    gateway = node_process("n0", env=FAST)
    others = joined_at_once(node_process, gateway, [f"n{i}" for i in range(1, 6)], FAST)
    wait_for_storage_offers(gateway, 6)  # each output's six shares on six nodes: their offers in its book, not only known
    data = os.urandom(300_000)
    run = gateway.xsc("compute", "run", str(WASM / "outputs.wasm"), "--json", input=data)
    assert run.returncode == 0, run.stderr
    outputs = {o["name"]: o["capability"] for o in json.loads(run.stdout)["outputs"]}
    expected = {"out/a.txt": b"alpha\n", "out/b.txt": b"bravo bravo\n", "out/c.txt": data}
    assert sorted(outputs) == sorted(expected)
    for cap in outputs.values():  # each output placed as a put is: one share on each of the six nodes
        shares = json.loads(gateway.xsc("store", "check", cap, "--json").stdout)["shares"]
        assert len({s["node"] for s in shares}) == 6
    for victim in others[:2]:
        victim.kill()
    for name, cap in outputs.items():
        out = tmp_path / name.replace("/", "_")
        got = gateway.xsc("store", "get", cap, "-o", str(out))
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == expected[name]


# A run of slow.wasm on a loaded machine may take longer than the default wall-clock limit.
SETTLE = {"XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3", "XSC_COMPUTE_TIMEOUT": "60"}


def _stored(gateway, data: bytes) -> str:
    status, body = http(gateway.url, "POST", "/v1/store/files", data, {"Authorization": f"Bearer {gateway.token}"})
    assert status == 201, body
    return body["capability"]


def _jobs_run(provider) -> int:
    records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
    return sum(1 for r in records if "job" in r["record"])


@pytest.mark.slow
def test_a_map_of_100_inputs_spreads_over_the_providers_and_survives_one_killed(tmp_path: Path) -> None:
    started: list = []
    try:
        nodes, ids = start_star(tmp_path, 6, {**SETTLE, "XSC_MARKET_OFFER_COMPUTE": "false"}, SETTLE, started)
        gateway, providers = nodes[0], nodes[1:]
        eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["participants"] == 6, "the market")
        bodies = [f"input {n}\n".encode() * (n + 1) for n in range(100)]
        with ThreadPoolExecutor(4) as pool:  # puts at once: each mostly waits on its holders
            caps = list(pool.map(lambda body: _stored(gateway, body), bodies))
        over = [arg for cap in caps for arg in ("--over", cap)]
        mapped: dict = {}
        thread = threading.Thread(target=lambda: mapped.update(
            result=gateway.xsc("compute", "map", str(WASM / "sha256.wasm"), *over, "--as", "-", "--json",
                               timeout=300)))
        thread.start()

        def busy_provider():  # the one to kill: a provider running the map's jobs ("ended": the map is over)
            busy = next((p for p in providers if _jobs_run(p) >= 3), None)
            return busy if busy is not None or thread.is_alive() else "ended"

        # (Which providers the map's jobs go to is the market's choice: waiting for one given provider could hang.)
        victim = eventually(busy_provider, "a provider to run a few of the jobs", timeout=90, poll=0.2)
        assert victim != "ended", f"the map ended before any provider ran 3 of its jobs: {mapped.get('result')}"
        victim.kill()
        thread.join()
        result = mapped["result"]
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        manifest = json.loads(result.stdout)
        assert manifest["failed"] == 0 and len(manifest["results"]) == 100
        for body, cap, r in zip(bodies, caps, manifest["results"]):
            assert r["input"] == cap and r["state"] == "done"
            assert r["stdout"] == hashlib.sha256(body).hexdigest() + "\n"
        ran_on = {r["provider"] for r in manifest["results"]}
        assert len(ran_on) >= 3 and ids[0] not in ran_on  # spread over the providers; none ran on the gateway

        # Paid once each: once the tabs with the live providers are settled, what the gateway's user paid is the
        # sum of the jobs' charges, and the compile of the module pushed to each provider that ran one, each on the
        # tab of the job it was pushed for, once, at a price the providers ask.
        victim.start()
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "every job's payment settled", timeout=120)
        paid = -api(gateway, "GET", "/v1/ledger/accounts/client")[1]["balance"]
        history = api(gateway, "GET", "/v1/ledger/accounts/client/history?limit=1000")[1]["entries"]
        compiles = [e["usage"]["compiles"] for e in history if e["kind"] == "payment" and "compiles" in e["usage"]]
        size = len((WASM / "sha256.wasm").read_bytes())
        assert len(ran_on) - 1 <= len(compiles) <= len(providers), compiles  # (the killed one's may be unpaid)
        assert set(compiles) <= {compile_price(size, price) for price in range(10, 41)}, compiles
        assert paid == sum(r["charged"] for r in manifest["results"]) + sum(compiles)
        for node in nodes:
            status, report = api(node, "GET", "/v1/ledger/verify")
            assert status == 200 and report["ok"], report
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_gateway_killed_while_it_stores_a_remote_jobs_outputs_stores_them_at_restart_and_pays_once(
        tmp_path: Path) -> None:
    started: list = []
    try:
        gateway, provider, module, data, jid = _outputs_job(tmp_path, started)
        _kill_gateway_while(gateway, [module],
                            lambda: api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1].get("state") == "storing",
                            "the gateway storing the job's outputs", stdin=data)
        gateway.start()
        job = eventually(lambda: (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1])["state"] != "storing"
                         and j, "the job finished at the start", timeout=120)
        assert job["state"] == "done" and job["executions"] == 1 and job["provider"] == node_id(provider), job
        outputs = {o["name"]: o["capability"] for o in job["outputs"]}
        assert sorted(outputs) == ["out/a.txt", "out/b.txt", "out/c.txt"]
        got = gateway.xsc("store", "get", outputs["out/c.txt"], "-o", str(tmp_path / "c.txt"))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "c.txt").read_bytes() == data.read_bytes()
        listed = api(gateway, "GET", "/v1/store/files")[1]["files"]
        assert sorted(f["capability"] for f in listed if jid in f["name"]) == sorted(outputs.values())
        assert _jobs_run(provider) == 1  # not run again
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's payment settled", timeout=120)
        # Paid once: its charge, and compiling the module pushed to it.
        owed = job["charge"] + compiled(job, "outputs")
        assert api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"] == owed
        assert job["charge"] > 0
        for node in (gateway, provider):
            status, report = api(node, "GET", "/v1/ledger/verify")
            assert status == 200 and report["ok"], report
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_gateway_killed_while_it_fetches_a_remote_jobs_outputs_fetches_them_again_at_restart_and_pays_once(
        tmp_path: Path) -> None:
    started: list = []
    try:
        gateway, provider, module = provider_pair(tmp_path, "outputs.wasm", started, SETTLE)
        data = tmp_path / "stdin"
        data.write_bytes(os.urandom(48 << 20))  # out/c.txt is a copy: it is fetched in 48 requests
        jid = job_id(parse_job({"module": module, "stdin": "-"}), hashlib.sha256(data.read_bytes()).hexdigest(), [])
        _kill_gateway_while(gateway, [module], lambda: "fetching" in api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1],
                            "the gateway fetching the job's outputs", stdin=data)
        gateway.start()
        job = eventually(lambda: (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1])["state"]
                         not in ("running", "storing") and j, "the job finished at the start", timeout=120)
        assert job["state"] == "done" and job["executions"] == 1 and "fetching" not in job, job
        outputs = {o["name"]: o["capability"] for o in job["outputs"]}
        got = gateway.xsc("store", "get", outputs["out/c.txt"], "-o", str(tmp_path / "c.txt"))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "c.txt").read_bytes() == data.read_bytes()
        assert _jobs_run(provider) == 1  # not run again
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's payment settled", timeout=120)
        # Paid once: its charge, and compiling the module pushed to it.
        owed = job["charge"] + compiled(job, "outputs")
        assert api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"] == owed
        assert job["charge"] > 0
        assert provider_hosted(provider) == 0  # told to forget the job once its outputs were fetched again
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_gateway_killed_while_it_retries_a_done_jobs_payment_pays_it_once_after_its_restart(tmp_path: Path) -> None:
    """The provider killed once the gateway has its checked answer (it stores the outputs), so the done job's tab
    cannot be closed; the gateway killed while its payment retry tries it again: after both are back the tab is paid
    once, its charge and compiling the module pushed to it, by the gateway's start (the retry kept off it until
    then)."""
    started: list = []
    try:
        gateway, provider, module, data, jid = _outputs_job(tmp_path, started)
        with open(data, "rb") as given:
            running = start_xsc("--data-dir", str(gateway.data_dir), "compute", "run", module, stdin=given,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            eventually(lambda: api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1].get("state") == "storing",
                       "the gateway storing the job's outputs", timeout=120, poll=0.01)
            provider.kill()

            def retried():
                job = api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1]
                return job["state"] == "done" and all(p.get("tries", 0) >= 2 for p in job["payments"]) and job

            job = eventually(retried, "the done job's payment tried again", timeout=120)
            gateway.kill()
        finally:
            running.wait(30)
        assert job["charge"] > 0 and [p["owed"] for p in job["payments"]] == [True], job
        provider.start()
        gateway.start()
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's payment settled", timeout=120)
        owed = job["charge"] + compiled(job, "outputs")  # its charge, and compiling the module pushed to it
        assert api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"] == owed  # paid once
        assert api(gateway, "GET", "/v1/ledger/accounts/client")[1]["balance"] == -owed
        (payment,) = api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1]["payments"]
        assert payment["entry"] and payment["amount"] == owed, payment
        for node in (gateway, provider):
            status, report = api(node, "GET", "/v1/ledger/verify")
            assert status == 200 and report["ok"], report
    finally:
        kill_all(started)


def _outputs_job(tmp_path: Path, started: list):
    """A provider pair with the outputs fixture deployed, a 48 MiB stdin for it (out/c.txt is a copy: its put takes a
    while) and the id of its job: (gateway, provider, module, stdin's path, job id)."""
    gateway, provider, module = provider_pair(tmp_path, "outputs.wasm", started, SETTLE)
    data = tmp_path / "stdin"
    data.write_bytes(os.urandom(48 << 20))
    jid = job_id(parse_job({"module": module, "stdin": "-"}), hashlib.sha256(data.read_bytes()).hexdigest(), [])
    return gateway, provider, module, data, jid


def provider_hosted(provider) -> int:
    return api(provider, "GET", "/v1/node/status")[1]["hosted_jobs"]["hosted"]


@pytest.mark.slow
def test_a_gateway_killed_while_the_provider_runs_a_remote_job_takes_its_answer_at_restart_and_pays_once(
        tmp_path: Path) -> None:
    started: list = []
    try:
        gateway, provider, module = provider_pair(tmp_path, "slow.wasm", started, SETTLE)
        jid = job_id(parse_job({"module": module, "stdout_to_store": True}), None, [])
        _kill_gateway_while(gateway, [module, "--no-stdin", "--stdout-to-store"], lambda: _running(provider),
                            "the provider running the job")
        gateway.start()
        job = eventually(lambda: (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1])["state"]
                         not in ("running", "storing") and j, "the job finished at the start", timeout=120)
        assert job["state"] == "done" and job["executions"] == 1 and job["provider"] == node_id(provider), job
        assert "sent" not in job and "fetching" not in job, job
        (stdout,) = job["outputs"]
        got = gateway.xsc("store", "get", stdout["capability"], "-o", str(tmp_path / "stdout"))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "stdout").read_bytes() == b"done\n"
        assert _jobs_run(provider) == 1  # not run again
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's payment settled", timeout=120)
        # Paid once: its charge, and compiling the module pushed to it.
        assert api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"] == job["charge"] + compiled(job, "slow")
        assert job["charge"] > 0
        assert provider_hosted(provider) == 0  # told to forget the job once its outputs were fetched
    finally:
        kill_all(started)


@pytest.mark.slow
def test_a_remote_job_whose_provider_lost_its_answer_over_a_gateway_kill_pays_it_nothing_and_runs_again(
        tmp_path: Path) -> None:
    started: list = []
    try:
        gateway, provider, module = provider_pair(tmp_path, "slow.wasm", started, SETTLE)
        jid = job_id(parse_job({"module": module}), None, [])
        _kill_gateway_while(gateway, [module, "--no-stdin"], lambda: _running(provider), "the provider running the job")
        eventually(lambda: _jobs_run(provider) == 1, "the provider's run ended", timeout=60)
        provider.kill()  # its answer kept in memory is gone with it; its signed record of the run is not
        provider.start()
        gateway.start()
        job = eventually(lambda: (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1])["state"]
                         not in ("running", "storing") and j, "the job settled at the start", timeout=120)
        assert job["state"] == "interrupted" and job["executions"] == 0 and "sent" not in job, job
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the job's tab dropped", timeout=120)
        assert api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"] == 0  # no answer: not paid
        again = eventually(lambda: (r := gateway.xsc("compute", "run", module, "--no-stdin", "--json")).returncode == 0
                           and json.loads(r.stdout), "the job run again", timeout=120, poll=1)
        assert again["state"] == "done" and again["executions"] == 1, again
        assert _jobs_run(provider) == 2
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the second run's payment settled", timeout=120)
        assert api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"] == again["charge"] > 0  # that run only
    finally:
        kill_all(started)


def _running(provider) -> bool:
    return api(provider, "GET", "/v1/node/status")[1]["compute"]["running"] >= 1


def _kill_gateway_while(gateway, argv: list[str], happening, what: str, stdin: Path | None = None) -> None:
    """`xsc compute run ARGV` on the gateway, and a kill -9 of the gateway the moment `happening()` holds."""
    with open(stdin or os.devnull, "rb") as given:
        running = start_xsc("--data-dir", str(gateway.data_dir), "compute", "run", *argv, stdin=given,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(happening, what, timeout=120, poll=0.01)
        gateway.kill()
    finally:
        running.wait(30)
