"""A node as users run it: first start, a second node on one data dir, signals, status, node not running."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from xsc.devnet import node_environ
from xsc.paths import lock_holder

from tests.support.nodes import NodeProcess, free_port, run_xsc, start_xsc, xsc_command
from tests.support.waiting import eventually


def test_first_start_creates_the_data_dir(node_process) -> None:
    node = node_process()
    for name in ("node.key", "client.key", "api-token"):
        assert stat.S_IMODE((node.data_dir / name).stat().st_mode) == 0o600
    config = tomllib.loads((node.data_dir / "config.toml").read_text())
    assert config["node"] == {"listen": f"127.0.0.1:{node.port}"}  # the defaults, commented out, but --listen: kept
    assert (node.data_dir / "node.url").read_text().strip() == f"http://127.0.0.1:{node.port}"
    assert (node.data_dir / "db").is_dir()
    status = json.loads(node.xsc("node", "status", "--json").stdout)
    assert status["listen"] == f"127.0.0.1:{node.port}" and status["version"] == "0.1.0"
    assert status["storage"]["free"] == status["storage"]["capacity"]
    text = node.xsc("node", "status").stdout.decode()
    assert status["id"] in text and "capacity:" in text


def test_a_second_node_on_the_same_data_dir_is_refused(node_process) -> None:
    node = node_process()
    result = run_xsc("--data-dir", str(node.data_dir), "node", "start", "--listen", f"127.0.0.1:{free_port()}",
                     timeout=30)
    assert result.returncode == 1
    assert b"another node is already running on data dir" in result.stderr
    assert b"saved in config.toml" not in result.stderr  # the running node's address is left as it is
    assert tomllib.loads((node.data_dir / "config.toml").read_text())["node"]["listen"] == f"127.0.0.1:{node.port}"


@pytest.mark.slow
def test_a_first_start_holds_the_data_dir_while_it_mints_the_nodes_id(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    # 2^40 keys to try, the most the config takes: it mints for ever (at 2^26 a lucky key came within the test, now
    # and then), and is stopped long before
    minting = start_xsc("--data-dir", str(data_dir), "node", "start", "--listen", f"127.0.0.1:{free_port()}",
                        env=node_environ({"XSC_PEERS_MIN_DIFFICULTY": "40"}), stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: lock_holder(data_dir) == minting.pid, "the first start to hold the data dir", 30)
        status = run_xsc("--data-dir", str(data_dir), "node", "status")
        assert status.returncode == 1
        assert status.stderr.decode().splitlines() == [
            f"xsc: error: the node on {data_dir} (pid {minting.pid}) is still starting: no API token yet "
            "(a first start mints the node's id, some seconds; try again then)"]
        second = run_xsc("--data-dir", str(data_dir), "node", "start", "--listen", f"127.0.0.1:{free_port()}",
                         timeout=30)
        assert second.returncode == 1
        assert f"another node is already running on data dir {data_dir} (pid {minting.pid})" in second.stderr.decode()
        assert not (data_dir / "node.key").exists()  # the second minted nothing: no key replaced the first's
    finally:
        minting.terminate()
        minting.wait(30)


@pytest.mark.slow
def test_sigterm_and_sigint_shut_down_gracefully_and_keep_identity(node_process, tmp_path: Path) -> None:
    node = node_process()
    node_id = json.loads(node.xsc("node", "status", "--json").stdout)["id"]
    cap = node.xsc("store", "put", "-", input=b"kept").stdout.decode().strip()
    assert node.stop(signal.SIGTERM) == 0
    node.start()
    assert json.loads(node.xsc("node", "status", "--json").stdout)["id"] == node_id
    assert node.xsc("store", "get", cap).stdout == b"kept"
    assert node.stop(signal.SIGINT) == 0


def test_a_stop_says_what_it_waits_for_and_a_second_signal_stops_it_at_once_its_data_kept(node_process) -> None:
    """Ctrl-C (or SIGTERM) lets the requests in flight end, 30 s at most, and says which it waits for; a second
    one stops the node at once, as a stop that waited in vain would: the request cut short, nothing of it kept,
    and what was stored before read back whole at the next start."""
    node = node_process()
    cap = node.xsc("store", "put", "-", input=b"kept").stdout.decode().strip()
    held = socket.create_connection(("127.0.0.1", node.port), timeout=30)
    try:
        held.sendall(f"POST /v1/store/files HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {node.token}\r\n"
                     "Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n".encode())
        assert held.recv(4096).startswith(b"HTTP/1.1 100 Continue")  # its handler runs: a request in flight
        node.send(signal.SIGINT)
        eventually(lambda: b"stopping: waiting for 1 request in flight (POST /v1/store/files), 30 s at most "
                           b"(a second SIGINT or SIGTERM stops at once)" in node.log.read_bytes(),
                   "the stop to say what it waits for")
        assert node.stop(signal.SIGINT, timeout=20) == 0  # (a deadline against a hang: unforced, it would wait 30 s)
        assert held.recv(4096) == b""  # cut short, unanswered
    finally:
        held.close()
    assert b"stopping at once" in node.log.read_bytes() and b"Traceback" not in node.log.read_bytes()
    node.start()
    assert node.xsc("store", "get", cap).stdout == b"kept"
    listed = json.loads(node.xsc("store", "ls", "--json").stdout)
    assert [f["capability"] for f in listed] == [cap], listed


def test_node_not_running_says_how_to_start_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "never"
    result = run_xsc("--data-dir", str(data_dir), "node", "status")
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and b"xsc node start" in result.stderr

    node = NodeProcess(tmp_path / "stopped", free_port()).start()
    node.stop()
    result = node.xsc("store", "ls")
    assert result.returncode == 1 and b"cannot reach the node at" in result.stderr and b"xsc node start" in result.stderr


def test_listen_address_in_use_is_a_clear_error(node_process) -> None:
    node = node_process()
    other = NodeProcess(node.data_dir.parent / "other", node.port)
    result = run_xsc("--data-dir", str(other.data_dir), "node", "start", "--listen", f"127.0.0.1:{node.port}",
                     timeout=30)
    assert result.returncode == 1 and b"cannot listen on" in result.stderr
    assert "listen" not in tomllib.loads((other.data_dir / "config.toml").read_text()).get("node", {})  # not kept


def test_an_api_token_file_that_holds_no_token_is_one_line_at_start(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", free_port()).start()
    node.stop()
    (node.data_dir / "api-token").write_bytes(b"\xff\xfe not a token\n")
    result = run_xsc("--data-dir", str(node.data_dir), "node", "start", "--listen", f"127.0.0.1:{node.port}",
                     timeout=30)
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().splitlines()[-1] == (f"xsc: error: {node.data_dir / 'api-token'} does not hold an "
                                                       "API token (delete it: a new one is written at start)")
    assert b"Traceback" not in result.stderr


def test_help_everywhere() -> None:
    for args in (["--help"], ["node", "--help"], ["node", "start", "--help"], ["store", "--help"],
                 ["store", "put", "--help"], ["store", "get", "--help"]):
        result = run_xsc(*args)
        assert result.returncode == 0 and b"Usage:" in result.stdout, args


@pytest.mark.slow
def test_sigterm_lets_an_in_flight_put_finish(node_process, tmp_path: Path) -> None:
    import os
    import subprocess

    node = node_process()
    src = tmp_path / "inflight.bin"
    data = os.urandom(40 * 1024 * 1024)
    src.write_bytes(data)
    put = start_xsc("--data-dir", str(node.data_dir), "store", "put", str(src), stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    # Once the put has reserved room (or, on a slow machine, has already finished):
    eventually(lambda: put.poll() is not None
               or json.loads(node.xsc("node", "status", "--json").stdout)["storage"]["reserved"] > 0,
               "the put to reserve room", 60, poll=0.02)
    node.proc.send_signal(signal.SIGTERM)
    out, err = put.communicate(timeout=60)
    assert put.returncode == 0, err
    assert node.proc.wait(60) == 0
    cap = out.decode().strip().splitlines()[-1]
    node.start()
    assert node.xsc("store", "get", cap).stdout == data


def test_a_node_restarted_without_listen_stays_where_it_listened(node_process) -> None:
    """--listen is kept (node.listen): a restart does not move the node to 7070, and `config show` and `node status`
    report where it listens; an environment override stays one-off."""
    node = node_process()
    node.stop()
    again = NodeProcess(node.data_dir, node.port, env=node.env)
    again.command = lambda: [*xsc_command(), "--data-dir", str(node.data_dir), "node", "start"]  # no --listen
    again.start(90)
    try:
        address = f"127.0.0.1:{node.port}"
        assert json.loads(again.xsc("node", "status", "--json").stdout)["listen"] == address
        shown = json.loads(again.xsc("config", "show", "--json").stdout)
        assert shown["config"]["node"]["listen"] == address and shown["sources"]["node.listen"] == "file"
    finally:
        again.stop()
