"""`xsc market book|prices|offer|status|explain|recognize|recognition`."""

from __future__ import annotations

import time

import click
from click.core import ParameterSource

from ..units import counted, credits_argument, format_credits
from .output import Credits, emit_json, json_option, path_id, wide_option
from .tables import Col, key_values, prose, table
from .peers import resolve_peer, wide_table

UNITS = {"storage": "GiB-hour", "compute": "million fuel"}
SHORT_UNITS = {"storage": "GiB-h", "compute": "M fuel"}


# Bad values are InvalidArgument (one `xsc: error:` line), not click's usage block.
def _kind(ctx, param, value: str | None) -> str | None:
    from ..errors import InvalidArgument, quoted_id

    if value is not None and value not in UNITS:
        raise InvalidArgument(f"unknown kind {quoted_id(value)}", hint="use --kind storage or --kind compute")
    return value


def _limit(ctx, param, value: str) -> int:
    from ..errors import InvalidArgument, quoted_id
    from ..units import is_whole_number

    if not is_whole_number(value) or not 1 <= int(value) <= 1000:
        raise InvalidArgument(f"--limit must be a whole number from 1 to 1000, not {quoted_id(value)}")
    return int(value)


kind_option = click.option("--kind", metavar="storage|compute", callback=_kind, help="Only this kind.")


def _price(price: int | None, kind: str) -> str:
    return "-" if price is None else f"{price} micro-credits per {UNITS[kind]}"


def _quantity(n: int, kind: str) -> str:
    if kind == "storage":
        from ..units import format_size

        return format_size(n)
    return f"{n:,} fuel"


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _short(node: str, me: str | None = None) -> str:
    return "this node" if node == me else node  # ids are never cut: copy-paste works


def _deals_table(deals: list[dict], me: str, wide: bool, format_size) -> None:
    """The storage deals: a file's storage index and its holder's id are whole, as columns with --wide, else on
    a line of their own under each row (together they are wider than 80 columns)."""
    holders = ["this node" if d["node"] == me else d["node"] for d in deals]
    ids = [Col("file", keep=True), Col("share", right=True), Col("holder", keep=True)]
    # The price is the market's quote, in its unit; what was paid is money, in credits as everywhere else.
    terms = [Col("bytes", right=True), Col("price (micro-credits/GiB-h)", right=True, drop=0),  # the last to go
             Col("paid of total (credits)", right=True), Col("paid until", drop=1),
             Col("forfeited", drop=2, right=True), Col("ended")]
    rows = [(format_size(d["bytes"]), d["price"], f"{format_credits(d['paid'])} of {format_credits(d['total'])}",
             _utc(d["paid_until"])[5:-7], f"{d['forfeited']} s", "yes" if d["ended"] else "no") for d in deals]
    title = "storage deals"
    if wide:
        table(ids + terms, [(d["si"], d["share"], h, *row) for d, h, row in zip(deals, holders, rows)],
              wide=True, title=title)
        return
    table([Col("share", right=True), *terms], [(d["share"], *row) for d, row in zip(deals, rows)], title=title,
          details=[[f"file {d['si']}", f"holder {h}"] for d, h in zip(deals, holders)])


def _files_table(deals: list[dict], me: str, wide: bool, format_size) -> None:
    """The storage deals summed per file, a row each (its storage index, whole, under the row when it does not fit
    beside the others): a file's six deals, three lines each, made a node with a few files print hundreds of lines.
    Each share's deal: --shares."""
    files: dict[str, list[dict]] = {}
    for d in deals:
        files.setdefault(d["si"], []).append(d)
    rows = []
    for si, of_file in files.items():
        holders = {d["node"] for d in of_file}
        prices = sorted({d["price"] for d in of_file})
        rows.append((si, len(of_file), "this node" if holders == {me} else counted(len(holders), "node"),
                     format_size(sum(d["bytes"] for d in of_file)),
                     str(prices[0]) if len(prices) == 1 else f"{prices[0]}-{prices[-1]}",
                     f"{format_credits(sum(d['paid'] for d in of_file))} of "
                     f"{format_credits(sum(d['total'] for d in of_file))}",
                     _utc(min(d["paid_until"] for d in of_file))[5:-7],
                     f"{sum(d['forfeited'] for d in of_file)} s"))
    table([Col("file", keep=True, under=1), Col("shares", right=True), Col("holders"), Col("bytes", right=True),
           Col("price (micro-credits/GiB-h)", right=True, drop=0), Col("paid of total (credits)", right=True),
           Col("paid until", drop=1), Col("forfeited", drop=2, right=True)],
          rows, wide=wide, title="storage deals, per file (each share's: --shares)")


