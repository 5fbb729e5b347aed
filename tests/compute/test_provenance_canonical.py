"""A provenance record's canonical form is json.dumps(sort_keys, compact, ASCII only), byte for byte, whichever
way it is made (orjson where its output is the same, json otherwise): records signed before verify after."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.compute import provenance


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.text(
    alphabet=st.sampled_from('aZ09 "\\/\x00\x1f\x7f\x80é€:,[.e'), max_size=12)
_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | _text)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                       max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_text, _values, max_size=6))
def test_canonical_is_json_dumps_byte_for_byte(record):
    assert provenance.canonical(record) == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                                                      allow_nan=False).encode()


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=3))
def test_a_timestamp_is_the_utc_time_to_the_microsecond(ns, later_seconds):
    """A record's timestamp (made from a cached text of its second): the ISO form of the time, microseconds
    truncated, whichever second was asked for before."""
    from datetime import datetime, timedelta, timezone

    for at in (ns, ns + later_seconds * 10**9, ns):
        expected = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=at // 1000)
        assert provenance.timestamp(at) == expected.isoformat(timespec="microseconds").replace("+00:00", "Z")
