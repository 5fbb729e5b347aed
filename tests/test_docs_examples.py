"""Every shell example the docs mark runnable runs as written against a real node, and exits 0.

Mark a ```sh block in README.md or docs/*.md by putting one of these on the line before it:

    <!-- runnable -->                  each line runs, in order, in one bash with `set -euo pipefail`
    <!-- runnable: starts a node -->   each line starts a node in the background (as in its own
                                       terminal); it must say "listening on", and runs until the
                                       document's examples are done

The blocks of one document run in order against one node (started as `xsc node start` on a free
port, with its data dir in a temp HOME, so `~/.xsc` is that node), from a folder that holds
`photo.jpg` and the repo's `fixtures/`.  Shell variables a block assigns (`CAP=$(...)`) are kept
for the next blocks.  The addresses 127.0.0.1:7070 and 127.0.0.1:7071 in the docs are replaced by
the first node's port and another free port.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from xsc.devnet import DEVNET_ENV

from tests.support.nodes import free_port

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- runnable(?::\s*(?P<kind>[a-z ]+?))?\s*-->\s*$")
KINDS = {None, "starts a node"}


@dataclass
class Block:
    doc: Path
    line: int  # of the fence, 1-based
    kind: str | None
    text: str

    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def runnable_blocks(doc: Path) -> list[Block]:
    lines = doc.read_text().splitlines()
    blocks = []
    for n, line in enumerate(lines):
        found = MARKER.match(line)
        if not found:
            continue
        fence = lines[n + 1] if n + 1 < len(lines) else ""
        assert fence.strip() == "```sh", f"{doc.name}:{n + 1}: a runnable marker must come right before a ```sh block"
        assert found["kind"] in KINDS, f"{doc.name}:{n + 1}: unknown kind {found['kind']!r} (one of {KINDS})"
        end = next(i for i in range(n + 2, len(lines)) if lines[i].strip() == "```")
        blocks.append(Block(doc, n + 2, found["kind"], "\n".join(lines[n + 2:end])))
    return blocks


def test_the_docs_mark_examples_runnable() -> None:
    marked = {doc.name: len(runnable_blocks(doc)) for doc in DOCS}
    assert marked["README.md"] >= 3 and marked["compute.md"] >= 1 and marked["peers.md"] >= 2, marked


def _commands(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class DocRun:
    """What one document's examples share: a temp HOME, a work folder, a running first node."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.work = root / "work"
        self.home.mkdir()
        self.work.mkdir()
        (self.work / "fixtures").symlink_to(REPO / "fixtures")
        (self.work / "photo.jpg").write_bytes(os.urandom(200_000))
        self.state = root / "state.sh"
        self.ports = {"7070": str(free_port()), "7071": str(free_port())}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XSC_")}
        # The examples' nodes are one user's loopback network, as a devnet's: ids without proof of work (a first
        # start would mint one for a minute or two) and credit for each other (docs/security.md).
        self.env.update(DEVNET_ENV)
        self.env.update(HOME=str(self.home), COLUMNS="80",
                        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        self.background: list[subprocess.Popen] = []

    def substitute(self, text: str) -> str:
        for port, free in self.ports.items():
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free}")
        return text

    def start_node(self, command: str, where: str) -> None:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.work, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.background.append(proc)
        seen = []
        while True:
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                pytest.fail(f"{where}: `{command}` exited with {proc.wait()} before listening:\n{''.join(seen)}")
            seen.append(line)
            if "listening on" in line:
                return

    def run(self, block: Block) -> None:
        text = self.substitute(block.text)
        if block.kind == "starts a node":
            for command in _commands(text):
                self.start_node(command, block.where())
            return
        assigned = sorted(set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)=", text, re.M)))
        script = "set -euo pipefail\n" + (f"source {self.state}\n" if self.state.exists() else "") + text + "\n"
        if assigned:
            script += f"declare -p {' '.join(assigned)} >> {self.state}\n"
        result = subprocess.run(["bash", "-c", script], cwd=self.work, env=self.env, capture_output=True,
                                timeout=300)
        assert result.returncode == 0, (
            f"{block.where()}: exit {result.returncode}\n--- block ---\n{block.text}\n--- stdout ---\n"
            f"{result.stdout.decode(errors='replace')[-3000:]}\n--- stderr ---\n"
            f"{result.stderr.decode(errors='replace')[-3000:]}")

    def stop(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.background:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCS if runnable_blocks(d)], ids=lambda d: d.name)
def test_runnable_examples_exit_0(doc: Path, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    run = DocRun(tmp_path)
    try:
        run.start_node(f"xsc node start --listen 127.0.0.1:{run.ports['7070']}", "the first node")
        for block in runnable_blocks(doc):
            run.run(block)
    finally:
        run.stop()
