"""xsc/units.py: whole numbers as hostile text may spell them; counts said as a user reads them."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xsc.units import (counted, duration_argument, is_whole_number, parse_duration, parse_size, plural_for,
                       size_argument)


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
    from xsc.compute.service import check_facts
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
