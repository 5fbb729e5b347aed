"""`xsc compute run|rerun|job|jobs|lineage|map|maps|watch`: WASI programs over bytes and stored files (compute/jobs.py)."""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import quote

import click

from .. import codec
from ..errors import InvalidArgument, ModuleNotFound, NodeNotRunning, NotANode, Unauthorized, XscError
from ..units import counted, format_credits, plural_for
from .interrupts import GoesOn
from .output import (Col, PassesArgs, emit_json, json_option, key_values, path_id, prose, table, terminal_width,
                     wide_option)
from .progress import progress_bar

_MODULE_ID = re.compile(r"[0-9a-fA-F]{64}")
JOB_STREAM = "application/x-xsc-job"  # the spec's JSON line, then stdin (compute/jobs.py)
CHUNK = 1 << 20


def _load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path} is not TOML: {exc}") from None
    from ..compute.jobspec import FIELDS

    unknown = sorted(set(spec) - set(FIELDS))  # a misspelt `module` is named as such, not read as a folder
    if unknown:
        raise InvalidArgument(f"unknown {plural_for(len(unknown), 'field')} in the job spec: {', '.join(unknown)}",
                              hint=f"its fields: {', '.join(FIELDS)}")
    module = spec.get("module")
    if not isinstance(module, str) or not module:
        raise InvalidArgument(f"the job spec {path} names no module",
                              hint='add module = "PROGRAM.wasm" (a path from the spec\'s folder) or a module id')
    if not _MODULE_ID.fullmatch(module):  # a path, from the spec's own folder
        spec["module"] = str((path.parent / module))
    return spec


def deployed_module(client, text: str) -> str:
    """A module id: given, or a .wasm file's (deployed with WASI if the node lacks it)."""
    if _MODULE_ID.fullmatch(text):
        return text.lower()
    try:
        wasm = Path(text).read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"no such file, and not a module id: {text}",
                              hint="give a .wasm file, a job spec .toml, or a module id") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise InvalidArgument(f"cannot read {text}: {exc.strerror}") from None
    module_id = hashlib.sha256(wasm).hexdigest()
    try:
        client.request("GET", f"/v1/modules/{module_id}")
    except ModuleNotFound:
        client.request("POST", "/v1/modules", body=wasm, content_type="application/wasm", query={"wasi": "true"})
    return module_id


def _stdin_source(stdin: str | None, no_stdin: bool) -> tuple[str | None, BinaryIO | None]:
    """What the job's stdin is: (spec value, local stream to send).  Default: this command's stdin if it is
    not a terminal (`printf ... | xsc compute run prog.wasm`)."""
    if no_stdin:
        return None, None
    if stdin is None:
        return ("-", sys.stdin.buffer) if not sys.stdin.isatty() else (None, None)
    if stdin == "-":
        return "-", sys.stdin.buffer
    if stdin.startswith("xsc:chk:"):
        return stdin, None
    if not stdin:  # `--stdin "$FILE"` with FILE unset: not a file named ""
        raise InvalidArgument("--stdin: an empty path names no file",
                              hint="give a file, - for this command's stdin, a capability, or --no-stdin")
    try:
        return "-", open(stdin, "rb")
    except OSError as exc:
        raise InvalidArgument(f"cannot read {stdin}: {exc.strerror}", hint="give a file, - or a capability") from None


def _stream(spec: dict[str, Any], source: BinaryIO) -> Iterator[bytes]:
    yield codec.dumps(spec) + b"\n"
    while chunk := source.read(CHUNK):
        yield chunk


@click.command("run", cls=PassesArgs, context_settings={"ignore_unknown_options": True})
@click.argument("target", metavar="MODULE.wasm|ID|SPEC.toml")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.option("--stdin", "stdin", metavar="FILE|-|CAP", help="What the program reads as stdin "
              "(default: this command's stdin when it is piped).")
@click.option("--no-stdin", is_flag=True, help="Give the program an empty stdin.")
@click.option("--input", "inputs", multiple=True, metavar="CAP:/in/NAME",
              help="Mount a stored file read-only at /in/NAME (repeatable).")
@click.option("--stdout-to-store", is_flag=True, help="Store the program's stdout as a file (up to --bytes-out).")
@click.option("--no-outputs", is_flag=True, help="Mount no /out (and store nothing but a stored stdout).")
@click.option("--entrypoint", metavar="NAME", help="The export to run (default: _start).")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="An environment variable (repeatable).")
@click.option("--deterministic", is_flag=True, help="A run again over the same bytes answers the stored outputs.")
@click.option("--fuel", type=int, metavar="N", help="Fuel budget (at most the node's compute.fuel).")
@click.option("--memory", metavar="SIZE", help="Memory limit, e.g. 16MiB.")
@click.option("--timeout", type=float, metavar="SECS", help="Wall-clock limit.")
@click.option("--bytes-in", metavar="SIZE", help="Most bytes of stdin and inputs together (default 1GiB).")
@click.option("--bytes-out", metavar="SIZE", help="Most bytes left in /out, stored stdout included (default 256MiB).")
@click.option("--stdout-cap", metavar="SIZE", help="Most bytes of stdout kept (default 1MiB).")
@click.option("--stderr-cap", metavar="SIZE", help="Most bytes of stderr kept (default 64KiB).")
@click.option("--max-price", type=click.IntRange(min=0), metavar="N", help="Most micro-credits per million fuel.")
@click.option("--replicas", type=click.IntRange(1, 7), metavar="R",
              help="Run it on R providers and pay those whose outputs and fuel agree (a deterministic job).")