def _clearing(c: dict | None, kind: str) -> str:
    if c is None or c["price"] is None:
        return "no trade"
    return (f"{_price(c['price'], kind)} (range {c['low']}-{c['high']}), "
            f"{_quantity(c['traded'], kind)} traded")


@click.group()
def market() -> None:
    """The market: asks, bids, clearing prices, this node's offer, its deals and recognition.

    Every node offers its free storage and compute as capacity slots for the current hour and the
    next, at an ask that rises as it fills up; puts and invokes bid for them.  One uniform-price
    call market clears per kind and hour (docs/market.md).  Prices are integer micro-credits per
    GiB-hour of storage and per million fuel of compute."""


@market.command()
@kind_option
@wide_option
@json_option
@click.pass_obj
def book(obj, kind: str | None, wide: bool, as_json: bool) -> None:
    """Show the asks (low to high) and bids (high to low) of each kind and time bucket, and their clearing.

    It fits the terminal, or 80 columns when not on one: a node's id, whole, then goes on a line under its offer
    (--wide: in a column; --json for scripts)."""
    client = obj.client()
    info = client.request("GET", "/v1/market/book", query={"kind": kind})
    if as_json:
        emit_json(info)
        return
    me = client.request("GET", "/v1/market/status")["node"]
    # a prefix tells books apart at a glance; `market status` and --json give the whole digest
    click.echo(f"book of {counted(info['participants'], 'participant')}\ndigest {info['digest']}")
    if not info["books"]:
        click.echo("the book is empty (no node offers or needs anything yet)")
        return
    for b in info["books"]:
        k = b["kind"]
        click.echo()
        prose(f"{k}, bucket {b['bucket']} (from {_utc(b['bucket_start'])}): clearing {_clearing(b['clearing'], k)}; "
              f"prices in micro-credits per {UNITS[k]}", wide=wide)
        rows = [("ask", _short(o["owner"], me), _quantity(o["quantity"], k), o["price"],
                 ",".join(o.get("tags") or ()) or "-") for o in b["asks"]]
        rows += [("bid", _short(o["owner"], me), _quantity(o["quantity"], k), o["price"], "-") for o in b["bids"]]
        # The tags (`web`: the provider serves web functions) show whenever they fit: a placement picks by them.
        wide_table(["side", Col("owner", keep=True, under=True), Col("quantity", keep=True, right=True),
                    Col("price", keep=True, right=True), Col("tags", drop=1)], rows, wide=wide)


@market.command()
@kind_option
@click.option("--limit", default="50", show_default=True, metavar="N", callback=_limit,
              help="How many prices to show (1 to 1000).")
@json_option
@click.pass_obj
def prices(obj, kind: str | None, limit: int, as_json: bool) -> None:
    """Show the clearing prices this node has seen, newest first.

    The node clears its book when it is read (`xsc market book`, `xsc market prices`) and records
    each clearing price that changed since: a trade that came and went between two reads (a put's
    bids live only while the put runs) may be missing."""
    info = obj.client().request("GET", "/v1/market/prices", query={"kind": kind, "limit": limit})
    if as_json:
        emit_json(info)
        return
    if not info["prices"]:
        click.echo("no clearing price yet (nothing has traded while this node watched the book)")
        return
    # The time wraps between its date and its hour on a narrow terminal (the only column that can give way).
    wide_table([Col("time", wrap=12), "kind", Col("bucket start", drop=2), "price", Col("low-high", drop=1), "traded"],
               [(_utc(p["time_ms"] / 1000), p["kind"], _utc(p["bucket_start"]), _short_price(p["price"], p["kind"]),
                 f"{p['low']}-{p['high']}", _quantity(p["traded"], p["kind"])) for p in info["prices"]])


