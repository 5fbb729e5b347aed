"""The `xsc compute` CLI against a node (run in this process), and a real node process for kill -9."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.cli import error_line, ok
from tests.support.compute import WASM, module_id, signed_under_the_first_rule
from xsc import codec, keys
from xsc.node import DB, IDENTITY
from xsc.units import format_credits

ADD = str(WASM / "add.wasm")


def test_invoke_a_file_deploys_it_and_prints_results(xsc_node):
    assert ok(xsc_node.xsc("compute", "invoke", ADD, "add", "1", "2")) == "3\n"
    assert ok(xsc_node.xsc("compute", "invoke", ADD, "sub", "-5", "3")) == "-8\n"  # negative numbers are args
    assert ok(xsc_node.xsc("compute", "invoke", ADD, "sub", "--", "-5", "-3")) == "-2\n"
    assert ok(xsc_node.xsc("compute", "invoke", module_id("add"), "add", "0x10", "1", "--fuel", "100")) == "17\n"
    multi = str(WASM / "multi.wasm")
    assert ok(xsc_node.xsc("compute", "invoke", multi, "triple", "-3")) == "-3 -3 -3.0\n"


def test_invoke_refuses_an_option_it_does_not_know_rather_than_pass_it_as_an_argument(xsc_node):
    typo = xsc_node.xsc("compute", "invoke", str(WASM / "wasi_hello.wasm"), "_start", "--wasi", "--fule", "100")
    assert typo.returncode == 2 and b"no such option '--fule' (did you mean --fuel?" in typo.stderr, typo
    assert ok(xsc_node.xsc("compute", "invoke", ADD, "sub", "-5", "--fuel=100", "3")) == "-8\n"


def test_invoke_json(xsc_node):
    run = json.loads(ok(xsc_node.xsc("compute", "invoke", str(WASM / "arith.wasm"), "add_f64", "-inf", "1",
                                     "--json")))
    assert run["results"] == [{"type": "f64", "value": "-inf"}]
    assert run["fuel_consumed"] > 0 and run["duration_ms"] >= 0 and len(run["provenance"]) == 32


def test_invoke_shows_what_it_was_charged_for_fuel_and_memory(xsc_node):
    grow = str(WASM / "grow_work.wasm")
    run = json.loads(ok(xsc_node.xsc("compute", "invoke", grow, "work", "8", "100", "--json")))
    assert run["memory_pages"] == 8 and run["cost"]["memory_pages"] == 8 and run["cost"]["fuel"] == run["fuel_consumed"]
    result = xsc_node.xsc("compute", "invoke", grow, "work", "8", "100", "--cost")
    assert ok(result) == "8\n"
    line = result.stderr.decode().strip()
    # The charge in credits, as the ledger's tables print amounts; the prices in micro-credits, as the market's.
    assert re.fullmatch(r"charge: \d+\.\d{6} credits = [\d,]+ fuel at \d+ micro-credits per million \+ 8 pages of "
                        r"memory for \S+ s at \d+ micro-credits per page-second \(rounded up\)", line), line
    shown = ok(xsc_node.xsc("compute", "provenance", run["provenance"]))
    assert "8 pages at most" in shown, shown
    # figures written as the CLI writes them elsewhere, not the record's raw integers
    assert f"fuel:      {run['fuel_consumed']:,} of {run['fuel_limit']:,}\n" in shown, shown
    assert "limits:    memory 64.0 MiB, timeout 5 s\n" in shown, shown
    assert ["charge:", format_credits(run["charge"]), "credits"] in [row.split() for row in shown.splitlines()], shown
    # one page is said as one page, on the cost line and in the record's view
    result = xsc_node.xsc("compute", "invoke", grow, "work", "1", "100", "--cost")
    assert " + 1 page of memory for " in result.stderr.decode(), result.stderr
    one = json.loads(ok(xsc_node.xsc("compute", "invoke", grow, "work", "1", "100", "--json")))["provenance"]
    assert "1 page at most" in ok(xsc_node.xsc("compute", "provenance", one))


def test_deploy_modules_and_provenance(xsc_node):
    loop = str(WASM / "loop.wasm")
    assert ok(xsc_node.xsc("compute", "deploy", loop)) == module_id("loop") + "\n"
    listed = json.loads(ok(xsc_node.xsc("compute", "modules", "--json")))
    assert module_id("loop") in {m["id"] for m in listed}
    assert "spin() -> ()" in ok(xsc_node.xsc("compute", "module", module_id("loop")))

    line = error_line(xsc_node.xsc("compute", "invoke", loop, "spin", "--timeout", "0.2"))
    assert "deadline exceeded" in line and "charged" in line  # the CLI says what a trapped call cost
    records = json.loads(ok(xsc_node.xsc("compute", "provenance", "--list", "--limit", "1", "--json")))
    assert records[0]["record"]["trap"]["kind"] == "deadline" and records[0]["signature_valid"]
    shown = ok(xsc_node.xsc("compute", "provenance", records[0]["record"]["id"]))
    assert "signature: valid" in shown and "in the time it ran" in shown
    job = error_line(xsc_node.xsc("compute", "run", loop, "--entrypoint", "spin", "--timeout", "0.2", "--no-stdin"))
    assert ": deadline exceeded: it ran for " in job and "call" not in job, job  # a job's run is not a call
    job = error_line(xsc_node.xsc("compute", "run", loop, "--entrypoint", "spin", "--fuel", "1000", "--no-stdin"))
    assert ": out of fuel: it used all 1,000 units" in job and "call" not in job, job
    # its hint names the most this node offers, in the invoke's words
    call = error_line(xsc_node.xsc("compute", "invoke", loop, "spin", "--fuel", "1000"))
    hint = call[call.index(" (ask for more with --fuel, up to "):]
    assert hint.endswith(" (this node's compute.fuel))") and job.endswith(hint), (job, call)
    outputs = str(WASM / "outputs.wasm")  # fuel enough for its run, not for storing what it wrote: the same most
    fuel = json.loads(ok(xsc_node.xsc("compute", "run", outputs, "--no-stdin", "--json")))["fuel_consumed"] - 1
    short = error_line(xsc_node.xsc("compute", "run", outputs, "--no-stdin", "--fuel", str(fuel)))
    assert "ran, but storing its 3 outputs costs" in short and short.endswith(f"{hint[:-1]}, or write less)"), short
    assert "valid" in ok(xsc_node.xsc("compute", "provenance", "--list"))


def test_serving_a_function_with_a_spend_cap_of_0_warns_its_owner_that_every_caller_gets_402(xsc_node):
    served = xsc_node.xsc("compute", "serve", "shut", str(WASM / "cgi.wasm"), "--spend-cap", "0")
    assert ok(served).startswith("serving shut at /fn/shut/"), served
    warned = [line for line in served.stderr.decode().splitlines() if "--spend-cap" in line]
    assert warned == ["xsc: warning: with --spend-cap 0 shut may spend nothing: every caller gets 402 until you serve "
                      "it again with a --spend-cap above 0"], served.stderr
    again = xsc_node.xsc("compute", "serve", "shut", str(WASM / "cgi.wasm"), "--spend-cap", "1")
    assert ok(again) and b"--spend-cap" not in again.stderr, again.stderr


def test_provenance_says_which_rule_a_record_holds_under(xsc_node):
    """A record the node stored under the first batch rule is valid as stored, but not with the guarantee a current
    one has (its place in its batch pinned): the table, the record's view and --json name its rule."""
    run = json.loads(ok(xsc_node.xsc("compute", "invoke", ADD, "add", "1", "2", "--json")))
    current = json.loads(ok(xsc_node.xsc("compute", "provenance", run["provenance"], "--json")))
    assert current["signature_valid"] and current["signature_rule"] == "batch/2"
    assert "signature: valid, signed by" in ok(xsc_node.xsc("compute", "provenance", run["provenance"]))
    old = signed_under_the_first_rule(xsc_node.app[IDENTITY], [codec.canonical(current["record"])])[0]
    xsc_node.app[DB].put(keys.provenance(bytes.fromhex(run["provenance"])), codec.canonical(old))

    shown = json.loads(ok(xsc_node.xsc("compute", "provenance", run["provenance"], "--json")))
    assert shown["signature_valid"] and shown["signature_rule"] == "batch/1"
    assert "signature: valid (first batch rule), signed by" in ok(xsc_node.xsc("compute", "provenance", run["provenance"]))
    listed = json.loads(ok(xsc_node.xsc("compute", "provenance", "--list", "--json")))
    assert [(r["signature_valid"], r["signature_rule"]) for r in listed if r["record"]["id"] == run["provenance"]] == [
        (True, "batch/1")]
    table = ok(xsc_node.xsc("compute", "provenance", "--list", "--wide"))
    assert [line for line in table.splitlines() if run["provenance"] in line][0].endswith("valid (first batch rule)")


