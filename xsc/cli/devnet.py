"""`xsc devnet up|status|down`: a network of nodes on this machine, for trying things out.

Each node is a background `xsc node start` process with its own data dir under the devnet dir
(node-0, node-1, ...) and its log next to it; every node but the first joins the first, and
gossip does the rest.  The devnet dir's devnet.json remembers the nodes for status and down;
the data dirs stay after `down`, so the next `up` brings back the same nodes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from ..errors import Conflict, DevnetError, InvalidArgument, NodeNotRunning
from .output import emit_json, json_option
from .peers import wide_table

STATE_FILE = "devnet.json"
DEFAULT_DIR = ".xsc-devnet"
# Variables that would point a node at another data dir or node.
_NODE_ENV = ("XSC_HOME", "XSC_NODE", "XSC_TOKEN", "XSC_NODE_LISTEN", "XSC_PEERS_URLS")

dir_option = click.option("--dir", "devnet_dir", envvar="XSC_DEVNET_DIR", default=DEFAULT_DIR, show_default=True,
                          type=click.Path(file_okay=False), help="Where the nodes' data dirs and logs live.")


def _state_path(root: Path) -> Path:
    return root / STATE_FILE


def _load(root: Path) -> list[dict]:
    try:
        return json.loads(_state_path(root).read_text())["nodes"]
    except FileNotFoundError:
        raise NodeNotRunning(f"no devnet in {root}", hint="start one with: xsc devnet up -n 6") from None
    except (ValueError, KeyError) as err:
        raise DevnetError(f"{_state_path(root)} is not a devnet state file: {err}",
                          hint="stop the nodes by hand and delete the file") from None


def _save(root: Path, nodes: list[dict]) -> None:
    path = _state_path(root)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"nodes": nodes}, indent=2))
    os.replace(tmp, path)


def _alive(node: dict) -> bool:
    """Is the node's process still running (and still ours: a reused pid runs something else)?"""
    proc = Path(f"/proc/{node['pid']}")
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        state = next((line for line in (proc / "status").read_text().splitlines() if line.startswith("State:")), "")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "Z" not in state.split()[1:2] and node["data_dir"].encode() in cmdline


def _get(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, dict] | None:
    """(status, JSON body) of a GET, or None when nothing answers."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read())
        except ValueError:
            return err.code, {}
    except (OSError, ValueError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int, base: int | None) -> list[int]:
    if base is None:
        ports: list[int] = []
        sockets = []
        try:  # hold each port until all are chosen, so no two nodes get the same one
            for _ in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                sockets.append(s)
                ports.append(s.getsockname()[1])
        finally:
            for s in sockets:
                s.close()
        return ports
    if not 1024 <= base <= 65535 - count + 1:
        raise InvalidArgument(f"--base-port {base} leaves no room for {count} nodes", hint="use 1024 to 65000")
    taken = [p for p in range(base, base + count) if not _port_free(p)]
    if taken:
        raise InvalidArgument(f"ports in use: {', '.join(map(str, taken))}", hint="pick another --base-port")
    return list(range(base, base + count))


def _forget_seeds(data_dir: Path) -> None:
    """Clear the seeds an earlier `up` saved in the node's config: its first node had another port then."""
    import tomllib

    import tomli_w

    path = data_dir / "config.toml"
    try:
        config = tomllib.loads(path.read_text())
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return
    if config.get("peers", {}).get("urls"):
        config["peers"]["urls"] = []
        tmp = path.with_suffix(".tmp")
        tmp.write_text(tomli_w.dumps(config))
        os.replace(tmp, path)


def _spawn(root: Path, index: int, port: int, first_url: str | None) -> dict:
    data_dir = (root / f"node-{index}").resolve()
    _forget_seeds(data_dir)
    log = root / f"node-{index}.log"
    cmd = [sys.executable, "-m", "xsc", "--data-dir", str(data_dir), "node", "start", "--listen", f"127.0.0.1:{port}"]
    if first_url:
        cmd += ["--peer", first_url]
    env = {k: v for k, v in os.environ.items() if k not in _NODE_ENV}
    with open(log, "ab") as out:
        # A session of its own: the node outlives this command and ignores the terminal's Ctrl-C.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    return {"name": f"node-{index}", "id": None, "url": f"http://127.0.0.1:{port}", "pid": proc.pid,
            "data_dir": str(data_dir), "log": str(log.resolve())}


def _tail(path: str, lines: int = 5) -> str:
    try:
        return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _stop(nodes: list[dict], timeout: float) -> tuple[int, int]:
    """SIGTERM every live node, SIGKILL those still running after timeout; (stopped, killed)."""
    live = [n for n in nodes if _alive(n)]
    _signal(live, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(n) for n in live):
        time.sleep(0.1)
    stubborn = [n for n in live if _alive(n)]
    _signal(stubborn, signal.SIGKILL)
    return len(live), len(stubborn)