@market.command()
@json_option
@click.pass_obj
def offer(obj, as_json: bool) -> None:
    """Show what this node offers: capacity, pricing policy, current ask, and its slots."""
    from ..units import format_size

    info = obj.client().request("GET", "/v1/market/offer")
    if as_json:
        emit_json(info)
        return
    s, c = info["storage"], info["compute"]
    pct = lambda used, cap: f" ({100 * used / cap:.1f}%)" if cap else ""  # noqa: E731
    key_values([
        ("storage", "offered" if s["offered"] else "not offered (market.offer_storage = false)"),
        ("  used / capacity", f"{format_size(s['used'])} / {format_size(s['capacity'])}"
                              f"{pct(s['used'], s['capacity'])}"),
        ("  ask now", _price(s["ask"], "storage")),
        ("  floor - ceiling", f"{s['floor']} - {s['ceiling']} micro-credits per GiB-hour"),
        ("compute", "offered" if c["offered"] else "not offered (market.offer_compute = false)"),
        ("  used / per bucket", f"{c['used']:,} / {c['fuel_per_bucket']:,} fuel{pct(c['used'], c['fuel_per_bucket'])}"),
        ("  ask now", _price(c["ask"], "compute")),
        ("  floor - ceiling", f"{c['floor']} - {c['ceiling']} micro-credits per million fuel"),
        ("ask policy", f"floor + (ceiling - floor) x utilization^{info['exponent']}"),
        ("bucket", f"{info['bucket_seconds']} s"),
    ])
    _slots(info["slots"])


def _slots(slots: list[dict], wide: bool = False) -> None:
    if not slots:
        click.echo("no capacity slots (nothing offered, or nothing free)")
        return
    table([Col("slot", keep=True), Col("quantity", right=True), Col("ask", right=True), Col("hour (UTC)", drop=1)],
          [(a["id"], _quantity(a["quantity"], a["kind"]), _short_price(a["price"], a["kind"]),
            _hours(a["start"], a["end"])) for a in slots], wide=wide)


def _short_price(price: int | None, kind: str) -> str:
    return "-" if price is None else f"{price} per {SHORT_UNITS[kind]}"


def _hours(start: float, end: float) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(start)) + time.strftime("-%H:%M", time.gmtime(end))


@market.command()
@click.option("--file", "file", metavar="CAP",
              help="Only one file's storage deals, with those that ended when a repair moved a share: its "
                   "capability (or storage index).")
@click.option("--shares", is_flag=True, help="Each share's storage deal (its holder, price, what it was paid), "
                                             "not one row per file.")
@wide_option
@json_option
@click.pass_obj
def status(obj, file: str | None, shares: bool, wide: bool, as_json: bool) -> None:
    """Show the book's convergence, this node's slots and open needs, its storage deals and payments.

    The storage deals are summed per file (--shares: each share's deal, with its holder; --file CAP: one file's).
    Prices are micro-credits per GiB-hour (storage) or per million fuel (compute), as the market quotes
    them; amounts paid are credits.  On a narrow terminal some columns are left out (--wide: all of them)."""
    if file is not None:
        _file_deals(obj, file, wide, as_json)
        return
    info = obj.client().request("GET", "/v1/market/status")
    if as_json:
        emit_json(info)
        return
    key_values([
        ("node", info["node"]),
        ("book digest", info["digest"]),
        ("participants", info["participants"]),
        ("peers in book", f"{info['peers_in_book']} / {info['peers']}"),
        ("converged", "yes" if info["converged"] else f"no ({info.get('converged_reason', 'not every peer agrees')})"),
        ("my slots", len(info["asks"])),
        ("my open needs", len(info["needs"]) or "none"),
        *_allocation_rows(info.get("allocation")),
    ])
    _slots(info["asks"], wide)
    if info["needs"]:
        table([Col("need", keep=True), Col("quantity", right=True), Col("bid", right=True)],
              [(n["id"], _quantity(n["quantity"], n["kind"]), _short_price(n["price"], n["kind"]))
               for n in info["needs"]], wide=wide)
    deals = info["deals"]
    if not deals:
        click.echo("no storage deals (files this node puts have their shares' holders paid here)")
    else:
        from ..units import format_size

        (_deals_table if shares else _files_table)(deals, info["node"], wide, format_size)
    # Sentences under the table, wrapped between words as it fits the terminal.
    if info.get("deals_settled"):
        prose(f"{counted(info['deals_settled'], 'settled deal')} not shown (paid or forfeited to their end)")
    run = info["payments"]
    if run is None:
        prose("last payment run: none since the node started (market.payment_interval)")
    else:
        prose(f"last payment run: {_utc(run['at'])}: paid {format_credits(run['paid'])} credits in "
              f"{counted(run['payments'], 'payment')}; {run['forfeited']} forfeited (failed audit), {run['waiting']} "
              f"waiting for an audit, {run['failed']} failed (retried)")
        if run["failed"] and run.get("why"):
            prose(f"the last failed: {run['why']}")