ERRORS = [
    (["invoke", ADD, "add", "1"], "add takes 2 arguments (i32, i32), got 1"),
    (["invoke", ADD, "add", "1", "x"], "argument 2 of add is not an i32: 'x'"),
    (["invoke", ADD, "mul"], "has no export named 'mul'"),
    (["invoke", "missing.wasm", "add"], "no such file, and not a module id: missing.wasm"),
    (["invoke", str(WASM / "imports.wasm"), "main"], "env.log (func), env.memory (memory)"),
    (["invoke", str(WASM / "traps.wasm"), "div", "1", "0"], "integer divide by zero"),
    (["invoke", ADD, "add", "1", "2", "--fuel", "99999999999"], "more than this node allows"),
    (["deploy", str(WASM / "build.py")], "not a WebAssembly module"),  # neither binary nor text: the node says so
    (["provenance", "f" * 32], "no provenance record"),
    (["provenance", "f" * 32], "a call another node ran is recorded and signed there, kept compute.record_retention: "
                               "xsc compute provenance ID --provider NODE"),
    (["replay", "f" * 32], "a call another node ran is recorded and signed there, kept compute.record_retention: "
                           "xsc compute provenance ID --provider NODE"),
    (["run", str(WASM / "wc.wasm"), "--no-stdin", "--deterministic", "--replicas", "2", "--agree", "3"],
     "agree must be a whole number from 1 to replicas (2), not 3 (no more replicas can agree than run: --agree 2 or "
     "fewer, or more --replicas)"),
]


