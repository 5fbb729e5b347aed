"""`xsc compute serve / functions / unserve`: web functions (compute/functions.py), served on node.web_listen."""

from __future__ import annotations

from typing import Any

import click

from ..errors import InvalidArgument
from .jobs import MODULE_HINT, deployed_module, env_pair
from .output import EXIT_USAGE, Duration, emit_json, json_option, path_id
from .tables import Col, prose, table


@click.command("serve")
@click.argument("name")
@click.argument("module", metavar="MODULE.wasm|ID")
@click.option("--input", "inputs", multiple=True, metavar="CAP:/in/NAME",
              help="Mount a stored file read-only at /in/NAME (repeatable): a site's pages, its data.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="An environment variable (repeatable).")
@click.option("--entrypoint", metavar="NAME", help="The export each request runs (default: _start).")
@click.option("--fuel", type=int, metavar="N", help="Fuel a request may use (at most the node's compute.fuel).")
@click.option("--memory", metavar="SIZE", help="Memory a request may use, e.g. 16MiB.")
@click.option("--timeout", type=Duration("30s"), help="A request's deadline, e.g. 30s, 1.5m, 250ms: past it, 504.")
@click.option("--max-body", metavar="SIZE", help="A request body's cap, e.g. 64KiB (default 16MiB): past it, 413.")
@click.option("--concurrency", type=click.IntRange(1, 256), metavar="N", help="Requests at once: past it, 503.")
@click.option("--spend-cap", type=click.IntRange(0), metavar="MICROCREDITS",
              help="What requests may cost in an hour: past it, callers get 402.")
@click.option("--on-market", is_flag=True,
              help="Place it on a provider the market offers, which serves it at its own web listener under "
                   "/fn/NODE_ID/NAME/ and is paid by this node through tabs (see `xsc compute functions`).")
@json_option
@click.pass_obj
def serve(obj, name: str, module: str, inputs: tuple[str, ...], env: tuple[str, ...], entrypoint: str | None,
          fuel: int | None, memory: str | None, timeout: float | None, max_body: str | None, concurrency: int | None,
          spend_cap: int | None, on_market: bool, as_json: bool) -> None:
    """Serve the WASI program MODULE (a .wasm file or a module ID) at /fn/NAME/ on the node's web listener
    (node.web_listen), to anyone, WAGI style:
    the request's CGI variables in its environment, its body on stdin, a CGI response on stdout.  Every request
    is charged to this node's user.  Serving NAME again replaces it.  With --on-market it is served by a provider
    instead (this node needs no web listener nor compute): `xsc compute functions` shows its URL."""
    client = obj.client()
    body: dict[str, Any] = {"name": name, "module": deployed_module(client, module, MODULE_HINT),
                            "inputs": list(inputs), "env": dict(env_pair(e) for e in env), "on_market": on_market}
    limits = {k: v for k, v in (("fuel", fuel), ("memory", memory), ("timeout", timeout)) if v is not None}
    body.update({k: v for k, v in (("entrypoint", entrypoint), ("limits", limits or None), ("max_body", max_body),
                                   ("concurrency", concurrency), ("spend_cap", spend_cap)) if v is not None})
    try:
        served = client.request("POST", "/v1/compute/functions", json_body=body)
    except InvalidArgument as err:
        if err.details.get("field") != "spend_cap":
            raise
        # the node judged the flag's value against the market's price: a bad value of a flag exits 2, in one line
        refused = click.ClickException(err.with_hint)
        refused.exit_code = EXIT_USAGE
        raise refused from None
    if as_json:
        emit_json(served)
        return
    if on_market:
        click.echo(f"serving {name} on a provider the market offers: its URL in `xsc compute functions` once placed")
        if served.get("not_placed"):
            prose(f"xsc: warning: no provider with a web listener (node.web_listen) offers compute on the market now: "
                  f"{name} is placed once one does (`xsc compute functions` says why it is not placed)", err=True)
    elif served.get("url"):
        click.echo(f"serving {name} at {served['url']}")
    else:
        click.echo(f"serving {name} at /fn/{name}/ on the node's web listener (node.web_listen)")
        saved = obj.saved("node", "web_listen")
        fix = f"node.web_listen is {saved} in its config.toml, used from its next start: restart the node" if saved \
            else "give it one: xsc config set node.web_listen 127.0.0.1:7080, then restart the node"
        click.echo(f"xsc: warning: this node has no web listener, so no one can call it yet ({fix})", err=True)
    if spend_cap == 0:  # taken (a function may be held shut), but its owner is told now rather than by its callers
        click.echo(f"xsc: warning: with --spend-cap 0 {name} may spend nothing: every caller gets 402 until you serve "
                   f"it again with a --spend-cap above 0", err=True)


# Counts right-aligned, as every figure in the CLI's tables is (a column of them reads by its last digits).
COUNTS = (Col("requests", right=True), Col("errors", right=True))


@click.command("functions")
@click.option("--hosted", is_flag=True,
              help="The functions other nodes placed here (their `serve --on-market`): each owner's, what it earned.")
@json_option
@click.pass_obj
def functions(obj, hosted: bool, as_json: bool) -> None:
    """List the web functions: their requests, errors, median latency and spend, and where those on the market
    are served (the URL callers use).  With --hosted, those this node serves for other nodes' owners."""
    if hosted:
        _hosted(obj.client().request("GET", "/v1/compute/functions/hosted")["functions"], as_json)
        return
    found = obj.client().request("GET", "/v1/compute/functions")["functions"]
    if as_json:
        emit_json({"functions": found})
        return
    if not found:
        prose("no functions yet: serve one with `xsc compute serve NAME MODULE.wasm` (those other nodes placed here: "
              "xsc compute functions --hosted)")
        return
    from ..units import format_credits

    # Amounts in credits, as the ledger's tables show them (--json: micro-credits, as --spend-cap takes them).  On a
    # narrow terminal what was spent this hour is left out first (the cap it counts against stays).
    # A name is up to 63 characters, whole as an id is: under its row too once the module and URL do not make room.
    table([Col("name", keep=True, under=2), Col("module", keep=True, under=True), *COUNTS,
           Col("p50 ms", right=True), Col("credits spent", right=True), Col("this hour", right=True, drop=0),
           Col("cap/hour", right=True), Col("served at", keep=True, under=True)],
          [(f["name"], f["module"], f["requests"], f["errors"], _ms(f["p50_ms"]), format_credits(f["spend"]),
            format_credits(f["spent_this_hour"]), format_credits(f["spend_cap"]) if f["spend_cap"] is not None else "-",
            _served_at(f))
           for f in found])


def _hosted(found: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        emit_json({"functions": found})
        return
    if not found:
        prose("no functions of other nodes served here: a node places one with `xsc compute serve NAME MODULE.wasm "
              "--on-market` on a provider offering compute with a web listener (node.web_listen)")
        return
    from ..units import format_credits

    # The owner's id whole, and the path that names it, on lines of their own under a narrow terminal's rows.
    table([Col("owner", keep=True, under=True), Col("name", keep=True, under=2), *COUNTS, Col("p50 ms", right=True),
           Col("credits earned", right=True), Col("path", keep=True, under=True)],
          [(f["owner"], f["name"], f["requests"], f["errors"], _ms(f["p50_ms"]), format_credits(f["earned"]),
            f["path"]) for f in found])


def _ms(value: float | None) -> str:
    """A latency in every row to the same hundredth of a millisecond, so the column reads down its decimal points."""
    return "-" if value is None else f"{value:.2f}"


def _served_at(function: dict[str, Any]) -> str:
    if not function["on_market"]:
        return function.get("url") or "/fn/" + function["name"] + "/"
    if function.get("url"):
        return function["url"]
    # Why no provider serves it yet: else only the node's log says (no provider on the market, a refusal).
    return f"(not placed: {function['not_placed']})" if function.get("not_placed") else "(being placed)"


@click.command("unserve")
@click.argument("name")
@click.pass_obj
def unserve(obj, name: str) -> None:
    """Stop serving the web function NAME."""
    # 'a?b' is not 'a' unserved
    obj.client().request("DELETE", f"/v1/compute/functions/{path_id(name, 'function name', 'xsc compute functions')}")
    click.echo(f"stopped serving {name}")


COMMANDS = (serve, functions, unserve)
