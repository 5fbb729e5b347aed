"""`xsc compute run|rerun`: a WASI program run as a job over bytes and stored files (compute/jobs.py), its output and
summary printed; and what the other job commands share (job_views.py, maps.py, watches.py, functions.py): a job spec
read, a module deployed, a file a job read or wrote on one line."""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
import tomllib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import click

from .. import codec
from ..errors import InvalidArgument, ModuleNotFound, XscError
from ..units import counted, format_credits, plural_for
from .interrupts import GoesOn
from .output import Duration, PassesArgs, emit_json, json_option, path_id, program_output
from .tables import prose, terminal_width
from .wasm_files import read_module

MODULE_ID = re.compile(r"[0-9a-fA-F]{64}")
JOB_STREAM = "application/x-xsc-job"  # the spec's JSON line, then stdin (compute/jobs.py)
CHUNK = 1 << 20


def load_spec(path: Path) -> dict[str, Any]:
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
    if not MODULE_ID.fullmatch(module):  # a path, from the spec's own folder
        spec["module"] = str((path.parent / module))
    return spec


# What a module argument may be, said when the one given is none: `serve` and a job spec's `module` take no spec.
MODULE_HINT = "give a .wasm or .wat file, or a module id"
TARGET_HINT = "give a .wasm or .wat file, a job spec .toml, or a module id"


def target_hint(target: str) -> str:
    """The hint for the module a MODULE|SPEC.toml argument names: a spec's module is a module, never a spec."""
    return MODULE_HINT if target.endswith(".toml") else TARGET_HINT


def deployed_module(client, text: str, hint: str = TARGET_HINT) -> str:
    """A module id: given, or a .wasm or .wat file's (text compiled to binary; deployed with WASI if the node lacks
    it).  `hint`: what the argument may be, if it is none of them."""
    if MODULE_ID.fullmatch(text):
        return text.lower()
    wasm = module_file(text, hint)
    module_id = hashlib.sha256(wasm).hexdigest()
    try:
        client.request("GET", f"/v1/modules/{module_id}")
    except ModuleNotFound:
        client.request("POST", "/v1/modules", body=wasm, content_type="application/wasm", query={"wasi": "true"})
    return module_id


def module_file(path: str, hint: str = TARGET_HINT) -> bytes:
    """The binary module of a job's .wasm or .wat file."""
    if not Path(path).exists():
        raise InvalidArgument(f"no such file, and not a module id: {path}", hint=hint)
    return read_module(path, hint=hint)


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
@click.option("--timeout", type=Duration("30s"), help="Wall-clock limit, e.g. 30s, 1.5m, 250ms.")
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

    MODULE.wasm|ID|SPEC.toml is a .wasm or .wat file (deployed first if the node lacks it; text compiled to binary
    here), a module id, or a job spec
    (.toml) whose fields (module, entrypoint, argv, env, stdin, inputs, outputs, stdout_to_store, deterministic,
    limits, max_price, replicas, agree) the options override.  Prints the program's stdout; the job id, charge and
    every stored output (name, size, SHA-256, capability) go to stderr."""
    client = obj.client()
    spec: dict[str, Any] = load_spec(Path(target)) if target.endswith(".toml") else {"module": target}
    spec["module"] = deployed_module(client, str(spec.get("module", "")), target_hint(target))
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
    if stdin is not None or no_stdin or spec.get("stdin", "-") == "-":
        # a spec's `stdin = "-"` is this command's stdin, as `--stdin -` is (sent as the request's body)
        spec["stdin"], source = _stdin_source(stdin if stdin is not None else spec.get("stdin"), no_stdin)
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
            program_output(err.details)
        raise
    except KeyboardInterrupt:
        if not whole:
            raise
        raise GoesOn("the job goes on at the node, which has its whole request (follow it with: xsc compute jobs; "
                     f"cancel it with: xsc compute cancel {_asked(asker) or 'ID'})") from None
    if as_json:
        emit_json(answer)
        return
    program_output(answer)
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


def _summary(job: dict[str, Any]) -> None:
    # A job run by a provider on the market (its tab there is what it is paid on) names that node, whole: the id its
    # receipt and `peers ls` show.  A job this node ran is said as before: its provider is the node asked.
    remote = not job.get("replicas") and any(isinstance(pay, dict) and pay.get("provider") == job.get("provider")
                                             for pay in job.get("paid_on", []))
    where = f" on node {job['provider']}" if remote and isinstance(job["provider"], str) else ""
    how = "replayed (not run again)" if job.get("replayed") else f"ran{where} (executions: {job['executions']})"
    if job.get("replicas") and not job.get("replayed"):
        paid = sum(1 for r in job["replicas"] if r.get("paid"))
        asked = job.get("guarantee", {}).get("replicas", len(job["replicas"]))
        again = f" ({len(job['replicas']) - asked} placed again)" if len(job["replicas"]) > asked else ""
        paid_said = f"{paid} of them paid" if len(job["replicas"]) > 1 else "paid" if paid else "not paid"
        how += f" on the {counted(asked, 'replica')} asked{again}, {paid_said} (`xsc compute job ID` lists " \
               f"{'them' if len(job['replicas']) > 1 else 'it'})"
    prose(f"job {job['id']} {how}, charged {format_credits(job.get('charged', 0))} credits", err=True)
    for output in job.get("outputs", []):
        file_line("  ", output["name"], output["size"], output["sha256"], output["capability"], err=True)


def file_line(pad: str, name: str, size: int, sha256: str, capability: str | None = None, *,
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


COMMANDS = (run, rerun)
