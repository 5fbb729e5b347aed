"""Canonical encoding of ledger records and the pricing functions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.errors import InvalidArgument, InvalidEntry
from xsc.identity import Identity
from xsc.ledger import byte_hours, decode_entry, format_credits, price_compute, price_storage, price_storage_period
from xsc.ledger.core.model import Payment, Receipt, authorize, make_payment, make_receipt, ZERO_HASH

PAYER, PAYEE = Identity.generate(), Identity.generate()
u63 = st.integers(0, 2**63 - 1)
meters = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True), u63, max_size=8)


@settings(max_examples=60, deadline=None)
@given(cap=u63, amount=u63, seq=st.integers(1, 2**63 - 1), at=u63, expires=u63, usage=meters,
       job=st.text(max_size=60), nonce=st.binary(min_size=16, max_size=16), prev=st.binary(min_size=32, max_size=32))
def test_encoding_round_trips_and_is_unique(cap, amount, seq, at, expires, usage, job, nonce, prev):
    auth = authorize(PAYER, PAYEE.public_key, cap, job, expires, nonce)
    receipt = make_receipt(PAYEE, seq, prev, auth, amount, usage, at)
    payment = make_payment(PAYER, seq, prev, receipt)
    for entry in (receipt, payment):
        data = entry.encode()
        back = decode_entry(data)
        assert back == entry and back.encode() == data and back.id == entry.id
        assert back.signature == entry.signature and back.authorization.signature == auth.signature
    assert dict(payment.receipt.usage) == usage
    # ids cover the body only, never the signatures (so groups can be laid out before signing)
    assert Receipt(PAYEE.public_key, seq, prev, amount, at, tuple(sorted(usage.items())), auth).id == receipt.id


def _entry() -> Payment:
    auth = authorize(PAYER, PAYEE.public_key, 10, "job", 100, bytes(16))
    return make_payment(PAYER, 1, ZERO_HASH, make_receipt(PAYEE, 1, ZERO_HASH, auth, 5, {"fuel": 7}, 50))


@pytest.mark.parametrize("mutate", [
    lambda b: b[:-1],  # truncated signature
    lambda b: b + b"\x00",  # trailing byte
    lambda b: b"xsc/ledger/paymenT/1\n" + b[21:],  # unknown tag
    lambda b: b[:10],
    lambda b: b"",
])
def test_malformed_encodings_are_refused(mutate):
    with pytest.raises(InvalidEntry):
        decode_entry(mutate(_entry().encode()))


def test_meter_names_found_valid_are_kept_bounded_whoever_names_them():
    """A receipt a stranger answers with names meters as it likes: the names found valid (kept so that each is
    validated once) stay at most METER_NAMES, and each entry still decodes to its own names."""
    from xsc.ledger.core import model

    auth = authorize(PAYER, PAYEE.public_key, 10, "job", 100, bytes(16))
    data = make_receipt(PAYEE, 1, ZERO_HASH, auth, 5, {"m000000": 7}, 50).encode()
    for n in range(4 * model.METER_NAMES):
        name = f"m{n:06d}"
        back = decode_entry(data.replace(b"m000000", name.encode()))
        assert back.usage == ((name, 7),)
        assert len(model._METER_NAMES) <= model.METER_NAMES


def test_bad_fields_are_refused():
    with pytest.raises(InvalidEntry):
        authorize(PAYER, PAYEE.public_key, -1, "job", 100, bytes(16))
    with pytest.raises(InvalidEntry):
        authorize(PAYER, PAYEE.public_key, 1, "x" * 257, 100, bytes(16))
    auth = authorize(PAYER, PAYEE.public_key, 10, "job", 100, bytes(16))
    with pytest.raises(InvalidEntry):
        make_receipt(PAYEE, 1, ZERO_HASH, auth, 1, {"Fuel": 1}, 5)
    with pytest.raises(InvalidEntry):
        make_receipt(PAYEE, 1, ZERO_HASH, auth, 1, {"fuel": 1.5}, 5)


def test_format_credits_is_exact():
    assert format_credits(0) == "0.000000"
    assert format_credits(1) == "0.000001"
    assert format_credits(-100_000_000) == "-100.000000"
    assert format_credits(123_456_789) == "123.456789"


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 2**40), duration=st.integers(0, 10**9), price=st.integers(0, 10**6))
def test_price_storage_rounds_up_exactly(size, duration, price):
    amount = price_storage(size, duration, price)
    exact_times_unit = size * duration * price
    unit = 3600 * 2**30
    assert amount * unit >= exact_times_unit > (amount - 1) * unit or amount == exact_times_unit == 0
    assert byte_hours(size, duration) * 3600 >= size * duration


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 2**40), start=st.integers(0, 2**33), cuts=st.lists(st.integers(0, 10**7), max_size=50),
       price=st.integers(0, 10**6))
def test_the_periods_of_a_lease_add_up_to_its_price_rounded_once(size, start, cuts, price):
    """However a lease is cut into payment periods (an hour, a minute, the runs a restart merged), what they are paid
    adds up to the whole lease's price rounded once, less a micro-credit at most: never a micro-credit a period."""
    ends = [start]
    for cut in cuts:
        ends.append(ends[-1] + cut)
    paid = [price_storage_period(size, a, b, price) for a, b in zip(ends, ends[1:])]
    whole = price_storage(size, ends[-1] - start, price)
    assert all(p >= 0 for p in paid) and whole - 1 <= sum(paid) <= whole


def test_prices_of_known_periods_and_of_one_that_ends_before_it_starts():
    assert price_storage_period(300, 1_796_084_738, 1_796_084_738 + 3600, 2500) == 0  # under a micro-credit: 0
    assert price_storage_period(2**30, 7200, 10800, 1) == 1
    with pytest.raises(InvalidArgument):
        price_storage_period(300, 10, 9, 2500)


@settings(max_examples=200, deadline=None)
@given(fuel=st.integers(0, 2**62), price=st.integers(0, 10**9))
def test_price_compute_rounds_up_exactly(fuel, price):
    amount = price_compute(fuel, price)
    assert amount * 1_000_000 >= fuel * price > (amount - 1) * 1_000_000 or amount == fuel * price == 0


def test_prices_of_known_values():
    assert price_storage(2**30, 3600, 1) == 1  # one GiB-hour
    assert price_storage(3 * 2**30, 7200, 5) == 30
    assert price_storage(1, 1, 1) == 1  # a fraction of a micro-credit rounds up
    assert price_storage(1_000_000, 30 * 86400, 0) == 0
    assert price_compute(1_000_000, 3) == 3
    assert price_compute(1, 3) == 1
    assert price_compute(0, 3) == 0
    with pytest.raises(InvalidArgument):
        price_compute(-1, 3)
