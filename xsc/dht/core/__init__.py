"""The hash table core: signed node, holders and provider records and their bundles.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
