"""The market core: asks and bids, the signed commitments and the replicated book, the uniform-price auction, the ask policy, matching needs to capacity, supply caps and provider terms.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
