"""The limit a trap names (`limit`, `limit_value`, `raised_by`: limits.named) and the words that say it, for a run here
and for one on a provider alike; and a provider's signed record whose trap its own figures contradict.

A run here names the limit it ran under.  A run on a provider names what this node knows for itself: the limit the
call or the job asked for (the provider runs under exactly it, or its record is refused: spot_checks.unlimited), else
the one the provider's checked record signs, else, for fuel, the fuel its answer used (a record that signs a run out
of fuel having used less than its limit is refused: `contradicted`).  The provider's own words for its limit are never
taken: a provider that names another limit or value in its answer is not believed on it.  No I/O."""

from __future__ import annotations

import sys
from typing import Any

from ..units import format_size
from .limits import Limits, named, resolve

LIMIT_FIELDS = ("limit", "limit_value", "raised_by")
BY_KIND = {"out-of-fuel": "fuel", "deadline": "timeout", "memory-limit": "memory"}  # a trap's kind: the limit it hit
FLAGS = {"fuel": "--fuel", "timeout": "--timeout", "memory": "--memory"}
BYTES_OUT_SAID = "over its bytes_out ("  # out_bound.py's and job_sandbox._outputs' words for outputs over bytes_out


def of_run(kind: str | None, limits: Limits) -> dict[str, Any] | None:
    """The limit a run here that trapped as `kind` hit, named (None: a trap no limit raises)."""
    name = BY_KIND.get(kind or "")
    return None if name is None else named(name, getattr(limits, name), raised_by(name))


def raised_by(name: str) -> str:
    return f"{FLAGS[name]} (at most compute.{name})"


def of_bytes_out(refusal: str | None, bytes_out: Any) -> dict[str, Any] | None:
    """The limit a job's outputs refused for their bytes went over: its bytes_out as the job asked (None: another
    refusal, of its entries, depth, names or stderr)."""
    if refusal is None or BYTES_OUT_SAID not in refusal or type(bytes_out) is not int:
        return None
    return named("bytes_out", bytes_out, "--bytes-out")


def told(trap: Any, asked: dict[str, Any], record: dict[str, Any] | None, fuel_used: Any = None,
         refusal: str | None = None, bytes_out: Any = None, ceiling: Limits | None = None) -> Any:
    """A provider's answered trap as this node keeps and tells it: the limit it names this node's own (`of_provider`,
    or a job's bytes_out as it asked it), its hint saying that limit (within this node's `ceiling`, if given); the
    provider's words for the rest."""
    if not isinstance(trap, dict):
        return trap
    trap = without_limits(trap)
    limit = of_bytes_out(refusal, bytes_out) or of_provider(trap.get("kind"), asked, record, fuel_used)
    return trap if limit is None else {**trap, **limit, "hint": said(limit, ceiling)}


def of_job(answer: dict[str, Any], signed: dict[str, Any], job: dict[str, Any], ceiling: Limits | None = None) -> Any:
    """A job's trap as a provider answered it, as the job's record keeps it (`told`): the limit it names that of the
    provider's checked record (held to what the job asked: sent_jobs.py), or the job's own bytes_out; its hint within
    `ceiling`, this node's (a job asking for more is refused here before any provider sees it)."""
    limits = (job.get("spec") or {}).get("limits") or {}
    return told(answer.get("trap"), {}, signed.get("record"), refusal=answer.get("refusal"),
                bytes_out=limits.get("bytes_out"), ceiling=ceiling)


def asked_of(fuel: Any, memory: Any, timeout: Any) -> dict[str, Any]:
    """The limits a call names (checked already), each in the form a run has it; those it does not name left out."""
    resolved = resolve(UNBOUNDED, fuel, memory, timeout)
    return {name: getattr(resolved, name) for name, value in (("fuel", fuel), ("memory", memory), ("timeout", timeout))
            if value is not None}


def of_provider(kind: Any, asked: dict[str, Any], record: dict[str, Any] | None,
                fuel_used: Any = None) -> dict[str, Any] | None:
    """The limit a run on a provider that trapped as `kind` hit, as this node knows it: `asked`, the limits the call
    or job named (None where it named none: the provider's own ceiling); `record`, the provider's signed record once
    checked; `fuel_used`, the fuel of an answer held to that record.  Its value None when none of them says it."""
    name = BY_KIND.get(kind) if type(kind) is str else None
    if name is None:
        return None
    value = asked.get(name)
    if value is None and record is not None:
        value = signed_limits(record).get(name)
    if value is None and name == "fuel" and type(fuel_used) is int and fuel_used > 0:
        value = fuel_used  # (out of fuel, a run used all of its limit: one that signs less is refused)
    return named(name, value, f"{FLAGS[name]} (at most its provider's compute.{name})")


