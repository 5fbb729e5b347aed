"""The limit a trap names (compute/trap_limits.py), pure: here from the limits it ran under, on a provider from what was
asked and the checked record (never the provider's words), a record kept before the fields existed read as naming
none, and a record out of fuel with fuel left told apart."""

from __future__ import annotations

import pytest

from xsc.compute import trap_limits
from xsc.compute.job_answers import answer
from xsc.compute.limits import Limits
from xsc.errors import Trap

LIMITS = Limits(fuel=1_000, memory=65_536, timeout=0.5)
RECORD = {"fuel_limit": 5_000, "memory_limit": 131_072, "timeout_us": 250_000, "fuel_consumed": 5_000,
          "trap": {"kind": "out-of-fuel"}}


@pytest.mark.parametrize("kind, named", [("out-of-fuel", ("fuel", 1_000)), ("deadline", ("timeout", 0.5)),
                                         ("memory-limit", ("memory", 65_536)), ("unreachable", None), (None, None)])
def test_a_run_here_names_the_limit_its_trap_hit(kind, named) -> None:
    limit = trap_limits.of_run(kind, LIMITS)
    assert (limit and (limit["limit"], limit["limit_value"])) == (named or None)
    if limit:
        assert limit["raised_by"] == f"--{named[0]} (at most compute.{named[0]})"


def test_a_run_on_a_provider_names_what_was_asked_else_its_checked_record_else_the_fuel_it_used() -> None:
    asked = trap_limits.asked_of(700, "64KiB", None)
    assert asked == {"fuel": 700, "memory": 65_536}
    assert trap_limits.of_provider("out-of-fuel", asked, RECORD)["limit_value"] == 700
    assert trap_limits.of_provider("deadline", asked, RECORD)["limit_value"] == 0.25
    assert trap_limits.of_provider("deadline", asked, None)["limit_value"] is None  # nothing says it
    assert trap_limits.of_provider("out-of-fuel", {}, None, 900)["limit_value"] == 900
    assert trap_limits.of_provider("out-of-fuel", {}, None, "900")["limit_value"] is None  # not a figure
    assert trap_limits.of_provider(["out-of-fuel"], {}, RECORD) is None  # a kind in no shape a trap has


def test_a_providers_own_limit_fields_are_not_taken() -> None:
    said = {"kind": "deadline", "message": "deadline exceeded", "hint": "pay more", "limit": "memory",
            "limit_value": 1, "raised_by": "nothing"}
    told = trap_limits.told(said, {}, RECORD)
    assert (told["limit"], told["limit_value"], told["raised_by"]) == \
        ("timeout", 0.25, "--timeout (at most its provider's compute.timeout)")
    assert told["hint"] == "ask for more with --timeout (its limit was 0.25 s), up to its provider's compute.timeout"
    unnamed = trap_limits.told({**said, "kind": "unreachable"}, {}, RECORD)
    assert unnamed == {"kind": "unreachable", "message": "deadline exceeded", "hint": "pay more"}


def test_a_record_kept_without_the_fields_reads_as_naming_no_limit() -> None:
    """A job's record written before traps named their limits: its trap, as kept, names none, and answers as it did."""
    assert trap_limits.fields({"kind": "deadline", "message": "m", "hint": "h"}) == {} == trap_limits.fields(None)
    assert trap_limits.told({"kind": "deadline", "message": "m"}, {}, {"trap": {"kind": "deadline"}})["limit_value"] \
        is None  # a record of no limits at all
    job = {"id": "ab" * 32, "state": "failed", "error": "m"}
    with pytest.raises(Trap) as trapped:
        answer(job, {"stdout": "", "stderr": ""}, 5, None, {"kind": "deadline", "message": "m", "hint": "h"})
    assert not {"limit", "limit_value", "raised_by"} & set(trapped.value.details)


@pytest.mark.parametrize("record, why", [
    (RECORD, None),
    ({**RECORD, "fuel_consumed": 4_999}, "signs a run out of fuel that used 4999 of its fuel limit of 5000"),
    ({**RECORD, "fuel_consumed": 4_999, "trap": {"kind": "deadline"}}, None),
    ({**RECORD, "fuel_limit": "5000"}, "signs a run out of fuel that used 5000 of its fuel limit of '5000'"),
])
def test_a_record_out_of_fuel_with_fuel_left_is_told_apart(record, why) -> None:
    assert trap_limits.contradicted(record) == why


def test_outputs_over_their_bytes_out_name_it_as_the_job_asked_and_no_other_refusal_does() -> None:
    said = {"kind": "output-limit", "message": "m", "hint": "h"}
    told = trap_limits.told(said, {}, RECORD, refusal="its outputs are 1,000 bytes, over its bytes_out (100)",
                            bytes_out=100)
    assert (told["limit"], told["limit_value"], told["raised_by"]) == ("bytes_out", 100, "--bytes-out")
    assert trap_limits.of_bytes_out("it made more than 1,024 files and directories in /out", 100) is None
    assert trap_limits.of_bytes_out("its outputs are 1,000 bytes, over its bytes_out (100)", "100") is None


def test_a_jobs_trap_on_a_provider_offers_no_more_than_this_nodes_ceiling_and_says_its_limit_as_a_limit() -> None:
    """A job past its wall-clock limit on a provider: its hint never reads as the time it ran ("ran for 10.00 s" beside
    "ran under 5 s"), and one whose limit is this node's most is told to raise the ceiling, not to ask for more."""
    answer = {"trap": {"kind": "deadline", "message": "deadline exceeded: it ran for 10.00 s, past its wall-clock "
                                                      "limit of 5 s"}}
    signed = {"record": {**RECORD, "timeout_us": 5_000_000, "trap": {"kind": "deadline"}}}
    at_most = trap_limits.of_job(answer, signed, {"spec": {}}, Limits(fuel=1_000, memory=65_536, timeout=5.0))
    assert at_most["limit_value"] == 5.0
    assert at_most["hint"] == ("its limit, 5 s, is this node's most (compute.timeout): to ask for more, raise it "
                               "(xsc config set compute.timeout ...) and restart the node")
    under = trap_limits.of_job(answer, signed, {"spec": {}}, Limits(fuel=1_000, memory=65_536, timeout=30.0))
    assert under["hint"] == ("ask for more with --timeout (its limit was 5 s), up to 30 s (this node's "
                             "compute.timeout; its provider's may allow less)")
    assert "ran under" not in trap_limits.of_job(answer, signed, {"spec": {}})["hint"]
