"""XSC: a peer-to-peer storage-and-compute node."""

__version__ = "0.1.0"
