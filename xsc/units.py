"""Parsing and formatting of sizes, durations, amounts of credits and counts of things shown to users."""

from __future__ import annotations

import math
import re
import sys
from decimal import Decimal, InvalidOperation, localcontext

from .errors import InvalidArgument

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_DURATION_UNITS = {"ms": Decimal("0.001"), "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
    m = re.fullmatch(r"\s*(-?)(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text, re.ASCII)  # '\u0663' is no digit here
    if not m or m.group(3).lower() not in _SIZE_UNITS:
        raise InvalidArgument(f"not a size: {text!r}", example="10GiB",
                              hint="write a number with an optional unit, e.g. 500MB, 10GiB, 4096")
    sign, number, unit = m.groups()
    if sign:  # a size, but below zero: said so, not "not a size"
        raise InvalidArgument(f"size must not be negative: {text!r}", hint=_NOT_NEGATIVE, example="10GiB")
    return int(Decimal(number) * _SIZE_UNITS[unit.lower()])


_DURATION_HINT = "write a number with a unit ms, s, m, h, d or w, e.g. 10m, 1.5h, 250ms, 30d"


def _not_a_duration(text: object, why: str = "not a duration") -> InvalidArgument:
    return InvalidArgument(f"{why}: {text!r}", hint=_DURATION_HINT, example="10m")


def _seconds(text: object) -> Decimal:
    """A duration as a user writes it ('10m', '1.5h', '250ms', '600', 600.0), exactly, in seconds: never negative,
    never infinite or NaN.  A bare number is seconds."""
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):  # TOML's true, a list...: no duration
        raise _not_a_duration(text)
    if isinstance(text, (int, float)):
        if isinstance(text, float) and not math.isfinite(text):
            raise _not_a_duration(text)
        if text < 0:
            raise _not_a_duration(text, "duration must not be negative")
        return Decimal(text)
    m = re.fullmatch(r"\s*(-?)(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*", text, re.ASCII)  # no other script's digits
    if not m:
        raise _not_a_duration(text)
    sign, number, unit = m.groups()
    if (unit or "s") not in _DURATION_UNITS:  # 10x, 10M, 5min: said as a unit it does not know, with those it does
        raise InvalidArgument(f"unknown unit {unit!r} in the duration {text!r}", hint=_DURATION_HINT, example="10m")
    if sign:  # a duration, but below zero: said so, not "not a duration"
        raise _not_a_duration(text, "duration must not be negative")
    with localcontext(prec=len(number) + 12):  # exact for every number of digits given (none rounded away)
        return Decimal(number) * _DURATION_UNITS[unit or "s"]


def parse_seconds(text: str | int | float) -> float:
    """'10m', '1.5h', '250ms', '600' (or 600.0, 600 from TOML) -> seconds, a float: a period a node waits or allows.
    One too large for a float is infinity, for the bounds of its setting to refuse."""
    return float(_seconds(text))


def parse_duration(text: str | int | float) -> int:
    """'30d', '12h', '1.5h', '90s', '3600' -> whole seconds: a duration a record or a lease keeps to the second."""
    seconds = _seconds(text)
    if seconds != seconds.to_integral_value():
        raise InvalidArgument(f"not a whole number of seconds: {text!r}", example="30d",
                              hint="this duration is kept to the second: write e.g. 90s, 10m, 1.5h or 30d")
    return int(seconds)


def size_argument(n: int) -> str:
    """Bytes as a size argument takes them back exactly (parse_size): in the largest unit, binary then decimal, that
    holds a whole number of them ("10GiB", "20MB"), else in bytes; without a space, one word on a command line."""
    if n > 0:
        for unit in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "kB"):
            if n % _SIZE_UNITS[unit.lower()] == 0:
                return f"{n // _SIZE_UNITS[unit.lower()]}{unit}"
    return str(n)


def duration_argument(seconds: int | float) -> str:
    """Seconds as a duration argument takes them back exactly (parse_duration, parse_seconds): a whole number of them
    in the largest of days, hours and minutes that holds it ("7d", "90m"), else in seconds ("45s"); a fraction of a
    second in milliseconds when it is a whole number of them ("250ms"), else in seconds ("2.5s", "0.0001s")."""
    if isinstance(seconds, float) and not seconds.is_integer():
        exact = Decimal(repr(seconds))  # the shortest decimal that is this float: parsed, it is this float again
        if 0 < seconds < 1 and (exact * 1000) == (exact * 1000).to_integral_value():
            return f"{exact * 1000:f}".partition(".")[0] + "ms"
        return f"{exact:f}s"
    seconds = int(seconds)
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
MAX_PREPAY = 10**12  # micro-credits one prepayment may carry (a million credits): the node's bound, the CLI's too


def parse_credits(text: str, most: int | None = None, what: str = "an amount") -> int:
    """Credits as typed (digits, with at most 6 decimals) in micro-credits, or a one-line error (cli/output.Credits
    names the argument).  Written out as sizes are: an exponent (1e3) is refused, not read as the figure it spells.
    `most`: the largest `what` may be, said in the refusal of one past it (by default what any ledger total may be)."""
    most = MAX_MICRO_CREDITS if most is None else most
    found = re.fullmatch(r"\s*([0-9]*)(?:\.([0-9]*))?\s*", text)
    whole, decimals = (found.group(1), found.group(2) or "") if found else ("", "")
    if not found or not (whole or decimals):
        spelled = re.fullmatch(r"\s*[0-9.]+[eE][+-]?[0-9]+\s*", text)
        raise InvalidArgument(f"not an amount of credits: {text[:40]!r}",
                              hint="write it in digits, e.g. 1000, not 1e3: an amount takes no exponent" if spelled else
                              "e.g. 10 or 0.5 (6 decimals at most)")
    if len(decimals.rstrip("0")) > 6:
        raise InvalidArgument(f"not an amount of credits: {text[:40]!r}",
                              hint="6 decimals at most, e.g. 0.000001: a micro-credit is the smallest amount")
    # The digits are counted before int() reads them: a figure of thousands of digits is refused as one too large.
    whole = whole.lstrip("0")
    micro = int(whole or 0) * 1_000_000 + int(decimals[:6].ljust(6, "0")) if len(whole) <= 19 else most + 1
    if micro > most:
        shown = text.strip() if len(text.strip()) <= 24 else f"a figure of {len(whole):,} digits"
        raise InvalidArgument(f"{what} is at most {credits_argument(most)} credits, not {shown}")
    return micro


def parse_ratio(text: str) -> Decimal | None:
    """A ratio from 0 to 1 as typed ('0.99', '1'), exactly; None for anything else (each caller names its field)."""
    try:
        ratio = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return ratio if ratio.is_finite() and 0 <= ratio <= 1 else None


def credits_argument(micro: int) -> str:
    """Micro-credits as a command takes them: credits, without trailing zeros ("0.25", "3")."""
    return format_credits(micro).rstrip("0").rstrip(".")


def format_credits(micro: int) -> str:
    """Micro-credits as an exact decimal number of credits (no float ever touches money)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"
