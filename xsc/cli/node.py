"""`xsc node start|status`."""

from __future__ import annotations

import click

from .output import emit_json, json_option
from .tables import key_values


@click.group()
def node() -> None:
    """Run a node and see how it is doing."""


def start_options(f):
    """The one-off settings of `node start` (also taken by `xsc config show`, to show their effect)."""
    for option in reversed([
        click.option("--listen", metavar="HOST:PORT", help="Address to serve on (default: the config's node.listen)."),
        click.option("--storage-capacity", metavar="SIZE", help="Block bytes this node will hold, e.g. 10GiB."),
        click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
                     help="How much the node logs (default: the config's node.log_level)."),
        click.option("--peer", "peer_urls", multiple=True, metavar="URL",
                     help="A node to join, e.g. http://127.0.0.1:7071 (repeatable; added to the config's peers.urls)."),
    ]):
        f = option(f)
    return f


def effective_config(data_dir, listen: str | None, storage_capacity: str | None, log_level: str | None,
                     peer_urls: tuple[str, ...]):
    """The config a `node start` with these flags runs with, and where each value came from."""
    from ..config import load_config_with_sources, normalize_peer_url
    from ..errors import InvalidArgument

    overrides = {"node": {"listen": listen, "log_level": log_level}, "storage": {"capacity": storage_capacity}}
    config, sources = load_config_with_sources(data_dir, overrides=overrides)
    if peer_urls:
        try:
            added = [normalize_peer_url(url) for url in peer_urls]
        except ValueError as err:
            raise InvalidArgument(f"--peer: {err}", hint="give a node's URL, e.g. --peer http://127.0.0.1:7071") from None
        config.peers.urls = list(dict.fromkeys([*config.peers.urls, *added]))
        sources["peers.urls"] = "flag"
    return config, sources


@node.command()
@start_options
@click.pass_obj
def start(obj, listen: str | None, storage_capacity: str | None, log_level: str | None,
          peer_urls: tuple[str, ...]) -> None:
    """Start a node in the foreground (Ctrl-C or SIGTERM stops it gracefully).

    The flags (and XSC_* environment variables) hold for this run only, but --listen: the node keeps its
    address (its peers know it there), so --listen is saved in config.toml as node.listen once the node listens
    there.  The first start
    writes config.toml with the defaults, and `xsc config set` changes it."""
    import logging

    from .. import db
    from ..config import parse_listen
    from ..errors import DiskFull
    from ..node import serve
    from ..tasks import run

    if listen is not None:
        parse_listen(listen)
    config, _ = effective_config(obj.data_dir, listen, storage_capacity, log_level, peer_urls)
    logging.basicConfig(level=config.node.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _mint_identity(config)
    # --listen is kept once the node listens there: a start refused (another node on the data dir, the address
    # taken) leaves config.toml as it was
    keep = None if listen is None else lambda: _keep_listen(config.data_dir, listen)
    try:
        run(serve(config, listening=keep), config.node.event_loop)
    except db.Error as err:
        if not db.disk_full(err):
            raise
        # (a write as the node starts: its recovery's, its market's) one line, as every refusal, not a traceback
        raise DiskFull(f"the data dir's disk is full: the node cannot start ({db.said(err)})",
                       hint="free disk space on it, then start the node again") from err


def _keep_listen(data_dir, listen: str) -> None:
    """Save --listen as node.listen, so that the next start without it listens there too."""
    from ..config import load_config, set_config_value

    if load_config(data_dir, environ={}).node.listen != listen:
        set_config_value(data_dir, "node.listen", listen)
        click.echo(f"node.listen = {listen} saved in config.toml: the node keeps this address "
                   "(`xsc config set node.listen HOST:PORT` moves it)", err=True)


def _mint_identity(config) -> None:
    """A first start mints the node id (proof of work, peers.min_difficulty bits): say so while it takes.  It holds
    the data dir's lock meanwhile: a second start is refused rather than minting a key that would replace the
    first's, and commands tell a node starting from none."""
    from ..identity import NODE_KEY_FILE
    from ..node.datadir import DataDirLock, node_identity

    if (config.data_dir / NODE_KEY_FILE).exists():
        return
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = DataDirLock(config.data_dir)
    lock.acquire()
    try:
        if (config.data_dir / NODE_KEY_FILE).exists():  # minted by a start that held the lock until just now
            return
        bits = config.peers.min_difficulty
        expected = 2 ** bits

        def progress(tried: int) -> None:
            if tried == 8192:
                click.echo(f"minting this node's id: {bits} bits of proof of work, about {expected:,} keys to try "
                           "(once per data dir)", err=True)
            if tried % 65536 == 0:
                click.echo(f"  {tried:,} keys tried ({100 * tried / expected:.0f}% of the expected)", err=True)

        identity = node_identity(config, progress)
        if bits >= 14:
            click.echo(f"minted node id {identity.id}", err=True)
    finally:
        lock.release()  # the node takes it again as it opens the data dir


@node.command()
@json_option
@click.pass_obj
def status(obj, as_json: bool) -> None:
    """Show id, version, uptime, listen address (and the web functions' and S3 listeners' when set) and storage
    capacity."""
    from ..units import format_size

    info = obj.client().request("GET", "/v1/node/status")
    if as_json:
        emit_json(info)
        return
    storage, listeners = info.get("storage", {}), info.get("listeners") or {}
    key_values([
        ("id", info["id"]),
        ("version", info["version"]),
        ("uptime", f"{info['uptime']:.0f} s"),
        ("listen", info["listen"]),
        *[(what, url) for what, url in (("web functions", listeners.get("web")), ("S3", listeners.get("s3"))) if url],
        ("data dir", info["data_dir"]),
        ("capacity", format_size(storage.get("capacity", 0))),
        ("used", format_size(storage.get("used", 0))),
        ("free", format_size(storage.get("free", 0)) + (
            f" (but the data dir's disk has {format_size(disk)} free)"
            if (disk := storage.get("disk_free")) is not None and disk < storage.get("free", 0) else "")),
        ("memory", _memory(info.get("memory"), format_size)),
        *([("payments", said)] if (said := _payments(info.get("payments") or {})) else []),
    ])


def _payments(payments: dict) -> str | None:
    """The local user's payments to other nodes pending or dropped unpaid, if any, and where they are listed."""
    from ..units import counted, format_credits

    # As `xsc ledger payments` parts them: open tabs in use (paid when they close), and payments waiting for a retry.
    opened, held = payments.get("open", 0), payments.get("open_amount", 0)
    waiting = payments.get("pending", 0) - opened
    said = [f"{counted(opened, 'open tab')} ({format_credits(held)} credits held)"] if opened else []
    said += [f"{waiting} pending ({format_credits(payments.get('pending_amount', 0) - held)} credits held)"
             ] if waiting > 0 else []
    said += [f"{payments['dropped_recent']} dropped unpaid this week"] if payments.get("dropped_recent") else []
    return f"{', '.join(said)}: xsc ledger payments" if said else None


def _memory(memory: dict | None, format_size) -> str:
    if not memory:
        return "unknown"
    return (f"{format_size(memory['anonymous'])} own, {format_size(memory['file'])} mapped files "
            "(page cache the kernel reclaims)")
