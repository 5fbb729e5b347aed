"""Settlement across nodes, client side: ask a payee's node for its receipt, or fetch the one it made.

    POST /v1/peer/ledger/receipts  {"authorization": hex, "amount": int, "usage": {...}, "job": str}
                                   -> {"receipt": hex}
    GET  /v1/peer/ledger/receipts/{authorization id hex} -> {"receipt": hex}, or 404 if it made none

Every receipt that comes back goes through `check_receipt`, whoever asked for it (ledger/settlement.py, and
compute's tabs on peers, compute/remote_tabs.py, and of placed functions, compute/placements.py): it must be
the payee's receipt for exactly this authorization, signed by it, and, when asked, exactly this amount and usage.  A receipt asked for here that does not check
(`answered_receipt`) proves its payee misbehaved: it is struck against the node the TLS handshake proved answered
(net/peer_client.py); a payee's refusal, an error status, is not.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import InvalidEntry, PeerRefused
from .core.model import Authorization, Receipt, decode_entry, encode_authorization, format_credits
from .core.rules import check_publishable, signature_ok
from ..net.peer_client import PeerClient, PeerResponse

RECEIPTS_PATH = "/v1/peer/ledger/receipts"
# Bytes of a payee's answer read at most: a receipt (its authorization of under 1 KiB, at most 8 meters of names up to
# 255 bytes, a signature: under 4 KiB) in hex.
RECEIPT_ANSWER = 16 * 1024


def check_receipt(node_id: str, data: Any, auth: Authorization, amount: int | None = None,
                  usage: dict[str, int] | None = None, *, meters: frozenset[str] | None = None,
                  optional: frozenset[str] = frozenset()) -> Receipt:
    """The receipt a payee sent back, checked to be for exactly what was asked: its authorization, its
    payee, at most the cap, and the amount and usage asked (or, for metered work, `meters` and maybe some of
    `optional`: a meter a payee counts only when there is some of it)."""
    try:
        receipt = decode_entry(bytes.fromhex(data["receipt"]))  # type: ignore[index]
        check_publishable(receipt)
    except (TypeError, KeyError, ValueError, InvalidEntry) as exc:
        raise PeerRefused(f"node {node_id} answered with no readable receipt: {exc}") from None
    if not isinstance(receipt, Receipt) or receipt.account != auth.payee:
        raise PeerRefused(f"node {node_id} answered with an entry that is not its receipt")
    if receipt.authorization.body != auth.body or receipt.authorization.signature != auth.signature:
        raise PeerRefused(f"node {node_id} answered with a receipt for another authorization")
    # The payee's own signature, checked here and not first by the ledger's `complete`: a receipt that does not hold
    # is the payee's misbehaviour, struck (`answered_receipt`), not an entry this node failed to append.
    if not signature_ok(receipt.signatures()[0]):
        raise PeerRefused(f"node {node_id} answered with a receipt whose signature does not hold")
    if receipt.amount > auth.cap:
        raise PeerRefused(f"node {node_id} countersigned {format_credits(receipt.amount)} credits, over the "
                          f"{format_credits(auth.cap)} authorized")
    if amount is not None and (receipt.amount, dict(receipt.usage)) != (amount, dict(sorted((usage or {}).items()))):
        raise PeerRefused(f"node {node_id} countersigned {format_credits(receipt.amount)} credits for "
                          f"{dict(receipt.usage)}, not the {format_credits(amount)} for {usage} asked")
    if meters is not None and not meters <= set(dict(receipt.usage)) <= meters | optional:
        also = f" (and maybe {sorted(optional)})" if optional else ""
        raise PeerRefused(f"node {node_id} countersigned usage {dict(receipt.usage)}, not of {sorted(meters)}{also}")
    return receipt


def answered_receipt(response: PeerResponse, node_id: str, auth: Authorization, amount: int | None = None,
                     usage: dict[str, int] | None = None, *, meters: frozenset[str] | None = None,
                     optional: frozenset[str] = frozenset()) -> Receipt:
    """`check_receipt` of a payee's answer: one that does not check is struck against the node that gave it."""
    answer = response.json()  # not JSON: struck there
    try:
        return check_receipt(node_id, answer, auth, amount, usage, meters=meters, optional=optional)
    except PeerRefused as exc:
        raise response.shapeless(exc.message, **exc.details) from None


def receipt_check(node_id: str, auth: Authorization, *, meters: frozenset[str],
                  optional: frozenset[str] = frozenset()) -> Callable[[PeerResponse], Receipt]:
    """The receipt of metered work read from its payee's answer (a tab's close: net/compute.py `close_tab`'s
    `check`), struck if it does not check."""
    return lambda response: answered_receipt(response, node_id, auth, meters=meters, optional=optional)


async def ask_receipt(client: PeerClient, url: str, payee_node_id: str, authorization: Authorization, amount: int,
                      usage: dict[str, int]) -> Receipt:
    """Ask the payee's node to countersign `amount` and `usage` under `authorization`; its receipt, checked.

    Raises PeerUnreachable (no answer: it may or may not have countersigned), PeerRefused (it refused)."""
    body = {"authorization": encode_authorization(authorization).hex(), "amount": amount, "usage": dict(usage),
            "job": authorization.job}
    response = await client.request(url, "POST", RECEIPTS_PATH, json=body, to=payee_node_id, max_size=RECEIPT_ANSWER)
    return answered_receipt(response, payee_node_id, authorization, amount, usage)


async def fetch_receipt(client: PeerClient, url: str, payee_node_id: str,
                        authorization: Authorization) -> Receipt | None:
    """The receipt the payee's node made for `authorization`, or None if it has made none."""
    try:
        response = await client.request(url, "GET", f"{RECEIPTS_PATH}/{authorization.id.hex()}", to=payee_node_id,
                                        max_size=RECEIPT_ANSWER)
    except PeerRefused as exc:
        if exc.details.get("peer_status") == 404:
            return None
        raise
    return answered_receipt(response, payee_node_id, authorization)


__all__ = ["RECEIPTS_PATH", "RECEIPT_ANSWER", "answered_receipt", "ask_receipt", "check_receipt", "fetch_receipt",
           "receipt_check"]
