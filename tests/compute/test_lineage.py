"""The lineage walk over records as a node keeps them (compute/lineage.py): what it names, without a node; and a
walk as deep as one goes, on a node that answers other requests while it runs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading

from xsc import codec, keys
from xsc.compute import lineage, provenance
from xsc.errors import NotFound
from xsc.node import DB, IDENTITY
from xsc.node.appkeys import NODE
from xsc.storage.core.capability import Capability

NODE_ID = "a" * 52


def _cap(size: int) -> Capability:
    key, manifest = (base64.b32encode(os.urandom(32)).decode().lower().rstrip("=") for _ in range(2))
    return Capability.parse(f"xsc:chk:{key}:{manifest}:4:2:{size}")


def _records(job: dict, signed_stdin: str | None, output: Capability) -> lineage.Records:
    """One job, run here once, that wrote `output`; its signed record names stdin by `signed_stdin` only."""
    run = {"record": {"id": "p" * 32, "module": "m" * 64, "node": NODE_ID, "engine": "wasmtime",
                      "fuel_consumed": 1, "fuel_limit": 2,
                      "job": {"id": job["id"], "inputs": [], "stdin": signed_stdin,
                              "outputs": [{"name": "out/c.txt", "size": 3, "sha256": "d" * 64,
                                           "verify_hash": lineage.verify_hash(output)}]}}}
    made = {"user": "u" * 64, "job": job["id"], "provenance": "p" * 32, "name": "out/c.txt", "sha256": "d" * 64}
    links = {output.storage_index: made}

    def journal(pid: str) -> dict:
        raise NotFound(f"no provenance record {pid}")

    return lineage.Records(links.get, lambda user, jid: job if jid == job["id"] else None,
                           lambda pid: run if pid == "p" * 32 else None, journal)


def test_a_record_kept_before_jobs_named_their_stdin_is_walked_to_it_by_the_spec_it_keeps() -> None:
    stdin, output = _cap(14), _cap(3)
    digest = hashlib.sha256(b"read as stdin\n").hexdigest()
    job = {"id": "j" * 64, "provenance": "p" * 32, "again": {"stdin": str(stdin)}}  # no `stdin` item
    made = lineage.walk(_records(job, digest, output), output)["made_by"]
    assert made["stdin"] == {"path": "stdin", "sha256": digest, "size": 14,
                             "verify_hash": lineage.verify_hash(stdin)}, made  # put by a user: no made_by


def test_a_stdin_whose_hash_is_not_the_one_its_run_signed_is_not_named() -> None:
    stdin, output = _cap(14), _cap(3)
    job = {"id": "j" * 64, "provenance": "p" * 32, "again": {"stdin": str(stdin)},
           "stdin": {"path": "stdin", "sha256": "e" * 64, "size": 14, "verify_hash": lineage.verify_hash(stdin)}}
    assert "stdin" not in lineage.walk(_records(job, "f" * 64, output), output)["made_by"]
    piped = {"id": "j" * 64, "provenance": "p" * 32, "again": {"stdin": "-"}}  # its request's bytes: no file
    assert "stdin" not in lineage.walk(_records(piped, "f" * 64, output), output)["made_by"]


async def test_a_walk_as_deep_as_one_goes_holds_up_no_other_request(node, monkeypatch) -> None:
    # A chain of MAX_DEPTH jobs, each reading the file the one before wrote: the walk reads and checks a signed
    # record at each level, and its deepest read waits until the node has answered another request meanwhile.
    identity, caps, user = node.app[IDENTITY], [_cap(3) for _ in range(lineage.MAX_DEPTH + 1)], os.urandom(32)
    with node.app[DB].write_batch() as batch:
        for cap, read in zip(caps, caps[1:]):  # the last one was put by a user
            jid, pid = os.urandom(32).hex(), provenance.new_id().hex()
            output = {"name": "out/c.txt", "size": 3, "sha256": "d" * 64, "verify_hash": lineage.verify_hash(cap)}
            record = {"id": pid, "module": "m" * 64, "node": identity.id, "engine": "wasmtime", "fuel_consumed": 1,
                      "fuel_limit": 2, "job": {"id": jid, "outputs": [output], "inputs": [
                          {"path": "/in/data", "size": 3, "verify_hash": lineage.verify_hash(read)}]}}
            batch.put(keys.job_output(cap.storage_index), codec.dumps(
                {"user": user.hex(), "job": jid, "provenance": pid, "name": "out/c.txt", "sha256": "d" * 64}))
            batch.put(keys.job(user, bytes.fromhex(jid)), codec.dumps({"id": jid, "provenance": pid}))
            batch.put(keys.job_run(bytes.fromhex(pid)), provenance.sign(identity, record))
    records, deepest = node.app[NODE].jobs.records, caps[-2].storage_index
    reached, answered, waited, reads = threading.Event(), threading.Event(), [], records.lineage

    def gated(provenance_of):
        found = reads(provenance_of)
        made_by = found.made_by

        def read(storage_index: bytes):
            if storage_index == deepest:
                reached.set()
                waited.append(answered.wait(30))  # (a walk on the loop's thread waits in vain: nothing answers)
            return made_by(storage_index)

        found.made_by = read
        return found

    monkeypatch.setattr(records, "lineage", gated)
    walk = asyncio.ensure_future(node.get(f"/v1/compute/lineage/{caps[0]}"))
    await asyncio.to_thread(reached.wait, 30)
    assert (await node.get("/v1/node/status")).status == 200
    answered.set()
    response = await walk
    tree = await response.json()
    assert response.status == 200 and waited == [True], (waited, tree)
    levels = 0
    while "made_by" in tree:
        assert tree["made_by"]["signature_valid"] and tree["made_by"]["output_signed"], tree["made_by"]
        (tree,) = tree["made_by"]["inputs"]
        levels += 1
    assert levels == lineage.MAX_DEPTH and tree["verify_hash"] == lineage.verify_hash(caps[-1])
