"""Lineage: from a stored file back through the runs of the jobs that wrote it to the files they read.

`c/o/` + a file's storage index names the job and the run (its provenance id) that wrote it (compute/jobs.py).
Each level checks that run's signed record (this node's journal for a run here; the provider's record, kept under
`c/r/`, for a run elsewhere) and that the file is among the outputs it signed, then walks each input it names and
the stored file it read as stdin.
What the walk reads was written by this node, but a provider signed some of it: anything not in the shape this
node writes ends the walk there, never the request.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ..errors import XscError
from ..storage.core.capability import Capability
from . import provenance

MAX_DEPTH = 64  # levels of jobs a lineage walks back at most
_VERIFY_HASH = re.compile(r"[0-9a-f]{64}:[0-9a-f]{64}")


def verify_hash(cap: Capability) -> str:
    """What names and verifies a stored file without letting anyone read it: its storage index (derived from the
    key) and the hash of its manifest (which roots every share's blocks), `SI:MANIFEST` in hex."""
    return f"{cap.storage_index.hex()}:{cap.manifest_hash.hex()}"


Read = Callable[..., "dict[str, Any] | None"]


class Records:
    """What a walk reads, from the job service's records: `made_by(storage index)` (the `c/o/` link), `job(user
    hex, job id)`, `kept(provenance id)` (a provider's signed record, `c/r/`) and `journal(provenance id)`."""

    def __init__(self, made_by: Read, job: Read, kept: Read, journal: Callable[[str], dict[str, Any]]) -> None:
        self.made_by, self.job, self.kept, self.journal = made_by, job, kept, journal


def walk(records: Records, cap: Capability) -> dict[str, Any]:
    """The tree behind the stored file `cap`."""
    return _node(records, verify_hash(cap), 0, set())


def _node(records: Records, hashed: Any, depth: int, seen: set[str]) -> dict[str, Any]:
    node: dict[str, Any] = {"verify_hash": hashed}
    if not isinstance(hashed, str) or not _VERIFY_HASH.fullmatch(hashed):
        return node  # an S3 object of several parts (no one job made it), or not a file's verify hash
    made = records.made_by(bytes.fromhex(hashed.split(":")[0]))
    if made is None or hashed in seen or depth >= MAX_DEPTH:
        return node  # not made by a job here (put by a user), or already shown
    seen.add(hashed)
    job = records.job(made["user"], made["job"])
    if job is None or not job.get("provenance"):
        return node
    signed = _run_record(records, job, made.get("provenance") or job["provenance"])
    if signed is None:
        return node
    record = signed["record"]
    facts = record.get("job", {})
    mine = made if "sha256" in made else next((o for o in job.get("outputs", []) if o.get("verify_hash") == hashed), {})
    output = next((o for o in facts.get("outputs", []) if o.get("verify_hash", hashed) == hashed
                   and o.get("sha256") == mine.get("sha256") and o.get("name") == mine.get("name")), None)
    rule = provenance.rule(signed, stored=True)
    node["made_by"] = {
        "job": job["id"], "module": record["module"], "node": record["node"], "provenance": record["id"],
        "engine": record["engine"], "fuel_consumed": record["fuel_consumed"], "fuel_limit": record["fuel_limit"],
        "signature_valid": rule is not None, "signature_rule": rule, "output_signed": output is not None,
        "output": output,
        "inputs": [{**item, **_node(records, item.get("verify_hash"), depth + 1, seen)}
                   for item in facts.get("inputs", []) if isinstance(item, dict)],
    }
    stdin = _stdin(job, facts.get("stdin"))
    if stdin is not None:
        node["made_by"]["stdin"] = {**stdin, **_node(records, stdin["verify_hash"], depth + 1, seen)}
    return node


def _stdin(job: dict[str, Any], signed: Any) -> dict[str, Any] | None:
    """The stored file the job read as its stdin, if it read one: the signed record holds stdin's SHA-256 only (a
    record is shown to whoever asks, a capability never is), so the file is named by the job's own record (written
    by this node) and held to that hash.  A record without it names it in the spec it keeps (`again`)."""
    item = job.get("stdin")
    if not isinstance(item, dict):
        try:
            cap = Capability.parse((job.get("again") or {}).get("stdin") or "")
        except XscError:
            return None  # no stdin, or one that came with the request: no file to walk to
        item = {"path": "stdin", "sha256": signed, "size": cap.size, "verify_hash": verify_hash(cap)}
    if not isinstance(signed, str) or item.get("sha256") != signed or not isinstance(item.get("verify_hash"), str):
        return None
    return item


def _run_record(records: Records, job: dict[str, Any], provenance_id: str) -> dict[str, Any] | None:
    """The signed record of the job's run `provenance_id`: a run here is in this node's journal; a run on a
    provider, the record it signed, kept by its id (and the latest with the job).  None if it is gone."""
    kept = records.kept(provenance_id)
    if kept is not None:
        return kept
    if job.get("signed", {}).get("record", {}).get("id") == provenance_id:
        return job["signed"]
    try:
        return records.journal(provenance_id)
    except XscError:
        return None
