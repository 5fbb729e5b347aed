"""The bucket core: listings, ETags and the rules for names.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