def _file_deals(obj, file: str, wide: bool, as_json: bool) -> None:
    """`market status --file`: a file's deals, running and ended (a repair that moved a share ends its holder's deal,
    its time since the last payment forfeited, and opens one on the new holder): the deals table shows only those
    running, so a moved share's old holder was seen nowhere but in the node's log."""
    from ..storage.core.capability import PREFIX, Capability

    if file.startswith(PREFIX):
        si = Capability.parse(file).storage_index.hex()
    elif len(file) == 64 and all(c in "0123456789abcdef" for c in file.lower()):
        si = file.lower()
    else:
        raise click.BadParameter(f"give a capability (xsc:chk:..., as `xsc store ls` lists them) or a storage index "
                                 f"(64 hex digits), not {file[:80]!r}", param_hint="'--file'")
    info = obj.client().request("GET", "/v1/market/status", query={"file": si})
    if as_json:
        emit_json(info)
        return
    deals = sorted(info["deals"] + info["ended"], key=lambda d: (d["share"], not d["ended"], d["start"]))
    if not deals:
        prose(f"no storage deals of file {si} here (deals are kept on the node that put the file: xsc store ls)")
        return
    from ..units import format_size

    _deals_table(deals, info["node"], wide, format_size)
    ended = len(info["ended"])
    if ended:
        prose(f"{counted(ended, 'deal')} ended when a repair moved {'its share' if ended == 1 else 'their shares'} to "
              "another holder (not paid past the move: the time since the last payment is forfeited)")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _allocation_rows(a: dict | None) -> list[tuple[str, object]]:
    """The allocation rounds' lines of `market status`: ITC stamp, peers in causal order, convergence
    (labels no longer than the others', so the block keeps its alignment)."""
    if a is None:
        return []
    change = f"change {a['delta']}" if a["delta"] is not None else "no state yet"
    share = f"{a['converged_share']:.0%} of {a['providers']} converged" if a["providers"] else "no provider yet"
    order = " < ".join(p["id"] for p in a["peers"]) or "no peer's records yet"
    return [
        ("ITC stamp", _clip(a["stamp"], 48) if a["stamp"] else "none yet (forking an id from a peer)"),
        ("causal order", order),
        ("allocation", f"converged: {'yes' if a['converged'] else 'no'} ({change}; {share})"),
    ]


def _need_kind(found: dict) -> str:
    # The explanation does not carry the kind; the node names compute needs `invoke-...` and the
    # capacity slots `storage-<bucket>` / `compute-<bucket>`.
    a = found.get("assignment")
    if a and a["capacity_slot"].split("-", 1)[0] in UNITS:
        return a["capacity_slot"].split("-", 1)[0]
    return "compute" if found["need"].startswith("invoke-") else "storage"


@market.command()
@click.argument("need_id", metavar="NEED_ID")
@json_option
@click.pass_obj
def explain(obj, need_id: str, as_json: bool) -> None:
    """Explain why a recent need (NEED_ID, as printed by a refused put or invoke) got what it got."""
    found = obj.client().request("GET", f"/v1/market/explain/{path_id(need_id, 'need id', 'xsc market status')}")
    if as_json:
        emit_json(found)
        return
    kind = _need_kind(found)
    text = f"need {found['need']}: {found['code']}: {found['message']}."
    text += (f" Clearing price: {_price(found['clearing_price'], kind)}." if found["clearing_price"] is not None
             else " Nothing traded in its market.")
    if found.get("bid") is not None:
        text += f" Its bid: {_price(found['bid'], kind)} for {_quantity(found['quantity'], kind)}."
    if found.get("best_ask") is not None:
        text += f" Lowest ask: {_price(found['best_ask'], kind)}."
    if found.get("would_match"):
        text += f" It would have matched with {found['would_match']}."
    a = found["assignment"]
    if a is not None:
        text += (f" Assigned to {a['provider']} (slot {a['capacity_slot']}), {_quantity(a['quantity'], kind)} at "
                 f"{_price(a['price'], kind)}, {a['tier']} tier.")
    else:
        text += " Not assigned to any provider."
    prose(text)


