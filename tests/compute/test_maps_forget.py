"""`xsc compute unmap MAP_ID [--cancel]` (DELETE /v1/compute/maps/ID): a map's record forgotten, its jobs' kept."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import plyvel
import pytest

from tests.support.cli import ThreadedNode, error_line, ok
from tests.support.compute import WASM, fake_caps
from tests.support.nodes import node_config
from tests.support.waiting import eventually
from xsc import keys
from xsc.node.appkeys import NODE
from xsc.node.datadir import DB_DIR

SHA256 = str(WASM / "sha256.wasm")
SPIN = str(WASM / "spin.wasm")  # until its fuel or time runs out, or it is cancelled


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One node for the file's tests that run in-process (each makes maps of its own)."""
    node = ThreadedNode(node_config(tmp_path_factory.mktemp("unmap"))).start()
    yield node
    node.stop()


def _call(node, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{node.url}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {node.token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _map_body(node, module_path: str, n: int = 1, inputs: list[str] | None = None) -> dict:
    caps = inputs or [ok(node.xsc("store", "put", "-", input=f"unmap {i}\n".encode())).split()[0] for i in range(n)]
    module = ok(node.xsc("compute", "deploy", module_path, "--wasi")).strip()
    return {"spec": {"module": module}, "as": "-", "over": caps[:10], "inputs": caps}  # (sources: 1,000 at most)


def _pending_map(node, module_path: str, n: int = 1, inputs: list[str] | None = None) -> dict:
    """A map recorded and none of its inputs run: it waits for --resume."""
    status, made = _call(node, "POST", "/v1/compute/maps", _map_body(node, module_path, n, inputs))
    assert status == 201, made
    return made


def _ids(node) -> list[str]:
    return [m["id"] for m in json.loads(ok(node.xsc("compute", "maps", "--json")))["maps"]]


def test_a_map_whose_inputs_all_ended_is_forgotten_at_once_and_its_jobs_records_stay(shared) -> None:
    caps = [ok(shared.xsc("store", "put", "-", input=body)).split()[0] for body in (b"one\n", b"two\n")]
    ran = json.loads(ok(shared.xsc("compute", "map", SHA256, "--over", caps[0], "--over", caps[1], "--as", "-",
                                   "--json")))
    mid, jobs = ran["map"], [r["job"] for r in ran["results"]]
    gone = shared.xsc("compute", "unmap", mid)
    assert gone.returncode == 0 and gone.stdout == b"", gone.stderr
    assert gone.stderr.decode() == f"forgot the map {mid} (2 of 2 inputs done, 0 failed); its jobs' records and " \
        "outputs stay (xsc compute jobs)\n", gone.stderr
    assert mid not in _ids(shared)
    for job in jobs:  # the jobs' own records stay
        assert json.loads(ok(shared.xsc("compute", "job", job, "--json")))["state"] == "done"
    assert error_line(shared.xsc("compute", "map", "--resume", mid)) == \
        f"xsc: error: no map {mid} (list them with: xsc compute maps)"


def test_a_map_with_inputs_still_to_run_is_kept_unless_they_are_given_up(shared) -> None:
    made = _pending_map(shared, SHA256, n=2)
    mid = made["id"]
    assert error_line(shared.xsc("compute", "unmap", mid)) == (
        f"xsc: error: 2 of the map {mid}'s 2 inputs are still to run: forgetting it gives up `--resume` for them "
        f"(run them: xsc compute map --resume {mid}; or give them up: xsc compute unmap {mid} --cancel)")
    assert mid in _ids(shared)
    gone = json.loads(ok(shared.xsc("compute", "unmap", mid[:8], "--cancel", "--json")))  # by its prefix, as --resume
    assert gone == {"forgotten": mid, "inputs": 2, "done": 0, "failed": 0, "given_up": 2}, gone
    assert mid not in _ids(shared) and _call(shared, "GET", f"/v1/compute/maps/{mid}")[0] == 404


def test_a_map_whose_input_runs_now_is_kept_until_its_job_ends_or_cancel_cancels_that_job(tmp_path) -> None:
    from xsc.errors import JobCancelled

    node = ThreadedNode(node_config(tmp_path, compute={"timeout": 600, "fuel": 200_000_000_000})).start()
    try:
        made = _pending_map(node, SPIN)  # (it spins until cancelled)
        mid, maps = made["id"], node.app[NODE].maps
        running = node.submit(maps.run_input(mid, "0"))

        def started():
            results = _call(node, "GET", f"/v1/compute/maps/{mid}")[1]["results"]
            return results[0].get("job") and results[0]["state"] == "running" and results[0]["job"]

        job = eventually(started, "the input's job named in the map's record", timeout=60, poll=0.05)
        assert error_line(node.xsc("compute", "unmap", mid)) == (
            f"xsc: error: 1 of the map {mid}'s inputs run now (input 0 first): their ends are to be written in the "
            f"map's record (follow it with: xsc compute job {job}; forget the map once they end: xsc compute unmap "
            f"{mid}; or cancel them too: xsc compute unmap {mid} --cancel)")
        assert mid in _ids(node)
        gone = json.loads(ok(node.xsc("compute", "unmap", mid, "--cancel", "--json")))
        assert gone == {"forgotten": mid, "inputs": 1, "done": 0, "failed": 1, "given_up": 0}, gone
        with pytest.raises(JobCancelled):
            running.result(60)
        cancelled = json.loads(ok(node.xsc("compute", "job", job, "--json")))
        assert cancelled["state"] == "cancelled" and cancelled["executions"] == 1 and cancelled["outputs"] == []
        assert mid not in _ids(node)
    finally:
        node.stop()


def test_an_unknown_map_and_a_bad_cancel_are_refused_as_problems(shared) -> None:
    for typed in ("0" * 32, "../../v1/store", "0" * 8):
        status, problem = _call(shared, "DELETE", f"/v1/compute/maps/{urllib.request.quote(typed, safe='')}")
        assert (status, problem["code"]) == (404, "map-not-found"), problem
    assert error_line(shared.xsc("compute", "unmap", "0" * 32)) == \
        f"xsc: error: no map {'0' * 32} (list them with: xsc compute maps)"
    mid = _pending_map(shared, SHA256)["id"]
    status, problem = _call(shared, "DELETE", f"/v1/compute/maps/{mid}?cancel=maybe")
    assert (status, problem["code"]) == (400, "invalid-argument") and "cancel must be true or false" in \
        problem["detail"], problem
    assert mid in _ids(shared)  # refused: nothing forgotten
    assert _call(shared, "DELETE", f"/v1/compute/maps/{mid}?cancel=true")[0] == 200


def test_a_full_node_names_the_command_that_forgets_a_map(cli_node, monkeypatch) -> None:
    from xsc.compute import maps as maps_module

    node = cli_node()  # its own: the maps it keeps are this test's alone
    monkeypatch.setattr(maps_module, "MAX_MAPS", 1)
    body = _map_body(node, SHA256)
    status, made = _call(node, "POST", "/v1/compute/maps", body)
    assert status == 201, made
    status, problem = _call(node, "POST", "/v1/compute/maps", body)
    assert status == 409 and problem["hint"].endswith("or give that up: xsc compute unmap MAP_ID --cancel"), problem
    ok(node.xsc("compute", "unmap", made["id"], "--cancel"))
    assert _call(node, "POST", "/v1/compute/maps", body)[0] == 201  # room again


@pytest.mark.slow
def test_a_node_killed_as_it_forgets_a_map_keeps_it_whole_or_not_at_all(node_process) -> None:
    """A map of 10,000 inputs forgotten (a write of some 400 KB to the database's log, in several pieces), the node
    killed -9 as soon as that log grows: after the restart the map is there with every input, or gone with every
    input's record, never a head without its inputs or inputs no head names."""
    node = node_process("n")
    mid = _pending_map(node, SHA256, inputs=fake_caps(10_000))["id"]
    db_dir = node.data_dir / DB_DIR

    def logged() -> int:
        return sum(f.stat().st_size for f in db_dir.glob("*.log"))

    before = logged()
    request = (f"DELETE /v1/compute/maps/{mid}?cancel=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               f"{node.token}\r\nContent-Length: 0\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", node.port), timeout=60) as sock:
        sock.sendall(request)
        sock.setblocking(False)
        answered = False
        while logged() == before and not answered:  # the forget's write begun (or the answer back: it is done)
            try:
                answered = sock.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                pass
        node.kill()
    db = plyvel.DB(str(db_dir))
    try:
        key = bytes.fromhex(mid)
        inputs = sum(1 for _ in db.iterator(prefix=keys.map_inputs(key), include_value=False))
        parts = (db.get(keys.map_(key)) is not None, db.get(keys.map_asked(key)) is not None)
    finally:
        db.close()
    assert (parts, inputs) in {((True, True), 10_000), ((False, False), 0)}, (parts, inputs)
    node.start()
    if parts[0]:  # kept whole: listed with every input, and forgotten now
        assert _ids(node) == [mid] and len(_call(node, "GET", f"/v1/compute/maps/{mid}")[1]["results"]) == 10_000
        ok(node.xsc("compute", "unmap", mid, "--cancel"))
    assert _ids(node) == [] and error_line(node.xsc("compute", "unmap", mid)).startswith(f"xsc: error: no map {mid}")
