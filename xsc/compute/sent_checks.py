"""What a provider's answer to a job's run is held to, beside its signature (sent_jobs.SentJobs._held): its shape as
a run here answers, the deal this node paid for, and outputs a run can leave.  No I/O."""

from __future__ import annotations

import re
from typing import Any

from ..errors import ForgedResult
from . import provenance
from .job_sandbox import MAX_OUTPUTS
from .spot_checks import unpriced

SHA256 = re.compile(r"[0-9a-f]{64}")


def unlike_a_run(run: dict[str, Any], answer: dict[str, Any], record: dict[str, Any]) -> str | None:
    """What in a provider's answer is not as a run here answers (its streams text, its trap the one it signed, a
    refusal a sentence): shown to the user and kept with the job, so never taken in another shape."""
    trap, signed_trap = answer.get("trap"), record.get("trap")
    if not all(isinstance(run.get(k, ""), str) for k in ("stdout", "stderr")) \
            or not isinstance(answer.get("refusal", ""), str) \
            or trap is not None and (not isinstance(trap, dict) or not isinstance(trap.get("message"), str)
                                     or not isinstance(signed_trap, dict) or trap.get("kind") != signed_trap.get("kind")):
        return "comes with an answer in a shape no run has (its streams, trap or refusal)"
    if record.get("outcome") != "ok" and answer.get("outputs"):  # a run here stores nothing of a trapped run
        return "signs outputs of a run that trapped or whose outputs were refused"
    wasi = record.get("wasi") if isinstance(record.get("wasi"), dict) else {}
    for stream in ("stdout", "stderr"):  # a record made before its streams were signed has no hash of them
        signed = wasi.get(f"{stream}_sha256")
        if signed is not None and signed != provenance.stream_sha256(run.get(stream, "")):
            return f"signs another {stream} than the run answered"
    return None


def unlike_the_deal(record: dict[str, Any], spec, price: int, authorization: str, memory_price: int,
                     trapped: bool) -> str | None:
    """How a provider's signed record of a job differs from the run this node paid for, if it does: another
    module, entrypoint or argv (a cheaper program run in its place), a record made under another authorization
    (an earlier run of the same job, replayed to be paid again), another price, or a charge that its own
    figures do not make (ledger/pricing.price_compute).  None if it is the run that was asked for."""
    deal, wasi = record.get("deal"), record.get("wasi")
    if record.get("module") != spec.module or record.get("function") != spec.entrypoint \
            or not isinstance(wasi, dict) or wasi.get("argv") != [spec.module, *spec.argv]:
        return "names another program than the job's (module, entrypoint or argv)"
    if not isinstance(deal, dict) or deal.get("authorization") != authorization:
        return "was not made for this job's authorization (a replay of another run)"
    if record.get("outcome") != ("trap" if trapped else "ok"):
        return "says the run ended otherwise than its answer does"
    return unpriced(record, price, memory_price)


def check_outputs(provider: str, outputs: Any, bytes_out: int) -> None:
    """A provider's signed outputs are a list of {name, size, sha256}, named as a run here names them, and
    together within the job's bytes_out: else the provider is not believed."""
    well_formed = isinstance(outputs, list) and len(outputs) <= MAX_OUTPUTS + 1 and all(
        isinstance(o, dict) and set(o) == {"name", "size", "sha256"} and type(o["size"]) is int and o["size"] >= 0
        and isinstance(o["sha256"], str) and SHA256.fullmatch(o["sha256"]) and isinstance(o["name"], str)
        and output_name(o["name"]) for o in outputs)
    if not well_formed or len({o["name"] for o in outputs}) != len(outputs):  # a run's /out has each name once
        raise ForgedResult(f"provider {provider} answered outputs that are not a run's outputs")
    if sum(o["size"] for o in outputs) > bytes_out:
        raise ForgedResult(f"provider {provider} answered outputs over the job's bytes_out ({bytes_out:,})")


def output_name(name: str) -> bool:
    """`stdout`, or `out/` and a relative path of printable characters (as a run's /out can hold)."""
    if name == "stdout":
        return True
    parts = name.split("/")
    return len(name) <= 4096 and name.isprintable() and parts[0] == "out" and len(parts) > 1 \
        and all(part not in ("", ".", "..") for part in parts[1:])


__all__ = ["check_outputs", "output_name", "unlike_a_run", "unlike_the_deal"]
