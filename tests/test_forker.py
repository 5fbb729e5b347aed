"""The suite's node processes are forked from one that has imported the node (tests/support/forker.py): each child
must still be the process the `xsc` script would have been, with its own arguments, environment, directory,
output and exit status, and its own random draws."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.forker import ForkedProcess, Forker
from tests.support.nodes import xsc_command
from xsc import devnet, ids


@pytest.fixture
def forker():
    forker = Forker()
    yield forker
    forker.close()


def _run(forker: Forker, tmp_path: Path, *args: str, env: dict[str, str] | None = None, name: str = "out"):
    log = tmp_path / f"{name}.log"
    with open(log, "ab") as out:
        process = forker.popen([*xsc_command(), *args], stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=tmp_path)
    return process, log


def test_a_forked_command_has_its_own_arguments_environment_directory_output_and_exit_status(forker, tmp_path):
    process, log = _run(forker, tmp_path, "--data-dir", "here", "config", "show", "--json",
                        env={"XSC_STORAGE_CAPACITY": "5G"})
    assert isinstance(process, ForkedProcess) and process.wait(60) == 0
    shown = json.loads(log.read_text())
    assert shown["sources"]["storage.capacity"] == "env" and Path(shown["file"]).parent == tmp_path / "here"

    process, log = _run(forker, tmp_path, "no-such-command", name="wrong")
    assert process.wait(60) == 2 and "no such command" in log.read_text()


def test_a_forked_node_stops_on_sigterm_and_reports_kill_9(node_process):
    nodes = [node_process(name) for name in ("a", "b")]
    assert isinstance(nodes[0].proc, ForkedProcess)
    assert os.getpid() not in {int(Path(f"/proc/{node.pid}/stat").read_text().split()[3]) for node in nodes}
    assert nodes[0].stop() == 0 and "stopped" in nodes[0].log.read_text()
    assert nodes[1].stop(signal.SIGKILL) == -signal.SIGKILL and not nodes[1].alive()


def test_a_command_is_fed_its_input_and_its_output_and_errors_come_back_apart(node_process):
    assert devnet.popen.__self__.__class__ is Forker  # the suite's own forker
    node = node_process("n")
    data = os.urandom(300_000)  # more than a pipe holds, each way
    put = node.xsc("store", "put", "-", input=data)
    assert put.returncode == 0, put.stderr
    got = node.xsc("store", "get", put.stdout.decode().strip())
    assert got.returncode == 0 and got.stdout == data
    wrong = node.xsc("store", "get", "URI:nothing")
    assert wrong.returncode == 1 and wrong.stdout == b"" and wrong.stderr.startswith(b"xsc: ")


def test_a_variable_only_an_interpreter_start_reads_gets_a_fresh_interpreter(forker, tmp_path):
    with open(tmp_path / "log", "ab") as out:
        process = forker.popen([*xsc_command(), "--help"], stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONHASHSEED": "7"})
    assert isinstance(process, subprocess.Popen) and process.wait(60) == 0


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, ids.unique_bytes(16))
        os._exit(0)
    os.close(write)
    drawn = os.read(read, 16)
    os.waitpid(pid, 0)
    assert drawn != ids.unique_bytes(16)
