"""A file on six real nodes: one share each, readable with any two down, a clear error with three down; holders that
answer wrong blocks leave a get exact."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from xsc.storage import Capability
from xsc.storage.core import layout

from tests.support.blocks import change_block, corrupt_block
from tests.support.nodes import kill_all
from tests.support.peers import (FAST, api, joined_at_once, known_ids, node_id, peer_health, start_star,
                                 wait_for_storage_offers)
from tests.support.peers import http as request
from tests.support.waiting import eventually


def _joined(node_process, count: int, gateway_env: dict = FAST, env: dict = FAST) -> tuple:
    """A gateway (n0) and `count` nodes that joined it (n1...), once the gateway knows them and its market holds all
    their storage offers: (gateway, the others)."""
    gateway = node_process("n0", env=gateway_env)
    others = joined_at_once(node_process, gateway, [f"n{i}" for i in range(1, count + 1)], env)
    eventually(lambda: known_ids(gateway) >= {node_id(n) for n in others}, f"the gateway to know the {count} others")
    wait_for_storage_offers(gateway, count + 1)
    return gateway, others


def _six_nodes(node_process):
    first, others = _joined(node_process, 5)
    nodes = [first, *others]
    ids = [node_id(n) for n in nodes]
    return nodes, ids


@pytest.mark.slow
def test_shares_on_six_nodes_survive_two_losses_and_name_the_third(node_process, tmp_path: Path) -> None:
    nodes, ids = _six_nodes(node_process)
    gateway = nodes[0]
    data = os.urandom(3 * 1024 * 1024 + 77)
    src = tmp_path / "spread.bin"
    src.write_bytes(data)

    put = gateway.xsc("store", "put", str(src), "--json")
    assert put.returncode == 0, put.stderr
    result = json.loads(put.stdout)
    assert sorted(result["placement"]) == sorted(ids)  # one share on each node
    assert result["node_failures_survived"] == 2
    cap = result["capability"]
    assert gateway.xsc("store", "get", cap).stdout == data

    check = json.loads(gateway.xsc("store", "check", cap, "--json").stdout)
    assert check["healthy"] and [s["node"] for s in check["shares"]] == result["placement"]

    holders = {node_id: n for node_id, n in zip(ids, nodes)}
    victims = [holders[result["placement"][s]] for s in (1, 4)]
    victims = [v for v in victims if v is not gateway][:2]
    if len(victims) < 2:  # the gateway held one of those shares: take another holder
        victims.append(next(holders[n] for n in result["placement"] if holders[n] not in victims
                            and holders[n] is not gateway))
    for victim in victims:
        victim.kill()
    out = tmp_path / "two-down.bin"
    got = gateway.xsc("store", "get", cap, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data

    third = next(holders[n] for n in result["placement"] if holders[n] is not gateway and holders[n] not in victims)
    third.kill()
    out = tmp_path / "three-down.bin"
    failed = gateway.xsc("store", "get", cap, "-o", str(out))
    assert failed.returncode == 1
    message = failed.stderr.decode()
    assert "only 3 of 6 shares are intact" in message and "unreadable on node" in message, message
    id_of = {n: i for i, n in zip(ids, nodes)}
    for dead in (*victims, third):
        assert id_of[dead][:12] in message
    assert not out.exists()

    for dead in (*victims, third):
        dead.start()
    out = tmp_path / "back.bin"
    back = gateway.xsc("store", "get", cap, "-o", str(out))
    assert back.returncode == 0, back.stderr
    assert out.read_bytes() == data

    # A holder dropped from the peer table is one unreadable share, not a failed get.
    assert gateway.xsc("peers", "rm", id_of[victims[0]]).returncode == 0
    assert gateway.xsc("store", "get", cap).stdout == data
    check = json.loads(gateway.xsc("store", "check", cap, "--json").stdout)
    assert check["intact"] == 5 and "not a known peer" in str(check["shares"])
    dropped = [s for s in check["shares"] if s["node"] == id_of[victims[0]]]
    assert dropped and all(s["node_known"] is False and s["node_up"] is None for s in dropped), check
    row = next(line for line in gateway.xsc("store", "check", cap).stdout.decode().splitlines()
               if id_of[victims[0]] in line)
    assert "not a peer" in row and "not probed yet" not in row, row  # not a peer awaiting its first probe
    assert gateway.xsc("peers", "add", victims[0].url).returncode == 0

    removed = json.loads(gateway.xsc("store", "rm", cap, "--json").stdout)
    assert removed["not_deleted_on"] == {}
    for node in nodes:
        assert json.loads(node.xsc("node", "status", "--json").stdout)["storage"]["shares"] == 0


@pytest.mark.slow
def test_repair_moves_a_lost_share_to_a_spare_node(node_process, tmp_path: Path) -> None:
    first, others = _joined(node_process, 6)
    nodes = [first, *others]
    ids = [node_id(n) for n in nodes]
    by_id = dict(zip(ids, nodes))
    data = os.urandom(2 * 1024 * 1024 + 5)
    src = tmp_path / "repair.bin"
    src.write_bytes(data)
    result = json.loads(first.xsc("store", "put", str(src), "--json").stdout)
    placement, cap = result["placement"], result["capability"]
    spare = next(i for i in ids if i not in placement)
    lost = next(i for i in placement if i != ids[0])
    by_id[lost].kill()
    eventually(lambda: not _peer_up(first, lost), "the gateway to see the holder down")

    repaired = first.xsc("store", "repair", cap, "--json")
    assert repaired.returncode == 0, repaired.stderr
    report = json.loads(repaired.stdout)
    share = placement.index(lost)
    assert report["repaired"] == [share]
    assert report["placement"][share] == spare and report["healthy"]
    check = json.loads(first.xsc("store", "check", cap, "--json").stdout)
    assert check["healthy"] and check["shares"][share]["node"] == spare

    # Repaired, the file again survives two more losses.
    for victim in [i for i in report["placement"] if i not in (ids[0], spare)][:2]:
        by_id[victim].kill()
    assert first.xsc("store", "get", cap).stdout == data


def _peer_up(node, peer: str):
    from tests.support.peers import peer_health

    health = peer_health(node, peer)
    return health is None or health.get("up") is not False


@pytest.mark.slow
def test_a_frozen_holder_does_not_stall_a_get(node_process, tmp_path: Path) -> None:
    import signal

    env = {**FAST, "XSC_STORAGE_REMOTE_TIMEOUT": "1"}
    first, others = _joined(node_process, 5, env, env)
    nodes = [first, *others]
    ids = [node_id(n) for n in nodes]
    by_id = dict(zip(ids, nodes))
    data = os.urandom(5 * 1024 * 1024)
    src = tmp_path / "slow.bin"
    src.write_bytes(data)
    result = json.loads(first.xsc("store", "put", str(src), "--json").stdout)
    # Freeze the holder of a data share: it accepts connections but never answers.
    frozen = by_id[next(n for n in result["placement"][:4] if n != ids[0])]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        got = first.xsc("store", "get", result["capability"], timeout=60)
        assert got.returncode == 0, got.stderr
        assert got.stdout == data
    finally:
        frozen.proc.send_signal(signal.SIGCONT)


def _shares_held(node) -> int:
    return json.loads(node.xsc("node", "status", "--json").stdout)["storage"]["shares"]


@pytest.mark.slow
def test_a_removal_cut_short_by_kill_9_is_never_listed_and_finishes_after_the_restart(node_process, tmp_path) -> None:
    """rm unlists the file durably first: killed while a holder hangs, the gateway never lists a file whose
    shares are half deleted, and after its restart it deletes the rest."""
    first, holders = _joined(node_process, 2)
    src = tmp_path / "doomed.bin"
    src.write_bytes(os.urandom(200_000))
    put = first.xsc("store", "put", str(src), "--json")
    assert put.returncode == 0, put.stderr
    cap, placement = json.loads(put.stdout)["capability"], json.loads(put.stdout)["placement"]
    stuck = holders[0]
    assert node_id(stuck) in placement and _shares_held(stuck) > 0
    listed = lambda: cap in first.xsc("store", "ls", "--json").stdout.decode()  # noqa: E731

    stuck.send(signal.SIGSTOP)  # its delete hangs: the gateway waits for it inside the removal
    try:
        rm = threading.Thread(target=first.xsc, args=("store", "rm", cap), kwargs={"timeout": 60}, daemon=True)
        rm.start()
        eventually(lambda: not listed(), "the removal to unlist the file")
        first.kill()
    finally:
        stuck.send(signal.SIGCONT)
    first.start()
    assert not listed()  # never listed again, though one holder still had its shares at the crash
    eventually(lambda: _shares_held(stuck) == 0, "the restarted gateway to delete the hung holder's shares")
    assert _shares_held(holders[1]) == 0
    eventually(lambda: "finished removing 1 file cut short" in first.tail(200),
               "the gateway to end the removal after the deletes")
    got = first.xsc("store", "get", cap)
    assert got.returncode != 0


@pytest.mark.slow
def test_many_removals_cut_short_by_kill_9_are_finished_together_after_the_restart(node_process) -> None:
    """A removal of many files in one request (POST /v1/store/remove) takes them all out of the listing in one write:
    killed while a holder hangs, the gateway lists none of them again, and its start finishes them all together, in
    one batch (one line says so), their shares deleted on every holder and here."""
    waiting = {**FAST, "XSC_PEERS_REQUEST_TIMEOUT": "300", "XSC_HEALTH_PROBE_TIMEOUT": "300"}  # the hang holds
    first, holders = _joined(node_process, 2, gateway_env=waiting)
    auth = {"Authorization": f"Bearer {first.token}"}
    caps = []
    for n in range(40):
        status, put = request(first.url, "POST", f"/v1/store/files?name=f{n}", os.urandom(1000 + n), auth)
        assert status == 201, put
        caps.append(put["capability"])
    stuck, other = holders
    assert _shares_held(stuck) > 0 and _shares_held(other) > 0 and _shares_held(first) > 0
    listed = lambda: api(first, "GET", "/v1/store/files")[1]["files"]  # noqa: E731
    stuck.send(signal.SIGSTOP)  # its deletes hang: the gateway waits for them inside the removal
    try:
        removing = threading.Thread(target=lambda: _ignore(lambda: api(first, "POST", "/v1/store/remove",
                                                                       {"caps": caps})), daemon=True)
        removing.start()
        eventually(lambda: listed() == [], "the removal to unlist the files")
        first.kill()
        removing.join()
    finally:
        stuck.send(signal.SIGCONT)
    began = first.log.stat().st_size
    first.start()
    assert listed() == []  # never listed again, though the holders still had their shares at the crash
    eventually(lambda: _shares_held(stuck) == 0 and _shares_held(other) == 0 and _shares_held(first) == 0,
               "the restarted gateway to delete every share of the files")
    said = lambda: [line for line in first.log.read_bytes()[began:].decode(errors="replace").splitlines()  # noqa: E731
                    if "finished removing" in line]
    eventually(lambda: said() != [], "the gateway to end the removals after the deletes")
    assert len(said()) == 1 and said()[0].endswith("finished removing 40 files cut short"), said()
    assert all(first.xsc("store", "get", cap).returncode != 0 for cap in caps[:2])


def _ignore(call: Callable[[], Any]) -> None:
    try:
        call()
    except OSError:  # the node killed under the request
        pass


@pytest.mark.slow
def test_a_put_cut_short_by_kill_9_gives_back_the_shares_holders_committed_after_the_restart(node_process,
                                                                                            tmp_path) -> None:
    """A gateway killed after a holder committed a share of a put and before the file was recorded: no capability
    was answered and no deal holds the copy, and the restarted gateway deletes it on every holder."""
    # The put waits for the frozen holder (its request, its probes) until the gateway is killed.
    waiting = {**FAST, "XSC_PEERS_REQUEST_TIMEOUT": "300", "XSC_HEALTH_PROBE_TIMEOUT": "300"}
    first, holders = _joined(node_process, 2, gateway_env=waiting)
    src = tmp_path / "cut-short.bin"
    src.write_bytes(os.urandom(200_000))  # one segment: each holder's share placed and committed in one request
    stuck, other = holders
    stuck.send(signal.SIGSTOP)
    try:
        put = threading.Thread(target=first.xsc, args=("store", "put", str(src)), kwargs={"timeout": 60}, daemon=True)
        put.start()
        eventually(lambda: _shares_held(other) > 0, "the other holder to commit its shares of the put")
        first.kill()
    finally:
        stuck.send(signal.SIGCONT)
    first.start()
    eventually(lambda: _shares_held(other) == 0 and _shares_held(stuck) == 0,
               "the restarted gateway to delete the copies no file holds")
    assert json.loads(first.xsc("store", "ls", "--json").stdout) == []


def _uploads_in_progress(node) -> int:
    return api(node, "GET", "/v1/node/status")[1]["share_uploads"]["in_progress"]


def _put_with_a_holder_killed_half_way(gateway, data: bytes, query: str, victim: Callable[[], Any],
                                       stop: Callable[[Any], None] = lambda node: node.kill()):
    """A put of `data` through the gateway's API (`query`: the put's parameters), half of its body sent; then the
    holder `victim()` names (once the put's uploads are under way) killed with kill -9 (or `stop`ped), and the rest
    sent: the answer's status, its body and the node killed."""
    parts = urlsplit(gateway.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", f"/v1/store/files?{query}")
        conn.putheader("Authorization", f"Bearer {gateway.token}")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        conn.send(data[:len(data) // 2])  # paused here, the put sends on what it holds for the holders
        killed = victim()
        stop(killed)
        conn.send(data[len(data) // 2:])
        response = conn.getresponse()
        return response.status, json.loads(response.read()), killed
    finally:
        conn.close()


@pytest.mark.slow
def test_a_holder_killed_in_the_middle_of_a_put_loses_its_share_not_the_put(node_process, tmp_path) -> None:
    """A holder kill -9'd while a put's blocks go to it: the put succeeds without its share, the file comes back
    byte-exact, and the repair loop rebuilds the share on the gateway (the damage mark written with the file)."""
    gateway, holders = _joined(node_process, 2)
    ids = [node_id(n) for n in holders]
    data = os.urandom(3 * 1024 * 1024 + 11)  # 4 segments

    def first_holder():
        eventually(lambda: all(_uploads_in_progress(h) > 0 for h in holders), "both holders to hold an upload")
        return holders[0]

    status, result, _ = _put_with_a_holder_killed_half_way(gateway, data, "name=cut.bin", first_holder)
    assert status == 201, result
    cap, gone = result["capability"], ids[0]
    assert gone not in result["placement"] and ids[1] in result["placement"], result
    assert f"node {gone} failed share" in result["lost"] and "(peer-unreachable)" in result["lost"], result
    assert gateway.xsc("store", "get", cap).stdout == data
    eventually(lambda: _check(gateway, cap)["healthy"], "the repair loop to rebuild the lost share")
    assert gateway.xsc("store", "get", cap).stdout == data
    assert gone not in {deal["node"] for deal in result["deals"]}  # never paid for the share it lost


@pytest.mark.slow
def test_a_holder_frozen_in_the_middle_of_a_put_loses_its_share_not_the_put(node_process) -> None:
    """A holder SIGSTOPped while a put's blocks go to it (it keeps its connections and answers nothing): once
    peers.request_timeout passes without an answer it is lost as a killed one is, and the put completes without its
    share, the file byte-exact, the share rebuilt by the repair loop."""
    short = {**FAST, "XSC_PEERS_REQUEST_TIMEOUT": "2"}
    gateway, holders = _joined(node_process, 2, gateway_env=short)
    ids = [node_id(n) for n in holders]
    data = os.urandom(3 * 1024 * 1024 + 11)  # 4 segments

    def first_holder():
        eventually(lambda: all(_uploads_in_progress(h) > 0 for h in holders), "both holders to hold an upload")
        return holders[0]

    try:
        status, result, _ = _put_with_a_holder_killed_half_way(gateway, data, "name=frozen.bin", first_holder,
                                                                stop=lambda node: node.send(signal.SIGSTOP))
        assert status == 201, result
        assert result["lost"].startswith(f"node {ids[0]} failed share "), result
        assert ids[0] not in result["placement"] and ids[1] in result["placement"], result
        cap = result["capability"]
        assert gateway.xsc("store", "get", cap, timeout=60).stdout == data
        eventually(lambda: _check(gateway, cap)["healthy"], "the repair loop to rebuild the lost share")
        assert gateway.xsc("store", "get", cap, timeout=60).stdout == data
    finally:
        holders[0].send(signal.SIGCONT)


@pytest.mark.slow
def test_a_share_lost_mid_put_by_a_spread_put_is_rebuilt_on_another_node_not_the_gateway(node_process) -> None:
    """A `--spread` put (the market places all six shares, none kept home on purpose) over the gateway and three
    holders, a holder of one share kill -9'd while the blocks go: the repair loop rebuilds that share on a holder
    left, not on the gateway, and the file is healthy."""
    gateway, holders = _joined(node_process, 3)
    ids = [node_id(n) for n in holders]
    data = os.urandom(3 * 1024 * 1024 + 11)  # 4 segments

    def a_holder_of_one_share():
        # Six shares on four nodes, one at least on each: a holder of one share loses the put no more than that.
        # The put's begins reach the holders side by side: a holder counted between two of its own begins would
        # seem to hold one share; the counts are taken once two reads half a second apart agree, each holder's begun.
        reads: list[list[int]] = []

        def begun() -> bool:
            reads.append([_uploads_in_progress(h) for h in holders])
            return len(reads) > 1 and reads[-1] == reads[-2] and all(reads[-1])

        eventually(begun, "each holder to hold the put's uploads", poll=0.5)
        return holders[reads[-1].index(1)]

    status, result, victim = _put_with_a_holder_killed_half_way(gateway, data, "name=spread.bin&spread=1",
                                                                a_holder_of_one_share)
    assert status == 201, result
    gone, me = ids[holders.index(victim)], node_id(gateway)
    assert result["lost"].startswith(f"node {gone} failed share ") and result["lost"].endswith("on another node")
    lost = int(result["lost"].split(" failed share ")[1].split(" ")[0])
    assert result["placement"][lost] == me, result
    eventually(lambda: _check(gateway, result["capability"])["healthy"], "the repair loop to rebuild the share")
    node = _check(gateway, result["capability"])["shares"][lost]["node"]
    assert node not in (me, gone), node
    assert gateway.xsc("store", "get", result["capability"]).stdout == data


@pytest.mark.slow
def test_a_share_lost_mid_put_is_rebuilt_on_another_node_when_the_gateway_has_room_for_its_own_shares_only(
        node_process) -> None:
    """A put that keeps 4 shares on a gateway with room for those 4 and no more, the holder of another kill -9'd while
    the blocks go: the share is not left for the gateway to rebuild (its repair would fail there for good, with no
    room) but rebuilt on the holder left."""
    data = os.urandom(3 * 1024 * 1024 + 11)  # 4 segments
    share = layout.share_bytes(len(data), 1024 * 1024)
    room = {**FAST, "XSC_STORAGE_CAPACITY": str(4 * share + share // 2)}
    gateway, holders = _joined(node_process, 2, gateway_env=room)
    ids, me = [node_id(n) for n in holders], node_id(gateway)

    def first_holder():
        eventually(lambda: all(_uploads_in_progress(h) > 0 for h in holders), "both holders to hold an upload")
        return holders[0]

    status, result, _ = _put_with_a_holder_killed_half_way(gateway, data, "name=no-room.bin", first_holder)
    assert status == 201, result
    assert result["placement"].count(me) == 5 and ids[1] in result["placement"], result
    assert result["lost"].startswith(f"node {ids[0]} failed share ") and result["lost"].endswith("on another node")
    lost = int(result["lost"].split(" failed share ")[1].split(" ")[0])
    eventually(lambda: _check(gateway, result["capability"])["healthy"], "the repair loop to rebuild the share")
    assert _check(gateway, result["capability"])["shares"][lost]["node"] == ids[1]
    assert gateway.xsc("store", "get", result["capability"]).stdout == data


def _get_headers_only(node, cap: str) -> socket.socket:
    """A get of `cap` from the node's user API whose client reads the answer's headers and nothing more: its socket,
    open, with a receive buffer as small as the system allows (the node's writes find it full at once)."""
    parts = urlsplit(node.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /v1/store/files/{cap} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 f"Authorization: Bearer {node.token}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _gets(node) -> dict:
    status, body = api(node, "GET", "/v1/node/status")
    assert status == 200, body
    return body["storage"]["gets"]


@pytest.mark.slow
def test_a_get_whose_client_stalls_or_leaves_after_the_headers_gives_everything_back(tmp_path: Path) -> None:
    """A gateway's get of a file on six nodes, its client gone quiet (connected, reading nothing) or gone once it has
    the headers: the get ends (the stalled one once it took nothing for node.idle_timeout seconds), and the
    gateway's gets open and threads come back to none."""
    started: list = []
    try:
        nodes, ids = start_star(tmp_path, 6, {"XSC_NODE_IDLE_TIMEOUT": "3"}, {}, started)
        wait_for_storage_offers(nodes[0], 6)
        gateway = nodes[0]
        data = os.urandom(48 * 1024 * 1024)
        src = tmp_path / "large.bin"
        src.write_bytes(data)
        put = gateway.xsc("store", "put", str(src), "--json")
        assert put.returncode == 0, put.stderr
        result = json.loads(put.stdout)
        assert len(set(result["placement"])) == 6  # its data shares on other nodes: their ranges asked early
        cap = result["capability"]
        before = _gets(gateway)
        assert before["open"] == before["passed_on"] == 0

        stalled = _get_headers_only(gateway, cap)
        try:
            eventually(lambda: _gets(gateway)["open"] == 1, "the stalled get open")
            eventually(lambda: _gets(gateway)["open"] == 0, "the stalled get given up", timeout=60)
            stalled.settimeout(30)
            got = 0
            with pytest.raises(ConnectionResetError):  # reset: what the kernel held for it dropped, not trickled
                while chunk := stalled.recv(1 << 20):
                    got += len(chunk)
            assert got < len(data)  # a short body, never taken for the whole file
        finally:
            stalled.close()

        for _ in range(4):
            _get_headers_only(gateway, cap).close()
        eventually(lambda: _gets(gateway)["open"] == 0, "the gets whose clients left ended", timeout=60)
        assert _gets(gateway)["passed_on"] == 0
        assert gateway.xsc("store", "get", cap).stdout == data  # and the gateway still reads it whole
    finally:
        kill_all(started)


SMALL_SEGMENTS = {"XSC_STORAGE_SEGMENT_SIZE": "65536", "XSC_AUDIT_SCRUB_RATE": "0", "XSC_AUDIT_BLOCKS_PER_ROUND": "0"}


@pytest.mark.slow
def test_holders_that_answer_wrong_blocks_leave_a_get_exact_and_are_reported(tmp_path: Path) -> None:
    """A holder's block of the right length that is not the block fails its hash: its share is named and reported,
    the segment rebuilt from the others, and the share rebuilt by the repair the report queues.  A block of another
    length cuts its holder's answer: the share is left for the rest of the get, not blamed.  Three bad shares of a
    segment stop the get after the segments before it, with the error that says so in the gateway's log."""
    started: list = []
    try:
        nodes, ids = start_star(tmp_path, 6, SMALL_SEGMENTS, SMALL_SEGMENTS, started)
        wait_for_storage_offers(nodes[0], 6)
        gateway, by_id = nodes[0], dict(zip(ids, nodes))

        def put(name: str, data: bytes) -> tuple[str, bytes, list[int]]:
            """The capability, the storage index and the shares on other nodes, data shares first."""
            src = tmp_path / name
            src.write_bytes(data)
            done = gateway.xsc("store", "put", str(src), "--json")
            assert done.returncode == 0, done.stderr
            result = json.loads(done.stdout)
            remote = [s for s in range(6) if result["placement"][s] != ids[0]]
            assert len(set(result["placement"])) == 6 and len(remote) == 5
            return result["capability"], Capability.parse(result["capability"]).storage_index, remote

        def holder(cap: str, share: int):
            return by_id[_check(gateway, cap)["shares"][share]["node"]]

        def seen_up(node) -> None:  # a holder restarted is up again for the gateway
            eventually(lambda: (peer_health(gateway, node_id(node)) or {}).get("up"), "the holder seen up again")

        data = os.urandom(8 * 65536 + 999)  # segments 0-7 without padding
        cap, si, remote = put("file.bin", data)
        flipped = remote[0]
        corrupt_block(holder(cap, flipped), si, flipped, segment=1)
        seen_up(holder(cap, flipped))
        got = gateway.xsc("store", "get", cap)
        assert got.returncode == 0 and got.stdout == data, got.stderr
        assert _gets(gateway)["tag_failures"] == 0  # a block from another node is hashed before any tag is tried
        shares = _check(gateway, cap)["shares"]
        assert [s["share"] for s in shares if s["status"] != "ok"] == [flipped]
        assert "segments [1]" in shares[flipped]["detail"], shares[flipped]
        eventually(lambda: _repairs_ended(gateway, si) == [[flipped]]
                   and all(s["status"] == "ok" for s in _check(gateway, cap)["shares"]),
                   "the reported share rebuilt by the repair it queued, and that repair ended", 60)

        bad = [s for s in range(6) if holder(cap, s) is not gateway][:3]  # three bad shares of segment 6
        for share in bad:
            corrupt_block(holder(cap, share), si, share, segment=6)
            seen_up(holder(cap, share))
        got = gateway.xsc("store", "get", cap)
        assert got.returncode == 1 and "the download stopped after" in got.stderr.decode(), got.stderr
        assert len(got.stdout) < len(data) and got.stdout == data[:len(got.stdout)]
        assert f"segment 6 cannot be rebuilt: shares {bad} are missing or corrupt" in gateway.log.read_text()
        assert [s["share"] for s in _check(gateway, cap)["shares"] if s["status"] != "ok"] == bad

        data = os.urandom(8 * 65536 + 999)
        cap, si, remote = put("other.bin", data)
        longer = remote[0]
        change_block(holder(cap, longer), si, longer, 3, lambda block: block + b"\0")
        seen_up(holder(cap, longer))
        failures = _gets(gateway)["tag_failures"]
        got = gateway.xsc("store", "get", cap)
        assert got.returncode == 0 and got.stdout == data, got.stderr
        assert _gets(gateway)["tag_failures"] == failures
        assert all(s["status"] == "ok" for s in _check(gateway, cap)["shares"])
    finally:
        kill_all(started)


def _repairs_ended(node, si: bytes) -> list[list[int]] | None:
    """The shares each repair of the file rebuilt (its gateway's `recent_repairs`), once none of it is queued or
    under way; None while one is."""
    status, body = api(node, "GET", "/v1/node/status")
    assert status == 200, body
    audits = body["audits"]
    if audits["repairing"] == si.hex() or audits["repair_queue"]:
        return None
    return [r["repaired"] for r in audits["recent_repairs"] if r["storage_index"] == si.hex() and r["ok"]]


def _check(node, cap: str) -> dict:
    status, body = api(node, "GET", f"/v1/store/files/{cap}/check")  # what `xsc store check` shows
    assert status == 200, body
    return body
