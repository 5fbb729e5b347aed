"""Helpers shared by the tests (fixtures stay in the conftest.py files and build on these).

- `nodes`: in-process nodes (a config in a temp dir, an app served on a free port behind a TestClient) and
  node processes (`NodeProcess`, `Devnet`, `free_port`, `run_xsc` from `xsc.devnet`, the library that also
  serves `xsc devnet` and the benches).
- `cli`: the click app run in-process against a node (`invoke`), for CLI tests that need no process of their own.
- `peers`: raw HTTP to a node process, the fast gossip/probe settings, `eventually`, a gateway with peers,
  `dialled_from_here` (a loopback server's own connections told from other processes' strays).
- `blocks`: corrupting a stored block of a stopped node.
- `shares`: a file encrypted and erasure-coded as a gateway does it (to place shares by hand).
- `compute`: the wasm fixtures and HTTP wrappers to deploy and invoke.
- `ledger`: a LedgerStore on a real LevelDB and signed transfers; `ledger_burst`, `ledger_node`: scripts the
  ledger tests run as processes.
- `market`: order, ask and bid builders.
- `allocation`: hypothesis strategies for slots and networks.
- `http_stub`: a stand-in for a node on a free port, answering what a test's handler says (client tests).
- `calls`: work counted in Python calls (a cost that grows with what it should, timed by nothing).
- `source`: the statements of a parsed module, for the tests that read the code.
"""
