"""A replicated job through a kill -9 of the user's node (compute/remote_answers.py: each replica's step written down,
RemoteAnswers.replicas_again at the start), on one devnet of a gateway that offers no compute and three providers
that offer no storage (each provider's balance is what the gateway paid it for its runs): killed while its replicas
run, after two of them answered, and while its compared answer is stored; and again as its start takes its
replicas.  After the restart the job is done, each replica ran once and was paid its charge once.  A single job on
the same devnet, killed the moment its provider is told to forget it, likewise.  On a devnet of its own, a provider
killed while it runs its replica: the replica placed again on another provider (compute/jobs.py), each paid once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.compute import WASM
from tests.support.jobs import compiled_in
from tests.support.nodes import kill_all, start_xsc
from tests.support.peers import api, node_id, peer_health, start_star
from tests.support.waiting import eventually
from xsc.compute.jobspec import asked_id, job_id, parse_job

# Three runs of slow.wasm at once on a loaded machine may take longer than the default wall-clock limit.
SETTLE = {"XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3", "XSC_COMPUTE_TIMEOUT": "60"}


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    started: list = []
    try:
        nodes, _ = start_star(tmp_path_factory.mktemp("replicated-crash"), 4,
                              {**SETTLE, "XSC_MARKET_OFFER_COMPUTE": "false"},
                              {**SETTLE, "XSC_MARKET_OFFER_STORAGE": "false"}, started)
        gateway, providers = nodes[0], nodes[1:]
        eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["participants"] == 4, "the market")
        deployed = gateway.xsc("compute", "deploy", str(WASM / "slow.wasm"), "--wasi")
        assert deployed.returncode == 0, deployed.stderr
        yield gateway, providers, deployed.stdout.decode().strip()
    finally:
        for node in started:  # a stopped node takes its kill -9 only once it runs again
            if node.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGCONT)
        kill_all(started)


def _replicated(module: str, tag: str):
    """The spec of `xsc compute run MODULE TAG --replicas 3` as the tests run it."""
    return parse_job({"module": module, "argv": [tag], "stdout_to_store": True, "deterministic": True, "replicas": 3})


def _runs_of(provider, jid: str) -> int:
    """The runs `provider` recorded of the run `jid` (what a replicated job's record names `run`)."""
    records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
    return sum(1 for r in records if r["record"].get("job", {}).get("id") == jid)


def _earned(provider) -> int:
    return api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"]


def _running(provider) -> bool:
    return api(provider, "GET", "/v1/node/status")[1]["compute"]["running"] >= 1


def _hosted(provider) -> int:
    return api(provider, "GET", "/v1/node/status")[1]["hosted_jobs"]["hosted"]


def _steps(gateway, jid: str) -> list[str] | None:
    """The steps the gateway's record of the job names for its replicas, sorted (None: it names none)."""
    status, job = api(gateway, "GET", f"/v1/compute/jobs/{jid}")
    return sorted(r["step"] for r in job["replicating"].values()) if status == 200 and "replicating" in job else None


def _continued(stopped: list) -> None:
    for node in stopped:
        os.kill(node.pid, signal.SIGCONT)


def _earned_before(devnet) -> dict[str, int]:
    """Each provider's balance once every payment of the jobs before is settled."""
    gateway, providers, _ = devnet
    _settled(gateway)
    return {node_id(p): _earned(p) for p in providers}


def _lacking(devnet) -> set[str]:
    """The providers that lack the module now (a test before may have had it pushed to them): the first job run on
    each pushes it, and that job's tab pays compiling it."""
    _, providers, module = devnet
    return {node_id(p) for p in providers if api(p, "GET", f"/v1/modules/{module}")[0] == 404}


def _compile_owed(provider, run: str, lacking: set[str]) -> int:
    """What `provider` is paid for compiling the module pushed to it for the run `run`: nothing if it had it."""
    return compiled_in(provider, run, "slow") if node_id(provider) in lacking else 0


def _settled(gateway) -> None:
    eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
               "every payment settled", timeout=120)


