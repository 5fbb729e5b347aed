"""`xsc ledger balance|history|show|verify|export|accounts|prepay|payments|trust`."""

from __future__ import annotations

import shlex
from datetime import datetime, timezone

import click

from .. import codec
from ..ledger.core.rules import BELOW_LIMIT
from ..units import MAX_PREPAY, counted, format_credits
from .output import Credits, PassesArgs, emit_json, json_option, path_id, wide_option
from .tables import Col, key_values, prose, table

ACCOUNTS = "xsc ledger accounts"  # lists the accounts


def _signed(micro: int) -> str:
    return ("+" if micro > 0 else "") + format_credits(micro)


def _time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _usage(usage: dict) -> list[str] | str:
    """Each resource used as an item of its own ("fuel 2,400,392"): a table wraps the column between them."""
    return [f"{k} {v:,}" if type(v) is int else f"{k} {v}" for k, v in sorted(usage.items())] or "-"


@click.group()
def ledger() -> None:
    """Balances, history and verification of the signed ledger.

    Amounts are credits with six decimals (1 credit = 1,000,000 micro-credits; --json shows
    micro-credits).  ACCOUNT is an account id or a unique prefix of at least 4 characters of one, or
    `client` (your account, the default) or `node` (this node's account, paid for the work it does)."""


@ledger.command()
@click.argument("account", default="client")
@json_option
@click.pass_obj
def balance(obj, account: str, as_json: bool) -> None:
    """Show an account's balance and how much more it can spend.

    ACCOUNT: `client` (your account, which pays for your puts, jobs and functions; the default), `node` (this
    node's account, paid for the storage and compute it provides: what it earned), or an account id or a unique
    prefix of one."""
    info = obj.client().request("GET", f"/v1/ledger/accounts/{path_id(account, 'account', ACCOUNTS)}")
    if info.get("low"):
        prose(f"xsc: warning: low balance: {format_credits(info['available'])} credits left to spend, below "
              f"{info.get('low_balance_percent', '?')}% of the {format_credits(info['credit_limit'])} credit "
              "limit (earn credit by providing storage or compute)", err=True)
    if as_json:
        emit_json(info)
        return
    key_values([
        ("account", info["account"] + (f" ({info['role']})" if info.get("role") else "")),
        ("balance", f"{format_credits(info['balance'])} credits"),
        ("credit limit", f"{format_credits(info['credit_limit'])} credits"),
        *([("held", f"{format_credits(info['held'])} credits (for work not settled yet)")] if info.get("held") else []),
        *([("promised", f"{format_credits(info['promised'])} credits (leases of your puts still to pay)")]
          if "promised" in info else []),
        ("available", f"{format_credits(info['available'])} credits"),
        ("entries", info["seq"]),
        ("forked", "YES: this account equivocated" if info["forked"] else "no"),
    ])


