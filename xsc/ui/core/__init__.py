"""The dashboard core: sessions and their CSRF tokens.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