def _killed_and_restarted(devnet, tag: str, when, what: str, meanwhile=lambda: None,
                          restarted=lambda jid: None) -> dict:
    """`xsc compute run slow.wasm TAG --replicas 3` on the gateway, a kill -9 of the gateway the moment `when(jid)`
    holds, `meanwhile()`, the gateway started again, `restarted(jid)`: the job once the start finished it."""
    gateway, providers, module = devnet
    spec = _replicated(module, tag)
    jid = asked_id(job_id(spec, None, []), spec)
    running = start_xsc("--data-dir", str(gateway.data_dir), "compute", "run", module, tag, "--no-stdin",
                        "--stdout-to-store", "--deterministic", "--replicas", "3", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: when(jid), what, timeout=120, poll=0.01)
        gateway.kill()
    finally:
        running.wait(30)
    meanwhile()
    gateway.start()
    restarted(jid)
    return eventually(lambda: (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1])["state"]
                      not in ("running", "storing") and j, "the job finished at the start", timeout=120)


def _ran_once_and_paid_once(devnet, job: dict, before: dict[str, int], lacking: set[str]) -> None:
    gateway, providers, _ = devnet
    assert job["state"] == "done" and job["executions"] == 1, (job.get("error"), job.get("replicas"))
    assert "replicating" not in job and "answered" not in job, job
    assert sorted(r["provider"] for r in job["replicas"]) == sorted(node_id(p) for p in providers), job
    assert all(r["paid"] for r in job["replicas"]), job["replicas"]
    (stdout,) = job["outputs"]
    assert stdout["name"] == "stdout" and stdout["size"] == 5
    for provider in providers:
        assert _runs_of(provider, job["run"]) == 1  # not run again
    _settled(gateway)
    charges = {r["provider"]: r["charge"] for r in job["replicas"]}
    assert job["charge"] == sum(charges.values()) > 0
    for provider in providers:  # each paid its own replica's charge, and compiling the module pushed to it, once
        owed = charges[node_id(provider)] + _compile_owed(provider, job["run"], lacking)
        assert _earned(provider) - before[node_id(provider)] == owed and charges[node_id(provider)] > 0
    for node in (gateway, *providers):
        status, report = api(node, "GET", "/v1/ledger/verify")
        assert status == 200 and report["ok"], report


@pytest.mark.slow
def test_a_replicated_job_killed_while_its_replicas_run_takes_their_answers_at_restart_and_pays_each_once(
        devnet) -> None:
    _, providers, _ = devnet
    before, lacking = _earned_before(devnet), _lacking(devnet)
    stopped: list = []

    def all_running(jid: str) -> bool:  # each provider held (SIGSTOP) once it runs the job: none can answer
        for provider in providers:
            if provider not in stopped and _hosted(provider) and _running(provider):
                os.kill(provider.pid, signal.SIGSTOP)
                stopped.append(provider)
        return len(stopped) == 3

    try:
        job = _killed_and_restarted(devnet, "while-running", all_running, "the three replicas running",
                                    meanwhile=lambda: _continued(stopped))
    finally:
        _continued(stopped)
    _ran_once_and_paid_once(devnet, job, before, lacking)


@pytest.mark.slow
def test_a_replicated_job_killed_after_two_replicas_answered_compares_all_three_at_restart_and_pays_each_once(
        devnet) -> None:
    _, providers, module = devnet
    before, lacking = _earned_before(devnet), _lacking(devnet)
    late = providers[2]
    run = job_id(_replicated(module, "two-answered"), None, [])
    stopped: list[int] = []

    def two_checked(jid: str) -> bool:  # the third held (SIGSTOP) while it runs, the other two answered
        if not stopped and all(_hosted(p) for p in providers) and _running(late):
            os.kill(late.pid, signal.SIGSTOP)
            stopped.append(late.pid)
        return bool(stopped) and all(_runs_of(p, run) == 1 for p in providers[:2]) \
            and _steps(devnet[0], jid) in (["checked", "checked", "sent"], None)

    try:
        job = _killed_and_restarted(devnet, "two-answered", two_checked, "two replicas answered, the third held",
                                    meanwhile=lambda: os.kill(late.pid, signal.SIGCONT))
    finally:
        os.kill(late.pid, signal.SIGCONT)
    _ran_once_and_paid_once(devnet, job, before, lacking)


