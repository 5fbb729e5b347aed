"""A job run on a real node process, killed (kill -9) while it stores its outputs: its record names those published
(each in the synced write that publishes its file) and not the one whose put is under way (its blocks named only by
the put's staging record).  After the restart the job is interrupted, its record names no outputs, no file it stored
is listed and nothing it stored is held: the published ones removed by the start's recovery of jobs, the one cut short
by the share store's recovery of uploads."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import plyvel
import pytest

from tests.support.compute import WASM
from tests.support.nodes import start_xsc
from tests.support.peers import api
from tests.support.waiting import eventually
from xsc import codec, keys
from xsc.compute.jobspec import job_id, parse_job
from xsc.node.datadir import DB_DIR

ENV = {"XSC_COMPUTE_TIMEOUT": "60"}


def _job(node, jid: str) -> dict:
    status, job = api(node, "GET", f"/v1/compute/jobs/{jid}")
    return job if status == 200 else {}


@pytest.mark.slow
def test_a_job_killed_between_one_outputs_put_and_the_next_is_interrupted_with_every_output_it_stored_removed(
        node_process, tmp_path: Path) -> None:
    node = node_process("node", env=ENV)
    deployed = node.xsc("compute", "deploy", str(WASM / "outputs.wasm"), "--wasi")
    assert deployed.returncode == 0, deployed.stderr
    module = deployed.stdout.decode().strip()
    data = tmp_path / "stdin"
    data.write_bytes(os.urandom(64 << 20))  # out/c.txt is a copy: its put, the last, takes a while
    jid = job_id(parse_job({"module": module, "stdin": "-"}), hashlib.sha256(data.read_bytes()).hexdigest(), [])
    with open(data, "rb") as given:
        running = start_xsc("--data-dir", str(node.data_dir), "compute", "run", module, stdin=given,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # out/a.txt published (the record `storing`), out/c.txt not yet: its put is under way
        eventually(lambda: _job(node, jid).get("state") == "storing", "the first output published", timeout=120,
                   poll=0.005)
        node.kill()
    finally:
        running.wait(30)
    db = plyvel.DB(str(node.data_dir / DB_DIR))
    try:
        (left,) = [codec.loads(v) for _, v in db.iterator(prefix=keys.JOBS)]
        listed = [codec.loads(v) for _, v in db.iterator(prefix=keys.FILES)]
    finally:
        db.close()
    named = sorted(o["name"] for o in left["outputs"])
    assert left["state"] == "storing" and named and "out/c.txt" not in named, left  # killed in the window, as meant
    assert sorted(f["capability"] for f in listed) == sorted(o["capability"] for o in left["outputs"])

    node.start()
    job = eventually(lambda: (j := _job(node, jid)).get("state") not in (None, "running", "storing") and j,
                     "the job settled at the start", timeout=120)
    assert job["state"] == "interrupted" and job["outputs"] == [], job
    assert [f for f in api(node, "GET", "/v1/store/files")[1]["files"] if jid in f["name"]] == []
    eventually(lambda: (s := api(node, "GET", "/v1/node/status")[1]["storage"])["used"] == 0 and s["shares"] == 0,
               "nothing the job stored held any more", timeout=60)
