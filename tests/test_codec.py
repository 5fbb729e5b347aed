"""The codec's canonical form is every spelling the node signed or hashed with before, byte for byte (json.dumps
with keys sorted, compact, ASCII only; with and without allow_nan), so every signature made over such bytes and
every hash of a stored manifest still holds; dumps and loads are json's, by orjson where it can."""

from __future__ import annotations

import base64
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc import codec
from xsc.compute.provenance import timestamp
from xsc.identity import Identity, verify
from xsc.market.core.book import parse_commitment
from xsc.peers.core import descriptors
from xsc.storage.core.manifest import Manifest

from tests.support.attacks import honest_commitment


def _no_nan(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _sorted_compact(value) -> bytes:  # the spelling of descriptors, subscriptions, orders and manifests
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.text(
    alphabet=st.sampled_from('aZ09 "\\/\x00\x1f\x7f\x80é€:,[.e'), max_size=12)
_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | _text)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                       max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(_values)
def test_canonical_is_each_old_spelling_byte_for_byte(value):
    assert codec.canonical(value) == _no_nan(value) == _sorted_compact(value)


@settings(max_examples=100, deadline=None)
@given(_values)
def test_dumps_and_loads_give_back_what_json_reads(value):
    assert codec.loads(codec.dumps(value)) == json.loads(json.dumps(value))
    assert codec.loads(json.dumps(value)) == json.loads(json.dumps(value))


def test_a_typical_provenance_record_takes_the_fast_way_and_the_same_bytes():
    record = {"version": 3, "id": "ab" * 16, "module": "cd" * 32, "function": "add",
              "args": [{"type": "i32", "value": 1}, {"type": "f64", "value": "1.5"}], "outcome": "ok",
              "fuel_limit": 10**10, "timestamp": timestamp(1_795_000_000 * 10**9), "deal": {"allocated": False},
              "previous": None, "results": [{"type": "i32", "value": -3}], "wasi": {"argv": ["x", "a\nb\"c"]}}
    assert codec.canonical(record) == _no_nan(record)
    assert not codec._has_float(codec.canonical(record))  # the fast way: no float seen


def test_floats_are_seen_wherever_they_stand():
    import orjson

    for value in ({"a": 1.5}, {"a": [1, -2.0]}, {"a": [1e300]}, [0.5], {"a": {"b": -1e-7}}, 1.5, -2e-9):
        assert codec._has_float(orjson.dumps(value))
    for value in ({"a": "1.5"}, {"t": timestamp(1_795_000_000 * 10**9)}, {"a": [1, -2]}, {"a": 10**18}, "1.5", 7):
        assert not codec._has_float(orjson.dumps(value))


def test_nan_and_infinity_have_no_canonical_form():
    for value in (math.nan, {"a": math.inf}, [-math.inf]):
        with pytest.raises(ValueError):
            codec.canonical(value)


def test_signed_descriptors_and_stored_manifests_keep_their_bytes():
    identity = Identity.generate()
    made = descriptors.make_descriptor(identity, url="http://127.0.0.1:9000", capacity=10, free=5, version="1.0",
                                       timestamp=1_700_000_000_000)
    fields = made.to_json()
    assert descriptors.signed_bytes(fields) == b"XSC-NODE-DESCRIPTOR-1\n" + _sorted_compact(
        {k: fields[k] for k in descriptors.FIELDS})
    assert made.encode() == _sorted_compact(fields)
    assert descriptors.parse_descriptor(json.loads(made.encode()), now_ms=1_700_000_000_000) == made
    manifest = Manifest(size=1, segment_size=2, k=3, m=6, segment_count=1, share_roots=("ab",) * 6,
                        ciphertext_hash="cd" * 32)
    assert manifest.encode() == _sorted_compact({**manifest.__dict__, "share_roots": ["ab"] * 6})


def test_a_market_commitment_signed_over_the_old_spelling_still_verifies():
    identity = Identity.generate()
    fields = honest_commitment(identity, Identity.generate().id)
    body = {k: v for k, v in fields.items() if k != "signature"}
    old = b"XSC-MARKET-COMMITMENT-1\n" + _no_nan(body)  # the bytes the market signed before the codec
    assert verify(identity.public_key, bytes.fromhex(fields["signature"]), old)
    resigned = {**body, "signature": identity.sign(old).hex()}
    assert parse_commitment(resigned).participant == identity.id


_HEADS = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=16), st.booleans()),
                         max_size=4)


@given(_HEADS, st.binary(max_size=256))
def test_a_framed_body_gives_back_its_head_and_data(head, data) -> None:
    assert codec.unframed(codec.framed(head, data), 4096) == (head, data)


@given(st.binary(max_size=64))
def test_bytes_that_are_not_a_framed_body_are_a_value_error_never_another(body) -> None:
    try:
        head, _ = codec.unframed(body, 32)
    except ValueError:
        return
    assert isinstance(head, dict) and int.from_bytes(body[:4], "big") <= 32


@pytest.mark.parametrize("text", [
    b"[" * 100_000,  # orjson's way (it refuses past 1,024 levels; json then decides)
    b"[" * 100_000 + b"1234567890123456789",  # a long number: json's way at once
    "[" * 100_000 + "\ud800",  # a lone surrogate: json's way
    b'{"a":' * 50_000,
])
def test_text_nested_too_deep_to_read_is_a_value_error_like_any_text_that_is_not_json(text) -> None:
    """A stranger's body of 100 KB of brackets: every reader of peers' and clients' JSON refuses ValueErrors."""
    with pytest.raises(ValueError, match="nested too deep|recursion"):
        codec.loads(text)
    framed = len(text).to_bytes(4, "big") + (text if isinstance(text, bytes) else text.encode(errors="surrogatepass"))
    with pytest.raises(ValueError):
        codec.unframed(framed, len(framed))


def test_a_framed_head_over_its_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 8 bytes"):
        codec.unframed(codec.framed({"long": "head"}, b"data"), 8)


@given(st.binary(max_size=80))
def test_base32_is_b32encodes_text_unpadded_in_lower_case(data) -> None:
    # Capabilities and node ids are written so: every one written before must read back the same.
    assert codec.base32(data) == base64.b32encode(data).decode().rstrip("=").lower()


@settings(max_examples=100, deadline=None)
@given(_values)
def test_a_value_is_its_own_canonical_form_and_another_spelling_is_named(value):
    assert codec.respelled(value, value) is None
    assert codec.respelled(json.loads(json.dumps(value)), value) is None  # what a reader of its text gives back


@pytest.mark.parametrize("given, form, said", [
    ({"tier": 1.0}, {"tier": 1}, "tier is 1.0, not in its canonical form 1"),
    ({"ok": 1}, {"ok": True}, "ok is 1, not in its canonical form true"),
    ({"a": [1, {"b": "x"}]}, {"a": [1, {"b": "x", "c": []}]}, "a.1.c is missing"),
    ({"a": 1, "z": 2}, {"a": 1}, "z is not a field of the record"),
    ({"w": float("nan")}, {"w": "NaN"}, "w is NaN, not in its canonical form"),
])
def test_a_spelling_other_than_the_canonical_form_is_named_where_it_differs(given, form, said):
    assert said in codec.respelled(given, form)