@click.option("--agree", type=click.IntRange(1, 7), metavar="K", help="How many replicas must agree (default: a "
              "majority).")
@json_option
@click.pass_obj
def run(obj, target: str, argv: tuple[str, ...], stdin: str | None, no_stdin: bool, inputs: tuple[str, ...],
        stdout_to_store: bool, no_outputs: bool, entrypoint: str | None, env: tuple[str, ...], deterministic: bool,
        fuel: int | None, memory: str | None, timeout: float | None, bytes_in: str | None, bytes_out: str | None,
        stdout_cap: str | None, stderr_cap: str | None, max_price: int | None, replicas: int | None, agree: int | None,
        as_json: bool) -> None:
    """Run a WASI program as a job, with the arguments ARGV: stdin, stored files under /in, outputs left in /out
    stored as files.

    MODULE.wasm|ID|SPEC.toml is a .wasm file (deployed first if the node lacks it), a module id, or a job spec
    (.toml) whose fields (module, entrypoint, argv, env, stdin, inputs, outputs, stdout_to_store, deterministic,
    limits, max_price, replicas, agree) the options override.  Prints the program's stdout; the job id, charge and
    every stored output (name, size, SHA-256, capability) go to stderr."""
    client = obj.client()
    spec: dict[str, Any] = _load_spec(Path(target)) if target.endswith(".toml") else {"module": target}
    spec["module"] = deployed_module(client, str(spec.get("module", "")))
    limits = dict(spec.get("limits") or {})
    for name, value in (("fuel", fuel), ("memory", memory), ("timeout", timeout), ("bytes_in", bytes_in),
                        ("bytes_out", bytes_out), ("stdout", stdout_cap), ("stderr", stderr_cap)):
        if value is not None:
            limits[name] = value
    if limits:
        spec["limits"] = limits
    if argv:
        spec["argv"] = list(argv)
    if inputs:
        spec["inputs"] = [*spec.get("inputs", []), *inputs]
    if env:
        spec["env"] = {**spec.get("env", {}), **dict(env_pair(e) for e in env)}
    for name, value in (("stdout_to_store", stdout_to_store), ("deterministic", deterministic)):
        if value:
            spec[name] = True
    if no_outputs:
        spec["outputs"] = False
    if entrypoint:
        spec["entrypoint"] = entrypoint
    for name, value in (("max_price", max_price), ("replicas", replicas), ("agree", agree)):
        if value is not None:
            spec[name] = value
    source = None
    if stdin is not None or no_stdin or "stdin" not in spec:
        spec["stdin"], source = _stdin_source(stdin, no_stdin)
    spec = {k: v for k, v in spec.items() if v is not None}
    asker = secrets.token_hex(16)  # what it asks the node after, once interrupted: which job that request runs
    path = f"/v1/compute/jobs?asker={asker}"
    if source is not None:
        _answered(lambda sent: client.post_stream(path, _stream(spec, source), JOB_STREAM, sent), as_json, asker)
    else:
        _answered(lambda sent: client.request("POST", path, json_body=spec, sent=sent), as_json, asker)


@click.command("rerun")
@click.argument("job_id", metavar="ID")
@click.option("--replicas", type=click.IntRange(1, 7), metavar="R",
              help="Run it on R providers instead (another job: the same run asked with another guarantee).")
@click.option("--agree", type=click.IntRange(1, 7), metavar="K",
              help="How many replicas must agree instead (default: as it asked, or a majority of --replicas).")
@json_option
@click.pass_obj
def rerun(obj, job_id: str, replicas: int | None, agree: int | None, as_json: bool) -> None:
    """Run the job ID again from the spec its record keeps (an interrupted or failed one, say): a new run of the
    same job, which replaces its run before.  Prints as `run` does."""
    guarantee = {k: v for k, v in (("replicas", replicas), ("agree", agree)) if v is not None}
    asker = secrets.token_hex(16)
    path = f"/v1/compute/jobs/{path_id(job_id, 'job id', 'xsc compute jobs')}/rerun?asker={asker}"
    _answered(lambda sent: obj.client().request("POST", path, json_body=guarantee or None, sent=sent), as_json, asker)


