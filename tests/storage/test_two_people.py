"""Two and three people, each with a node of their own (real processes, own data dirs): a put is never less safe
than keeping the file at home."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.support.cli import TextNode
from tests.support.peers import api
from tests.support.waiting import eventually
from tests.support.s3 import FrontProcess, boto3_client, create_key
from tests.support.people import TRUSTING, join, person, put, started  # noqa: F401 (a fixture)
from xsc.errors import InvalidArgument
from xsc.node.appkeys import NODE
from xsc.storage import remote
from xsc.storage.core.capability import Capability


def why_home(node) -> list[str]:
    """The node's log lines saying why a put kept shares it meant to place away."""
    return [line for line in node.log.read_text(errors="replace").splitlines()
            if "stay here" in line or "terms" in line or "prepay" in line]


def test_on_two_nodes_every_put_survives_the_loss_of_the_peer(tmp_path, started) -> None:
    a, id_a = person(tmp_path, "A", started, env=TRUSTING)
    b, id_b = person(tmp_path, "B", started, peer=a, env=TRUSTING)
    join(a, b, [id_b])
    data = [os.urandom(50_000 + i) for i in range(4)]
    results = [put(a, d) for d in data]
    for r in results:
        assert r["placement"].count(id_a) == 4 and r["placement"].count(id_b) == 2, (r["placement"], why_home(a))
        assert r["peer_failures_survived"] == 1
        assert r["node_failures_survived"] >= 0  # all at home: 0 (the loss of this node loses any file)
        assert "survives the loss of the other node" in r["placement_note"]
    spread = put(a, data[0], "--spread")  # the user asks otherwise: the market places all six
    assert spread["placement"].count(id_b) >= 3
    # All six on the one peer: A sends no more segment bodies to B at once than B takes from one sender.
    far = os.urandom(3_000_000)
    away = put(a, far, "--avoid", id_a)
    assert away["placement"] == [id_b] * 6, away["placement"]
    got = a.xsc("store", "get", away["capability"], "-o", str(tmp_path / "far"))
    assert got.returncode == 0 and (tmp_path / "far").read_bytes() == far, got.stderr.decode()
    b.kill()
    for r, d in zip(results, data):
        out = tmp_path / "out"
        got = a.xsc("store", "get", r["capability"], "-o", str(out), "--force")
        assert got.returncode == 0, got.stderr.decode()
        assert out.read_bytes() == d


def test_on_three_nodes_the_put_says_the_losses_it_survives(tmp_path, started) -> None:
    a, id_a = person(tmp_path, "A", started, env=TRUSTING)
    b, id_b = person(tmp_path, "B", started, peer=a, env=TRUSTING)
    c, id_c = person(tmp_path, "C", started, peer=a, env=TRUSTING)
    join(a, b, [id_b, id_c])
    for i in range(3):
        r = put(a, os.urandom(40_000 + i))
        assert r["placement"].count(id_a) == 4 and set(r["placement"]) == {id_a, id_b, id_c}, r["placement"]
        assert r["peer_failures_survived"] == 2  # both others
        assert r["node_failures_survived"] >= 0
        assert "survives the loss of any of them" in r["placement_note"]


def line_of(node, peer: str) -> dict:
    status, body = api(node, "GET", "/v1/ledger/trust")
    assert status == 200, body
    return next((line for line in body["lines"] if line["peer"] == peer), {"paid": 0, "used": 0})


