"""What `xsc store check` and `verify` (and `repair`'s table) show of a file's shares: one row a share, then the
file's state and the command that fixes it."""

from __future__ import annotations

import sys

import click

from ..units import plural_for
from .output import emit_json
from .tables import Col, prose, table


def _status(s: dict, presence_only: bool) -> str:
    return "present" if presence_only and s["status"] == "ok" else s["status"]


def _detail(s: dict) -> str:
    bad = s.get("bad_blocks") or []
    if not bad:
        return "" if s["detail"] == s["status"] else s["detail"]  # "missing" twice says nothing more
    where = s["detail"].partition(" on node ")[2]
    return (f"{plural_for(len(bad), 'bad block')} in {plural_for(len(bad), 'segment')} "
            f"{', '.join(map(str, bad[:20]))}{' …' if len(bad) > 20 else ''}" + (f" on node {where}" if where else ""))


def shares_table(report: dict, presence_only: bool = False, wide: bool = False) -> None:
    """Each share of a check, verify or repair: its status, the node holding it and how that node is, what is wrong."""
    shares = report["shares"]
    details = [_detail(s) for s in shares]
    said = 1 if any(details) else 0  # a detail column only when a share has something to say
    if any("node" in s for s in shares):  # where each share is (this node too), and how that node is
        from ..storage.core.placement import NONE_FOUND

        def state(s: dict) -> str:
            if s["node"] == NONE_FOUND:
                return "-"
            up = s.get("node_up")
            if s.get("node_known") is False:
                return "not a peer"
            return "this node" if "node_up" not in s else "up" if up else "DOWN" if up is False else "not probed yet"

        # With a node id the row is full: a detail goes under its row on a narrow terminal.
        table([Col("share", right=True), Col("status"), Col("node", keep=True), Col("node state"),
               Col("detail", wrap=20, under=True)][:4 + said],
              [(s["share"], _status(s, presence_only), s["node"], state(s), d)[:4 + said]
               for s, d in zip(shares, details)], wide=wide)
    else:
        table([Col("share", right=True), Col("status"), Col("detail", wrap=20)][:2 + said],
              [(s["share"], _status(s, presence_only), d)[:2 + said] for s, d in zip(shares, details)], wide=wide)


def report_of(report: dict, as_json: bool, cap: str, presence_only: bool = False, wide: bool = False) -> None:
    """A check's or verify's answer for the file `cap`: its shares, its state in a sentence, the command that fixes
    it; exit 1 when it is not whole."""
    if as_json:
        emit_json(report)
    else:
        shares_table(report, presence_only, wide)
        state = "healthy" if report["healthy"] else "recoverable" if report["recoverable"] else "NOT recoverable"
        spread = report["healthy"] and report.get("at_risk")  # whole, but on one node
        state = "at risk" if spread else state
        total = len(report["shares"])
        fix = "; rebuild them with:" if state == "recoverable" else ""
        if presence_only:
            prose(f"{report['intact']} of {total} shares present: {state} "
                  f"(blocks not read: `xsc store verify` reads them){fix}")
        else:
            bad = [f"share {s['share']} segment {b}" for s in report["shares"] for b in s.get("bad_blocks") or []]
            prose(f"{report['intact']} of {total} shares intact: {state}"
                  + (f"; bad blocks: {', '.join(bad[:12])}{' …' if len(bad) > 12 else ''}" if bad else "") + fix)
        if fix:  # the command on a line of its own, the capability whole: copied as it is
            click.echo(f"    xsc store repair {cap.strip()}")
        if report.get("repair_problem"):
            click.echo(f"warning: its last repair failed: {report['repair_problem']}", err=True)
        if spread:  # no repair moves a share that is there; a put from a file places some on other nodes
            prose(f"{report['at_risk']}; put it again from a file to spread its shares (then `xsc store rm` this "
                  "capability):")
            click.echo(f"    xsc store get {cap.strip()} -o FILE && xsc store put FILE")
    if not report["healthy"]:
        sys.exit(1)
