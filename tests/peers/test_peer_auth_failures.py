"""Failed peer authentications cost their address: a stranger sending peer requests whose signature does not check,
or from an id this node does not admit, is refused (429, Retry-After) past node.auth_failure_limit's burst before its
signatures are checked, whatever it signs; a peer at another address is served, and so is the user's API."""

from __future__ import annotations

import json

from aiohttp import ClientSession, TCPConnector

from xsc.health import new_nonce
from xsc.identity import HEADER_NODE, Identity, id_difficulty, sign_request
from xsc.node import IDENTITY, TOKEN
from xsc.node.auth import FAILURE_BURST

PATH = "/v1/peer/challenge"
BITS = 4  # the proof of work the node asks of peer ids


def _challenge(signer: Identity, receiver: str, sender: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A signed challenge; `sender`: the id its header names instead of the signer's (a forged signature)."""
    body = json.dumps({"nonce": new_nonce()}).encode()
    headers = {**sign_request(signer, "POST", PATH, body, receiver=receiver), "Content-Type": "application/json"}
    if sender is not None:
        headers[HEADER_NODE] = sender
    return body, headers


async def test_an_address_failing_peer_authentication_is_refused_before_its_signatures_are_checked(
        node_factory) -> None:
    node = await node_factory(node={"auth_failure_limit": 0.001}, peers={"min_difficulty": BITS})  # none forgiven
    target, url = node.app[IDENTITY].id, str(node.make_url(PATH))
    admitted, forger = Identity.mint(BITS), Identity.mint(BITS)
    unadmitted = next(i for i in iter(Identity.generate, None) if id_difficulty(i.public_key) < BITS)
    failures = [(_challenge(forger, target, sender=admitted.id), 401, "bad-signature"),
                (_challenge(unadmitted, target), 403, "not-admitted")]
    async with ClientSession(connector=TCPConnector(local_addr=("127.0.0.2", 0), force_close=True)) as elsewhere:
        for i in range(FAILURE_BURST):
            (body, headers), status, code = failures[i % 2]
            async with elsewhere.post(url, data=body, headers=headers) as answer:
                problem = await answer.json()
                assert (answer.status, problem["code"]) == (status, code), (i, answer.status, problem)
        # Past them: refused before its signature is looked at, a right one too.
        async with elsewhere.post(url, data=(signed := _challenge(admitted, target))[0], headers=signed[1]) as answer:
            problem = await answer.json()
            assert answer.status == 429 and int(answer.headers["Retry-After"]) >= 1, (answer.status, problem)
            assert "too many failed authentications from address 127.0.0.2" in problem["detail"], problem
    # Another address is served, its peer request and the user's API alike (a count of its own, not the user's).
    body, headers = _challenge(admitted, target)
    async with ClientSession() as here:
        async with here.post(url, data=body, headers=headers) as answer:
            assert answer.status == 200, await answer.text()
    async with ClientSession(connector=TCPConnector(local_addr=("127.0.0.2", 0))) as elsewhere:
        async with elsewhere.get(str(node.make_url("/v1/node/status")),
                                 headers={"Authorization": f"Bearer {node.app[TOKEN]}"}) as answer:
            assert answer.status == 200
