"""`xsc market ...`: the book, the offer, deals of a put, a refused put explained, recognition, and bad inputs
as one-line errors; on one node (the click app in this process) and on two peered node processes."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.support.peers import FAST
from tests.support.waiting import eventually
from xsc.node.appkeys import NODE


def ok(node, *args: str) -> str:
    result = node.xsc(*args)
    assert result.returncode == 0, (args, result.stderr.decode())
    return result.stdout.decode()


def ok_json(node, *args: str):
    return json.loads(ok(node, *args, "--json"))


def usage_error(node, *args: str) -> str:
    """The first line of a usage error (exit 2)."""
    result = node.xsc(*args)
    err = result.stderr.decode()
    assert result.returncode == 2 and result.stdout == b"", (args, result.stdout, err)
    assert err.startswith("xsc: usage error: ") and err.count("\n") <= 2, (args, err)
    return err.splitlines()[0]


def fails(node, *args: str) -> str:
    """The one `xsc: error:` line of a refused command."""
    result = node.xsc(*args)
    err = result.stderr.decode()
    assert result.returncode == 1 and result.stdout == b"", (args, result.stdout, err)
    assert err.startswith("xsc: error: ") and err.count("\n") == 1, (args, err)
    return err


def test_market_cli_on_one_node(cli_node, tmp_path):
    node = cli_node()
    me = ok_json(node, "market", "status")["node"]

    # The book holds this node's asks, storage and compute, for this bucket and the next.
    book = ok_json(node, "market", "book")
    assert book["participants"] == 1 and len(book["digest"]) == 64
    asks = {(b["kind"], b["bucket"]): b["asks"] for b in book["books"]}
    assert {kind for kind, _ in asks} == {"storage", "compute"} and len(asks) == 4
    assert all(len(a) == 1 and a[0]["owner"] == me for a in asks.values())
    text = ok(node, "market", "book", "--kind", "storage")
    assert "this node" in text and "micro-credits per GiB-hour" in text and "compute" not in text
    assert text.startswith("book of 1 participant\n"), text
    assert {b["kind"] for b in ok_json(node, "market", "book", "--kind", "compute")["books"]} == {"compute"}

    offer = ok_json(node, "market", "offer")
    s = offer["storage"]
    assert s["offered"] and s["floor"] <= s["ask"] <= s["ceiling"] and s["capacity"] > 0
    text = ok(node, "market", "offer")
    assert f"{s['ask']} micro-credits per GiB-hour" in text and "micro-credits per million fuel" in text

    # A put: six shares, six deals at the clearing price, all held here (the only node).
    data = tmp_path / "file.bin"
    data.write_bytes(bytes(range(256)) * 4000)
    put = node.xsc("store", "put", str(data))
    assert put.returncode == 0 and b" bytes in 1 segment; " in put.stderr, put.stderr
    status = ok_json(node, "market", "status")
    assert len(status["deals"]) == 6 and {d["share"] for d in status["deals"]} == set(range(6))
    assert all(d["node"] == me and s["ask"] <= d["price"] <= 4000 and not d["ended"] for d in status["deals"])
    assert status["needs"] == [] and status["converged"] and status["peers"] == 0
    text = ok(node, "market", "status")
    assert "converged:     yes" in text and text.count("this node") == 1 and "last payment run" in text
    assert ok(node, "market", "status", "--shares").count("this node") == 6  # each share's deal

    # Bidding 1 micro-credit per GiB-hour: refused, the line names the needs, explain tells why.
    err = fails(node, "store", "put", str(data), "--max-price", "1")
    needs = re.findall(r"put-[0-9a-f]{12}-[0-5]", err.split("(see why")[0])
    assert "found no provider for 6 of 6" in err and "xsc market explain" in err and len(set(needs)) == 6, err
    assert len(ok_json(node, "market", "status")["deals"]) == 6  # nothing stored, nothing owed
    why = ok_json(node, "market", "explain", needs[0])
    assert why["need"] == needs[0] and why["recipient"] == me and why["assignment"] is None
    assert why["code"] != "matched" and why["message"]
    text = ok(node, "market", "explain", needs[0])
    assert text.startswith(f"need {needs[0]}: {why['code']}: ") and "Not assigned" in " ".join(text.split()), text
    assert all(len(line) <= 80 for line in text.splitlines()), text  # piped: wrapped to 80 columns between words
    assert "no recent need 'put-000000000000-0'" in fails(node, "market", "explain", "put-000000000000-0")
    # Its only provider avoided: explain names the flag the user typed, not the allocator's filter.
    err = fails(node, "store", "put", str(data), "--avoid", me)
    avoided = re.findall(r"put-[0-9a-f]{12}-[0-5]", err.split("(see why")[0])[0]
    text = ok(node, "market", "explain", avoided)
    assert f"need {avoided}: filtered_out: all 2 compatible slots are excluded by --avoid (it avoids this node)" \
        in " ".join(text.split()), text
    assert "It would have matched with fewer filters (--avoid, --min-availability)." in " ".join(text.split()), text
    # A preference is no filter: said apart from them.
    err = fails(node, "store", "put", str(data), "--avoid", me, "--prefer", me)
    preferring = re.findall(r"put-[0-9a-f]{12}-[0-5]", err.split("(see why")[0])[0]
    text = " ".join(ok(node, "market", "explain", preferring).split())
    assert "It would have matched with fewer filters (--avoid, --min-availability); its --prefer leaves no provider " \
        "out, it only orders those the filters keep." in text, text

    prices = ok_json(node, "market", "prices", "--limit", "5")
    assert isinstance(prices["prices"], list) and len(prices["prices"]) <= 5

    # Bad inputs: one line, exit 1, nothing changed.
    # Bad option values are usage errors: exit 2, the reason on the first line.
    assert "unknown kind 'cpu'" in usage_error(node, "market", "book", "--kind", "cpu")
    assert "unknown kind 'gpu'" in usage_error(node, "market", "prices", "--kind", "gpu")
    assert "--limit must be a whole number from 1 to 1000, not '0'" in usage_error(node, "market", "prices",
                                                                                   "--limit", "0")
    assert "between 0 and 1000, not -1" in fails(node, "market", "recognize", me, "-1")
    assert "not a number: 'lots'" in fails(node, "market", "recognize", me, "lots")
    assert "no known peer starts with zz" in fails(node, "market", "recognize", "zz", "1")
    assert ok_json(node, "market", "recognition") == {"recognition": []}
    assert ok(node, "market", "--help").count("recognize") >= 1
    for command in ("book", "prices", "offer", "status", "explain", "recognize", "recognition"):
        assert "--json" in ok(node, "market", command, "--help"), command


# Books are compared (digests swapped) every third of market.freshness: every 3 s, where the default is every 20.
SWAPPING = {**FAST, "XSC_MARKET_FRESHNESS": "9"}


@pytest.mark.slow
def test_market_cli_two_peered_nodes(node_process, tmp_path):
    a = node_process("a", env=SWAPPING)
    b = node_process("b", ["--peer", a.url], env=SWAPPING)
    a_id, b_id = ok_json(a, "market", "status")["node"], ok_json(b, "market", "status")["node"]

    # Gossip: both books hold both offers, with the same digest.
    def converged():
        sa, sb = ok_json(a, "market", "status"), ok_json(b, "market", "status")
        return (sa["participants"] == sb["participants"] == 2 and sa["converged"] and sb["converged"]
                and sa["digest"] == sb["digest"])

    eventually(converged, "both books to hold both offers")
    owners = {o["owner"] for bk in ok_json(b, "market", "book")["books"] for o in bk["asks"]}
    assert owners == {a_id, b_id}
    text = ok(b, "market", "book", "--kind", "storage")
    assert a_id[:12] in text and "this node" in text
    assert "peers in book: 1 / 1" in ok(b, "market", "status")

    # A put from b: its six shares spread over both nodes, a deal per share, each holder named.
    data = tmp_path / "spread.bin"
    data.write_bytes(bytes(range(256)) * 2000)
    ok(b, "store", "put", str(data))
    deals = ok_json(b, "market", "status")["deals"]
    assert len(deals) == 6 and {d["node"] for d in deals} == {a_id, b_id}
    assert len({d["price"] for d in deals}) == 1  # one uniform clearing price
    text = ok(b, "market", "status")
    assert "2 nodes" in text  # summed per file: how many nodes hold it
    text = ok(b, "market", "status", "--shares")
    assert a_id in text.split() and "this node" in text

    # Recognition: set by a prefix of the id, then back to the derived weight with `auto`.
    row = ok_json(b, "market", "recognize", a_id[:10], "2.5")
    assert row["peer"] == a_id and row["weight"] == "2.5" and row["set_by_user"]
    (mine,) = ok_json(b, "market", "recognition")["recognition"]
    assert mine["peer"] == a_id and mine["weight"] == "2.5" and mine["set_by_user"]
    assert "user" in ok(b, "market", "recognition")
    # a sees b's weight for it once b's new commitment arrives.
    eventually(lambda: ok_json(a, "market", "recognition")["recognition"][0]["theirs"] == "2.5",
               "a to see b's recognition")
    assert "back to the derived one" in ok(b, "market", "recognize", a_id, "auto")
    (mine,) = ok_json(b, "market", "recognition")["recognition"]
    assert not mine["set_by_user"] and mine["weight"] == mine["derived"]
    assert ok_json(b, "market", "recognize", a_id, "AUTO")["peer"] == a_id


def test_market_status_says_why_a_payment_run_failed(cli_node, tmp_path):
    """Storage payments the user's credit cannot cover fail and are retried each run: `market status` says why (the
    ledger's refusal and what to do), as `ledger payments` lists none (nothing was sent) and only the log said it."""
    node = cli_node()
    data = tmp_path / "file.bin"
    data.write_bytes(os.urandom(3_000_000))  # shares of 750 KB: 17 micro-credits a day each at the floor of 1,000
    assert node.xsc("store", "put", str(data)).returncode == 0
    node.stop()
    node = cli_node("node", ledger={"credit_limit": 0})  # lowered: the leases it promised can no longer be paid
    deals = node.app[NODE].deals
    later = min(d.paid_until for d in deals.all()) + 86_400  # a day held: each share earns a micro-credit or more
    run = node.submit(deals.pay_due(later)).result(60)
    assert run["failed"] == 6 and run["payments"] == 0, run
    status = ok_json(node, "market", "status")["payments"]
    assert status["failed"] == 6 and status["why"].startswith("insufficient credit: "), status
    text = " ".join(ok(node, "market", "status").split())
    assert "6 failed (retried) the last failed: insufficient credit: " in text, text
    assert "xsc config set ledger.credit_limit MICRO_CREDITS" in text, text
