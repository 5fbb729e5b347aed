"""The peers core: signed node descriptors.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