def _answered(run: Callable[[Callable[[], None]], dict], as_json: bool, asker: str) -> None:
    """A job's run as `run` and `rerun` print it: the program's output, then the job's summary (or its JSON).
    `run(sent)` asks for it, calling `sent()` once its request is sent whole: from then on the node runs it
    whatever becomes of this command, and a Ctrl-C says so, naming the command that cancels it (the job the node
    says the request tagged `asker` runs)."""
    whole: list[bool] = []
    try:
        answer = run(lambda: whole.append(True))
    except XscError as err:  # a run that failed (a trap, outputs refused or not stored) answers what it printed
        if not as_json:
            _program_output(err.details)
        raise
    except KeyboardInterrupt:
        if not whole:
            raise
        raise GoesOn("the job goes on at the node, which has its whole request (follow it with: xsc compute jobs; "
                     f"cancel it with: xsc compute cancel {_asked(asker) or 'ID'})") from None
    if as_json:
        emit_json(answer)
        return
    _program_output(answer)
    _summary(answer)


def _asked(asker: str) -> str | None:
    """The job the node runs for the request tagged `asker`, if it says (a node gone, or the job's bytes still
    staged, says nothing)."""
    try:
        return click.get_current_context().obj.client().request("GET", "/v1/compute/jobs", query={"asker": asker})["id"]
    except (XscError, OSError, KeyError, TypeError):
        return None


def env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise InvalidArgument(f"--env takes NAME=VALUE, not {text!r}", hint=f"e.g. --env {text or 'NAME'}=VALUE")
    return name, value


def _program_output(facts: dict[str, Any]) -> None:
    if facts.get("stdout"):
        sys.stdout.write(facts["stdout"])
        sys.stdout.flush()
    if facts.get("stderr"):
        sys.stderr.write(facts["stderr"])
        sys.stderr.flush()


def _summary(job: dict[str, Any]) -> None:
    how = "replayed (not run again)" if job.get("replayed") else f"ran (executions: {job['executions']})"
    if job.get("replicas") and not job.get("replayed"):
        paid = sum(1 for r in job["replicas"] if r.get("paid"))
        asked = job.get("guarantee", {}).get("replicas", len(job["replicas"]))
        again = f" ({len(job['replicas']) - asked} placed again)" if len(job["replicas"]) > asked else ""
        paid_said = f"{paid} of them paid" if len(job["replicas"]) > 1 else "paid" if paid else "not paid"
        how += f" on the {counted(asked, 'replica')} asked{again}, {paid_said} (`xsc compute job ID` lists " \
               f"{'them' if len(job['replicas']) > 1 else 'it'})"
    prose(f"job {job['id']} {how}, charged {format_credits(job.get('charged', 0))} credits", err=True)
    for output in job.get("outputs", []):
        _file_line("  ", output["name"], output["size"], output["sha256"], output["capability"], err=True)


def _file_line(pad: str, name: str, size: int, sha256: str, capability: str | None = None, *,
               err: bool = False) -> None:
    """A file a job read or wrote on one line; on a terminal too narrow for it, its hash and capability on lines
    of their own under it (whole: they are copied and pasted)."""
    pieces = [f"{pad}{name}  {size} bytes", f"sha256 {sha256}"] + ([capability] if capability else [])
    width = terminal_width(err)
    if width is None or len("  ".join(pieces)) <= width:
        click.echo("  ".join(pieces), err=err)
        return
    under = " " * (len(pad) - len(pad.lstrip()) + 4)
    click.echo("\n".join([pieces[0], *(under + piece for piece in pieces[1:])]), err=err)


@click.command("job")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_obj
def job(obj, job_id: str, as_json: bool) -> None:
    """Show the job ID: its state, executions, charge, the node that ran it, its stdin (a stored one by its capability),
    inputs, outputs and provenance record."""
    found = obj.client().request("GET", f"/v1/compute/jobs/{path_id(job_id, 'job id', 'xsc compute jobs')}")
    if as_json:
        emit_json(found)
        return
    guarantee = found.get("guarantee") or {}
    replicated = guarantee.get("replicas", 1) > 1
    key_values([("id", found["id"]), ("state", found["state"]), ("module", found["module"]),
                ("executions", found["executions"]), ("charge", _charge(found)),
                ("provenance", found.get("provenance", "-")),
                ("started", f"{_started(found.get('created'))} UTC" if found.get("created") else "-")]
               + ([("provider", found["provider"])] if found.get("provider") and not replicated else [])
               + ([("guarantee", f"{guarantee['replicas']} replicas, at least {guarantee['agree']} agreeing")]
                  if replicated else [])
               + ([("error", f"{found['error']} ({found['error_hint']})" if found.get("error_hint") else
                    found["error"])] if found.get("error") else []))
    stdin, again = found.get("stdin"), (found.get("again") or {}).get("stdin")
    if stdin:  # a stored one by its capability, as `xsc compute run --stdin CAP` named it
        _file_line("  ", "stdin", stdin["size"], stdin["sha256"], again if again not in (None, "-") else None)
    elif again not in (None, "-"):  # a record kept before records named their stdin: its spec still does
        click.echo(f"  stdin  {again}")
    for item in found.get("inputs", []):
        _file_line("  input  ", item["path"], item["size"], item["sha256"])
    for output in found.get("outputs", []):
        _file_line("  output ", output["name"], output["size"], output["sha256"], output["capability"])
    for output in found.get("replacing", []):  # the run before's, until a run of it replaces them
        _file_line("  earlier ", output["name"], output["size"], output["sha256"], output["capability"])
    for replica in found.get("replicas", []):  # what the charge is made of: one line per provider
        _replica_line(replica)
    for attempt in found.get("attempts", []):  # each provider that failed its latest run, in turn
        _attempt_line(attempt)
    if found.get("attempts_more"):
        click.echo(f"  ({counted(found['attempts_more'], 'more failed attempt')} not kept)")
    for payment in found.get("payments", []):
        _payment_line(payment)


