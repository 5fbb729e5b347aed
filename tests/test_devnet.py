"""xsc/devnet.py, the one library that starts node processes (for `xsc devnet`, the tests and the benches)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xsc import devnet
from xsc.devnet import (LISTEN_FLOOR, Devnet, NodeProcess, free_ports, keep_netem, node_state, port_free,
                        ports_from, xsc_command)
from xsc.errors import DevnetError, InvalidArgument, NodeNotRunning
from xsc.netem.namespaces import NetnsNetwork

from tests.support.cli import xsc
from tests.support.nodes import run_xsc
from tests.support.peers import FAST


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8 and all(port_free(p) for p in ports)
    assert len(ports_from(None, 3)) == 3


def test_free_ports_lie_below_the_range_outgoing_connections_draw_from() -> None:
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(16)
    assert all(LISTEN_FLOOR <= p < ephemeral_low for p in ports)


def test_free_ports_never_hand_out_a_port_again_before_many_others() -> None:
    # Each port is free until its node binds it: a second call picking it meanwhile would make two nodes share it.
    given = [port for _ in range(40) for port in free_ports(5)]
    assert len(set(given)) == len(given)


def test_processes_given_slices_of_the_range_draw_ports_only_from_their_own(monkeypatch) -> None:
    monkeypatch.delenv(devnet.PORTS_ENV, raising=False)
    slices = []
    for index in range(3):
        devnet.share_listen_ports(index, 3)
        low, high = map(int, os.environ[devnet.PORTS_ENV].split("-"))
        assert all(low <= p < high for p in free_ports(8))
        slices.append(range(low, high))
        monkeypatch.delenv(devnet.PORTS_ENV)
    assert all(not set(a) & set(b) for a in slices for b in slices if a is not b)


def test_runs_side_by_side_claim_slices_of_the_range_no_other_holds(monkeypatch, tmp_path: Path) -> None:
    # Two suites each slice the range among their workers from 0: each first claims a slice of its own to slice.
    def claim():  # as a run started afresh claims (its environment names no slice)
        monkeypatch.delenv(devnet.PORTS_ENV, raising=False)
        return devnet.claim_listen_ports(2, tmp_path), os.environ.get(devnet.PORTS_ENV)

    (first, one), (second, other) = claim(), claim()  # the second run's claim while the first's lock is held
    try:
        (a_low, a_high), (b_low, b_high) = (map(int, s.split("-")) for s in (one, other))
        assert a_high <= b_low and all(b_low <= p < b_high for p in free_ports(8))
        assert claim() == (None, None)  # a third run finds both held: it draws from the whole range, as before
        first.close()  # the first run ended
        again, slice_again = claim()
        assert again is not None and slice_again == one
        again.close()
    finally:
        first.close()
        second.close()


def test_a_slice_smaller_than_the_ports_given_lately_still_gives_ports_of_its_own(monkeypatch) -> None:
    low = free_ports(1)[0]
    monkeypatch.setenv(devnet.PORTS_ENV, f"{low}-{low + 8}")
    given = [port for _ in range(10) for port in free_ports(2)]  # more than the slice holds: given again, in turn
    assert all(low <= p < low + 8 for p in given)


@pytest.mark.parametrize("value", ["", "10000", "20000-10000", "a-b", "²-³"])
def test_a_slice_that_is_not_low_dash_high_leaves_the_whole_range(monkeypatch, value) -> None:
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    monkeypatch.setenv(devnet.PORTS_ENV, value)
    assert devnet._listen_range() == (LISTEN_FLOOR, max(LISTEN_FLOOR, ephemeral_low))


def test_a_base_port_must_leave_room_and_be_free() -> None:
    with pytest.raises(InvalidArgument, match="leaves no room"):
        ports_from(65535, 2)
    with pytest.raises(InvalidArgument, match="leaves no room"):
        ports_from(80, 1)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if port > 65000:
            pytest.skip("the kernel gave a port too high for a run of two")
        with pytest.raises(InvalidArgument, match=f"ports in use: {port}"):
            ports_from(port, 2)


def test_nodes_start_through_the_installed_console_script() -> None:
    command = xsc_command()
    assert command == [str(Path(sys.executable).with_name("xsc"))]
    node = NodeProcess("/nowhere/n0", 7000, ["--peer", "http://127.0.0.1:7001"])
    assert node.command() == [*command, "--data-dir", "/nowhere/n0", "node", "start", "--listen", "127.0.0.1:7000",
                              "--peer", "http://127.0.0.1:7001"]
    assert "-m" not in node.command()


def test_variables_that_would_redirect_a_node_are_not_passed_on(monkeypatch) -> None:
    monkeypatch.setenv("XSC_HOME", "/elsewhere")
    monkeypatch.setenv("XSC_TOKEN", "someone-else's")
    node = NodeProcess("/nowhere/n0", 7000, env={"XSC_PEERS_GOSSIP_INTERVAL": "0.3"})
    assert "XSC_HOME" not in node.env and "XSC_TOKEN" not in node.env
    assert node.env["XSC_PEERS_GOSSIP_INTERVAL"] == "0.3"


def test_a_devnet_peers_every_node_with_the_first_and_gives_each_its_environment(tmp_path: Path) -> None:
    net = Devnet(tmp_path, 3, env={"A": "1"}, envs=[{"B": "first"}, {}, {"B": "last"}], args=["--log-level", "info"])
    first = net.first
    assert [n.data_dir for n in net] == [tmp_path.resolve() / f"node-{i}" for i in range(3)]
    assert "--peer" not in first.args and all(n.args[-2:] == ["--peer", first.url] for n in net.nodes[1:])
    assert [n.env.get("B") for n in net] == ["first", None, "last"] and all(n.env["A"] == "1" for n in net)
    with pytest.raises(InvalidArgument):
        Devnet(tmp_path, 2, ports=[7000])


def test_an_attached_pid_is_only_alive_while_it_runs_that_data_dir(tmp_path: Path) -> None:
    # This very process runs, but not as a node of that data dir: a reused pid is not our node.
    assert not NodeProcess.attach(tmp_path / "n0", 7000, os.getpid()).alive()
    assert not NodeProcess.attach(tmp_path / "n0", 7000, 2**22 + 1).alive()


def test_a_state_file_that_is_missing_or_broken_says_so(tmp_path: Path) -> None:
    tmp_path = tmp_path / "a devnet"  # a space: the hint's command pastes only if the path is quoted
    tmp_path.mkdir()
    with pytest.raises(NodeNotRunning, match="no devnet in"):
        Devnet.load(tmp_path)
    for name in ("node-0", "node-1"):  # as `xsc devnet down` leaves them
        (tmp_path / name).mkdir()
    stopped = xsc("devnet", "status", "--dir", str(tmp_path))
    assert stopped.exit_code == 1 and stopped.stderr.splitlines() == [
        f"xsc: error: the devnet in {tmp_path.resolve()} is stopped (the data dirs of 2 nodes are kept) "
        f"(start it again with: xsc devnet up -n 2 --dir '{tmp_path.resolve()}')"], stopped.stderr
    (tmp_path / "devnet.json").write_text(json.dumps({"nodes": [{"name": "node-0"}]}))
    with pytest.raises(DevnetError, match="not a devnet state file"):
        Devnet.load(tmp_path)


def test_down_on_a_devnet_down_already_says_so_and_a_namespaced_one_is_told_to_come_back_in_namespaces(
        tmp_path: Path) -> None:
    root = (tmp_path / "net").resolve()
    for n, url in enumerate(("http://127.0.0.1:7100", "http://127.0.0.1:7101")):  # as `xsc devnet down` leaves them
        (root / f"node-{n}").mkdir(parents=True)
        (root / f"node-{n}" / "node.url").write_text(url + "\n")
    down = xsc("devnet", "down", "--dir", str(root))
    assert down.exit_code == 0 and down.stdout == f"the devnet in {root} is already down (the data dirs of 2 nodes " \
        f"are kept; start it again with: xsc devnet up -n 2 --dir {root})\n", down.output
    assert json.loads(xsc("devnet", "down", "--dir", str(root), "--json").stdout) == {
        "stopped": 0, "killed": 0, "dir": str(root), "already_down": True}
    for n in range(2):  # nodes that listened in namespaces of their own (`up --netns`) come back in them
        (root / f"node-{n}" / "node.url").write_text(f"https://10.77.{n}.2:7070\n")
    for args in (["down"], ["status"]):
        said = xsc("devnet", *args, "--dir", str(root)).output
        assert f"start it again with: xsc devnet up -n 2 --netns --dir {root})" in said, said
    # ... behind the delay and loss their last `up --netns` gave them (`keep_netem`), each said only where it was set
    for delay, loss, options in ((0.05, 0.01, " --delay 50ms --loss 1%"), (0.2, 0.0, " --delay 200ms"),
                                 (0.0, 0.025, " --loss 2.5%"), (1.5, 0.5, " --delay 1.5s --loss 50%")):
        keep_netem(root, NetnsNetwork(root, 2, delay, loss))
        for args in (["down"], ["status"]):
            said = xsc("devnet", *args, "--dir", str(root)).output
            assert f"start it again with: xsc devnet up -n 2 --netns{options} --dir {root})" in said, said
    keep_netem(root, None)  # an `up` on loopback forgets them
    assert f"xsc devnet up -n 2 --netns --dir {root})" in xsc("devnet", "down", "--dir", str(root)).output
    nothing = xsc("devnet", "down", "--dir", str(tmp_path / "none"))  # no devnet there at all: a --dir mistyped
    assert nothing.exit_code == 1 and "no devnet in" in nothing.stderr, nothing.output


@pytest.mark.slow
def test_a_node_that_exits_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n0", args=["--log-level", "shouting"])
    with pytest.raises(DevnetError, match="n0 exited with 2") as err:
        node.start()
    assert err.value.hint == f"see {node.log}" and "shouting" in node.log.read_text()


@pytest.mark.slow
def test_stop_sends_sigkill_to_a_node_that_does_not_stop(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n0").start()
    assert node.token and node.health()["serviceId"]
    node.send(signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    assert node.stop(timeout=0.5) == -signal.SIGKILL and node.killed and not node.alive()


@pytest.mark.slow
def test_devnet_up_works_from_a_folder_that_holds_an_xsc_directory(tmp_path: Path) -> None:
    """Nodes started as `python -m xsc` in a folder that holds an xsc/ directory import the installed xsc, not it."""
    (tmp_path / "xsc").mkdir()
    (tmp_path / "xsc" / "__init__.py").write_text("raise ImportError('not the installed xsc')\n")
    try:
        up = run_xsc("devnet", "up", "-n", "2", "--dir", "net", "--json", env=FAST, cwd=tmp_path, timeout=120)
        assert up.returncode == 0, up.stderr
        nodes = json.loads(up.stdout)
        assert all(n["id"] for n in nodes) and {n["data_dir"] for n in nodes} == {
            str(tmp_path / "net" / "node-0"), str(tmp_path / "net" / "node-1")}
        status = run_xsc("devnet", "status", "--dir", "net", "--json", cwd=tmp_path)
        assert [n["up"] for n in json.loads(status.stdout)] == [True, True]
    finally:
        down = run_xsc("devnet", "down", "--dir", "net", "--json", cwd=tmp_path)
    assert down.returncode == 0 and json.loads(down.stdout)["stopped"] == 2


@pytest.mark.slow
def test_status_names_each_node_by_its_id_on_a_state_file_the_library_saved(tmp_path: Path, monkeypatch) -> None:
    """Devnet.save() writes no ids (the library does not ask the nodes for them): status asks a node that answers."""
    # Started as `xsc node start` itself, not forked from the tests' forker: status knows a node by its command line.
    monkeypatch.setattr(devnet, "popen", subprocess.Popen)
    net = Devnet(tmp_path, 1).start()
    try:
        net.save()
        assert "id" not in json.loads((tmp_path / "devnet.json").read_text())["nodes"][0]
        status = run_xsc("devnet", "status", "--dir", str(tmp_path), "--json")
        assert status.returncode == 0, status.stderr
        assert [(n["id"], n["up"]) for n in json.loads(status.stdout)] == [(net.first.health()["serviceId"], True)]
        table = run_xsc("devnet", "status", "--dir", str(tmp_path))
        assert table.returncode == 0 and b"1 of 1 nodes up" in table.stdout, table.stderr
    finally:
        net.stop()


def test_up_counts_the_nodes_it_started_again_and_those_up_already_in_words() -> None:
    from xsc.cli.devnet import restarted_line

    assert restarted_line(1, 2) == "1 node started again, 1 node was up already; all 2 up"
    assert restarted_line(2, 5) == "2 nodes started again, 3 nodes were up already; all 5 up"
    assert restarted_line(3, 3) == "3 nodes started again, 0 nodes were up already; all 3 up"


def _up_two(cwd: Path) -> list[dict]:
    """`xsc devnet up -n 2 --dir net --json` in `cwd`: its nodes as it lists them."""
    up = run_xsc("devnet", "up", "-n", "2", "--dir", "net", "--json", env=FAST, cwd=cwd, timeout=120)
    assert up.returncode == 0, up.stderr
    return json.loads(up.stdout)


@pytest.mark.slow
def test_devnet_up_starts_again_the_nodes_of_a_devnet_that_are_down(tmp_path: Path) -> None:
    try:
        first = _up_two(tmp_path)
        os.kill(first[1]["pid"], signal.SIGKILL)
        nodes = _up_two(tmp_path)
        assert [(n["id"], n["url"], n["restarted"]) for n in nodes] == [
            (n["id"], n["url"], i == 1) for i, n in enumerate(first)]
        assert nodes[0]["pid"] == first[0]["pid"] and nodes[1]["pid"] != first[1]["pid"]
        status = run_xsc("devnet", "status", "--dir", "net", "--json", cwd=tmp_path)
        assert [n["up"] for n in json.loads(status.stdout)] == [True, True]
        refused = run_xsc("devnet", "up", "-n", "2", "--dir", "net", cwd=tmp_path)  # all up: nothing to start
        assert refused.returncode == 1 and b"xsc devnet down --dir net" in refused.stderr
    finally:
        down = run_xsc("devnet", "down", "--dir", "net", "--json", cwd=tmp_path)
    assert down.returncode == 0 and json.loads(down.stdout)["stopped"] == 2


@pytest.mark.slow
def test_a_job_sent_to_any_node_the_moment_devnet_up_returns_finds_every_provider(tmp_path: Path) -> None:
    """`up` returns once every node's market book holds every node's offer: a replicated job that needs all the other
    nodes, sent at once to any node, is not refused for want of providers.
    The nodes run with the default gossip intervals, as a user's do."""
    wc = Path(__file__).parent.parent / "fixtures" / "wasm" / "wc.wasm"
    try:
        up = run_xsc("devnet", "up", "-n", "4", "--dir", "net", "--json", cwd=tmp_path, timeout=180)
        assert up.returncode == 0, up.stderr
        assert b"warning" not in up.stderr, up.stderr
        nodes = json.loads(up.stdout)
        books = [run_xsc("--data-dir", n["data_dir"], "market", "book", "--json") for n in nodes]
        for node, book in zip(nodes, books):
            owners = {a["owner"] for row in json.loads(book.stdout)["books"] for a in row["asks"]}
            assert owners == {n["id"] for n in nodes}, (node["name"], owners)
        for node in nodes:
            job = run_xsc("--data-dir", node["data_dir"], "compute", "run", str(wc), "--deterministic",
                          "--replicas", "3", input=b"a b\nc\n", timeout=120)
            assert job.returncode == 0, (node["name"], job.stderr)
            assert job.stdout.split() == [b"2", b"3", b"6"] and b"on the 3 replicas asked" in job.stderr, job.stderr
    finally:
        down = run_xsc("devnet", "down", "--dir", "net", "--json", cwd=tmp_path)
    assert down.returncode == 0 and json.loads(down.stdout)["stopped"] == 4


