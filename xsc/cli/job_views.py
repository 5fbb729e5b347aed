"""`xsc compute job|jobs|lineage`: a job's record (its files, replicas, failed attempts and payments), the list of
jobs, and a stored file's lineage back through the jobs that made it (compute/jobs.py, compute/lineage.py)."""

from __future__ import annotations

import time
from typing import Any

import click

from ..units import counted, format_credits
from .jobs import file_line
from .output import emit_json, json_option, path_id, wide_option
from .tables import Col, cells, key_values, table, terminal_width, wrap_words


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
        file_line("  ", "stdin", stdin["size"], stdin["sha256"], again if again not in (None, "-") else None)
    elif again not in (None, "-"):  # a record kept before records named their stdin: its spec still does
        click.echo(f"  stdin  {again}")
    for item in found.get("inputs", []):
        file_line("  input  ", item["path"], item["size"], item["sha256"])
    for output in found.get("outputs", []):
        file_line("  output ", output["name"], output["size"], output["sha256"], output["capability"])
    for output in found.get("replacing", []):  # the run before's, until a run of it replaces them
        file_line("  earlier ", output["name"], output["size"], output["sha256"], output["capability"])
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
    # In terminal cells, as the table measures them: a module named in CJK or emoji takes two a character.
    beside = sum(max(cells(c.name), *(cells(str(r[i])) for r in rows)) + 2 for i, c in enumerate(columns))
    if wide or width is None or 64 + 2 + beside + max(map(cells, modules)) <= width:  # piped: one line a job
        table([Col("id", keep=True), *columns, Col("module", keep=True)],
              [(j["id"], *r, m) for j, r, m in zip(page["jobs"], rows, modules)], wide=wide, piped=None)
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
    lines = wrap_words(said, width - len(pad)) if width else [said]  # between words: an id is never cut
    click.echo("\n".join(pad + ("" if n == 0 else "  ") + line for n, line in enumerate(lines)))
    for item in made["inputs"]:
        file_line(f"{pad}  read ", item["path"], item["size"], item["sha256"])
        _show_lineage(item, level + 2)
    stdin = made.get("stdin")
    if stdin:
        file_line(f"{pad}  read ", "stdin", stdin["size"], stdin["sha256"])
        _show_lineage(stdin, level + 2)


COMMANDS = (job, jobs, lineage)