def test_a_stranger_joining_never_breaks_puts_and_auto_prepay_stays_within_its_cap(tmp_path, started) -> None:
    a, id_a = person(tmp_path, "A", started)
    assert put(a, os.urandom(30_000))["placement"] == [id_a] * 6  # A stores alone
    b, id_b = person(tmp_path, "B", started, peer=a)  # B joins: a stranger, extending A no credit
    join(a, b, [id_b])
    key = create_key(a.data_dir)
    front = FrontProcess(a.data_dir).start()
    try:
        s3 = boto3_client(front.url, key)
        s3.create_bucket(Bucket="photos")
        for i in range(20):
            r = put(a, os.urandom(20_000 + i))
            assert r["placement"] == [id_a] * 6  # B wants prepayment: all stay home, and the put says why
            assert r["kept_home"].startswith(f"node {id_b} wants prepayment for this put"), r
            assert r["kept_home"].endswith(f"(ask for credit, or if it owes you: "
                                           f"xsc ledger prepay {id_b} {r['kept_home'].split('(')[1].split()[0]})"), r
            s3.put_object(Bucket="photos", Key=f"p{i}", Body=os.urandom(10_000 + i))
        assert s3.get_object(Bucket="photos", Key="p7")["ContentLength"] == 10_007
    finally:
        front.stop()
    done = a.xsc("store", "put", str(tmp_path / "A.log"))
    said = " ".join(done.stderr.decode().split())
    assert done.returncode == 0 and f"the shares meant for other nodes stay on this one: node {id_b} wants " \
        "prepayment for this put" in said, said
    spread = put(a, os.urandom(30_000), "--spread")  # all six to the market: B left out, and the put says why
    assert spread["placement"] == [id_a] * 6, spread
    assert spread["kept_home"].startswith(f"node {id_b} wants prepayment for this put"), spread
    assert line_of(b, id_a)["used"] == 0  # nothing was sent to B: it was never asked to refuse

    # B's user recognises A with a small credit line: A's puts go to B within it, then A prepays B by itself (B takes
    # a prepayment out of what it can collect from A: the work it did for it), never past A's cap.
    assert b.xsc("market", "recognize", id_a, "1", "--credit", "0.00004").returncode == 0
    cap = 100  # micro-credits A may prepay B by itself, in all (a put's two shares on B cost ~20)
    a.stop()
    a.env.update({"XSC_LEDGER_AUTO_PREPAY": "true", "XSC_LEDGER_AUTO_PREPAY_PEER": str(cap)})
    a.start(90)
    join(a, b, [id_b])
    results = [put(a, os.urandom(20_000 + i)) for i in range(20)]
    on_b = [r for r in results if id_b in r["placement"]]
    prepaid = sum(r["prepaid"].get(id_b, 0) for r in results)
    assert on_b and all(r["placement"].count(id_a) == 4 for r in on_b)  # to B as well, four kept home
    assert 0 < prepaid <= cap  # A prepaid by itself, never past the cap
    assert any(r["prepaid"] for r in results[1:])  # and said so in the put's answer
    assert results[-1]["placement"] == [id_a] * 6  # the budget spent: home again, and the put still succeeds
    done = a.xsc("store", "put", str(tmp_path / "A.log"))
    assert done.returncode == 0 and "prepaid" not in done.stderr.decode()


def test_when_only_strangers_could_take_a_put_the_refusal_is_one_line_with_the_command(tmp_path, started) -> None:
    a, id_a = person(tmp_path, "A", started, env={"XSC_MARKET_OFFER_STORAGE": "false"})  # A keeps nothing at home
    b, id_b = person(tmp_path, "B", started, peer=a)
    c, id_c = person(tmp_path, "C", started, peer=a)
    join(a, b, [id_b, id_c])
    path = tmp_path / "f"
    path.write_bytes(os.urandom(30_000))
    refused = a.xsc("store", "put", str(path))
    lines = refused.stderr.decode().strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1 and len(lines[0]) < 200, lines
    assert "2 providers want prepayment" in lines[0], lines
    command = lines[0][lines[0].index("xsc ledger prepay"):].split(",")[0].split()
    assert command[:3] == ["xsc", "ledger", "prepay"] and command[3] in (id_b, id_c), lines
    for provider in (b, c):  # the other way out it names: their users recognise A
        assert provider.xsc("market", "recognize", id_a, "1").returncode == 0
    done = eventually(lambda: (r := a.xsc("store", "put", str(path), "--json")).returncode == 0 and r,
                      "A to learn B's and C's new terms")
    assert set(json.loads(done.stdout)["placement"]) == {id_b, id_c}


def shares_by_node(report: dict) -> dict[int, str]:
    return {s["share"]: s.get("node") for s in report["shares"]}


