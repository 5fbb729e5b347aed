"""The wire form of an authorization: one encoding, strictly decoded (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.errors import InvalidEntry
from xsc.identity import Identity
from xsc.ledger import decode_authorization, encode_authorization
from xsc.ledger.core.model import MAX_U63, Authorization, authorize

PAYER, PAYEE = Identity.generate(), Identity.generate()
fields = st.tuples(st.integers(0, MAX_U63), st.binary(min_size=16, max_size=16), st.integers(0, MAX_U63),
                   st.text(max_size=60))


@settings(max_examples=60, deadline=None)
@given(fields, st.data())
def test_an_authorization_round_trips_and_nothing_else_decodes(values, data) -> None:
    cap, nonce, expires_at, job = values
    auth = authorize(PAYER, PAYEE.public_key, cap, job, expires_at, nonce)
    wire = encode_authorization(auth)
    back = decode_authorization(wire)
    assert back == auth and back.signature == auth.signature and back.id == auth.id
    assert encode_authorization(back) == wire
    cut = data.draw(st.integers(1, len(wire) - 1))
    with pytest.raises(InvalidEntry):
        decode_authorization(wire[:cut])  # truncated anywhere (the signature is the last 64 bytes)
    with pytest.raises(InvalidEntry):
        decode_authorization(wire[:-64] + b"\x00" + wire[-64:])  # a trailing byte in the body


def test_an_unsigned_authorization_is_not_sent() -> None:
    with pytest.raises(InvalidEntry):
        encode_authorization(Authorization(PAYER.public_key, PAYEE.public_key, 1, bytes(16), 1, "x"))
    with pytest.raises(InvalidEntry):
        decode_authorization(b"xsc/ledger/receipt/1\n" + bytes(200))
