"""xsc/units.py: whole numbers as hostile text may spell them; counts said as a user reads them."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xsc.errors import InvalidArgument
from xsc.units import (counted, duration_argument, is_whole_number, parse_duration, parse_seconds, parse_size,
                       plural_for, size_argument)


@given(st.text(max_size=12))
def test_what_is_a_whole_number_int_reads_whole(text: str) -> None:
    if is_whole_number(text):
        assert int(text) >= 0 and str(int(text)).zfill(len(text)) == text


def test_digits_int_does_not_read_are_not_whole_numbers() -> None:
    assert is_whole_number("0") and is_whole_number("0042")
    for text in ("", "\u00b2", "1\u00b2", "\u0663", "-1", "+1", " 1", "1.0", "\u2460"):
        assert not is_whole_number(text), text
    # int() refuses more digits than this (ValueError), where a stranger's fuel or a capability's size is read
    assert is_whole_number("9" * sys.get_int_max_str_digits()) and not is_whole_number("0" * 5000)


def test_counts_are_said_in_the_singular_for_one_and_the_plural_otherwise() -> None:
    assert [counted(n, "replica") for n in (0, 1, 2)] == ["0 replicas", "1 replica", "2 replicas"]
    assert counted(1, "object or part", "objects or parts") == "1 object or part"
    assert counted(3, "object or part", "objects or parts") == "3 objects or parts"
    assert [counted(n, "day") for n in (1.0, 2.5, 7.0)] == ["1 day", "2.5 days", "7 days"]  # a duration's figure
    assert [plural_for(n, "command") for n in (1, 2)] == ["command", "commands"]  # named, not counted


def test_texts_the_node_gives_users_say_their_counts_in_the_singular_for_one() -> None:
    from xsc.buckets.uploads import _duration
    from xsc.compute.registry import check_facts
    from xsc.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=r"^unknown module fact: colour$"):
        check_facts({"colour": "red"})
    with pytest.raises(InvalidArgument, match=r"^unknown module facts: colour, size$"):
        check_facts({"colour": "red", "size": "9"})
    assert [_duration(s) for s in (1, 30, 86400, 7 * 86400)] == ["1 second", "30 seconds", "1 day", "7 days"]


def test_a_negative_size_is_said_to_be_negative_with_one_hint() -> None:
    """-5GiB is a size below zero, not "not a size": one message, one hint (a flag's or a config key's line adds
    nothing in parentheses to it), and the value a config key's line names for it."""
    from xsc.errors import InvalidArgument
    from xsc.units import parse_size

    for typed, shown in (("-5GiB", "'-5GiB'"), (" -1 ", "' -1 '"), ("-0.5MB", "'-0.5MB'"), (-5, "-5")):
        with pytest.raises(InvalidArgument) as refused:
            parse_size(typed)
        assert refused.value.with_hint == f"size must not be negative: {shown} (give 0 or more, e.g. 500MB, 10GiB, 4096)"
        assert refused.value.details == {"example": "10GiB"}
    with pytest.raises(InvalidArgument, match="^not a size: "):
        parse_size("\u06635GiB")  # a digit int() and Decimal read, but no size a user typed
    with pytest.raises(InvalidArgument) as refused:
        parse_size("--5GiB")
    assert refused.value.message == "not a size: '--5GiB'"
    assert parse_size("5GiB") == 5 * 1024**3 and parse_size("0") == 0


@given(st.integers(min_value=0, max_value=2**62))
def test_a_size_or_duration_shown_as_an_argument_is_taken_back_exactly(n: int) -> None:
    assert parse_size(size_argument(n)) == n and parse_duration(duration_argument(n)) == n
    assert " " not in size_argument(n) + duration_argument(n)  # one word on a command line


def test_a_duration_is_shown_in_the_largest_unit_that_holds_it_whole() -> None:
    assert [duration_argument(n) for n in (0, 45, 90 * 60, 3600, 7 * 86400, 86400 + 1)] == \
        ["0s", "45s", "90m", "1h", "7d", "86401s"]


@given(st.floats(min_value=0, max_value=10 * 365 * 86400.0, allow_nan=False, allow_infinity=False)
       | st.floats(min_value=0, max_value=1e300) | st.integers(min_value=0, max_value=2**62).map(float))
def test_seconds_shown_as_an_argument_are_taken_back_exactly(seconds: float) -> None:
    said = duration_argument(seconds)
    assert parse_seconds(said) == seconds and " " not in said and "e" not in said  # no 1e-05: the parser reads none
    assert parse_seconds(said) == parse_seconds(duration_argument(parse_seconds(said)))


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "s", "m", "h", "d", "w"]),
       st.sampled_from(["", " "]))
def test_a_duration_as_a_user_writes_it_is_its_seconds(number: int, unit: str, space: str) -> None:
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{number}{space}{unit}") == number * scale == parse_seconds(f"{number}{unit}")
    assert parse_seconds(f"{number}.5{unit}") == (number + 0.5) * scale  # exact: the halves of whole numbers


def test_durations_take_fractions_and_milliseconds_and_are_shown_as_written() -> None:
    assert [parse_seconds(t) for t in ("600", "600s", "10m", "1.5h", "2d", "250ms", "1w", ".5s", " 3 m ")] == \
        [600, 600, 600, 5400, 172800, 0.25, 604800, 0.5, 180]
    assert [parse_seconds(n) for n in (600, 600.0, 0.2)] == [600, 600, 0.2]  # TOML's numbers: seconds
    assert [duration_argument(s) for s in (600.0, 0.25, 0.2, 2.5, 5400.0, 45.0, 1e-05, 0.0)] == \
        ["10m", "250ms", "200ms", "2.5s", "90m", "45s", "0.00001s", "0s"]
    assert parse_duration("1.5h") == 5400 and parse_duration(600.0) == 600 and parse_seconds("9" * 400) == float("inf")


@pytest.mark.parametrize("text, said", [
    ("-5", "duration must not be negative: '-5'"), ("-1.5h", "duration must not be negative: '-1.5h'"),
    (-1, "duration must not be negative: -1"), (-0.25, "duration must not be negative: -0.25"),
    ("m", "not a duration: 'm'"), ("", "not a duration: ''"), ("soon", "not a duration: 'soon'"),
    ("1.m", "not a duration: '1.m'"), ("--5", "not a duration: '--5'"), ("1e3", "not a duration: '1e3'"),
    ("10x", "unknown unit 'x' in the duration '10x'"), ("10M", "unknown unit 'M' in the duration '10M'"),
    ("5min", "unknown unit 'min' in the duration '5min'"), (True, "not a duration: True"),
    (float("nan"), "not a duration: nan"), (float("inf"), "not a duration: inf"), ([1], "not a duration: [1]"),
    ("\u0663s", "not a duration: '\u0663s'")])
def test_a_bad_duration_is_refused_saying_what_is_wrong_and_what_to_write(text, said: str) -> None:
    for parse in (parse_seconds, parse_duration):
        with pytest.raises(InvalidArgument) as refused:
            parse(text)
        assert refused.value.message == said
        assert refused.value.hint == "write a number with a unit ms, s, m, h, d or w, e.g. 10m, 1.5h, 250ms, 30d"


def test_a_whole_seconds_duration_refuses_a_fraction_of_a_second() -> None:
    for text in ("250ms", "1.5s", 0.5, "1001ms"):
        with pytest.raises(InvalidArgument, match="^not a whole number of seconds: ") as refused:
            parse_duration(text)
        assert refused.value.hint == "this duration is kept to the second: write e.g. 90s, 10m, 1.5h or 30d"
    assert parse_duration("2000ms") == 2
