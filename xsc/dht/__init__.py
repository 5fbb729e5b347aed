"""The hash table: finding a node, and the holders of a file, without knowing every node (Kademlia, by the
`kademlia` package over UDP).

    DhtService       this node in the table: joins through known peers, publishes its node record and the
                     holders of the files it places; `find_holders(si)`, `find_node(id)`, `status()`
    records          what the table holds (signed node and holders records, merged bundles; pure)
    table            the library's protocol with a stranger's datagrams checked, the bounded store, counted lookups

How it fits: docs/peers.md ("Finding things without knowing everyone").
"""

from .core import records
from .service import DhtService

__all__ = ["DhtService", "records"]
