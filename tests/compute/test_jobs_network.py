"""A job's outputs on six real nodes: stored like any put (one share on each node), read back with two down."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.compute import WASM
from tests.support.peers import FAST, known_ids, node_id
from tests.support.waiting import eventually


@pytest.mark.slow
def test_three_outputs_read_back_byte_exact_with_two_nodes_killed(node_process, tmp_path: Path) -> None:
    gateway = node_process("n0", env=FAST)
    others = [node_process(f"n{i}", extra_args=["--peer", gateway.url], env=FAST) for i in range(1, 6)]
    ids = [node_id(n) for n in others]
    eventually(lambda: known_ids(gateway) >= set(ids), "the gateway to know the other five nodes")
    data = os.urandom(300_000)
    run = gateway.xsc("compute", "run", str(WASM / "outputs.wasm"), "--json", input=data)
    assert run.returncode == 0, run.stderr
    outputs = {o["name"]: o["capability"] for o in json.loads(run.stdout)["outputs"]}
    expected = {"out/a.txt": b"alpha\n", "out/b.txt": b"bravo bravo\n", "out/c.txt": data}
    assert sorted(outputs) == sorted(expected)
    for cap in outputs.values():  # each output placed as a put is: one share on each of the six nodes
        shares = json.loads(gateway.xsc("store", "check", cap, "--json").stdout)["shares"]
        assert len({s["node"] for s in shares}) == 6
    for victim in others[:2]:
        victim.kill()
    for name, cap in outputs.items():
        out = tmp_path / name.replace("/", "_")
        got = gateway.xsc("store", "get", cap, "-o", str(out))
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == expected[name]
