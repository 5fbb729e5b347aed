"""The signed challenge/response of a probe: the answer proves the responder holds its key, now.

The prober sends a fresh random nonce; the responder signs (nonce, prober id, responder id).
The nonce makes an old answer useless; the two ids keep an answer from being passed off as
another pair's (a node relaying a challenge to someone else cannot turn the answer into its own)."""

from __future__ import annotations

import os
from typing import Any

from ...errors import ChallengeFailed, InvalidArgument, shown
from ...identity import Identity, parse_public_id, verify

_TAG = b"XSC-CHALLENGE-1\n"
_HEX = frozenset("0123456789abcdef")


def new_nonce() -> str:
    return os.urandom(16).hex()


def check_nonce(nonce: Any) -> str:
    if not isinstance(nonce, str) or not 32 <= len(nonce) <= 128 or not set(nonce) <= _HEX:
        raise InvalidArgument("a challenge nonce must be 32 to 128 lower-case hex digits",
                              hint='send {"nonce": "<hex>"}')
    return nonce


def challenge_message(nonce: str, prober: str, responder: str) -> bytes:
    return _TAG + f"{nonce}\n{prober}\n{responder}".encode()


def answer(identity: Identity, nonce: str, prober: str) -> dict[str, str]:
    return {"node": identity.id, "nonce": nonce,
            "signature": identity.sign(challenge_message(nonce, prober, identity.id)).hex()}


def check_answer(reply: Any, *, nonce: str, prober: str, responder: str) -> None:
    """Raise ChallengeFailed unless `reply` is `responder`'s signature over this challenge."""
    if not isinstance(reply, dict) or not all(isinstance(reply.get(k), str) for k in ("node", "nonce", "signature")):
        raise ChallengeFailed("the challenge answer is malformed", node=responder)
    if reply["node"] != responder:
        raise ChallengeFailed(f"the node at this URL is {shown(reply['node'], 60)}, not {responder}", node=responder,
                              hint="the peer's data dir (and so its key) changed, or another node took its URL")
    if reply["nonce"] != nonce:
        raise ChallengeFailed("the challenge answer is for another nonce", node=responder)
    try:
        signature = bytes.fromhex(reply["signature"])
    except ValueError:
        raise ChallengeFailed("the challenge answer's signature is not hex", node=responder) from None
    if not verify(parse_public_id(responder), signature, challenge_message(nonce, prober, responder)):
        raise ChallengeFailed(f"the challenge answer is not signed by node {responder}", node=responder)