def test_a_capability_works_from_any_node(tmp_path, started) -> None:
    a, id_a = person(tmp_path, "A", started, env=TRUSTING)
    b, id_b = person(tmp_path, "B", started, peer=a, env=TRUSTING)
    c, id_c = person(tmp_path, "C", started, peer=a, env=TRUSTING)
    join(b, a, [id_a, id_c])
    join(a, b, [id_b, id_c])
    elsewhere, spread = os.urandom(150_000), os.urandom(120_000)
    away = put(b, elsewhere, "--spread", "--avoid", id_a)  # A holds none of it
    assert id_a not in away["placement"]
    cap = put(b, spread, "--spread")["capability"]  # two shares on each of A, B and C
    out = tmp_path / "out"
    got = a.xsc("store", "get", away["capability"], "-o", str(out))  # B handed A the capability
    assert got.returncode == 0, got.stderr.decode()
    assert out.read_bytes() == elsewhere
    c.kill()  # one of B's holders is down: A reads from its own shares and B's
    got = a.xsc("store", "get", cap, "-o", str(out), "--force")
    assert got.returncode == 0, got.stderr.decode()
    assert out.read_bytes() == spread
    for command in ("check", "verify"):
        done = a.xsc("store", command, cap, "--json")
        report = json.loads(done.stdout)
        where = shares_by_node(report)
        assert sorted(where.values()) == sorted([id_a, id_a, id_b, id_b, id_c, id_c]), report  # each share's node
        assert report["intact"] == 4 and report["recoverable"], report  # C's two are unreachable
        assert all(s["node_up"] is False for s in report["shares"] if s["node"] == id_c)  # never "up" and unreachable
    table = a.xsc("store", "check", cap, env={"COLUMNS": "60"}).stdout.decode()
    assert id_b in table and id_c in table  # ids whole, at any width
    # A repairs B's file, at its own expense: C's two shares go to D, under deals of A's.
    d, id_d = person(tmp_path, "D", started, peer=a, env=TRUSTING)
    join(a, d, [id_d])
    done = a.xsc("store", "repair", cap, "--json")
    assert done.returncode == 0, done.stderr.decode()
    repaired = json.loads(done.stdout)
    moved = [s for s, node in shares_by_node(report).items() if node == id_c]
    assert sorted(repaired["repaired"]) == sorted(moved) and repaired["intact"] == 6, repaired
    # One share a node: one goes to D, the other is rebuilt on A (B and A hold two already)
    assert sorted(repaired["placement"][s] for s in moved) == sorted([id_a, id_d]), repaired
    after = json.loads(a.xsc("store", "check", cap, "--json").stdout)
    assert after["intact"] == 6 and {shares_by_node(after)[s] for s in moved} == {id_a, id_d}, after
    status, deals = api(a, "GET", f"/v1/market/status?file={Capability.parse(cap).storage_index.hex()}")
    to_d = [s for s in moved if repaired["placement"][s] == id_d]
    assert status == 200 and [(x["share"], x["node"]) for x in deals["deals"]] == [(to_d[0], id_d)], deals
    got = b.xsc("store", "get", cap, "-o", str(out), "--force")  # B, who placed it, still reads it
    assert got.returncode == 0 and out.read_bytes() == spread, got.stderr.decode()


