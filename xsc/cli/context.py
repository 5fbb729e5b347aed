"""How the CLI finds its node: the data dir's config for the URL, its api-token for the token.

Kept light (no pydantic, no aiohttp) so that short commands start fast."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ..errors import ConfigError, NodeNotRunning
from ..paths import resolve_data_dir


class CliContext:
    def __init__(self, data_dir: str | None, node_url: str | None) -> None:
        self._data_dir = data_dir
        self._node_url = node_url
        self._client = None

    @property
    def data_dir(self) -> Path:
        return resolve_data_dir(self._data_dir)

    def node_url(self) -> str:
        if self._node_url:
            return self._node_url.rstrip("/")
        listen = os.environ.get("XSC_NODE_LISTEN")
        if not listen:
            path = self.data_dir / "config.toml"
            try:
                listen = tomllib.loads(path.read_text()).get("node", {}).get("listen")
            except FileNotFoundError:
                listen = None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path} is not valid TOML: {e}", hint="fix or delete the file") from e
        host, _, port = (listen or "127.0.0.1:7070").rpartition(":")
        return f"http://{host}:{port}"

    def token(self) -> str:
        token = os.environ.get("XSC_TOKEN")
        if token:
            return token
        try:
            return (self.data_dir / "api-token").read_text().strip()
        except FileNotFoundError:
            raise NodeNotRunning(
                f"no API token in {self.data_dir}: no node has been started on this data dir",
                hint="start one with: xsc node start" + (f" --data-dir {self._data_dir}" if self._data_dir else ""),
            ) from None

    def client(self):
        if self._client is None:
            from .client import NodeClient

            self._client = NodeClient(self.node_url(), self.token(), start_hint=self.start_hint())
        return self._client

    def start_hint(self) -> str:
        return "start one with: xsc node start" + (f" --data-dir {self._data_dir}" if self._data_dir else "")