@pytest.mark.slow
def test_a_smaller_devnet_on_the_same_data_dirs_is_peered_though_its_nodes_remember_more(tmp_path: Path) -> None:
    larger = Devnet(tmp_path, 3, env=FAST).start()
    try:
        assert larger.wait_peered(60) == []
    finally:
        larger.stop(10.0)
    smaller = Devnet(tmp_path, 2, env=FAST).start()  # node-0 and node-1 still know node-2, which stays down
    try:
        assert smaller.wait_peered(30) == []
    finally:
        smaller.stop(10.0)


@pytest.mark.slow
def test_devnet_up_shows_its_nodes_coming_up_on_a_terminal(tmp_path: Path) -> None:
    import pty

    terminal, stderr = pty.openpty()
    try:
        up = subprocess.run([*xsc_command(), "devnet", "up", "-n", "1", "--dir", "net"], cwd=tmp_path, timeout=120,
                            stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, **FAST})
        os.close(stderr)
        shown = b""
        while chunk := _read_some(terminal):
            shown += chunk
    finally:
        run_xsc("devnet", "down", "--dir", "net", cwd=tmp_path)
        os.close(terminal)
    assert up.returncode == 0, shown
    assert b"nodes up" in shown and b"1 node up; use one with" in up.stdout


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other end is closed: all of it was read
        return b""


