"""A paid invoke on another node, client side: the call with its authorization, and the module if missing.

    POST /v1/peer/compute/invoke  {"call", "price", "authorization", "deal"} -> {"run", "receipt"[, "trap"]}
    POST /v1/peer/compute/invoke  {..., "tab": true} -> {"run", "tab": {"authorization", "total", "count"}[, "trap"]}
    POST /v1/peer/compute/tabs/close  {"authorization"} -> {"receipt"}: the provider's receipt for the tab's total
    PUT  /v1/peer/modules[?wasi=true]   the wasm bytes (content-addressed: its id is its hash)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import PeerRefused
from .peer_client import PeerClient

INVOKE_PATH = "/v1/peer/compute/invoke"
MODULES_PATH = "/v1/peer/modules"
TAB_CLOSE_PATH = "/v1/peer/compute/tabs/close"


async def post_invoke(client: PeerClient, url: str, provider: str, body: dict, wasm: Callable[[], bytes],
                      wasi: bool) -> dict[str, Any]:
    """Ask `provider` to run the call; a provider that lacks the module is sent it (`wasm()`) and asked once more.
    Returns its answer, checked to hold a run and a receipt (the receipt itself: Payments.complete)."""
    try:
        response = await client.request(url, "POST", INVOKE_PATH, json=body, to=provider, kept=True)
    except PeerRefused as err:
        if err.details.get("peer_code") != "module-not-found":
            raise
        await client.request(url, "PUT", MODULES_PATH + ("?wasi=true" if wasi else ""), data=wasm(), to=provider)
        response = await client.request(url, "POST", INVOKE_PATH, json=body, to=provider, kept=True)
    answer = response.json()
    paid_by = "tab" if body.get("tab") else "receipt"
    if not isinstance(answer, dict) or not isinstance(answer.get(paid_by), (str, dict)) or \
            not isinstance(answer.get("run"), dict):
        raise PeerRefused(f"provider {url} answered an invoke without a run and a {paid_by}", url=url)
    return answer


async def close_tab(client: PeerClient, url: str, provider: str, authorization_hex: str) -> dict[str, Any]:
    """Ask `provider` for its receipt of everything it ran under a tab's authorization (checked by the caller)."""
    response = await client.request(url, "POST", TAB_CLOSE_PATH, json={"authorization": authorization_hex}, to=provider,
                                    kept=True)
    answer = response.json()
    if not isinstance(answer, dict) or not isinstance(answer.get("receipt"), str):
        raise PeerRefused(f"provider {url} closed a tab without a receipt", url=url)
    return answer


__all__ = ["INVOKE_PATH", "MODULES_PATH", "TAB_CLOSE_PATH", "close_tab", "post_invoke"]
