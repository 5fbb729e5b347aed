"""The CLI's one progress bar (xsc/cli/progress.py): drawn on stderr when it is a terminal, never elsewhere; verify and
repair draw the node's progress with it and print what they printed without it, --json the JSON call's answer."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys

from xsc.node.appkeys import NODE
from xsc.storage import Capability

from tests.support.cli import xsc

SEG = 4096


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_is_drawn_on_a_terminal_only(monkeypatch) -> None:
    from xsc.cli.progress import progress_bar

    for stream, shown, drawn in [(_Terminal(), True, True), (_Terminal(), False, False), (io.StringIO(), True, False)]:
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar("nodes up", 3, shown=shown) as bar:
            bar.advance()
            bar.show(2, 3, "nodes up: 2")
        assert ("nodes up" in stream.getvalue()) == drawn, stream.getvalue()


def _damaged(node) -> str:
    cap = node.xsc("store", "put", "-", input=os.urandom(6 * SEG)).stdout.strip()
    si = Capability.parse(cap).storage_index
    assert node.app[NODE].store.delete_share(si, 2)
    return cap


def _on_a_terminal(node, *args: str) -> tuple[subprocess.CompletedProcess, bytes]:
    """`xsc ARGS` in a process of its own, its stderr a terminal: its outcome, and what it drew there."""
    main, other = pty.openpty()
    try:
        # Without pytest-xdist's COLUMNS=80: its stdout a pipe, its tables are as whole as an in-process run's.
        environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        done = subprocess.run([sys.executable, "-m", "xsc", "--data-dir", str(node.data_dir), *args],
                              stdout=subprocess.PIPE, stderr=other, timeout=60, env=environ)
        os.close(other)
        drawn = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal's other end closed: all is read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(main)
    return done, drawn


def test_verify_and_repair_draw_the_nodes_progress_on_a_terminal_and_print_the_same(thread_node) -> None:
    node = thread_node(storage={"segment_size": SEG})
    cap = _damaged(node)
    piped = node.xsc("store", "verify", cap)
    assert piped.exit_code == 1 and piped.stderr == "", piped.output  # no bar into a pipe
    done, drawn = _on_a_terminal(node, "store", "verify", cap)
    assert done.returncode == 1 and done.stdout.decode() == piped.stdout
    assert b"verify" in drawn, drawn
    done, drawn = _on_a_terminal(node, "store", "repair", cap)
    assert done.returncode == 0 and done.stdout.decode().splitlines()[-1] == "repaired shares 2", done.stdout
    assert b"repair" in drawn, drawn


def test_json_output_is_the_json_calls_answer(thread_node) -> None:
    node = thread_node(storage={"segment_size": SEG})
    cap = _damaged(node)
    from xsc.client.sync import NodeClient

    client = NodeClient(node.url, node.token)
    path = f"/v1/store/files/{cap}"
    verify = node.xsc("store", "verify", cap, "--json")
    assert verify.exit_code == 1 and verify.stderr == ""
    assert json.loads(verify.stdout) == client.request("POST", f"{path}/verify")
    called = client.request("POST", f"{path}/repair")
    assert called["repaired"] == [2]
    assert node.app[NODE].store.delete_share(Capability.parse(cap).storage_index, 2)  # the same damage again
    repair = node.xsc("store", "repair", cap, "--json")
    assert repair.exit_code == 0 and repair.stderr == ""
    assert json.loads(repair.stdout) == called


def test_a_repair_that_fails_mid_way_says_why_in_one_line(thread_node) -> None:
    node = thread_node(storage={"segment_size": SEG})
    cap = node.xsc("store", "put", "-", input=os.urandom(3 * SEG)).stdout.strip()
    for share in (0, 1, 2):
        assert node.app[NODE].store.delete_share(Capability.parse(cap).storage_index, share)
    for args in (("store", "repair", cap), ("store", "repair", cap, "--json")):
        failed = node.xsc(*args)
        assert failed.exit_code == 1 and failed.stdout == "", failed.output
        said = failed.stderr.strip().splitlines()
        assert len(said) == 1 and said[0].startswith("xsc: error: only 3 of 6 shares are intact"), said
        assert "nothing was changed" in said[0] and "xsc store repair" in said[0]


def test_verify_all_draws_the_files_and_bytes_done_and_a_files_name(thread_node) -> None:
    node = thread_node(storage={"segment_size": SEG})
    _damaged(node)
    node.xsc("store", "put", "-", "--name", "notes", input=os.urandom(SEG))
    piped = node.xsc("store", "verify", "--all")
    assert piped.exit_code == 1 and piped.stderr == "", piped.output
    done, drawn = _on_a_terminal(node, "store", "verify", "--all")
    assert done.returncode == 1 and done.stdout.decode() == piped.stdout
    # At least its last frame: the files done of all, their bytes, and a file's name.
    assert b"verify: 28.0 KiB of 28.0 KiB; " in drawn and b"2/2" in drawn, drawn
