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


def _duration(text: str | None) -> int | None:
    """--duration (30d, 12h, 3600) in seconds, within the lease bounds; None: the node's default."""
    if text is None:
        return None
    from ..storage.leases import DURATION_HINT, check_duration
    from ..units import parse_duration

    try:
        return check_duration(parse_duration(text))
    except InvalidArgument as err:
        raise InvalidArgument(f"--duration: {err.message}", hint=DURATION_HINT) from None


def _expiry(lease: int | None) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(lease, timezone.utc).isoformat(timespec="seconds") if lease else ""


@store.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--name", help="Name to list the file under (default: the file's name).")
@click.option("--duration", metavar="D", help="How long the shares are held: 30d, 12h, 3600 (seconds); "
              "60s to 3650d (default: the node's storage.lease_duration).")
@click.option("--max-price", type=click.IntRange(min=0), metavar="N",
              help="The most to pay, in micro-credits per GiB-hour of block bytes held.")
@click.option("--avoid", multiple=True, metavar="NODE", help="A provider not to place shares on (repeatable).")
@click.option("--prefer", multiple=True, metavar="NODE", help="A provider to choose first among equals (repeatable).")
@click.option("--min-availability", metavar="R", help="Only providers up at least this ratio of the last hour (0-1).")
@json_option
@click.pass_obj
def put(obj, file: str, name: str | None, duration: str | None, max_price: int | None, avoid: tuple[str, ...],
        prefer: tuple[str, ...], min_availability: str | None, as_json: bool) -> None:
    """Store FILE (or - for stdin); prints its capability as the last line."""
    seconds = _duration(duration)
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
        result = client.upload("/v1/store/files", stream, size=size, on_progress=advance,
                               query={"name": name, "duration": seconds, "max_price": max_price,
                                      "avoid": ",".join(avoid) or None, "prefer": ",".join(prefer) or None,
                                      "min_availability": min_availability})
    if as_json:
        emit_json(result)
        return
    from ..ledger import format_credits

    click.echo(f"stored {result['size']} bytes in {result['segments']} segment(s); {result['placement_note']}; "
               f"the lease costs {format_credits(result['cost'])} credits at "
               f"{'/'.join(sorted({str(p) for p in result['prices']}))} micro-credits per GiB-hour, "
               f"paid to the holders as they hold it", err=True)
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

    table(["name", "size", "created", "expires", "capability"],
          [(f["name"], format_size(f["size"]), f["created"], _expiry(f.get("lease_expiry")), f["capability"])
           for f in files])


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
    if result.get("warning"):
        click.echo(f"warning: {result['warning']}", err=True)


@store.command()
@click.argument("cap")
@click.option("--duration", metavar="D", help="Hold the shares this long from now: 30d, 12h, 3600 (seconds); "
              "60s to 3650d (default: the node's storage.lease_duration).  A lease is never shortened.")
@json_option
@click.pass_obj
def renew(obj, cap: str, duration: str | None, as_json: bool) -> None:
    """Extend the lease of every share of the file CAP, on every node holding one."""
    from ..errors import PeerError

    seconds = _duration(duration)
    result = obj.client().request("POST", _cap_path(cap, "/renew"),
                                  json_body={} if seconds is None else {"duration": seconds})
    failed = result["not_renewed"]
    if as_json:
        emit_json(result)
        if failed:
            sys.exit(1)
        return
    table(["share", "node", "expires"], [(r["share"], r["node"][:16] + ("…" if len(r["node"]) > 16 else ""),
                                          _expiry(r["lease_expiry"])) for r in result["renewed"]])
    if failed:
        raise PeerError(f"{len(result['renewed'])} of 6 shares renewed; not renewed: "
                        + "; ".join(f"node {node[:12]}…: {why}" for node, why in failed.items()),
                        hint="retry when those nodes are back, or `xsc store repair` the file first")
    from ..ledger import format_credits

    click.echo(f"every share's lease ends at {_expiry(result['lease_expiry'])} or later; the extension costs "
               f"{format_credits(result.get('cost', 0))} credits, paid to the holders as they hold it")
