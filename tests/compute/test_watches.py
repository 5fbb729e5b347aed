"""Watches (compute/watches.py) on a real node: a chain of three watches over stored objects runs exactly the
datums that changed, none when nothing did, every later stage again when a stage's module is replaced, deletes
the outputs of a deleted input, and its lineage walks all three stages.  A kill -9 of the node in the middle of a
chain loses no run and runs none twice."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections import Counter

import plyvel
import pytest

from tests.support.cli import ok, xsc_in_process
from tests.support.compute import WASM, deploy
from tests.support.nodes import close_node, kill_all
from tests.support.peers import api, http, start_star
from tests.support.waiting import eventually, eventually_async
from xsc import codec, keys
from xsc.compute import watches as watches_module
from xsc.errors import MarketNoDeal
from xsc.node import TOKEN
from xsc.node.appkeys import NODE
from xsc.node.datadir import DB_DIR
from xsc.units import format_credits

N = int(os.environ.get("XSC_TEST_WATCH_INPUTS", "10"))  # the figure is 1,000: see docs/compute.md


async def _call(node, method: str, path: str, body=None, data: bytes | None = None, params=None):
    response = await node.request(method, path, json=body, data=data, params=params)
    answer = await response.json()
    assert response.status < 300, (method, path, answer)
    return answer


async def _put_object(node, bucket: str, key: str, data: bytes) -> None:
    stored = await _call(node, "POST", "/v1/store/files", data=data)
    record = {"parts": [{"cap": stored["capability"], "size": len(data)}], "etag": hashlib.md5(data).hexdigest()}
    await _call(node, "PUT", f"/v1/s3/buckets/{bucket}/object", record, params={"key": key})


async def _object(node, bucket: str, key: str) -> bytes:
    record = await _call(node, "GET", f"/v1/s3/buckets/{bucket}/object", params={"key": key})
    response = await node.get(f"/v1/store/files/{record['parts'][0]['cap']}")
    return await response.read()


async def _keys(node, bucket: str, prefix: str) -> list[str]:
    return [key for key, _ in node.app[NODE].s3_index.objects(bucket, prefix)]


async def _watches(node) -> dict[str, dict]:
    return {w["name"]: w for w in (await _call(node, "GET", "/v1/compute/watches"))["watches"]}


async def _pass(node) -> None:
    """Wake the watches and wait until a pass ends (the one under way, or the one the wake starts)."""
    watches = node.app[NODE].watches
    before = watches.passes
    watches.wake()
    # a pass runs every datum that changed: after a module is replaced, all of them
    await eventually_async(lambda: watches.passes > before, "a pass over the watches", 30 + N / 10)


async def _settled(node) -> dict[str, dict]:
    """Once no watch has a backlog and a whole pass found nothing to do: the watches."""
    async def idle():
        found = await _watches(node)
        if any(w["backlog"] for w in found.values()):
            return None
        await _pass(node)
        await _pass(node)  # one that began after the last change was seen
        again = await _watches(node)
        return again if again == found else None
    return await eventually_async(idle, "the watches to settle", 60 + N)


def _runs(watches: dict[str, dict]) -> dict[str, int]:
    return {name: w["runs"] for name, w in watches.items()}


@pytest.mark.timeout(120 + N // 2)  # some 7 runs per input
async def test_a_chain_of_three_watches_runs_only_what_changed(node_factory) -> None:
    node = await node_factory("watcher")
    sha = await deploy(node, "sha256", wasi=True)
    for bucket in ("raw", "stage"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    inputs = {f"in/{n:04d}": b"input %d\n" % n * (n + 1) for n in range(N)}
    for key, data in inputs.items():
        await _put_object(node, "raw", key, data)
    spec = {"module": sha, "argv": ["/in/data"], "stdout_to_store": True, "outputs": False}
    for name, on, to in (("a", "s3://raw/in/", "s3://stage/a/"), ("b", "s3://stage/a/", "s3://stage/b/"),
                         ("c", "s3://stage/b/", "s3://stage/c/")):
        await _call(node, "POST", "/v1/compute/watches", {"name": name, "spec": spec, "on": on, "to": to})
    first = await _settled(node)
    assert _runs(first) == {"a": N, "b": N, "c": N} and all(w["failures"] == 0 for w in first.values()), first
    # `xsc compute watches` prints what each spent in credits, as the ledger's tables do (--json: micro-credits).
    text = ok(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "watches",
                                      env={"XSC_TOKEN": node.app[TOKEN]}))
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    assert all(format_credits(w["spend"]) in rows[name] for name, w in first.items()), text
    # Each stage's object is the SHA-256 of the one before it.
    key = "in/0007"
    a = hashlib.sha256(inputs[key]).hexdigest().encode() + b"\n"
    assert await _object(node, "stage", "a/0007") == a
    assert await _object(node, "stage", "c/0007") == \
        hashlib.sha256(hashlib.sha256(a).hexdigest().encode() + b"\n").hexdigest().encode() + b"\n"

    # Nothing changed: nothing runs.
    assert _runs(await _settled(node)) == _runs(first)

    # One input changed: one run per stage.
    await _put_object(node, "raw", key, b"changed\n")
    changed = await _settled(node)
    assert _runs(changed) == {"a": N + 1, "b": N + 1, "c": N + 1}, changed

    # The lineage of a final output walks all three stages back to the input, every signature checked.
    record = await _call(node, "GET", "/v1/s3/buckets/stage/object", params={"key": "c/0007"})
    tree = await _call(node, "GET", f"/v1/compute/lineage/{record['parts'][0]['cap']}")
    depth, level = 0, tree
    while "made_by" in level:
        assert level["made_by"]["signature_valid"] and level["made_by"]["output_signed"]
        depth += 1
        (level,) = level["made_by"]["inputs"]
    assert depth == 3 and level["sha256"] == hashlib.sha256(b"changed\n").hexdigest()

    # Stage B's module replaced (one that leaves three files in /out): B and C run again for every input, A not.
    outputs = await deploy(node, "outputs", wasi=True)
    await _call(node, "POST", "/v1/compute/watches", {"name": "b", "spec": {"module": outputs},
                                                       "on": "s3://stage/a/", "to": "s3://stage/b/"})
    replaced = await _settled(node)
    assert replaced["a"]["runs"] == N + 1 and replaced["b"]["runs"] == 2 * N + 1, replaced
    # B now writes three objects per input, the same three for every input: C runs each content once and answers
    # the rest from the replay cache (a skip).
    assert replaced["c"]["runs"] + replaced["c"]["skips"] == N + 1 + 3 * N, replaced
    assert replaced["c"]["runs"] < N + 1 + 3 * N
    assert len(await _keys(node, "stage", "b/")) == 3 * N and len(await _keys(node, "stage", "c/")) == 3 * N

    # An input deleted: the objects its datums wrote go, stage by stage.
    await _call(node, "POST", "/v1/s3/buckets/raw/delete", {"keys": [key]})
    await _settled(node)
    assert not [k for k in await _keys(node, "stage", "") if "0007" in k]


async def test_a_watch_is_refused_with_one_line_when_it_cannot_work(node_factory) -> None:
    node = await node_factory("refusals")
    sha = await deploy(node, "sha256", wasi=True)
    await _call(node, "PUT", "/v1/s3/buckets/raw")
    for body, words in (({"name": "x", "spec": {"module": sha}, "on": "s3://raw/a/", "to": "s3://nope/b/"},
                         "no bucket"),
                        ({"name": "x", "spec": {"module": sha}, "on": "s3://raw/a/", "to": "s3://raw/a/out/"},
                         "cannot write where it watches"),
                        ({"name": "bad name!", "spec": {"module": sha}, "on": "s3://raw/", "to": "s3://raw2/"},
                         "name"),
                        ({"name": "x\n", "spec": {"module": sha}, "on": "s3://raw/a/", "to": "s3://raw/b/"}, "name"),
                        ({"name": "x", "spec": {"module": sha, "colour": 1}, "on": "s3://raw/a/", "to": "s3://raw/b/"},
                         "unknown field"),
                        ({"name": "x", "spec": -7.9e-241, "on": "s3://raw/a/", "to": "s3://raw/b/"}, '"spec"'),
                        ({"name": "x", "spec": {"module": sha, "inputs": 5}, "on": "s3://raw/a/", "to": "s3://raw/b/"},
                         '"spec"'),
                        ({"name": "x", "spec": {"module": sha}, "as": 5, "on": "s3://raw/a/", "to": "s3://raw/b/"},
                         '"as"'),
                        ({"name": "x", "spec": {"module": sha}, "on": "s3://raw/a/", "to": "s3://raw/" + "b" * 1025},
                         "--to's prefix is 1,025 bytes, more than an object key's 1,024")):
        response = await node.post("/v1/compute/watches", json=body)
        problem = await response.json()
        assert 400 <= response.status < 500 and words in problem["detail"] and "\n" not in problem["detail"], problem


async def test_watches_that_would_run_each_others_outputs_in_a_ring_are_refused(node_factory) -> None:
    """a writes where b watches and b where a watches: each output a new datum of the other, paid, its key longer
    each turn, for ever.  The watch closing the ring is refused, naming it; a chain that does not close is taken."""
    node = await node_factory("ring")
    sha = await deploy(node, "sha256", wasi=True)
    for bucket in ("raw", "mid"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    await _call(node, "POST", "/v1/compute/watches", {"name": "a", "spec": {"module": sha}, "on": "s3://raw/x/",
                                                     "to": "s3://mid/y/"})
    await _call(node, "POST", "/v1/compute/watches", {"name": "b", "spec": {"module": sha}, "on": "s3://mid/",
                                                     "to": "s3://raw/z/"})  # a chain: z is nobody's
    for name, on, to in (("c", "s3://raw/z/", "s3://raw/x/deeper/"), ("b", "s3://mid/", "s3://raw/"),
                         ("a", "s3://raw/", "s3://mid/y/")):
        response = await node.post("/v1/compute/watches", json={"name": name, "spec": {"module": sha}, "on": on,
                                                               "to": to})
        problem = await response.json()
        assert response.status == 400 and "ring" in problem["detail"] and "\n" not in problem["detail"], problem
    assert sorted(await _watches(node)) == ["a", "b"]
    assert (await _watches(node))["b"]["to"] == ["raw", "z/"]  # the refused replacement left it as it was


async def test_rings_of_watches_saved_before_they_were_refused_are_paused_at_start(node_factory, caplog) -> None:
    """A store holding rings of watches (saved before `add` refused them): the start pauses each watch of a ring, the
    listing and the log say why and how to open it; the others run; removing one of a ring resumes the rest."""
    node = await node_factory("rings")
    sha = await deploy(node, "sha256", wasi=True)
    for bucket in ("raw", "mid", "out"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    spec = {"module": sha, "argv": ["/in/data"], "stdout_to_store": True}
    for name, on, to in (("a", "s3://raw/x/", "s3://mid/y/"), ("b", "s3://mid/", "s3://raw/z/"),
                         ("c", "s3://raw/c/", "s3://out/c/"), ("d", "s3://out/d/", "s3://out/e/")):
        await _call(node, "POST", "/v1/compute/watches", {"name": name, "spec": spec, "on": on, "to": to})
    store = node.app[NODE].watches.store
    for name, to in (("b", ["raw", "x/"]), ("d", ["out", "d/deeper/"])):  # a -> b -> a, and d -> d
        store.save_watch({**store.watch(name), "to": to})
    await close_node(node)
    node = await node_factory("rings")
    for key in ("x/1", "c/1"):
        await _put_object(node, "raw", key, key.encode())
    await eventually_async(lambda: _keys(node, "out", "c/"), "the watch outside the rings run", 30)
    await _pass(node)
    found = await _watches(node)
    assert [found[name]["runs"] for name in "abcd"] == [0, 0, 1, 0], found
    assert found["c"]["paused"] is None and "a -> b -> a;" in found["a"]["paused"], found
    assert "b -> a -> b;" in found["b"]["paused"] and "d -> d;" in found["d"]["paused"], found
    assert found["a"]["paused"].endswith("(xsc compute unwatch b, or watch a again with another --to)"), found
    assert any(r.getMessage().startswith("watch d paused: it is in a ring") for r in caplog.records)
    text = ok(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "watches",
                                      env={"XSC_TOKEN": node.app[TOKEN], "COLUMNS": "400"}))
    assert "paused: it is in a ring of watches, each writing where the next watches: d -> d;" in text, text

    await _call(node, "DELETE", "/v1/compute/watches/b")
    assert (await eventually_async(lambda: _ran(node, "a"), "the watch resumed to run", 30))["paused"] is None
    assert await _keys(node, "mid", "") == ["y/1"] and (await _watches(node))["d"]["paused"]


async def test_a_datum_whose_object_key_would_be_too_long_fails_and_the_watches_go_on(node_factory) -> None:
    """The target's prefix with the input's key is over S3's 1,024 bytes: that datum fails, saying so, and the
    watches' loop goes on (another watch's datum runs) instead of crashing at every pass."""
    long = "p" * 1024
    node = await _watching_one_object(node_factory, "longkey", "sha256",
                                      {"argv": ["/in/data"], "stdout_to_store": True}, f"s3://out/{long}")

    async def failed():
        watch = (await _watches(node))["w"]
        return watch if watch["failures"] else None

    watch = await eventually_async(failed, "the datum to fail", 30)
    assert watch["last_error"].startswith("in/x: its output s3://out/ppp") and "1024 bytes" in watch["last_error"] \
        and watch["last_error"].endswith("(watch it again with a shorter --to prefix)"), watch
    assert watch["last_run"]["state"] == "failed" and watch["last_run"]["objects"] == [], watch
    assert await _keys(node, "out", "") == []
    sha = watch["spec"]["module"]
    await _call(node, "POST", "/v1/compute/watches", {"name": "x", "spec": {"module": sha, "stdout_to_store": True,
                                                                            "argv": ["/in/data"]},
                                                     "on": "s3://raw/in/", "to": "s3://out/short/"})
    assert await eventually_async(lambda: _keys(node, "out", "short/"), "the other watch's datum written", 30) \
        == ["short/x"]


async def test_a_datum_whose_job_fails_unexpectedly_fails_alone_and_the_pass_goes_on(node_factory, monkeypatch,
                                                                                     caplog) -> None:
    """A job's run for one datum raises what no XscError says (a full disk): that datum fails, saying so in the
    listing, its traceback logged once however many passes try it again; the other watch's datum runs."""
    node = await node_factory("unexpected")
    sha = await deploy(node, "sha256", wasi=True)
    for bucket in ("raw", "out"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    jobs = node.app[NODE].jobs
    run = jobs.run

    async def full_disk(body, *args, **kwargs):
        if any(source.startswith("s3://raw/a/") for source in body.get("inputs", [])):
            raise OSError(errno.ENOSPC, "No space left on device")
        return await run(body, *args, **kwargs)

    monkeypatch.setattr(jobs, "run", full_disk)
    for name in ("a", "b"):  # a's pass comes first
        await _put_object(node, "raw", f"{name}/x", name.encode())
        await _call(node, "POST", "/v1/compute/watches", {"name": name, "spec": {"module": sha, "argv": ["/in/data"],
                                                                                 "stdout_to_store": True},
                                                         "on": f"s3://raw/{name}/", "to": f"s3://out/{name}/"})
    assert await eventually_async(lambda: _keys(node, "out", "b/"), "the other watch's datum written", 30) == ["b/x"]
    await _pass(node)
    await _pass(node)
    watch = (await _watches(node))["a"]
    assert watch["failures"] >= 2 and watch["last_run"]["state"] == "failed", watch
    assert watch["last_error"] == "a/x: the node failed: OSError: [Errno 28] No space left on device (the node's log " \
        "has its traceback)", watch
    text = ok(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "watches",
                                      env={"XSC_TOKEN": node.app[TOKEN], "COLUMNS": "300"}))
    assert "a/x failed; last error: a/x: the node failed: OSError: [Errno 28]" in text, text
    traced = [r for r in caplog.records if r.exc_info and "No space left" in r.getMessage()]
    assert len(traced) == 1 and "watch a" in traced[0].getMessage(), traced


