"""`xsc devnet up|status|down` with three real nodes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.support.nodes import run_xsc
from tests.support.peers import FAST, http


def _running(pid: int) -> bool:
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except FileNotFoundError:
        return False
    return state.split()[1] != "Z"  # a zombie has exited; only its parent has not collected it yet


@pytest.mark.slow
def test_devnet_up_status_down(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    dev = ["--dir", str(root)]
    try:
        up = run_xsc("devnet", "up", "-n", "3", *dev, "--json", env=FAST, timeout=120)
        assert up.returncode == 0, up.stderr
        assert b"warning" not in up.stderr  # every node learned of the other two before `up` returned
        nodes = json.loads(up.stdout)
        assert len({n["id"] for n in nodes}) == 3 and len({n["url"] for n in nodes}) == 3

        status = run_xsc("devnet", "status", *dev, "--json")
        listed = json.loads(status.stdout)
        assert [n["id"] for n in listed] == [n["id"] for n in nodes]
        for node in listed:
            assert {"id", "url", "pid", "data_dir", "up"} <= set(node) and node["up"] is True
            assert Path(node["data_dir"]).parent == root
            assert http(node["url"], "GET", "/health")[1]["serviceId"] == node["id"]
        # Each node is a node like any other: the CLI talks to it through its data dir.
        peers = json.loads(run_xsc("--data-dir", listed[2]["data_dir"], "peers", "ls", "--json").stdout)
        assert {p["id"] for p in peers["peers"]} == {listed[0]["id"], listed[1]["id"]}

        again = run_xsc("devnet", "up", "-n", "3", *dev)
        assert again.returncode == 1 and b"already in" in again.stderr and b"xsc devnet down" in again.stderr

        os.kill(listed[1]["pid"], signal.SIGKILL)
        text = run_xsc("devnet", "status", *dev).stdout.decode()
        assert "2 of 3 nodes up" in text and "DOWN" in text

        down = run_xsc("devnet", "down", *dev, "--json")
        assert down.returncode == 0 and json.loads(down.stdout)["stopped"] == 2
        assert not any(_running(node["pid"]) for node in listed)
        gone = run_xsc("devnet", "status", *dev)
        assert gone.returncode == 1 and b"is stopped" in gone.stderr and b"xsc devnet up -n 3 --dir" in gone.stderr
        # The data dirs stay: the next `up` brings back the same nodes (on new ports), peered again.
        again = run_xsc("devnet", "up", "-n", "3", *dev, "--json", env=FAST, timeout=120)
        assert again.returncode == 0 and b"warning" not in again.stderr, again.stderr
        assert [n["id"] for n in json.loads(again.stdout)] == [n["id"] for n in nodes]
    finally:
        run_xsc("devnet", "down", *dev, "--timeout", "5")
