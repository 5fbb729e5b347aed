"""A capability whose manifest hash is not that of the file stored under its storage index (its key is the file's,
its hash another file's: copied in part, mixed up with another) is the caller's error, a 400 saying so, on every
route that reads it; a manifest damaged on every holder under a right capability stays the node's integrity error."""

from __future__ import annotations

import json
import os

from xsc import codec, keys
from xsc.node.appkeys import NODE
from xsc.storage.core import erasure
from xsc.storage.core.capability import Capability
from xsc.storage.core.manifest import Manifest, unsettled
from xsc.storage.core.merkle import root

from tests.support.cli import TextNode
from tests.support.peers import api
from tests.support.waiting import eventually

QUIET = {"storage": {"segment_size": 65536}, "peers": {"dht": False}}
ROUTES = [("GET", ""), ("GET", "/check"), ("POST", "/verify"), ("POST", "/repair")]


def _two(cli_node, tmp_path, *sizes: int) -> tuple[TextNode, TextNode, list[str]]:
    """A, and B, which put files of `sizes` with all their shares on B: A reads them by a search, as a file handed to
    it; their capabilities."""
    a, b = TextNode(cli_node("a", **QUIET)), TextNode(cli_node("b", **QUIET))
    id_a, id_b = (json.loads(n.xsc("node", "status", "--json").stdout)["id"] for n in (a, b))
    assert a.xsc("peers", "add", b.url).exit_code == 0
    eventually(lambda: a.app[NODE].peers.up(id_b), "A to see B up", 30)
    caps = []
    for size in sizes:
        path = tmp_path / f"f{size}"
        path.write_bytes(os.urandom(size))
        done = b.xsc("store", "put", str(path), "--json", "--avoid", id_a)
        assert done.exit_code == 0, done.output
        caps.append(json.loads(done.stdout)["capability"])
    return a, b, caps


def test_a_capability_with_another_files_manifest_hash_is_the_callers_error_on_every_route(cli_node,
                                                                                           tmp_path) -> None:
    a, b, (first, second) = _two(cli_node, tmp_path, 200_000, 70_000)
    mixed = Capability.parse(first)
    mixed = str(Capability(mixed.key, Capability.parse(second).manifest_hash, mixed.size))
    for node in (a, b):  # A: the holders' copies agree; B: it put the file under its own capability
        for method, path in ROUTES:
            status, problem = api(node, method, f"/v1/store/files/{mixed}{path}")
            assert (status, problem["code"]) == (400, "invalid-capability"), (node.data_dir.name, path, problem)
            assert problem["detail"].startswith("the capability does not match the file stored under its storage "
                                                "index: its manifest hash is another file's"), problem
            assert "copied whole" in problem["hint"], problem
    said = a.xsc("store", "get", mixed, "-o", str(tmp_path / "out"))
    assert said.exit_code == 1 and "does not match the file stored under its storage index" in said.stderr, said.output
    ran = a.xsc("compute", "run", "fixtures/wasm/sha256.wasm", "/in/data", "--input", f"{mixed}:/in/data",
                "--no-stdin")  # a job's input is read as a get
    assert ran.exit_code != 0 and "does not match the file stored under its storage index" in ran.stderr, ran.output


def test_a_manifest_damaged_on_every_holder_is_an_integrity_error_never_the_callers(cli_node, tmp_path) -> None:
    a, b, (cap,) = _two(cli_node, tmp_path, 200_000)
    si = Capability.parse(cap).storage_index
    db = b.app[NODE].storage.store.db
    stored = codec.loads(db.get(keys.manifest(si)))
    damaged_root = {**stored, "share_roots": ["00" * 32, *stored["share_roots"][1:]]}
    damaged_size = {**stored, "size": stored["size"] + 1}  # the same blocks' bytes: only the capability tells
    for damaged, said in ((damaged_root, "1 of the 6 shares that answered do not match it"),
                          (damaged_size, "it is of a file of 200001 bytes, not the capability's 200000")):
        db.put(keys.manifest(si), codec.canonical(damaged))  # B's is the copy every share of it is sent with
        a.app[NODE].storage.locator.forget(si)
        for method, path in ROUTES[:3]:
            status, problem = api(a, method, f"/v1/store/files/{cap}{path}")
            assert (status, problem["code"]) == (500, "integrity-error"), (path, problem)
            assert problem["detail"] == ("the stored manifest does not match the capability's manifest hash, and "
                                         + said), problem


def test_a_manifest_is_settled_by_its_copies_only_when_they_agree_and_it_passes_its_own_checks() -> None:
    hashes = {s: [bytes([s, n]) * 16 for n in range(2)] for s in range(erasure.N)}
    roots = tuple(root(hashes[s]).hex() for s in range(erasure.N))
    manifest = Manifest(size=70_000, segment_size=65536, k=4, m=2, segment_count=2, share_roots=roots,
                        ciphertext_hash="ab" * 32)
    from xsc.storage.core import layout

    each = layout.share_bytes(70_000, 65536)
    shares = {s: (hashes[s], each) for s in range(erasure.N)}
    copy = manifest.encode()
    assert unsettled([copy] * 6, shares, 70_000) is None
    assert unsettled([copy] * 4, {s: shares[s] for s in range(4)}, 70_000) is None  # K shares tell
    assert unsettled([], {}, 70_000) == "no holder sent a copy of it"
    assert unsettled([copy, copy + b" "], shares, 70_000) == "its holders' copies differ"
    for bad in (b"not json", b"{}", codec.canonical({**json.loads(copy), "version": 9}),
                codec.canonical({**json.loads(copy), "segment_count": 3}), copy.replace(b'":', b'": ', 1),
                codec.canonical({**json.loads(copy), "segment_size": 0})):
        assert unsettled([bad], shares, 70_000) == "it is no whole manifest", bad
    assert unsettled([copy], shares, 70_001) == "it is of a file of 70000 bytes, not the capability's 70001"
    wrong = {**shares, 2: (hashes[3], each)}
    assert unsettled([copy], wrong, 70_000) == "1 of the 6 shares that answered do not match it"
    assert unsettled([copy], {**shares, 1: (hashes[1], each + 1)}, 70_000) == \
        "1 of the 6 shares that answered do not match it"
    assert unsettled([copy], {s: shares[s] for s in range(3)}, 70_000) == "only 3 shares answered, of the 4 that tell"
