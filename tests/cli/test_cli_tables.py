"""Tables fit an 80-column terminal; ids and capabilities are never cut or folded."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from xsc.identity import Identity, public_id
from xsc.ledger.core.model import Authorization
from xsc.node.appkeys import NODE
from xsc.units import format_credits

from tests.support.attacks import fake_descriptors
from tests.support.cli import xsc
from tests.support.http_stub import json_answer, serving
from tests.support.nodes import free_port
from tests.support.peers import QUIET, offering_pair
from tests.support.waiting import eventually

WASM = Path(__file__).resolve().parents[2] / "fixtures" / "wasm"
NARROW = {"COLUMNS": "80"}


def _fits(text: str, *whole: str, width: int = 80) -> None:
    """Every line is at most `width` columns, except a line that is exactly one of `whole` (a capability)."""
    for line in text.splitlines():
        assert len(line) <= width or line.strip() in whole, line


def _table_fits(text: str, ids: list[str], width: int) -> None:
    """Every line of a table is at most `width` columns, but a line under a row that holds one id whole (`ids`, named
    or not: an id is never cut, and one of 64 hex digits, indented, is wider than 60 columns)."""
    for line in text.splitlines():
        words = [w.rstrip(",") for w in line.split()]
        assert len(line) <= width or (len(words) <= 2 and words[-1] in ids), f"{len(line)}: {line}\n{text}"


def test_store_ls_keeps_capabilities_whole_and_fits(thread_node) -> None:
    node = thread_node()
    caps = [node.xsc("store", "put", "-", "--name", f"a-rather-long-file-name-number-{i}.tar.gz",
                     input=os.urandom(1000 + i)).stdout.strip() for i in range(2)]
    narrow = node.xsc("store", "ls", env=NARROW)
    assert narrow.exit_code == 0, narrow.output
    _fits(narrow.stdout, *caps)
    lines = [line.strip() for line in narrow.stdout.splitlines()]
    for cap in caps:
        assert cap in lines  # on a line of its own, whole: copy-paste works
    assert lines[0].split() == ["name", "size", "created", "(UTC)", "expires", "(UTC)"]
    for i in range(2):  # cut in the middle: the end that tells the names apart is kept
        assert any(line.startswith("a-rather") and "…" in line and f"-number-{i}.tar.gz " in line
                   for line in lines), lines
    wide = node.xsc("store", "ls", "--wide", env=NARROW).stdout.splitlines()
    assert wide[0].split() == ["name", "size", "created", "(UTC)", "expires", "(UTC)", "capability"]
    assert any(line.startswith("a-rather-long-file-name-number-0.tar.gz") and line.endswith(caps[0])
               for line in wide)


def test_compute_modules_never_splits_a_word(thread_node) -> None:
    node = thread_node()
    assert node.xsc("compute", "deploy", str(WASM / "arith.wasm")).exit_code == 0
    out = node.xsc("compute", "modules", env=NARROW).stdout
    _fits(out)
    listed = json.loads(node.xsc("compute", "modules", "--json").stdout)[0]
    assert listed["id"] in out
    for export in listed["exports"]:
        assert any(export["signature"] in line for line in out.splitlines()), export["signature"]


def test_compute_module_wraps_its_imports_between_items_and_the_watch_hint_fits(thread_node) -> None:
    node = thread_node()
    module = node.xsc("compute", "deploy", "--wasi", str(WASM / "outputs.wasm")).stdout.strip()
    imports = json.loads(node.xsc("compute", "module", module, "--json").stdout)["imports"]
    out = node.xsc("compute", "module", module, env=NARROW).stdout
    _fits(out)
    lines = [line.strip().rstrip(",") for line in out.splitlines()]
    assert f"id:             {module}" in out.splitlines()
    assert all(i in lines or f"imports:        {i}" in lines for i in imports), out  # each whole, on a line
    assert node.xsc("compute", "module", module).stdout.count("\n") == out.count("\n") - len(imports) + 1  # piped
    hint = node.xsc("compute", "watches", env=NARROW).stdout
    _fits(hint)
    assert "xsc compute watch NAME MODULE --on s3://B/P --to s3://B2/P2" in hint.splitlines()[-1]


def test_compute_provenance_list_fits_with_its_ids_whole(thread_node) -> None:
    node = thread_node()
    assert node.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2").exit_code == 0
    record = json.loads(node.xsc("compute", "provenance", "--list", "--json").stdout)[0]["record"]
    out = node.xsc("compute", "provenance", "--list", env=NARROW)
    assert out.exit_code == 0, out.output
    _fits(out.stdout)
    words = out.stdout.split()
    assert record["id"] in words and record["module"] in words  # whole: the module under its row
    wide = node.xsc("compute", "provenance", "--list", "--wide", env=NARROW).stdout
    assert any(record["id"] in line and record["module"] in line for line in wide.splitlines())


def test_s3_users_fits_with_each_account_whole(thread_node) -> None:
    node = thread_node()
    for user in ("ana", "xsc"):
        assert node.xsc("s3", "keys", "create", "--user", user).exit_code == 0
    accounts = [u["account"] for u in json.loads(node.xsc("s3", "users", "--json").stdout)]
    out = node.xsc("s3", "users", env=NARROW)
    assert out.exit_code == 0, out.output
    _fits(out.stdout)
    assert len(accounts) == 2 and all(a in out.stdout.split() for a in accounts)  # under their rows, whole
    assert out.stdout.splitlines()[0].split() == ["user", "keys", "balance", "(credits)", "pays"], out.stdout


def test_a_maps_manifest_fits_with_its_job_ids_and_capabilities_whole(thread_node) -> None:
    node = thread_node()
    cap = node.xsc("store", "put", "-", input=b"some words\n").stdout.strip()
    out = node.xsc("compute", "map", str(WASM / "outputs.wasm"), "--over", cap, "--as", "-", env=NARROW)
    assert out.exit_code == 0, out.output
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert lines[0] == cap and len(lines) == 5, lines  # the input whole, then its state and job, its 3 outputs whole
    assert lines[1].split("  ")[0] == "done" and len(lines[1].split("  ")[1]) == 64, lines
    assert all(line.startswith("xsc:chk:") for line in lines[2:]), lines
    _fits(out.stdout, cap, *lines[2:])
    whole = node.xsc("compute", "map", str(WASM / "outputs.wasm"), "--over", cap, "--as", "-").stdout.split()
    assert whole[:2] == [cap, "done"] and len(whole) == 6, whole  # not a terminal: one line
    helped = " ".join(node.xsc("compute", "map", "--help").stdout.split())
    assert "one manifest at the end: input, state, job id, outputs" in helped, helped  # in the order it prints them
    listed = node.xsc("compute", "maps", env=NARROW)  # the two maps: each id whole, its module under its row
    assert listed.exit_code == 0, listed.output
    ids = [line.split()[0] for line in listed.stdout.splitlines()[1:] if not line.startswith(" ")]
    module = node.xsc("compute", "maps", "--json").stdout
    assert len(ids) == 2 and all(len(i) == 32 and i in module for i in ids), listed.stdout
    _table_fits(listed.stdout, [json.loads(module)["maps"][0]["module"]], 80)
    assert listed.stdout.splitlines()[0].split() == ["map", "inputs", "done", "failed", "made", "(UTC)"], listed.stdout


def test_market_status_fits(thread_node) -> None:
    node = thread_node()
    node.xsc("store", "put", "-", input=b"x" * 5000)
    out = node.xsc("market", "status", env=NARROW)
    assert out.exit_code == 0, out.output
    _fits(out.stdout)
    assert "storage-" in out.stdout and "this node" in out.stdout
    wide = node.xsc("market", "status", "--wide", env=NARROW).stdout
    assert "forfeited" in wide and "paid until" in wide
    shares = node.xsc("market", "status", "--shares", "--wide", env=NARROW).stdout
    assert "forfeited" in shares and "paid until" in shares and shares.count("this node") == 6
    allocation = json.loads(node.xsc("market", "status", "--json").stdout)["allocation"]
    assert allocation["providers"] == 0, allocation
    assert "allocation:    converged: yes (no state yet; no provider yet)" in wide, wide


def test_market_status_sums_the_deals_per_file_in_80_columns_and_shows_each_shares_with_shares(thread_node) -> None:
    """Three lines a share (its row, the file, the holder) made a node with a few files print hundreds of lines: the
    deals are summed per file, one row and its storage index whole under it; `--shares` shows each share's deal, and
    --json is the same whichever is asked."""
    node = thread_node()
    for size in (5000, 7000, 9000):
        assert node.xsc("store", "put", "-", input=os.urandom(size)).exit_code == 0
    status = json.loads(node.xsc("market", "status", "--json").stdout)
    assert json.loads(node.xsc("market", "status", "--shares", "--json").stdout) == status
    files = {d["si"] for d in status["deals"]}
    assert len(status["deals"]) == 18 and len(files) == 3
    out = node.xsc("market", "status", env=NARROW).stdout
    _table_fits(out, sorted(files), 80)
    deals = out.split("storage deals")[1].splitlines()
    assert deals[0] == ", per file (each share's: --shares)", deals
    assert deals[1].split() == ["shares", "holders", "bytes", "paid", "of", "total", "(credits)"], deals
    rows = [line.split() for line in deals[2:] if not line.startswith(("    file ", "last payment run"))]
    assert [row[:3] for row in rows] == [["6", "this", "node"]] * 3, deals
    assert sorted(line.split()[-1] for line in deals if line.startswith("    file ")) == sorted(files)
    for si in files:
        of_file = [d for d in status["deals"] if d["si"] == si]
        paid, total = (format_credits(sum(d[k] for d in of_file)) for k in ("paid", "total"))
        assert f"{paid} of {total}" in out
    shares = node.xsc("market", "status", "--shares", env=NARROW).stdout
    assert shares.count("holder this node") == 18 and all(shares.count(f"file {si}") == 6 for si in files), shares


def test_the_tours_tables_fit_60_columns_with_their_ids_whole(thread_node) -> None:
    node = thread_node()
    put = node.xsc("store", "put", "-", input=os.urandom(5000))
    assert node.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2").exit_code == 0
    record = json.loads(node.xsc("compute", "provenance", "--list", "--json").stdout)[0]["record"]
    si = json.loads(node.xsc("market", "status", "--json").stdout)["deals"][0]["si"]
    shown = {}
    for args, ids in ((["market", "status"], [si]), (["market", "prices"], []),
                      (["compute", "provenance", "--list"], [record["id"], record["module"]])):
        done = node.xsc(*args, env={"COLUMNS": "60"})
        assert done.exit_code == 0, done.output
        # market status's deals: its key-value lines above them name the node's id and digest whole
        shown[args[1]] = (done.stdout.split("storage deals")[-1], ids)
    with serving(json_answer(FUNCTIONS)) as url:
        done = xsc("compute", "functions", "--node", url, env={"XSC_TOKEN": "t", "COLUMNS": "60"})
    assert done.exit_code == 0, done.output
    shown["functions"] = (done.stdout, [FUNCTION_ROW["module"], FUNCTION_ROW["url"]])
    for text, ids in shown.values():
        _table_fits(text, ids, 60)
        assert all(i in [w.rstrip(",") for w in text.split()] for i in ids), text  # whole, as words of their own


def test_market_status_gives_what_was_paid_in_credits_and_prices_in_the_market_s_unit(thread_node) -> None:
    node = thread_node(market={"payment_interval": 0.5})
    node.xsc("store", "put", "-", input=b"x" * 5000)
    found = eventually(lambda: (lambda s: s if s["payments"] and s["deals"] else None)(
        json.loads(node.xsc("market", "status", "--json").stdout)), "a payment run over the put's deals", 60)
    out = node.xsc("market", "status", "--shares", "--wide").stdout
    run = found["payments"]
    assert f"paid {format_credits(run['paid'])} credits in" in out, out
    assert re.search(r"credits in [0-9]+ payments?;", " ".join(out.split())) and "(s)" not in out, out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("file"))
    assert "price (micro-credits/GiB-h)" in header and "paid of total (credits)" in header, header
    deal = found["deals"][0]
    row = next(line for line in out.splitlines() if deal["si"] in line and f" {deal['share']} " in line)
    assert f" {deal['price']} " in row, row
    assert f"{format_credits(deal['paid'])} of {format_credits(deal['total'])}" in row, row


def test_ledger_history_says_how_many_entries_it_left_out(thread_node) -> None:
    node = thread_node(ledger={"tab_interval": 0.2})
    for n in range(1, 4):  # calls are paid by a tab, one transfer per interval: wait for each to settle
        assert node.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2").exit_code == 0
        eventually(lambda: len(json.loads(node.xsc("ledger", "history", "--json").stdout)) >= n,
                   f"the ledger to show {n} entries", 60)
    out = node.xsc("ledger", "history", "-n", "2", env=NARROW)
    assert out.exit_code == 0, out.output
    _fits(out.stdout)
    assert "1 older entry not shown" in out.stdout
    assert "not shown" not in node.xsc("ledger", "history", "-n", "3").stdout
    payee = json.loads(node.xsc("ledger", "history", "--json").stdout)[0]["payee"]
    under = [line.strip().rstrip(",") for line in out.stdout.splitlines()]
    assert f"counterparty {payee}" in under  # whole, under its row
    entries = json.loads(node.xsc("ledger", "history", "-n", "2", "--json").stdout)
    assert all(f"entry {e['id']}" in under and f"root {e['covers']}" in under for e in entries), out.stdout
    wide = node.xsc("ledger", "history", "--wide").stdout
    counted = {e["invokes"] for e in json.loads(node.xsc("ledger", "history", "--json").stdout)}
    assert all(re.search(rf"\b{n} invoke{'s' if n != 1 else ''}\b", wide) for n in counted), wide
    assert not re.search(r"\b1 invokes\b", wide), wide
    assert re.fullmatch(r"account \S+ — balance -?\d+\.\d{6} credits", wide.splitlines()[0]), wide  # with its unit


def test_tables_naming_a_peer_fit_80_columns_with_its_id_whole(thread_node) -> None:
    a, b, b_id = offering_pair(thread_node)
    for args in (["market", "book"], ["market", "recognition"]):
        shown = a.xsc(*args, env=NARROW)
        assert shown.exit_code == 0, shown.output
        _fits(shown.stdout)
        assert b_id in shown.stdout.split(), (args, shown.stdout)  # never cut
    for args, under, row in ((["market", "book"], "owner", ["ask", b_id]), (["market", "recognition"], "peer", [b_id])):
        piped = a.xsc(*args)  # not a terminal: 80 columns too, B's id whole under its row
        assert piped.exit_code == 0, piped.output
        _fits(piped.stdout)
        assert f"{under} {b_id}" in [line.strip() for line in piped.stdout.splitlines()], piped.stdout
        whole = a.xsc(*args, "--wide").stdout.splitlines()  # in a column, however wide
        assert any(line.split()[:len(row)] == row for line in whole if line.strip()), whole
        assert any(len(line) > 80 for line in whole), whole
    assert "earned (credits)" in a.xsc("market", "recognition").stdout.splitlines()[0]  # a figure with its unit
    # `peers ls` piped: the id and its state in the row, and the URL a reader goes to kept, on a line under it
    url = next(p["url"] for p in json.loads(a.xsc("peers", "ls", "--json").stdout)["peers"] if p["id"] == b_id)
    for env in ({}, NARROW):
        listed = a.xsc("peers", "ls", env=env)
        assert listed.exit_code == 0, listed.output
        _fits(listed.stdout)
        lines = listed.stdout.splitlines()
        row = next(n for n, line in enumerate(lines) if line.startswith(b_id))
        assert url not in lines[row] and lines[row + 1] == f"    url {url}", listed.stdout
    assert any(line.startswith(b_id) and url in line.split() for line in a.xsc("peers", "ls", "--wide").stdout
               .splitlines())  # in its column


def test_market_book_shows_which_asks_carry_the_web_tag(thread_node) -> None:
    node = thread_node(**QUIET, node={"web_listen": f"127.0.0.1:{free_port()}"})  # it serves web functions
    books = json.loads(node.xsc("market", "book", "--json").stdout)["books"]
    tagged = {b["kind"]: [o["tags"] for o in b["asks"]] for b in books}
    assert tagged["compute"] and all(t == ["web"] for t in tagged["compute"]), tagged
    assert tagged["storage"] and all(t == [] for t in tagged["storage"]), tagged
    shown = node.xsc("market", "book", "--wide")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert ["side", "owner", "quantity", "price", "tags"] in [line.split() for line in lines], shown.stdout
    asks = [line.split() for line in lines if line.startswith("ask")]
    assert {row[-1] for row in asks} == {"web", "-"}, shown.stdout  # compute's asks tagged, storage's not


def test_ledger_accounts_and_trust_fit_80_columns_with_ids_whole(thread_node) -> None:
    node = thread_node()
    peer = public_id(os.urandom(32))
    receipt_of = Authorization(os.urandom(32), os.urandom(32), 12_500_000, os.urandom(16), int(time.time()) + 600, "t")
    node.app[NODE].trust.paid(peer, receipt_of, 12_500_000)  # a countersigned receipt: a line for that peer
    accounts = json.loads(node.xsc("ledger", "accounts", "--json").stdout)
    shown = node.xsc("ledger", "accounts", env=NARROW)
    assert shown.exit_code == 0, shown.output
    _fits(shown.stdout)
    assert {"client", "node"} <= {a["role"] for a in accounts}
    for account in accounts:
        assert account["account"] in shown.stdout.split()  # whole
    piped = node.xsc("ledger", "trust")  # not a terminal: 80 columns too
    shown = node.xsc("ledger", "trust", env=NARROW)
    assert shown.exit_code == 0, shown.output
    assert piped.stdout == shown.stdout, piped.stdout
    _fits(shown.stdout)
    assert peer in shown.stdout.split() and "12.500000" in shown.stdout
    assert shown.stdout.splitlines()[0] == "trust lines (credits)", shown.stdout
    wide = node.xsc("ledger", "trust", "--wide", env=NARROW).stdout.splitlines()
    assert wide[1].split()[0] == "peer" and wide[2].split()[0] == peer, wide  # in a column, however wide
    # a stranger's payment counts only as far as it can be collected: then what counts is shown, and the row adds up
    header, row = shown.stdout.splitlines()[1].split(), shown.stdout.splitlines()[2].split()
    figures = dict(zip(header, map(Decimal, row)))
    assert header == ["paid", "counted", "used", "reserved", "credit", "available"], shown.stdout
    assert figures["counted"] + figures["credit"] - figures["used"] - figures["reserved"] == figures["available"]


def test_devnet_status_shows_name_pid_state_and_each_id_and_data_dir_whole(tmp_path: Path) -> None:
    nodes = [{"name": f"node-{i}", "id": f"{i}" * 52, "url": f"http://127.0.0.1:{7100 + i}", "pid": 999_990 + i,
              "data_dir": str(tmp_path / "a-long-folder-name" / "for-the-devnet" / f"node-{i}"),
              "log": str(tmp_path / f"node-{i}.log")} for i in range(3)]
    (tmp_path / "devnet.json").write_text(json.dumps({"nodes": nodes}))
    out = xsc("devnet", "status", "--dir", str(tmp_path), env=NARROW)
    assert out.exit_code == 0, out.output
    _fits(out.stdout, *(f"data dir {n['data_dir']}" for n in nodes))  # the label on the line of its path, whole
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("node-")]
    assert [r[:4] for r in rows] == [[f"node-{i}", "DOWN", str(999_990 + i), nodes[i]["url"]] for i in range(3)]
    words = out.stdout.replace(",", " ").split()
    assert all(n["id"] in words and n["data_dir"] in words for n in nodes)  # whole, under their rows
    assert "0 of 3 nodes up" in out.stdout


def test_the_table_renderer_cuts_and_drops_but_never_breaks_a_kept_column(monkeypatch) -> None:
    from click.testing import CliRunner

    from xsc.cli.tables import Col, table

    long_id = "i" * 70
    runner = CliRunner()
    with runner.isolation(env={"COLUMNS": "80"}) as (out, _, _):
        table([Col("id", keep=True), Col("name", shrink=6), Col("note", wrap=10), Col("extra", drop=1)],
              [(long_id, "a-very-long-name", "some words to wrap here", "dropped first")])
        text = out.getvalue().decode()
    lines = text.splitlines()
    assert "extra" not in lines[0] and long_id in lines[1]
    assert all(word in text.split() for word in "some words to wrap here".split())


def test_the_tours_sentences_and_lines_fit_80_columns(thread_node) -> None:
    node = thread_node()
    put = node.xsc("store", "put", "-", input=os.urandom(70_000), env=NARROW)
    assert put.exit_code == 0, put.output
    _fits(put.stderr)
    assert "survives the loss" in " ".join(put.stderr.split())  # wrapped between words, nothing lost
    cap = put.stdout.strip()
    for args in (["market", "book"], ["market", "prices"], ["peers", "ls"], ["store", "renew", cap, "--duration", "9d"]):
        shown = node.xsc(*args, env=NARROW)
        assert shown.exit_code == 0, shown.output
        _fits(shown.stdout + shown.stderr)


class _Refusing(BaseHTTPRequestHandler):
    """A stranger's node: it refuses every probe with a problem whose detail holds a terminal escape sequence, a line
    break that would forge a row of the table, and more words than a line holds."""

    def do_POST(self) -> None:
        detail = "\x1b]0;owned\x07\x1b[2J go away" + " and stay away" * 12 + "\nffffff  http://1.2.3.4:1  ok  1.0 ms"
        body = json.dumps({"code": "forbidden", "status": 403, "detail": detail}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_health_probe_shows_a_strangers_refusal_as_text_under_its_row_and_fits(thread_node) -> None:
    node = thread_node(health={"probe_interval": 3600}, peers={"gossip_interval": 3600, "tls": False})
    stranger = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    ids = [Identity.generate(), Identity.generate()]

    async def learn() -> None:  # as gossip would tell of them: a refusing node, and one where nothing listens
        node.app[NODE].peers.accept(fake_descriptors(ids[:1], host="127.0.0.1", first_port=stranger.server_address[1]))
        node.app[NODE].peers.accept(fake_descriptors(ids[1:], host="127.0.0.1", first_port=1))

    try:
        node.node._call(learn(), 10)
        probe = node.xsc("health", "probe", env=NARROW)
    finally:
        stranger.shutdown()
    assert probe.exit_code == 1 and probe.stderr.splitlines() == [
        "xsc: error: 2 of 2 peers failed the probe (the table above says why)"], probe.output
    _fits(probe.stdout)
    assert all(line.isprintable() for line in probe.stdout.splitlines())
    lines = probe.stdout.splitlines()
    assert lines[0].split() == ["id", "latency"]  # the url dropped, the answers under their rows
    assert sum(line.startswith(ids[0].id) for line in lines) == 1 and sum(ids[1].id in line for line in lines) == 1
    assert not any(line.startswith("ffffff") for line in lines)  # the stranger's line break forged no row
    assert "go away and stay away" in " ".join(probe.stdout.split()) and "connection refused" in probe.stdout


def test_market_explain_and_ledger_verify_wrap_their_sentences_between_words(thread_node, tmp_path) -> None:
    node = thread_node()
    (tmp_path / "file.bin").write_bytes(b"x" * 5000)
    refused = node.xsc("store", "put", str(tmp_path / "file.bin"), "--max-price", "1")
    assert refused.exit_code == 1, refused.output
    need = re.search(r"put-[0-9a-f]{12}-0", refused.stderr)
    assert need, refused.stderr
    need = need.group(0)
    for args in (("market", "explain", need), ("ledger", "verify")):
        whole = node.xsc(*args, env={"COLUMNS": "1000"})
        narrow, piped = node.xsc(*args, env=NARROW), node.xsc(*args)  # piped: 80 columns too (scripts have --json)
        assert whole.exit_code == narrow.exit_code == piped.exit_code == 0, narrow.output
        _fits(narrow.stdout)
        _fits(piped.stdout)
        assert max(map(len, whole.stdout.splitlines())) > 80, whole.stdout  # so there was something to wrap
        assert len(narrow.stdout.splitlines()) > len(whole.stdout.splitlines()), narrow.stdout
        if args[0] == "market":  # (verify's says how long it took: not the same twice)
            assert narrow.stdout.split() == whole.stdout.split(), narrow.stdout
            assert piped.stdout == narrow.stdout, piped.stdout


def test_a_terminal_narrower_than_the_indent_of_a_line_under_a_row_gets_no_traceback(thread_node) -> None:
    node = thread_node()
    cap = node.xsc("store", "put", "-", "--name", "a name", input=b"x" * 100).stdout.strip()
    for columns in ("1", "3"):
        out = node.xsc("store", "ls", env={"COLUMNS": columns})
        assert out.exit_code == 0 and out.stderr == "", out.output
        assert cap in out.stdout.split(), out.stdout  # still whole, under its row


def test_a_provider_lists_the_functions_it_hosts_for_another_node_with_the_owner_id_whole(thread_node) -> None:
    import urllib.request


    provider = thread_node("provider", **QUIET, node={"web_listen": f"127.0.0.1:{free_port()}"})
    owner = thread_node("owner", **QUIET, market={"offer_compute": False}, node={"placement_interval": 0.25})
    owner_id = json.loads(owner.xsc("node", "status", "--json").stdout)["id"]
    provider_id = json.loads(provider.xsc("node", "status", "--json").stdout)["id"]
    assert owner.xsc("peers", "add", provider.url).exit_code == 0
    eventually(lambda: any(o["owner"] == provider_id and k["kind"] == "compute"
                           for k in json.loads(owner.xsc("market", "book", "--json").stdout)["books"]
                           for o in k["asks"]), "the provider's compute offer in the owner's book", 30)
    for name in ("hello", "site"):
        served = owner.xsc("compute", "serve", name, str(WASM / "cgi.wasm"), "--on-market")
        assert served.exit_code == 0, served.output

    def placed() -> dict | None:
        listed = json.loads(owner.xsc("compute", "functions", "--json").stdout)["functions"]
        return {f["name"]: f["url"] for f in listed} if all(f.get("url") for f in listed) else None

    urls = eventually(placed, "both functions placed on the provider", 30)
    with urllib.request.urlopen(urls["hello"] + "x") as answer:
        assert answer.status == 200

    def hosted() -> list | None:
        found = json.loads(provider.xsc("compute", "functions", "--hosted", "--json").stdout)["functions"]
        return found if any(f["earned"] for f in found) else None

    found = eventually(hosted, "the request's run recorded and counted on the provider", 30)
    assert [(f["owner"], f["name"], f["path"], f["url"], f["requests"], f["errors"]) for f in found] == [
        (owner_id, n, f"/fn/{owner_id}/{n}/", urls[n], r, 0) for n, r in (("hello", 1), ("site", 0))]
    assert found[1]["earned"] == 0
    shown = provider.xsc("compute", "functions", "--hosted", env=NARROW)
    assert shown.exit_code == 0, shown.output
    _fits(shown.stdout)
    lines = [line.strip().rstrip(",") for line in shown.stdout.splitlines()]
    assert lines.count(f"owner {owner_id}") == 2 and f"path /fn/{owner_id}/hello/" in lines, shown.stdout
    assert format_credits(found[0]["earned"]) in shown.stdout.split()
    assert "no functions of other nodes" in owner.xsc("compute", "functions", "--hosted").stdout
    assert "--hosted" in provider.xsc("compute", "functions").stdout
    for none in (owner.xsc("compute", "functions", "--hosted", env=NARROW), provider.xsc("compute", "functions",
                                                                                          env=NARROW)):
        assert none.exit_code == 0 and none.stdout.count("\n") > 1, none.output  # a sentence wrapped between words
        _fits(none.stdout)


def test_a_key_value_view_shows_what_a_peer_wrote_as_one_line_without_control_characters(capsys) -> None:
    """A job's error may hold a provider's refusal, and a view of it is `key: value` lines: a terminal escape
    sequence in it never reaches the terminal, and its line breaks forge no line of the view."""
    from xsc.cli.tables import key_values

    refusal = "peer refused: \x1b]0;owned\x07\x1b[2J go away\nstate: done\r"
    key_values([("state", "refused"), ("error", refusal), ("peers", ["a\x1b[31m", "b\nc"])])
    lines = capsys.readouterr().out.splitlines()
    assert all(line.isprintable() for line in lines), lines
    assert [line.split(":")[0] for line in lines] == ["state", "error", "peers"], lines
    assert "go away state: done" in lines[1] and lines[2].endswith("a[31m, b c"), lines


FUNCTION_ROW = {"module": "ab" * 32, "requests": 9, "errors": 0, "spend": 0, "spent_this_hour": 0, "spend_cap": None,
                "on_market": False, "url": "http://127.0.0.1:1/fn/x/"}
# A node's functions that answered in a fraction of a millisecond, in a dozen and in exactly three.
FUNCTIONS = {"functions": [{**FUNCTION_ROW, "name": name, "p50_ms": p50, "requests": requests} for name, p50, requests
                           in (("fast", 0.734, 1234), ("slow", 12.5, 9), ("round", 3.0, 9), ("idle", None, 0))]}


def _history(delta: int, **entry) -> dict:
    """A node whose client account paid one transfer (`entry`: what differs from a plain invoke's)."""
    paid = {"seq": 1, "settled_at": 1_700_000_000, "kind": "payment", "payee": "p" * 52, "payer": "a" * 52,
            "delta": delta, "job": "invoke", "id": "e" * 64, **entry}
    return {"entries": [paid], "account": {"account": "a" * 52, "balance": -delta, "seq": 1}}


HISTORY = _history(-251_231, usage={"fuel": 47_529_798})  # a call that used tens of millions of fuel
EXPANDED = _history(-1, usage={"fuel": 10, "invokes": 1}, job="compute:tab:1:" + "r" * 64, covers="r" * 64,
                    invokes=1, covered=["c" * 32])  # one transfer covering one call, its provenance id listed
USED = _history(-2_400, usage={"fuel": 2_400_392, "invokes": 1, "memory_pages": 17})
# A node that recognises one peer with a weight its user set, derives another, and is recognised back.
RECOGNITION = {"recognition": [
    {"peer": "p" * 52, "weight": "2", "set_by_user": True, "derived": "1.0", "earned": 0, "recent": 0,
     "theirs": "1.50"},
    {"peer": "q" * 52, "weight": "0.3", "set_by_user": False, "derived": "0.3", "earned": 10, "recent": 0,
     "theirs": "0"}]}


def test_compute_functions_gives_every_p50_to_the_same_decimals_and_its_counts_right_aligned() -> None:
    with serving(json_answer(FUNCTIONS)) as url:
        shown = xsc("compute", "functions", "--node", url, env={"XSC_TOKEN": "t", "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    p50 = {line.split()[0]: line.split()[4] for line in shown.stdout.splitlines()[1:]}
    assert p50 == {"fast": "0.73", "slow": "12.50", "round": "3.00", "idle": "-"}, shown.stdout
    header, *rows = shown.stdout.splitlines()
    for column, at in (("requests", 2), ("errors", 3)):  # counts right-aligned under their heading, as figures are
        end = header.index(column) + len(column)
        assert all(row[:end].endswith(" " + row.split()[at]) for row in rows), shown.stdout


def test_health_status_keeps_availability_at_80_columns_with_the_id_and_url_whole_under_its_row(thread_node) -> None:
    a, b = thread_node("a", **QUIET), thread_node("b", **QUIET)
    b_id = json.loads(b.xsc("node", "status", "--json").stdout)["id"]
    assert a.xsc("peers", "add", b.url).exit_code == 0
    assert a.xsc("health", "probe").exit_code == 0
    [peer] = json.loads(a.xsc("health", "status", "--json").stdout)["peers"]
    for shown in (a.xsc("health", "status", env=NARROW), a.xsc("health", "status")):  # a terminal, and piped
        assert shown.exit_code == 0, shown.output
        _fits(shown.stdout)
        lines = shown.stdout.splitlines()
        assert lines[0].split()[:5] == ["state", "1", "h", "24", "h"] and "url" not in lines[0], shown.stdout
        assert re.match(r"up\s+100\.0% of \d+ probes?\s+100\.0% of \d+ probes?\s", lines[1]), shown.stdout
        under = [line.strip().rstrip(",") for line in lines[2:]]
        assert under[:2] == [f"id {b_id}", f"url {peer['url']}"], shown.stdout  # each whole, under its row
    wide = a.xsc("health", "status", "--wide").stdout.splitlines()
    assert wide[1].split()[0] == b_id and "url" in wide[0] and "latency" in wide[0], wide  # every column, however wide


def test_node_status_gives_the_web_functions_and_s3_listeners_urls_when_set(thread_node) -> None:
    web, s3 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    node = thread_node(node={"web_listen": web, "s3_listen": s3})
    shown = node.xsc("node", "status", env=NARROW)
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.stdout.splitlines()]
    assert ["web", "functions:", f"http://{web}"] in rows and ["S3:", f"http://{s3}"] in rows, shown.stdout
    status = json.loads(node.xsc("node", "status", "--json").stdout)
    assert status["listeners"] == {"web": f"http://{web}", "s3": f"http://{s3}"}
    plain = thread_node("plain")
    assert json.loads(plain.xsc("node", "status", "--json").stdout)["listeners"] == {"web": None, "s3": None}
    assert not {"web", "S3:"} & {line.split()[0] for line in plain.xsc("node", "status").stdout.splitlines()}


def _health_peer(up: bool, failed: int) -> dict:
    return {"id": public_id(os.urandom(32)), "url": "https://127.0.0.1:1", "ratio_1h": 1.0 if up else 0.5,
            "ratio_24h": 1.0 if up else 0.5, "probes_1h": 4, "probes_24h": 4, "latency_ms": 2.0,
            "consecutive_failures": failed, "up": up, "last_probe": None, "last_ok": None, "last_error": None,
            "last_audit": None, "up_since": None}


def test_health_status_says_its_last_round_probed_only_the_peers_due_when_it_did() -> None:
    """A scheduled round probes only the peers due (one down, less often): under a peer shown DOWN, "1 of 1
    answered" read as if every peer had answered."""
    status = {"peers": [_health_peer(True, 0), _health_peer(False, 2)], "probe_interval": 30.0,
              "last_round": {"time": int(time.time() * 1000), "seconds": 0.004, "peers": 1, "ok": 1}}
    with serving(json_answer(status)) as url:
        shown = xsc("health", "status", "--node", url, env={"XSC_TOKEN": "t", "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "DOWN (2 failed)" in shown.stdout, shown.stdout
    assert "last probe round: 1 of 2 peers probed (those due), 1 answered in 4.0 ms" in shown.stdout, shown.stdout
    status["last_round"] = {**status["last_round"], "peers": 2}  # a round of every peer (`xsc health probe`)
    with serving(json_answer(status)) as url:
        shown = xsc("health", "status", "--node", url, env={"XSC_TOKEN": "t", "COLUMNS": "200"})
    assert "last probe round: 2 of 2 peers probed, 1 answered in" in shown.stdout, shown.stdout


def test_ledger_history_gives_its_balance_in_credits_and_its_fuel_with_thousands_separators() -> None:
    with serving(json_answer(HISTORY)) as url:
        shown = xsc("ledger", "history", "--node", url, env={"XSC_TOKEN": "t", **NARROW})
    assert shown.exit_code == 0, shown.output
    _fits(shown.stdout)
    assert " ".join(shown.stdout.split()).startswith(f"account {'a' * 52} — balance 0.251231 credits seq "), shown.stdout
    assert "fuel 47,529,798" in " ".join(shown.stdout.split()), shown.stdout


def test_ledger_history_expanded_fits_80_columns_with_its_ids_whole() -> None:
    with serving(json_answer(EXPANDED)) as url:
        args = ("ledger", "history", "--expand", "--node", url)
        shown = [xsc(*args, env={"XSC_TOKEN": "t", **env}) for env in (NARROW, {})]  # a terminal, and piped
    for out in shown:
        assert out.exit_code == 0, out.output
        _fits(out.stdout)
        words = out.stdout.split()
        assert f"entry {'e' * 64} covers 1 invoke (provenance ids): {'c' * 32}" in " ".join(words), out.stdout


def test_ledger_history_fits_80_columns_when_piped_and_wide_shows_every_column() -> None:
    with serving(json_answer(HISTORY)) as url:
        args = ("ledger", "history", "--node", url)
        piped, wide = xsc(*args, env={"XSC_TOKEN": "t"}), xsc(*args, "--wide", env={"XSC_TOKEN": "t"})
    assert piped.exit_code == 0, piped.output
    _fits(piped.stdout)  # not a terminal: 80 columns, as market book and ledger trust
    under = [line.strip().rstrip(",") for line in piped.stdout.splitlines()]
    assert f"counterparty {'p' * 52}" in under and f"entry {'e' * 64}" in under, piped.stdout  # whole, under its row
    header = wide.stdout.splitlines()[1].split()
    assert header[:4] == ["seq", "settled", "(UTC)", "kind"] and "counterparty" in header and "entry" in header, wide
    assert any(len(line) > 80 for line in wide.stdout.splitlines()), wide.stdout  # in columns, however wide


# A storage deal's payment: its reference, `store:<storage index>:<share>:<from>:<to>`, is 94 characters.
DEAL = "store:" + "5" * 64 + ":0:1700000000:1700086400"
STORED = {"id": "e" * 64, "kind": "payment", "account": "a" * 52, "seq": 3, "prev": "f" * 64, "payer": "a" * 52,
          "payee": "p" * 52, "amount": 12, "cap": 20, "usage": {"bytes_days": 4096}, "job": DEAL,
          "settled_at": 1_700_000_000, "expires_at": 1_700_003_600, "authorization": "c" * 64, "receipt": "r" * 64,
          "receipt_seq": 7}


def test_ledger_show_breaks_a_storage_deals_reference_between_its_ids_under_its_label_at_80_columns() -> None:
    with serving(json_answer(STORED)) as url:
        args = ("ledger", "show", STORED["id"], "--node", url)
        narrow, piped = xsc(*args, env={"XSC_TOKEN": "t", **NARROW}), xsc(*args, env={"XSC_TOKEN": "t"})
    assert narrow.exit_code == 0 and piped.exit_code == 0, (narrow.output, piped.output)
    _fits(narrow.stdout)
    lines = narrow.stdout.splitlines()
    at = lines.index("job:")  # the label alone, the reference under it, broken after a colon, each id whole
    assert lines[at + 1:at + 3] == [f"  store:{'5' * 64}:0:", "  1700000000:1700086400"], narrow.stdout
    assert next(line for line in lines if line.startswith("entry:")).split() == ["entry:", "e" * 64], narrow.stdout
    # Not on a terminal each value keeps its one line, for a script's grep or awk.
    assert f"job:           {DEAL}" in piped.stdout.splitlines(), piped.stdout


def test_ledger_history_wraps_its_usage_between_items_never_inside_one() -> None:
    with serving(json_answer(USED)) as url:
        shown = xsc("ledger", "history", "--node", url, env={"XSC_TOKEN": "t", "COLUMNS": "60"})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("seq "))
    start = lines[header].index("usage")
    cells = [line[start:].split("  ")[0].strip() for line in lines[header + 1:]
             if not re.match(r" {4}\S| {6}\S", line)]  # not a line under the row (indented 4, its value's 6)
    # each line of the cell holds whole items: one or more, with the comma that ends all but the last
    used = [item for cell in cells for item in cell.rstrip(",").split(", ")]
    assert used == ["fuel 2,400,392", "invokes 1", "memory_pages 17"], shown.stdout
    assert len(cells) > 1, shown.stdout  # wrapped, between items


def test_market_recognition_gives_every_weight_in_one_form() -> None:
    with serving(json_answer(RECOGNITION)) as url:
        shown = xsc("market", "recognition", "--wide", "--node", url, env={"XSC_TOKEN": "t"})
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.stdout.splitlines()[1:]]
    assert [(r[1], r[3], r[-1]) for r in rows] == [("2", "1", "1.5"), ("0.3", "0.3", "0")], shown.stdout


def _lines_fit(text: str, width: int) -> None:
    """Every line is at most `width` columns, but a line that holds an id whole, alone or named by one word under
    its row (`    sha256 ID`, as a table puts one): an id is never cut, and one of 64 hex digits, indented under its
    label, is wider than 60 columns."""
    for line in text.splitlines():
        words = line.split()
        alone = len(words) == 1 or (line.startswith(" ") and len(words) == 2 and len(words[-1]) > 32)
        assert len(line) <= width or alone, f"{len(line)}: {line}\n{text}"


def test_status_views_fit_80_and_60_columns_with_each_id_whole_on_one_line(thread_node) -> None:
    node = thread_node(ledger={"tab_interval": 0.2})
    assert node.xsc("store", "put", "-", input=os.urandom(5000)).exit_code == 0
    assert node.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2").exit_code == 0
    job = json.loads(node.xsc("compute", "run", str(WASM / "wc.wasm"), "--json", input=b"a b\n").stdout)
    entry = eventually(lambda: next((e for e in json.loads(node.xsc("ledger", "history", "--json").stdout)
                                     if e["job"].startswith("compute:tab:")), None), "the calls' entry", 60)
    record = json.loads(node.xsc("compute", "provenance", "--list", "--json").stdout)[0]["record"]
    market = json.loads(node.xsc("market", "status", "--json").stdout)
    # A job reference too long for its line is broken after a colon, the ids between its colons whole.
    fields = [field for field in entry["job"].split(":") if len(field) > 12]
    ids = {market["node"], entry["id"], entry["payer"], entry["payee"], entry["authorization"], *fields,
           record["id"], record["module"], record["requester"], str(node.data_dir),  # (a path is not cut either)
           job["id"], job["module"], *(d["si"] for d in market["deals"])}
    views = (["node", "status"], ["market", "status"], ["market", "offer"], ["peers", "ls"], ["ledger", "balance"],
             ["ledger", "balance", "node"], ["ledger", "show", entry["id"]], ["ledger", "payments"],
             ["ledger", "verify"], ["compute", "provenance", record["id"]], ["compute", "module", record["module"]],
             ["compute", "job", job["id"]])
    for columns in (80, 60):
        for args in views:
            shown = node.xsc(*args, env={"COLUMNS": str(columns)})
            assert shown.exit_code == 0, (args, shown.output)
            _lines_fit(shown.stdout, columns)
            words = re.split(r"[\s,:]+", shown.stdout)
            assert all(i in words for i in ids if i[:12] in shown.stdout), (args, shown.stdout)  # each one whole
    lines = node.xsc("market", "status", env={"COLUMNS": "60"}).stdout.splitlines()
    at = lines.index("book digest:")  # the label alone, the id whole under it
    assert re.fullmatch("  [0-9a-f]{64}", lines[at + 1]), lines


def test_ledger_verify_says_each_count_in_the_singular_for_one() -> None:
    report = {"ok": True, "entries": 1, "accounts": 1, "signatures": 1, "seconds": 0.5, "balance_sum": 0,
              "open_transfers": 1, "violations": []}
    with serving(json_answer(report)) as url:
        shown = xsc("ledger", "verify", "--node", url, env={"XSC_TOKEN": "t", "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("checked 1 entry in 1 chain, 1 signature, in 0.50 s (2 entries/s); balances sum "
                                   "to 0.000000, 1 transfer with the other half held elsewhere\n"), shown.stdout


def test_ledger_payments_lists_open_tabs_apart_from_payments_waiting_for_their_node() -> None:
    """A tab in use (a placed web function's) is open, paid when it closes: not "retried until the node answers"."""
    owner, node = "a" * 52, "b" * 52
    tab = {"authorization": "1" * 64, "node": node, "job": f"compute:rtab:fn:{owner}:hello", "amount": 4_819_200,
           "cap": 4_819_200, "expires_at": 1_796_099_980, "live": True}
    waiting = {**tab, "authorization": "2" * 64, "job": "prepay", "amount": 5_000_000, "live": False}
    with serving(json_answer({"pending": [tab, waiting], "dropped": []})) as url:
        shown = xsc("ledger", "payments", "--node", url, env={"XSC_TOKEN": "t", "COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    opened, pending = text.index("open tabs (in use: paid when they close)"), text.index("pending (retried")
    assert opened < text.index("4.819200") < pending < text.index("5.000000"), text
    assert text.count(tab["job"]) == 1 and text.count("prepay") == 1, text
    with serving(json_answer({"pending": [tab], "dropped": []})) as url:
        shown = xsc("ledger", "payments", "--node", url, env={"XSC_TOKEN": "t"})
    assert "open tabs" in shown.stdout and "pending" not in shown.stdout, shown.stdout


def test_compute_and_market_tables_piped_fit_80_columns_with_each_id_whole(thread_node) -> None:
    """Piped (to a pager, a file: no terminal, no COLUMNS), every compute and market table fits 80 columns, each id
    whole on a line (under its row when it does not fit beside the figures), as the ledger's tables do."""
    node = thread_node(node={"web_listen": f"127.0.0.1:{free_port()}"})
    caps = [node.xsc("store", "put", "-", input=body).stdout.split()[0] for body in (b"one\n", b"two\n")]
    mapped = node.xsc("compute", "map", str(WASM / "sha256.wasm"), *(a for cap in caps for a in ("--over", cap)))
    assert mapped.exit_code == 0, mapped.output
    job = json.loads(node.xsc("compute", "run", str(WASM / "wc.wasm"), "--json", input=b"a b\n").stdout)
    assert node.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2").exit_code == 0
    assert node.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm")).exit_code == 0
    maps = json.loads(node.xsc("compute", "maps", "--json").stdout)["maps"]
    record = json.loads(node.xsc("compute", "provenance", "--list", "--json").stdout)[0]["record"]
    ids = {maps[0]["id"], maps[0]["module"], job["module"], record["id"], record["module"]}
    # (`compute jobs` piped is one line a job, its id first, on purpose: tests/compute/test_jobs_list.py)
    views = (["compute", "maps"], ["compute", "modules"], ["compute", "provenance", "--list"],
             ["compute", "functions"], ["compute", "functions", "--hosted"], ["market", "book"], ["market", "offer"],
             ["market", "status"], ["market", "prices"], ["market", "recognition"])
    for args in views:
        shown = node.xsc(*args)
        assert shown.exit_code == 0, (args, shown.output)
        _lines_fit(shown.stdout, 80)
        words = [w.rstrip(",") for w in shown.stdout.split()]
        assert all(i in words for i in ids if i[:12] in shown.stdout), (args, shown.stdout)  # each one whole
    assert maps[0]["id"] in node.xsc("compute", "maps").stdout.split()


def test_the_lines_under_a_table_wrap_between_words_at_60_columns(thread_node) -> None:
    """What a line under a table says (what `available` is made of, the last probe round) is wrapped between words
    to the terminal, and to 80 columns when piped, as the table is fitted, nothing of it lost."""
    a, b = thread_node("a", **QUIET), thread_node("b", **QUIET)
    peer = public_id(os.urandom(32))
    receipt_of = Authorization(os.urandom(32), os.urandom(32), 12_500_000, os.urandom(16), int(time.time()) + 600, "t")
    a.app[NODE].trust.paid(peer, receipt_of, 12_500_000)  # a trust line: `ledger trust` has a table and its footer
    assert a.xsc("peers", "add", b.url).exit_code == 0
    assert a.xsc("health", "probe").exit_code == 0  # a probe round: `health status` says it under its table
    for args, footer in ((["ledger", "trust"], "available = counted + credit - used - reserved (reserved: work under "
                                                "way)"),
                         (["health", "status"], "last probe round: 1 of 1 peer probed, 1 answered in")):
        for columns in (60, None):
            shown = a.xsc(*args, env={"COLUMNS": str(columns)} if columns else None)
            assert shown.exit_code == 0, shown.output
            lines = shown.stdout.splitlines()
            under = lines[next(n for n, line in enumerate(lines) if line.startswith(footer[:12])):]
            assert footer in " ".join(under) and len(under) > (columns == 60), (args, shown.stdout)
            assert all(len(line) <= (columns or 80) for line in under), (args, shown.stdout)
