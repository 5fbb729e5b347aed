"""Peer requests to a real node: unsigned, stale, replayed, wrongly signed and misaddressed ones get 401."""

from __future__ import annotations

import json
import time

import pytest

from xsc.config import https_url
from xsc.health import check_answer, new_nonce
from xsc.identity import HEADER_NODE, HEADER_SIGNATURE, Identity, sign_request
from xsc.peers.core.descriptors import make_descriptor

from tests.support.peers import api, http, known_ids, node_id

PATH = "/v1/peer/challenge"


@pytest.fixture
def target(node_process):
    node = node_process("target")
    return node, node_id(node)


def _challenge(signer: Identity, *, now_ms: int | None = None, receiver: str | None = None, path: str = PATH,
               nonce: str | None = None) -> tuple[bytes, dict[str, str], str]:
    nonce = nonce or new_nonce()
    body = json.dumps({"nonce": nonce}).encode()
    headers = sign_request(signer, "POST", path, body, receiver=receiver, now_ms=now_ms)
    return body, {**headers, "Content-Type": "application/json"}, nonce


def _refused(node, body: bytes, headers: dict[str, str], code: str, path: str = PATH) -> dict:
    status, problem = http(node.url, "POST", path, body, headers)
    assert status == 401 and problem["code"] == code, (status, problem)
    assert problem["status"] == 401 and problem["detail"]
    return problem


def test_a_signed_challenge_is_answered_once(target) -> None:
    node, node_key = target
    prober = Identity.generate()
    body, headers, nonce = _challenge(prober, receiver=node_key)
    status, reply = http(node.url, "POST", PATH, body, headers)
    assert status == 200, reply
    check_answer(reply, nonce=nonce, prober=prober.id, responder=node_key)
    assert reply["descriptor"]["id"] == node_key and reply["descriptor"]["url"] == https_url(node.url)
    # The very same request again: replayed.
    problem = _refused(node, body, headers, "replayed-request")
    assert "nonce" in problem["detail"]


def test_unsigned_stale_and_wrongly_signed_requests_are_refused(target) -> None:
    node, node_key = target
    prober, other = Identity.generate(), Identity.generate()
    problem = _refused(node, b'{"nonce": "00"}', {"Content-Type": "application/json"}, "unsigned-request")
    assert problem["hint"]
    now = int(time.time() * 1000)
    for skew in (-61_000, 61_000):
        body, headers, _ = _challenge(prober, now_ms=now + skew)
        assert "60 s" in _refused(node, body, headers, "stale-request")["detail"]
    # Signed by another key than the sender it names.
    body, headers, _ = _challenge(other)
    _refused(node, body, {**headers, HEADER_NODE: prober.id}, "bad-signature")
    # A body other than the one signed.
    body, headers, _ = _challenge(prober)
    _refused(node, json.dumps({"nonce": new_nonce()}).encode(), headers, "bad-signature")
    # A path other than the one signed, and a signature that is not one.
    body, headers, _ = _challenge(prober, path=PATH + "?x=1")
    _refused(node, body, headers, "bad-signature")
    body, headers, _ = _challenge(prober)
    _refused(node, body, {**headers, HEADER_SIGNATURE: "00" * 64}, "bad-signature")
    _refused(node, body, {**headers, HEADER_SIGNATURE: "zz"}, "bad-signature")
    # Addressed to another node: a request to one node cannot be replayed to another.
    body, headers, _ = _challenge(prober, receiver=other.id)
    _refused(node, body, headers, "misaddressed-request")
    # None of the refused requests used up a nonce: the properly signed one still passes.
    body, headers, _ = _challenge(prober)
    assert http(node.url, "POST", PATH, body, headers)[0] == 200
    # The signature covers the query string as sent.
    body, headers, _ = _challenge(prober, path=PATH + "?probe=1&x=%2F")
    assert http(node.url, "POST", PATH + "?probe=1&x=%2F", body, headers)[0] == 200


def test_a_descriptor_whose_id_is_not_its_signing_key_is_refused(target) -> None:
    node, _ = target
    sender, honest, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    now = int(time.time() * 1000)
    fields = {"url": "http://127.0.0.1:1", "capacity": 10, "free": 10, "version": "0.1.0", "timestamp": now}
    forged = {**make_descriptor(mallory, **fields).to_json(), "id": honest.id}

    def send(descriptors: list[dict]) -> tuple[int, dict]:
        body = json.dumps({"descriptors": descriptors}).encode()
        headers = sign_request(sender, "POST", "/v1/peer/descriptors", body)
        return http(node.url, "POST", "/v1/peer/descriptors", body, {**headers, "Content-Type": "application/json"})

    good = make_descriptor(honest, **{**fields, "url": "http://127.0.0.1:2"}).to_json()
    status, problem = send([good, forged])
    assert status == 422 and problem["code"] == "invalid-descriptor", problem
    assert honest.id in problem["detail"] and "not signed by that node's key" in problem["detail"]
    assert known_ids(node) == set()  # one bad descriptor refuses the whole message

    status, reply = send([good])
    assert status == 200 and reply["self"]["id"] == node_id(node)
    assert known_ids(node) == {honest.id}
    assert api(node, "GET", "/v1/peers")[1]["peers"][0]["url"] == "http://127.0.0.1:2"
