"""Request signatures, the replay guard, node descriptors and challenges: the pure parts."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.errors import (BadRequestSignature, ChallengeFailed, InvalidDescriptor, MisaddressedRequest,
                        ReplayedRequest, StaleRequest, UnsignedRequest)
from xsc.health import answer, check_answer, new_nonce
from xsc.identity import (HEADER_NODE, HEADER_SIGNATURE, HEADER_TIMESTAMP, SIGNATURE_WINDOW_MS, Identity,
                          ReplayGuard, body_digest, sign_request, verify_request)
from xsc.peers.core.descriptors import make_descriptor, newer, parse_descriptor

ALICE, BOB = Identity.generate(), Identity.generate()
NOW = 1_700_000_000_000
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE"])
targets = st.from_regex(r"/v1/peer/[a-z0-9/%._-]{0,40}(\?[a-z0-9=&%]{0,30})?", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(method=methods, target=targets, body=st.binary(max_size=200))
def test_a_signed_request_verifies_and_names_its_sender(method: str, target: str, body: bytes) -> None:
    headers = sign_request(ALICE, method, target, body, now_ms=NOW)
    signed = verify_request(headers, method, target, receiver=BOB.id, now_ms=NOW + 1000)
    assert signed.sender == ALICE.id and signed.sender_key == ALICE.public_key
    assert signed.digest == body_digest(body) and signed.timestamp == NOW


@settings(max_examples=60, deadline=None)
@given(method=methods, target=targets, field=st.sampled_from(["method", "target", "timestamp", "nonce", "digest",
                                                             "sender", "to"]))
def test_changing_any_signed_field_breaks_the_signature(method: str, target: str, field: str) -> None:
    headers = sign_request(ALICE, method, target, b"body", now_ms=NOW)
    if field == "method":
        method = "PATCH"
    elif field == "target":
        target += "x"
    elif field == "timestamp":
        headers[HEADER_TIMESTAMP] = str(NOW + 1)
    elif field == "nonce":
        headers["X-Xsc-Nonce"] = "0" * 32
    elif field == "digest":
        headers["X-Xsc-Content-Sha256"] = body_digest(b"other body")
    elif field == "sender":  # Bob claims Alice's signature
        headers[HEADER_NODE] = BOB.id
    else:
        headers["X-Xsc-To"] = BOB.id
    with pytest.raises(BadRequestSignature):
        verify_request(headers, method, target, receiver=BOB.id, now_ms=NOW)


def test_unsigned_stale_and_misaddressed_requests_are_refused() -> None:
    with pytest.raises(UnsignedRequest):
        verify_request({}, "POST", "/v1/peer/x", receiver=BOB.id, now_ms=NOW)
    partial = sign_request(ALICE, "POST", "/v1/peer/x", now_ms=NOW)
    del partial[HEADER_SIGNATURE]
    with pytest.raises(UnsignedRequest, match="X-Xsc-Signature"):
        verify_request(partial, "POST", "/v1/peer/x", receiver=BOB.id, now_ms=NOW)
    headers = sign_request(ALICE, "POST", "/v1/peer/x", now_ms=NOW)
    verify_request(headers, "POST", "/v1/peer/x", receiver=BOB.id, now_ms=NOW + SIGNATURE_WINDOW_MS)
    for skew in (SIGNATURE_WINDOW_MS + 1, -SIGNATURE_WINDOW_MS - 1):
        with pytest.raises(StaleRequest):
            verify_request(headers, "POST", "/v1/peer/x", receiver=BOB.id, now_ms=NOW + skew)
    to_carol = sign_request(ALICE, "POST", "/v1/peer/x", receiver=Identity.generate().id, now_ms=NOW)
    with pytest.raises(MisaddressedRequest):
        verify_request(to_carol, "POST", "/v1/peer/x", receiver=BOB.id, now_ms=NOW)
    to_bob = sign_request(ALICE, "POST", "/v1/peer/x", receiver=BOB.id, now_ms=NOW)
    assert verify_request(to_bob, "POST", "/v1/peer/x", receiver=BOB.id, now_ms=NOW).receiver == BOB.id


@settings(max_examples=100, deadline=None)
@given(events=st.lists(st.tuples(st.integers(0, 30), st.integers(-SIGNATURE_WINDOW_MS, SIGNATURE_WINDOW_MS),
                                 st.integers(0, 20_000)), max_size=80))
def test_the_replay_guard_accepts_each_nonce_once_while_fresh_and_forgets_it_after(events) -> None:
    """events: (nonce, timestamp skew from now, time passing before the next request)."""
    guard = ReplayGuard()
    now = NOW
    expiry: dict[str, int] = {}  # a model of what must be remembered
    for nonce_number, skew, step in events:
        nonce, timestamp = f"{nonce_number:032x}", now + skew
        remembered = nonce in expiry and expiry[nonce] >= now
        if remembered:
            with pytest.raises(ReplayedRequest):
                guard.check(ALICE.id, nonce, timestamp, now)
        else:
            guard.check(ALICE.id, nonce, timestamp, now)
            expiry[nonce] = timestamp + SIGNATURE_WINDOW_MS
        now += step
    guard._evict(now)
    # Bounded memory: only nonces whose request could still pass the freshness check are kept.
    assert len(guard) == sum(e >= now for e in expiry.values())


def test_the_replay_guard_never_forgets_a_nonce_it_could_be_replayed_with_when_full() -> None:
    guard = ReplayGuard(capacity=2)
    guard.check(ALICE.id, "a" * 32, NOW, NOW)
    guard.check(BOB.id, "a" * 32, NOW, NOW)  # nonces are per sender
    guard.check(ALICE.id, "b" * 32, NOW + 1, NOW + 1)  # full: one sender forgets its oldest, its floor rises
    assert len(guard) == 2
    for sender in (ALICE, BOB):  # whichever forgot, neither first request can be replayed
        with pytest.raises(ReplayedRequest):
            guard.check(sender.id, "a" * 32, NOW, NOW + 2)
    guard.check(ALICE.id, "c" * 32, NOW + 1, NOW + SIGNATURE_WINDOW_MS + 2)  # the first two expired


def _descriptor(identity: Identity, **changes):
    fields = {"url": "http://127.0.0.1:7071", "capacity": 100, "free": 60, "version": "0.1.0", "timestamp": NOW}
    return make_descriptor(identity, **{**fields, **changes})


def test_a_descriptor_is_valid_only_under_the_key_its_id_names() -> None:
    good = _descriptor(ALICE)
    assert parse_descriptor(good.to_json(), now_ms=NOW) == good
    forged = {**_descriptor(BOB).to_json(), "id": ALICE.id}  # Bob's signature, Alice's id
    with pytest.raises(InvalidDescriptor, match="not signed by that node's key"):
        parse_descriptor(forged, now_ms=NOW)
    for change in ({"url": "http://127.0.0.1:9999"}, {"free": 61}, {"timestamp": NOW + 1}):
        with pytest.raises(InvalidDescriptor):
            parse_descriptor({**good.to_json(), **change}, now_ms=NOW)
    for bad in ({"url": "ftp://x"}, {"free": 101}, {"timestamp": NOW + 3_600_000}):
        with pytest.raises(InvalidDescriptor):
            parse_descriptor(_descriptor(ALICE, **bad).to_json(), now_ms=NOW)
    with pytest.raises(InvalidDescriptor, match="missing"):
        parse_descriptor({k: v for k, v in good.to_json().items() if k != "version"}, now_ms=NOW)
    with pytest.raises(InvalidDescriptor):
        parse_descriptor({**good.to_json(), "capacity": 1.5}, now_ms=NOW)


def test_a_descriptor_as_json_is_every_field_and_its_grid_proof_only_when_it_has_one() -> None:
    for secret in ("", "grid secret"):
        d = make_descriptor(ALICE, url="http://127.0.0.1:7071", capacity=100, free=60, version="0.1.0", timestamp=NOW,
                            grid_secret=secret)
        whole = dataclasses.asdict(d)
        assert d.to_json() == (whole if secret else {k: v for k, v in whole.items() if k != "grid"})
        assert list(d.to_json()) == list(whole)[:len(d.to_json())]


@given(st.lists(st.integers(NOW, NOW + 10_000), min_size=1, max_size=8))
@settings(max_examples=30, deadline=None)
def test_the_newest_descriptor_wins_in_any_order(stamps: list[int]) -> None:
    descriptors = [_descriptor(ALICE, timestamp=t) for t in stamps]
    winners = []
    for order in (descriptors, descriptors[::-1]):
        best = None
        for d in order:
            if newer(d, best):
                best = d
        winners.append(best)
    assert winners[0] == winners[1] and winners[0].timestamp == max(stamps)


def test_a_challenge_answer_naming_another_node_is_quoted_on_one_line_without_control_characters() -> None:
    """What the node at a URL says it is reaches the probe's error, the health status and the log: its escape
    sequences and line breaks forge no line there."""
    nonce = new_nonce()
    forged = "\x1b[2J\nINFO xsc.peers: quarantined node " + "f" * 64 + "\r\u202e"
    with pytest.raises(ChallengeFailed) as failed:
        check_answer({**answer(BOB, nonce, ALICE.id), "node": forged}, nonce=nonce, prober=ALICE.id, responder=BOB.id)
    said = failed.value.message
    assert said.isprintable() and said.startswith("the node at this URL is [2J INFO xsc.peers: quarantined node "), said
    assert said.endswith(f"…, not {BOB.id}"), said


def test_a_challenge_answer_proves_the_responder_key_for_this_nonce_and_prober() -> None:
    nonce = new_nonce()
    reply = answer(BOB, nonce, ALICE.id)
    check_answer(reply, nonce=nonce, prober=ALICE.id, responder=BOB.id)
    carol = Identity.generate()
    with pytest.raises(ChallengeFailed, match="not"):
        check_answer(reply, nonce=nonce, prober=ALICE.id, responder=carol.id)  # someone else at Bob's URL
    with pytest.raises(ChallengeFailed):
        check_answer(reply, nonce=new_nonce(), prober=ALICE.id, responder=BOB.id)  # an old answer
    with pytest.raises(ChallengeFailed):
        check_answer(reply, nonce=nonce, prober=carol.id, responder=BOB.id)  # relayed from another prober
    with pytest.raises(ChallengeFailed):
        check_answer({**reply, "signature": answer(carol, nonce, ALICE.id)["signature"]}, nonce=nonce,
                     prober=ALICE.id, responder=BOB.id)
