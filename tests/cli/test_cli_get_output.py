"""`store get -o`: failures leave nothing and explain themselves; no silent overwrite; no binary
on a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from xsc.client import sync as cli_client
from xsc.devnet import xsc_command

from tests.support.cli import xsc


@pytest.fixture
def stored(thread_node):
    node = thread_node()
    data = os.urandom(3 * 1024 * 1024 + 5)
    cap = node.xsc("store", "put", "-", input=data).stdout.strip()
    assert cap.startswith("xsc:chk:")
    return node, cap, data


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("failure", [KeyboardInterrupt, ConnectionResetError])
def test_an_interrupted_or_failed_get_leaves_no_file(stored, tmp_path: Path, monkeypatch, failure) -> None:
    node, cap, _ = stored
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real_splice_to = cli_client.NodeBody.splice_to

    def some_bytes_then_fail(self, out, stop=None, idle=None, progress=None, head=False):
        def fail(n: int) -> None:
            raise failure()
        real_splice_to(self, out, stop, idle, fail, head)

    monkeypatch.setattr(cli_client.NodeBody, "splice_to", some_bytes_then_fail)
    result = node.xsc("store", "get", cap, "-o", str(out_dir / "copy.bin"))
    assert result.exit_code == (130 if failure is KeyboardInterrupt else 1), result.output
    assert len(result.stderr.split()) and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert _leftovers(out_dir) == []


def test_a_missing_folder_is_one_clear_line(stored, tmp_path: Path) -> None:
    node, cap, _ = stored
    result = node.xsc("store", "get", cap, "-o", str(tmp_path / "missing" / "dir" / "x"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"xsc: error: cannot write {tmp_path / 'missing' / 'dir' / 'x'}: there is no folder "
        f"{tmp_path / 'missing' / 'dir'} (create it first, or give -o a path in an existing folder)"]


def test_an_existing_file_is_refused_unless_force(stored, tmp_path: Path) -> None:
    node, cap, data = stored
    target = tmp_path / "there.bin"
    target.write_bytes(b"keep me")
    refused = node.xsc("store", "get", cap, "-o", str(target))
    assert refused.exit_code == 1 and "already exists" in refused.stderr and "--force" in refused.stderr
    assert target.read_bytes() == b"keep me"
    forced = node.xsc("store", "get", cap, "-o", str(target), "--force")
    assert forced.exit_code == 0, forced.output
    assert target.read_bytes() == data and _leftovers(tmp_path) == ["node", "there.bin"]


def _get_to_a_terminal(node, cap: str, *extra: str) -> tuple[int, bytes, bytes]:
    """Run the real CLI with its stdout on a pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([*xsc_command(), "--data-dir", str(node.data_dir), "store", "get", cap,
                                 *extra], stdout=follower, stderr=subprocess.PIPE)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            seen += chunk
        _, err = proc.communicate(timeout=60)
        return proc.returncode, seen, err
    finally:
        os.close(leader)


def test_binary_to_a_terminal_is_refused_with_a_hint(stored) -> None:
    node, cap, _ = stored
    code, seen, err = _get_to_a_terminal(node, cap)
    assert code == 1 and seen == b""
    assert err.decode().splitlines() == ["xsc: error: not writing binary data to the terminal "
                                         "(write it to a file with -o FILE, or give -o - to print it anyway)"]
    text_cap = node.xsc("store", "put", "-", input=b"plain text\n").stdout.strip()
    code, seen, err = _get_to_a_terminal(node, text_cap)
    assert code == 0 and b"plain text" in seen, err
    code, seen, err = _get_to_a_terminal(node, cap, "-o", "-")
    assert code == 0 and len(seen) > 1024 * 1024, err


@pytest.fixture
def short_node():
    """A node that answers a get with a Content-Length of 3,000,000 and sends 1,000,000 bytes, then closes."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    got_request = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                got_request.set()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: 3000000\r\n\r\n" + bytes(1_000_000))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", got_request
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing alone does not)
    server.close()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize("to_file", [True, False])
def test_a_get_the_node_cuts_short_says_how_much_came_and_leaves_no_file(short_node, tmp_path: Path,
                                                                         to_file: bool) -> None:
    """Through splice(2) into -o FILE, and by copying to a stdout without a descriptor (the in-process CLI's)."""
    from xsc.storage import Capability

    url, got_request = short_node
    cap = Capability(key=bytes(32), manifest_hash=bytes(32), size=3_000_000).text
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["store", "get", cap, "--node", url, "--data-dir", str(tmp_path / "none")]
    result = xsc(*args, *(["-o", str(out_dir / "copy.bin")] if to_file else []), env={"XSC_TOKEN": "t"})
    assert got_request.is_set()
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "xsc: error: the download stopped after 1000000 of 3000000 bytes (the connection closed before the answer "
        "was complete) (run `xsc store verify` on the capability; the node's log says why)"]
    assert _leftovers(out_dir) == []


@pytest.mark.parametrize("force", [(), ("--force",)])
def test_a_device_or_a_pipe_at_o_is_refused_not_replaced_by_a_file(thread_node, tmp_path: Path, force) -> None:
    """`-o /dev/null --force` run as root would replace the device: the output is written beside and renamed over."""
    node = thread_node()
    cap = node.xsc("store", "put", "-", input=b"some bytes").stdout.strip()
    pipe = tmp_path / "a pipe"
    os.mkfifo(pipe)
    for args in (("store", "get", cap), ("s3", "export-index")):
        done = node.xsc(*args, "-o", str(pipe), *force)
        assert done.exit_code == 1 and done.stdout == "", done.output
        assert done.stderr.splitlines() == [f"xsc: error: cannot write {pipe}: it is not a regular file "
                                            f"(write to stdout and redirect it: -o - > '{pipe}')"]
        assert pipe.is_fifo() and _leftovers(tmp_path) == ["a pipe", "node"]
