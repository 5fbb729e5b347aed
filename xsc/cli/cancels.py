"""`xsc compute cancel ID`: a job's run stopped now, paid for what it used (compute/job_cancels.py)."""

from __future__ import annotations

import click

from ..units import format_credits
from .output import emit_json, json_option, path_id


@click.command("cancel")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_obj
def cancel(obj, job_id: str, as_json: bool) -> None:
    """Cancel the job ID while it runs (or the first 8 hex digits of it, or more): its run stops now, is charged what
    it used up to the stop, and stores none of its outputs; the job ends `cancelled`.  Its `xsc compute run`, if one
    waits for it, says so."""
    job = obj.client().request("POST", f"/v1/compute/jobs/{path_id(job_id, 'job id', 'xsc compute jobs')}/cancel")
    if as_json:
        emit_json(job)
        return
    if job["state"] != "cancelled":  # it ended by itself before its next tick
        click.echo(f"the job {job['id']} ended {job['state']} before it could be stopped (xsc compute job "
                   f"{job['id']})", err=True)
        return
    click.echo(f"cancelled the job {job['id']}: charged {format_credits(job.get('charge', 0))} credits for what it "
               "used, nothing of its outputs stored", err=True)


COMMANDS = (cancel,)
