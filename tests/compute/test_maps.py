"""Maps: one job per input, with a record of their own that a map cut short goes on from (compute/maps.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.support.cli import ThreadedNode, error_line, ok
from tests.support.compute import WASM, fake_caps
from tests.support.nodes import node_config, start_xsc
from tests.support.waiting import eventually
from xsc.compute.maps import MapInput
from xsc.node.appkeys import NODE

SHA256 = str(WASM / "sha256.wasm")
SLOW = str(WASM / "slow.wasm")  # about a second a run, and not deterministic: a run again is paid again


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One node for the file's tests that run in-process (each makes maps of its own)."""
    node = ThreadedNode(node_config(tmp_path_factory.mktemp("maps"))).start()
    yield node
    node.stop()


def _caps(node, *bodies: bytes) -> list[str]:
    return [ok(node.xsc("store", "put", "-", input=body)).split()[0] for body in bodies]


def _over(caps: list[str]) -> list[str]:
    return [arg for cap in caps for arg in ("--over", cap)]


@pytest.mark.slow
def test_a_map_whose_node_is_killed_goes_on_with_resume_and_runs_no_input_done_again(node_process, tmp_path) -> None:
    node = node_process("m", env={"XSC_COMPUTE_TIMEOUT": "60"})  # a loaded machine takes a while over SLOW's second
    spec = tmp_path / "slow.toml"
    spec.write_text(f'module = "{SLOW}"\n[limits]\ntimeout = 60\n')
    caps = _caps(node, *(f"input {n}\n".encode() for n in range(2)))
    mapping = start_xsc("--data-dir", str(node.data_dir), "compute", "map", str(spec), *_over(caps), "--as", "-",
                        "--parallel", "1", "--json", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    try:
        def one_done():
            found = json.loads(ok(node.xsc("compute", "maps", "--json")))["maps"]
            return found and found[0]["done"] >= 1 and found[0]

        made = eventually(one_done, "the map's record counting an input done", timeout=60, poll=0.05)
        node.kill()
        _, stderr = mapping.communicate(timeout=60)
    finally:
        if mapping.poll() is None:
            mapping.kill()
            mapping.communicate()
    mid = made["id"]
    assert mapping.returncode == 1 and f"resume it with: xsc compute map --resume {mid}" in stderr.decode(), stderr
    node.start()
    before = json.loads(ok(node.xsc("compute", "map", "--resume", mid, "--json")))["results"]
    assert made["inputs"] == 2 and [r["input"] for r in before] == caps and all(r["state"] == "done" for r in before)
    assert before[0]["replayed"] and before[0]["charged"] == 0 and not before[1]["replayed"], before
    listed = json.loads(ok(node.xsc("compute", "maps", "--json")))["maps"]
    assert [(m["id"], m["done"], m["failed"]) for m in listed] == [(mid, 2, 0)], listed
    for row in before:  # each input's job ran once, paid once: the one done before the kill was not run again
        job = json.loads(ok(node.xsc("compute", "job", row["job"], "--json")))
        assert job["executions"] == 1 and job["state"] == "done" and row["outputs"] == [], job
    again = json.loads(ok(node.xsc("compute", "map", "--resume", mid, "--json")))["results"]
    assert all(r["state"] == "done" and r["replayed"] and r["charged"] == 0 for r in again), again
    assert [r["job"] for r in again] == [r["job"] for r in before]


def test_a_map_resumed_runs_only_the_inputs_not_done(shared) -> None:
    caps = _caps(shared, b"resumed one\n", b"resumed two\n")
    first = shared.xsc("compute", "map", SHA256, *_over(caps), "--as", "-", "--json")
    results, mid = json.loads(first.stdout)["results"], json.loads(first.stdout)["map"]
    assert first.returncode == 0 and [r["stdout"] for r in results] == [
        hashlib.sha256(b"resumed one\n").hexdigest() + "\n", hashlib.sha256(b"resumed two\n").hexdigest() + "\n"]
    assert json.loads(ok(shared.xsc("compute", "maps", "--json")))["maps"][0]["id"] == mid  # the newest first
    again = shared.xsc("compute", "map", "--resume", mid, SHA256, *_over(caps), "--as", "-", "--json")
    assert again.returncode == 0, again.stderr  # its own arguments, given again: the same map
    rows = json.loads(again.stdout)["results"]
    assert [(r["job"], r["state"], r["replayed"], r["charged"]) for r in rows] == [
        (r["job"], "done", True, 0) for r in results]
    for r in results:
        assert json.loads(ok(shared.xsc("compute", "job", r["job"], "--json")))["executions"] == 1
    by_prefix = json.loads(ok(shared.xsc("compute", "map", "--resume", mid[:8], "--json")))  # as a job is found
    assert by_prefix["map"] == mid and [r["job"] for r in by_prefix["results"]] == [r["job"] for r in results]


def test_a_map_whose_jobs_printed_their_answers_says_where_they_are_and_one_that_stored_them_says_nothing(
        shared, tmp_path) -> None:
    # sha256.wasm prints its digest: a manifest of input, state and job alone would seem to have lost it.
    caps = _caps(shared, b"printed one\n", b"printed two\n")
    mapped = shared.xsc("compute", "map", SHA256, *_over(caps), "--as", "-")
    out, err = mapped.stdout.decode(), mapped.stderr.decode()
    assert mapped.returncode == 0 and [line.split()[:2] for line in out.splitlines()] == [
        [cap, "done"] for cap in caps], out
    assert err.strip().splitlines()[-1] == (
        "xsc: 2 jobs printed to stdout, which the manifest does not show: --json gives each job's stdout, and "
        "stdout_to_store = true in a spec stores it as an output"), err
    spec = tmp_path / "stored.toml"
    spec.write_text(f'module = "{SHA256}"\nstdout_to_store = true\n')
    stored = shared.xsc("compute", "map", str(spec), *_over(caps), "--as", "-")
    assert stored.returncode == 0 and b"printed to stdout" not in stored.stderr, stored.stderr
    assert all(len(line.split()) == 4 for line in stored.stdout.splitlines()), stored.stdout  # its output listed
    mid = json.loads(ok(shared.xsc("compute", "maps", "--json")))["maps"][0]["id"]
    resumed = shared.xsc("compute", "map", "--resume", mid)  # answered from the record, which keeps no stdout
    assert resumed.returncode == 0 and b"printed to stdout" not in resumed.stderr, resumed.stderr


def test_an_input_whose_job_ended_after_its_map_last_heard_of_it_is_answered_from_the_jobs_record(shared) -> None:
    """A kill -9 between the job's record written done (and paid) and the map's record of it: the resume takes the
    job's answer from its record, which names the map's input, and does not run (or pay) the job again."""
    (cap,) = _caps(shared, b"ended unheard\n")
    module = ok(shared.xsc("compute", "deploy", SHA256, "--wasi")).strip()
    made = _posted(shared, "/v1/compute/maps", {"spec": {"module": module}, "as": "-", "over": [cap], "inputs": [cap]})
    maps = shared.app[NODE].maps
    ran = shared.submit(maps.jobs.run({"module": module, "stdin": cap}, tag=MapInput(maps, made["id"], 0))).result(60)
    rows = json.loads(ok(shared.xsc("compute", "map", "--resume", made["id"], "--json")))["results"]
    assert [(r["job"], r["state"], r["replayed"], r["charged"]) for r in rows] == [(ran["id"], "done", True, 0)], rows
    assert json.loads(ok(shared.xsc("compute", "job", ran["id"], "--json")))["executions"] == 1
    listed = json.loads(ok(shared.xsc("compute", "maps", "--json")))["maps"]
    assert (listed[0]["id"], listed[0]["done"]) == (made["id"], 1), listed


def _posted(node, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{node.url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {node.token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_resuming_a_map_this_node_has_no_record_of_is_refused(shared) -> None:
    line = error_line(shared.xsc("compute", "map", "--resume", "0" * 32))
    assert line == f"xsc: error: no map {'0' * 32} (list them with: xsc compute maps)", line
    line = error_line(shared.xsc("compute", "map", "--resume", "0" * 8))
    assert line == f"xsc: error: no map starts with {'0' * 8} (see them with: xsc compute maps)", line
    line = error_line(shared.xsc("compute", "map", "--resume", "not-a-map"))
    assert line == "xsc: error: no map not-a-map (list them with: xsc compute maps)", line
    given = shared.xsc("compute", "map", SHA256)  # neither a map to resume nor inputs to make one of
    assert given.returncode == 2 and b"give the MODULE and at least one --over (or --resume MAP_ID)" in given.stderr


def test_an_input_of_a_map_that_is_not_there_is_refused(shared) -> None:
    (cap,) = _caps(shared, b"one input\n")
    module = ok(shared.xsc("compute", "deploy", SHA256, "--wasi")).strip()
    made = _posted(shared, "/v1/compute/maps", {"spec": {"module": module}, "as": "-", "inputs": [cap]})
    for path, status, said in [(f"{'0' * 32}/inputs/0", 404, f"no map {'0' * 32}"),
                               (f"{made['id']}/inputs/1", 400, f"the map {made['id']} has inputs 0 to 0, not '1'"),
                               (f"{made['id']}/inputs/-1", 400, "not '-1'"), (f"{made['id']}/inputs/%C2%B2", 400, "not")]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            _posted(shared, f"/v1/compute/maps/{path}", {})
        problem = json.loads(refused.value.read())
        assert refused.value.code == status and said in problem["detail"], problem


def test_a_resume_with_other_arguments_than_its_maps_is_refused_and_runs_nothing(shared) -> None:
    caps = _caps(shared, b"other arguments\n")
    ok(shared.xsc("compute", "map", SHA256, *_over(caps), "--as", "-"))
    mid = json.loads(ok(shared.xsc("compute", "maps", "--json")))["maps"][0]["id"]
    runs = len(json.loads(ok(shared.xsc("compute", "jobs", "--json", "--limit", "1000")))["jobs"])
    for other in ([SHA256, *_over(_caps(shared, b"another input\n"))], [str(WASM / "wc.wasm")], ["--as", "/in/x"]):
        line = error_line(shared.xsc("compute", "map", "--resume", mid, *other))
        assert line.startswith(f"xsc: error: the map {mid} ran over its own inputs, not these: ") and line.endswith(
            f"(resume it without them: xsc compute map --resume {mid}; or map these as a new map, without --resume)"
        ), line
    assert len(json.loads(ok(shared.xsc("compute", "jobs", "--json", "--limit", "1000")))["jobs"]) == runs


def test_a_map_over_more_inputs_than_it_takes_is_refused_before_its_module_is_deployed(shared) -> None:
    module = WASM / "fibonacci.wasm"
    line = error_line(shared.xsc("compute", "map", str(module), *_over(fake_caps(10_001)), "--as", "-"))
    assert line == "xsc: error: more than 10,000 inputs: a map runs over at most 10,000 (map a narrower prefix, or " \
        "fewer capabilities at once)", line
    listed = json.loads(ok(shared.xsc("compute", "modules", "--json")))
    ids = [m["id"] for m in (listed["modules"] if isinstance(listed, dict) else listed)]
    assert hashlib.sha256(module.read_bytes()).hexdigest() not in ids  # nothing deployed, nothing spent


def test_a_map_over_an_empty_prefix_says_it_holds_no_object_and_how_to_look_before_its_module_is_deployed(shared):
    module = WASM / "arith.wasm"  # deployed by no other test here
    ok(shared.xsc("s3", "mb", "empty"))
    for over, look in [("s3://empty/", "xsc s3 ls empty"), ("s3://empty/logs/", "xsc s3 ls empty --prefix logs/")]:
        line = error_line(shared.xsc("compute", "map", str(module), "--over", over))
        assert line == f"xsc: error: no object under {over}: a map runs over at least one input (see what it holds " \
            f"with: {look}; put objects there first, or map another prefix)", line
    listed = json.loads(ok(shared.xsc("compute", "modules", "--json")))
    ids = [m["id"] for m in (listed["modules"] if isinstance(listed, dict) else listed)]
    assert hashlib.sha256(module.read_bytes()).hexdigest() not in ids  # nothing deployed, nothing spent


def test_a_map_of_several_over_runs_over_those_that_hold_inputs_and_names_each_empty_prefix_in_one_line(shared):
    ok(shared.xsc("s3", "mb", "hollow"))
    caps = _caps(shared, b"the one input\n")
    done = shared.xsc("compute", "map", SHA256, "--over", "s3://hollow/logs/", "--over", caps[0], "--over",
                      "s3://hollow/", "--json")
    assert [r["state"] for r in json.loads(ok(done))["results"]] == ["done"], done
    warned = [line for line in done.stderr.decode().splitlines() if line.startswith("xsc: warning: no object")]
    assert warned == ["xsc: warning: no object under s3://hollow/logs/, s3://hollow/: the map runs over the 1 input "
                      "of the other --over (see what it holds with: xsc s3 ls hollow --prefix logs/)"], done.stderr
    # every --over empty: no input at all, an error (as one empty --over is), naming them all
    line = error_line(shared.xsc("compute", "map", SHA256, "--over", "s3://hollow/logs/", "--over", "s3://hollow/"))
    assert line.startswith("xsc: error: no object under s3://hollow/logs/, s3://hollow/: a map runs over at least "
                           "one input"), line


def test_a_map_whose_spec_the_node_would_refuse_is_refused_before_its_module_is_deployed(shared, tmp_path) -> None:
    module = WASM / "factorial.wasm"
    spec = tmp_path / "spec.toml"
    for text, said in [(f'module = "{module}"\nreplicas = 9\n', "replicas must be a whole number from 1 to 7"),
                       (f'module = "{module}"\nstdin = "-"\n', "a map's jobs cannot read this command's stdin")]:
        spec.write_text(text)
        line = error_line(shared.xsc("compute", "map", str(spec), *_over(fake_caps(1))))
        listed = json.loads(ok(shared.xsc("compute", "modules", "--json")))
        ids = [m["id"] for m in (listed["modules"] if isinstance(listed, dict) else listed)]
        assert hashlib.sha256(module.read_bytes()).hexdigest() not in ids, line  # nothing deployed
        assert line.startswith(f"xsc: error: {said}"), line


@pytest.mark.parametrize("body, status, said", [
    ({"spec": {}, "as": "-", "inputs": fake_caps(10_001)}, 400, "a map runs over 1 to 10,000 inputs, not 10001"),
    ({"spec": {}, "as": "-", "inputs": []}, 400, "a map runs over 1 to 10,000 inputs, not 0"),
    ({"spec": {}, "as": "-", "inputs": ["x" * 3000]}, 400, "an input is a capability or s3://BUCKET/KEY of at most"),
    ({"spec": {"module": "a" * 64}, "as": "-", "inputs": ["s3://b/k"]}, 400, "--as -: an object, s3://b/k, cannot"),
    ({"spec": {"module": "a" * 64}, "as": "-", "inputs": fake_caps(1)}, 404, "module"),
    ({"spec": {}, "inputs": fake_caps(1), "extra": 1}, 400, "a map has no field extra"),
])
def test_a_map_the_node_cannot_run_is_refused_before_it_is_recorded(shared, body, status, said) -> None:
    before = json.loads(ok(shared.xsc("compute", "maps", "--json")))["maps"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        _posted(shared, "/v1/compute/maps", body)
    problem = json.loads(refused.value.read())
    assert refused.value.code == status and said in problem["detail"], problem
    assert json.loads(ok(shared.xsc("compute", "maps", "--json")))["maps"] == before


def test_a_new_map_forgets_the_oldest_ended_map_never_one_with_inputs_still_to_run(cli_node, monkeypatch) -> None:
    from xsc.compute import maps as maps_module

    node = cli_node()  # its own: the maps it keeps are this test's alone
    (cap,) = _caps(node, b"kept while it runs\n")
    module = ok(node.xsc("compute", "deploy", SHA256, "--wasi")).strip()
    body = {"spec": {"module": module}, "as": "-", "over": [cap], "inputs": [cap]}
    maps = node.app[NODE].maps
    monkeypatch.setattr(maps_module, "MAX_MAPS", 3)
    unfinished = _posted(node, "/v1/compute/maps", body)  # its input never run: it waits for --resume
    made = []
    for _ in range(4):  # past three, each forgets the oldest ended map, never the unfinished one
        made.append(_posted(node, "/v1/compute/maps", body)["id"])
        node.submit(maps.run_input(made[-1], "0")).result(60)
    assert {m["id"] for m in maps.list()} == {unfinished["id"], *made[-2:]}
    assert maps.map(unfinished["id"])["results"][0]["state"] == "pending"

    monkeypatch.setattr(maps_module, "MAX_MAPS", 2)
    second = _posted(node, "/v1/compute/maps", body)  # forgets the two oldest ended
    kept = {m["id"] for m in maps.list()}
    assert kept == {unfinished["id"], second["id"]}  # two maps with inputs still to run: neither can go
    with pytest.raises(urllib.error.HTTPError) as refused:
        _posted(node, "/v1/compute/maps", body)
    problem = json.loads(refused.value.read())
    assert (refused.value.code, problem["code"]) == (409, "conflict"), problem
    assert problem["detail"] == "this node keeps 2 maps, and 2 of them have inputs still to run: a new map would " \
        "forget one whose work is in flight or waits to be resumed", problem
    assert problem["hint"] == "list them with: xsc compute maps; end one by running what is left of it: " \
        "xsc compute map --resume MAP_ID, or give that up: xsc compute unmap MAP_ID --cancel", problem
    assert {m["id"] for m in maps.list()} == kept  # nothing forgotten, nothing made
    rows = json.loads(ok(node.xsc("compute", "map", "--resume", unfinished["id"], "--json")))["results"]
    assert [r["state"] for r in rows] == ["done"]  # ended: the next map forgets it
    newest = _posted(node, "/v1/compute/maps", body)
    assert {m["id"] for m in maps.list()} == {second["id"], newest["id"]}
