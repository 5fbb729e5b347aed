"""`xsc devnet up|status|down`: a network of nodes on this machine, for trying things out.

Each node is a background `xsc node start` process with its own data dir under the devnet dir
(node-0, node-1, ...) and its log next to it; every node but the first joins the first, and
gossip does the rest.  The devnet dir's devnet.json remembers the nodes for status and down;
the data dirs stay after `down`, so the next `up` brings back the same nodes."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click

from ..devnet import STATE_FILE, Devnet, keep_netem, kept_data_dirs, kept_ports, ports_from, up_again
from ..errors import Conflict, InvalidArgument
from ..netem.namespaces import NetnsNetwork, check
from ..units import counted
from .output import Duration, emit_json, json_option
from .tables import Col
from .peers import wide_table
from .progress import progress_bar

DEFAULT_DIR = ".xsc-devnet"

# On a narrow terminal the id and the data dir go whole under each row: both are what the next command is given.
_COLUMNS = [Col("name", keep=True), Col("state", keep=True), Col("pid", keep=True, right=True),
            Col("url", keep=True), Col("id", keep=True, under=True), Col("data dir", keep=True, under=True)]

dir_option = click.option("--dir", "devnet_dir", envvar="XSC_DEVNET_DIR", default=DEFAULT_DIR, show_default=True,
                          type=click.Path(file_okay=False), help="Where the nodes' data dirs and logs live.")


@click.group()
def devnet() -> None:
    """Run a local network of nodes for trying things out.

    \b
    xsc devnet up -n 6        start 6 nodes on 127.0.0.1, peered together
    xsc devnet up -n 6 --netns --delay 50ms --loss 1%
                              each node in a network namespace of its own
                              (root), behind delay and loss
    xsc devnet status         which are up, their ids, URLs and data dirs
    xsc devnet down           stop them (their data dirs stay for the next up)
    Talk to one node with: xsc --data-dir <its data dir> ..."""


@devnet.command()
@click.option("-n", "--nodes", "count", type=click.IntRange(1, 64), default=6, show_default=True,
              help="How many nodes.")
@click.option("--base-port", type=int, help="Port of the first node; the others follow (default: any free ports).")
@click.option("--timeout", type=Duration("90s", least=1, most=600), default="60s", show_default=True,
              help="How long to wait for the nodes to answer and learn of each other and of their market offers, "
                   "1s to 10m, e.g. 90s, 2m.")
@click.option("--netns", is_flag=True,
              help="Each node in its own network namespace on a private bridge (needs root, ip and iptables).")
@click.option("--delay", type=Duration("50ms"), default="0ms", show_default=True,
              help="With --netns: how long every packet entering a node's namespace is held, e.g. 50ms, 0.2s.")
@click.option("--loss", default="0%", show_default=True, metavar="PERCENT",
              help="With --netns: the share of packets entering a node's namespace that are dropped (e.g. 1%).")
@dir_option
@json_option
def up(count: int, base_port: int | None, timeout: float, netns: bool, delay: float, loss: str, devnet_dir: str,
       as_json: bool) -> None:
    """Start N nodes as background processes, peered together (on loopback, or with --netns in namespaces).

    On a devnet of N nodes some of which are down (killed, crashed), start those again: the others go on."""
    root = Path(devnet_dir).resolve()
    network = _network(root, count, netns, delay, loss)
    root.mkdir(parents=True, exist_ok=True)
    if (root / STATE_FILE).exists():
        old, records = Devnet.load(root)
        for node in old:  # one killed a moment ago is still closing its files: down once it is gone
            node.wait_gone(10.0)
        running = [n for n in old if n.alive()]
        if running and (len(running) == len(old) or len(old) != count or old.network is not None):
            raise Conflict(f"a devnet of {counted(len(running), 'node')} running is already in {root}",
                           hint=f"see them with `xsc devnet status --dir {shlex.quote(devnet_dir)}`, or stop them "
                                f"first: xsc devnet down --dir {shlex.quote(devnet_dir)}")
        if running:
            _restart(old, records, timeout, as_json)
            return
    kept = kept_ports(root, count) if base_port is None and network is None else None
    keep_netem(root, network)  # for the command that starts it again once it is down
    net = Devnet(root, count, ports=kept or ports_from(base_port, count), detach=True, network=network)
    nodes: list[dict] = []
    try:
        def started(node) -> None:  # saved at once: `down` can stop what was started even if this command dies
            nodes.append({"name": node.name, "id": None, **node.record()})
            net.save(nodes)

        if network is not None:
            net.save(nodes)  # the network's names first: `down` removes them even if this command dies now
        net.spawn(on_spawn=started)
        deadline = time.monotonic() + timeout
        with progress_bar("nodes up", count, shown=not as_json) as bar:
            for record, node in zip(nodes, net):
                node.wait_listening(max(0.1, deadline - time.monotonic()))
                record["id"] = (node.health() or {}).get("serviceId")
                net.save(nodes)
                bar.advance()
        # Until it has said the devnet is up, a Ctrl-C stops every node and takes the network down.
        _wait_ready(net, deadline)
        if as_json:
            emit_json([{**n, "up": True} for n in nodes])
        else:
            wide_table(_COLUMNS, [(n["name"], "up", n["pid"], n["url"], n["id"], n["data_dir"]) for n in nodes])
            click.echo(f"{counted(count, 'node')} up; use one with: xsc --data-dir "
                       f"{shlex.quote(str(nodes[0]['data_dir']))} ...")
    except BaseException:
        net.stop(10.0)
        net.forget()
        raise


def _restart(net: Devnet, records: list[dict], timeout: float, as_json: bool) -> None:
    """`up` on a devnet some of whose nodes are down (killed, crashed): those start again, the others go on."""
    def started(node) -> None:  # saved at once, as `up` does: `down` stops it even if this command dies
        next(r for r in records if r["name"] == node.name)["pid"] = node.pid
        net.save(records)

    restarted = net.restart_down(on_spawn=started)
    deadline = time.monotonic() + timeout
    for node in restarted:
        node.wait_listening(max(0.1, deadline - time.monotonic()))
    _wait_ready(net, deadline)
    again = {n.name for n in restarted}
    if as_json:
        emit_json([{**r, "up": True, "restarted": r["name"] in again} for r in records])
        return
    wide_table(_COLUMNS, [(r["name"], "restarted" if r["name"] in again else "up", r["pid"], r["url"],
                           r.get("id") or "-", r["data_dir"]) for r in records])
    click.echo(restarted_line(len(again), len(records)))


def _wait_ready(net: Devnet, deadline: float) -> None:
    """Until `deadline`: every node knows every other, then holds every node's offer, so a job or a put sent to any
    of them the moment `up` returns finds every provider of the devnet (not "no active provider offers it")."""
    lagging = [n.name for n in net.wait_peered(max(0.0, deadline - time.monotonic()))]
    if lagging:
        click.echo(f"xsc: warning: {', '.join(lagging)} do not know every other node yet (gossip continues)", err=True)
        return
    lacking = [n.name for n in net.wait_offered(max(0.0, deadline - time.monotonic()))]
    if lacking:
        click.echo(f"xsc: warning: {', '.join(lacking)} do not hold every node's market offer yet (gossip continues: "
                   f"until it does, a job sent there may be refused for want of a provider; see `xsc market book`)",
                   err=True)


def restarted_line(again: int, total: int) -> str:
    """What `up` says once it started again the `again` nodes of a devnet of `total` that were down."""
    up = total - again
    return (f"{counted(again, 'node')} started again, {counted(up, 'node')} {'was' if up == 1 else 'were'} up already; "
            f"all {total} up")


@devnet.command()
@dir_option
@json_option
def status(devnet_dir: str, as_json: bool) -> None:
    """Show each node's id, URL, pid, data dir and whether it answers."""
    net, nodes = Devnet.load(devnet_dir)
    for record, node in zip(nodes, net):
        health = node.health() if node.alive() else None
        record["up"] = health is not None
        # A state file the library's Devnet.save() wrote names no ids: a node that answers says its own.
        if record.get("id") is None:
            record["id"] = (health or {}).get("serviceId")
    if as_json:
        emit_json(nodes)
        return
    wide_table(_COLUMNS, [(n["name"], "up" if n["up"] else "DOWN", n["pid"], n["url"], n["id"] or "-",
                           n["data_dir"]) for n in nodes])
    click.echo(f"{sum(n['up'] for n in nodes)} of {len(nodes)} nodes up")