def test_a_peer_that_quarantined_this_node_gets_no_shares_and_the_put_says_why(cli_node, tmp_path, monkeypatch) -> None:
    """A peer that refuses this node outright (its quarantine) is found out as its terms are asked and left out of
    the put's placement, and of the next puts' (each asked it again, sent it its shares and was refused again);
    the shares stay at home and the put says why."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}, "storage": {"segment_size": 65536}}
    a, b = TextNode(cli_node("a", **quiet)), TextNode(cli_node("b", **quiet))
    id_a, id_b = (json.loads(n.xsc("node", "status", "--json").stdout)["id"] for n in (a, b))
    assert a.xsc("peers", "add", b.url).exit_code == 0
    eventually(lambda: any(o["owner"] == id_b for k in json.loads(a.xsc("market", "book", "--json").stdout)["books"]
                           for o in k["asks"]), "B's offer in A's book", 30)

    async def wrong(*args, **kwargs):
        raise InvalidArgument("lease_expiry must be a whole number")

    # A refusal that says the request itself was wrong fails the put, naming the node.
    with monkeypatch.context() as patched:
        patched.setattr(b.app[NODE].share_holder, "begin_upload", wrong)
        patched.setattr(b.app[NODE].share_holder, "place_whole", wrong)
        for size in (20_000, 300_000):
            (tmp_path / "f").write_bytes(os.urandom(size))
            done = a.xsc("store", "put", str(tmp_path / "f"))
            assert done.exit_code != 0 and f"node {id_b} refused shares 4, 5 (invalid-argument)" in done.stderr, \
                done.output
    asked: list[str] = []  # what A asked of B for a put from here on
    admission = b.app[NODE].admission
    check_request = admission.check_request

    def counted(signed, headers):
        if signed.sender == id_a and signed.target.startswith(("/v1/peer/terms", "/v1/peer/shares")):
            asked.append(signed.target)
        return check_request(signed, headers)

    monkeypatch.setattr(admission, "check_request", counted)
    admission.quarantine.put(id_a, "failed 5 audits")  # B's standing decision: A's shares go nowhere
    for size in (20_000, 300_000, 20_000):  # one segment (its shares placed whole), and several (begun, then sent)
        data = os.urandom(size)
        (tmp_path / "f").write_bytes(data)
        done = a.xsc("store", "put", str(tmp_path / "f"), "--json")
        assert done.exit_code == 0, done.output
        r = json.loads(done.stdout)
        assert r["placement"] == [id_a] * 6, r  # kept at home, and the put says why
        assert r["kept_home"].startswith(f"node {id_b} refuses this node (quarantined)"), r
        assert "xsc peers quarantine rm" in r["kept_home"], r
        got = a.xsc("store", "get", r["capability"], "-o", str(tmp_path / "out"), "--force")
        assert got.exit_code == 0 and (tmp_path / "out").read_bytes() == data, got.output
        check = json.loads(a.xsc("store", "check", r["capability"], "--json").stdout)
        assert check["intact"] == 6 and check["healthy"], check
    said = " ".join(a.xsc("store", "put", str(tmp_path / "f")).stderr.split())
    assert "the shares meant for other nodes stay on this one: node" in said and "(quarantined)" in said, said
    assert len(asked) == 1 and asked[0].startswith("/v1/peer/terms"), asked  # asked once, then left out


def test_a_repair_leaves_out_a_peer_that_refused_this_node_outright(cli_node, tmp_path, monkeypatch) -> None:
    """A repaired share goes past a peer that quarantined this node as a put's share does: the first repair that
    offers it a share is refused and places it elsewhere, and no repair asks it again while the refusal stands."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}, "storage": {"segment_size": 65536}}
    a, b, c = (TextNode(cli_node(name, **quiet)) for name in "abc")
    id_a, id_b, id_c = (json.loads(n.xsc("node", "status", "--json").stdout)["id"] for n in (a, b, c))

    def joined(peer, id_peer) -> None:
        assert a.xsc("peers", "add", peer.url).exit_code == 0
        eventually(lambda: any(o["owner"] == id_peer for k in json.loads(a.xsc("market", "book", "--json").stdout)
                               ["books"] for o in k["asks"]), "the peer's offer in A's book", 30)

    joined(c, id_c)
    files = []
    for _ in range(2):  # two files with shares on C, none on B (not known yet: a put's --avoid binds its repairs)
        (tmp_path / "f").write_bytes(os.urandom(20_000))
        done = a.xsc("store", "put", str(tmp_path / "f"), "--json")
        r = json.loads(done.stdout)
        assert done.exit_code == 0 and id_c in r["placement"] and id_b not in r["placement"], done.output
        files.append(r)
    joined(b, id_b)
    asked: list[list[str]] = []  # the shares A offered B, by repair
    admission = b.app[NODE].admission
    check_request = admission.check_request

    def counted(signed, headers):
        if signed.sender == id_a and signed.target.startswith("/v1/peer/shares") and asked:
            asked[-1].append(signed.target)
        return check_request(signed, headers)

    monkeypatch.setattr(admission, "check_request", counted)
    admission.quarantine.put(id_a, "failed 5 audits")
    for r in files:  # C lost its shares of both: each repair places them again, B the only other peer
        si = Capability.parse(r["capability"]).storage_index
        for share in (s for s, node in enumerate(r["placement"]) if node == id_c):
            assert c.app[NODE].store.delete_share(si, share)
        asked.append([])
        done = a.xsc("store", "repair", r["capability"], "--json")
        assert done.exit_code == 0, done.output
        repaired = json.loads(done.stdout)
        assert repaired["intact"] == 6 and id_b not in repaired["placement"], repaired
    assert asked[0] and not asked[1], asked  # B asked by the first repair only


