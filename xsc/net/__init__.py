"""Outbound HTTP to other nodes: every request signed with this node's key.

    PeerClient, PeerResponse     the signed client (one aiohttp ClientSession per node)
    RemoteHolder                 one share holder on another node (storage/wire.py is the protocol)
    ask_receipt, fetch_receipt,  settlement across nodes, client side (ledger/settlement.py uses them)
    check_receipt
    compute: InvokeBatcher, post_invoke, push_module   paid invokes on another node (compute/paid.py uses them)

Services receive these objects in their constructors; nothing here knows the aiohttp server side.
"""

from .holders import RemoteHolder
from .peer_client import PeerClient, PeerResponse
from .receipts import RECEIPTS_PATH, ask_receipt, check_receipt, fetch_receipt

__all__ = ["PeerClient", "PeerResponse", "RECEIPTS_PATH", "RemoteHolder", "ask_receipt", "check_receipt",
           "fetch_receipt"]
