"""Parsing and formatting of sizes, durations, amounts of credits and counts of things shown to users."""

from __future__ import annotations

import math
import re
import sys

from .errors import InvalidArgument

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def is_whole_number(text: str) -> bool:
    """Whether `text` is one or more ASCII digits, no more of them than int() reads (CPython's
    sys.get_int_max_str_digits(), 4,300 by default: past it int() raises): what int() reads whole.  str.isdigit()
    alone also takes digits such as '²', on which int() raises."""
    most = sys.get_int_max_str_digits()
    return text.isascii() and text.isdigit() and (not most or len(text) <= most)


def counted(n: int | float, noun: str, plural: str | None = None) -> str:
    """`n` things said as a user reads them: "1 replica", "2 replicas", "1.5 days" (`plural` when it is not `noun` +
    "s").  Every text a user reads says its counts so, the node's errors and log lines as the CLI's."""
    return f"{n:g} {plural_for(n, noun, plural)}" if isinstance(n, float) else f"{n} {plural_for(n, noun, plural)}"


def plural_for(n: int | float, noun: str, plural: str | None = None) -> str:
    """The noun for `n` things, without the number: "the ip command", "the ip and iptables commands"."""
    return noun if n == 1 else plural or noun + "s"


_NOT_NEGATIVE = "give 0 or more, e.g. 500MB, 10GiB, 4096"


def parse_size(text: str | int) -> int:
    """'10GiB', '512 MB', '4096' -> bytes."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidArgument(f"size must not be negative: {text}", hint=_NOT_NEGATIVE, example="10GiB")
        return text
    if not isinstance(text, str):  # a JSON float, list, object...: not a size, and no crash
        raise InvalidArgument(f"not a size: {text!r}", hint="write a whole number of bytes or a size, e.g. 16MiB")
    m = re.fullmatch(r"\s*(-?)(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(3).lower() not in _SIZE_UNITS:
        raise InvalidArgument(f"not a size: {text!r}", example="10GiB",
                              hint="write a number with an optional unit, e.g. 500MB, 10GiB, 4096")
    sign, number, unit = m.groups()
    if sign:  # a size, but below zero: said so, not "not a size"
        raise InvalidArgument(f"size must not be negative: {text!r}", hint=_NOT_NEGATIVE, example="10GiB")
    from decimal import Decimal

    return int(Decimal(number) * _SIZE_UNITS[unit.lower()])


def parse_duration(text: str | int) -> int:
    """'30d', '12h', '90s', '3600' -> seconds."""
    if isinstance(text, int):
        return text
    if not isinstance(text, str):
        raise InvalidArgument(f"not a duration: {text!r}", hint="write a number with a unit s, m, h, d or w, e.g. 30d",
                              example="30d")
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if not m:
        raise InvalidArgument(f"not a duration: {text!r}", hint="write a number with a unit s, m, h, d or w, e.g. 30d",
                              example="30d")
    number, unit = m.groups()
    return int(number) * _DURATION_UNITS[unit or "s"]


def size_argument(n: int) -> str:
    """Bytes as a size argument takes them back exactly (parse_size): in the largest unit, binary then decimal, that
    holds a whole number of them ("10GiB", "20MB"), else in bytes; without a space, one word on a command line."""
    if n > 0:
        for unit in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "kB"):
            if n % _SIZE_UNITS[unit.lower()] == 0:
                return f"{n // _SIZE_UNITS[unit.lower()]}{unit}"
    return str(n)


def duration_argument(seconds: int) -> str:
    """Seconds as a duration argument takes them back exactly (parse_duration): in the largest of days, hours and
    minutes that holds a whole number of them ("7d", "90m"), else in seconds ("45s")."""
    if seconds > 0:
        for unit in ("d", "h", "m"):
            if seconds % _DURATION_UNITS[unit] == 0:
                return f"{seconds // _DURATION_UNITS[unit]}{unit}"
    return f"{seconds}s"


def format_size(n: int, *, down: bool = False) -> str:
    """'64.0 MiB'; with `down` its tenth cut, not rounded: never more than `n` (a most to ask for)."""
    try:
        value = float(n)
    except OverflowError:  # a size someone wrote in hundreds of digits, named in its refusal
        return f"{'more' if n > 0 else 'less'} than {'-' if n < 0 else ''}1e308 B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} {unit}"
            return f"{math.floor(value * 10) / 10 if down else value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# The most micro-credits any ledger total may be (it could not be encoded or summed safely beyond): a stranger's
# figure past it is no figure.
MAX_MICRO_CREDITS = 2**62


def credits_argument(micro: int) -> str:
    """Micro-credits as a command takes them: credits, without trailing zeros ("0.25", "3")."""
    return format_credits(micro).rstrip("0").rstrip(".")


def format_credits(micro: int) -> str:
    """Micro-credits as an exact decimal number of credits (no float ever touches money)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"