def test_errors_are_one_line(xsc_node):
    for args, message in ERRORS:
        assert message in error_line(xsc_node.xsc("compute", *args)), args


def test_a_missing_module_is_told_what_that_argument_may_be(xsc_node, tmp_path):
    """`run` takes a job spec too; `serve` and a spec's own `module` do not."""
    spec = tmp_path / "job.toml"
    spec.write_text('module = "missing.wasm"\n')
    for args, may in [(["run", "missing.wasm"], "a .wasm or .wat file, a job spec .toml, or a module id"),
                      (["serve", "site", "missing.wasm"], "a .wasm or .wat file, or a module id"),
                      (["run", str(spec)], "a .wasm or .wat file, or a module id")]:
        line = error_line(xsc_node.xsc("compute", *args, "--no-stdin") if args[0] == "run" else
                          xsc_node.xsc("compute", *args))
        assert line.startswith("xsc: error: no such file, and not a module id: ") and line.endswith(f"(give {may})"), \
            (args, line)


def test_wasi_program(xsc_node):
    hello = str(WASM / "wasi_hello.wasm")
    assert ok(xsc_node.xsc("compute", "invoke", hello, "_start", "--wasi")) == "hello, world\n"
    assert ok(xsc_node.xsc("compute", "invoke", hello, "args", "--wasi", "-x", "y")).splitlines()[1:] == ["-x", "y"]
    result = xsc_node.xsc("compute", "invoke", hello, "spam", "--wasi")
    assert len(ok(result)) == 64 * 1024
    assert "the program's stdout was cut at 64 KiB" in result.stderr.decode()
    result = xsc_node.xsc("compute", "invoke", hello, "fail", "--wasi")
    assert result.stderr.decode().startswith("hello, world\n")
    assert "exited with status 3" in error_line(result)



def test_a_trap_after_a_program_filled_its_stdout_is_said_in_one_line(xsc_node):
    # 64 KiB of NULs kept of its stdout is about 384 KiB of JSON in the trap's problem body (each one \u0000).
    result = xsc_node.xsc("compute", "invoke", str(WASM / "flood.wasm"), "flood", "100", "--wasi", "--fuel", "1000000")
    assert "out of fuel" in error_line(result)
    assert result.stdout == bytes(64 * 1024)
    assert "the program's stdout was cut at 64 KiB" in result.stderr.decode()

@pytest.mark.slow
def test_modules_survive_kill_9(node_process):
    node = node_process("k")
    ok(node.xsc("compute", "deploy", ADD))
    node.kill()
    node.start()
    assert ok(node.xsc("compute", "invoke", module_id("add"), "add", "40", "2")) == "42\n"