@pytest.mark.slow
def test_a_replicated_job_killed_again_as_its_start_takes_its_replicas_pays_each_once_at_the_next(devnet) -> None:
    """Killed while the three replicas run (each held with SIGSTOP, and still held as the gateway starts again, so
    its start waits on them), then, one replica let go, killed again the moment the start has told its provider to
    forget the job: whatever that replica's step was then, the next start still counts and pays it, once."""
    gateway, providers, _ = devnet
    before, lacking = _earned_before(devnet), _lacking(devnet)
    stopped: list = []

    def all_running(jid: str) -> bool:
        for provider in providers:
            if provider not in stopped and _hosted(provider) and _running(provider):
                os.kill(provider.pid, signal.SIGSTOP)
                stopped.append(provider)
        return len(stopped) == 3

    def again(jid: str) -> None:  # the start waits on the held replicas: one let go, killed once it is forgotten
        first = stopped.pop(0)
        os.kill(first.pid, signal.SIGCONT)
        eventually(lambda: _hosted(first) == 0, "the start told a provider to forget the job", timeout=120, poll=0)
        gateway.kill()
        _continued(stopped)
        stopped.clear()
        gateway.start()

    try:
        job = _killed_and_restarted(devnet, "killed-again", all_running, "the three replicas running",
                                    restarted=again)
    finally:
        _continued(stopped)
    _ran_once_and_paid_once(devnet, job, before, lacking)


@pytest.mark.slow
def test_a_replicated_job_killed_while_its_replicas_run_and_one_provider_killed_too_is_decided_by_the_two_left(
        devnet) -> None:
    """The gateway killed while its three replicas run (the first provider seen running held with SIGSTOP, so its
    replica cannot answer), and that provider killed too while the gateway is down: the start places no replica
    again; it takes the other two's answers and the lost one (`unreachable`, not paid), and the job is done on the
    two that agree, each run once and paid once."""
    gateway, providers, _ = devnet
    before, lacking = _earned_before(devnet), _lacking(devnet)
    ids = {p: node_id(p) for p in providers}
    held: list = []

    def one_held(jid: str) -> bool:  # then the record names the three replicas
        if not held:
            held.extend([p for p in providers if _hosted(p) and _running(p)][:1])
            for provider in held:
                os.kill(provider.pid, signal.SIGSTOP)
        return bool(held) and len(_steps(gateway, jid) or []) == 3

    def killed() -> None:
        held[0].kill()
        held[0].proc.wait()

    try:
        job = _killed_and_restarted(devnet, "one-provider-killed", one_held, "a replica's provider held",
                                    meanwhile=killed)
        (victim,) = held
        assert job["state"] == "done" and job["executions"] == 1, (job.get("error"), job.get("replicas"))
        assert "replicating" not in job and "answered" not in job, job
        (lost,) = [r for r in job["replicas"] if not r["paid"]]
        assert lost["provider"] == ids[victim] and lost["lost"] == "unreachable" and "charge" not in lost, lost
        live = [p for p in providers if p is not victim]
        assert sorted(r["provider"] for r in job["replicas"] if r["paid"]) == sorted(ids[p] for p in live)
        for provider in live:
            assert _runs_of(provider, job["run"]) == 1  # not run again
        _settled(gateway)
        charges = {r["provider"]: r["charge"] for r in job["replicas"] if r["paid"]}
        assert job["charge"] == sum(charges.values()) > 0
        for provider in live:  # each with compiling the module pushed to it
            owed = charges[ids[provider]] + _compile_owed(provider, job["run"], lacking)
            assert _earned(provider) - before[ids[provider]] == owed and charges[ids[provider]] > 0
    finally:
        for provider in held:  # the devnet whole again for the tests after
            if provider.alive():
                os.kill(provider.pid, signal.SIGCONT)
            else:
                provider.start()
    eventually(lambda: (peer_health(gateway, ids[victim]) or {}).get("up"), "the killed provider up again",
               timeout=90)
    assert _earned(victim) == before[ids[victim]]  # its lost replica paid nothing
    for node in (gateway, *providers):
        status, report = api(node, "GET", "/v1/ledger/verify")
        assert status == 200 and report["ok"], report


