"""Per-call limits from JSON: any value a caller can send is either a limit or a clear InvalidArgument."""

from __future__ import annotations

from hypothesis import given, strategies as st

from xsc.compute.jobspec import LIMIT_FIELDS, parse_job
from xsc.compute.limits import Limits, resolve
from xsc.errors import InvalidArgument

CEILING = Limits(fuel=10**8, memory=64 * 1024**2, timeout=5.0)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=6)


@given(fuel=JSON, memory=JSON, timeout=JSON)
def test_any_json_value_is_a_limit_or_a_clear_refusal(fuel, memory, timeout):
    try:
        limits = resolve(CEILING, fuel, memory, timeout)
    except InvalidArgument as err:  # LimitTooHigh is one too
        assert err.message
        return
    assert 1 <= limits.fuel <= CEILING.fuel
    assert 0 <= limits.memory <= CEILING.memory
    assert 0 < limits.timeout <= CEILING.timeout


def test_a_float_memory_is_refused_not_crashed():
    # Found by the API fuzzer (bench/api_fuzz.py): {"memory": 188009589593.0} was a 500.
    try:
        resolve(CEILING, None, 188009589593.0, None)
    except InvalidArgument as err:
        assert "not a size" in err.message
    else:
        raise AssertionError("a float memory size was accepted")


def test_fuel_in_digits_int_does_not_read_is_refused_not_crashed():
    for fuel in ("\u00b2", "1\u00b2"):  # digits to str.isdigit(), not to int()
        try:
            resolve(CEILING, fuel, None, None)
        except InvalidArgument as err:
            assert err.message
        else:
            raise AssertionError(f"fuel {fuel!r} was accepted")


def test_limits_of_hundreds_of_digits_are_refused_not_crashed():
    """No float holds an int of 309 digits or more, and int() reads no text of more than 4,300: a stranger's call or
    job asking for such limits was a 500."""
    huge = (10**4299, -10**4299, "9" * 5000)
    for asked in [(v, None, None) for v in huge] + [(None, v, None) for v in huge] + [(None, None, v) for v in huge]:
        try:
            resolve(CEILING, *asked)
        except InvalidArgument as err:
            assert err.message
        else:
            raise AssertionError(f"limits {asked!r:.40} were accepted")
    module = "00" * 32
    for name in LIMIT_FIELDS:
        for value in huge[:2]:
            try:
                parse_job({"module": module, "limits": {name: value}})
            except InvalidArgument as err:
                assert err.message
            else:
                assert name in ("fuel", "memory", "timeout"), name  # resolved against the node's ceiling later


def test_a_refused_timeout_hints_one_in_the_units_the_flag_and_the_key_take():
    """`--timeout` and `compute.timeout` take a duration (500ms, 1.5s, 2m): the hint shows one, which both take back."""
    from xsc.units import parse_seconds

    for asked, hint in ((-1, "e.g. --timeout 500ms"), ("soon", "e.g. --timeout 500ms"), (6, "ask for at most 5s, "),
                        (90, "ask for at most 5s, ")):
        try:
            resolve(CEILING, None, None, asked)
        except InvalidArgument as err:
            assert err.hint.startswith(hint), err.hint
        else:
            raise AssertionError(f"timeout {asked!r} was accepted")
    for most, said in ((1.5, "1.5s"), (120.0, "2m"), (0.25, "250ms")):
        try:
            resolve(Limits(fuel=1, memory=0, timeout=most), None, None, 1000)
        except InvalidArgument as err:
            assert err.hint.startswith(f"ask for at most {said}, ") and parse_seconds(said) == most, err.hint
        else:
            raise AssertionError("a timeout past the ceiling was accepted")


def test_a_jobs_size_limit_is_a_size_within_what_a_job_may_ask():
    module = "00" * 32
    assert parse_job({"module": module, "limits": {"bytes_out": "2KiB"}}).bytes_out == 2048
    for value, said in ((True, "limits.bytes_out is a size, e.g. 16MiB, not True"),
                        ("1TiB", "limits.bytes_out 1.0 TiB is more than a job may ask (16.0 GiB)")):
        try:
            parse_job({"module": module, "limits": {"bytes_out": value}})
        except InvalidArgument as err:
            assert err.message.startswith(said), err.message
        else:
            raise AssertionError(f"bytes_out {value!r} was accepted")


def test_a_timeout_is_seconds_or_a_duration_as_the_flag_takes_it():
    """A job spec's TOML writes `timeout = "5s"` as it writes `memory = "64MiB"`; the API takes either form."""
    for asked, seconds in ((5, 5.0), (0.25, 0.25), ("5s", 5.0), ("250ms", 0.25), ("1.5", 1.5)):
        assert resolve(CEILING, None, None, asked).timeout == seconds
    for asked in ("soon", "-1s", "0s", "inf", "5 parsecs"):
        try:
            resolve(CEILING, None, None, asked)
        except InvalidArgument as err:
            assert err.message.startswith("timeout must be a positive duration (seconds, or e.g. 500ms)"), err.message
        else:
            raise AssertionError(f"timeout {asked!r} was accepted")


def test_a_memory_that_is_not_a_size_is_refused_naming_the_field():
    for asked in ("lots", "64MB?", -1, True):
        try:
            resolve(CEILING, None, asked, None)
        except InvalidArgument as err:
            assert err.message.startswith("memory: ") and err.hint == "e.g. --memory 16MiB", (err.message, err.hint)
        else:
            raise AssertionError(f"memory {asked!r} was accepted")
