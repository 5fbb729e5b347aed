"""`xsc health status|probe`."""

from __future__ import annotations

import sys
import time

import click

from ..errors import PeerUnreachable
from ..units import counted
from .output import emit_json, json_option, wide_option
from .tables import Col, prose
from .peers import wide_table


def _ratio(value: float | None, probes: int) -> str:
    return "-" if value is None else f"{100 * value:.1f}% of {counted(probes, 'probe')}"


def _ago(ms: int | None) -> str:
    return "never" if ms is None else f"{max(0.0, time.time() - ms / 1000):.0f} s ago"


def _state(peer: dict) -> str:
    if peer["up"] is None:
        return "not probed yet"
    if peer["up"]:
        return "up"
    return f"DOWN ({peer['consecutive_failures']} failed)"


def _audit(audit: dict | None) -> str:
    if not audit:
        return "-"
    return ("ok" if audit["ok"] else "FAILED") + f" {_ago(audit['time'])}"


def _rows(peers: list[dict]) -> list[tuple]:
    return [(p["id"], _state(p), p["url"], _ratio(p["ratio_1h"], p["probes_1h"]),
             _ratio(p["ratio_24h"], p["probes_24h"]),
             "-" if p["latency_ms"] is None else f"{p['latency_ms']:.1f} ms", _ago(p["last_probe"]),
             _audit(p["last_audit"])) for p in peers]


# The id, state and availability (1 h, 24 h) always show (the id and the url, each whole, on lines under its row
# when they do not fit beside it: both are what the next command is given); on a narrow terminal the other columns
# are left out, least needed first.
COLUMNS = [Col("id", keep=True, under=True), Col("state", keep=True), Col("url", keep=True, under=True),
           Col("1 h", keep=True), Col("24 h", keep=True), Col("latency", drop=4), Col("last probe", drop=5),
           Col("last audit", drop=3)]


@click.group()
def health() -> None:
    """How reachable this node's peers are.

    Every peer is probed on a schedule (health.probe_interval, default 10 s) with a signed
    challenge; its availability is the share of probes it answered over 1 h and 24 h, and
    its latency an exponentially weighted moving average."""


@health.command()
@wide_option
@json_option
@click.pass_obj
def status(obj, wide: bool, as_json: bool) -> None:
    """Show each peer's availability (the share of its probes answered over 1 h and 24 h), latency, consecutive
    failures and last audit.

    It fits the terminal, or 80 columns when not on one: a peer's id and url, whole, then go on lines under its row
    (--wide: in a column; --json for scripts)."""
    info = obj.client().request("GET", "/v1/health/peers")
    if as_json:
        emit_json(info)
        return
    if not info["peers"]:
        click.echo("no peers known (join a network with: xsc peers add URL)")
        return
    wide_table(COLUMNS, _rows(info["peers"]), wide=wide)
    last = info.get("last_round")
    if last:
        prose(f"{round_said(last, len(info['peers']))} in {1000 * last['seconds']:.1f} ms, {_ago(last['time'])}; "
              f"every {info['probe_interval']:g} s", wide=wide)


def round_said(last: dict, known: int) -> str:
    """The last probe round in words: how many peers it probed of those known, then how many answered.  A scheduled
    round probes only the peers due (one down, less often): "1 of 1 answered" under a peer shown down read as if
    every peer had."""
    due = " (those due)" if last["peers"] < known else ""
    return f"last probe round: {last['peers']} of {counted(known, 'peer')} probed{due}, {last['ok']} answered"


@health.command()
@json_option
@click.pass_obj
def probe(obj, as_json: bool) -> None:
    """Probe every peer now and show the results; exit 1 when a peer did not answer.

    A check, as `xsc store check` is: a script learns from the exit status that a peer is down, the table says
    why (`xsc health status` is the report, exit 0 whatever it shows)."""
    info = obj.client().request("POST", "/v1/health/probe")
    silent = sum(not r["ok"] for r in info["results"])
    if as_json:
        emit_json(info)
        if silent:
            sys.exit(1)
        return
    if not info["results"]:
        click.echo("no peers known (join a network with: xsc peers add URL)")
        return
    # A failed probe's answer is a sentence: it goes under its row rather than push the table past the terminal.
    wide_table([Col("id", keep=True), Col("url", keep=True, drop=1), Col("answer", wrap=20, under=True),
                Col("latency", keep=True)],
               [(r["id"], r["url"], "ok" if r["ok"] else r["error"],
                 "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} ms") for r in info["results"]])
    click.echo(f"{info['ok']} of {info['peers']} answered in {1000 * info['seconds']:.1f} ms")
    if silent:
        raise PeerUnreachable(f"{silent} of {counted(info['peers'], 'peer')} failed the probe",
                              hint="the table above says why")