def _started(timestamp: str | None) -> str:
    """When a job's latest run began (its record's `created`), to the second, as `job` and `jobs` both show it."""
    return str(timestamp or "-").replace("T", " ")[:19]


def _charge(job: dict[str, Any]) -> str:
    """A job's charge: its latest run's, and what all its runs were charged when it ran more than once."""
    latest = f"{format_credits(job.get('charge', 0))} credits"
    total = job.get("charge_total", job.get("charge", 0))
    if job.get("executions", 0) <= 1 and total == job.get("charge", 0):
        return latest
    return f"{latest} (latest run), {format_credits(total)} credits over its {job.get('executions', 0)} runs"


@click.command("jobs")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="How many jobs, newest first.")
@click.option("--before", metavar="CURSOR", help="The next page: the cursor the page before ended with.")
@wide_option
@json_option
@click.pass_obj
def jobs(obj, limit: int, before: str | None, wide: bool, as_json: bool) -> None:
    """List your jobs, newest first (by when their latest run began): id, state, start, charge, module and
    replicas.  Ids are never cut: on a narrow terminal each goes on a line of its own under its job."""
    page = obj.client().request("GET", "/v1/compute/jobs", query={"limit": limit, "before": before})
    if as_json:
        emit_json(page)
        return
    if not page["jobs"]:
        click.echo("no more jobs" if before else "no jobs yet (run one with: xsc compute run MODULE.wasm)")
        return
    rows = [(_started(j.get("started")), j["state"], format_credits(j["charge"]),
             j["replicas"]) for j in page["jobs"]]
    columns = [Col("started (UTC)"), Col("state"), Col("charge (credits)", right=True), Col("replicas", right=True)]
    modules = [j.get("module_name") or j["module"] for j in page["jobs"]]
    width = terminal_width()
    beside = sum(max(len(c.name), *(len(str(r[i])) for r in rows)) + 2 for i, c in enumerate(columns))
    if wide or width is None or 64 + 2 + beside + max(map(len, modules)) <= width:
        table([Col("id", keep=True), *columns, Col("module", keep=True)],
              [(j["id"], *r, m) for j, r, m in zip(page["jobs"], rows, modules)], wide=wide)
    else:  # each id whole on a line of its own under its job (as `xsc store ls` puts capabilities), and a module
        # without a name too (its cell left empty: a "-" would read as no module)
        named = any(j.get("module_name") for j in page["jobs"])
        table([*columns, *([Col("module", keep=True)] if named else [])],
              [(*r, *([j.get("module_name") or ""] if named else [])) for j, r in zip(page["jobs"], rows)],
              details=[(j["id"], *(() if j.get("module_name") else (f"module {j['module']}",))) for j in page["jobs"]])
    if page.get("next"):
        more = f" --limit {limit}" if limit != 20 else ""
        click.echo(f"more: xsc compute jobs --before {page['next']}{more}")


def _replica_line(replica: dict[str, Any]) -> None:
    """A replica on one line, its provider's id whole (on a line of its own under it when the line is too narrow)."""
    said = (f"  replica  {'paid' if replica.get('paid') else 'not paid'}  "
            + (f"lost: {replica['lost']}" if replica.get("lost") else
               f"{format_credits(replica.get('charge', 0))} credits  {replica.get('fuel_consumed', 0):,} fuel")
            + (f"  {replica['outcome']}" if replica.get("outcome") else ""))  # (a cancelled job's replicas)
    width = terminal_width()
    if width is None or len(said) + 2 + len(replica["provider"]) <= width:
        click.echo(f"{said}  {replica['provider']}")
    else:
        click.echo(f"{said}\n      provider {replica['provider']}")


