"""`xsc peers ls|add|rm`, `xsc peers quarantine ls|rm`."""

from __future__ import annotations

import time
from urllib.parse import quote

import click

from ..units import counted
from .output import emit_json, json_option, wide_option
from .tables import Col, key_values, table


def wide_table(columns: list, rows: list[tuple], **kw) -> None:
    """A table whose cells are never cut or folded (node ids and URLs stay whole and copyable);
    columns given as `Col`s may be shortened or dropped to fit the terminal."""
    table([c if isinstance(c, Col) else Col(c, keep=True) for c in columns], rows, **kw)


def _age(ms: int) -> str:
    seconds = max(0, time.time() - ms / 1000)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _up(peer: dict) -> str:
    """What the last probe found, and when: a peer is only known up as of then."""
    if peer["up"] is None:
        return "not probed yet"
    state = "up" if peer["up"] else "DOWN"
    return f"{state} ({_age(peer['last_probe'])})" if peer.get("last_probe") is not None else state


@click.group()
def peers() -> None:
    """The nodes this node knows: list, join, forget.

    Nodes learn of each other by passing signed descriptors on: join one node of a network
    (`xsc peers add URL`, or `xsc node start --peer URL`) and this node soon knows them all."""


@peers.command("ls")
@wide_option
@json_option
@click.pass_obj
def list_peers(obj, wide: bool, as_json: bool) -> None:
    """List the known nodes: id, state (as the last probe found it, and how long ago), URL, version, free space,
    when they last signed their descriptor.  A request to a peer that finds no answer has it probed at once.

    It fits the terminal, or 80 columns when not on one: the URL then goes on a line under its row, and the
    figures that do not fit are left out (--wide: every column; --json for scripts)."""
    from ..units import format_size

    info = obj.client().request("GET", "/v1/peers")
    if as_json:
        emit_json(info)
        return
    me = info["self"]
    key_values([("this node", me["id"]), ("at", me["url"])])
    if not info["peers"]:
        click.echo("no peers known (join a network with: xsc peers add URL)")
        return
    # The URL is what a reader goes to and a script reads (`xsc peers ls | awk '$1 == "url"'`): never left out; on a
    # line under its row (an id and a state fill 80 columns) before the figures are.
    wide_table([Col("id", keep=True), Col("state", keep=True), Col("url", keep=True, under=True),
                Col("version", drop=3), Col("free / capacity", drop=1), Col("descriptor signed", drop=2)],
               [(p["id"], _up(p), p["url"], p["version"], f"{format_size(p['free'])} / {format_size(p['capacity'])}",
                 _age(p["timestamp"])) for p in info["peers"]], wide=wide)


def resolve_peer(client, peer: str, quarantined: bool = False) -> str:
    """A node id, or a unique prefix of a known (or a quarantined) peer's id (a prefix is quicker to type)."""
    if len(peer) >= 52:
        return peer
    from ..ids import one_starting_with

    if quarantined:
        ids = [q["node"] for q in client.request("GET", "/v1/peers/quarantine")["quarantined"]]
        return one_starting_with(peer.lower(), ids, what="quarantined peer", listing="xsc peers quarantine ls")
    from ..errors import NotFound

    ids = [p["id"] for p in client.request("GET", "/v1/peers")["peers"]]
    try:
        return one_starting_with(peer.lower(), ids, what="known peer", listing="xsc peers ls")
    except NotFound:
        own = client.request("GET", "/v1/node/status")["id"]
        if own.startswith(peer.lower()):  # the node says, for each command, why its own id names no peer of its
            return own
        raise


@peers.command("add")
@click.argument("url")
@json_option
@click.pass_obj
def add_peer(obj, url: str, as_json: bool) -> None:
    """Join the node at URL (e.g. http://127.0.0.1:7071) and, through it, the nodes it knows."""
    info = obj.client().request("POST", "/v1/peers", json_body={"url": url})
    if as_json:
        emit_json(info)
        return
    peer = info["peer"]
    click.echo(f"added {peer['id']} at {peer['url']} ({counted(info['known'], 'peer')} known)")


@peers.command("rm")
@click.argument("node_id", metavar="ID")
@json_option
@click.pass_obj
def remove_peer(obj, node_id: str, as_json: bool) -> None:
    """Forget the node ID (a node id or a unique prefix); its descriptors are ignored until it is added again with
    `xsc peers add`."""
    client = obj.client()
    info = client.request("DELETE", f"/v1/peers/{quote(resolve_peer(client, node_id), safe='')}")
    if as_json:
        emit_json(info)
        return
    click.echo(f"removed {info['removed']}")


@peers.group()
def quarantine() -> None:
    """Peers quarantined for misbehaving (failed audits, refused or bad receipts, floods): refused until
    their quarantine ends (peers.quarantine_for) or is lifted here (docs/security.md)."""


@quarantine.command("ls")
@json_option
@click.pass_obj
def list_quarantine(obj, as_json: bool) -> None:
    """List the quarantined peers: id, time left, why."""
    info = obj.client().request("GET", "/v1/peers/quarantine")
    if as_json:
        emit_json(info)
        return
    if not info["quarantined"]:
        click.echo("no peer is quarantined")
        return
    wide_table([Col("id", keep=True), Col("left", keep=True), Col("why", drop=1)],
               [(q["node"], f"{q['left'] // 60} min", q["reason"]) for q in info["quarantined"]])


@quarantine.command("rm")
@click.argument("node_id", metavar="ID")
@json_option
@click.pass_obj
def lift_quarantine(obj, node_id: str, as_json: bool) -> None:
    """Lift the quarantine of node ID (a node id or a unique prefix): its requests are taken again."""
    client = obj.client()
    info = client.request("DELETE", f"/v1/peers/quarantine/{quote(resolve_peer(client, node_id, True), safe='')}")
    if as_json:
        emit_json(info)
        return
    click.echo(f"lifted the quarantine of {info['lifted']}")