@ledger.command()
@click.argument("named", metavar="[ACCOUNT]", required=False)
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many entries, newest first.")
@click.option("--account", help="Whose chain to list, as ACCOUNT (default: client).")
@click.option("--expand", is_flag=True, help="List the provenance ids each aggregated transfer covers.")
@wide_option
@json_option
@click.pass_obj
def history(obj, named: str | None, limit: int, account: str | None, expand: bool, wide: bool,
            as_json: bool) -> None:
    """List an account's newest entries (payments it made, receipts for work it did): ACCOUNT's, as
    `xsc ledger balance ACCOUNT` names it (`node`: what this node earned).

    Paid invokes are settled in aggregate: one transfer per interval covers many invokes (its job says how
    many, and the Merkle root of their provenance ids); --expand lists the ids.  A job run on another node is paid
    on its own: its entry names the job's id (`xsc compute job ID` on the node whose user ran it).

    It fits the terminal, or 80 columns when not on one: ids, whole, then go on lines under their row (--wide: in
    columns; --json for scripts, in micro-credits)."""
    if named is not None and account is not None and named != account:
        raise click.UsageError(f"two accounts named ({named}, and --account {account}): give one")
    account = next((given for given in (named, account) if given is not None), "client")  # "" is refused
    query = {"limit": limit, **({"expand": "true"} if expand else {})}
    info = obj.client().request("GET", f"/v1/ledger/accounts/{path_id(account, 'account', ACCOUNTS)}/history",
                                query=query)
    entries = info["entries"]
    if as_json:
        emit_json(entries)
        return
    if not entries:
        earned = " (what this node earned: xsc ledger history node)" if account == "client" else ""
        prose(f"no entries yet for account {info['account']['account']}{earned}")
        return
    rows = []
    for e in entries:
        other = e["payee"] if e["kind"] == "payment" else e["payer"]
        job = counted(e["invokes"], "invoke") if "covers" in e else \
            "job" if "for_job" in e else e["job"]
        rows.append((e["seq"], _time(e["settled_at"]), e["kind"], other, _signed(e["delta"]),
                     _usage(e["usage"]), job, e.get("for_job"), e.get("covers"), e["id"]))
    # A job's id, as every id, whole: in a column of its own (on a line under its row on a narrow terminal).  The job
    # column is never left out (what an entry paid for): a job reference too long to go beside the figures (a
    # storage deal's `store:<storage index>:<share>:<from>:<to>`) goes under its row, as the ids do; one too long for a
    # line is broken between its fields, each id whole (tables.Col.fields).
    for_jobs = [Col("job id", keep=True, under=True)] if any("for_job" in e for e in entries) else []
    # Wrapped between items, never narrower than the longest (with its comma): an item is never broken.
    item = max((len(used) + 1 for row in rows if isinstance(row[5], list) for used in row[5]), default=12)
    table([Col("seq", right=True), Col("settled (UTC)", drop=2), Col("kind"),
           Col("counterparty", keep=True, under=True),
           Col("credits", right=True, keep=True), Col("usage", wrap=max(12, item), drop=1),
           Col("job", keep=True, under=2, fields=":"),
           *for_jobs, Col("root", keep=True, under=True), Col("entry", keep=True, under=True)],
          [row if for_jobs else row[:7] + row[8:] for row in rows],
          title=f"account {info['account']['account']} — balance {format_credits(info['account']['balance'])} credits",
          wide=wide)
    hidden = max(0, info["account"]["seq"] - len(entries)) if info["account"].get("seq") else 0
    if hidden:  # the command that shows them, whole on a line of its own (as `compute jobs` says its next page)
        prose(f"{counted(hidden, 'older entry', 'older entries')} not shown", wide=wide)
        named = "" if account == "client" else f" {shlex.quote(account)}"
        click.echo(f"more: xsc ledger history{named} --limit {min(len(entries) + hidden, 10_000)}")
    for e in entries:
        if e.get("covered"):
            n = len(e["covered"])
            prose(f"entry {e['id']} covers {counted(n, 'invoke')} (provenance ids):", wide=wide)
            for ref in e["covered"]:
                click.echo(f"  {ref}")
        elif "covered" in e and e["covered"] is None:
            prose(f"entry {e['id']}: its provenance ids were retired (ledger.record_retention)", wide=wide)


@ledger.command()
@click.argument("entry")
@json_option
@click.pass_obj
def show(obj, entry: str, as_json: bool) -> None:
    """Show one entry: ENTRY is its id, or a unique prefix of at least 8 hex digits."""
    e = obj.client().request("GET", f"/v1/ledger/entries/{path_id(entry, 'entry id', 'xsc ledger history')}")
    if as_json:
        emit_json(e)
        return
    key_values([
        ("entry", e["id"]),
        ("kind", e["kind"]),
        ("account", f"{e['account']} seq {e['seq']}"),
        ("prev", e["prev"]),
        ("payer", e["payer"]),
        ("payee", e["payee"]),
        ("amount", f"{format_credits(e['amount'])} credits (cap {format_credits(e['cap'])})"),
        ("usage", _usage(e["usage"])),
        ("job", e["job"], ":"),  # a storage deal's reference, too long for a line, broken between its ids
        ("settled", f"{_time(e['settled_at'])} UTC (authorization expires {_time(e['expires_at'])} UTC)"),
        ("authorization", e["authorization"]),
        ("receipt", f"{e['receipt']} (payee seq {e['receipt_seq']})"),
    ])