@market.command(context_settings={"ignore_unknown_options": True})  # so `recognize PEER -1` gets a clear error
@click.argument("peer")
@click.argument("weight")
@click.option("--credit", metavar="CREDITS", type=Credits(least=0, word="default"),
              help="The credit line this node gives PEER: work it does for PEER ahead of payment, in credits "
                   "(`default`: ledger.peer_credit).  Peers not recognised get none: they prepay.")
@json_option
@click.pass_obj
def recognize(obj, peer: str, weight: str, credit: int | None, as_json: bool) -> None:
    """Set the recognition weight this node publishes for PEER (a node id or a unique prefix).

    WEIGHT is a decimal from 0 to 1000 (0: no recognition), or `auto` to go back to the weight derived
    from the peer's availability, audits and the credits exchanged with it.  Recognized peers'
    needs are served first (docs/market.md), and only a peer recognised with a weight above 0 gets
    credit here (docs/security.md)."""
    if weight.startswith("--"):  # a negative number is left to the node, which states the rule
        from ..errors import InvalidArgument

        raise InvalidArgument(f"no such option: {weight}", hint="see: xsc market recognize --help")
    client = obj.client()
    body = {"peer": resolve_peer(client, peer), "weight": None if weight.lower() == "auto" else weight}
    if click.get_current_context().get_parameter_source("credit") is not ParameterSource.DEFAULT:
        body["credit"] = credit  # None: `default`
    row = client.request("POST", "/v1/market/recognize", json_body=body)
    if as_json:
        emit_json(row)
        return
    if body["weight"] is None:
        click.echo(f"{row['peer']}: weight back to the derived one ({_weight(row['weight'])})")
    else:
        click.echo(f"{row['peer']}: weight {_weight(row['weight'])}")
    line = row.get("credit_line")
    was = row.get("before", {}).get("credit")
    if line is not None and "credit" not in body and was is not None and was > line["credit"]:
        # The line went with the recognition (`auto`, 0): said, with what gives it back, not left to be found out.
        prose(f"credit line {format_credits(line['credit'])} credits, a stranger's (was {format_credits(was)} while "
              f"recognised), available {format_credits(line['available'])}; give it back with: xsc market recognize "
              f"{row['peer']} {row['before']['weight'] or 1} --credit {credits_argument(was)}")
    elif line is not None:
        click.echo(f"credit line {format_credits(line['credit'])} credits, available "
                   f"{format_credits(line['available'])}")


@market.command()
@wide_option
@json_option
@click.pass_obj
def recognition(obj, wide: bool, as_json: bool) -> None:
    """Show the weight this node publishes for each peer, the credits exchanged with it (a derived weight is
    earned by them), and the weight each peer publishes for this node.

    It fits the terminal, or 80 columns when not on one: a peer's id, whole, then goes on a line under its row
    (--wide: in a column; --json for scripts)."""
    info = obj.client().request("GET", "/v1/market/recognition")
    if as_json:
        emit_json(info)
        return
    if not info["recognition"]:
        click.echo("no peers known (join a network with: xsc peers add URL)")
        return
    wide_table([Col("peer", keep=True, under=True), Col("weight", right=True), "set by",
                Col("derived", keep=True, drop=1, right=True), Col("earned (credits)", drop=2, right=True),
                Col("theirs for this node", right=True)],
               [(r["peer"], _weight(r["weight"]), "user" if r["set_by_user"] else "derived", _weight(r["derived"]),
                 format_credits(r["earned"]), "-" if r["theirs"] is None else _weight(r["theirs"]))
                for r in info["recognition"]], wide=wide)


def _weight(text: str) -> str:
    """A weight as the node keeps it ("2", "1.0", "0.25": as the user typed it, a derived one to a tenth) in one
    form: its digits without trailing zeros, so that the same figure reads the same in every column."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        return str(text)
    return f"{value.normalize():f}" if value.is_finite() else str(text)
