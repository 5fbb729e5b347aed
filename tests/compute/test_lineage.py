"""The lineage walk over records as a node keeps them (compute/lineage.py), without a node: what it names."""

from __future__ import annotations

import base64
import hashlib
import os

from xsc.compute import lineage
from xsc.errors import NotFound
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