@ledger.command()
@json_option
@click.pass_obj
def verify(obj, as_json: bool) -> None:
    """Check every chain: signatures, links, sequence, replays, caps, expiry, credit limits, balances, forks.

    Exits non-zero, naming each violation, if anything is wrong."""
    from ..errors import VerificationFailed

    report = obj.client().request("GET", "/v1/ledger/verify")
    if as_json:
        emit_json(report)
    else:
        rate = report["entries"] / report["seconds"] if report["seconds"] else 0
        prose(f"checked {counted(report['entries'], 'entry', 'entries')} in {counted(report['accounts'], 'chain')}, "
              f"{counted(report['signatures'], 'signature')}, in {report['seconds']:.2f} s ({rate:,.0f} entries/s); "
              f"balances sum to {format_credits(report['balance_sum'])}, "
              f"{counted(report['open_transfers'], 'transfer')} with the other half held elsewhere")
        for violation in report["violations"]:
            click.echo(f"violation: {violation['text']}")
    if not report["ok"]:
        n = len(report["violations"])
        raise VerificationFailed(f"ledger verification failed: {counted(n, 'violation')}", hint=_verify_hint(report))
    if not as_json:
        click.echo("ledger ok")


def _verify_hint(report: dict) -> str:
    """What the violations call for.  A balance below the credit limit is what every entry made under a higher
    `ledger.credit_limit` becomes once it is lowered (verify holds the whole history to the limit now): nothing is
    corrupt, and raising the limit again clears it."""
    below = sum(1 for v in report["violations"] if v.get("code") == BELOW_LIMIT)
    raise_it = (f"below the credit limit configured now ({format_credits(report['credit_limit'])} credits, "
                f"ledger.credit_limit): entries made under a higher limit; raise it again (xsc config set "
                f"ledger.credit_limit MICRO_CREDITS, used from the node's next start) and verify again")
    if below == len(report["violations"]):
        return f"each is a balance {raise_it}"
    if below:
        return f"the others are corrupt, forged or forked; {counted(below, 'balance is', 'balances are')} {raise_it}"
    return "the entries named above are corrupt, forged or forked"


@ledger.command()
@json_option
@click.pass_obj
def export(obj, as_json: bool) -> None:
    """Write every stored entry as JSON lines (chain by chain, in seq order); --json: one JSON array."""
    import sys

    download = obj.client().download("/v1/ledger/export", media_type="application/x-ndjson")
    out = sys.stdout.buffer
    if as_json:
        data = download.read()
        emit_json([codec.loads(line) for line in data.splitlines() if line])
        return
    for chunk in download:
        out.write(chunk)
    out.flush()


@ledger.command()
@json_option
@click.pass_obj
def accounts(obj, as_json: bool) -> None:
    """List the accounts this node holds chains or keys of."""
    info = obj.client().request("GET", "/v1/ledger/accounts")
    if as_json:
        emit_json(info["accounts"])
        return
    # Account ids stay whole (to be copied): on a terminal narrower than a row, each goes on a line under its row.
    table([Col("role"), Col("account", keep=True, under=True), Col("balance", right=True, keep=True),
           Col("entries", right=True, keep=True), Col("forked", keep=True)],
          [(a["role"] or "-", a["account"], format_credits(a["balance"]), a["seq"], "YES" if a["forked"] else "no")
           for a in info["accounts"]])


