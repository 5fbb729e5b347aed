"""Web functions placed on a provider, client side (compute/placements.py; the provider: compute/placed_functions.py).

    POST   /v1/peer/compute/functions        {"function": {name, module, entrypoint, inputs, env, limits, max_body,
                                              concurrency}, "price", "memory_price", "authorization", "deal",
                                              "mounting" (the most the tab pays for reading its files)}
                                             -> 201 {"url", "authorization"}   (404 module-not-found: push it)
                                             the same function again with a new authorization: its next tab
    GET    /v1/peer/compute/functions/NAME   -> {"url", "tab": {"authorization", "total", "count", "compiles",
                                                 "mounts"}}
    DELETE /v1/peer/compute/functions/NAME   the provider serves it no more

Only the node that placed a function may touch it; callers reach it at the provider's web listener under
/fn/OWNER_ID/NAME/.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .peer_client import PeerClient, PeerResponse

FUNCTIONS_PATH = "/v1/peer/compute/functions"
FUNCTION_PATH = FUNCTIONS_PATH + "/{name}"
PLACE_TIMEOUT = 120.0  # seconds a placement may take (the provider reads the function's stored files first)
# Bytes of a provider's answer read at most: a URL (the caller takes none past 2,048 characters), an authorization's
# id, a name and a few counters.
FUNCTION_ANSWER = 16 * 1024
_URL_TEXT = re.compile(r"[!-~]+")  # printable ASCII, no space


async def place(client: PeerClient, url: str, provider: str, owner: str, body: dict[str, Any]) -> str:
    """Place (or renew) `owner`'s function on `provider`; the URL it serves it at."""
    response = await client.request(url, "POST", FUNCTIONS_PATH, json=body, to=provider, timeout=PLACE_TIMEOUT,
                                    max_size=FUNCTION_ANSWER)
    return _url(url, response, owner, body["function"]["name"])


async def status(client: PeerClient, url: str, provider: str, owner: str, name: str) -> dict[str, Any]:
    response = await client.request(url, "GET", FUNCTION_PATH.format(name=name), to=provider,
                                    max_size=FUNCTION_ANSWER)
    _url(url, response, owner, name)
    return response.json()


async def withdraw(client: PeerClient, url: str, provider: str, name: str) -> None:
    await client.request(url, "DELETE", FUNCTION_PATH.format(name=name), to=provider, max_size=FUNCTION_ANSWER)


def _url(url: str, response: PeerResponse, owner: str, name: str) -> str:
    """The URL a provider says it serves `owner`'s function `name` at.  It goes into the `Location` of the owner's
    redirects: a CR or LF there would split them, and any space, control or non-ASCII character is no URL's (RFC
    3986).  Its host is the provider's to say (a public URL in front of its listener), its path is not: one that
    is not /fn/OWNER/NAME/ would send the owner's callers to a page the provider chose.  An answer without such a
    URL is no placement's: struck against the provider (net/peer_client.py)."""
    answer = response.json()
    served = answer.get("url") if isinstance(answer, dict) else None
    if not isinstance(served, str) or not served.startswith(("http://", "https://")) or len(served) > 2048 \
            or not _URL_TEXT.fullmatch(served):
        raise response.shapeless(f"provider {url} answered a placement without the URL it serves it at", url=url)
    parts = urlsplit(served)
    if not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc \
            or not parts.path.endswith(f"/fn/{owner}/{name}/"):
        raise response.shapeless(f"provider {url} answered a placement with a URL that is not its "
                                 f"/fn/{owner}/{name}/: {served[:200]!r}", url=url)
    return served


__all__ = ["FUNCTION_ANSWER", "FUNCTIONS_PATH", "FUNCTION_PATH", "place", "status", "withdraw"]
