"""`xsc store put|get|ls|rm|check|verify|repair`."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import click

from ..errors import BadRequest, InvalidArgument
from .output import emit_json, json_option, table


def _cap_path(cap: str, suffix: str = "") -> str:
    from ..storage import Capability

    Capability.parse(cap)  # a malformed capability is refused before any request
    return f"/v1/store/files/{quote(cap.strip(), safe=':')}{suffix}"


@contextmanager
def _progress(total: int | None, label: str, enabled: bool):
    """A progress bar on a TTY (stderr); a no-op callback otherwise."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn)

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                  console=__import__("rich.console").console.Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@click.group()
def store() -> None:
    """Put, get, check, verify and repair files."""


@store.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--name", help="Name to list the file under (default: the file's name).")
@json_option
@click.pass_obj
def put(obj, file: str, name: str | None, as_json: bool) -> None:
    """Store FILE (or - for stdin); prints its capability as the last line."""
    if file == "-":
        stream, size, name = sys.stdin.buffer, None, name or "stdin"
    else:
        path = Path(file)
        if not path.exists():
            raise InvalidArgument(f"no such file: {file}", hint="check the path")
        if not path.is_file():
            raise InvalidArgument(f"not a regular file: {file}", hint="put one file at a time")
        try:
            stream = path.open("rb")
        except PermissionError:
            raise InvalidArgument(f"cannot read {file}: permission denied") from None
        size, name = path.stat().st_size, name or path.name
    client = obj.client()
    with _progress(size, f"put {name}", sys.stderr.isatty() and not as_json) as advance:
        result = client.upload("/v1/store/files", stream, size=size, query={"name": name}, on_progress=advance)
    if as_json:
        emit_json(result)
        return
    from ..ledger import format_credits

    click.echo(f"stored {result['size']} bytes in {result['segments']} segment(s); {result['placement_note']}; "
               f"paid {format_credits(result['price'])} credits for the lease", err=True)
    click.echo(result["capability"])


@store.command()
@click.argument("cap")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write to this file (default: stdout).")
@click.pass_obj
def get(obj, cap: str, output: str) -> None:
    """Fetch, verify, decode and decrypt the file CAP."""
    import http.client

    download = obj.client().download(_cap_path(cap))
    size = int(download.headers.get("Content-Length", 0))
    if output == "-":
        sink, tmp = sys.stdout.buffer, None
    else:
        target = Path(output)
        tmp = target.with_name(f".{target.name}.xsc-partial")
        sink = tmp.open("wb")
    got = 0
    try:
        with _progress(size, "get", tmp is not None and sys.stderr.isatty()) as advance:
            for chunk in download:
                sink.write(chunk)
                got += len(chunk)
                advance(len(chunk))
        if got != size:
            raise http.client.IncompleteRead(b"", size - got)
    except (http.client.IncompleteRead, ConnectionError) as exc:
        if tmp is not None:
            sink.close()
            tmp.unlink(missing_ok=True)
        raise BadRequest(f"the download stopped after {got} of {size} bytes ({exc.__class__.__name__})",
                         hint="run `xsc store check` on the capability; the node's log says why") from None
    if tmp is not None:
        sink.close()
        os.replace(tmp, output)  # the output file appears only once it is complete
    else:
        sink.flush()


@store.command("ls")
@json_option
@click.pass_obj
def list_files(obj, as_json: bool) -> None:
    """List the files this node uploaded."""
    files = obj.client().request("GET", "/v1/store/files")["files"]
    if as_json:
        emit_json(files)
        return
    from ..units import format_size

    table(["name", "size", "created", "capability"],
          [(f["name"], format_size(f["size"]), f["created"], f["capability"]) for f in files])


@store.command("rm")
@click.argument("cap")
@json_option
@click.pass_obj
def remove(obj, cap: str, as_json: bool) -> None:
    """Remove the file CAP and free its space."""
    result = obj.client().request("DELETE", _cap_path(cap))
    emit_json(result) if as_json else click.echo(f"removed {cap}")


def _shares_table(report: dict) -> None:
    shares = report["shares"]
    if any("node" in s for s in shares):  # a file spread over nodes: where each share is, and how that node is
        def state(s: dict) -> str:
            up = s.get("node_up")
            return "this node" if "node_up" not in s else "up" if up else "DOWN" if up is False else "not probed yet"

        table(["share", "status", "node", "node state", "detail"],
              [(s["share"], s["status"], s["node"][:16] + "…", state(s), s["detail"]) for s in shares])
    else:
        table(["share", "status", "detail"], [(s["share"], s["status"], s["detail"]) for s in shares])


@store.command()
@click.argument("cap")
@json_option
@click.pass_obj
def check(obj, cap: str, as_json: bool) -> None:
    """Which of the 6 shares are present and intact (metadata only; see verify)."""
    report = obj.client().request("GET", _cap_path(cap, "/check"))
    _report(report, as_json)


@store.command()
@click.argument("cap")
@json_option
@click.pass_obj
def verify(obj, cap: str, as_json: bool) -> None:
    """Read and hash every block of every share."""
    report = obj.client().request("POST", _cap_path(cap, "/verify"))
    _report(report, as_json)


def _report(report: dict, as_json: bool) -> None:
    if as_json:
        emit_json(report)
    else:
        _shares_table(report)
        state = "healthy" if report["healthy"] else "recoverable" if report["recoverable"] else "NOT recoverable"
        click.echo(f"{report['intact']} of {len(report['shares'])} shares intact: {state}")
    if not report["healthy"]:
        sys.exit(1)


@store.command()
@click.argument("cap")
@json_option
@click.pass_obj
def repair(obj, cap: str, as_json: bool) -> None:
    """Rebuild missing or corrupt shares from any 4 good ones."""
    result = obj.client().request("POST", _cap_path(cap, "/repair"))
    if as_json:
        emit_json(result)
        return
    _shares_table(result)
    click.echo(f"repaired shares {result['repaired']}" if result["repaired"] else "nothing to repair")
