"""A job's outputs held to its bytes_out while it runs (compute/out_bound.py): a job that writes or creates files
without end is stopped near its limit, refused as a job over its limit is, and nothing of it is stored."""

from __future__ import annotations

import json
import re

import pytest
import wasmtime

from tests.support.cli import error_line, ok
from tests.support.compute import WASM, deploy
from tests.support.jobs import QUIET, balances, compiled_for, network, run_job, settle, verified
from xsc.compute import provenance
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

HOARD = str(WASM / "hoard.wasm")
OUTPUTS = str(WASM / "outputs.wasm")
CAP = 2 << 20
# What a job may write past its bytes_out before the check at the next tick stops it (out_bound.py): a tick's
# writes into the page cache (tens of MiB at a few GB/s, more if the tick comes late), and one 64 KiB write; far
# under what it writes unchecked before its timeout.
OVERSHOOT = 256 << 20


def written(text: str) -> int:
    """The bytes a refusal says a job had written when it was stopped."""
    found = re.search(r"its outputs were ([\d,]+) bytes, over its bytes_out", text)
    assert found, text
    return int(found[1].replace(",", ""))


def stored_files(node) -> list[str]:
    listed = json.loads(ok(node.xsc("store", "ls", "--json")))
    return [f["capability"] for f in (listed["files"] if isinstance(listed, dict) else listed)]


def work_left(node) -> list:
    return [p for p in (node.data_dir / "jobs").glob("job-*")] if (node.data_dir / "jobs").exists() else []


@pytest.mark.parametrize("entrypoint", ["_start", "hidden"])
def test_a_job_writing_without_end_is_stopped_near_its_bytes_out(xsc_node, entrypoint):
    before = stored_files(xsc_node)
    result = xsc_node.xsc("compute", "run", HOARD, "--entrypoint", entrypoint, "--no-stdin",
                          "--bytes-out", str(CAP), "--timeout", "5")  # (its bound stops it first, however busy)
    line = error_line(result)
    assert result.returncode != 0
    assert f"over its bytes_out ({CAP:,})" in line and "nothing of its outputs is stored" in line, line
    assert CAP < written(line) <= CAP + OVERSHOOT, line
    assert stored_files(xsc_node) == before
    assert work_left(xsc_node) == []  # its work directory, all it wrote with it, is gone


# The time a job making entries is given: it is stopped as it makes its 1,025th, long before this, yet on a machine
# loaded by other suites its thread can make fewer than that in 5 s, and then ends at its deadline (refused for the
# 256 files it left, not for the entries it made).  Under the test's own time limit.
PATIENT = 60


@pytest.mark.parametrize("entrypoint, why", [("files", "it made more than 1,024 files and directories in /out"),
                                              ("dirs", "it made directories in /out more than 64 deep")])
def test_a_job_making_files_without_end_is_stopped(cli_node, entrypoint, why):
    xsc_node = cli_node(compute={"timeout": PATIENT})
    before = stored_files(xsc_node)
    line = error_line(xsc_node.xsc("compute", "run", HOARD, "--entrypoint", entrypoint, "--no-stdin",
                                   "--timeout", str(PATIENT)))
    assert why in line and "make at most 1,024 files and directories in /out" in line, line
    assert "nothing of its outputs is stored" in line, line
    assert stored_files(xsc_node) == before
    assert work_left(xsc_node) == []


def test_a_job_leaving_outputs_up_to_its_bytes_out_succeeds(xsc_node):
    data = b"x" * (CAP - len(b"alpha\n") - len(b"bravo bravo\n"))  # out/c.txt is a copy of its stdin
    run = json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--bytes-out", str(CAP), "--json", input=data)))
    assert run["state"] == "done" and sum(o["size"] for o in run["outputs"]) == CAP, run


async def test_a_provider_stops_a_strangers_job_writing_without_end_and_is_paid_not_struck(node_factory,
                                                                                          monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "hoard", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike",
                        lambda node, why, **kw: struck.append(node) or False)
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": module, "limits": {"bytes_out": CAP, "timeout": 2}})
    assert status == 413 and problem["code"] == "over-cap", problem
    assert CAP < written(problem["detail"]) <= CAP + OVERSHOOT, problem
    assert problem["provider"] == provider.app[IDENTITY].id and struck == []
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before
    await settle(gateway)
    owed = problem["charge"] + await compiled_for(provider, problem["id"], "hoard")  # and the module pushed to it
    after = balances(gateway, provider)
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed)
    assert problem["charge"] > 0
    assert provider.app[NODE].hosted_jobs.status() == {"hosted": 0}
    assert not any(provider.app[NODE].hosted_jobs.work_dir.iterdir())  # what it wrote went with it
    for node in (gateway, provider):
        await verified(node)


