"""`xsc store put FILE` beside its node: the CLI hands the node its open file over the data dir's Unix socket and the
node reads it (xsc/serve/handoff.py); over HTTP where no node takes it there."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from pathlib import Path

import pytest

from xsc import errors
from xsc.client.sync import NodeClient, hand_over
from xsc.paths import SOCKET_FILE

from tests.support.waiting import eventually

MiB = 1024 * 1024


def _cap(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip().splitlines()[-1]


def _status(node) -> dict:
    return NodeClient(node.url, node.token).request("GET", "/v1/node/status")


def _same_back(node, cap: str, data: bytes, tmp_path: Path) -> bool:
    out = tmp_path / "out.bin"
    out.unlink(missing_ok=True)
    assert node.xsc("store", "get", cap, "-o", str(out)).returncode == 0
    return out.read_bytes() == data


def test_a_put_beside_the_node_hands_it_the_file_and_round_trips(node_process, tmp_path: Path) -> None:
    node = node_process()
    assert (node.data_dir / SOCKET_FILE).is_socket()
    data = os.urandom(3 * MiB + 11)
    (tmp_path / "in.bin").write_bytes(data)
    cap = _cap(node.xsc("store", "put", str(tmp_path / "in.bin")))
    assert _status(node)["handoff"]["taken"] == 1  # the node read the file itself
    assert _same_back(node, cap, data, tmp_path)
    answer = json.loads(node.xsc("store", "put", str(tmp_path / "in.bin"), "--name", "again", "--json").stdout)
    assert answer["size"] == len(data) and answer["segments"] == 4 and answer["capability"].startswith("xsc:chk:")
    assert _status(node)["handoff"] == {"socket": str(node.data_dir / SOCKET_FILE), "held": 0, "taken": 2}
    assert {f["name"] for f in json.loads(node.xsc("store", "ls", "--json").stdout)} == {"in.bin", "again"}


def test_without_a_node_on_the_socket_the_cli_puts_over_http(node_process, tmp_path: Path) -> None:
    node = node_process()
    data = os.urandom(2 * MiB + 3)
    (tmp_path / "in.bin").write_bytes(data)
    (node.data_dir / SOCKET_FILE).unlink()  # a node without the socket (an older one): nobody to hand the file to
    assert _same_back(node, _cap(node.xsc("store", "put", str(tmp_path / "in.bin"))), data, tmp_path)
    (node.data_dir / SOCKET_FILE).write_bytes(b"")  # not a socket at all
    assert _same_back(node, _cap(node.xsc("store", "put", str(tmp_path / "in.bin"))), data, tmp_path)
    named = node.xsc("--node", node.url, "store", "put", str(tmp_path / "in.bin"))  # maybe another node than the dir's
    assert _same_back(node, _cap(named), data, tmp_path)
    assert _status(node)["handoff"]["taken"] == 0


def test_a_file_that_shrinks_during_its_put_fails_and_leaves_nothing(node_process, tmp_path: Path) -> None:
    node = node_process()
    path = tmp_path / "in.bin"
    path.write_bytes(os.urandom(3 * MiB))
    client = NodeClient(node.url, node.token)
    with open(path, "rb") as f:
        token, size = hand_over(str(node.data_dir / SOCKET_FILE), f.fileno())
        os.truncate(path, MiB + 7)  # cut after the node was told its size
        with pytest.raises(errors.BadRequest, match=f"the upload ended after {MiB + 7} of {size} bytes"):
            client.put_handed("/v1/store/files", {"local": token}, lambda: 0)
    assert client.request("GET", "/v1/store/files")["files"] == []
    storage = _status(node)["storage"]
    assert storage["used"] == 0 and storage["reserved"] == 0 and storage["shares"] == 0
    with pytest.raises(errors.NotFound, match="a put took it already"):  # a token is good for one put
        client.put_handed("/v1/store/files", {"local": token}, lambda: 0)


def test_a_put_by_token_refuses_a_body_and_an_unknown_token(node_process, tmp_path: Path) -> None:
    node = node_process()
    client = NodeClient(node.url, node.token)
    with pytest.raises(errors.NotFound, match="no file is held under that token"):
        client.put_handed("/v1/store/files", {"local": "never-handed-over"}, lambda: 0)
    with pytest.raises(errors.BadRequest, match="has no body"):
        client.request("POST", "/v1/store/files", query={"local": "x"}, body=b"abc")
    with pytest.raises(errors.Unauthorized):
        NodeClient(node.url, "wrong").put_handed("/v1/store/files", {"local": "x"}, lambda: 0)


def test_a_file_the_node_refuses_on_its_socket_is_put_over_http(node_process, tmp_path: Path) -> None:
    node = node_process()
    data = os.urandom(MiB + 5)
    (tmp_path / "in.bin").write_bytes(data)
    with open(tmp_path / "in.bin", "rb") as f:
        for _ in range(16):  # as many as the node holds for their puts
            assert hand_over(str(node.data_dir / SOCKET_FILE), f.fileno()) is not None
        with pytest.raises(errors.QuotaExceeded):
            hand_over(str(node.data_dir / SOCKET_FILE), f.fileno())
    put = node.xsc("store", "put", str(tmp_path / "in.bin"))  # refused on the socket: over HTTP
    assert _same_back(node, _cap(put), data, tmp_path)
    assert _status(node)["handoff"]["taken"] == 0


def test_a_put_whose_caller_goes_away_stops_and_keeps_nothing(node_process, tmp_path: Path) -> None:
    node = node_process(env={"XSC_STORAGE_CAPACITY": str(4096 * MiB)})
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(1024 * MiB)  # sparse: read at once, encoded for seconds
    with open(path, "rb") as f:
        token, _ = hand_over(str(node.data_dir / SOCKET_FILE), f.fileno())
        conn = http.client.HTTPConnection("127.0.0.1", node.port)
        conn.request("POST", f"/v1/store/files?local={token}", headers={"Authorization": f"Bearer {node.token}"})
        eventually(lambda: _status(node)["storage"]["reserved"] > 0, "the put to write its first blocks")
        conn.close()  # as a CLI stopped with Ctrl-C: the node reads no further and keeps nothing

    def stopped() -> bool:
        storage = _status(node)["storage"]
        return storage["reserved"] == 0 and storage["used"] == 0 and storage["shares"] == 0

    eventually(stopped, "the put to stop and give back what it wrote")
    assert NodeClient(node.url, node.token).request("GET", "/v1/store/files")["files"] == []