def test_a_ctrl_c_while_a_node_is_being_started_leaves_its_process_in_hand(tmp_path: Path, monkeypatch) -> None:
    started = subprocess.Popen

    def interrupted(command, **options):  # a Ctrl-C once the child is forked, before Popen returns
        child = started([sys.executable, "-c", "import time; time.sleep(60)"], **options)
        signal.raise_signal(signal.SIGINT)
        return child

    monkeypatch.setattr(devnet, "popen", interrupted)
    node = NodeProcess(tmp_path / "node", free_ports(1)[0])
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a test worker may ignore it)
    try:
        with pytest.raises(KeyboardInterrupt):
            node.spawn()
    finally:
        signal.signal(signal.SIGINT, before)
    assert node.proc is not None and node.alive()  # so `devnet up` stops it on the way out
    node.stop(timeout=10)
    assert not node.alive()


def test_a_node_killed_but_not_gone_is_dying_and_up_waits_for_it() -> None:
    data = Path("/x/nodes/n1")
    cmd = b"python\0-m\0xsc\0--data-dir\0/x/nodes/n1\0node\0start\0"
    status = "Name:\tpython\nState:\tS (sleeping)\nPPid:\t1\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"
    assert node_state(cmd, status, data) == "running"
    assert node_state(cmd, status.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000000100"), data) == "dying"
    assert node_state(cmd, status.replace("SigPnd:\t0000000000000000", "SigPnd:\t0000000000004100"), data) == "dying"
    assert node_state(cmd, status.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000004000"), data) == "running"
    assert node_state(b"", status, data) == "dying"  # exiting: its memory, and so its command line, already gone
    assert node_state(b"", status.replace("PPid:\t1", "PPid:\t2"), data) == "gone"  # a kernel thread got the pid
    assert node_state(cmd, status.replace("S (sleeping)", "Z (zombie)"), data) == "gone"
    assert node_state(cmd, status, Path("/x/nodes/n2")) == "gone"  # another node's, or another program's
    assert node_state(cmd.replace(b"/x/nodes/n1", b"/x/nodes/n10"), status, data) == "gone"


@pytest.mark.slow
def test_a_devnet_started_again_after_down_comes_back_at_its_addresses(tmp_path: Path) -> None:
    try:
        first = _up_two(tmp_path)
        assert run_xsc("devnet", "down", "--dir", "net", cwd=tmp_path).returncode == 0
        assert [(n["id"], n["url"]) for n in _up_two(tmp_path)] == [(n["id"], n["url"]) for n in first]
    finally:
        run_xsc("devnet", "down", "--dir", "net", cwd=tmp_path)


def test_kept_ports_are_given_only_when_every_node_has_a_free_one(tmp_path: Path) -> None:
    a, b = free_ports(2)
    for i, port in enumerate((a, b)):
        (tmp_path / f"node-{i}").mkdir()
        (tmp_path / f"node-{i}" / "node.url").write_text(f"http://127.0.0.1:{port}\n")
    assert devnet.kept_ports(tmp_path, 2) == [a, b]
    assert devnet.kept_ports(tmp_path, 3) is None  # node-2 never started
    with socket.socket() as held:
        held.bind(("127.0.0.1", b))
        held.listen()
        assert devnet.kept_ports(tmp_path, 2) is None  # taken since: free ones instead
    (tmp_path / "node-1" / "node.url").write_text(f"http://127.0.0.1:{a}\n")
    assert devnet.kept_ports(tmp_path, 2) is None  # two nodes on one port