async def test_an_output_refused_as_an_object_first_does_not_take_the_file_of_a_datum_written_after_it(node_factory):
    """Two inputs of the same bytes make one job (the second replays the first's run): when the datum whose target
    is refused (its key too long) is written first, the file it leaves, garbage then, must not be the file the
    other datum's object then names: that object would name a removed file."""
    node = await node_factory("samefile")
    module = await deploy(node, "sha256", wasi=True)
    for bucket in ("raw", "out"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    for key in ("in/" + "a" * 40, "in/x"):  # both there at the watch's first pass; the refused one sorts first
        await _put_object(node, "raw", key, b"x")
    await _call(node, "POST", "/v1/compute/watches", {
        "name": "w", "spec": {"module": module, "argv": ["/in/data"], "stdout_to_store": True},
        "on": "s3://raw/in/", "to": "s3://out/" + "p" * 1000})
    index = node.app[NODE].s3_index

    async def settled():
        held = {p["cap"] for key, _ in index.objects("out") for p in index.get("out", key)["parts"]}
        listed = {f["capability"] for f in (await _call(node, "GET", "/v1/store/files"))["files"]}
        watch = (await _watches(node))["w"]
        return held and held <= listed and watch["failures"] >= 2 and not index.garbage()

    await eventually_async(settled, "the written object's file kept", 60)
    assert await _object(node, "out", "p" * 1000 + "x") == hashlib.sha256(b"x").hexdigest().encode() + b"\n"


async def test_the_file_of_an_output_refused_as_an_object_goes_unless_another_object_holds_it(node_factory) -> None:
    """Under a --to prefix of 1,000 bytes, in/x's object is written and the objects of two longer keys are refused:
    the file of one (its bytes in/x's, one job) stays, in/x's object holds it; the other's goes, and its job is not
    run again (paid) at each pass."""
    node = await _watching_one_object(node_factory, "refusedfile", "sha256",
                                      {"argv": ["/in/data"], "stdout_to_store": True}, "s3://out/" + "p" * 1000)
    await _put_object(node, "raw", "in/" + "s" * 40, b"x")  # the bytes of in/x: its job
    await _put_object(node, "raw", "in/" + "t" * 40, b"t")
    index = node.app[NODE].s3_index

    async def only_objects_files():
        held = {p["cap"] for bucket in ("raw", "out") for key, _ in index.objects(bucket)
                for p in index.get(bucket, key)["parts"]}
        listed = {f["capability"] for f in (await _call(node, "GET", "/v1/store/files"))["files"]}
        watch = (await _watches(node))["w"]
        return watch if watch["failures"] >= 2 and listed == held and not index.garbage() else None

    await eventually_async(only_objects_files, "the refused file removed", 60)
    assert await _keys(node, "out", "") == ["p" * 1000 + "x"]
    assert await _object(node, "out", "p" * 1000 + "x") == hashlib.sha256(b"x").hexdigest().encode() + b"\n"

    def runs(records: list) -> int:
        return sum("job" in r["record"] for r in records)

    before = runs((await _call(node, "GET", "/v1/compute/provenance", params={"limit": "1000"}))["records"])
    failures = (await _watches(node))["w"]["failures"]
    for _ in range(3):  # two whole passes since `failures` was read: the first wait may end one begun before it
        await _pass(node)
    assert (await _watches(node))["w"]["failures"] >= failures + 2
    assert runs((await _call(node, "GET", "/v1/compute/provenance", params={"limit": "1000"}))["records"]) == before
    assert await only_objects_files()


async def test_only_a_write_to_a_watched_bucket_wakes_the_watches(node_factory) -> None:
    node = await node_factory("wakes")
    sha = await deploy(node, "sha256", wasi=True)
    for bucket in ("raw", "other", "out"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    await _call(node, "POST", "/v1/compute/watches",
                {"name": "w", "spec": {"module": sha, "argv": ["/in/data"]}, "on": "s3://raw/", "to": "s3://out/"})
    watches, loop = node.app[NODE].watches, asyncio.get_running_loop()
    woken = []
    watches._loop = _Recording(loop, woken)

    async def after_put(bucket: str) -> list:
        woken.clear()
        await _put_object(node, bucket, "k", b"data")
        # The index calls its hooks before the put answers; a wake-up they asked for runs before this one.
        turn = loop.create_future()
        loop.call_soon_threadsafe(turn.set_result, None)
        await turn
        return list(woken)

    assert await after_put("other") == []
    assert await after_put("out") == []
    assert await after_put("raw") == ["woken"]


async def test_a_start_passes_over_the_watches_without_waiting_for_a_scan(node_factory, monkeypatch) -> None:
    """What a kill -9 cut short, or what changed while the node was down, is run at start: the first pass comes
    once the jobs' recovery has ended, not a scan later (none comes here) nor at the next write."""
    monkeypatch.setattr(watches_module, "SCAN", 3600.0)
    node = await node_factory("started")
    await eventually_async(lambda: node.app[NODE].jobs.recovered.is_set(), "the jobs' recovery to end")
    await eventually_async(lambda: node.app[NODE].watches.passes >= 1, "a pass over the watches at start")


async def test_a_watch_added_while_none_runs_is_passed_over_at_once(node_factory, monkeypatch) -> None:
    """With no watch to run the loop sleeps, rather than scanning every SCAN seconds to find nothing; the watch added
    then wakes it, and its datum runs with no scan to come (none does here)."""
    monkeypatch.setattr(watches_module, "SCAN", 3600.0)
    node = await node_factory("asleep")
    watches = node.app[NODE].watches
    await eventually_async(lambda: watches.asleep, "the watches' loop asleep, no watch to run")
    sha = await deploy(node, "sha256", wasi=True)
    for bucket in ("raw", "out"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    await _put_object(node, "raw", "in/x", b"x\n")
    spec = {"module": sha, "argv": ["/in/data"], "stdout_to_store": True, "outputs": False}
    await _call(node, "POST", "/v1/compute/watches", {"name": "w", "spec": spec, "on": "s3://raw/in/",
                                                     "to": "s3://out/w/"})

    async def ran():
        return (await _watches(node))["w"]["runs"] == 1

    await eventually_async(ran, "the datum of the watch added to run")
    assert await _object(node, "out", "w/x") == hashlib.sha256(b"x\n").hexdigest().encode() + b"\n"
    assert not watches.asleep  # a watch runs: its prefix is scanned again every SCAN seconds


async def test_a_datum_never_replaces_an_object_it_did_not_write(node_factory) -> None:
    node = await node_factory("clash")
    outputs = await deploy(node, "outputs", wasi=True)  # out/a.txt "alpha\n", b.txt, c.txt; and its stdout stored
    for bucket in ("raw", "out"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    await _put_object(node, "out", "w/y/a.txt", b"the user's own\n")  # where datum y's out/a.txt would go
    await _put_object(node, "raw", "in/y", b"y")
    await _put_object(node, "raw", "in/x", b"x")  # x writes w/x/a.txt; x/a.txt's stdout goes to w/x/a.txt too
    await _put_object(node, "raw", "in/x/a.txt", b"x/a")
    await _call(node, "POST", "/v1/compute/watches", {"name": "w", "spec": {"module": outputs, "stdout_to_store": True},
                                                     "on": "s3://raw/in/", "to": "s3://out/w/"})
    async def both_refused():  # each pass tries them again (a failed datum is not done), and refuses them again
        watch = (await _watches(node))["w"]
        return watch if watch["failures"] >= 2 and watch["runs"] >= 1 else None

    watch = await eventually_async(both_refused, "the two datums refused", 60)
    assert await _object(node, "out", "w/y/a.txt") == b"the user's own\n"
    assert "which it did not write" in watch["last_error"], watch
    index, store = node.app[NODE].s3_index, node.app[NODE].watches.store
    written = {k for datum in ("in/x", "in/x/a.txt", "in/y") for k in (store.datum("w", datum) or {}).get("objects", [])}
    assert "w/x/a.txt" in written  # one of the two datums wrote it, and it is that datum's
    writer = next(d for d in ("in/x", "in/x/a.txt") if "w/x/a.txt" in (store.datum("w", d) or {}).get("objects", []))
    assert index.get("out", "w/x/a.txt")["metadata"]["xsc-job"] == store.datum("w", writer)["job"]


async def test_the_objects_a_watch_writes_from_one_job_keep_its_file_while_one_of_them_refers_to_it(node_factory):
    """Two watched objects of the same bytes are one job (the second datum answered from the first's record), whose
    output file both objects hold.  Replacing the input of the one written last leaves the other's readable; the
    file goes once neither refers to it."""
    node = await node_factory("shared")
    sha = await deploy(node, "sha256", wasi=True)
    for bucket in ("raw", "out"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    await _put_object(node, "raw", "in/a", b"same\n")
    await _call(node, "POST", "/v1/compute/watches", {
        "name": "w", "spec": {"module": sha, "argv": ["/in/data"], "stdout_to_store": True, "outputs": False},
        "on": "s3://raw/in/", "to": "s3://out/w/"})
    await _settled(node)
    await _put_object(node, "raw", "in/b", b"same\n")
    watch = (await _settled(node))["w"]
    assert (watch["runs"], watch["skips"]) == (1, 1), watch
    shared = (await _call(node, "GET", "/v1/s3/buckets/out/object", params={"key": "w/a"}))["parts"][0]["cap"]
    assert (await _call(node, "GET", "/v1/s3/buckets/out/object", params={"key": "w/b"}))["parts"][0]["cap"] == shared

    await _put_object(node, "raw", "in/b", b"other\n")
    await _settled(node)
    assert await _object(node, "out", "w/a") == hashlib.sha256(b"same\n").hexdigest().encode() + b"\n"
    assert await _object(node, "out", "w/b") == hashlib.sha256(b"other\n").hexdigest().encode() + b"\n"

    await _call(node, "POST", "/v1/s3/buckets/raw/delete", {"keys": ["in/a"]})
    await _settled(node)
    listed = await _call(node, "GET", "/v1/store/files")
    assert shared not in {f["capability"] for f in listed["files"]}


async def test_a_watch_whose_job_stores_nothing_says_it_ran_and_wrote_nothing(node_factory) -> None:
    """sha256 prints its answer: without stdout_to_store its job stores no file, and its datum writes no object."""
    node = await _watching_one_object(node_factory, "silent", "sha256", {"argv": ["/in/data"]},
                                      "s3://out/what-w-writes/")
    watch = await eventually_async(lambda: _ran(node), "the datum run", 60)
    run = watch["last_run"]
    assert (run["input"], run["state"], run["objects"]) == ("in/x", "done", []), watch
    assert (await _call(node, "GET", f"/v1/compute/jobs/{run['job']}"))["state"] == "done"
    assert await _keys(node, "out", "") == []
    text = ok(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "watches",
                                      env={"XSC_TOKEN": node.app[TOKEN], "COLUMNS": "300"}))
    assert f"in/x done by job {run['job']}, wrote nothing (its job left no file in /out and stored no stdout; " \
           "stdout_to_store = true stores it)" in text, text
    narrow = ok(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "watches",
                                        env={"XSC_TOKEN": node.app[TOKEN], "COLUMNS": "80"}))
    assert all(len(line) <= 80 for line in narrow.splitlines()), narrow
    # the prefixes whole, the skips and the spend left out
    assert narrow.splitlines()[1].split()[:3] == ["w", "s3://raw/in/", "s3://out/what-w-writes/"], narrow


async def test_a_watch_whose_job_traps_names_the_failed_job(node_factory) -> None:
    """spin runs out of its fuel: the datum fails, and its last run names the job whose record says so."""
    node = await _watching_one_object(node_factory, "trapped", "spin", {"limits": {"fuel": 100_000}}, "s3://out/w/")

    async def failed():
        watch = (await _watches(node))["w"]
        return watch if watch["failures"] else None

    run = (await eventually_async(failed, "the datum to fail", 60))["last_run"]
    assert (run["input"], run["state"], run["objects"]) == ("in/x", "failed", []), run
    job = await _call(node, "GET", f"/v1/compute/jobs/{run['job']}")
    assert job["state"] == "failed" and "fuel" in job["error"], job


OFFER = "offer storage, or bid more for it (`xsc market explain` says what the last deal needed): xsc market offer"


async def test_a_watch_whose_jobs_outputs_could_not_be_stored_names_the_job_in_its_last_error(node_factory,
                                                                                             monkeypatch) -> None:
    """A job whose outputs found no room names itself only in the command its hint gives (`xsc compute rerun ID`):
    the watch's last error keeps that hint whole, however long, and `xsc compute watches` shows it."""
    async def no_room(files, job):
        raise MarketNoDeal("no provider has room for the job's outputs", hint=OFFER)

    def outputs_find_no_room(node) -> None:
        monkeypatch.setattr(node.app[NODE].jobs.outputs, "store", no_room)

    node = await _watching_one_object(node_factory, "unstored", "sha256", {"argv": ["/in/data"]}, "s3://out/w/",
                                      outputs_find_no_room)

    async def failed():
        watch = (await _watches(node))["w"]
        return watch if watch["failures"] else None

    watch = await eventually_async(failed, "the datum to fail", 60)
    job = watch["last_run"]["job"]
    assert job is not None and job not in watch["last_error"].split(" (")[0], watch  # named in the hint alone
    assert watch["last_error"].startswith("in/x: the job ran, but its outputs could not be stored"), watch
    assert watch["last_error"].endswith(f"({OFFER}, then run it again with: xsc compute rerun {job})"), watch
    text = ok(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "watches",
                                      env={"XSC_TOKEN": node.app[TOKEN], "COLUMNS": "400"}))
    assert f"xsc compute rerun {job}" in " ".join(text.split()), text  # (wrapped as prose)


async def _watching_one_object(node_factory, name: str, fixture: str, spec: dict, to: str, prepare=None):
    """A node named `name` whose watch `w` runs the WASI fixture (its spec's other fields `spec`) over s3://raw/in/,
    which holds one object, in/x, and writes under `to` (`prepare`: done to the node before the watch is made)."""
    node = await node_factory(name)
    if prepare is not None:
        prepare(node)
    module = await deploy(node, fixture, wasi=True)
    for bucket in ("raw", "out"):
        await _call(node, "PUT", f"/v1/s3/buckets/{bucket}")
    await _put_object(node, "raw", "in/x", b"x")
    await _call(node, "POST", "/v1/compute/watches", {"name": "w", "spec": {"module": module, **spec},
                                                     "on": "s3://raw/in/", "to": to})
    return node


async def _ran(node, name: str = "w") -> dict | None:
    watch = (await _watches(node))[name]
    return watch if watch["runs"] else None


class _Recording:
    """An event loop as the watches' wake-ups see it: each one recorded, then scheduled on the real loop."""

    def __init__(self, loop, woken: list) -> None:
        self.loop, self.woken = loop, woken

    def call_soon_threadsafe(self, callback, *args):
        self.woken.append("woken")
        return self.loop.call_soon_threadsafe(callback, *args)


def _stored_object(node, bucket: str, key: str, data: bytes) -> None:
    status, stored = http(node.url, "POST", "/v1/store/files", data, {"Authorization": f"Bearer {node.token}"})
    assert status == 201, stored
    record = {"parts": [{"cap": stored["capability"], "size": len(data)}], "etag": hashlib.md5(data).hexdigest()}
    status, answer = api(node, "PUT", f"/v1/s3/buckets/{bucket}/object?key={key}", record)
    assert status == 200, answer


def _watch(node, name: str) -> dict:
    return next(w for w in api(node, "GET", "/v1/compute/watches")[1]["watches"] if w["name"] == name)


def _final(node, inputs: dict[str, bytes]) -> bool:
    """Whether every watch is done and the last stage wrote an object for every input."""
    listed = api(node, "GET", "/v1/s3/buckets/out/objects?prefix=c/&max_keys=1000")[1]["contents"]
    watches = api(node, "GET", "/v1/compute/watches")[1]["watches"]
    return len(listed) == len(inputs) and not any(w["backlog"] for w in watches)


@pytest.mark.slow
def test_a_kill_9_in_the_middle_of_a_chain_of_watches_loses_no_run_and_runs_none_twice(node_process) -> None:
    node = node_process("w")
    status, module = http(node.url, "POST", "/v1/modules?wasi=true", (WASM / "sha256.wasm").read_bytes(),
                          {"Authorization": f"Bearer {node.token}"})
    assert status in (200, 201), module
    for bucket in ("raw", "out"):
        assert api(node, "PUT", f"/v1/s3/buckets/{bucket}")[0] == 201
    inputs = {f"in/{n:03d}": b"datum %d\n" % n * 50 for n in range(60)}
    for key, data in inputs.items():
        _stored_object(node, "raw", key, data)
    spec = {"module": module["id"], "argv": ["/in/data"], "stdout_to_store": True, "outputs": False}
    for name, on, to in (("a", "s3://raw/in/", "s3://out/a/"), ("b", "s3://out/a/", "s3://out/b/"),
                         ("c", "s3://out/b/", "s3://out/c/")):
        status, made = api(node, "POST", "/v1/compute/watches", {"name": name, "spec": spec, "on": on, "to": to})
        assert status == 201, made
    eventually(lambda: _watch(node, "a")["runs"] >= 20 and _watch(node, "b")["runs"] >= 5, "the chain to be under way",
               60)
    node.kill()  # in the middle: datums of every stage running, stored, recorded
    node.start()
    eventually(lambda: _final(node, inputs), "every datum of every stage to be done after the restart", 180)
    for key, data in inputs.items():  # no run lost: the last stage's object is the SHA-256 three times over
        want = data
        for _ in range(3):
            want = hashlib.sha256(want).hexdigest().encode() + b"\n"
        record = api(node, "GET", f"/v1/s3/buckets/out/object?key=c/{key[3:]}")[1]
        status, body = http(node.url, "GET", f"/v1/store/files/{record['parts'][0]['cap']}", b"",
                            {"Authorization": f"Bearer {node.token}"})
        assert body == want, key
    records = api(node, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
    runs = Counter(r["record"]["job"]["id"] for r in records if "job" in r["record"])
    assert len(runs) == 3 * len(inputs) and set(runs.values()) == {1}, runs  # none run (nor paid) twice
    status, report = api(node, "GET", "/v1/ledger/verify")
    assert status == 200 and report["ok"], report


def _target(node, key: str) -> dict | None:
    status, record = api(node, "GET", f"/v1/s3/buckets/out/object?key={key}")
    return record if status == 200 else None


def _killed_while_written_over(node, before: dict | None, data: bytes, then: bytes) -> dict:
    """The datum's input put as `data`, then as `then` once the datum's run over `data` has begun (its input read), and
    the node killed once that run's first object is written (over `before`), before its last, then started again: the
    first object as the run cut short wrote it.  The input is changed before the objects are written, not between
    the first and the kill: the kill follows what it waits for at once, so the 200 writes are its window."""
    began = {j["id"] for j in api(node, "GET", "/v1/compute/jobs?limit=100")[1]["jobs"]}
    _stored_object(node, "raw", "in/x", data)
    eventually(lambda: {j["id"] for j in api(node, "GET", "/v1/compute/jobs?limit=100")[1]["jobs"]} - began,
               "the datum's run over its input to begin", 60)
    _stored_object(node, "raw", "in/x", then)
    # (the run stores its 200 outputs before it writes an object: a minute and more on a loaded machine)
    first = eventually(lambda: (o := _target(node, "w/x/f00000000")) and o != before and o, "the datum's first object",
                       180, poll=0.005)
    node.kill()
    db = plyvel.DB(str(node.data_dir / DB_DIR))
    try:  # killed while the datum wrote its objects: its last not written by the run cut short
        last = db.get(keys.object_key("out", "w/x/f00000199"))
    finally:
        db.close()
    assert last is None or codec.loads(last)["metadata"] != first["metadata"], "the kill came after the last object"
    node.start()
    return first


def _written_over(node, cut_short: dict) -> str:
    """Once the datum has run again: every object its run wrote (none the run cut short did), that run's job."""
    def done_or_failed() -> dict | None:
        watch = _watch(node, "w")
        if watch["failures"]:
            return watch
        last = _target(node, "w/x/f00000199")
        listed = api(node, "GET", "/v1/s3/buckets/out/objects?prefix=w/&max_keys=1000")[1]["contents"]
        return watch if not watch["backlog"] and len(listed) == 200 and last and \
            last["metadata"] != cut_short["metadata"] else None

    watch = eventually(done_or_failed, "the datum to run again and write its objects", 120)
    assert watch["failures"] == 0, watch["last_error"]
    jobs = {_target(node, f"w/x/f{n:08d}")["metadata"]["xsc-job"] for n in range(0, 200, 33)}
    assert len(jobs) == 1 and jobs != {cut_short["metadata"]["xsc-job"]}, jobs
    eventually(lambda: cut_short["parts"][0]["cap"] not in
               {f["capability"] for f in api(node, "GET", "/v1/store/files")[1]["files"]},
               "the file of the object the run cut short wrote to be removed", 60)
    return jobs.pop()


@pytest.mark.slow
@pytest.mark.timeout(300)  # four runs of a datum that stores 200 files, two restarts: past the default 120 s under load
def test_a_kill_9_while_a_datum_writes_its_objects_leaves_them_the_watchs_for_its_changed_input(node_process) -> None:
    """The node killed while a datum writes its 200 objects (not recorded done yet), its input changed just before:
    the next start runs the datum again and writes over every object the run cut short wrote (they are the watch's,
    not another's), and removes their files.  So too when the input changed back to what the datum's last run read."""
    node = node_process("w")
    token = {"Authorization": f"Bearer {node.token}"}
    status, module = http(node.url, "POST", "/v1/modules?wasi=true", (WASM / "many_outputs.wasm").read_bytes(), token)
    assert status in (200, 201), module
    for bucket in ("raw", "out"):
        assert api(node, "PUT", f"/v1/s3/buckets/{bucket}")[0] == 201
    status, made = api(node, "POST", "/v1/compute/watches", {"name": "w", "spec": {"module": module["id"]},
                                                              "on": "s3://raw/in/", "to": "s3://out/w/"})
    assert status == 201, made
    cut_short = _killed_while_written_over(node, None, b"first", b"second")
    second = _written_over(node, cut_short)
    cut_short = _killed_while_written_over(node, _target(node, "w/x/f00000000"), b"third", b"second")
    assert _written_over(node, cut_short) == second


@pytest.mark.slow
def test_a_datums_job_a_kill_9_cut_short_after_its_input_changed_leaves_no_file_behind(tmp_path) -> None:
    """The gateway killed while a provider runs a datum's job, its input changed just before: the start finishes the
    job from the provider's answer, the pass runs the datum over the new input, and the file of the job cut short,
    which no object will hold, is removed (not stored, and paid for, for good)."""
    started: list = []
    try:
        (gateway, provider), _ = start_star(tmp_path, 2, {"XSC_MARKET_OFFER_COMPUTE": "false"},
                                            {"XSC_MARKET_OFFER_STORAGE": "false"}, started)
        eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["participants"] == 2, "the market")
        status, module = http(gateway.url, "POST", "/v1/modules?wasi=true", (WASM / "sha256.wasm").read_bytes(),
                              {"Authorization": f"Bearer {gateway.token}"})
        assert status in (200, 201), module
        for bucket in ("raw", "out"):
            assert api(gateway, "PUT", f"/v1/s3/buckets/{bucket}")[0] == 201
        first = os.urandom(48 << 20)  # hashed for a while on the provider
        _stored_object(gateway, "raw", "in/x", first)
        spec = {"module": module["id"], "argv": ["/in/data"], "stdout_to_store": True, "outputs": False}
        status, made = api(gateway, "POST", "/v1/compute/watches",
                           {"name": "w", "spec": spec, "on": "s3://raw/in/", "to": "s3://out/w/"})
        assert status == 201, made
        eventually(lambda: api(provider, "GET", "/v1/node/status")[1]["compute"]["running"] >= 1,
                   "the provider running the datum's job", 120, poll=0.01)
        _stored_object(gateway, "raw", "in/x", b"second")
        gateway.kill()
        db = plyvel.DB(str(gateway.data_dir / DB_DIR))
        try:
            states = [codec.loads(v).get("state") for _, v in db.iterator(prefix=keys.JOBS)]
        finally:
            db.close()
        assert "running" in states, f"the kill came after the job ended: {states}"
        gateway.start()
        digest = hashlib.sha256(b"second").hexdigest().encode() + b"\n"

        def written() -> bool:
            record = _target(gateway, "w/x")
            return bool(record) and http(gateway.url, "GET", f"/v1/store/files/{record['parts'][0]['cap']}", b"",
                                         {"Authorization": f"Bearer {gateway.token}"})[1] == digest

        eventually(written, "the datum run over its new input", 120)
        jobs = [api(gateway, "GET", f"/v1/compute/jobs/{j['id']}")[1]
                for j in api(gateway, "GET", "/v1/compute/jobs?limit=100")[1]["jobs"]]
        (cut_short,) = [j for j in jobs if j["inputs"][0]["sha256"] == hashlib.sha256(first).hexdigest()]
        assert cut_short["state"] == "done", cut_short  # finished from the provider's answer
        cap = cut_short["outputs"][0]["capability"]
        eventually(lambda: cap not in {f["capability"] for f in api(gateway, "GET", "/v1/store/files")[1]["files"]},
                   "the file of the job cut short, which no object holds, to be removed", 30)
    finally:
        kill_all(started)