def _attempt_line(attempt: dict[str, Any]) -> None:
    """A provider's failure of the job's run: when, its id whole, then its error (and hint) whole under it."""
    error = attempt["error"] + (f" ({attempt['hint']})" if attempt.get("hint") else "")
    click.echo(f"  failed   {_started(attempt.get('at'))} UTC  {attempt['provider']}\n      {error}")


def _payment_line(payment: dict[str, Any]) -> None:
    """A payment of the job's latest run, by its ledger entry as `xsc ledger history` lists it: the id whole (on a
    line of its own under it when the line is too narrow)."""
    said = f"  payment  {format_credits(payment['amount'])} credits"
    if not payment.get("entry"):
        click.echo(f"{said}  {_owed(payment)}")
        return
    width = terminal_width()
    entry = f"entry {payment['entry']}"
    click.echo(f"{said}  {entry}" if width is None or len(said) + 2 + len(entry) <= width else f"{said}\n      {entry}")


def _owed(payment: dict[str, Any]) -> str:
    """A payment whose entry is not found: owed no more (paid long ago, or dropped), being made, or owed and tried
    again (how often it failed, the last failure, and when the next try is)."""
    if payment.get("owed") is False:
        return "owed no more: paid (xsc ledger history lists it) or dropped unpaid"
    if not payment.get("tries"):
        return "owed: being paid now"
    wait = max(0, round(payment["next_try"] - time.time()))
    tried = counted(payment["tries"], "try", "tries")
    return f"owed: {tried} failed, the last: {payment['error']}; the next in {wait} s"


@click.command("lineage")
@click.argument("cap", metavar="CAP")
@json_option
@click.pass_obj
def lineage(obj, cap: str, as_json: bool) -> None:
    """Walk from the stored file CAP back through the jobs that made it to the files they read, every level; each
    job's signed provenance record is checked."""
    found = obj.client().request("GET", f"/v1/compute/lineage/{path_id(cap, 'capability', 'xsc store ls')}")
    if as_json:
        emit_json(found)
        return
    click.echo(cap)
    _show_lineage(found, 1)


def _show_lineage(node: dict[str, Any], level: int) -> None:
    pad = "  " * level
    made = node.get("made_by")
    if made is None:
        # The walk reads this node's records only: a file another node's job made, or one no node holds, ends it too.
        click.echo(f"{pad}no job here made it (a user's put, or made elsewhere)")
        return
    signed = "SIGNATURE INVALID" if not made["signature_valid"] else \
        "signature ok (first batch rule)" if made.get("signature_rule") == "batch/1" else "signature ok"
    named = "" if made["output_signed"] else ", NOT AMONG THE OUTPUTS IT SIGNED"
    said = (f"made by job {made['job']} on node {made['node']} (module {made['module']}, provenance "
            f"{made['provenance']}, {signed}{named})")
    width = terminal_width()
    lines = _wrap_words(said, width - len(pad)) if width else [said]  # between words: an id is never cut
    click.echo("\n".join(pad + ("" if n == 0 else "  ") + line for n, line in enumerate(lines)))
    for item in made["inputs"]:
        _file_line(f"{pad}  read ", item["path"], item["size"], item["sha256"])
        _show_lineage(item, level + 2)
    stdin = made.get("stdin")
    if stdin:
        _file_line(f"{pad}  read ", "stdin", stdin["size"], stdin["sha256"])
        _show_lineage(stdin, level + 2)


def _wrap_words(text: str, width: int) -> list[str]:
    import textwrap  # here: only a lineage or a map's manifest on a terminal wraps

    return textwrap.wrap(text, max(width - 2, 20), break_long_words=False, break_on_hyphens=False) or [text]


MAX_MAP = 10_000  # inputs one map runs over at most (the node's bound too: compute/maps.py)


@click.command("map")
@click.argument("target", metavar="MODULE.wasm|ID|SPEC.toml", required=False)
@click.option("--over", "over", multiple=True, metavar="CAP|s3://BUCKET/PREFIX",
              help="An input (repeatable): a capability, or every object under an S3 prefix of the node's buckets.")
@click.option("--as", "mount", metavar="/in/NAME|-",
              help="Where each job reads its input: mounted at /in/NAME, or as its stdin (-).  [default: /in/data]")
@click.option("--parallel", type=click.IntRange(1, 32), default=8, show_default=True, help="Jobs in flight at once.")
@click.option("--resume", "resume", metavar="MAP_ID",
              help="Go on with the map MAP_ID: its inputs not done yet, as it recorded them.")
