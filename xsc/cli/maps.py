"""`xsc compute unmap`: a map's record forgotten at the node (its jobs' records and outputs stay); the maps are made,
resumed and listed by `xsc compute map` and `maps` (cli/jobs.py)."""

from __future__ import annotations

import click

from ..units import counted
from .output import emit_json, json_option, path_id


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


COMMANDS = (unmap,)
