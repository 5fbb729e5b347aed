"""A job run on a provider, the user's node killed (kill -9) between writing down its checked answer (`storing`, with
what its provider is owed) and storing its outputs (compute/remote_answers.py, remote_recovery.py): on a devnet of a
gateway that offers nothing, a provider that offers compute alone and a holder that offers storage alone, held
(SIGSTOP) from the moment the provider took the job, so that the put of the job's outputs waits on it and the kill
comes while the record says `storing`.  After the restart the job is done, run once, its provider paid what it
answered once, and no credit made or lost: what the gateway's accounts paid is what the provider and the holder
earned."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading

import plyvel
import pytest

from tests.support.compute import WASM
from tests.support.jobs import compiled_in
from tests.support.nodes import kill_all
from tests.support.peers import api, http, node_id, start_star, wait_for_storage_offers
from tests.support.waiting import eventually
from xsc import codec, keys
from xsc.compute.jobspec import job_id, parse_job
from xsc.node.datadir import DB_DIR

ENV = {"XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3", "XSC_COMPUTE_TIMEOUT": "60"}
DATA = os.urandom(4 << 20)  # the job's stdin, copied whole to out/c.txt


def _state(gateway, jid: str) -> dict:
    status, job = api(gateway, "GET", f"/v1/compute/jobs/{jid}")
    return job if status == 200 else {}


def _balance(node, account: str) -> int:
    return api(node, "GET", f"/v1/ledger/accounts/{account}")[1]["balance"]


def _runs_of(provider, jid: str) -> int:
    records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
    return sum(1 for r in records if r["record"].get("job", {}).get("id") == jid)


@pytest.mark.slow
def test_a_job_killed_between_keeping_its_checked_answer_and_storing_it_is_stored_and_paid_once(tmp_path) -> None:
    started: list = []
    holder = None
    try:
        (gateway, provider, holder), _ = start_star(
            tmp_path, 3, {**ENV, "XSC_MARKET_OFFER_COMPUTE": "false", "XSC_MARKET_OFFER_STORAGE": "false"},
            [{**ENV, "XSC_MARKET_OFFER_STORAGE": "false"}, {**ENV, "XSC_MARKET_OFFER_COMPUTE": "false"}], started)
        eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["providers"]["compute"] >= 1, "the provider")
        wait_for_storage_offers(gateway, 1)
        status, module = http(gateway.url, "POST", "/v1/modules?wasi=true", (WASM / "outputs.wasm").read_bytes(),
                              {"Authorization": f"Bearer {gateway.token}"})
        assert status in (200, 201), module
        spec = {"module": module["id"], "stdin": "-"}
        jid = job_id(parse_job(spec), hashlib.sha256(DATA).hexdigest(), [])
        before = {"gateway": _balance(gateway, "client") + _balance(gateway, "node"),
                  "provider": _balance(provider, "node"), "holder": _balance(holder, "node")}

        def run() -> None:  # cut short by the kill: its answer never comes
            with contextlib.suppress(Exception):
                http(gateway.url, "POST", "/v1/compute/jobs", json.dumps(spec).encode() + b"\n" + DATA,
                     {"Authorization": f"Bearer {gateway.token}", "Content-Type": "application/x-xsc-job"})

        running = threading.Thread(target=run, daemon=True)
        running.start()
        eventually(lambda: "sent" in _state(gateway, jid), "the provider taking the job", timeout=120, poll=0.005)
        os.kill(holder.pid, signal.SIGSTOP)  # the put of its outputs waits on the holder from now on
        eventually(lambda: _state(gateway, jid).get("state") == "storing", "the checked answer written down",
                   timeout=120, poll=0.005)
        gateway.kill()
        running.join(60)
        db = plyvel.DB(str(gateway.data_dir / DB_DIR))
        try:
            (left,) = [codec.loads(v) for _, v in db.iterator(prefix=keys.JOBS)]
        finally:
            db.close()
        assert left["state"] == "storing" and left["answered"]["pays"], left  # killed in the window, as meant
        os.kill(holder.pid, signal.SIGCONT)
        gateway.start()
        job = eventually(lambda: (j := _state(gateway, jid)).get("state") not in (None, "running", "storing") and j,
                         "the job finished at the start", timeout=180)
        assert job["state"] == "done" and job["executions"] == 1 and "answered" not in job, job
        assert _runs_of(provider, jid) == 1  # not run again
        (c,) = [o for o in job["outputs"] if o["name"] == "out/c.txt"]
        assert c["sha256"] == hashlib.sha256(DATA).hexdigest()
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "every payment settled", timeout=120)
        earned = {name: _balance(node, "node") - before[name] for name, node in
                  (("provider", provider), ("holder", holder))}
        # Paid what it answered, once, and compiling the module pushed to it.
        assert earned["provider"] == job["charge"] + compiled_in(provider, jid, "outputs") and job["charge"] > 0
        paid = before["gateway"] - _balance(gateway, "client") - _balance(gateway, "node")
        assert paid == earned["provider"] + earned["holder"], (paid, earned)  # no credit made or lost
        for node in (gateway, provider, holder):
            status, report = api(node, "GET", "/v1/ledger/verify")
            assert status == 200 and report["ok"], (node_id(node), report)
    finally:
        if holder is not None and holder.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder.pid, signal.SIGCONT)
        kill_all(started)
