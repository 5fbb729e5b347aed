"""The storage core: capabilities, encryption, erasure coding, the share layout, manifests, Merkle trees, placement, leases, ranges and the wire limits.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
