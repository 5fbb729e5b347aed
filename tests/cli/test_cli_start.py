"""What `xsc store get`, `xsc store put` and the commands that call the node load.  A get's or a put's time counts
from its process's start to its end, and each module imported is milliseconds of it: the modules a command does not
use stay out of its process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.support.compute import WASM

# The real CLI in a process of its own that, at exit, writes to stderr how many objects the collector was told to
# leave alone, and the names of the modules it loaded.
_LIST_MODULES_AT_EXIT = (
    "import atexit, gc, sys\n"
    "atexit.register(lambda: sys.stderr.write(f'\\nfrozen: {gc.get_freeze_count()}\\n'\n"
    "                                         f'modules: {\" \".join(sorted(sys.modules))}\\n'))\n"
    "sys.argv = ['xsc', *sys.argv[1:]]\n"
    "from xsc.cli import main\n"
    "main()\n"
)

# What other commands, or the node, use; a get does without them.
NOT_FOR_A_GET = {
    "aiohttp", "cryptography", "plyvel", "wasmtime", "pydantic", "rich", "http.client", "ssl",
    "zfec", "argparse", "_hashlib",  # the erasure coder and the SHA-256 of a capability's storage index
    "tomllib",  # the config file, read only when the data dir has no node.url
    "shutil", "textwrap",  # the terminal's width and wrapping, for output to a terminal
    "encodings.idna",  # a str host name's encoding, done by getaddrinfo
    "xsc.codec", "orjson", "json",  # JSON: a get's body is none, and the node's refusal is read only if it comes
    "xsc.node", "xsc.storage.core.crypto", "xsc.cli.compute", "xsc.cli.market", "xsc.cli.ledger",
}

# What a command whose calls to the node have bodies of known length does without (xsc/client/sync.py, `_ask`).
NOT_FOR_A_CALL = {"http.client", "ssl", "email"}

# What a put of a file does without, beside those: the node's ledger package (and the asyncio, cryptography and plyvel
# its import brings), whose rendering of credits alone it prints (xsc/units.py, format_credits).
NOT_FOR_A_PUT = {"xsc.ledger", "xsc.cli.ledger", "asyncio", "cryptography", "plyvel", *NOT_FOR_A_CALL}


def _run(args: list[str]) -> tuple[subprocess.CompletedProcess, int, set[str]]:
    """`xsc ARGS`'s outcome, the number of objects frozen at its exit, and the modules it loaded."""
    result = subprocess.run([sys.executable, "-c", _LIST_MODULES_AT_EXIT, *args], capture_output=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k not in ("XSC_NODE", "XSC_NODE_LISTEN")})
    frozen, modules = result.stderr.decode().strip().splitlines()[-2:]
    assert frozen.startswith("frozen: ") and modules.startswith("modules: "), result.stderr.decode()
    return result, int(frozen.split()[1]), set(modules.split()[1:])


def test_a_get_starts_without_the_modules_it_does_not_use(thread_node, tmp_path) -> None:
    node = thread_node()
    data = os.urandom(70_000)
    cap = node.xsc("store", "put", "-", input=data).stdout.strip()
    got, _, loaded = _run(["--data-dir", str(node.data_dir), "store", "get", cap])
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == data
    assert "xsc.storage.core.capability" in loaded  # the capability was checked before the request
    assert not NOT_FOR_A_GET & loaded, sorted(NOT_FOR_A_GET & loaded)

    target = tmp_path / "copy.bin"
    got, _, loaded = _run(["--data-dir", str(node.data_dir), "store", "get", cap, "-o", str(target)])
    assert got.returncode == 0, got.stderr.decode()
    assert target.read_bytes() == data
    assert not NOT_FOR_A_GET & loaded, sorted(NOT_FOR_A_GET & loaded)


def test_a_put_prints_what_its_lease_costs_without_importing_the_ledger(thread_node, tmp_path) -> None:
    node = thread_node()
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(70_000))
    put, _, loaded = _run(["--data-dir", str(node.data_dir), "store", "put", str(source)])
    assert put.returncode == 0, put.stderr.decode()
    assert put.stdout.decode().strip().startswith("xsc:chk:")
    said = " ".join(put.stderr.decode().split())  # the line is wrapped to the terminal's width
    assert re.search(r"the lease costs \d+\.\d{6} credits at ", said), said
    assert not NOT_FOR_A_PUT & loaded, sorted(NOT_FOR_A_PUT & loaded)


