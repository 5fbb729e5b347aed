"""`xsc node start|status`."""

from __future__ import annotations

import click

from .output import emit_json, json_option, key_values


@click.group()
def node() -> None:
    """Run a node and see how it is doing."""


@node.command()
@click.option("--listen", metavar="HOST:PORT", help="Address to serve on (default 127.0.0.1:7070, or the config's).")
@click.option("--storage-capacity", metavar="SIZE", help="Block bytes this node will hold, e.g. 10GiB.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--peer", "peer_urls", multiple=True, metavar="URL",
              help="A node to join, e.g. http://127.0.0.1:7071 (repeatable; added to the config's peers.urls).")
@click.pass_obj
def start(obj, listen: str | None, storage_capacity: str | None, log_level: str | None,
          peer_urls: tuple[str, ...]) -> None:
    """Start a node in the foreground (Ctrl-C or SIGTERM stops it gracefully)."""
    import asyncio
    import logging

    from ..config import load_config, normalize_peer_url
    from ..errors import InvalidArgument
    from ..node import serve

    config = load_config(
        obj.data_dir,
        overrides={"node": {"listen": listen, "log_level": log_level}, "storage": {"capacity": storage_capacity}},
    )
    try:
        added = [normalize_peer_url(url) for url in peer_urls]
    except ValueError as err:
        raise InvalidArgument(f"--peer: {err}", hint="give a node's URL, e.g. --peer http://127.0.0.1:7071") from None
    config.peers.urls = list(dict.fromkeys([*config.peers.urls, *added]))
    logging.basicConfig(level=config.node.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config))


@node.command()
@json_option
@click.pass_obj
def status(obj, as_json: bool) -> None:
    """Show id, version, uptime, listen address and storage capacity."""
    from ..units import format_size

    info = obj.client().request("GET", "/v1/node/status")
    if as_json:
        emit_json(info)
        return
    storage = info.get("storage", {})
    key_values([
        ("id", info["id"]),
        ("version", info["version"]),
        ("uptime", f"{info['uptime']:.0f} s"),
        ("listen", info["listen"]),
        ("data dir", info["data_dir"]),
        ("capacity", format_size(storage.get("capacity", 0))),
        ("used", format_size(storage.get("used", 0))),
        ("free", format_size(storage.get("free", 0))),
        ("memory", _memory(info.get("memory"), format_size)),
    ])


def _memory(memory: dict | None, format_size) -> str:
    if not memory:
        return "unknown"
    return (f"{format_size(memory['anonymous'])} own, {format_size(memory['file'])} mapped files "
            "(page cache the kernel reclaims)")