def test_a_repair_of_another_nodes_file_cut_short_leaves_no_copy_held_for_nothing(cli_node, tmp_path,
                                                                                  monkeypatch) -> None:
    """A repairs B's file (it was handed the capability) and its process ends just as it writes the new placement:
    once A is up again, each copy the repair put on D is under a deal of A's, or given back."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}, "storage": {"segment_size": 65536}}
    a = TextNode(cli_node("a", **quiet, market={"offer_storage": False}))
    b, c, d = (TextNode(cli_node(name, **quiet)) for name in "bcd")
    id_b, id_c, id_d = (json.loads(n.xsc("node", "status", "--json").stdout)["id"] for n in (b, c, d))

    def knows(node, peer, id_peer) -> None:
        assert node.xsc("peers", "add", peer.url).exit_code == 0
        eventually(lambda: any(o["owner"] == id_peer for k in json.loads(node.xsc("market", "book", "--json").stdout)
                               ["books"] for o in k["asks"]), "the peer's offer in the book", 30)

    knows(b, c, id_c)
    (tmp_path / "f").write_bytes(os.urandom(20_000))
    done = b.xsc("store", "put", str(tmp_path / "f"), "--spread", "--json")
    assert done.exit_code == 0, done.output
    put_ = json.loads(done.stdout)
    lost = [s for s, node in enumerate(put_["placement"]) if node == id_c][:1]  # a share of C's lost
    cap, si = put_["capability"], Capability.parse(put_["capability"]).storage_index
    for peer, id_peer in ((b, id_b), (c, id_c), (d, id_d)):  # D joins after the put: the spare for C's shares
        knows(a, peer, id_peer)
    for share in lost:
        assert c.app[NODE].store.delete_share(si, share)

    class Crash(Exception):
        """A's process ending there: nothing after it runs, nothing is undone."""

    store = a.app[NODE].store
    set_placement = store.set_placement

    def placed_then_killed(*args, **kwargs):
        set_placement(*args, **kwargs)
        raise Crash()

    async def no_undo(self) -> None:
        pass

    with monkeypatch.context() as patched:
        patched.setattr(store, "set_placement", placed_then_killed)
        patched.setattr(remote.RemoteShareWriter, "undo", no_undo)
        cut = a.xsc("store", "repair", cap)
        assert cut.exit_code != 0, cut.output
    assert {m.share for m in d.app[NODE].store.share_metas(si)} == set(lost), cut.output  # committed on D
    a.stop()
    a.start()
    done = a.xsc("store", "repair", cap, "--json")  # what the crash left, settled first
    assert done.exit_code == 0 and json.loads(done.stdout)["intact"] == 6, done.output
    on_d = {m.share for m in d.app[NODE].store.share_metas(si)}
    deals = a.app[NODE].deals.of_file_view(si)["deals"]
    paid = {x["share"] for x in deals if x["node"] == id_d and not x.get("ended")}
    assert on_d == paid, (on_d, deals)


