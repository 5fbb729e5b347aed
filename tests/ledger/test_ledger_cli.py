"""`xsc ledger ...` against a node (the click app run in this process), and without one."""

from __future__ import annotations

import json

import plyvel

from tests.support.nodes import run_xsc
from tests.support.ledger import transfer
from xsc import keys
from xsc.client.sync import NodeClient
from xsc.identity import CLIENT_KEY_FILE, NODE_KEY_FILE, Identity, write_secret
from xsc.ledger.core.model import format_credits
from xsc.ledger.core.rules import AccountState


def _settle_through_the_api(proc, amounts):
    """Transfers from the node's local user to the node, signed with their keys, posted as entries."""
    client = Identity.load_or_create(proc.data_dir / CLIENT_KEY_FILE)
    me = Identity.load_or_create(proc.data_dir / NODE_KEY_FILE)
    api = NodeClient(proc.url, proc.token)
    payer, payee, ids = AccountState(), AccountState(), []
    for amount in amounts:
        receipt, payment = transfer(client, me, amount, payer, payee, job=f"store:{amount}")
        api.request("POST", "/v1/ledger/entries", json_body={"entries": [receipt.encode().hex(),
                                                                         payment.encode().hex()]})
        payer, payee = payer.after(payment), payee.after(receipt)
        ids.append(payment.id.hex())
    return client, me, ids


def _ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_ledger_commands(cli_node):
    proc = cli_node()
    assert "0.000000 credits" in _ok(proc.xsc("ledger", "balance"))
    # a provider's user sees where its node's earnings are
    assert "(what this node earned: xsc ledger history node)" in _ok(proc.xsc("ledger", "history"))
    empty = _ok(proc.xsc("ledger", "history", env={"COLUMNS": "80"}))  # the account's id whole, wrapped between words
    assert all(len(line) <= 80 for line in empty.splitlines()) and "(what this node earned:" in empty, empty
    assert "`node` (this node's account" in _ok(proc.xsc("ledger", "balance", "--help"))
    client, me, ids = _settle_through_the_api(proc, [1_250_000, 2_000_000, 5])

    out = _ok(proc.xsc("ledger", "balance"))
    assert "-3.250005 credits" in out and client.id in out and "96.749995 credits" in out
    info = json.loads(_ok(proc.xsc("ledger", "balance", "node", "--json")))
    assert info["balance"] == 3_250_005 and info["account"] == me.id
    assert json.loads(_ok(proc.xsc("ledger", "balance", me.id, "--json")))["role"] == "node"

    out = _ok(proc.xsc("ledger", "history", "--limit", "2", env={"COLUMNS": "80"}))
    assert "-0.000005" in out and "-2.000000" in out and "-1.250000" not in out
    # ids are copied into the next command: whole, each on a line under its row when the table cannot hold it
    assert f"entry {ids[2]}" in out and f"entry {ids[1]}" in out and client.id in out, out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    history = json.loads(_ok(proc.xsc("ledger", "history", "--json")))
    assert [e["id"] for e in history] == ids[::-1]

    out = _ok(proc.xsc("ledger", "show", ids[0][:12]))
    assert ids[0] in out and "1.250000 credits" in out and "store:1250000" in out
    assert json.loads(_ok(proc.xsc("ledger", "show", ids[0], "--json")))["payee"] == me.id

    lines = [json.loads(line) for line in _ok(proc.xsc("ledger", "export")).splitlines()]
    assert len(lines) == 6 and {e["id"] for e in lines} >= set(ids)
    assert len(json.loads(_ok(proc.xsc("ledger", "export", "--json")))) == 6

    out = _ok(proc.xsc("ledger", "accounts"))
    assert client.id in out and me.id in out and "-3.250005" in out
    assert {a["role"] for a in json.loads(_ok(proc.xsc("ledger", "accounts", "--json")))} == {"client", "node"}

    said = " ".join(_ok(proc.xsc("ledger", "verify")).split())
    report = json.loads(_ok(proc.xsc("ledger", "verify", "--json")))
    assert report["ok"] is True and "ledger ok" in said, said
    n = report["open_transfers"]
    assert f" {n} transfer{'' if n == 1 else 's'} with the other half held elsewhere" in said, said

    bad = proc.xsc("ledger", "show", "0000000000")
    assert bad.returncode == 1 and bad.stderr.decode().startswith("xsc: error: no ledger entry")
    bad = proc.xsc("ledger", "balance", "someone")
    assert bad.returncode == 1 and "no known account starts with someone" in bad.stderr.decode()

    # tamper with one stored byte while the node is down: verify names the entry and exits non-zero
    proc.stop()
    db = plyvel.DB(str(proc.data_dir / "db"))
    key = keys.ledger_entry(client.public_key, 2)
    data = bytearray(db.get(key))
    data[-70] ^= 0x40
    db.put(key, bytes(data))
    db.close()
    proc.start()
    result = proc.xsc("ledger", "verify")
    assert result.returncode == 1
    assert f"entry {ids[1]}" in result.stdout.decode() and f"{client.id} seq 2" in result.stdout.decode()
    assert "ledger verification failed: 1 violation" in result.stderr.decode()
    result = proc.xsc("ledger", "verify", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["ok"] is False


def _two_keys_whose_ids_start_alike(digits: int) -> tuple[Identity, Identity]:
    seen: dict[str, Identity] = {}
    while True:
        key = Identity.generate()
        if key.id[:digits] in seen:
            return seen[key.id[:digits]], key
        seen[key.id[:digits]] = key


def test_ledger_balance_takes_a_prefix_of_an_account_id_as_show_takes_one_of_an_entry_id(cli_node, tmp_path):
    node_key, client_key = _two_keys_whose_ids_start_alike(4)
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o700)
    write_secret(data_dir / NODE_KEY_FILE, node_key.private_key().private_bytes_raw())
    write_secret(data_dir / CLIENT_KEY_FILE, client_key.private_key().private_bytes_raw())
    proc = cli_node()

    info = json.loads(_ok(proc.xsc("ledger", "balance", node_key.id[:12], "--json")))
    assert info["account"] == node_key.id and info["role"] == "node"
    assert json.loads(_ok(proc.xsc("ledger", "history", "--account", client_key.id[:12], "--json"))) == []

    both = proc.xsc("ledger", "balance", node_key.id[:4])
    assert both.returncode == 1 and both.stderr.decode().splitlines() == [
        f"xsc: error: 2 known accounts start with {node_key.id[:4]}: "
        + ", ".join(sorted(k.id[:10] + "…" for k in (node_key, client_key))) + " (give more of the id)"]

    unknown = next(p for p in ("aaaaa", "bbbbb") if not any(k.id.startswith(p) for k in (node_key, client_key)))
    gone = proc.xsc("ledger", "balance", unknown)
    assert gone.returncode == 1 and gone.stderr.decode().splitlines() == [
        f"xsc: error: no known account starts with {unknown} (see them with: xsc ledger accounts)"]