def test_a_command_that_calls_the_node_starts_without_http_client(thread_node, tmp_path) -> None:
    node = thread_node()
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(70_000))
    for args in (["store", "ls"], ["node", "status"], ["compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2"],
                 ["--node", node.url, "store", "put", str(small)]):  # sent over HTTP, the file not handed over
        done, _, loaded = _run(["--data-dir", str(node.data_dir), *args])
        assert done.returncode == 0, done.stderr.decode()
        assert not NOT_FOR_A_CALL & loaded, (args, sorted(NOT_FOR_A_CALL & loaded))


def test_a_command_leaves_what_it_made_to_the_system_at_exit_and_still_ends_whole(thread_node, tmp_path) -> None:
    """Its objects are frozen, not collected one by one as the process ends; its output and atexit's handlers (the
    line this test reads) are still complete, and so is a command's refusal."""
    node = thread_node()
    data = os.urandom(3 * 1024 * 1024 + 1)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    put, frozen, _ = _run(["--data-dir", str(node.data_dir), "store", "put", str(source)])
    assert put.returncode == 0, put.stderr.decode()
    assert frozen > 1000
    cap = put.stdout.decode().strip().splitlines()[-1]
    got, frozen, _ = _run(["--data-dir", str(node.data_dir), "store", "get", cap])
    assert got.returncode == 0 and got.stdout == data and frozen > 1000
    refused, frozen, _ = _run(["--data-dir", str(node.data_dir), "store", "get", "xsc:chk:nonsense"])
    assert refused.returncode == 1 and frozen > 1000
    assert refused.stderr.decode().splitlines()[0].startswith("xsc: error: ")


# The CLI in a process of its own with an atexit handler that says it ran; with "thread" as its first argument, a
# thread that is no daemon runs on for a moment after the command, and says when it ends.
_ENDINGS = (
    "import atexit, sys, threading, time\n"
    "atexit.register(lambda: sys.stderr.write('handler ran\\n'))\n"
    "if sys.argv[1] == 'thread':\n"
    "    threading.Thread(target=lambda: (time.sleep(0.3), sys.stderr.write('thread ended\\n'))).start()\n"
    "sys.argv = ['xsc', *sys.argv[2:]]\n"
    "from xsc.cli import main\n"
    "main()\n"
)


def _ending(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _ENDINGS, *args], capture_output=True, timeout=60)


def test_a_command_ended_past_the_interpreters_teardown_still_runs_its_handlers_once_and_gives_its_output() -> None:
    ended = _ending("-", "--version")
    assert ended.returncode == 0
    assert ended.stdout.decode().startswith("xsc, version ")
    assert ended.stderr.decode().splitlines() == ["handler ran"]

    refused = _ending("-", "store", "get", "xsc:chk:nonsense", "--data-dir", "/nonexistent")
    assert refused.returncode == 1
    assert refused.stderr.decode().startswith("xsc: error: ")
    assert refused.stderr.decode().splitlines()[1:] == ["handler ran"]
    misused = _ending("-", "--no-such-option")
    assert misused.returncode == 2 and misused.stderr.decode().splitlines()[-1] == "handler ran"


def test_a_command_that_leaves_a_thread_running_ends_once_the_thread_has() -> None:
    ended = _ending("thread", "--version")
    assert ended.returncode == 0
    assert ended.stdout.decode().startswith("xsc, version ")
    assert ended.stderr.decode().splitlines() == ["thread ended", "handler ran"]


# The console script (`xsc = "xsc.cli:main"`), as pip writes it, after a finder that sends the process a SIGINT (as a
# Ctrl-C does) the moment module LOADING is first imported: the signal lands at that moment whatever the machine's
# load, where a test watching the process from outside may see it end before it can send one.
_INTERRUPTED_CONSOLE_SCRIPT = """
import os, signal, sys
class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == LOADING:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupting())
from xsc.cli import main
sys.argv[0] = 'xsc'
sys.exit(main())
"""


@pytest.mark.parametrize("loading", ["_opcode", "_datetime", "_decimal"])
def test_a_ctrl_c_while_the_cli_is_imported_is_one_line_not_a_traceback(loading: str) -> None:
    """A Ctrl-C in the first tens of milliseconds of a command, while click and the CLI are imported (the moment
    each of these extension modules is imported: click's first imports, its last, the CLI's output module's decimal
    numbers), ends it as any Ctrl-C does: `xsc: interrupted` and exit 130."""
    script = _INTERRUPTED_CONSOLE_SCRIPT.replace("LOADING", repr(loading))
    # As from a terminal: SIGINT not ignored, even where this test runs with it ignored (in a job started with &).
    process = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, timeout=60,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (process.returncode, process.stderr.decode()) == (130, "xsc: interrupted\n"), process.stdout[-300:]
