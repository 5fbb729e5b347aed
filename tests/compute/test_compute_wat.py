"""WebAssembly text (.wat) modules as wasmtime's CLI takes them: the CLI compiles them to binary before sending, so a
node only ever receives binary modules, and refuses text sent straight to its API, naming the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.request
from pathlib import Path

from tests.support.cli import error_line, ok
from tests.support.compute import WASM, module_id
from tests.support.peers import http
from xsc.devnet import free_port

BROKEN = '(module\n  (func (export "add") (param i32 i32) (result i32)\n    local.get 0\n    i32.ad 1))\n'


def test_invoke_and_deploy_take_a_text_module_as_its_binary(xsc_node) -> None:
    add = str(WASM / "add.wat")
    assert ok(xsc_node.xsc("compute", "invoke", add, "add", "1", "2")) == "3\n"
    assert ok(xsc_node.xsc("compute", "invoke", add, "sub", "-5", "3")) == "-8\n"
    # the module is the binary's: one id with add.wasm's, and the node holds (and hashed) binary bytes
    assert ok(xsc_node.xsc("compute", "deploy", add)).strip() == module_id("add")
    listed = json.loads(ok(xsc_node.xsc("compute", "modules", "--json")))
    assert [(m["id"], m["size"]) for m in listed] == [(module_id("add"), (WASM / "add.wasm").stat().st_size)]
    # a text module named otherwise (no .wat) is known by its first bytes; a binary named .wat is sent as it is
    copies = xsc_node.data_dir.parent / "copies"
    copies.mkdir()
    shutil.copy(WASM / "arith.wat", copies / "arith.txt")
    shutil.copy(WASM / "multi.wasm", copies / "multi.wat")
    assert ok(xsc_node.xsc("compute", "invoke", str(copies / "arith.txt"), "add_f64", "1", "2")) == "3.0\n"
    assert ok(xsc_node.xsc("compute", "invoke", str(copies / "multi.wat"), "triple", "-3")) == "-3 -3 -3.0\n"


def test_a_job_and_a_job_spec_run_a_text_module(xsc_node, tmp_path: Path) -> None:
    wc = str(WASM / "wc.wat")
    assert ok(xsc_node.xsc("compute", "run", wc, input=b"a b\nc\n")) == "2 3 6\n"
    shutil.copy(WASM / "wc.wat", tmp_path / "wc.wat")
    (tmp_path / "job.toml").write_text('module = "wc.wat"\n')
    assert ok(xsc_node.xsc("compute", "run", str(tmp_path / "job.toml"), input=b"one two\n")) == "1 2 8\n"
    jobs = json.loads(ok(xsc_node.xsc("compute", "jobs", "--json")))["jobs"]
    wasm_id = hashlib.sha256((WASM / "wc.wasm").read_bytes()).hexdigest()
    assert {job["module"] for job in jobs} == {wasm_id}, jobs


def test_a_text_module_is_served_as_a_web_function(cli_node) -> None:
    port = free_port()
    node = cli_node("web", node={"web_listen": f"127.0.0.1:{port}"})
    done = node.xsc("compute", "serve", "hello", str(WASM / "cgi.wat"), "--env", "GREETING=hi")
    assert done.returncode == 0, done.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/fn/hello/x", timeout=30) as response:
        assert "GREETING=hi" in response.read().decode().splitlines()


def test_a_broken_text_module_is_one_line_naming_its_file_line_and_column(xsc_node, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wat"
    broken.write_text(BROKEN)
    said = f"xsc: error: {broken}:4:5: unknown operator or unexpected token (fix the WebAssembly text, or give a " \
           f"binary .wasm file)"
    for args in (("compute", "invoke", str(broken), "add", "1", "2"), ("compute", "deploy", str(broken)),
                 ("compute", "run", str(broken), "--no-stdin")):
        result = xsc_node.xsc(*args)
        assert result.returncode == 1 and result.stderr.decode().splitlines() == [said], (args, result.stderr)
    (tmp_path / "latin1.wat").write_bytes(b'(module (func (export "caf\xe9")))')
    line = error_line(xsc_node.xsc("compute", "deploy", str(tmp_path / "latin1.wat")))
    assert line == f"xsc: error: {tmp_path / 'latin1.wat'}: not WebAssembly text: byte 27 is not UTF-8 (fix the " \
                   f"WebAssembly text, or give a binary .wasm file)"
    (tmp_path / "empty.wat").write_bytes(b"")
    assert error_line(xsc_node.xsc("compute", "deploy", str(tmp_path / "empty.wat"))).startswith(
        f"xsc: error: {tmp_path / 'empty.wat'}:1:1: ")
    assert json.loads(ok(xsc_node.xsc("compute", "modules", "--json"))) == []  # nothing reached the node


def test_a_text_module_sent_straight_to_the_api_is_refused_naming_the_cli(xsc_node) -> None:
    headers = {"Authorization": f"Bearer {xsc_node.token}", "Content-Type": "application/wasm"}
    for text in ((WASM / "add.wat").read_bytes(), b"  ;; a comment first\n(module)"):
        status, body = http(xsc_node.url, "POST", "/v1/modules", text, headers)
        assert (status, body["code"]) == (422, "invalid-module"), body
        assert body["detail"] == "not a WebAssembly module: it does not start with the wasm magic bytes \\0asm (it " \
                                 "looks like WebAssembly text, a .wat module: a node takes binary modules only)", body
        assert body["hint"] == "send it with the CLI, which compiles a .wat to binary first: xsc compute deploy " \
                               "FILE.wat; or build FILE.wasm with wat2wasm", body
    assert json.loads(ok(xsc_node.xsc("compute", "modules", "--json"))) == []


def test_a_map_runs_a_text_module_over_its_inputs(xsc_node) -> None:
    caps = [ok(xsc_node.xsc("store", "put", "-", input=body)).split()[0] for body in (b"a b\n", b"c\n")]
    made = json.loads(ok(xsc_node.xsc("compute", "map", str(WASM / "wc.wat"), "--over", caps[0], "--over", caps[1],
                                      "--as", "-", "--json")))
    assert made["failed"] == 0 and [r["state"] for r in made["results"]] == ["done", "done"], made
    # resumed with the text module named again: the same map (its module is the binary's id)
    resumed = json.loads(ok(xsc_node.xsc("compute", "map", "--resume", made["map"], str(WASM / "wc.wat"), "--json")))
    assert [r["state"] for r in resumed["results"]] == ["done", "done"], resumed
