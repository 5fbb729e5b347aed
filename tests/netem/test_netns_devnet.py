"""`xsc devnet up --netns`: nodes in network namespaces behind emulated delay and loss, and nothing left after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from xsc import codec
from xsc.devnet import Devnet, xsc_command
from xsc.errors import DevnetError, InvalidArgument
from xsc.netem import namespaces
from xsc.netem.namespaces import NetnsNetwork

from tests.support.netns import needs_netns
from tests.support.nodes import run_xsc
from tests.support.peers import FAST
from tests.support.waiting import eventually


CONNECT_TIME = """
import socket, sys, time
started = time.monotonic()
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()
print(time.monotonic() - started)
"""


def test_without_root_it_is_refused_in_one_line(monkeypatch) -> None:
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 1000)
    with pytest.raises(DevnetError, match="--netns needs root"):
        namespaces.check()


def test_without_iptables_it_is_refused_in_one_line(monkeypatch) -> None:
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 0)
    monkeypatch.setattr(namespaces.shutil, "which", lambda tool: None if tool == "iptables" else "/usr/sbin/" + tool)
    with pytest.raises(DevnetError, match="needs the iptables command"):
        namespaces.check()


def test_delay_and_loss_need_netns_and_sane_values(tmp_path: Path) -> None:
    done = run_xsc("devnet", "up", "-n", "1", "--delay", "50ms", "--dir", str(tmp_path))
    assert done.returncode != 0 and b"--delay and --loss need --netns" in done.stderr
    done = run_xsc("devnet", "up", "-n", "1", "--netns", "--loss", "150%", "--dir", str(tmp_path))
    assert done.returncode != 0 and b"is not a share of 0 to 99%" in done.stderr and len(done.stderr.splitlines()) <= 2
    done = run_xsc("devnet", "up", "-n", "1", "--netns", "--delay", "soon", "--dir", str(tmp_path))
    assert done.returncode == 2 and b"invalid value for '--delay': not a duration: 'soon'" in done.stderr


@needs_netns
def test_a_delay_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="the delay is 0 to 10 s"):
        NetnsNetwork(tmp_path, 2, delay=11)


def _namespace_default(network: NetnsNetwork, index: int) -> str:
    return subprocess.run([*network.exec_prefix(index), "cat", "/proc/sys/net/ipv4/tcp_congestion_control"],
                          capture_output=True, text=True, check=True).stdout.strip()


@needs_netns
def test_the_namespaces_default_congestion_control_is_theirs_alone(tmp_path: Path) -> None:
    host = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    chosen = "reno" if host != "reno" else "bbr"
    network = NetnsNetwork(tmp_path, 2, congestion=chosen).up([])
    try:
        assert [_namespace_default(network, i) for i in range(2)] == [chosen, chosen]
        assert Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip() == host
    finally:
        network.down()
    assert network.leftovers() == []
    with pytest.raises(InvalidArgument, match="congestion control"):
        NetnsNetwork(tmp_path, 2, congestion="reno; reboot")
    with pytest.raises(DevnetError, match="tcp_congestion_control"):
        NetnsNetwork(tmp_path, 2, congestion="xsc_no_such_cc").up([])
    assert network.leftovers() == []


@needs_netns
def test_nodes_in_namespaces_store_and_read_behind_the_delay_and_leave_nothing(tmp_path: Path) -> None:
    delay = 0.05
    network = NetnsNetwork(tmp_path, 3, delay=delay, loss=0.01)
    net = Devnet(tmp_path, 3, env=FAST, network=network)
    try:
        net.start(90)
        assert [n.host for n in net] == [network.address(i) for i in range(3)]
        assert all(n.host.startswith("198.1") for n in net)
        eventually(lambda: not net.lagging(), "every node to know the others", timeout=90)
        # Node to node, the SYN and its answer each enter a delayed namespace: a connection takes two delays.
        took = subprocess.run([*network.exec_prefix(0), sys.executable, "-c", CONNECT_TIME, net[1].host,
                               str(net[1].port)], capture_output=True, text=True, timeout=30, check=True)
        assert float(took.stdout) >= 2 * delay
        data = os.urandom(300_000)
        cap = net.first.xsc("store", "put", "-", input=data).stdout.decode().strip()
        assert cap.startswith("xsc:chk:")
        assert net[2].xsc("store", "get", cap).stdout == data
    finally:
        net.stop()
    assert network.leftovers() == []
    assert network.delay_pid is None


@needs_netns
def test_the_cli_takes_the_network_down_with_the_nodes(tmp_path: Path) -> None:
    root = tmp_path / "net"
    done = run_xsc("devnet", "up", "-n", "2", "--netns", "--delay", "20ms", "--loss", "1%", "--dir", str(root),
                   "--json", timeout=120)
    try:
        assert done.returncode == 0, done.stderr
        loaded, _ = Devnet.load(root)
        network = loaded.network
        assert network is not None and network.delay == 0.02 and network.loss == 0.01
        assert len(network.leftovers()) == 4  # two nodes' namespaces, the hub and the host's link
        assert all(n.health() is not None for n in loaded) and network.delay_line_running()
    finally:
        down = run_xsc("devnet", "down", "--dir", str(root), timeout=120)
    assert down.returncode == 0, down.stderr
    assert network.leftovers() == [] and not network.delay_line_running()
    assert not any(n.alive() for n in loaded)
    # Down, the devnet is told to come back as it was: in namespaces, behind the delay and loss it was given.
    again = f"start it again with: xsc devnet up -n 2 --netns --delay 20ms --loss 1% --dir {root.resolve()})"
    for args in (["down"], ["status"]):
        said = run_xsc("devnet", *args, "--dir", str(root))
        assert again in (said.stdout + said.stderr).decode(), said


@needs_netns
def test_a_ctrl_c_during_up_leaves_no_namespace_rule_or_delay_line(tmp_path: Path) -> None:
    root = tmp_path / "net"
    # As from a terminal: SIGINT not ignored, even where this test runs with it ignored (in a job started with &).
    up = subprocess.Popen([*xsc_command(), "devnet", "up", "-n", "3", "--netns", "--delay", "20ms", "--dir",
                           str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        state = root / "devnet.json"
        eventually(lambda: state.exists() and codec.loads(state.read_text()).get("nodes"),
                   "up to have started a node", timeout=60)
        started, _ = Devnet.load(root)
        network = started.network
        assert network is not None and network.leftovers() and network.delay_line_running()
        up.send_signal(signal.SIGINT)
        assert up.wait(60) != 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert network.leftovers() == [] and not network.delay_line_running()
    assert started.nodes and not any(n.alive() for n in started)
