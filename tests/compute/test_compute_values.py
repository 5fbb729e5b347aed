"""Pure cores: argument parsing and result formatting, per-call limits, provenance signing."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xsc.compute import provenance
from xsc.compute.limits import Limits, resolve
from xsc.compute.values import Signature, format_value, parse_args, parse_value, to_json
from xsc.errors import (ArgumentOutOfRange, BadArgument, BadProvenanceSignature, InvalidArgument, LimitTooHigh,
                        WrongArgumentCount)
from xsc.identity import Identity


def bits32(x: float) -> bytes:
    return struct.pack("<f", x)


def bits64(x: float) -> bytes:
    return struct.pack("<d", x)


# --- integers ------------------------------------------------------------------------
@given(st.integers(-(2**31), 2**31 - 1))
def test_i32_decimal_round_trip(n):
    assert parse_value(format_value("i32", n), "i32") == n
    assert parse_value(str(n), "i32") == n
    assert parse_value(n, "i32") == n


@given(st.integers(-(2**63), 2**63 - 1))
def test_i64_hex_and_decimal(n):
    text = ("-" if n < 0 else "") + hex(abs(n))
    assert parse_value(text, "i64") == n
    assert parse_value(format_value("i64", n), "i64") == n


@given(st.integers(2**31, 2**32 - 1))
def test_i32_above_signed_max_wraps_to_twos_complement(n):
    assert parse_value(str(n), "i32") == n - 2**32
    assert parse_value(hex(n), "i32") == n - 2**32


@pytest.mark.parametrize("vtype,bad", [("i32", 2**32), ("i32", -(2**31) - 1), ("i64", 2**64), ("i64", -(2**63) - 1)])
def test_integer_out_of_range(vtype, bad):
    with pytest.raises(ArgumentOutOfRange, match="out of range"):
        parse_value(str(bad), vtype)
    with pytest.raises(ArgumentOutOfRange):
        parse_value(bad, vtype)


@pytest.mark.parametrize("text", ["", "abc", "1.5", "1e3", "0x", "--1", "1_000", "0xfg", " ", "12abc", "nan"])
def test_integer_garbage(text):
    with pytest.raises(BadArgument, match="is not an i32"):
        parse_value(text, "i32")


def test_integer_rejects_json_float_and_bool():
    with pytest.raises(BadArgument):
        parse_value(1.0, "i32")
    with pytest.raises(BadArgument):
        parse_value(True, "i64")


def test_leading_zeros_are_decimal():
    assert parse_value("007", "i32") == 7
    assert parse_value("-0x10", "i32") == -16
    assert parse_value("+0X1f", "i64") == 31


# --- floats ----------------------------------------------------------------------------
@given(st.floats(allow_nan=False, width=32))
def test_f32_text_round_trip_is_bit_exact(x):
    assert bits32(parse_value(format_value("f32", x), "f32")) == bits32(x)


@given(st.floats(allow_nan=False))
def test_f64_text_round_trip_is_bit_exact(x):
    assert bits64(parse_value(format_value("f64", x), "f64")) == bits64(x)


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_f32_shortest_text(x):
    text = format_value("f32", x)
    # no more digits than needed: repr of the f64 value is never shorter
    assert len(text) <= len(repr(x))


@pytest.mark.parametrize("vtype", ["f32", "f64"])
def test_float_specials(vtype):
    assert math.isnan(parse_value("nan", vtype))
    assert math.copysign(1, parse_value("-nan", vtype)) == -1
    assert parse_value("inf", vtype) == math.inf
    assert parse_value("-inf", vtype) == -math.inf
    assert parse_value("Infinity", vtype) == math.inf
    zero = parse_value("-0.0", vtype)
    assert zero == 0 and math.copysign(1, zero) == -1
    assert format_value(vtype, zero) == "-0.0"
    assert format_value(vtype, math.nan) == "nan"
    assert format_value(vtype, -math.inf) == "-inf"
    assert parse_value("0x1.8p1", vtype) == 3.0


def test_f32_rounds_to_nearest_and_refuses_overflow():
    assert parse_value("0.1", "f32") == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert format_value("f32", parse_value("0.1", "f32")) == "0.1"
    assert parse_value("3.4028235e38", "f32") == struct.unpack("<f", struct.pack("<f", 3.4028234663852886e38))[0]
    with pytest.raises(ArgumentOutOfRange, match="out of range for an f32"):
        parse_value("3.5e38", "f32")
    with pytest.raises(ArgumentOutOfRange, match="out of range for an f64"):
        parse_value("1e309", "f64")


@pytest.mark.parametrize("text", ["", "one", "1..2", "0x1.8q1", "1e", "--1.0", "nanx"])
def test_float_garbage(text):
    with pytest.raises(BadArgument, match="is not an f64"):
        parse_value(text, "f64")


def test_json_form_of_values():
    assert to_json("i64", -5) == -5
    assert to_json("f64", 0.5) == "0.5"
    assert to_json("f32", math.nan) == "nan"


# --- whole argument lists ------------------------------------------------------------------
SIG = Signature(("i32", "f64"), ("i32",))


def test_parse_args_by_signature():
    assert parse_args("f", SIG, ["-5", "2.5"]) == [-5, 2.5]


@pytest.mark.parametrize("args", [[], ["1"], ["1", "2", "3"]])
def test_wrong_argument_count(args):
    with pytest.raises(WrongArgumentCount, match=f"f takes 2 arguments \\(i32, f64\\), got {len(args)}") as info:
        parse_args("f", SIG, args)
    assert info.value.hint == "call it as: f I32 F64"


def test_error_names_the_argument():
    with pytest.raises(BadArgument, match="argument 2 of f is not an f64: 'x'"):
        parse_args("f", SIG, ["1", "x"])


def test_signature_text():
    assert str(Signature(("i32", "i32"), ("i32", "i32"))) == "(i32, i32) -> (i32, i32)"
    assert str(Signature((), ())) == "() -> ()"
    assert Signature(("v128",), ()).callable_problem()


# --- limits ------------------------------------------------------------------------------
CEILING = Limits(fuel=1000, memory=64 * 1024 * 1024, timeout=5.0)


def test_limits_default_to_the_ceiling():
    assert resolve(CEILING) == CEILING


def test_limits_may_ask_for_less():
    assert resolve(CEILING, fuel=10, memory="1MiB", timeout="0.5") == Limits(10, 1024 * 1024, 0.5)


@given(st.integers(1, 10**6))
def test_limits_never_more(fuel):
    if fuel > CEILING.fuel:
        with pytest.raises(LimitTooHigh, match="more than this node allows"):
            resolve(CEILING, fuel=fuel)
    else:
        assert resolve(CEILING, fuel=fuel).fuel == fuel


@pytest.mark.parametrize("kwargs,error", [
    ({"fuel": 0}, InvalidArgument), ({"fuel": -1}, InvalidArgument), ({"fuel": "lots"}, InvalidArgument),
    ({"memory": "65MiB"}, LimitTooHigh), ({"memory": "big"}, InvalidArgument),
    ({"timeout": 6}, LimitTooHigh), ({"timeout": 0}, InvalidArgument), ({"timeout": "nan"}, InvalidArgument),
    ({"timeout": "soon"}, InvalidArgument),
])
def test_bad_limits(kwargs, error):
    with pytest.raises(error):
        resolve(CEILING, **kwargs)


# --- provenance signatures ------------------------------------------------------------------
NODE = Identity.generate()


records = st.fixed_dictionaries({
    "id": st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    "function": st.text(max_size=20),
    "fuel_consumed": st.integers(0, 2**63),
    "args": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["i32", "f64"]),
                                            "value": st.one_of(st.integers(), st.text(max_size=10))}), max_size=4),
}).map(lambda r: {**r, "node": NODE.id})


@given(records)
def test_signed_record_verifies(record):
    signed = provenance.decode(provenance.sign(NODE, record))
    assert signed["record"] == record
    assert provenance.is_valid(signed)
    assert provenance.check(signed) == record


@given(records, st.integers(0, 2**63))
def test_altered_record_fails(record, fuel):
    signed = provenance.decode(provenance.sign(NODE, record))
    if fuel != record["fuel_consumed"]:
        signed["record"]["fuel_consumed"] = fuel
        assert not provenance.is_valid(signed)
        with pytest.raises(BadProvenanceSignature):
            provenance.check(signed)


def test_record_signed_by_another_key_fails():
    record = {"id": "0" * 32, "node": NODE.id}
    signed = provenance.decode(provenance.sign(Identity.generate(), record))
    assert not provenance.is_valid(signed)
    assert not provenance.is_valid({"record": {"node": "not-an-id"}, "signature": "00"})
    assert not provenance.is_valid({"nothing": 1})


# --- parse_args's fast path for decimal digits ------------------------------------------------------------
DIGIT_TEXT = st.one_of(st.integers(0, 2**70).map(str), st.text("0123456789", min_size=1, max_size=25),
                       st.text("0123456789٣²¹ +-x", min_size=1, max_size=22))


@given(st.sampled_from(["i32", "i64"]), DIGIT_TEXT)
def test_parse_args_reads_every_text_of_digits_as_parse_value_does(vtype: str, text: str) -> None:
    signature = Signature((vtype,), ())
    try:
        expected = parse_value(text, vtype, where="argument 1 of f")
    except (BadArgument, ArgumentOutOfRange) as err:
        with pytest.raises(type(err)) as raised:
            parse_args("f", signature, [text])
        assert raised.value.message == err.message
    else:
        assert parse_args("f", signature, [text]) == [expected]
