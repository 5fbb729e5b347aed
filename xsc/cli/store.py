"""`xsc store put|get|ls|rm|check|verify|repair`."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from urllib.parse import quote

import click

from ..errors import BadRequest, InvalidArgument, XscError
from ..storage.core.leases import MAX_DURATION, MIN_DURATION
from ..units import counted, format_credits, parse_ratio, plural_for
from .file_reports import report_of, shares_table
from .output import Duration, emit_json, json_option, output_file, wide_option
from .progress import progress_bar
from .tables import Col, prose, table, terminal_width


def _cap_path(cap: str, suffix: str = "") -> str:
    from ..storage.core.capability import Capability

    Capability.parse(cap)  # a malformed capability is refused before any request
    return f"/v1/store/files/{quote(cap.strip(), safe=':')}{suffix}"


def _ratio(text: str | None) -> str | None:
    """--min-availability checked as the node checks it, so a bad one is a usage error (exit 2) like a bad --duration,
    not a put the node refuses; sent as typed."""
    if text is not None and parse_ratio(text) is None:
        raise click.BadParameter(f"a ratio from 0 to 1, not {text[:40]!r} (e.g. --min-availability 0.99)")
    return text


# A lease's duration in whole seconds within the bounds the node holds it to (storage/core/leases.py): refused, as
# every time flag is, before any request.
LEASE = Duration("30d", least=MIN_DURATION, most=MAX_DURATION, whole=True)


@click.group()
def store() -> None:
    """Put, get, check, verify and repair files."""


def _expiry(lease: int | None) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(lease, timezone.utc).isoformat(timespec="seconds") if lease else ""


def _minute(iso: str) -> str:
    """A UTC time in a table, as `ls -l` and `aws s3 ls` show one: to the minute, without the zone (its header says
    UTC), so the names beside it keep the room."""
    return iso[:16].replace("T", " ")


@store.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--name", help="Name to list the file under (default: the file's name).")
@click.option("--duration", type=LEASE, help="How long the shares are held, e.g. 30d, 12h, 3600 (seconds); "
              "1m to 3650d (default: the node's storage.lease_duration).")
@click.option("--max-price", type=click.IntRange(min=0), metavar="N",
              help="The most to pay, in micro-credits per GiB-hour of block bytes held.")
@click.option("--avoid", multiple=True, metavar="NODE", help="A provider not to place shares on (repeatable).")
@click.option("--prefer", multiple=True, metavar="NODE", help="A provider to choose first among equals (repeatable).")
@click.option("--spread", is_flag=True, help="Let the market place all 6 shares (by default, with fewer than 6 "
              "providers, 4 stay on this node so that no other node's loss loses the file).")
@click.option("--min-availability", metavar="R", callback=lambda ctx, param, value: _ratio(value),
              help="Only providers up at least this ratio of the last hour (0-1).")
@json_option
@click.pass_obj
def put(obj, file: str, name: str | None, duration: int | None, max_price: int | None, avoid: tuple[str, ...],
        prefer: tuple[str, ...], spread: bool, min_availability: str | None, as_json: bool) -> None:
    """Store FILE (or - for stdin); prints its capability as the last line.

    Beside the data dir's node, FILE is handed to the node, which reads it itself; else it is sent over HTTP.  The
    file keeps --avoid, --prefer and --min-availability: its repairs place the shares they rebuild by them too."""
    if file == "-":
        stream, size, name = sys.stdin.buffer, None, name or "stdin"
    else:
        path = Path(file)
        if not path.exists():
            raise InvalidArgument(f"no such file: {file}", hint="check the path")
        if path.is_dir():
            raise InvalidArgument(f"not a regular file: {file}", hint="put one file at a time")
        if not path.is_file():  # a pipe, a device, a socket: what it gives is a stream, which stdin takes
            raise InvalidArgument(f"not a regular file: {file}",
                                  hint=f"put what it gives through stdin: xsc store put - < {shlex.quote(file)}")
        try:
            stream = path.open("rb")
        except PermissionError:
            raise InvalidArgument(f"cannot read {file}: permission denied") from None
        # the name travels as text: a file name's bytes that are not UTF-8 are listed as U+FFFD
        size, name = path.stat().st_size, name or os.fsencode(path.name).decode(errors="replace")
    client = obj.client()
    query = {"name": name, "duration": duration, "max_price": max_price, "avoid": ",".join(avoid) or None,
             "prefer": ",".join(prefer) or None, "min_availability": min_availability,
             "spread": 1 if spread else None}
    with progress_bar(f"put {name}", size, data=True, shown=not as_json) as bar:
        result = _put_handed(obj, client, stream, query, bar.advance) if file != "-" else None
        if result is None:
            result = client.upload("/v1/store/files", stream, size=size, on_progress=bar.advance, query=query)
    if as_json:
        emit_json(result)
        return
    prose(f"stored {result['size']} bytes in {counted(result['segments'], 'segment')}; {result['placement_note']}; "
          f"the lease costs {format_credits(result['cost'])} credits at "
          f"{'/'.join(sorted({str(p) for p in result['prices']}))} micro-credits per GiB-hour, "
          f"paid to the holders as they hold it", err=True)
    if result.get("kept_home"):
        prose(f"the shares meant for other nodes stay on this one: {result['kept_home']}", err=True)
    if result.get("lost"):
        prose(f"warning: {result['lost']}", err=True)
    for node, amount in (result.get("prepaid") or {}).items():
        prose(f"prepaid node {node} {format_credits(amount)} credits by itself (ledger.auto_prepay)", err=True)
    click.echo(result["capability"])


def _put_handed(obj, client, stream, query: dict, advance) -> dict | None:
    """The put of a file handed to the data dir's node over its Unix socket (the node reads it: its bytes never
    cross a connection); None if no node there takes it (none listens, an older one, another user's), to put it
    over HTTP.  The progress is how far the node read the file: its open file's offset, which both share."""
    from ..client.sync import hand_over

    path = obj.local_socket()
    fd = stream.fileno()
    try:
        handed = hand_over(path, fd) if path else None
    except XscError:  # refused (another user's node, too many files waiting): over HTTP instead
        handed = None
    if handed is None:
        return None
    start = os.lseek(fd, 0, os.SEEK_CUR)
    return client.put_handed("/v1/store/files", {**query, "local": handed[0]},
                              lambda: os.lseek(fd, 0, os.SEEK_CUR) - start, advance)


def _looks_binary(chunk: bytes) -> bool:
    """As curl decides: a NUL byte in the first chunk (text files have none)."""
    return b"\0" in chunk[:65536]


@store.command()
@click.argument("cap")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE",
              help="Write to FILE, which appears only once complete (a device such as /dev/null is written "
                   "through; default: stdout; - forces stdout even for binary data on a terminal).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.pass_obj
def get(obj, cap: str, output: str | None, force: bool) -> None:
    """Fetch, verify, decode and decrypt the file CAP.

    With -o FILE, nothing is left behind if the get fails or is interrupted."""
    import signal

    from ..errors import connection_reason

    target = output_file(output, force, devices=True) if output not in (None, "-") else None
    body = obj.client().open_body(_cap_path(cap))
    size = body.length
    # A device (/dev/null) is written through: no file of its own appears, so there is none to make whole first.
    device = target is not None and target.is_char_device()
    tmp = target.with_name(f".{target.name}.xsc-partial") if target is not None and not device else None
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up as Ctrl-C does
    try:
        if device:
            out = os.open(target, os.O_WRONLY)
        elif tmp is None:
            if output is None and sys.stdout.isatty() and _looks_binary(body.peek(65536)):
                raise InvalidArgument("not writing binary data to the terminal",
                                      hint="write it to a file with -o FILE, or give -o - to print it anyway")
            sys.stdout.flush()
            try:
                out = os.dup(sys.stdout.fileno())
            except (AttributeError, OSError, ValueError):  # no descriptor: a program that runs the CLI took stdout
                out = sys.stdout.buffer
        else:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with progress_bar("get", size, data=True, shown=target is not None) as bar:
            # The bytes go from the node's socket to the output by splice(2) where they can (xsc/client/sync.py).
            body.splice_to(out, progress=bar.advance, head=True)
        if tmp is not None:
            os.replace(tmp, target)  # the output file appears only once it is complete
    except BrokenPipeError:  # the reader of stdout went away (`| head`): not the download's fault
        raise
    except (ConnectionError, TimeoutError) as exc:
        raise _stopped(obj, cap, f"the download stopped after {body.passed} of {size} bytes",
                       connection_reason(exc)) from None
    except OSError as exc:  # the disk is full, the folder went away...
        raise BadRequest(f"cannot write {output or 'to stdout'}: {exc.strerror or exc}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        body.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # gone already when complete; else nothing partial stays behind


AGAIN = "get it again once the nodes that hold its shares are back (`xsc health status` shows them)"


def _stopped(obj, cap: str, said: str, reason: str) -> XscError:
    """A get cut short.  The node ends an answer it has begun when it cannot go on (a holder went away mid-file), and
    says why only in its log: a check of the capability (its shares' metadata, no block read) tells the user what the
    node finds now, the holders it cannot reach named, as a get refused before it began would."""
    from ..errors import NodeNotRunning
    from ..storage.core.erasure import K, N

    cut = BadRequest(f"{said} ({reason})", hint="run `xsc store verify` on the capability; the node's log says why")
    try:
        report = obj.client().request("GET", _cap_path(cap, "/check"))
    except NodeNotRunning:  # the node itself went away, or cannot answer: what it found is in its log
        return cut
    except XscError as err:  # no share found now (the capability read until then: its holders went away)
        return BadRequest(f"{said}: {err.message}", hint=AGAIN)
    if report["recoverable"]:
        return cut
    unread: dict[str, list[int]] = {}  # shares unread for one reason (a holder down) named together
    for share in report["shares"]:
        if share["status"] not in ("ok", "present"):
            unread.setdefault(share["detail"] or share["status"], []).append(share["share"])
    why = "; ".join(f"{counted(len(shares), 'share')} ({', '.join(map(str, shares))}) {detail}"
                    for detail, shares in unread.items())
    return BadRequest(f"{said}: only {report['intact']} of {N} shares can be read now ({K} are needed): {why}",
                      hint=AGAIN)


@store.command("ls")
@wide_option
@json_option
@click.pass_obj
def list_files(obj, wide: bool, as_json: bool) -> None:
    """List the files this node uploaded.

    Capabilities are never cut or folded; on a narrow terminal the other columns are shortened
    or dropped first, and a capability too long for the line gets a line of its own (--wide:
    every column, one line per file)."""
    files = obj.client().request("GET", "/v1/store/files")["files"]
    if as_json:
        emit_json(files)
        return
    if not files:
        click.echo("no files yet (store one with: xsc store put FILE)")
        return
    from ..units import format_size

    rows = [(f["name"], format_size(f["size"]), _minute(f["created"]), _minute(_expiry(f.get("lease_expiry"))),
             f["capability"]) for f in files]
    columns = [Col("name", shrink=12), Col("size", right=True), Col("created (UTC)", drop=2),
               Col("expires (UTC)", drop=1)]
    width = terminal_width()
    if wide or width is None or max(len(r[4]) for r in rows) + 2 + 12 + 2 + 10 <= width:
        # piped: one line a file, its capability last, whole (`xsc store ls | grep NAME`), as `compute jobs` is
        table([*columns, Col("capability", keep=True)], rows, wide=wide, piped=None)
    else:  # each capability on its own line, whole, under its file
        table(columns, [r[:4] for r in rows], details=[r[4] for r in rows])


@store.command("rm")
@click.argument("cap")
@json_option
@click.pass_obj
def remove(obj, cap: str, as_json: bool) -> None:
    """Remove the file CAP and free its space."""
    result = obj.client().request("DELETE", _cap_path(cap))
    if as_json:
        emit_json(result)
        return
    click.echo(f"removed {cap}")
    for node, why in sorted((result.get("not_deleted_on") or {}).items()):
        prose(f"node {node} was not reached ({why}): its shares of the file are deleted once it answers (asked at "
              "each start of this node and every storage.gc_interval); nothing more is paid for them", err=True)


@store.command()
@click.argument("cap")
@wide_option
@json_option
@click.pass_obj
def check(obj, cap: str, wide: bool, as_json: bool) -> None:
    """Show which of the 6 shares of the file CAP are present, and on which node (a quick look at metadata: blocks
    are not read; see verify).  Works for any capability: shares of a file another node stored are found on the
    network."""
    report = obj.client().request("GET", _cap_path(cap, "/check"))
    report_of(report, as_json, cap, presence_only=True, wide=wide)


_ALL_HELP = ("Every file this node lists (`xsc store ls`), 4 at a time, going on past any that fails; a table of "
             "each file's state at the end; exit 1 unless all are well.")


def _one_or_all(action: str, cap: str | None, every: bool) -> None:
    """A usage error (exit 2, as click's own for a missing argument) unless one of CAP and --all is given."""
    if cap is None and not every:
        raise click.UsageError(f"{action} needs the capability of a file, or --all for every file",
                               click.get_current_context())
    if cap is not None and every:
        raise click.UsageError(f"{action} takes a capability or --all, not both", click.get_current_context())


@store.command()
@click.argument("cap", required=False)
@click.option("--all", "every", is_flag=True, help=_ALL_HELP)
@wide_option
@json_option
@click.pass_obj
def verify(obj, cap: str | None, every: bool, wide: bool, as_json: bool) -> None:
    """Read and hash every block of every share of CAP (or of every file: --all); names the bad blocks (share and
    segment)."""
    _one_or_all("verify", cap, every)
    if every:
        _every_file(obj, "verify", wide, as_json)
        return
    report_of(_with_progress(obj, cap, "verify", as_json), as_json, cap, wide=wide)


_STAGES = {"verify": "reading every block", "check": "reading the blocks here", "rebuild": "rebuilding segments"}


def _with_progress(obj, cap: str, action: str, as_json: bool) -> dict:
    """The answer of `action` (verify, repair) of the file CAP, the node's progress drawn meanwhile (progress_bar)."""
    with progress_bar(action, shown=not as_json) as bar:
        def told(p: dict) -> None:
            said = f" (share {p['share']} {p['status']})" if "share" in p else ""
            bar.show(p.get("done", 0), p.get("total"), f"{action}: {_STAGES.get(p.get('stage'), '')}{said}")

        return obj.client().request_with_progress("POST", _cap_path(cap, f"/{action}"), told)


@store.command()
@click.argument("cap", required=False)
@click.option("--all", "every", is_flag=True, help=_ALL_HELP.replace("4 at a time", "verified 4 at a time and "
              "each damaged one repaired, one at a time"))
@wide_option
@json_option
@click.pass_obj
def repair(obj, cap: str | None, every: bool, wide: bool, as_json: bool) -> None:
    """Rebuild missing or corrupt shares of CAP (or of every damaged file: --all) from any 4 good ones."""
    _one_or_all("repair", cap, every)
    if every:
        _every_file(obj, "repair", wide, as_json)
        return
    result = _with_progress(obj, cap, "repair", as_json)
    if as_json:
        emit_json(result)
        return
    shares_table(result, wide=wide)
    repaired = ", ".join(str(share) for share in result["repaired"])
    click.echo(f"repaired shares {repaired}" if repaired else "nothing to repair")
    if result.get("warning"):
        click.echo(f"warning: {result['warning']}", err=True)


@store.command()
@click.argument("cap")
@click.option("--duration", type=LEASE, help="Hold the shares this long from now, e.g. 30d, 12h, 3600 (seconds); "
              "1m to 3650d (default: the node's storage.lease_duration).  A lease is never shortened.")
@wide_option
@json_option
@click.pass_obj
def renew(obj, cap: str, duration: int | None, wide: bool, as_json: bool) -> None:
    """Extend the lease of every share of the file CAP, on every node holding one."""
    from ..errors import PeerError

    result = obj.client().request("POST", _cap_path(cap, "/renew"),
                                  json_body={} if duration is None else {"duration": duration})
    failed = result["not_renewed"]
    if as_json:
        emit_json(result)
        if failed:
            sys.exit(1)
        return
    table([Col("share", right=True), Col("node", keep=True), Col("expires (UTC)")],
          [(r["share"], r["node"], _minute(_expiry(r["lease_expiry"])))
           for r in result["renewed"]], wide=wide)
    if failed:
        raise PeerError(f"{len(result['renewed'])} of 6 shares renewed; not renewed: "
                        + "; ".join(f"node {node}: {why}" for node, why in failed.items()),
                        hint=f"{result['hint']}; then renew it again" if result.get("hint") else
                        "retry when those nodes are back, or `xsc store repair` the file first")
    ends = f"ends at {_expiry(result['lease_expiry'])} or later"
    if result.get("extended"):
        prose(f"every share's lease {ends}; the extension costs {format_credits(result.get('cost', 0))} credits, paid "
              "to the holders as they hold it")
    else:  # every lease ended later already: a renewal never shortens one
        prose(f"every share's lease already {ends}: nothing extended, nothing to pay (a lease is never shortened)")


def _every_file(obj, action: str, wide: bool, as_json: bool) -> None:
    """`verify --all`, `repair --all`: the node's run over every file (storage/deep_check.py), drawn as it goes
    (files done of all, their bytes, the file a line is about and how far it is), then a table of each file's state.
    A Ctrl-C leaves the node to finish the files it began, each whole, and to begin no more."""
    from ..units import format_size

    with progress_bar(f"{action} --all", shown=not as_json) as bar:
        def told(p: dict) -> None:
            where = f"; {_cut(p.get('name') or '(unnamed)', 24)}" if "file" in p else ""
            step = f" {p['stage']} {p['done']}/{p['total']}" if "stage" in p else ""
            bar.show(p["files_done"], p["files_total"], f"{action}: {format_size(p['bytes_done'])} of "
                     f"{format_size(p['bytes_total'])}{where}{step}")

        result = obj.client().request_with_progress("POST", f"/v1/store/{action}", told)
    files = result["files"]
    if as_json:
        emit_json(result)
    elif not files:
        click.echo("no files yet (store one with: xsc store put FILE)")
    else:
        _files_table(files, wide)
        counts: dict[str, int] = {}
        for f in files:
            counts[_state(f)] = counts.get(_state(f), 0) + 1
        said = ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda c: _STATES.get(c[0], 9)))
        prose(f"{counted(len(files), 'file')}: {said}" + ("" if result["healthy"] or action == "repair"
                                                 else "; `xsc store repair --all` repairs the damaged ones")
              + ("; `xsc store check CAP` of an at-risk file says how to spread its shares" if "at risk" in counts
                 else ""))
    if not result["healthy"]:
        sys.exit(1)