@json_option
@click.pass_obj
def map_(obj, target: str | None, over: tuple[str, ...], mount: str | None, parallel: int, resume: str | None,
         as_json: bool) -> None:
    """Run one job of MODULE (a .wasm file, a module ID or a job SPEC.toml) per input, --parallel at once, each
    where the market places it (spread over the providers it offers); a progress bar, each failure named, and one
    manifest at the end: input, state, job id, outputs (--json: also the provider and the charge of each).

    The node keeps the map's record: a map cut short (its node stopped, this command interrupted) goes on with
    --resume MAP_ID, which runs only the inputs not done (an input done is not run or paid again); `xsc compute
    maps` lists them."""
    from concurrent.futures import ThreadPoolExecutor

    client = obj.client()
    made = _resumed(client, resume, target, over, mount) if resume else _new_map(client, target, over, mount)
    mid, rows = made["id"], made["results"]
    left = [n for n, row in enumerate(rows) if row["state"] != "done"]
    # An input done before is not run again: answered from the map's record, as the node answers it, at no charge.
    results = {n: _row({**row, "replayed": True, "charged": 0}) for n, row in enumerate(rows) if row["state"] == "done"}

    def one(n: int) -> dict[str, Any]:
        try:
            return _row({**client.request("POST", f"/v1/compute/maps/{mid}/inputs/{n}"), "input": rows[n]["input"]})
        except XscError as err:
            if isinstance(err, (NodeNotRunning, Unauthorized, NotANode)):
                raise  # the node (unreachable, the token, not a node), not this input: the map ends with it
            return {"input": rows[n]["input"], "job": err.details.get("id"), "state": "failed", "error": err.message,
                    **({"hint": err.hint} if err.hint else {})}

    pool = ThreadPoolExecutor(parallel)
    try:
        with progress_bar("jobs", len(rows), shown=not as_json) as bar:
            bar.advance(len(results))
            for n, result in zip(left, pool.map(one, left)):
                results[n] = result
                bar.advance()
    except (NodeNotRunning, Unauthorized, NotANode) as err:
        done = [results[n] for n in sorted(results)]
        if done:  # each job done was paid: listed, and the map's record keeps them, so that resuming runs the rest
            _manifest(mid, done, as_json)
        err.message = (f"the map {mid} stopped after {len(done)} of {len(rows)} inputs"
                       f"{' (listed above)' if done else ''}: {err.message}")
        err.hint = f"{err.hint + ', then ' if err.hint else ''}resume it with: xsc compute map --resume {mid}"
        raise
    except KeyboardInterrupt:
        raise GoesOn(f"the jobs in flight go on at the node, which records them in the map (resume it with: xsc "
                     f"compute map --resume {mid})") from None
    finally:
        pool.shutdown(cancel_futures=True)  # a map ended by its node's error starts no job after it
    ordered = [results[n] for n in range(len(rows))]
    failed = [r for r in ordered if r["state"] != "done"]
    _manifest(mid, ordered, as_json)
    for r in failed:  # with the command that fixes it, as a job run alone says it (it names the job, when it can)
        said = r.get("error", r["state"]) + (f" ({r['hint']})" if r.get("hint") else "")
        click.echo(f"xsc: {r['input']}: {said}", err=True)
    if failed:
        click.echo(f"xsc: run the failed inputs again with: xsc compute map --resume {mid}", err=True)
        raise SystemExit(1)


@click.command("maps")
@json_option
@click.pass_obj
def maps(obj, as_json: bool) -> None:
    """List the maps, newest first: each one's id, inputs, how many are done and failed, when it was made and its
    module (a map not done goes on with: xsc compute map --resume MAP_ID; xsc compute unmap MAP_ID forgets one)."""
    found = obj.client().request("GET", "/v1/compute/maps")["maps"]
    if as_json:
        emit_json({"maps": found})
        return
    if not found:
        click.echo("no maps yet; run one with:\n  xsc compute map MODULE --over CAP --over s3://B/P")
        return
    # The ids whole (copied into --resume); on a narrow terminal the module goes under its row.
    table([Col("map", keep=True), Col("inputs", right=True), Col("done", right=True), Col("failed", right=True),
           Col("made (UTC)", drop=1), Col("module", keep=True, under=True)],
          [(m["id"], m["inputs"], m["done"], m["failed"], time.strftime("%Y-%m-%d %H:%M", time.gmtime(m["created"])),
            m["module"]) for m in found])


def _row(said: dict[str, Any]) -> dict[str, Any]:
    """One input's line of the manifest, from its job's answer or the map's record of it."""
    return {"input": said["input"], "job": said.get("job", said.get("id")), "state": said["state"],
            **{k: said[k] for k in ("replayed", "provider", "charged", "outputs", "stdout", "error", "hint")
               if k in said}}


