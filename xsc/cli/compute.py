"""`xsc compute deploy|invoke|modules|module|provenance`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidArgument, ModuleNotFound, Trap
from . import GroupWithLazyModules
from .output import Duration, PassesArgs, emit_json, json_option, path_id, program_output, wide_option
from .tables import Col, key_values, table
from .wasm_files import read_module

PROVENANCE = "xsc compute provenance --list"  # lists the provenance ids

_MODULE_ID = re.compile(r"[0-9a-fA-F]{64}")


@click.group(cls=GroupWithLazyModules,
             modules=("xsc.cli.jobs", "xsc.cli.job_views", "xsc.cli.maps", "xsc.cli.watches", "xsc.cli.cancels",
                      "xsc.cli.functions"))
def compute() -> None:
    """Wasm modules and invokes, jobs, maps, web functions, watches."""


def _read_module(file: str) -> bytes:
    return read_module(file, hint="give the path of a .wasm or .wat file")


def _deploy(client, wasm: bytes, wasi: bool, facts: dict[str, str] | None = None) -> dict[str, Any]:
    query = {**({"wasi": "true"} if wasi else {}), **(facts or {})}
    return client.request("POST", "/v1/modules", body=wasm, content_type="application/wasm", query=query or None)


def _exports(info: dict[str, Any]) -> list[str]:
    return [e.get("signature", f"{e['name']} ({e['kind']})") for e in info["exports"]]


def _export_items(info: dict[str, Any]) -> list[str]:
    items = _exports(info) or ["none"]
    items[0] = "exports: " + items[0]
    return items + (["[wasi]"] if info["wasi"] else [])


def _signatures(info: dict[str, Any]) -> str:
    return ", ".join(_exports(info))


@compute.command()
@click.argument("file", metavar="FILE.wasm|FILE.wat", type=click.Path())
@click.option("--wasi", is_flag=True, help="Allow WASI imports (the module runs with the WASI profile).")
@click.option("--name", help="What to call it in the registry (up to 64 characters).")
@click.option("--version", "version_", metavar="TEXT", help="Its version (up to 32 characters).")
@click.option("--description", help="What it does (up to 512 characters).")
@json_option
@click.pass_obj
def deploy(obj, file: str, wasi: bool, name: str | None, version_: str | None, description: str | None,
           as_json: bool) -> None:
    """Validate, compile and cache the module FILE on the node; prints its id (SHA-256 of the binary module).

    A text module (.wat) is compiled to binary here first (wasmtime's wat2wasm): nodes take binary modules only."""
    facts = {k: v for k, v in (("name", name), ("version", version_), ("description", description)) if v is not None}
    info = _deploy(obj.client(), _read_module(file), wasi, facts)
    if as_json:
        emit_json(info)
    else:
        click.echo(info["id"])


@compute.command(cls=PassesArgs, context_settings={"ignore_unknown_options": True})
@click.argument("module", metavar="MODULE.wasm|ID")
@click.argument("function")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--fuel", type=int, metavar="N", help="Fuel budget (default and maximum: the node's compute.fuel).")
@click.option("--memory", metavar="SIZE", help="Memory limit, e.g. 16MiB (default and maximum: compute.memory).")
@click.option("--timeout", type=Duration("30s"),
              help="Wall-clock limit, e.g. 30s, 1.5m, 250ms (default and maximum: compute.timeout).")
@click.option("--wasi", is_flag=True,
              help="Run with the WASI profile: captured stdout/stderr, no files, env or network; "
                   "for an export without parameters, ARGS become the program's argv.")
@click.option("--max-price", type=click.IntRange(min=0), metavar="N",
              help="The most you pay, in micro-credits per million fuel (default: the node's market.compute_bid).")
@click.option("--cost", "show_cost", is_flag=True,
              help="Also print (on stderr) what the call was charged: fuel, and peak memory pages times time.")
@click.option("--verify", is_flag=True,
              help="If it runs on another node, answer once its provider's signed record of the run holds to the "
                   "answer.")
@json_option
@click.pass_obj
def invoke(obj, module: str, function: str, args: tuple[str, ...], fuel: int | None, memory: str | None,
           timeout: float | None, wasi: bool, max_price: int | None, show_cost: bool, verify: bool,
           as_json: bool) -> None:
    """Call FUNCTION of a module with ARGS; prints the results separated by spaces.

    MODULE is a .wasm or .wat file (deployed first if the node does not have it; text compiled to binary here) or
    a module id.
    The market chooses who runs it (this node, or another provider when this node offers no
    compute) and at what price.
    Arguments are parsed by the function's parameter types: integers in decimal or 0x-hex,
    floats also as nan, inf, -inf.  Negative numbers are arguments (sub -5 3); so is
    everything after --.
    """
    client = obj.client()
    wasm = None
    if Path(module).is_file():
        wasm = _read_module(module)
        module_id = hashlib.sha256(wasm).hexdigest()
    elif _MODULE_ID.fullmatch(module):
        module_id = module.lower()
    else:
        raise InvalidArgument(f"no such file, and not a module id: {module}",
                              hint="give a .wasm or .wat file or the 64-hex-digit id that deploy printed")
    body = {"module": module_id, "function": function, "args": list(args), "fuel": fuel, "memory": memory,
            "timeout": timeout, "wasi": wasi, "max_price": max_price, "verify": verify or None}
    body = {k: v for k, v in body.items() if v is not None}
    try:
        try:
            run = client.request("POST", "/v1/compute/invoke", json_body=body)
        except ModuleNotFound:
            if wasm is None:
                raise
            _deploy(client, wasm, wasi)
            run = client.request("POST", "/v1/compute/invoke", json_body=body)
    except Trap as trap:
        if not as_json:
            program_output(trap.details)  # what a WASI program wrote before it failed
            if show_cost:
                _cost(trap.details)
        raise
    if as_json:
        emit_json(run)
        return
    program_output(run)
    if run["results"]:
        click.echo(" ".join(str(r["value"]) for r in run["results"]))
    if show_cost:
        _cost(run)


def cost_line(facts: dict[str, Any]) -> str:
    """What a run was charged, in one line (ledger/pricing.price_compute: rounded up once): the charge in credits,
    as the ledger shows amounts; the rates in micro-credits, as the market quotes them and --max-price takes them."""
    from ..units import format_credits, plural_for

    c, charge = facts.get("cost"), facts.get("charge", facts.get("price"))
    said = f"charge: {format_credits(charge)} credits" if isinstance(charge, int) else "charge: not stated"
    if facts.get("tab") and isinstance(facts.get("provider"), str):  # run on another node, paid on its tab there
        said += f" to node {facts['provider']}"  # whole: the id `ledger history` and `peers ls` show
    if not isinstance(c, dict):
        return said
    return (f"{said} = {c['fuel']:,} fuel at {c['fuel_price']} micro-credits per million "
            f"+ {c['memory_pages']} {plural_for(c['memory_pages'], 'page')} of memory for {c['memory_us'] / 1e6:g} s "
            f"at {c['memory_price']} micro-credits per page-second (rounded up)")


def _cost(facts: dict[str, Any]) -> None:
    click.echo(cost_line(facts), err=True)


@compute.command()
@json_option
@click.pass_obj
def modules(obj, as_json: bool) -> None:
    """List deployed modules: id, size, exports with signatures, first deployed, invocations."""
    found = obj.client().request("GET", "/v1/modules")["modules"]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no modules deployed (deploy one with: xsc compute deploy FILE.wasm)")
        return
    # The id is whole on its line; the exports go under it, wrapped between words, never inside one.
    table([Col("id", keep=True), Col("name", drop=3), Col("status", drop=2), Col("size", right=True),
           Col("calls", right=True, drop=1), Col("first deployed", drop=2)],
          [(m["id"], " ".join(filter(None, (m.get("name"), m.get("version")))) or "-",
            m.get("status", "active") + (" (pushed)" if m.get("pushed_by") else ""), m["size"], m["invocations"],
            m["first_deployed"]) for m in found],
          details=[_export_items(m) for m in found])


@compute.command()
@click.argument("module_id", metavar="ID")
@json_option
@click.pass_obj
def module(obj, module_id: str, as_json: bool) -> None:
    """Show the deployed module ID."""
    info = obj.client().request("GET", f"/v1/modules/{path_id(module_id, 'module id', 'xsc compute modules')}")
    if as_json:
        emit_json(info)
        return
    facts = [(k, info[k]) for k in ("name", "version", "description") if info.get(k)]
    key_values([("id", info["id"]), *facts, ("status", info.get("status", "active")), ("size", f"{info['size']} bytes"),
                ("first deployed", info["first_deployed"]),
                ("invocations", info["invocations"]), ("imports", info["imports"] or "none")])
    for export in info["exports"]:
        click.echo(f"  {export.get('signature') or export['name'] + ' (' + export['kind'] + ')'}")


@compute.command()
@click.argument("provenance_id", metavar="[ID]", required=False)
@click.option("--list", "list_recent", is_flag=True,
              help="List the records of the runs this node made, newest first (a call placed on another node is "
                   "shown by its ID).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many to list.")
@click.option("--provider", metavar="NODE", help="The node that ran it (an invoke's `provider`), if not this one.")
@wide_option
@json_option
@click.pass_obj
def provenance(obj, provenance_id: str | None, list_recent: bool, limit: int, provider: str | None, wide: bool,
               as_json: bool) -> None:
    """Show the signed provenance record ID of a run and check its signature (or --list recent
    ones).  A run on another node shows the record its provider signed, fetched from it."""
    from ..compute import check_provenance, provenance_rule, provenance_validity

    client = obj.client()
    if list_recent or provenance_id is None:
        records = client.request("GET", "/v1/compute/provenance", query={"limit": limit})["records"]
        rules = [provenance_rule(signed, stored=True) for signed in records]  # the node's own records, as it stores them
        if as_json:
            emit_json([{**r, "signature_valid": rule is not None, "signature_rule": rule}
                       for r, rule in zip(records, rules)])
            return
        if not records:  # (a header over no row reads as a fault)
            click.echo("no runs recorded on this node yet: a call or job the market placed on another node is recorded "
                       "there (xsc compute provenance ID --provider NODE)")
            return
        rows = []
        for signed, rule in zip(records, rules):
            r = signed["record"]
            rows.append((r["id"], r["timestamp"], r["module"], r["function"],
                         r.get("trap", {}).get("kind", "ok"), r["fuel_consumed"], f"{r['wall_time_us'] / 1000:.3f} ms",
                         provenance_validity(rule)))
        # On a terminal too narrow for it the signature column goes last; a signature not plainly valid is said under
        # its row all the same, so that no width hides it.
        table([Col("id", keep=True), Col("time", drop=2), Col("module", keep=True, under=True), "function", "outcome",
               Col("fuel", right=True, drop=3), Col("wall time", drop=1), Col("signature", drop=0)], rows, wide=wide,
              details=[None if row[-1] == "valid" else f"signature {row[-1]}" for row in rows])
        return
    signed = client.request("GET", f"/v1/compute/provenance/{path_id(provenance_id, 'provenance id', PROVENANCE)}",
                            query={"provider": provider} if provider else None)
    rule = provenance_rule(signed, stored=True)  # the node's own record, as it stores it
    if as_json:
        emit_json({**signed, "signature_valid": rule is not None, "signature_rule": rule})
    else:
        _show_record(signed["record"], rule)
    check_provenance(signed, stored=True)  # an invalid signature is an error (exit 1), after showing what was received


def _show_record(r: dict[str, Any], rule: str | None) -> None:
    from ..compute import provenance_validity
    from ..units import format_credits, format_size, plural_for

    def values(items: list[dict[str, Any]]) -> str:
        return " ".join(f"{v['value']}:{v['type']}" for v in items) or "(none)"

    pairs = [("id", r["id"]), ("time", r["timestamp"]), ("module", r["module"]), ("function", r["function"]),
             ("args", values(r["args"]))]
    if "trap" in r:
        pairs.append(("trap", f"{r['trap']['kind']}: {r['trap']['message']}"))
    else:
        pairs.append(("results", values(r["results"])))
    if "wasi" in r:
        pairs.append(("wasi", f"argv {r['wasi']['argv']}, exit code {r['wasi']['exit_code']}, "
                              f"stdout {r['wasi']['stdout_bytes']:,} bytes, "
                              f"stderr {r['wasi']['stderr_bytes']:,} bytes"))
    metering = {"exact": "", "whole-budget": " (trapped: metered at the whole budget)"}.get(
        r["metering"], " (trapped: what it could have used in the time it ran)")
    # Figures as the rest of the CLI writes them (10,000,000,000 fuel, 64.0 MiB); --json keeps the record's own.
    pairs += [("fuel", f"{r['fuel_consumed']:,} of {r['fuel_limit']:,}{metering}"),
              ("wall time", f"{r['wall_time_us'] / 1000:.3f} ms"),
              ("limits", f"memory {format_size(r['memory_limit'])}, timeout {r['timeout_us'] / 1e6:g} s"),
              # records before version 3 call the charge "price"
              ("charge", f"{format_credits(r.get('charge', r.get('price', 0)))} credits"),
              ("memory", f"{r['memory_pages']} {plural_for(r['memory_pages'], 'page')} at most (priced "
                         f"{r['memory_price']} per page-second)"
               if "memory_pages" in r else "not priced (a record from before memory was)"),
              ("node", r["node"]), ("requester", r["requester"]),
              ("signature", f"{provenance_validity(rule)}, signed by the node above" if rule else "INVALID")]
    key_values(pairs)


def _lifecycle(obj, module_id: str, method: str, path: str, body: dict | None, as_json: bool, done: str) -> None:
    info = obj.client().request(method, path.format(id=path_id(module_id, "module id", "xsc compute modules")),
                                json_body=body)
    if as_json:
        emit_json(info)
    else:
        click.echo(f"module {info['id']} {done}")


@compute.command()
@click.argument("module_id", metavar="ID")
@json_option
@click.pass_obj
def disable(obj, module_id: str, as_json: bool) -> None:
    """Refuse every call of the module ID (module-disabled) until it is enabled; its records are kept."""
    _lifecycle(obj, module_id, "PUT", "/v1/modules/{id}/status", {"status": "disabled"}, as_json, "disabled")


@compute.command()
@click.argument("module_id", metavar="ID")
@json_option
@click.pass_obj
def enable(obj, module_id: str, as_json: bool) -> None:
    """Let the disabled module ID run again."""
    _lifecycle(obj, module_id, "PUT", "/v1/modules/{id}/status", {"status": "active"}, as_json, "enabled")


@compute.command()
@click.argument("module_id", metavar="ID")
@json_option
@click.pass_obj
def rm(obj, module_id: str, as_json: bool) -> None:
    """Remove the module ID from this node (its wasm and compiled code); the provenance of its runs is kept."""
    _lifecycle(obj, module_id, "DELETE", "/v1/modules/{id}", None, as_json, "removed (its provenance records are kept)")


@compute.command()
@click.argument("provenance_id", metavar="ID")
@json_option
@click.pass_obj
def replay(obj, provenance_id: str, as_json: bool) -> None:
    """Re-run the call of provenance record ID (a paid invoke) and check the results are identical.

    Exits 1 when the replay differs (outcome, results bit for bit, or fuel)."""
    answer = obj.client().request(
        "POST", f"/v1/compute/provenance/{path_id(provenance_id, 'provenance id', PROVENANCE)}/replay")
    if as_json:
        emit_json(answer)
    else:
        results = " ".join(str(r["value"]) for r in answer.get("results") or []) or "-"
        key_values([("original", answer["original"]), ("replay", answer["replay"]),
                    ("outcome", answer["outcome"]), ("results", results), ("fuel", answer["fuel_consumed"]),
                    ("engine", "the same" if answer["same_engine"] else f"another ({answer['engine']['wasmtime']})"),
                    ("identical", "yes" if answer["identical"] else "NO: " + ", ".join(answer["differences"]))])
    if not answer["identical"]:
        raise SystemExit(1)
