"""Several real node processes: joining through one node, gossip, probes, failures, restarts, add and rm."""

from __future__ import annotations

import json
import signal

import pytest

from xsc.config import https_url

from tests.support.nodes import free_port
from tests.support.peers import FAST, api, http, known_ids, node_id, peer_health
from tests.support.waiting import eventually


@pytest.mark.slow
def test_three_nodes_joined_through_one_learn_each_other_and_probe_each_other(node_process) -> None:
    a = node_process("a", env=FAST)
    b = node_process("b", ["--peer", a.url], env=FAST)
    c = node_process("c", ["--peer", a.url], env=FAST)
    ids = {name: node_id(n) for name, n in (("a", a), ("b", b), ("c", c))}
    # b and c only ever heard of a: they learn of each other from descriptors passed on.
    for name, node in (("a", a), ("b", b), ("c", c)):
        eventually(lambda: known_ids(node) == set(ids.values()) - {ids[name]}, f"{name} to know the other two")

    listing = json.loads(b.xsc("peers", "ls", "--json").stdout)
    # Peers reach each node over TLS on its one port (the http:// seed was upgraded): https:// everywhere.
    assert listing["self"]["id"] == ids["b"] and listing["self"]["url"] == https_url(b.url)
    assert {p["id"]: p["url"] for p in listing["peers"]} == {ids["a"]: https_url(a.url), ids["c"]: https_url(c.url)}
    text = b.xsc("peers", "ls", "--wide").stdout.decode()  # (in their columns)
    assert ids["c"] in text and https_url(c.url) in text

    # Every node probes every other with a signed challenge, and keeps the result.
    for peer in ("b", "c"):
        eventually(lambda: (peer_health(a, ids[peer]) or {}).get("probes_1h", 0) >= 3, f"a to probe {peer}")
    stats = peer_health(a, ids["c"])
    assert stats["up"] is True and stats["ratio_1h"] == 1.0 and stats["consecutive_failures"] == 0
    assert stats["latency_ms"] > 0 and stats["last_audit"] is None and stats["last_error"] is None
    report = json.loads(a.xsc("health", "status", "--json").stdout)
    assert {p["id"] for p in report["peers"]} == {ids["b"], ids["c"]} and report["last_round"]["peers"] == 2
    assert ids["b"] in a.xsc("health", "status").stdout.decode()

    # A node that dies fails its probes; the others notice, and /health says so once most are down.
    c.kill()
    for node in (a, b):
        eventually(lambda: (peer_health(node, ids["c"]) or {}).get("consecutive_failures", 0) >= 2,
                   "probes of the killed node to fail")
    stats = peer_health(a, ids["c"])
    assert stats["up"] is False and stats["ratio_1h"] < 1.0 and "unreachable" in stats["last_error"]
    assert stats["last_ok"] is not None and stats["probes_1h"] > stats["consecutive_failures"]
    check = api(a, "GET", "/health")[1]["checks"]["peers:reachable"][0]  # its figures need the token
    assert check["status"] == "pass" and check["observedValue"] == 1  # one of two is half: still a pass
    b.kill()
    eventually(lambda: http(a.url, "GET", "/health")[1]["checks"]["peers:reachable"][0]["status"] == "warn",
               "the health check to warn")
    status, body = http(a.url, "GET", "/health")
    assert status == 200 and body["status"] == "warn"


@pytest.mark.slow
def test_restart_keeps_identity_peer_table_and_probe_history(node_process) -> None:
    a = node_process("a", env=FAST)
    b = node_process("b", ["--peer", a.url], env=FAST)
    a_id, b_id = node_id(a), node_id(b)
    eventually(lambda: (peer_health(a, b_id) or {}).get("probes_1h", 0) >= 3, "a to probe b")
    assert a.stop(signal.SIGTERM) == 0
    a.start()  # a was never told of any peer on its command line: all it knows comes from its database
    assert node_id(a) == a_id
    assert known_ids(a) == {b_id}
    probes_before = peer_health(a, b_id)["probes_24h"]
    assert probes_before >= 3
    eventually(lambda: peer_health(a, b_id)["probes_24h"] > probes_before, "a to probe b again after its restart")

    b.kill()  # kill -9: b's table survives as well
    b.start()
    assert node_id(b) == b_id and known_ids(b) == {a_id}


@pytest.mark.slow
def test_peers_add_and_rm(node_process) -> None:
    a, b = node_process("a"), node_process("b")
    b_id = node_id(b)
    result = a.xsc("peers", "add", b.url + "/")
    assert result.returncode == 0 and f"added {b_id} at {https_url(b.url)}" in result.stdout.decode(), result.stderr
    assert known_ids(a) == {b_id}
    assert known_ids(b) == {node_id(a)}  # the exchange told b about a as well

    result = a.xsc("peers", "rm", b_id, "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == {"removed": b_id}
    assert known_ids(a) == set()
    # b still knows a and passes its descriptor on: a ignores it until the user adds b again.
    assert b.xsc("peers", "add", a.url).returncode == 0
    assert known_ids(a) == set()
    assert a.xsc("peers", "add", b.url).returncode == 0 and known_ids(a) == {b_id}

    for args, message in ((["rm", "not-an-id"], b"no known peer starts with not-an-id"),
                          (["rm", "a" * 52], b"no known peer has id"),
                          (["add", f"http://127.0.0.1:{free_port()}"], b"is unreachable"),
                          (["add", "ftp://example.org"], b"not a node URL"),
                          (["add", a.url], b"this node's own URL"),
                          (["add", f"https://{node_id(a)}@{b.url.removeprefix('http://')}"],
                           f"the URL pins this node's own id {node_id(a)}, not the id of the node at".encode())):
        result = a.xsc("peers", *args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert result.stderr.decode().startswith("xsc: error: ") and result.stderr.count(b"\n") == 1
    status, body = http(a.url, "GET", "/v1/peers")
    assert status == 401 and body["code"] == "unauthorized"  # the user API needs the token
    bad = a.xsc("node", "start", "--peer", "nonsense")
    assert bad.returncode == 1 and b"--peer: not a node URL" in bad.stderr


@pytest.mark.slow
def test_a_peer_counted_as_down_is_probed_again_as_soon_as_it_sends_a_signed_request(node_process) -> None:
    # a probes once an hour: only b's own requests after its restart can tell a that b is back.
    a = node_process("a", env={**FAST, "XSC_HEALTH_PROBE_INTERVAL": "3600"})
    b = node_process("b", ["--peer", a.url], env=FAST)
    b_id = node_id(b)
    eventually(lambda: known_ids(a) == {b_id}, "a to know b")
    eventually(lambda: peer_health(a, b_id)["up"] is True, "a's probe of b on learning of it")
    b.kill()
    # a's gossip to b finds no answer: a probes b at once, not in an hour
    eventually(lambda: peer_health(a, b_id)["up"] is False, "a to probe b on failing to reach it")
    b.start()  # b gossips to a at once: a probes it on hearing from it
    eventually(lambda: peer_health(a, b_id)["up"] is True, "a to count b up again")
    stats = peer_health(a, b_id)
    assert stats["consecutive_failures"] == 0 and stats["probes_1h"] == 3  # on learning, dead, on hearing from it
