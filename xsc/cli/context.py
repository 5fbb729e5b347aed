"""How the CLI finds its node: where the node in the data dir listens, and its api-token.

Kept light (no pydantic, no aiohttp) so that short commands start fast."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..errors import ConfigError, NodeNotRunning
from ..paths import SOCKET_FILE, URL_FILE, lock_holder, resolve_data_dir
from ..units import is_whole_number


class CliContext:
    def __init__(self, data_dir: str | None, node_url: str | None, *, as_json: bool = False) -> None:
        self._data_dir = data_dir
        self._node_url = node_url
        self.json = as_json
        self._client = None

    @property
    def data_dir(self) -> Path:
        return resolve_data_dir(self._data_dir)

    def node_url(self) -> str:
        """--node, else $XSC_NODE_LISTEN, else where the data dir's node last listened, else its config."""
        if self._node_url:
            return self._node_url.rstrip("/")
        listen = os.environ.get("XSC_NODE_LISTEN")
        if listen:
            return _listen_url(listen, "$XSC_NODE_LISTEN", "fix or unset it")
        try:  # written by the node when it starts listening (its --listen may be a one-off)
            url = (self.data_dir / URL_FILE).read_text().strip()
            if url.startswith("http://"):
                return url
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            pass
        import tomllib  # here: with the node's URL file (above), the usual case, a command starts without it

        path = self.data_dir / "config.toml"
        try:
            node = tomllib.loads(path.read_text()).get("node", {})
        except (FileNotFoundError, NotADirectoryError):
            node = {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid TOML: {e}", hint="fix or delete the file") from e
        listen = node.get("listen") if isinstance(node, dict) else None
        if listen is None:
            return "http://127.0.0.1:7070"
        return _listen_url(listen, f"node.listen in {path}", "fix it with: xsc config set node.listen HOST:PORT")

    def local_socket(self) -> str | None:
        """The Unix socket on which the data dir's node takes files to put, unless the node is named otherwise
        (--node, $XSC_NODE_LISTEN: maybe another node than the data dir's)."""
        if self._node_url or os.environ.get("XSC_NODE_LISTEN"):
            return None
        return str(self.data_dir / SOCKET_FILE)

    def token(self) -> str:
        token = os.environ.get("XSC_TOKEN")
        if token:
            return _checked_token(token, "$XSC_TOKEN", "set it to the node's <data dir>/api-token, or unset it")
        path = self.data_dir / "api-token"
        try:
            token = path.read_bytes().strip().decode("ascii", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            pid = lock_holder(self.data_dir)
            if pid is not None:  # a first start, minting the node's id: it writes the token once that is done
                raise NodeNotRunning(f"the node on {self.data_dir} (pid {pid}) is still starting: no API token yet",
                                     hint="a first start mints the node's id, some seconds; try again then") from None
            if self._node_url or os.environ.get("XSC_NODE_LISTEN"):
                # the node is named by its address: the token it wants is that node's, not a local node's (a data
                # dir given too, or set by $XSC_HOME, holds none: it is not that node's)
                raise NodeNotRunning(f"no API token for the node at {self.node_url()}: $XSC_TOKEN is not set, and "
                                     f"{self.data_dir} holds none",
                                     hint="set XSC_TOKEN to that node's <data dir>/api-token, or give --data-dir "
                                          "DIR of that node") from None
            raise NodeNotRunning(
                f"no API token in {self.data_dir}: no node has been started on this data dir",
                hint=self.start_hint(),
            ) from None
        return _checked_token(token, str(path), "delete it: the node writes a new one at its next start")

    def client(self):
        if self._client is None:
            from ..client.sync import NodeClient

            self._client = NodeClient(self.node_url(), self.token(), start_hint=self.start_hint())
        return self._client

    def saved(self, section: str, key: str) -> object | None:
        """What the data dir's config.toml sets `section.key` to (None: not set, or not readable), when the node
        the CLI talks to is that data dir's (not one named by --node or $XSC_NODE_LISTEN alone)."""
        if not self._data_dir and (self._node_url or os.environ.get("XSC_NODE_LISTEN")):
            return None
        import tomllib  # here, as in node_url

        try:
            table = tomllib.loads((self.data_dir / "config.toml").read_text()).get(section, {})
        except (OSError, ValueError):  # (TOMLDecodeError and UnicodeDecodeError are ValueErrors)
            return None
        return table.get(key) if isinstance(table, dict) else None

    def start_hint(self) -> str:
        """The command that starts the node this CLI talks to, pasted as it is: its data dir shell-quoted."""
        return "start one with: xsc node start" + (f" --data-dir {shlex.quote(str(self._data_dir))}"
                                                   if self._data_dir else "")


def _listen_url(listen: object, where: str, fix: str) -> str:
    """The URL of a node listening at HOST:PORT, as read from `where` (xsc.config's parse_listen, without pydantic)."""
    host, sep, port = listen.rpartition(":") if isinstance(listen, str) else ("", "", "")
    if not sep or not host or not is_whole_number(port) or not 0 < int(port) < 65536:
        raise ConfigError(f"{where} is not a listen address: {listen!r}", hint=f"use HOST:PORT, e.g. 127.0.0.1:7070; {fix}")
    return f"http://{host}:{port}"


def _checked_token(token: str, where: str, fix: str) -> str:
    """A token goes into a request's header as it is: printable ASCII without spaces, or it is no node's token."""
    if not all("!" <= ch <= "~" for ch in token):
        raise ConfigError(f"{where} does not hold an API token (printable ASCII without spaces)", hint=fix)
    return token