def test_a_work_directory_deeper_than_python_recurses_is_removed(tmp_path):
    import os

    from xsc.compute.job_sandbox import remove_tree

    work = tmp_path / "job-deep"
    work.mkdir()
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):  # what a job can nest in the tick before it is stopped, on a late tick
        os.mkdir("d" * 200, dir_fd=fd)
        inner = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=inner), "wb") as f:
            f.write(b"x")
        os.close(fd)
        fd = inner
    os.close(fd)
    remove_tree(work)
    assert not work.exists()


# Leaves in /out a regular file `kept` ("x") and two links the host could follow out of it: to `../../../etc/passwd`
# (relative: WASI makes it, never follows it) and to `kept` itself.  Exits with the first failed call's errno, or
# returns (no exit code) once all are made.
LINKS = r'''
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "kept") (data (i32.const 120) "x")
  (data (i32.const 200) "../../../etc/passwd") (data (i32.const 240) "passwd")
  (data (i32.const 260) "alias")
  (func $check (param $errno i32) (if (local.get $errno) (then (call $exit (local.get $errno)))))
  (func (export "_start")
    (call $check (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 4) (i32.const 9)
                                  (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 120)) (i32.store (i32.const 4) (i32.const 1))
    (call $check (call $fd_write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $check (call $symlink (i32.const 200) (i32.const 19) (i32.const 3) (i32.const 240) (i32.const 6)))
    (call $check (call $symlink (i32.const 100) (i32.const 4) (i32.const 3) (i32.const 260) (i32.const 5)))))
'''


async def test_links_a_job_leaves_in_out_are_not_outputs_on_its_node_nor_on_a_provider(node_factory) -> None:
    gateway, (provider,) = await network(node_factory)
    for runs_it in (provider, gateway):  # the gateway offers no compute: its jobs run on the provider
        response = await runs_it.post("/v1/modules", data=wasmtime.wat2wasm(LINKS), params={"wasi": "true"})
        assert response.status in (200, 201), await response.text()
    module = (await response.json())["id"]
    for node in (provider, gateway):
        status, job = await run_job(node, {"module": module})
        assert status == 201 and job["state"] == "done" and job["exit_code"] is None, job  # the links were made
        assert [(o["name"], o["size"]) for o in job["outputs"]] == [("out/kept", 1)], job


async def test_outputs_refused_for_a_name_not_printable_or_a_path_the_node_cannot_read_are_signed_as_such(
        node_factory) -> None:
    """A file left in /out under a name that is not printable, and a path in /out too long for the node to read, each
    refuse the job's outputs as a limit does (413, nothing stored), and its signed record names what happened by its
    own trap kind, `output-name` or `output-unreadable`, with the words its caller's 413 gave; the hint says what to
    change; the work directory, deep as it is, goes."""
    node = await node_factory("alone", **QUIET)
    odd_name, hoard = await deploy(node, "odd_name", wasi=True), await deploy(node, "hoard", wasi=True)
    files_before = (await (await node.get("/v1/store/files")).json())["files"]
    cases = (({"module": odd_name}, "output-name", "whose name is not printable text", "printable characters"),
             ({"module": hoard, "entrypoint": "long"}, "output-unreadable",
              "it made in /out what the node cannot read (File name too long)", "leave shorter paths in /out"))
    for spec, kind, said, asks in cases:
        status, problem = await run_job(node, spec)
        assert status == 413 and problem["code"] == "over-cap" and said in problem["detail"], problem
        assert asks in problem["hint"] and problem["outputs"] == [], problem
        job = await (await node.get(f"/v1/compute/jobs/{problem['id']}")).json()
        assert job["state"] == "failed" and said in job["error"] and asks in job["error_hint"], job
        record = provenance.check(await (await node.get(f"/v1/compute/provenance/{problem['provenance']}")).json())
        assert record["outcome"] == "trap" and record["trap"]["kind"] == kind, record
        assert said in record["trap"]["message"] and record["job"]["outputs"] == [], record
    assert (await (await node.get("/v1/store/files")).json())["files"] == files_before
    assert not list((node.app[NODE].jobs.work_dir).glob("job-*"))