def test_ledger_without_a_node(tmp_path):
    result = run_xsc("--data-dir", str(tmp_path / "none"), "ledger", "balance")
    assert result.returncode == 1 and "xsc: error:" in result.stderr.decode()
    assert run_xsc("ledger", "--help").returncode == 0


def test_an_s3_users_account_is_named_by_its_user(cli_node):
    proc = cli_node()
    _ok(proc.xsc("s3", "keys", "create", "--user", "ana"))
    _ok(proc.xsc("s3", "fund", "ana", "1"))
    [ana] = [u["account"] for u in json.loads(_ok(proc.xsc("s3", "users", "--json"))) if u["user"] == "ana"]
    roles = {a["account"]: a["role"] for a in json.loads(_ok(proc.xsc("ledger", "accounts", "--json")))}
    assert roles[ana] == "s3 user ana" and sorted(roles.values()) == ["client", "node", "s3 user ana"], roles
    rows = _ok(proc.xsc("ledger", "accounts")).splitlines()  # piped: 80 columns, each account under its row
    at = rows.index(f"    account {ana}")
    assert rows[at - 1].split()[:3] == ["s3", "user", "ana"], rows
    # One account's view names it the same way, by its id or a prefix of it.
    assert json.loads(_ok(proc.xsc("ledger", "balance", ana[:8], "--json")))["role"] == "s3 user ana"
    assert f"account:      {ana} (s3 user ana)" in _ok(proc.xsc("ledger", "balance", ana)).splitlines()


def test_ledger_balance_shows_what_the_leases_of_puts_promise_and_keeps_it_out_of_available(cli_node):
    proc = cli_node()
    _ok(proc.xsc("store", "put", "-", "--duration", str(3650 * 86400), input=b"p" * 100_000))
    info = json.loads(_ok(proc.xsc("ledger", "balance", "--json")))
    assert info.get("promised", 0) > 0, info
    assert info["available"] == info["balance"] + info["credit_limit"] - info["promised"], info
    out = _ok(proc.xsc("ledger", "balance", env={"COLUMNS": "80"}))
    promised = [line for line in out.splitlines() if line.startswith("promised:")]
    assert promised and format_credits(info["promised"]) in promised[0], out
    assert f"{format_credits(info['available'])} credits" in out and all(len(line) <= 80 for line in out.splitlines())
    [listed] = [a for a in json.loads(_ok(proc.xsc("ledger", "accounts", "--json"))) if a["role"] == "client"]
    assert (listed["promised"], listed["available"]) == (info["promised"], info["available"]), (listed, info)


def test_verify_says_a_balance_below_a_lowered_credit_limit_is_the_limit_not_corruption(cli_node):
    """Verify holds the whole history to the limit configured now: entries made under a higher one fail it once
    `ledger.credit_limit` is lowered, and the error says so and how to clear it, not that they are forged."""
    proc = cli_node()
    client, _, ids = _settle_through_the_api(proc, [2_000_000])
    proc.stop()
    proc = cli_node("node", ledger={"credit_limit": 1_000_000})
    result = proc.xsc("ledger", "verify")
    said = " ".join(result.stderr.decode().split())
    assert result.returncode == 1, said
    assert f"entry {ids[0]}" in result.stdout.decode() and "below the credit limit -1.000000" in result.stdout.decode()
    assert "ledger verification failed: 1 violation" in said and "corrupt" not in said, said
    assert "each is a balance below the credit limit configured now (1.000000 credits, ledger.credit_limit)" in said
    assert "xsc config set ledger.credit_limit MICRO_CREDITS" in said, said
    report = json.loads(proc.xsc("ledger", "verify", "--json").stdout)
    assert [v["code"] for v in report["violations"]] == ["below-credit-limit"], report
    proc.stop()
    proc = cli_node("node", ledger={"credit_limit": 2_000_000})
    assert "ledger ok" in _ok(proc.xsc("ledger", "verify"))
