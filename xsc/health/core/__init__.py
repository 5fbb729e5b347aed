"""The health core: a probe's signed challenge and answer, and availability from probe histories.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
