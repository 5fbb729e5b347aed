"""The real `xsc` CLI run in-process (tests/support/cli.py) with its output as text, against a node
served from a thread of this process (the `cli_node` fixture)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pytest

from tests.support.cli import ThreadedNode, xsc_in_process


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def xsc(*args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> Result:
    """Run `xsc ARGS...` in this process, as `main()` does (exit codes and error lines as users see them)."""
    done = xsc_in_process(*args, input=input, env=env)
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


class TextNode:
    """A ThreadedNode whose `xsc` names only its data dir (the CLI finds the node through node.url)
    and answers in text."""

    def __init__(self, node: ThreadedNode) -> None:
        self.node = node

    def __getattr__(self, name: str):
        return getattr(self.node, name)

    def xsc(self, *args: str, **kw) -> Result:
        return xsc("--data-dir", str(self.node.data_dir), *args, **kw)


@pytest.fixture
def thread_node(cli_node):
    """thread_node(name="node", storage={...}) -> a started node (see cli_node) whose `.xsc` answers in text."""

    def start(name: str = "node", **sections) -> TextNode:
        return TextNode(cli_node(name, **sections))

    return start
