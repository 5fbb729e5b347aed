"""What `xsc store get` loads as it starts.  A get's time counts from its process's start, and each module
imported is milliseconds of it: the modules a get does not use stay out of its process."""

from __future__ import annotations

import os
import subprocess
import sys

# The real CLI in a process of its own that, at exit, writes the names of the modules it loaded to stderr.
_LIST_MODULES_AT_EXIT = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nmodules: ' + ' '.join(sorted(sys.modules)) + '\\n'))\n"
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
    "xsc.node", "xsc.storage.core.crypto", "xsc.cli.compute", "xsc.cli.market", "xsc.cli.ledger",
}


def _loaded_by(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    result = subprocess.run([sys.executable, "-c", _LIST_MODULES_AT_EXIT, *args], capture_output=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k not in ("XSC_NODE", "XSC_NODE_LISTEN")})
    line = result.stderr.decode().strip().splitlines()[-1]
    assert line.startswith("modules: "), result.stderr.decode()
    return result, set(line.split()[1:])


def test_a_get_starts_without_the_modules_it_does_not_use(thread_node, tmp_path) -> None:
    node = thread_node()
    data = os.urandom(70_000)
    cap = node.xsc("store", "put", "-", input=data).stdout.strip()
    got, loaded = _loaded_by(["--data-dir", str(node.data_dir), "store", "get", cap])
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == data
    assert "xsc.storage.core.capability" in loaded  # the capability was checked before the request
    assert not NOT_FOR_A_GET & loaded, sorted(NOT_FOR_A_GET & loaded)

    target = tmp_path / "copy.bin"
    got, loaded = _loaded_by(["--data-dir", str(node.data_dir), "store", "get", cap, "-o", str(target)])
    assert got.returncode == 0, got.stderr.decode()
    assert target.read_bytes() == data
    assert not NOT_FOR_A_GET & loaded, sorted(NOT_FOR_A_GET & loaded)
