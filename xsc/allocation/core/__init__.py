"""The allocation core: models and signed records, recognition, the provider and recipient rounds, convergence, damping, division, causality, subscriptions and the simulator.

Pure: no I/O; imports only the ground and other cores (tests/test_architecture.py)."""
