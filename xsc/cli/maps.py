"""`xsc compute map|maps|unmap`: one job per input, several at once, recorded by the node as a map that a map cut
short goes on from (compute/maps.py); the maps listed, and a map's record forgotten (its jobs' records and outputs
stay)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from ..errors import InvalidArgument, NodeNotRunning, NotANode, Unauthorized, XscError
from ..units import counted
from .interrupts import GoesOn
from .jobs import MODULE_ID, deployed_module, load_spec, module_file, target_hint
from .output import emit_json, json_option, path_id
from .tables import Col, table, terminal_width, wrap_words
from .progress import progress_bar

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
    manifest at the end: input, state, job id, outputs (--json: also the provider, the charge and the stdout of
    each).

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
    printed = sum(bool(r.get("stdout")) for r in ordered)
    if printed and not as_json:  # a program that prints its answer (sha256.wasm, wc.wasm) would seem to answer nothing
        click.echo(f"xsc: {counted(printed, 'job')} printed to stdout, which the manifest does not show: --json gives "
                   "each job's stdout, and stdout_to_store = true in a spec stores it as an output", err=True)
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
    spec: dict[str, Any] = load_spec(Path(target)) if target.endswith(".toml") else {"module": target}
    _check_map_spec(spec)
    found = {source: _expand(client, source) for source in over} if len(over) <= MAX_MAP else {}
    inputs = over if len(over) > MAX_MAP else [item for source in over for item in found[source]]
    if len(inputs) > MAX_MAP:  # (an S3 prefix is listed until it names more)
        raise InvalidArgument(f"more than {MAX_MAP:,} inputs: a map runs over at most {MAX_MAP:,}",
                              hint="map a narrower prefix, or fewer capabilities at once")
    empty = [source for source in over if source in found and not found[source]]
    if not inputs:  # every --over an S3 prefix that holds no object: say which, and how to look, not "narrower"
        raise InvalidArgument(f"no object under {', '.join(over)}: a map runs over at least one input",
                              hint=f"see what it holds with: {_look(over[0])}; put objects there first, or map "
                                   "another prefix")
    if empty:  # the map has inputs, so it runs, as an --over of several objects runs over those there are: said, once
        click.echo(f"xsc: warning: no object under {', '.join(empty)}: the map runs over the "
                   f"{counted(len(inputs), 'input')} of the other --over (see what it holds with: {_look(empty[0])})",
                   err=True)
    spec["module"] = deployed_module(client, str(spec.get("module", "")), target_hint(target))
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
        spec: dict[str, Any] = load_spec(Path(target)) if target.endswith(".toml") else {"module": target}
        text = str(spec.get("module", ""))
        module = text.lower() if MODULE_ID.fullmatch(text) else _module_id_of(text)
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
    """A .wasm or .wat file's module id (its binary's), read without deploying it."""
    return hashlib.sha256(module_file(path)).hexdigest()


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
            *(outputs or wrap_words(r.get("error", ""), width - 4))]
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


def _look(source: str) -> str:
    """The command that lists what the S3 prefix `source` holds."""
    bucket, _, prefix = source[5:].partition("/")
    return f"xsc s3 ls {bucket}" + (f" --prefix {prefix}" if prefix else "")


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


@click.command("unmap")
@click.argument("map_id", metavar="MAP_ID")
@click.option("--cancel", is_flag=True,
              help="Give up its inputs still to run, and cancel the jobs of those running now.")
@json_option
@click.pass_obj
def unmap(obj, map_id: str, cancel: bool, as_json: bool) -> None:
    """Forget the map MAP_ID (or the first 8 hex digits of it, or more): its record, so that it counts no more
    against the maps the node keeps; its jobs' records and outputs stay.  A map with inputs still to run is kept
    unless --cancel gives them up; one with an input whose job runs now is kept until that job ends, or --cancel
    cancels it (xsc compute cancel: charged what it used, nothing of it stored)."""
    gone = obj.client().request("DELETE", f"/v1/compute/maps/{path_id(map_id, 'map id', 'xsc compute maps')}",
                                query={"cancel": "true"} if cancel else None)
    if as_json:
        emit_json(gone)
        return
    given_up = f", {counted(gone['given_up'], 'input')} still to run given up" if gone["given_up"] else ""
    click.echo(f"forgot the map {gone['forgotten']} ({gone['done']} of {counted(gone['inputs'], 'input')} done, "
               f"{gone['failed']} failed{given_up}); its jobs' records and outputs stay (xsc compute jobs)", err=True)


COMMANDS = (map_, maps, unmap)
