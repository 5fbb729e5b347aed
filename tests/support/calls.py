"""Work counted in Python calls, which do not depend on the machine's speed: for tests that a cost grows with
what it should (never with a product of sizes) without timing anything."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def python_calls(work: Callable[[], Any]) -> int:
    """The Python function calls (generator steps included) `work()` makes."""
    calls = 0

    def count(frame, event, arg) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


def python_lines(work: Callable[[], Any]) -> int:
    """The lines of Python `work()` runs (a loop's body counted at each turn): for costs a loop carries, not calls."""
    lines = 0

    def trace(frame, event, arg):
        nonlocal lines
        lines += event == "line"
        return trace

    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(None)
    return lines