# A ceiling no limit a call names passes: what it names resolved as its provider resolves it, whatever this node's own.
UNBOUNDED = Limits(sys.maxsize, sys.maxsize, float(sys.maxsize))


def signed_limits(record: dict[str, Any]) -> dict[str, Any]:
    """The limits a signed record says its run had, those it says in the form a record keeps them."""
    fuel, memory, timeout_us = (record.get(k) for k in ("fuel_limit", "memory_limit", "timeout_us"))
    return {name: value for name, value in (("fuel", fuel), ("memory", memory),
                                            ("timeout", timeout_us / 1e6 if type(timeout_us) is int else None))
            if type(value) in (int, float) and value > 0}


def said(limit: dict[str, Any], ceiling: Limits | None = None, here: bool = False) -> str:
    """A named limit's hint, for its line: the flag that raises it and the value the run had, where it is known; with
    `ceiling` (this node's: a call asking for more is refused here), no more than it is offered, and a run that had
    it already is told that raising the ceiling is what asks for more.  `here`: the run was this node's own."""
    name, value = limit["limit"], limit["limit_value"]
    flag = "--bytes-out" if name == "bytes_out" else FLAGS[name]
    # A run here says its limit in its own words ("it used all 100,000 units of its fuel limit"): not twice.  Said as
    # the limit, not as what the run did: "ran under 5 s" beside a message's "it ran for 10.00 s" reads as its time.
    ran = f" (its limit was {_shown(name, value)})" if value is not None and not here else ""
    if name == "bytes_out":
        return f"ask for more with {flag}{ran}"
    if ceiling is None:
        return f"ask for more with {flag}{ran}, up to its provider's compute.{name}"
    most = getattr(ceiling, name)
    if value is not None and value >= most:
        had = f"its {name} limit is this node's most, compute.{name}" if here else \
            f"its limit, {_shown(name, value)}, is this node's most (compute.{name})" if value == most else \
            f"its limit, {_shown(name, value)}, is more than this node's most ({_shown(name, most)}, compute.{name})"
        return f"{had}: to ask for more, raise it (xsc config set compute.{name} ...) and restart the node"
    whose = "" if here else "; its provider's may allow less"
    return f"ask for more with {flag}{ran}, up to {_shown(name, most)} (this node's compute.{name}{whose})"


def hint_here(kind: str | None, limit: dict[str, Any] | None, ceiling: Limits | None, hint: str | None) -> str | None:
    """The hint of a run here (an invoke's, a job's) that trapped as `kind`: out of fuel, the fuel this node offers at
    most (`said`, within its `ceiling`); else `hint`, the sandbox's own."""
    return said(limit, ceiling, here=True) if kind == "out-of-fuel" and limit and ceiling is not None else hint


def _shown(name: str, value: int | float) -> str:
    """A limit's value as the CLI writes it: seconds, a size, or fuel with its thousands separated."""
    return f"{value:g} s" if name == "timeout" else format_size(value) if name in ("memory", "bytes_out") else \
        f"{value:,}"


def without_limits(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without the limit fields a provider put in it: this node names the limit itself."""
    return {k: v for k, v in answer.items() if k not in LIMIT_FIELDS}


def fields(trap: dict[str, Any] | None) -> dict[str, Any]:
    """The limit fields a trap (as a job's record keeps it) carries, for its answer: none if it names no limit."""
    return {k: trap[k] for k in LIMIT_FIELDS if k in trap} if isinstance(trap, dict) else {}


def contradicted(record: dict[str, Any]) -> str | None:
    """How a signed record's trap is one its own figures rule out, if it is: out of fuel having used other than its
    whole fuel limit (a run out of fuel used all of it: sandbox.py), so that the limit its trap names is its own."""
    trap = record.get("trap")
    kind = trap.get("kind") if isinstance(trap, dict) else None
    if kind == "out-of-fuel" and record.get("fuel_consumed") != record.get("fuel_limit"):
        return (f"signs a run out of fuel that used {repr(record.get('fuel_consumed'))[:40]} of its fuel limit of "
                f"{repr(record.get('fuel_limit'))[:40]}")
    return None


__all__ = ["BY_KIND", "LIMIT_FIELDS", "UNBOUNDED", "asked_of", "contradicted", "fields", "hint_here", "of_bytes_out",
           "of_job", "of_provider", "of_run", "raised_by", "said", "signed_limits", "told", "without_limits"]
