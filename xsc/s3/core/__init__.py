"""The S3 core: SigV4, the XML bodies, the stored headers and the routing table of operations.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
