"""Outbound HTTP to other nodes: every request signed with this node's key.

    PeerClient, PeerResponse     the signed client (one aiohttp ClientSession per node)
    compute: InvokeBatcher, post_invoke, push_module   paid invokes on another node (compute/paid.py uses them)

Services receive these objects in their constructors; nothing here knows the aiohttp server side.
"""

from .peer_client import PeerClient, PeerResponse

__all__ = ["PeerClient", "PeerResponse"]