def _new_map(client, target: str | None, over: tuple[str, ...], mount: str | None) -> dict[str, Any]:
    """A new map recorded at the node: every bound checked before the module is deployed or the map made."""
    if target is None or not over:
        raise click.UsageError("give the MODULE and at least one --over (or --resume MAP_ID)")
    mount = mount or "/in/data"
    _check_map_inputs(over, mount)
    spec: dict[str, Any] = _load_spec(Path(target)) if target.endswith(".toml") else {"module": target}
    _check_map_spec(spec)
    inputs = over if len(over) > MAX_MAP else [item for source in over for item in _expand(client, source)]
    if len(inputs) > MAX_MAP:  # (an S3 prefix is listed until it names more)
        raise InvalidArgument(f"more than {MAX_MAP:,} inputs: a map runs over at most {MAX_MAP:,}",
                              hint="map a narrower prefix, or fewer capabilities at once")
    spec["module"] = deployed_module(client, str(spec.get("module", "")))
    made = client.request("POST", "/v1/compute/maps",
                          json_body={"spec": spec, "as": mount, "over": list(over), "inputs": inputs})
    return {**made, "results": [{"input": item, "state": "pending"} for item in inputs]}


def _check_map_spec(spec: dict[str, Any]) -> None:
    """The spec checked as the node checks it, before its module is deployed (named meanwhile by an id of zeros)."""
    from ..compute.jobspec import parse_job

    if spec.get("stdin") == "-":  # each job's stdin is its input or nothing: this command's stdin is not sent
        raise InvalidArgument("a map's jobs cannot read this command's stdin (stdin = \"-\" in the spec)",
                              hint="give each job its input as stdin with --as -")
    parse_job({**spec, "module": "0" * 64})


def _resumed(client, mid: str, target: str | None, over: tuple[str, ...], mount: str | None) -> dict[str, Any]:
    """The map `mid` as the node recorded it; refused if the arguments given with --resume are not its own (they
    would be another map)."""
    found = client.request("GET", f"/v1/compute/maps/{quote(mid, safe='')}")
    differ = []
    if target is not None:
        spec: dict[str, Any] = _load_spec(Path(target)) if target.endswith(".toml") else {"module": target}
        text = str(spec.get("module", ""))
        module = text.lower() if _MODULE_ID.fullmatch(text) else _module_id_of(text)
        if {**spec, "module": module} != found["spec"]:
            differ.append(f"MODULE {target}")
    if over and list(over) != found["over"]:
        differ.append("--over")
    if mount is not None and mount != found["as"]:
        differ.append(f"--as {mount}")
    if differ:
        raise InvalidArgument(f"the map {found['id']} ran over its own inputs, not these: {', '.join(differ)} "
                              f"{'differs' if len(differ) == 1 else 'differ'}",
                              hint=f"resume it without them: xsc compute map --resume {found['id']}; or map these "
                                   "as a new map, without --resume")
    return found


def _module_id_of(path: str) -> str:
    """A .wasm file's module id, read without deploying it."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}",
                              hint="give a .wasm file, a job spec .toml, or a module id") from None


def _manifest(mid: str, results: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        emit_json({"map": mid, "results": results, "failed": sum(r["state"] != "done" for r in results)})
    else:
        for r in results:
            _manifest_line(r)


def _manifest_line(r: dict[str, Any]) -> None:
    """One input of a map on one line: input, state, job id, its outputs' capabilities (or its error); on a terminal
    too narrow for it, the input on a line of its own (whole: it is copied and pasted, as `xsc store ls` puts a
    capability), then its state and job id, and each output's capability whole, the error wrapped, under it."""
    outputs = [o["capability"] for o in r.get("outputs", [])]
    line = f"{r['input']}  {r['state']}  {r.get('job') or '-'}  {' '.join(outputs) or r.get('error', '')}".rstrip()
    width = terminal_width()
    if width is None or len(line) <= width:
        click.echo(line)
        return
    said = [f"{r['state']}  {r['job']}" if r.get("job") else r["state"],
            *(outputs or _wrap_words(r.get("error", ""), width - 4))]
    click.echo("\n".join([r["input"], *("    " + piece for piece in said if piece)]))


def _check_map_inputs(over: tuple[str, ...], mount: str) -> None:
    """Each --over and --as checked before any job runs: one that cannot be read is a usage error, not a failed
    (or paid) job per input."""
    from ..compute.jobspec import mount_name, parse_target
    from ..storage.core.capability import Capability

    for source in over:
        if source.startswith("s3://") and mount == "-":  # a job's stdin is a stored file, named by its capability
            raise InvalidArgument(f"--as -: an object of {source} cannot be a job's stdin",
                                  hint="mount each object as a file instead, e.g. --as /in/data")
        if source.startswith("s3://"):
            parse_target(source, "--over")  # a bucket named: listing none would ask the node for a path it lacks
        else:
            try:
                Capability.parse(source)
            except XscError as err:
                raise InvalidArgument(f"--over: {err.message}", hint="give a capability or s3://BUCKET/PREFIX") from None
    if mount != "-":
        try:
            mount_name(mount)
        except InvalidArgument as err:
            raise InvalidArgument(f"--as: {err.message}", hint="or - to give each job its input as stdin") from None


