"""Refusals from peers are summarised once, in one line, with what to do; the details behind `xsc --verbose`."""

from __future__ import annotations

import click
import pytest

from xsc.cli import output
from xsc.errors import PeerError, PeerRefused
from xsc.identity import Identity
from xsc.storage.remote import summarise_refusals

B = Identity.generate().id


def refusal(share: int, code: str) -> PeerRefused:
    return PeerRefused(f"peer https://127.0.0.1:1 refused POST /v1/peer/shares/{'0' * 64}/{share}/uploads: node "
                       f"{'a' * 52} must prepay: a share of 25004 bytes costs 0.000042 credits", peer_code=code)


def test_three_refusals_of_one_node_are_one_line_naming_it_once_and_the_remedy() -> None:
    message, hint, details = summarise_refusals([(B, s, refusal(s, "prepayment-required")) for s in (1, 2, 4)])
    line = f"xsc: error: {message} ({hint})"
    assert "\n" not in line and len(line) < 240, line
    assert line.count(B) == 2 and "refused shares 1, 2, 4 (prepayment-required)" in message  # who, which, why: once
    assert f"xsc ledger prepay {B} CREDITS" in hint  # what to do, with the whole id
    assert [d["share"] for d in details] == [1, 2, 4] and all("must prepay" in d["detail"] for d in details)


def test_a_put_refused_for_prepayment_says_the_amount_the_node_claims_its_shares_miss_as_its_claim() -> None:
    def missing(share: int, micro: int) -> PeerRefused:
        return PeerRefused(str(refusal(share, "prepayment-required")), peer_code="prepayment-required",
                           peer_missing=micro)

    other = Identity.generate().id
    _, hint, _ = summarise_refusals([(B, 1, missing(1, 42)), (other, 2, missing(2, 1_000_000)), (B, 4, missing(4, 42))])
    # what both of B's shares miss, as credits: a stranger's figure, said as its claim, not put in the command
    assert hint.endswith(f"xsc ledger prepay {B} CREDITS (it says its shares miss 0.000084 credits)"), hint


def test_verbose_prints_the_details_after_the_line(capsys) -> None:
    @click.command()
    def fails() -> None:
        message, hint, details = summarise_refusals([(B, 3, refusal(3, "quota-exceeded"))])
        raise PeerError(message, hint=hint, refusals=details)

    for verbose in (False, True):
        output.VERBOSE = verbose
        with pytest.raises(SystemExit):
            output.run_cli(fails, [])
        err = capsys.readouterr().err
        assert err.startswith(f"xsc: error: node {B} refused share 3 (quota-exceeded)")
        assert ("must prepay" in err) is verbose and (len(err.strip().splitlines()) == 1) is not verbose
    output.VERBOSE = False
