"""The real `xsc` CLI run in-process (tests/support/cli.py) with its output as text, against a node
served from a thread of this process (the `cli_node` fixture)."""

from __future__ import annotations

import pytest

from tests.support.cli import TextNode


@pytest.fixture
def thread_node(cli_node):
    """thread_node(name="node", storage={...}) -> a started node (see cli_node) whose `.xsc` answers in text."""

    def start(name: str = "node", **sections) -> TextNode:
        return TextNode(cli_node(name, **sections))

    return start
