"""The ledger core: the canonical encoding of entries, the rules that check them, prices and the Merkle tree over entries.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
