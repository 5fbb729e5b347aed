"""xsc/units.py: whole numbers as hostile text may spell them."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from xsc.units import is_whole_number


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