# PassesArgs: `prepay NODE -1` is an amount refused as negative, not an option unknown
@ledger.command(cls=PassesArgs, context_settings={"ignore_unknown_options": True})
@click.argument("node_id", metavar="NODE")
@click.argument("amount", metavar="CREDITS", type=Credits(most=MAX_PREPAY, what="a prepayment"))
@json_option
@click.pass_obj
def prepay(obj, node_id: str, amount: int, as_json: bool) -> None:
    """Pay node NODE (a node id or a unique prefix of a known peer's) CREDITS ahead of work.  A node that does not
    recognise this one takes on its uploads and invokes only within what it prepaid (it answers 402
    prepayment-required saying how much)."""
    from .peers import resolve_peer

    client = obj.client()
    info = client.request("POST", "/v1/ledger/prepay", json_body={"node": resolve_peer(client, node_id),
                                                                   "amount": amount})
    if as_json:
        emit_json(info)
        return
    click.echo(f"prepaid {format_credits(info['amount'])} credits to {info['node']} (entry {info['entry']})")


@ledger.command()
@wide_option
@json_option
@click.pass_obj
def payments(obj, wide: bool, as_json: bool) -> None:
    """List your payments to other nodes not settled yet: the open tabs work is running on (a placed web function's,
    paid when they close), those pending (a prepayment to a node that was down: retried until it answers), and
    those dropped unpaid, each with why and what to do.

    An open or pending payment's credits are held; a dropped one paid nothing and its credits are free again."""
    info = obj.client().request("GET", "/v1/ledger/payments")
    if as_json:
        emit_json(info)
        return
    live = [p for p in info["pending"] if p.get("live")]
    waiting = [p for p in info["pending"] if not p.get("live")]
    # A job reference may hold an id (a tab's `compute:rtab:fn:NODE_ID:NAME`, a share's storage index): under its row
    # when it does not fit beside the others, broken between its fields only when it is too long for a line.
    columns = [Col("node", keep=True, under=True), Col("credits", right=True, keep=True),
               Col("job", keep=True, under=True, fields=":"), Col("expires (UTC)", drop=1)]
    for rows, title in ((live, "open tabs (in use: paid when they close)"),
                        (waiting, "pending (retried until the node answers)")):
        if rows:
            table(columns, [(p["node"], format_credits(p["amount"]), p["job"], _time(p["expires_at"])) for p in rows],
                  title=title, wide=wide)
    if not info["pending"]:
        click.echo("no payment to another node is pending")
    for d in info["dropped"]:
        prose(f"dropped {_time(d['dropped_at'])} UTC: {format_credits(d['amount'])} credits to node {d['node']} "
              f"({d['job']}): {d['why']} ({d['hint']})", wide=wide)


@ledger.command()
@wide_option
@json_option
@click.pass_obj
def trust(obj, wide: bool, as_json: bool) -> None:
    """Each peer's trust line here, in credits: what it paid, what its work used, its credit line, what it has left.

    It fits the terminal, or 80 columns when not on one: a peer's id, whole, then goes on a line under its figures
    (--wide: in a column; --json for scripts, in micro-credits)."""
    info = obj.client().request("GET", "/v1/ledger/trust")
    if as_json:
        emit_json(info)
        return
    if not info["lines"]:
        click.echo("no peer has a trust line here yet")
        return
    # What `available` is made of, so that each row adds up: what counts of a peer's payments (`counted`: shown when
    # it is not all it paid), less what its work used and what is reserved for work taken on and not done yet.
    counts = any(x["counted"] != x["paid"] for x in info["lines"])
    shown = ("paid", *(("counted",) if counts else ()), "used", "reserved", "credit", "available")
    table([Col("peer", keep=True, under=True), *(Col(k, right=True, keep=True) for k in shown)],
          [(x["peer"], *(format_credits(x[k]) for k in shown)) for x in info["lines"]], title="trust lines (credits)",
          wide=wide)
    prose(f"available = {'counted' if counts else 'paid'} + credit - used - reserved (reserved: work under way)",
          wide=wide)
