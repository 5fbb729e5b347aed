"""Where a node keeps its files (light: the CLI imports it on every call)."""

from __future__ import annotations

import os
from pathlib import Path

URL_FILE = "node.url"  # the URL the data dir's node last listened on (written at each start)
SOCKET_FILE = "node.sock"  # the Unix socket on which the data dir's node takes files to put (serve/handoff.py)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, else `$XSC_HOME`, else `~/.xsc`."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    if os.environ.get("XSC_HOME"):
        return Path(os.environ["XSC_HOME"]).expanduser().resolve()
    return Path("~/.xsc").expanduser().resolve()