@devnet.command()
@click.option("--timeout", type=Duration("10s", most=600), default="30s", show_default=True,
              help="How long to wait after SIGTERM before SIGKILL, 0s to 10m, e.g. 10s, 1.5m, 500ms.")
@dir_option
@json_option
def down(timeout: float, devnet_dir: str, as_json: bool) -> None:
    """Stop every node (SIGTERM, then SIGKILL after --timeout); their data dirs stay.  A devnet down already is
    left so (exit 0)."""
    root = Path(devnet_dir).resolve()
    kept = kept_data_dirs(root) if not (root / STATE_FILE).exists() else []
    if kept:  # (no devnet at all is an error: a --dir mistyped)
        if as_json:
            emit_json({"stopped": 0, "killed": 0, "dir": str(root), "already_down": True})
            return
        click.echo(f"the devnet in {root} is already down (the data dirs of {counted(len(kept), 'node')} are kept; "
                   f"start it again with: {up_again(root, kept)})")  # one line, as `down`'s own, its command whole
        return
    net, _ = Devnet.load(devnet_dir)
    root = net.root
    stopped, killed = net.stop(timeout)
    net.forget()
    if as_json:
        emit_json({"stopped": stopped, "killed": killed, "dir": str(root)})
        return
    click.echo(f"stopped {counted(stopped, 'node')}" + (f", {killed} of them with SIGKILL" if killed else "")
               + f"; data dirs kept in {root}")


def _share(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%")) / 100
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise InvalidArgument(f"--loss {text!r} is not a share of 0 to 99%", hint="e.g. --loss 1%")
    return value


def _network(root: Path, count: int, netns: bool, seconds: float, loss: str) -> NetnsNetwork | None:
    share = _share(loss)
    if not netns:
        if seconds or share:
            raise InvalidArgument("--delay and --loss need --netns", hint="add --netns (as root)")
        return None
    check()
    return NetnsNetwork(root, count, seconds, share)


@devnet.command("delay-line", hidden=True)
@click.option("--delay", type=Duration("50ms", most=10), required=True,
              help="How long each packet is held, e.g. 50ms, 0.2s.")
@click.option("--ready", type=click.Path(dir_okay=False), help="A file written once every queue is bound.")
@click.argument("namespaces", nargs=-1, required=True)
def delay_line(delay: float, ready: str | None, namespaces: tuple[str, ...]) -> None:
    """Hold every packet the NFQUEUE rules of NAMESPACES queue for DELAY seconds (run by `devnet up --netns`)."""
    from ..netem.delayline import serve

    serve(list(namespaces), delay, ready)
