"""Peer membership and probes: who the other nodes are, where, and whether they are up.

    PeerService      the directory of signed node descriptors (LevelDB), joining, gossip; `peers()`,
                     `peer(id)`, `availability(id)`, `request(...)` for the rest of the node
    HealthService    signed challenge probes of every peer on a schedule, availability per peer,
                     audit results kept with the probe history
    NodeDescriptor, make_descriptor, parse_descriptor   the signed descriptor (pure)

The pure statistics and challenge rules live in xsc.health; the routes in node/http/peers.py and
node/http/health.py.
"""

from .core.descriptors import NodeDescriptor, make_descriptor, newer, newsworthy, parse_descriptor
from .probes import HealthService
from .service import PeerDirectory, PeerService

__all__ = ["HealthService", "NodeDescriptor", "PeerDirectory", "PeerService", "make_descriptor", "newer",
           "newsworthy", "parse_descriptor"]
