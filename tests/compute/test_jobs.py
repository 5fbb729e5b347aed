"""Jobs: a WASI program over stdin and stored files, its outputs stored (compute/jobs.py), through the CLI."""

from __future__ import annotations

import json

import pytest

from tests.support.compute import WASM

WC = str(WASM / "wc.wasm")


@pytest.fixture
def xsc_node(cli_node):
    return cli_node()


def ok(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def error_line(result) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("xsc: error: ")
    return lines[-1]


def test_word_count_of_piped_stdin(xsc_node):
    assert ok(xsc_node.xsc("compute", "run", WC, input=b"a b\nc\n")) == "2 3 6\n"
    assert ok(xsc_node.xsc("compute", "run", WC, "--no-stdin", input=b"a b\nc\n")) == "0 0 0\n"


def test_stdin_from_a_file_or_a_stored_file(xsc_node, tmp_path):
    text = tmp_path / "text"
    text.write_bytes(b"one two three\nfour\n" * 1000)
    assert ok(xsc_node.xsc("compute", "run", WC, "--stdin", str(text))) == "2000 4000 19000\n"
    cap = ok(xsc_node.xsc("store", "put", str(text))).split()[0]
    assert ok(xsc_node.xsc("compute", "run", WC, "--stdin", cap)) == "2000 4000 19000\n"


def test_stdin_over_its_cap_is_refused_before_the_program_runs(xsc_node):
    line = error_line(xsc_node.xsc("compute", "run", WC, "--bytes-in", "5", input=b"a b\nc\n"))
    assert "stdin is over the job's bytes_in" in line, line
    jobs = json.loads(ok(xsc_node.xsc("compute", "run", WC, "--json", input=b"x\n")))
    assert jobs["executions"] == 1 and jobs["state"] == "done"


def test_stdout_over_its_cap_fails_the_job(xsc_node):
    result = xsc_node.xsc("compute", "run", WC, "--stdout-cap", "3", input=b"a b\nc\n")
    line = error_line(result)
    assert "stdout went over its cap" in line, line
    assert result.stdout == b"2 3"  # what fit in the cap; each write past it failed in the guest (EIO)


def test_a_spec_with_an_unknown_field_is_refused(xsc_node, tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(f'module = "{WC}"\nargv = []\ncolour = "blue"\n')
    line = error_line(xsc_node.xsc("compute", "run", str(spec), "--no-stdin"))
    assert "unknown field in the job spec: colour" in line, line
    spec.write_text(f'module = "{WC}"\n[limits]\nfuel = 10000000\nspeed = 3\n')
    assert "unknown field in the limits: speed" in error_line(xsc_node.xsc("compute", "run", str(spec), "--no-stdin"))


def test_a_job_is_shown_by_its_id(xsc_node):
    run = json.loads(ok(xsc_node.xsc("compute", "run", WC, "--json", input=b"a b\nc\n")))
    assert run["stdout"] == "2 3 6\n" and len(run["id"]) == 64
    shown = json.loads(ok(xsc_node.xsc("compute", "job", run["id"], "--json")))
    assert shown["state"] == "done" and shown["executions"] == 1 and shown["provenance"] == run["provenance"]
    assert shown["charge"] == run["charge"] > 0
    text = ok(xsc_node.xsc("compute", "job", run["id"][:12]))
    assert "state:" in text and "done" in text
    assert "no job" in error_line(xsc_node.xsc("compute", "job", "ab" * 32))