@pytest.mark.slow
def test_a_single_job_killed_the_moment_its_provider_is_told_to_forget_it_is_stored_and_paid_once(devnet) -> None:
    """A job on one provider, the user's node killed the moment that provider is told to forget the job (its
    outputs fetched): the start finds its checked answer written down, stores it and pays the provider, once."""
    gateway, providers, module = devnet
    before, lacking = _earned_before(devnet), _lacking(devnet)
    jid = job_id(parse_job({"module": module, "argv": ["single"], "stdout_to_store": True, "deterministic": True}),
                 None, [])
    running = start_xsc("--data-dir", str(gateway.data_dir), "compute", "run", module, "single", "--no-stdin",
                        "--stdout-to-store", "--deterministic", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (provider,) = eventually(lambda: [p for p in providers if _hosted(p)], "the job on a provider", timeout=120,
                                 poll=0.01)
        eventually(lambda: _hosted(provider) == 0, "the provider told to forget the job", timeout=120, poll=0)
        gateway.kill()
    finally:
        running.wait(30)
    gateway.start()
    job = eventually(lambda: (j := api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1])["state"]
                     not in ("running", "storing") and j, "the job finished at the start", timeout=120)
    assert job["state"] == "done" and job["executions"] == 1, job
    assert [_runs_of(p, jid) for p in providers].count(1) == 1
    _settled(gateway)
    owed = job["charge"] + _compile_owed(provider, jid, lacking)  # and the module's compile, if pushed for it
    assert _earned(provider) - before[node_id(provider)] == owed and job["charge"] > 0


@pytest.mark.slow
def test_a_replica_whose_provider_is_killed_while_it_runs_is_placed_again_on_another_and_each_paid_once(
        tmp_path_factory) -> None:
    """Three providers, a job on two replicas, and a kill -9 of one provider the moment it runs its replica: that
    replica is lost (not paid) and placed again on the third, and the job is done, the two that delivered each paid
    its own charge once."""
    started: list = []
    try:
        nodes, _ = start_star(tmp_path_factory.mktemp("replica-lost"), 4,
                              {**SETTLE, "XSC_MARKET_OFFER_COMPUTE": "false"},
                              {**SETTLE, "XSC_MARKET_OFFER_STORAGE": "false"}, started)
        gateway, providers = nodes[0], nodes[1:]
        ids = {p: node_id(p) for p in providers}
        eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["participants"] == 4, "the market")
        deployed = gateway.xsc("compute", "deploy", str(WASM / "slow.wasm"), "--wasi")
        assert deployed.returncode == 0, deployed.stderr
        module = deployed.stdout.decode().strip()
        spec = parse_job({"module": module, "argv": ["lost"], "stdout_to_store": True, "deterministic": True,
                          "replicas": 2})
        jid = asked_id(job_id(spec, None, []), spec)
        running = start_xsc("--data-dir", str(gateway.data_dir), "compute", "run", module, "lost", "--no-stdin",
                            "--stdout-to-store", "--deterministic", "--replicas", "2", stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
        (victim,) = eventually(lambda: [p for p in providers if _hosted(p) and _running(p)][:1],
                               "a provider running its replica", timeout=120, poll=0.01)
        victim.kill()
        _, stderr = running.communicate(timeout=240)
        assert running.returncode == 0, stderr
        job = api(gateway, "GET", f"/v1/compute/jobs/{jid}")[1]
        assert job["state"] == "done" and job["executions"] == 1, (job.get("error"), job.get("replicas"))
        (lost,) = [r for r in job["replicas"] if not r["paid"]]
        assert lost["provider"] == ids[victim] and lost["lost"] == "unreachable" and "charge" not in lost, lost
        paid = [p for p in providers if ids[p] in {r["provider"] for r in job["replicas"] if r["paid"]}]
        assert len(paid) == 2 and len(job["replicas"]) == 3, job["replicas"]
        live = [p for p in providers if p is not victim]
        for provider in live:  # the two that delivered ran it once
            assert provider in paid and _runs_of(provider, job["run"]) == 1
        _settled(gateway)
        charges = {r["provider"]: r["charge"] for r in job["replicas"] if r["paid"]}
        assert job["charge"] == sum(charges.values()) > 0
        for provider in live:  # each paid its own replica's charge and the module's compile, once (nothing before)
            owed = charges[ids[provider]] + compiled_in(provider, job["run"], "slow")
            assert _earned(provider) == owed and charges[ids[provider]] > 0
        for node in (gateway, *live):
            status, report = api(node, "GET", "/v1/ledger/verify")
            assert status == 200 and report["ok"], report
    finally:
        kill_all(started)