_STATES = {state: n for n, state in enumerate(["healthy", "repaired", "at risk", "removed", "damaged",
                                               "not recoverable", "failed"])}


def _state(f: dict) -> str:
    """A file's state as `xsc store check` says it: whole but with every share on one node while another is up is
    at risk (still whole: the run's exit status counts it healthy)."""
    return "at risk" if f.get("at_risk") else f["state"]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _files_table(files: list[dict], wide: bool) -> None:
    """Each file's state, size and name, its capability whole (on a line of its own when the line is too narrow for
    it, as `store ls` shows it), and why it is not well."""
    from ..units import format_size

    def detail(f: dict) -> str:
        shares = f.get("repaired") or []
        rebuilt = f"{plural_for(len(shares), 'share')} {', '.join(map(str, shares))} rebuilt" if shares else ""
        return "; ".join(d for d in (rebuilt, f.get("detail"), f.get("at_risk")) if d)

    rows = [(_state(f), format_size(f["size"]), f.get("name") or "(unnamed)", f["capability"], detail(f))
            for f in files]
    columns = [Col("state"), Col("size", right=True), Col("name", shrink=12)]
    width = terminal_width()
    if wide or width is None:
        said = [Col("detail")] if any(r[4] for r in rows) else []
        table([*columns, Col("capability", keep=True), *said], [r[:4 + len(said)] for r in rows], wide=wide,
              piped=None)  # piped: one line a file, as `store ls` lists them
    else:  # the capability, and the detail of a file not well, on lines of their own under the file
        table(columns, [r[:3] for r in rows], details=[f"{r[3]} {r[4]}".rstrip() for r in rows])
