"""HTTP between nodes: every outbound request signed with this node's key, and the node's sockets.

    PeerClient, PeerResponse     the signed client (peer_session: its aiohttp session, KEEPALIVE its keep-alive;
                                 every socket under peers.congestion: net/congestion.py; read_into's and Kept's
                                 connects raced by a second attempt when not made within 250 ms: net/dial.py)
    compute: InvokeBatcher, post_invoke, push_module   paid invokes on another node (compute/paid.py uses them)
    jobs: begin, send, run, fetch, forget               a job run on another node (compute/sent_jobs.py)
    sniff                        TLS told from plain HTTP on the node's one port (xsc/serve/listener.py)

Services receive the client in their constructors; nothing here knows the aiohttp server side.
"""

from .peer_client import KEEPALIVE, PeerClient, PeerResponse, peer_session

__all__ = ["KEEPALIVE", "PeerClient", "PeerResponse", "peer_session"]
