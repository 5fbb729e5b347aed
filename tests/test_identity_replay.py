"""The replay guard under a flood: per-sender quotas with 429 and Retry-After, a bounded cache that never
forgets a nonce it could be replayed with, and no lockout of honest peers; malformed timestamps are 400."""

from __future__ import annotations

import http.client as httplib
import json
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.errors import MalformedHeader, ReplayedRequest, QuotaExceeded
from xsc.identity import (HEADER_TIMESTAMP, SIGNATURE_WINDOW_MS, Identity, ReplayGuard, sign_request,
                          verify_request)

NOW = 1_700_000_000_000
SENDERS = [Identity.generate().id for _ in range(4)]


def test_one_sender_past_its_quota_gets_429_and_the_others_go_on() -> None:
    guard = ReplayGuard(capacity=100, per_sender=3)
    for n in range(3):
        guard.check(SENDERS[0], f"{n:032x}", NOW + n * 1000, NOW + n * 1000)
    with pytest.raises(QuotaExceeded) as err:
        guard.check(SENDERS[0], "f" * 32, NOW + 3000, NOW + 3000)
    # Its oldest nonce (stamped NOW) is forgotten when it leaves the window: 57 s from now.
    assert err.value.details["retry_after"] == (SIGNATURE_WINDOW_MS - 3000) // 1000
    guard.check(SENDERS[1], "f" * 32, NOW + 3000, NOW + 3000)
    guard.check(SENDERS[0], "f" * 32, NOW + SIGNATURE_WINDOW_MS + 2, NOW + SIGNATURE_WINDOW_MS + 2)


def test_a_full_cache_makes_the_biggest_sender_forget_not_the_honest_one() -> None:
    guard = ReplayGuard(capacity=10, per_sender=10)
    for n in range(10):
        guard.check(SENDERS[0], f"{n:032x}", NOW + n, NOW + n)
    guard.check(SENDERS[1], "a" * 32, NOW + 10, NOW + 10)  # honest: accepted, the flooder forgot its oldest
    guard.check(SENDERS[1], "b" * 32, NOW + 11, NOW + 11)
    assert len(guard) == 10
    with pytest.raises(ReplayedRequest):  # what the flooder forgot cannot be replayed: its floor refuses it
        guard.check(SENDERS[0], f"{0:032x}", NOW, NOW + 12)
    for nonce in ("a", "b"):  # the honest sender's nonces are all still remembered
        with pytest.raises(ReplayedRequest):
            guard.check(SENDERS[1], nonce * 32, NOW + 10, NOW + 12)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12), st.integers(-3000, 3000),
                                 st.integers(0, 4000)), max_size=120),
       capacity=st.integers(1, 8), per_sender=st.integers(1, 5))
def test_no_request_is_ever_accepted_twice_and_memory_stays_bounded(events, capacity, per_sender) -> None:
    """events: (sender, nonce, timestamp skew, time passing); the window is short so nonces do expire."""
    window = 5000
    guard = ReplayGuard(window_ms=window, capacity=capacity, per_sender=per_sender)
    now = NOW
    accepted: set[tuple[str, str, int]] = set()
    for who, nonce_number, skew, step in events:
        sender, nonce, timestamp = SENDERS[who], f"{nonce_number:032x}", now + skew
        if abs(now - timestamp) > window:
            continue  # the freshness check (verify_request) refuses these before the guard
        try:
            guard.check(sender, nonce, timestamp, now)
        except ReplayedRequest:
            pass
        except QuotaExceeded as err:
            assert err.details["retry_after"] >= 1
        else:
            # A replay is the same signed request: same sender, nonce and timestamp (another timestamp needs
            # another signature).  It is never accepted again while it would pass the freshness check.
            assert (sender, nonce, timestamp) not in accepted, "a replay was accepted"
            accepted.add((sender, nonce, timestamp))
        assert len(guard) == sum(len(r.nonces) for r in guard._senders.values()) <= capacity
        assert all(len(r.nonces) <= per_sender for r in guard._senders.values())
        assert len(guard._senders) <= 2 * capacity  # senders holding nonces, and at most as many floors
        now += step


def test_a_timestamp_in_other_digits_is_a_malformed_header_not_a_crash() -> None:
    alice = Identity.generate()
    for stamp in ("²", "١٢٣", "１２３", "12²"):  # str.isdigit() says yes to all of these
        headers = {**sign_request(alice, "POST", "/v1/peer/x", b""), HEADER_TIMESTAMP: stamp}
        with pytest.raises(MalformedHeader, match="milliseconds since the epoch"):
            verify_request(headers, "POST", "/v1/peer/x", receiver=alice.id)


# --- on a real node ------------------------------------------------------------------------------
def _post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, dict]:
    parts = urlsplit(url)
    conn = httplib.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data)
    finally:
        conn.close()


def _challenge(node, signer: Identity, receiver: str, **header_changes) -> tuple[int, dict, dict]:
    path = "/v1/peer/challenge"
    body = json.dumps({"nonce": "ab" * 16}).encode()
    headers = {**sign_request(signer, "POST", path, body, receiver=receiver), **header_changes,
               "Content-Type": "application/json"}
    return _post(node.url, path, body, headers)


@pytest.mark.slow
def test_a_flooding_sender_gets_429_and_honest_peers_are_still_served(node_process) -> None:
    from tests.support.peers import node_id

    node = node_process("target", env={"XSC_PEERS_REPLAY_PER_SENDER": "20", "XSC_PEERS_REPLAY_CAPACITY": "60"})
    receiver = node_id(node)
    flooder, honest = Identity.generate(), Identity.generate()
    statuses = []
    for _ in range(25):
        status, headers, body = _challenge(node, flooder, receiver)
        statuses.append(status)
    assert statuses[:20] == [200] * 20 and set(statuses[20:]) == {429}, statuses
    assert body["code"] == "quota-exceeded" and int(headers["Retry-After"]) >= 1, (headers, body)
    # Fresh keys filling the whole cache do not lock the honest peer out either.
    for _ in range(70):
        status, _, body = _challenge(node, Identity.generate(), receiver)
        assert status == 200, body
    for _ in range(3):
        status, _, body = _challenge(node, honest, receiver)
        assert status == 200, body
    status, _, body = _challenge(node, honest, receiver, **{HEADER_TIMESTAMP: "²"})
    assert status == 400 and body["code"] == "malformed-header", body
    assert node.proc.poll() is None


def test_a_sender_that_only_had_a_floor_is_remembered_again() -> None:
    """Found by the property above: making room must not drop the record of the sender being served."""
    guard = ReplayGuard(capacity=1, per_sender=1)
    guard.check(SENDERS[0], "0" * 32, NOW, NOW)
    guard.check(SENDERS[1], "0" * 32, NOW + 1, NOW + 1)  # SENDERS[0] forgets, keeps a floor
    guard.check(SENDERS[0], "0" * 32, NOW + 1, NOW + 1)  # SENDERS[1] forgets; SENDERS[0] is back
    with pytest.raises(ReplayedRequest):
        guard.check(SENDERS[0], "0" * 32, NOW + 1, NOW + 2)
    guard.check(SENDERS[2], "0" * 32, NOW + 2, NOW + 2)  # room is made from SENDERS[0] again
    assert len(guard) == 1