def test_a_share_lost_by_a_gateway_that_offers_no_storage_is_rebuilt_on_a_provider_at_once(cli_node, tmp_path,
                                                                                          monkeypatch) -> None:
    """A's put, all six shares on B, C and D (A offers no storage), one of B's failed mid-put by a fault of B's: the
    put goes on without it, and its repair starts as the put answers (the repair watch here waits an hour) and
    places it on a provider, not on A, which keeps no share."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}, "storage": {"segment_size": 65536},
             "audit": {"interval": 3600}}
    a = TextNode(cli_node("a", **quiet, market={"offer_storage": False}))
    holders = [TextNode(cli_node(name, **quiet)) for name in "bcd"]
    id_a, id_b = (json.loads(n.xsc("node", "status", "--json").stdout)["id"] for n in (a, holders[0]))
    for peer in holders:
        id_peer = json.loads(peer.xsc("node", "status", "--json").stdout)["id"]
        assert a.xsc("peers", "add", peer.url).exit_code == 0
        eventually(lambda: any(o["owner"] == id_peer for k in json.loads(a.xsc("market", "book", "--json").stdout)
                               ["books"] for o in k["asks"]), "the peer's offer in the book", 30)
    share_holder = holders[0].app[NODE].share_holder
    failed: list = []

    def failing(real):
        async def fail_one(incoming, *args, **kwargs):
            if not failed or failed[0] is incoming:  # one upload of B's fails, as a fault of its own would
                failed[:1] = [incoming]
                raise RuntimeError("a fault of B's")
            return await real(incoming, *args, **kwargs)
        return fail_one

    monkeypatch.setattr(share_holder, "put", failing(share_holder.put))
    monkeypatch.setattr(share_holder, "put_last", failing(share_holder.put_last))
    data = os.urandom(300_000)  # 5 segments
    (tmp_path / "f").write_bytes(data)
    done = a.xsc("store", "put", str(tmp_path / "f"), "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert f"node {id_b} failed share" in result["lost"] and result["lost"].endswith("on another node"), result
    lost = next(s for s, node in enumerate(result["placement"]) if node == id_a)

    def checked() -> dict:
        return json.loads(a.xsc("store", "check", result["capability"], "--json").stdout)

    eventually(lambda: checked()["healthy"], "the repair of the share lost", 30)
    assert id_a not in [share["node"] for share in checked()["shares"]]
    assert a.node.xsc("store", "get", result["capability"]).stdout == data
    assert all(deal["node"] != id_a for deal in a.app[NODE].deals.of_file_view(
        Capability.parse(result["capability"]).storage_index)["deals"] if not deal.get("ended")), lost


async def test_a_put_as_its_peer_dies_keeps_the_peers_shares_at_home_rather_than_fail(node_factory,
                                                                                      monkeypatch) -> None:
    """The peer is gone and this node's probes have not told it yet (the market still offers the peer's room): the
    shares meant for the peer cannot be begun there, and stay here, as they would once the probes tell, a moment
    later, rather than fail the put."""
    from xsc.errors import PeerUnreachable
    from xsc.storage import holder_client
    from tests.support.waiting import eventually_async

    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    a, b = await node_factory("a", **quiet), await node_factory("b", **quiet)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    id_a, id_b = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id

    async def offered() -> bool:
        await a.app[NODE].market.fill_book(kind="storage", wanted=2)
        return a.app[NODE].market.book.get(id_b) is not None
    await eventually_async(offered, "b's storage offer in a's book", 30)
    call = holder_client.RemoteHolder._call

    async def b_gone(holder, *args, **kwargs):
        if holder.node_id == id_b:
            raise PeerUnreachable(f"peer {holder.url} is unreachable: connection refused")
        return await call(holder, *args, **kwargs)

    monkeypatch.setattr(holder_client.RemoteHolder, "_call", b_gone)
    for size in (20_000, 300_000):  # placed whole, and begun then streamed
        response = await a.post("/v1/store/files", data=os.urandom(size))
        assert response.status == 201, await response.text()
        put = await response.json()
        assert put["placement"] == [id_a] * 6, put
        assert put["kept_home"].startswith(f"node {id_b} refused shares 4, 5 (peer-unreachable)"), put


@pytest.mark.parametrize("lie, a_holds", [("holds every share", 0), ("holds every share", 2),
                                          ("sends another file's manifest", 0)])
def test_a_peer_that_lies_where_the_shares_are_does_not_keep_a_handed_capability_from_reading(
        cli_node, tmp_path, monkeypatch, lie, a_holds) -> None:
    """B hands A a capability; a third node says it holds every share of the file (its answer asked first: its id
    sorts before B's) and has none, or sends another file's manifest for them: A reads the file from B (and its own
    shares, if B placed two there) all the same, a job of A's over it runs, and A's check, verify and repair find every
    share intact (a repair rebuilds none of them at A's expense), each searching afresh."""
    # No hash table: B's placement announced there would name B first, before the liar (it may sign a holders
    # record newer than B's naming itself; the search is then as here).
    quiet = {"storage": {"segment_size": 65536}, "peers": {"dht": False}}
    a, first, second = (TextNode(cli_node(name, **quiet)) for name in "abc")
    ids = [json.loads(n.xsc("node", "status", "--json").stdout)["id"] for n in (a, first, second)]
    (liar, id_liar), (b, id_b) = sorted(zip((first, second), ids[1:]), key=lambda pair: pair[1])
    for peer in (liar, b):
        assert a.xsc("peers", "add", peer.url).exit_code == 0
    peers = a.app[NODE].peers
    eventually(lambda: peers.up(id_liar) and peers.up(id_b), "A to see B and the liar up", 30)
    data = os.urandom(200_000)
    (tmp_path / "f").write_bytes(data)
    if a_holds:  # B places two shares on A: it waits for A's offer in its book
        assert b.xsc("peers", "add", a.url).exit_code == 0
        eventually(lambda: any(o["owner"] == ids[0] for k in json.loads(b.xsc("market", "book", "--json").stdout)
                               ["books"] for o in k["asks"]), "A's offer in B's book", 30)
    avoid = ["--avoid", id_liar] + ([] if a_holds else ["--avoid", ids[0]])
    done = b.xsc("store", "put", str(tmp_path / "f"), "--json", *avoid)
    assert done.exit_code == 0, done.output
    put = json.loads(done.stdout)
    assert put["placement"].count(ids[0]) == a_holds and id_liar not in put["placement"], put
    monkeypatch.setattr(liar.app[NODE].storage.locator, "answer", lambda si: {"shares": list(range(6)), "holders": {}})
    if lie == "sends another file's manifest":
        (tmp_path / "g").write_bytes(os.urandom(100_000))
        other = Capability.parse(json.loads(liar.xsc("store", "put", str(tmp_path / "g"), "--json").stdout)
                                 ["capability"]).storage_index
        holder = liar.app[NODE].share_holder
        describe = holder.describe
        monkeypatch.setattr(holder, "describe", lambda si, share, pay: describe(other, share, pay))
    si = Capability.parse(put["capability"]).storage_index
    for command in ("check", "verify"):
        check = json.loads(a.xsc("store", command, put["capability"], "--json").stdout)
        assert check["intact"] == 6 and id_liar not in {s["node"] for s in check["shares"]}, (command, check)
        a.app[NODE].storage.locator.forget(si)  # each searches afresh
    done = a.xsc("store", "repair", put["capability"], "--json")  # nothing to rebuild, nothing placed at A's expense
    assert done.exit_code == 0 and json.loads(done.stdout)["repaired"] == [], done.output
    assert json.loads(done.stdout)["intact"] == 6, done.output
    a.app[NODE].storage.locator.forget(si)
    out = tmp_path / "out"
    got = a.xsc("store", "get", put["capability"], "-o", str(out))
    assert got.exit_code == 0 and out.read_bytes() == data, got.output
    ran = a.xsc("compute", "run", "fixtures/wasm/sha256.wasm", "/in/data", "--input",
                f"{put['capability']}:/in/data", "--no-stdin")
    assert ran.exit_code == 0 and hashlib.sha256(data).hexdigest() in ran.stdout, ran.output


def test_a_put_refused_for_want_of_prepayment_says_this_node_tried_to_prepay_by_itself(cli_node, tmp_path) -> None:
    """A keeps nothing at home and prepays strangers by itself (ledger.auto_prepay); B, a stranger that extends no
    credit, refuses A's prepayment (A never did work for it): the put's refusal says the prepayment was tried."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    a = TextNode(cli_node("a", **quiet, market={"offer_storage": False}, ledger={"auto_prepay": True}))
    b = TextNode(cli_node("b", **quiet, ledger={"stranger_credit": 0}))
    id_b = json.loads(b.xsc("node", "status", "--json").stdout)["id"]
    assert a.xsc("peers", "add", b.url).exit_code == 0
    eventually(lambda: any(o["owner"] == id_b for k in json.loads(a.xsc("market", "book", "--json").stdout)["books"]
                           for o in k["asks"]), "B's offer in A's book", 30)
    path = tmp_path / "f"
    path.write_bytes(os.urandom(30_000))
    refused = a.xsc("store", "put", str(path))
    (line,) = refused.stderr.splitlines()
    assert refused.exit_code == 1 and line.startswith(f"xsc: error: node {id_b} wants prepayment for this put ("), line
    assert "; this node's own prepayment of it (ledger.auto_prepay) was tried and not made: it refused the " \
        "prepayment: it owes this node nothing (" in line, line
    assert line.endswith(f"(ask for credit, or if it owes you: xsc ledger prepay {id_b} "
                         f"{line.split('(')[1].split()[0]})"), line
