"""A provenance record's canonical form is json.dumps(sort_keys, compact, ASCII only), byte for byte, whichever
way it is made (orjson where its output is the same, json otherwise): records signed before verify after."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.compute import provenance


def _json(record) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.text(
    alphabet=st.sampled_from('aZ09 "\\/\x00\x1f\x7f\x80é€:,[.e'), max_size=12)
_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | _text)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                       max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_text, _values, max_size=6))
def test_canonical_is_json_dumps_byte_for_byte(record):
    assert provenance.canonical(record) == _json(record)


def test_a_typical_record_takes_the_fast_way_and_the_same_bytes():
    record = {"version": provenance.VERSION, "id": "ab" * 16, "module": "cd" * 32, "function": "add",
              "args": [{"type": "i32", "value": 1}, {"type": "f64", "value": "1.5"}], "outcome": "ok",
              "fuel_limit": 10**10, "timestamp": "2026-11-23T02:00:00.000000Z", "deal": {"allocated": False},
              "previous": None, "results": [{"type": "i32", "value": -3}], "wasi": {"argv": ["x", "a\nb\"c"]}}
    assert provenance.canonical(record) == _json(record)
    assert not provenance._has_float(provenance.canonical(record))  # the fast way: no float seen


def test_floats_are_seen_wherever_they_stand():
    import orjson

    for value in ({"a": 1.5}, {"a": [1, -2.0]}, {"a": [1e300]}, [0.5], {"a": {"b": -1e-7}}):
        assert provenance._has_float(orjson.dumps(value))
    for value in ({"a": "1.5"}, {"t": "2026-11-23T02:00:00.000000Z"}, {"a": [1, -2]}, {"a": 10**18}):
        assert not provenance._has_float(orjson.dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=3))
def test_a_timestamp_is_the_utc_time_to_the_microsecond(ns, later_seconds):
    """A record's timestamp (made from a cached text of its second): the ISO form of the time, microseconds
    truncated, whichever second was asked for before."""
    from datetime import datetime, timedelta, timezone

    for at in (ns, ns + later_seconds * 10**9, ns):
        expected = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=at // 1000)
        assert provenance.timestamp(at) == expected.isoformat(timespec="microseconds").replace("+00:00", "Z")
