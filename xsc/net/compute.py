"""A paid invoke on another node, client side: the call with its authorization, and the module if missing.

    POST /v1/peer/compute/invoke  {"call", "price", "authorization", "deal"} -> {"run", "receipt"[, "trap"]}
    PUT  /v1/peer/modules[?wasi=true]   the wasm bytes (content-addressed: its id is its hash)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import PeerRefused
from .peer_client import PeerClient

INVOKE_PATH = "/v1/peer/compute/invoke"
MODULES_PATH = "/v1/peer/modules"


async def post_invoke(client: PeerClient, url: str, provider: str, body: dict, wasm: Callable[[], bytes],
                      wasi: bool) -> dict[str, Any]:
    """Ask `provider` to run the call; a provider that lacks the module is sent it (`wasm()`) and asked once more.
    Returns its answer, checked to hold a run and a receipt (the receipt itself: Payments.complete)."""
    try:
        response = await client.request(url, "POST", INVOKE_PATH, json=body, to=provider)
    except PeerRefused as err:
        if err.details.get("peer_code") != "module-not-found":
            raise
        await client.request(url, "PUT", MODULES_PATH + ("?wasi=true" if wasi else ""), data=wasm(), to=provider)
        response = await client.request(url, "POST", INVOKE_PATH, json=body, to=provider)
    answer = response.json()
    if not isinstance(answer, dict) or not isinstance(answer.get("receipt"), str) or \
            not isinstance(answer.get("run"), dict):
        raise PeerRefused(f"provider {url} answered an invoke without a run and a receipt", url=url)
    return answer


__all__ = ["INVOKE_PATH", "MODULES_PATH", "post_invoke"]
