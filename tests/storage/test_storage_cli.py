"""The `xsc store` CLI: put/get and shares lost on a real node process, errors against a node in this process,
and a kill -9 in the middle of a put."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import plyvel

import pytest

from xsc import keys
from xsc.client.sync import SENDFILE_CHUNK, NodeClient
from xsc.storage import Capability, ShareStore
from xsc.node.datadir import BLOCKS_DIR, DB_DIR
from xsc.storage.core import layout

from tests.support.nodes import start_xsc
from tests.support.waiting import eventually


def _cap(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip().splitlines()[-1]


def test_put_get_file_and_stdin_stdout(node_process, tmp_path: Path) -> None:
    node = node_process()
    src = tmp_path / "photo.jpg"
    data = os.urandom(3 * 1024 * 1024 + 11)
    src.write_bytes(data)
    put = node.xsc("store", "put", str(src))
    cap = _cap(put)
    assert cap.startswith("xsc:chk:")
    assert b"survives the loss of any 2 shares, but not the loss of the node" in put.stderr
    out = tmp_path / "out.jpg"
    assert node.xsc("store", "get", cap, "-o", str(out)).returncode == 0
    assert out.read_bytes() == data

    cap2 = _cap(node.xsc("store", "put", "-", input=b"from stdin"))
    got = node.xsc("store", "get", cap2)
    assert got.returncode == 0 and got.stdout == b"from stdin"

    listing = json.loads(node.xsc("store", "ls", "--json").stdout)
    assert {f["name"] for f in listing} == {"photo.jpg", "stdin"}
    check = json.loads(node.xsc("store", "check", cap, "--json").stdout)
    assert check["healthy"] and check["intact"] == 6
    assert node.xsc("store", "verify", cap).returncode == 0
    assert node.xsc("store", "rm", cap).returncode == 0
    missing = node.xsc("store", "get", cap)
    assert missing.returncode == 1 and b"holds no file" in missing.stderr


def test_a_large_put_sends_a_file_by_sendfile_and_a_stream_by_reading_it_with_progress_told_alike(
        node_process, tmp_path: Path, monkeypatch) -> None:
    node = node_process()
    client = NodeClient(node.url, node.token)
    data = os.urandom(2 * SENDFILE_CHUNK + 11)  # over EXPECT_ABOVE: sent once the node said 100 Continue
    (tmp_path / "in.bin").write_bytes(b"skipped" + data)
    sent_by_sendfile: list[int] = []
    sendfile = socket.socket.sendfile

    def counted(sock: socket.socket, *args) -> int:
        sent_by_sendfile.append(sendfile(sock, *args))
        return sent_by_sendfile[-1]

    monkeypatch.setattr(socket.socket, "sendfile", counted)
    caps = []
    for stream in ((tmp_path / "in.bin").open("rb"), io.BytesIO(b"skipped" + data)):
        stream.seek(len(b"skipped"))  # the body begins where the stream stands
        told: list[int] = []
        with stream:
            caps.append(client.upload("/v1/store/files", stream, size=len(data), on_progress=told.append)["capability"])
        assert sum(told) == len(data)
    assert sum(sent_by_sendfile) == len(data)  # the file's bytes all went by sendfile, the stream's none
    for cap in caps:
        got = node.xsc("store", "get", cap)
        assert got.returncode == 0 and got.stdout == data


def test_bad_input_gives_one_line_and_exit_1(cli_node, tmp_path: Path) -> None:
    node = cli_node()
    for args, words in [
        (("store", "put", str(tmp_path / "nope.bin")), b"no such file"),
        (("store", "put", str(tmp_path)), b"not a regular file"),
        (("store", "get", "xsc:chk:abc"), b"capability"),
        (("store", "check", "not-a-cap"), b"not an xsc capability"),
    ]:
        result = node.xsc(*args)
        assert result.returncode == 1, args
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xsc: error:") and words in result.stderr, result.stderr


def test_wrong_token_is_refused(cli_node) -> None:
    node = cli_node()
    result = node.xsc("store", "ls", env={"XSC_TOKEN": "wrong"})
    assert result.returncode == 1 and b"wrong API token" in result.stderr


def test_three_shares_lost_writes_nothing_to_the_output(node_process, tmp_path: Path) -> None:
    node = node_process()
    data = os.urandom(2 * 1024 * 1024)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    cap = _cap(node.xsc("store", "put", str(src)))
    node.stop()
    db = plyvel.DB(str(node.data_dir / "db"))
    store = ShareStore(db, 1 << 30)
    si = Capability.parse(cap).storage_index
    for share in (0, 2):
        store.delete_share(si, share)
    db.close()
    node.start()
    out = tmp_path / "two-lost.bin"
    assert node.xsc("store", "get", cap, "-o", str(out)).returncode == 0
    assert out.read_bytes() == data

    node.stop()
    db = plyvel.DB(str(node.data_dir / "db"))
    ShareStore(db, 1 << 30).delete_share(si, 5)
    db.close()
    node.start()
    out = tmp_path / "three-lost.bin"
    result = node.xsc("store", "get", cap, "-o", str(out))
    assert result.returncode == 1
    assert b"only 3 of 6 shares are intact" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".three-lost*"))


def _bytes_received(node) -> float:
    """Plaintext bytes the node has taken from puts so far (its /metrics)."""
    request = urllib.request.Request(node.url + "/metrics", headers={"Authorization": f"Bearer {node.token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:  # the storage figures are the token holder's
        lines = answer.read().decode().splitlines()
    return next(float(line.split()[1]) for line in lines if line.startswith("xsc_storage_bytes_received_total"))


@pytest.mark.slow
@pytest.mark.parametrize("over", ["the data dir's socket", "HTTP"])
def test_kill_9_during_a_large_put_leaves_the_store_consistent(node_process, tmp_path: Path, over: str) -> None:
    node = node_process()
    early = os.urandom(1024 * 1024 + 3)
    (tmp_path / "early.bin").write_bytes(early)
    early_cap = _cap(node.xsc("store", "put", str(tmp_path / "early.bin")))
    used_before = json.loads(node.xsc("node", "status", "--json").stdout)["storage"]["used"]

    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(300):
            f.write(os.urandom(1024 * 1024))
    named = ["--node", node.url] if over == "HTTP" else []  # else handed to the node, which reads it
    put = start_xsc("--data-dir", str(node.data_dir), *named, "store", "put", str(big), stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    # Killed once the node has taken 8 MiB of the put (the gateway reads a segment or two ahead of what it has
    # stored: blocks are written by then), long before the 300 MiB are in.
    eventually(lambda: _bytes_received(node) >= 8 * 1024 * 1024, "the node to take 8 MiB of the put", 60)
    node.kill()
    put.wait(60)
    assert put.returncode == 1

    node.start()
    status = json.loads(node.xsc("node", "status", "--json").stdout)["storage"]
    assert status["used"] == used_before and status["reserved"] == 0 and status["shares"] == 6
    listing = json.loads(node.xsc("store", "ls", "--json").stdout)
    assert [f["capability"] for f in listing] == [early_cap]
    assert node.xsc("store", "get", early_cap).stdout == early
    node.stop()
    blocks = 0
    for folder in (DB_DIR, BLOCKS_DIR):  # the records and staged uploads' blocks
        db = plyvel.DB(str(node.data_dir / folder))
        try:
            assert list(db.iterator(prefix=keys.UPLOADS)) == []
            blocks += sum(1 for _ in db.iterator(prefix=keys.blocks_of(b""), include_value=False))
        finally:
            db.close()
    assert blocks == 6 * layout.segment_count(len(early), 1024 * 1024)
