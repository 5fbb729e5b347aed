"""`xsc compute watch|watches|unwatch`: a job kept run over every object under an S3 prefix, its outputs written
under another (compute/watches.py); the watches listed, and one stopped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..units import counted, format_credits
from .jobs import deployed_module, load_spec, target_hint
from .output import emit_json, json_option, path_id
from .tables import Col, table


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
    spec: dict[str, Any] = load_spec(Path(target)) if target.endswith(".toml") else {"module": target}
    spec["module"] = deployed_module(client, str(spec.get("module", "")), target_hint(target))
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


COMMANDS = (watch, watches, unwatch)
