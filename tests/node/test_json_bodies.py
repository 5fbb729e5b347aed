"""JSON bodies (xsc/node/http/common.py): parsed by orjson where it can, with exactly json.loads's verdicts and
values; nesting deeper than MAX_JSON_DEPTH refused before parsing, however many brackets a flat body has."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.errors import InvalidArgument
from xsc.node.http.common import MAX_JSON_DEPTH, dumps, json_object, loads

ODD_BUT_JSON_LOADS_TAKES_IT = [
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'{"big": 123456789012345678901234567890, "neg": -98765432109876543210, "edge": 18446744073709551616}',
    b'{"u64": 18446744073709551615, "i64": -9223372036854775808, "float": 1234567890123456789012.5}',
    b'[12345678901234567890123, {"a" :\n -99999999999999999999}, "x:12345678901234567890123"]',
    b' 123456789012345678901234567890 ',
    '\ufeff{"bom": 1}'.encode(),  # a UTF-8 byte order mark
    b'{"lone": "\\ud800"}',  # a lone surrogate escape
    '{"utf16": true}'.encode("utf-16"),
    b'{"dup": 1, "dup": 2}',
    b'  {"spaces": [1, 2.5e300, -0.0, 1e400]}  ',
    # a long number after a tab, a newline, a minus sign, at the very start; hex with long digit runs beside it
    b'{"hex": "ab12345678901234567890123cd", "n":\t12345678901234567890123}',
    b'[\r\n-12345678901234567890123, "0123456789012345678901234567"]',
    b'12345678901234567890123',
    b'-12345678901234567890123',
]
NOT_JSON = [b"", b"{", b'{"a": 1,}', b"{'a': 1}", b'{"a": 1} x', b"\xff\xfe\x00", b'{"a": nan}', b"[1, 2", b"\x00"]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("text", ODD_BUT_JSON_LOADS_TAKES_IT)
def test_loads_takes_what_json_loads_takes_with_the_same_values(text: bytes) -> None:
    assert _same(loads(text), json.loads(text))


@pytest.mark.parametrize("text", NOT_JSON)
def test_loads_refuses_what_json_loads_refuses(text: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads(text)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(JSON, st.booleans())
def test_loads_and_dumps_agree_with_json_on_any_value(value, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert _same(loads(text), json.loads(text))
    assert _same(json.loads(dumps(value)), json.loads(text)) or _has_nan(value)  # orjson writes NaN as null


@settings(max_examples=150, deadline=None)
@given(JSON, st.sampled_from([(None, (",", ":")), (None, (", ", ": ")), ("\t", (",", ": ")), (1, (",", ":"))]))
def test_loads_agrees_with_json_on_any_layout_of_any_value(value, layout) -> None:
    indent, separators = layout  # compact as peers send it, or with the spaces, tabs and newlines a number may follow
    text = json.dumps(value, indent=indent, separators=separators).encode()
    assert _same(loads(text), json.loads(text))


def _has_nan(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return isinstance(value, list) and any(_has_nan(v) for v in value)


def test_depth_is_refused_past_the_limit_and_a_flat_body_of_many_brackets_is_not() -> None:
    flat = json.dumps({"rows": [[i] for i in range(200)], "text": "[[[[{{{{" * 20}).encode()
    assert json_object(flat, "hint")["rows"][199] == [199]
    deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(InvalidArgument, match="nests deeper"):
        json_object(b'{"a": ' + deep + b"}", "hint")
    at_limit = b'{"a": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    assert json_object(at_limit, "hint")
    with pytest.raises(InvalidArgument, match="not JSON"):
        json_object(b'{"a": [' + b"[]," * 40, "hint")


def _walked_depth_over(raw: bytes, limit: int) -> bool:
    """The byte-by-byte walk the depth check used to be: the oracle for the faster one."""
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n\u00e9', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), inner,
                                                                 max_size=3),
    max_leaves=60)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.sampled_from([b"", b"[", b"[[", b"{\"k\": [", b"\"unended [[[", b"\\\"[[", b"]]]"]))
def test_the_depth_check_agrees_with_a_byte_by_byte_walk(value, noise) -> None:
    """Valid JSON and broken texts alike (an unended string, stray escapes and brackets)."""
    from xsc.node.http.common import _too_deep

    for text in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()):
        for raw in (text, noise + text, text + noise, b"[" * 30 + text + b"]" * 30,
                    b"[" * 30 + text + noise + b"[" * 5, b"[" * 20 + text + b'"[[[' + noise + b"[" * 20 + b"\\"):
            assert _too_deep(raw) == _walked_depth_over(raw, MAX_JSON_DEPTH), raw