def _expand(client, source: str) -> list[str]:
    """A capability as it is; s3://BUCKET/PREFIX as every object under it (s3://BUCKET/KEY inputs)."""
    if not source.startswith("s3://"):
        return [source]
    bucket, _, prefix = source[5:].partition("/")
    found, start = [], ""
    while True:
        page = client.request("GET", f"/v1/s3/buckets/{quote(bucket, safe='')}/objects",
                              query={"prefix": prefix, "start": start or None})
        found += [f"s3://{bucket}/{key}" for key, _ in page["contents"]]
        if not page.get("truncated") or len(found) > MAX_MAP:
            return found
        start = page["next"]


@click.command("watch")
@click.argument("name")
@click.argument("target", metavar="MODULE.wasm|ID|SPEC.toml")
@click.option("--on", "on", required=True, metavar="s3://BUCKET/PREFIX", help="The objects to run the job over.")
@click.option("--to", "to", required=True, metavar="s3://BUCKET/PREFIX", help="Where each datum's outputs are written.")
@click.option("--as", "mount", default="/in/data", show_default=True, metavar="/in/NAME",
              help="Where each job finds its object (mounted read-only).")
@json_option
@click.pass_obj
def watch(obj, name: str, target: str, on: str, to: str, mount: str, as_json: bool) -> None:
    """Run MODULE (a .wasm file, a module ID or a job SPEC.toml) as a job over every object under --on, and again
    whenever one changes; write its outputs under --to.

    Each object is a datum, named by the module, the spec and the object's content: one already done is
    skipped, a changed one runs again, and watching NAME again with another module or spec runs them all.
    A deleted object's outputs are deleted.  Watches may chain (one watching what another writes); they go on
    across restarts.  `xsc compute watches` shows their runs, skips, failures, spend and backlog."""
    client = obj.client()
    spec: dict[str, Any] = _load_spec(Path(target)) if target.endswith(".toml") else {"module": target}
    spec["module"] = deployed_module(client, str(spec.get("module", "")))
    made = client.request("POST", "/v1/compute/watches",
                          json_body={"name": name, "spec": spec, "on": on, "to": to, "as": mount})
    if as_json:
        emit_json(made)
        return
    click.echo(f"watching {on} -> {to} as {name} (module {spec['module']})")


@click.command("watches")
@json_option
@click.pass_obj
def watches(obj, as_json: bool) -> None:
    """List the watches: what each watches and writes, its runs, skips, failures, spend and backlog, and its last run
    (when, its input and job, how it ended, how many objects it wrote); why one is paused (a ring of watches)."""
    found = obj.client().request("GET", "/v1/compute/watches")["watches"]
    if as_json:
        emit_json({"watches": found})
        return
    if not found:
        click.echo("no watches yet; add one with:\n  xsc compute watch NAME MODULE --on s3://B/P --to s3://B2/P2")
        return
    # The prefixes whole, as an id is (copied into the next command); on a narrow terminal the skips and the spend
    # are left out first, then where it writes goes under its row.
    table([Col("name", keep=True), Col("on", keep=True), Col("to", keep=True, under=True), Col("runs", right=True),
           Col("skips", right=True, drop=2), Col("failures", right=True), Col("credits spent", right=True, drop=1),
           Col("backlog", right=True)],
          [(w["name"], "s3://" + "/".join(w["on"]), "s3://" + "/".join(w["to"]), w["runs"], w["skips"],
            w["failures"], format_credits(w["spend"]), w["backlog"]) for w in found],
          details=[_watch_detail(w) for w in found])


def _watch_detail(watch: dict[str, Any]) -> str | None:
    """Why the watch is paused, its last run and last error: a job that stores nothing writes no object, and only this
    says it ran."""
    said = [f"paused: {watch['paused']}"] if watch.get("paused") else []
    run = watch.get("last_run")
    if run:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run["at"]))
        what = f"last run {when} UTC: {run['input']} {run['state']}" + (f" by job {run['job']}" if run["job"] else "")
        if run["state"] != "failed":
            count = len(run["objects"])
            what += (f", wrote {counted(count, 'object')}" if count else
                     ", wrote nothing (its job left no file in /out and stored no stdout; stdout_to_store = true "
                     "stores it)")
        said.append(what)
    if watch["last_error"]:
        said.append(f"last error: {watch['last_error']}")
    return "; ".join(said) or None


@click.command("unwatch")
@click.argument("name")
@click.pass_obj
def unwatch(obj, name: str) -> None:
    """Stop the watch NAME (the objects it wrote stay)."""
    # 'a?b' is not 'a' stopped
    obj.client().request("DELETE", f"/v1/compute/watches/{path_id(name, 'watch name', 'xsc compute watches')}")
    click.echo(f"stopped watch {name}")


COMMANDS = (run, rerun, job, jobs, lineage, map_, maps, watch, watches, unwatch)
