"""Wasm values as callers write them: parsing arguments by signature, formatting results.

Pure functions, no wasmtime: the signature of an export is a `Signature` of type
names ("i32", "i64", "f32", "f64"), computed once at deploy time.

Text forms (the CLI's, and the JSON API's for floats):
- integers: decimal or 0x-hex with an optional sign.  An i32 accepts
  -2**31 .. 2**32-1 and an i64 -2**63 .. 2**64-1 (wasm integers have no sign; values
  above the signed maximum are their two's complement); results print signed.
- floats: decimal, exponent or C99 hex-float notation, and nan, -nan, inf, -inf
  (also "infinity"); -0.0 keeps its sign.  An f32 argument is rounded to the
  nearest f32; a finite number too large for its type is an error, not infinity.
  Results print in the shortest form that reads back to the same bits (NaN
  payloads aside: NaN canonicalization makes every computed NaN the same one).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ..errors import (MAX_ID_SHOWN, ArgumentOutOfRange, BadArgument, UnsupportedSignature, WrongArgumentCount,
                      quoted_id, shown)
from ..units import counted

NUMERIC = ("i32", "i64", "f32", "f64")
_INT_BITS = {"i32": 32, "i64": 64}
_INT_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_FLOAT_RE = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?")
_SPECIAL = {
    "nan": math.nan, "+nan": math.nan, "-nan": math.copysign(math.nan, -1.0),
    "inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
    "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
}
_HINTS = {
    "i32": "write a decimal or 0x-hex integer, e.g. 42, -7 or 0xff",
    "i64": "write a decimal or 0x-hex integer, e.g. 42, -7 or 0xff",
    "f32": "write a number such as 1.5, -2e-3 or 0x1.8p1, or nan, inf, -inf",
    "f64": "write a number such as 1.5, -2e-3 or 0x1.8p1, or nan, inf, -inf",
}


@dataclass(frozen=True)
class Signature:
    params: tuple[str, ...]
    results: tuple[str, ...]

    def __str__(self) -> str:
        results = self.results[0] if len(self.results) == 1 else f"({', '.join(self.results)})"
        return f"({', '.join(self.params)}) -> {results}"

    def callable_problem(self) -> str | None:
        """Why a caller cannot invoke this export with numbers, or None."""
        odd = [t for t in (*self.params, *self.results) if t not in NUMERIC]
        if odd:
            return f"it uses {', '.join(sorted(set(odd)))} values, and only i32, i64, f32 and f64 can be passed"
        return None


def _f32(value: float) -> float:
    """Round a Python float to the nearest f32 (raises OverflowError past the f32 range)."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def parse_value(raw: Any, vtype: str, *, where: str = "argument") -> int | float:
    """One argument, as text or a JSON number, to the Python value wasmtime takes for `vtype`."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise BadArgument(f"{where} is not an {vtype}: {_said(raw)}", hint=_HINTS.get(vtype))
    if vtype in _INT_BITS:
        return _parse_int(raw, vtype, where)
    if vtype in ("f32", "f64"):
        return _parse_float(raw, vtype, where)
    raise UnsupportedSignature(f"{where} has type {vtype}, which cannot be passed from outside")


def _parse_int(raw: str | int | float, vtype: str, where: str) -> int:
    if isinstance(raw, float):
        raise BadArgument(f"{where} is not an {vtype}: {raw!r} is not an integer", hint=_HINTS[vtype])
    if isinstance(raw, str):
        text = raw.strip()
        if not _INT_RE.fullmatch(text):
            raise BadArgument(f"{where} is not an {vtype}: {_said(raw)}", hint=_HINTS[vtype])
        digits = text.lstrip("+-")
        hexadecimal = digits[:2].lower() == "0x"
        significant = (digits[2:] if hexadecimal else digits).lstrip("0") or "0"
        # More digits than any 64-bit number has is out of range, and past what int() reads (4,300 digits).
        if len(significant) > 20:
            raise _out_of_range(raw, vtype, where)
        value = int(significant, 16 if hexadecimal else 10)
        if text.startswith("-"):
            value = -value
    else:
        value = raw
    bits = _INT_BITS[vtype]
    if not -(1 << (bits - 1)) <= value <= (1 << bits) - 1:
        raise _out_of_range(raw, vtype, where)
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _out_of_range(raw: str | int, vtype: str, where: str) -> ArgumentOutOfRange:
    """`raw` past what a `vtype` holds, said once, the number quoted cut short (it may have thousands of digits)."""
    bits = _INT_BITS[vtype]
    return ArgumentOutOfRange(f"{where} is out of range for an {vtype}: {_said(raw, quoted=False)}",
                              hint=f"use a number between {-(1 << (bits - 1))} and {(1 << bits) - 1}")


def _said(raw: Any, quoted: bool = True) -> str:
    """An argument as an error quotes it back, on one short line: typed, it may have thousands of characters."""
    if isinstance(raw, int) and not isinstance(raw, bool):  # a JSON number: one past 4,300 digits has no str()
        digits = int(abs(raw).bit_length() * 0.30103) + 1
        return str(raw) if digits < 40 else f"a number of about {digits:,} digits"
    if isinstance(raw, str):
        return quoted_id(raw) if quoted else shown(raw, MAX_ID_SHOWN)
    return shown(repr(raw), MAX_ID_SHOWN)


def _parse_float(raw: str | int | float, vtype: str, where: str) -> float:
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in _SPECIAL:
            value = _SPECIAL[text]
        elif _FLOAT_RE.fullmatch(text):
            value = float(text)
        elif _HEX_FLOAT_RE.fullmatch(text):
            value = float.fromhex(text)
        else:
            raise BadArgument(f"{where} is not an {vtype}: {_said(raw)}", hint=_HINTS[vtype])
        overflow = math.isinf(value) and text.lstrip("+-") not in ("inf", "infinity")
    else:
        try:
            value = float(raw)
        except OverflowError:
            value, overflow = math.inf, True
        else:
            overflow = False
    if not overflow and vtype == "f32" and math.isfinite(value):
        try:
            value = _f32(value)
        except OverflowError:
            overflow = True
    if overflow:
        biggest = "3.4028234663852886e38" if vtype == "f32" else "1.7976931348623157e308"
        raise ArgumentOutOfRange(f"{where} is out of range for an {vtype}: {_said(raw, quoted=False)}",
                                 hint=f"finite {vtype} values are at most {biggest} in magnitude; inf is infinity")
    return value


def parse_args(function: str, signature: Signature, raw_args: Sequence[Any]) -> list[int | float]:
    """All arguments of a call, checked against the export's parameters."""
    params = signature.params
    if len(raw_args) != len(params):
        wanted = counted(len(params), "argument")
        types = f" ({', '.join(params)})" if params else ""
        usage = " ".join(t.upper() for t in params) or "(no arguments)"
        raise WrongArgumentCount(
            f"{function} takes {wanted}{types}, got {len(raw_args)}",
            hint=f"call it as: {function} {usage}", expected=len(params), given=len(raw_args))
    values: list[int | float] = []
    for i, (raw, vtype) in enumerate(zip(raw_args, params)):
        bits = _INT_BITS.get(vtype)
        if bits is not None and type(raw) is str and raw.isascii() and raw.isdigit() and len(raw) < 19:
            value = int(raw)  # the common case, decimal digits alone: as _parse_int reads them, without its regex
            if value < 1 << bits:
                values.append(value - (1 << bits) if value >= 1 << (bits - 1) else value)
                continue
        values.append(parse_value(raw, vtype, where=f"argument {i + 1} of {function}"))
    return values


def format_value(vtype: str, value: int | float) -> str:
    """The text form of a value; parse_value(format_value(t, v), t) gives back v's bits (NaN payloads aside)."""
    if vtype in _INT_BITS:
        return str(value)
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if vtype == "f32":
        for digits in range(1, 10):  # 9 significant digits always round-trip an f32
            text = f"{value:.{digits}g}"
            try:
                if _f32(float(text)) == value:
                    return repr(float(text))
            except OverflowError:  # rounded up past the largest f32: needs more digits
                continue
    return repr(value)


def to_json(vtype: str, value: int | float) -> int | str:
    """A value in JSON: integers as numbers, floats as their exact text (JSON has no NaN, -0.0 is fragile)."""
    return value if vtype in _INT_BITS else format_value(vtype, value)


def typed(types: Iterable[str], values: Iterable[int | float]) -> list[dict[str, Any]]:
    return [{"type": t, "value": to_json(t, v)} for t, v in zip(types, values)]