def _signal(nodes: list[dict], sig: int) -> None:
    for node in nodes:
        try:
            os.kill(node["pid"], sig)
        except ProcessLookupError:
            pass  # already gone


def _known_peers(node: dict) -> int | None:
    try:
        token = (Path(node["data_dir"]) / "api-token").read_text().strip()
    except FileNotFoundError:
        return None
    answer = _get(node["url"] + "/v1/peers", token)
    return len(answer[1].get("peers", [])) if answer and answer[0] == 200 else None


@click.group()
def devnet() -> None:
    """Run a local network of nodes for trying things out.

    \b
    xsc devnet up -n 6        start 6 nodes on 127.0.0.1, peered together
    xsc devnet status         which are up, their ids, URLs and data dirs
    xsc devnet down           stop them (their data dirs stay for the next up)
    Talk to one node with: xsc --data-dir <its data dir> ..."""


@devnet.command()
@click.option("-n", "--nodes", "count", type=click.IntRange(1, 64), default=6, show_default=True,
              help="How many nodes.")
@click.option("--base-port", type=int, help="Port of the first node; the others follow (default: any free ports).")
@click.option("--timeout", type=click.FloatRange(1, 600), default=60.0, show_default=True,
              help="Seconds to wait for the nodes to answer and learn of each other.")
@dir_option
@json_option
def up(count: int, base_port: int | None, timeout: float, devnet_dir: str, as_json: bool) -> None:
    """Start N nodes on loopback as background processes, peered together."""
    root = Path(devnet_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if _state_path(root).exists():
        running = [n for n in _load(root) if _alive(n)]
        if running:
            raise Conflict(f"a devnet of {len(running)} running node(s) is already in {root}",
                           hint=f"stop it first: xsc devnet down --dir {devnet_dir}")
    ports = _ports(count, base_port)
    nodes: list[dict] = []
    try:
        for i, port in enumerate(ports):
            nodes.append(_spawn(root, i, port, nodes[0]["url"] if nodes else None))
            _save(root, nodes)  # at once: `down` can stop what was started even if this command dies
        deadline = time.monotonic() + timeout
        for node in nodes:
            while (answer := _get(node["url"] + "/health", timeout=1.0)) is None:
                if not _alive(node):
                    raise DevnetError(f"{node['name']} exited: {_tail(node['log'])}", hint=f"see {node['log']}")
                if time.monotonic() > deadline:
                    raise DevnetError(f"{node['name']} did not answer within {timeout:g} s", hint=f"see {node['log']}")
                time.sleep(0.1)
            node["id"] = answer[1].get("serviceId")
            _save(root, nodes)
    except BaseException:
        _stop(nodes, 10.0)
        _state_path(root).unlink(missing_ok=True)
        raise
    while time.monotonic() < deadline and any(_known_peers(n) != count - 1 for n in nodes):
        time.sleep(0.2)
    lagging = [n["name"] for n in nodes if _known_peers(n) != count - 1]
    if lagging:
        click.echo(f"xsc: warning: {', '.join(lagging)} do not know every other node yet (gossip continues)", err=True)
    if as_json:
        emit_json([{**n, "up": True} for n in nodes])
        return
    wide_table(["name", "id", "url", "pid", "data dir"], [(n["name"], n["id"], n["url"], n["pid"], n["data_dir"])
                                                          for n in nodes])
    click.echo(f"{count} nodes up; use one with: xsc --data-dir {nodes[0]['data_dir']} ...")


@devnet.command()
@dir_option
@json_option
def status(devnet_dir: str, as_json: bool) -> None:
    """Show each node's id, URL, pid, data dir and whether it answers."""
    nodes = _load(Path(devnet_dir).resolve())
    for node in nodes:
        node["up"] = _alive(node) and _get(node["url"] + "/health", timeout=2.0) is not None
    if as_json:
        emit_json(nodes)
        return
    wide_table(["name", "id", "url", "pid", "state", "data dir"],
               [(n["name"], n["id"], n["url"], n["pid"], "up" if n["up"] else "DOWN", n["data_dir"]) for n in nodes])
    click.echo(f"{sum(n['up'] for n in nodes)} of {len(nodes)} nodes up")


@devnet.command()
@click.option("--timeout", type=click.FloatRange(0, 600), default=30.0, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@dir_option
@json_option
def down(timeout: float, devnet_dir: str, as_json: bool) -> None:
    """Stop every node (SIGTERM, then SIGKILL after --timeout); their data dirs stay."""
    root = Path(devnet_dir).resolve()
    nodes = _load(root)
    stopped, killed = _stop(nodes, timeout)
    _state_path(root).unlink(missing_ok=True)
    if as_json:
        emit_json({"stopped": stopped, "killed": killed, "dir": str(root)})
        return
    click.echo(f"stopped {stopped} node(s)" + (f", {killed} of them with SIGKILL" if killed else "")
               + f"; data dirs kept in {root}")
