"""Where a node keeps its files (light: the CLI imports it on every call)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

URL_FILE = "node.url"  # the URL the data dir's node last listened on (written at each start)
SOCKET_FILE = "node.sock"  # the Unix socket on which the data dir's node takes files to put (serve/handoff.py)
LOCK_FILE = "node.lock"  # flocked by the node on the data dir, from before a first start mints its id; holds its pid


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, else `$XSC_HOME`, else `~/.xsc`.  An empty one is refused: a variable that expanded to
    nothing (`XSC_HOME=$DIR`) would otherwise send a node, or a command, to ~/.xsc."""
    if data_dir is not None and not str(data_dir):
        raise ConfigError("the data dir is empty", hint="name a directory with --data-dir, or leave it out for "
                                                        "$XSC_HOME, else ~/.xsc")
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    home = os.environ.get("XSC_HOME")
    if home == "":
        raise ConfigError("$XSC_HOME is set but empty", hint="set it to a directory, or unset it for ~/.xsc")
    if home:
        return Path(home).expanduser().resolve()
    return Path("~/.xsc").expanduser().resolve()


def lock_holder(data_dir: Path) -> int | None:
    """The pid written in the data dir's node.lock, if that process is alive: a node running or starting there.
    Read, never locked: a command that only looks must not make a node starting at that moment think it is second."""
    try:
        text = (data_dir / LOCK_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit() or int(text) == 0:  # kill(0, ...) would ask about this process's group
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    except (OverflowError, OSError):
        return None
    return int(text)
