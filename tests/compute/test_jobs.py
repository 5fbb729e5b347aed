"""Jobs: a WASI program over stdin and stored files, its outputs stored (compute/jobs.py), through the CLI."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.cli import error_line, ok, xsc_in_process
from tests.support.http_stub import QuietHandler, serving
from tests.support.compute import WASM
from xsc.units import format_credits

WC = str(WASM / "wc.wasm")


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
    assert line == "xsc: error: stdin is more than the 5 bytes left of the job's bytes_in (ask for more with " \
        "--bytes-in)", line
    jobs = json.loads(ok(xsc_node.xsc("compute", "run", WC, "--json", input=b"x\n")))
    assert jobs["executions"] == 1 and jobs["state"] == "done"


def test_stdout_over_its_cap_fails_the_job(xsc_node):
    result = xsc_node.xsc("compute", "run", WC, "--stdout-cap", "3", input=b"a b\nc\n")
    line = error_line(result)
    assert "stdout went over its cap" in line, line
    assert result.stdout == b"2 3"  # what fit in the cap; each write past it failed in the guest (EIO)


def test_stderr_over_its_cap_fails_the_job_naming_the_option_that_raises_it(xsc_node):
    result = xsc_node.xsc("compute", "run", str(WASM / "wasi_hello.wasm"), "--entrypoint", "spam", "--no-stdin")
    line = error_line(result)  # 100 KiB written to stderr, over the 64 KiB it keeps by default
    assert "stderr went over its cap" in line and "(ask for more with --stderr-cap" in line, line


def test_an_entrypoint_with_parameters_is_refused_naming_what_a_job_can_run(xsc_node):
    result = xsc_node.xsc("compute", "run", str(WASM / "flood.wasm"), "--entrypoint", "flood", "--no-stdin")
    line = error_line(result)  # not an invoke's "call it as: flood I32", which a job cannot do
    assert "flood(i32)" in line and "takes parameters" in line and "call it as" not in line, line
    assert "name an export without parameters, e.g. _start" in line, line


def test_a_spec_with_an_unknown_field_is_refused(xsc_node, tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(f'module = "{WC}"\nargv = []\ncolour = "blue"\n')
    line = error_line(xsc_node.xsc("compute", "run", str(spec), "--no-stdin"))
    assert "unknown field in the job spec: colour" in line, line
    spec.write_text(f'module = "{WC}"\n[limits]\nfuel = 10000000\nspeed = 3\n')
    assert "unknown field in the limits: speed" in error_line(xsc_node.xsc("compute", "run", str(spec), "--no-stdin"))
    spec.write_text(f'modul = "{WC}"\n')  # misspelt: named, never read as the folder "" is
    line = error_line(xsc_node.xsc("compute", "run", str(spec), "--no-stdin"))
    assert "unknown field in the job spec" in line and "modul" in line and "its fields: module" in line, line
    spec.write_text('argv = ["x"]\n')
    line = error_line(xsc_node.xsc("compute", "run", str(spec), "--no-stdin"))
    assert "names no module" in line and 'module = "PROGRAM.wasm"' in line, line


def test_a_specs_stdin_dash_is_this_commands_stdin_as_the_flags_is(xsc_node, tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(f'module = "{WC}"\nstdin = "-"\n')
    ran = xsc_node.xsc("compute", "run", str(spec), "--json", input=b"a b\nc\n")
    assert ran.returncode == 0 and json.loads(ran.stdout)["stdout"] == "2 3 6\n", ran  # not an empty stdin
    ran = xsc_node.xsc("compute", "run", str(spec), "--no-stdin", "--json", input=b"a b\nc\n")
    assert ran.returncode == 0 and json.loads(ran.stdout)["stdout"] == "0 0 0\n", ran  # the flag overrides it


def test_a_specs_limits_are_written_in_units_timeout_as_memory(xsc_node, tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(f'module = "{WC}"\n[limits]\nmemory = "64MiB"\ntimeout = "1500ms"\n')
    ran = xsc_node.xsc("compute", "run", str(spec), "--json", input=b"a b\nc\n")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["spec"]["limits"]["timeout"] == "1500ms"
    spec.write_text(f'module = "{WC}"\n[limits]\ntimeout = "soon"\n')
    line = error_line(xsc_node.xsc("compute", "run", str(spec), "--no-stdin"))
    assert "timeout must be a positive duration (seconds, or e.g. 500ms), not 'soon'" in line, line


def test_a_misspelt_option_is_a_usage_error_not_the_programs_argument(xsc_node, tmp_path):
    text = tmp_path / "words.txt"
    text.write_bytes(b"a b\nc\n")
    typo = xsc_node.xsc("compute", "run", WC, "--stdn", str(text))
    assert typo.returncode == 2, typo
    assert typo.stderr.decode().splitlines()[0] == "xsc: usage error: no such option '--stdn' (did you mean --stdin? " \
        "an argument that begins with -- goes after a --: xsc compute run ... -- --stdn)"
    assert json.loads(ok(xsc_node.xsc("compute", "jobs", "--json")))["jobs"] == []  # nothing ran, nothing charged
    ran = json.loads(ok(xsc_node.xsc("compute", "run", WC, "-1", "--stdin", str(text), "--json", "--", "--stdn")))
    assert ran["spec"]["argv"] == ["-1", "--stdn"] and ran["stdout"] == "2 3 6\n"  # one dash, or after --: arguments


def test_a_jobs_run_is_not_replayed_without_its_stdin_but_named_as_the_jobs_to_rerun(xsc_node):
    ran = json.loads(ok(xsc_node.xsc("compute", "run", WC, "--json", input=b"a b\nc\n")))
    records = ok(xsc_node.xsc("compute", "provenance", "--list", "--json"))
    line = error_line(xsc_node.xsc("compute", "replay", ran["provenance"]))
    assert line == "xsc: error: the record is a run of a job whose stdin and inputs it does not keep: a replay " \
        f"cannot run it again (run the job again: xsc compute rerun {ran['id']})"  # each id once at most
    assert ok(xsc_node.xsc("compute", "provenance", "--list", "--json")) == records  # nothing ran, nothing charged


def test_a_job_is_shown_by_its_id(xsc_node):
    run = json.loads(ok(xsc_node.xsc("compute", "run", WC, "--json", input=b"a b\nc\n")))
    assert run["stdout"] == "2 3 6\n" and len(run["id"]) == 64
    shown = json.loads(ok(xsc_node.xsc("compute", "job", run["id"], "--json")))
    assert shown["state"] == "done" and shown["executions"] == 1 and shown["provenance"] == run["provenance"]
    assert shown["charge"] == run["charge"] > 0
    text = ok(xsc_node.xsc("compute", "job", run["id"][:12]))
    assert "state:" in text and "done" in text
    # Amounts in credits, as the ledger's tables print them (--json: micro-credits, as the API gives them).
    assert ["charge:", format_credits(run["charge"]), "credits"] in [line.split() for line in text.splitlines()], text
    said = " ".join(xsc_node.xsc("compute", "run", WC, input=b"a b\n").stderr.decode().split())
    charge = json.loads(ok(xsc_node.xsc("compute", "job", said.split()[1], "--json")))["charge"]
    assert said.endswith(f", charged {format_credits(charge)} credits"), said
    assert "no job" in error_line(xsc_node.xsc("compute", "job", "ab" * 32))


OUTPUTS = str(WASM / "outputs.wasm")
ESCAPE = str(WASM / "escape.wasm")


def stored_files(node) -> list[str]:
    return [f["capability"] for f in json.loads(ok(node.xsc("store", "ls", "--json")))]


def put(node, path) -> str:
    return ok(node.xsc("store", "put", str(path))).split()[0]


def test_files_left_in_out_are_stored_and_read_back_byte_exact(xsc_node, tmp_path):
    data = bytes(range(256)) * 4000
    run = json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--json", input=data)))
    outputs = {o["name"]: o for o in run["outputs"]}
    assert sorted(outputs) == ["out/a.txt", "out/b.txt", "out/c.txt"]
    expected = {"out/a.txt": b"alpha\n", "out/b.txt": b"bravo bravo\n", "out/c.txt": data}
    for name, body in expected.items():
        target = tmp_path / name.replace("/", "_")
        ok(xsc_node.xsc("store", "get", outputs[name]["capability"], "-o", str(target)))
        assert target.read_bytes() == body
        assert outputs[name]["size"] == len(body) and outputs[name]["sha256"] == __import__("hashlib").sha256(body).hexdigest()
    assert set(stored_files(xsc_node)) >= {o["capability"] for o in outputs.values()}
    # `xsc store ls` names each by its job's whole id (docs/compute.md, "What is stored")
    named = {f["capability"]: f["name"] for f in json.loads(ok(xsc_node.xsc("store", "ls", "--json")))}
    assert {named[o["capability"]] for o in outputs.values()} == {f"job:{run['id']}:{name}" for name in expected}


def test_outputs_over_their_cap_store_nothing(xsc_node):
    before = stored_files(xsc_node)
    line = error_line(xsc_node.xsc("compute", "run", OUTPUTS, "--bytes-out", "100", input=b"x" * 1000))
    assert "over its bytes_out" in line and "nothing of its outputs is stored" in line, line
    assert stored_files(xsc_node) == before


def test_a_file_left_in_out_under_a_name_that_is_not_printable_stores_nothing(xsc_node):
    before = stored_files(xsc_node)
    line = error_line(xsc_node.xsc("compute", "run", str(WASM / "odd_name.wasm"), "--no-stdin"))
    assert "not printable" in line and "nothing of its outputs is stored" in line and "\x1b" not in line, line
    assert "printable characters" in line  # the hint
    assert stored_files(xsc_node) == before


def test_a_stored_file_is_mounted_read_only_and_nothing_else_is_visible(xsc_node, tmp_path):
    source = tmp_path / "data"
    source.write_bytes(b"secret words here\n")
    cap = put(xsc_node, source)
    assert ok(xsc_node.xsc("compute", "run", WC, "--stdin", cap)) == "1 3 18\n"
    run = json.loads(ok(xsc_node.xsc("compute", "run", ESCAPE, "--input", f"{cap}:/in/data", "--no-stdin", "--json")))
    attempts = dict(line.split() for line in run["stdout"].splitlines())
    assert set(attempts) == {"out-parent", "in-write", "in-create", "in-parent", "out-absolute", "fd-beyond"}
    assert all(errno != "0" for errno in attempts.values()), attempts  # every attempt refused in the guest
    assert attempts["fd-beyond"] == "8"  # EBADF: no preopen but /in and /out
    assert run["outputs"] == [] and run["inputs"][0]["path"] == "/in/data"
    assert run["inputs"][0]["sha256"] == __import__("hashlib").sha256(b"secret words here\n").hexdigest()


def test_an_input_whose_capability_lies_is_refused_naming_that_input(xsc_node, tmp_path):
    """Of a job's inputs and stdin, the one whose capability says another size or manifest is the one the refusal
    names, before anything runs or is charged."""
    (tmp_path / "a").write_bytes(b"first\n")
    (tmp_path / "b").write_bytes(b"second\n")
    good, other = put(xsc_node, tmp_path / "a"), put(xsc_node, tmp_path / "b")
    key, digest, k, m, size = other.split(":")[2:]
    wrong_size = ":".join(["xsc", "chk", key, digest, k, m, str(int(size) + 1)])
    wrong_hash = ":".join(["xsc", "chk", key, good.split(":")[3], k, m, size])
    before = json.loads(ok(xsc_node.xsc("compute", "jobs", "--json")))
    for lie in (wrong_size, wrong_hash):
        line = error_line(xsc_node.xsc("compute", "run", WC, "--input", f"{good}:/in/a", "--input", f"{lie}:/in/b",
                                       "--no-stdin"))
        assert line.startswith("xsc: error: input /in/b cannot be read: the ") and "/in/a" not in line, line
        assert "check the capability" in line, line
        line = error_line(xsc_node.xsc("compute", "run", WC, "--input", f"{good}:/in/a", "--stdin", lie))
        assert line.startswith("xsc: error: stdin cannot be read: the "), line
    assert json.loads(ok(xsc_node.xsc("compute", "jobs", "--json"))) == before  # nothing ran, nothing charged


def test_a_missing_input_is_refused_with_one_line(xsc_node, tmp_path):
    source = tmp_path / "gone"
    source.write_bytes(b"soon removed\n")
    cap = put(xsc_node, source)
    ok(xsc_node.xsc("store", "rm", cap))
    before = stored_files(xsc_node)
    line = error_line(xsc_node.xsc("compute", "run", OUTPUTS, "--input", f"{cap}:/in/data", "--no-stdin"))
    assert "input /in/data cannot be read" in line, line
    assert stored_files(xsc_node) == before
    line = error_line(xsc_node.xsc("compute", "run", WC, "--input", "nonsense:/in/x", "--no-stdin"))
    assert "input" in line and "capability" in line, line
    # The capability without where to mount it, or mounted outside /in: named whole, with the fix.
    line = error_line(xsc_node.xsc("compute", "run", WC, "--input", cap, "--no-stdin"))
    assert line == (f"xsc: error: an input is CAP:/in/NAME, not {cap!r}: where the job sees it is missing "
                    f"(e.g. --input {cap}:/in/data)"), line
    line = error_line(xsc_node.xsc("compute", "run", WC, "--input", f"{cap}:/data", "--no-stdin"))
    assert f"not {cap + ':/data'!r}" in line, line
    for path in ("/in/..", "/in/../../etc/passwd", "/in/a/b"):  # one file of its own under /in, no further
        line = error_line(xsc_node.xsc("compute", "run", WC, "--input", f"{cap}:{path}", "--no-stdin"))
        assert "an input is mounted at /in/NAME" in line and f"not {path!r}" in line, line
    assert stored_files(xsc_node) == before


CLOCK_RANDOM = str(WASM / "clock_random.wasm")


def test_a_deterministic_job_is_replayed_not_run_again(xsc_node):
    first = json.loads(ok(xsc_node.xsc("compute", "run", CLOCK_RANDOM, "--deterministic", "--json", input=b"abc")))
    assert first["replayed"] is False and first["executions"] == 1 and first["charged"] > 0
    again = json.loads(ok(xsc_node.xsc("compute", "run", CLOCK_RANDOM, "--deterministic", "--json", input=b"abc")))
    assert again["replayed"] is True and again["charged"] == 0
    assert again["id"] == first["id"] and again["stdout"] == first["stdout"] and again["executions"] == 1
    assert json.loads(ok(xsc_node.xsc("compute", "job", first["id"], "--json")))["executions"] == 1
    changed = json.loads(ok(xsc_node.xsc("compute", "run", CLOCK_RANDOM, "--deterministic", "--json", input=b"abd")))
    assert changed["replayed"] is False and changed["id"] != first["id"] and changed["executions"] == 1
    assert changed["stdout"] != first["stdout"]  # its clocks and random come from its own id


def test_a_deterministic_job_prints_the_same_on_another_node(cli_node):
    one, two = cli_node("one"), cli_node("two")
    runs = [json.loads(ok(node.xsc("compute", "run", CLOCK_RANDOM, "--deterministic", "--json", input=b"x")))
            for node in (one, two)]
    assert runs[0]["stdout"] == runs[1]["stdout"] and runs[0]["replayed"] is runs[1]["replayed"] is False
    time_ns, random_hex = runs[0]["stdout"].split()
    assert 946_684_800 * 10**9 <= int(time_ns) < 978_307_200 * 10**9 and len(random_hex) == 32


def test_a_job_not_marked_deterministic_runs_every_time(xsc_node):
    runs = [json.loads(ok(xsc_node.xsc("compute", "run", CLOCK_RANDOM, "--json", input=b"abc"))) for _ in range(2)]
    assert [r["replayed"] for r in runs] == [False, False] and [r["executions"] for r in runs] == [1, 2]
    assert runs[0]["stdout"] != runs[1]["stdout"]  # the real clock and random


def test_lineage_walks_back_through_every_job_to_the_files_they_read(xsc_node, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"the first words\n")
    cap = put(xsc_node, source)
    # job 1 copies its stdin (the stored file) to out/c.txt; job 2 copies job 1's c.txt to its own c.txt
    one = json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--stdin", cap, "--input", f"{cap}:/in/data",
                                     "--json")))
    middle = next(o for o in one["outputs"] if o["name"] == "out/c.txt")
    two = json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--stdin", middle["capability"],
                                     "--input", f"{middle['capability']}:/in/data", "--json")))
    last = next(o for o in two["outputs"] if o["name"] == "out/c.txt")
    tree = json.loads(ok(xsc_node.xsc("compute", "lineage", last["capability"], "--json")))
    made = tree["made_by"]
    assert made["job"] == two["id"] and made["signature_valid"] and made["output_signed"]
    assert made["output"]["sha256"] == last["sha256"] and "capability" not in made["output"]
    (read,) = made["inputs"]
    assert read["path"] == "/in/data" and read["sha256"] == middle["sha256"]
    assert read["made_by"]["job"] == one["id"] and read["made_by"]["signature_valid"]
    (first,) = read["made_by"]["inputs"]
    assert first["sha256"] == __import__("hashlib").sha256(b"the first words\n").hexdigest()
    assert "made_by" not in first  # put by the user
    text = ok(xsc_node.xsc("compute", "lineage", last["capability"]))
    assert text.count("made by job") == 2 and "no job here made it" in text and "signature ok" in text


def test_the_lineage_of_a_file_this_node_has_no_record_of_does_not_say_a_user_stored_it(xsc_node):
    """A stranger's output, or a capability no node holds: this node's records end the walk at once, and what it
    says is that, not that a user put the file."""
    from xsc.storage import Capability

    stranger = str(Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10))
    text = ok(xsc_node.xsc("compute", "lineage", stranger))
    assert text.splitlines() == [stranger, "  no job here made it (a user's put, or made elsewhere)"], text


def test_a_job_names_the_stored_file_it_read_as_stdin_and_lineage_walks_to_it(xsc_node, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"read as stdin\n")
    cap = put(xsc_node, source)
    # job 1 copies its stdin (the stored file) to out/c.txt; job 2 reads job 1's c.txt as its stdin, nothing else
    one = json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--stdin", cap, "--json")))
    middle = next(o for o in one["outputs"] if o["name"] == "out/c.txt")
    two = json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--stdin", middle["capability"], "--json")))
    shown = ok(xsc_node.xsc("compute", "job", two["id"])).splitlines()
    assert ["stdin", "14", "bytes", "sha256", middle["sha256"], middle["capability"]] in [l.split() for l in shown], \
        shown
    last = next(o for o in two["outputs"] if o["name"] == "out/c.txt")
    made = json.loads(ok(xsc_node.xsc("compute", "lineage", last["capability"], "--json")))["made_by"]
    assert made["job"] == two["id"] and made["inputs"] == [], made
    read = made["stdin"]
    assert read["sha256"] == middle["sha256"] and read["made_by"]["job"] == one["id"], made
    first = read["made_by"]["stdin"]
    assert first["sha256"] == __import__("hashlib").sha256(b"read as stdin\n").hexdigest() and "made_by" not in first
    text = ok(xsc_node.xsc("compute", "lineage", last["capability"]))
    assert text.count("made by job") == 2 and text.count("read stdin  14 bytes") == 2, text


STORED = f"xsc:chk:{'a' * 52}:{'b' * 52}:4:2:14"


class _JobBeforeItsStdinWasNamed(QuietHandler):
    """A node answering a job record kept before records named their stdin: only the spec it keeps does."""

    def do_GET(self) -> None:
        body = json.dumps({"id": "j" * 64, "state": "done", "module": "m" * 64, "executions": 1, "charge": 1,
                           "again": {"stdin": STORED}, "inputs": [], "outputs": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_job_kept_before_records_named_their_stdin_shows_it_by_the_capability_its_spec_keeps():
    with serving(_JobBeforeItsStdinWasNamed) as url:
        shown = ok(xsc_in_process("--node", url, "compute", "job", "j" * 64, env={"XSC_TOKEN": "t"}))
    assert f"  stdin  {STORED}" in shown.splitlines(), shown


def test_a_jobs_files_and_lineage_fit_80_columns_with_every_id_whole(xsc_node, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"some words\n")
    cap = put(xsc_node, source)
    narrow = {"COLUMNS": "80"}
    ran = xsc_node.xsc("compute", "run", OUTPUTS, "--stdin", cap, "--input", f"{cap}:/in/data", env=narrow)
    assert ran.returncode == 0, ran.stderr.decode()
    job = json.loads(ok(xsc_node.xsc("compute", "job", ran.stderr.decode().split()[1], "--json")))
    module, output = job["module"], job["outputs"][0]
    shown = {"run": ran.stderr.decode(), "job": ok(xsc_node.xsc("compute", "job", job["id"], env=narrow)),
             "lineage": ok(xsc_node.xsc("compute", "lineage", output["capability"], env=narrow))}
    for command, text in shown.items():
        words = text.split()
        for line in text.splitlines():  # a line past 80 columns is one capability alone: it cannot be cut
            assert len(line) <= 80 or line.strip().startswith("xsc:chk:") and " " not in line.strip(), (command, line)
        if command != "lineage":
            assert output["sha256"] in words and output["capability"] in words, command
    lineage = [word.strip(",()") for word in shown["lineage"].split()]
    assert module in lineage and job["id"] in lineage and job["inputs"][0]["sha256"] in lineage


def test_the_lineage_of_an_output_a_later_run_replaced_is_still_answered(xsc_node, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"words to copy\n")
    cap = put(xsc_node, source)
    runs = [json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--stdin", cap, "--input", f"{cap}:/in/data",
                                       "--json"))) for _ in range(2)]  # not deterministic: it runs twice
    assert runs[0]["id"] == runs[1]["id"] and runs[0]["provenance"] != runs[1]["provenance"]
    for run in runs:
        output = next(o for o in run["outputs"] if o["name"] == "out/c.txt")
        made = json.loads(ok(xsc_node.xsc("compute", "lineage", output["capability"], "--json")))["made_by"]
        assert made["provenance"] == run["provenance"] and made["signature_valid"] and made["output_signed"], made
        assert made["output"]["sha256"] == output["sha256"]
        assert "NOT AMONG" not in ok(xsc_node.xsc("compute", "lineage", output["capability"]))


def job_files(node, jid: str) -> list[dict]:
    """The files `xsc store ls` lists under the job's output names."""
    listed = json.loads(ok(node.xsc("store", "ls", "--json")))
    return [f for f in (listed["files"] if isinstance(listed, dict) else listed) if jid[:16] in str(f.get("name"))]


def test_a_job_run_again_replaces_its_last_runs_outputs_and_says_what_each_run_was_charged(xsc_node, tmp_path):
    runs = [json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--json", input=b"copied\n")))
            for _ in range(2)]  # not deterministic: it runs twice
    assert runs[0]["id"] == runs[1]["id"] and [r["executions"] for r in runs] == [1, 2]
    latest = sorted(o["capability"] for o in runs[1]["outputs"])
    files = job_files(xsc_node, runs[0]["id"])
    assert sorted(f["capability"] for f in files) == latest and len({f["name"] for f in files}) == 3, files
    for output in runs[0]["outputs"]:
        assert "holds no file" in error_line(xsc_node.xsc("store", "get", output["capability"], "-o", str(tmp_path / "x")))
    shown = json.loads(ok(xsc_node.xsc("compute", "job", runs[0]["id"], "--json")))
    assert sorted(o["capability"] for o in shown["outputs"]) == latest and "replacing" not in shown
    assert shown["charge"] == runs[1]["charged"] > 0
    assert shown["charge_total"] == runs[0]["charged"] + runs[1]["charged"]
    charge = next(line for line in ok(xsc_node.xsc("compute", "job", runs[0]["id"])).splitlines()
                  if line.split()[:1] == ["charge:"])
    assert " ".join(charge.split()) == (f"charge: {format_credits(shown['charge'])} credits (latest run), "
                                        f"{format_credits(shown['charge_total'])} credits over its 2 runs"), charge


def test_a_job_is_run_again_by_its_id_from_the_spec_its_record_keeps(xsc_node, tmp_path):
    stdin = tmp_path / "stdin"
    stdin.write_bytes(b"copied\n")
    cap = put(xsc_node, stdin)
    first = json.loads(ok(xsc_node.xsc("compute", "run", OUTPUTS, "--stdin", cap, "--json")))
    again = json.loads(ok(xsc_node.xsc("compute", "rerun", first["id"][:12], "--json")))
    assert again["id"] == first["id"] and again["executions"] == 2 and again["state"] == "done"
    assert sorted(f["capability"] for f in job_files(xsc_node, first["id"])) == \
        sorted(o["capability"] for o in again["outputs"])  # the run before's replaced, as any run again
    said = " ".join(xsc_node.xsc("compute", "rerun", first["id"]).stderr.decode().split())
    assert said.startswith(f"job {first['id']} ran (executions: 3)"), said
    # Replicas of a job that is not deterministic: refused naming what to run, not a --deterministic rerun lacks
    line = error_line(xsc_node.xsc("compute", "rerun", first["id"], "--replicas", "2"))
    assert line == (f"xsc: error: the job {first['id']} is not deterministic, and only a deterministic job can be "
                    "replicated: replicas agree only if clocks and random are fixed (run it as one: xsc compute run "
                    f"{first['module']} ... --deterministic --replicas 2 (its arguments and inputs: xsc compute job "
                    f"{first['id']}))"), line
    # A deterministic job is run, not replayed: a rerun is asked for because its outputs are wanted again.
    kept = json.loads(ok(xsc_node.xsc("compute", "run", WC, "--stdin", cap, "--deterministic", "--json")))
    rerun = json.loads(ok(xsc_node.xsc("compute", "rerun", kept["id"], "--json")))
    assert rerun["replayed"] is False and rerun["executions"] == 2 and rerun["stdout"] == "1 1 7\n"
    # Stdin sent with the request is not kept: the command that sends it again, nothing run.
    piped = json.loads(ok(xsc_node.xsc("compute", "run", WC, "--json", input=b"a b\n")))
    line = error_line(xsc_node.xsc("compute", "rerun", piped["id"]))
    assert "read its stdin from its request" in line and f"xsc compute run {piped['module']} --stdin -" in line, line
    assert json.loads(ok(xsc_node.xsc("compute", "job", piped["id"], "--json")))["executions"] == 1
    assert "no job" in error_line(xsc_node.xsc("compute", "rerun", "ab" * 32))


async def test_a_rerun_of_a_job_still_running_is_refused_naming_the_command_that_follows_it(node_factory):
    import asyncio

    from tests.support.cli import xsc_in_process
    from tests.support.compute import deploy
    from tests.support.jobs import run_job
    from tests.support.waiting import eventually_async
    from xsc.node import TOKEN

    node = await node_factory("node")
    running = asyncio.ensure_future(run_job(node, {"module": await deploy(node, "spin", wasi=True),
                                                   "limits": {"timeout": 1}}))

    async def under_way() -> list[dict]:
        jobs = (await (await node.get("/v1/compute/jobs")).json())["jobs"]
        return [j for j in jobs if j["state"] == "running"]

    (job,) = await eventually_async(under_way, "the job running")
    response = await node.post(f"/v1/compute/jobs/{job['id']}/rerun")
    problem = await response.json()
    assert (response.status, problem["code"]) == (409, "job-running"), problem
    assert problem["hint"] == f"follow it with: xsc compute job {job['id']}", problem
    line = error_line(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "rerun",
                                              job["id"], env={"XSC_TOKEN": node.app[TOKEN]}))
    assert line == "xsc: error: the job is running: it can be run again once that run has ended (follow it with: " \
        f"xsc compute job {job['id']})"  # its id once, in the command
    status, ended = await running
    assert status == 422 and ended["executions"] == 1, ended  # run once: neither refusal ran it again


async def test_a_run_refused_before_it_ran_keeps_the_last_runs_outputs_and_one_that_ran_leaving_none_replaces_them(
        node_factory, monkeypatch):
    import asyncio

    from tests.support.cli import xsc_in_process
    from tests.support.compute import deploy
    from tests.support.jobs import run_job
    from xsc.node import TOKEN
    from xsc.compute import jobs as jobs_module
    from xsc.errors import InsufficientCredit
    from xsc.node.appkeys import NODE

    node = await node_factory("node")
    jobs = node.app[NODE].jobs
    spec = {"module": await deploy(node, "outputs", wasi=True), "stdin": "-"}

    async def listed() -> list[str]:
        response = await node.get("/v1/store/files")
        files = await response.json()
        return sorted(f["capability"] for f in (files["files"] if isinstance(files, dict) else files))

    status, first = await run_job(node, spec, b"kept\n")
    assert status == 201, first
    caps = sorted(o["capability"] for o in first["outputs"])

    async def no_credit(payer, amount):
        raise InsufficientCredit("no credit", hint="xsc ledger fund")

    monkeypatch.setattr(jobs.ledger, "hold", no_credit)
    status, refused = await run_job(node, spec, b"kept\n")
    assert status == 402, refused
    monkeypatch.undo()
    record = jobs.records.load(first["id"])
    assert record["state"] == "refused" and record["outputs"] == [], record
    assert sorted(o["capability"] for o in record["replacing"]) == caps and await listed() == caps  # nothing lost
    shown = ok(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), "compute", "job",
                                       first["id"], env={"XSC_TOKEN": node.app[TOKEN]}))
    assert sorted(line.split()[-1] for line in shown.splitlines() if line.split()[:1] == ["earlier"]) == caps, shown

    real = jobs_module.run_program

    async def leaving_none(*args, **kwargs):
        ran = await real(*args, **kwargs)
        ran.files = []  # as a program that left nothing in /out this time
        return ran

    monkeypatch.setattr(jobs_module, "run_program", leaving_none)
    status, third = await run_job(node, spec, b"kept\n")
    assert status == 201 and third["outputs"] == [] and third["executions"] == 2, third
    record = jobs.records.load(first["id"])
    assert "replacing" not in record and await listed() == []
    assert record["charge_total"] == first["charged"] + third["charged"]


SHA256 = str(WASM / "sha256.wasm")


@pytest.mark.parametrize("size", [0, 55, 56, 64, 1000, 3 * 65536 + 7])
def test_the_sha256_fixture_prints_what_sha256sum_prints(xsc_node, tmp_path, size):
    import hashlib
    import os

    data = os.urandom(size)
    assert ok(xsc_node.xsc("compute", "run", SHA256, input=data)) == hashlib.sha256(data).hexdigest() + "\n"
    if size:
        source = tmp_path / "data"
        source.write_bytes(data)
        cap = put(xsc_node, source)
        printed = ok(xsc_node.xsc("compute", "run", SHA256, "/in/data", "--input", f"{cap}:/in/data", "--no-stdin"))
        assert printed == hashlib.sha256(data).hexdigest() + "\n"


@pytest.mark.slow
def test_a_job_cut_short_by_kill_9_is_marked_interrupted_after_restart(node_process):
    import subprocess
    import time

    from xsc.compute.jobspec import job_id, parse_job
    from tests.support.nodes import start_xsc

    node = node_process("k")
    module = ok(node.xsc("compute", "deploy", str(WASM / "spin.wasm"), "--wasi")).strip()
    jid = job_id(parse_job({"module": module, "limits": {"timeout": 5.0}}), None, [])
    running = start_xsc("--data-dir", str(node.data_dir), "compute", "run", module, "--no-stdin", "--timeout", "5",
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # until the node has written the job's record, before its run ends
            shown = node.xsc("compute", "job", jid, "--json")
            if shown.returncode == 0:
                assert json.loads(shown.stdout)["state"] == "running"
                break
            assert time.monotonic() < deadline and running.poll() is None, shown.stderr
        assert list((node.data_dir / "jobs").glob("job-*"))  # the job's work directory
        node.kill()
    finally:
        running.wait(30)
        running.stdout.close()
        running.stderr.close()
    node.start()
    deadline = time.monotonic() + 60
    while (job := json.loads(ok(node.xsc("compute", "job", jid, "--json"))))["state"] == "running":
        assert time.monotonic() < deadline  # the node marks it as it starts (JobService.recover)
    assert job["state"] == "interrupted" and job["outputs"] == [] and job["executions"] == 0
    assert "stopped" in job["error"] and job["error_hint"] == f"run it again with: xsc compute rerun {jid}"
    assert list((node.data_dir / "jobs").glob("job-*")) == []  # and its files: nothing reads them again


def _large_job(node_process, tmp_path) -> tuple:
    """A node process, the OUTPUTS module deployed on it, a 48 MiB stdin file (out/c.txt is a copy of it: its put
    takes a while) and the job id a run of them gets."""
    import hashlib

    from xsc.compute.jobspec import job_id, parse_job

    node = node_process("k")
    module = ok(node.xsc("compute", "deploy", OUTPUTS, "--wasi")).strip()
    data = tmp_path / "stdin"
    data.write_bytes(os.urandom(48 << 20))
    jid = job_id(parse_job({"module": module, "stdin": "-"}), hashlib.sha256(data.read_bytes()).hexdigest(), [])
    return node, module, data, jid


def _run_killed_while_storing(node, module: str, data, jid: str) -> dict:
    """`xsc compute run` of `module` over the file `data`, the node killed with kill -9 once the job stores its
    outputs, then started again: the job's record once the start has marked it."""
    import subprocess

    from tests.support.nodes import start_xsc
    from tests.support.waiting import eventually

    with open(data, "rb") as stdin:
        running = start_xsc("--data-dir", str(node.data_dir), "compute", "run", module, stdin=stdin,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def storing():
            shown = node.xsc("compute", "job", jid, "--json")
            return shown.returncode == 0 and json.loads(shown.stdout)["state"] == "storing"

        eventually(storing, "the job storing its outputs", timeout=120, poll=0.02)
        node.kill()
    finally:
        running.wait(30)
    node.start()
    return eventually(lambda: (j := json.loads(ok(node.xsc("compute", "job", jid, "--json"))))["state"]
                      not in ("running", "storing") and j, "the job marked at the start", timeout=60)


@pytest.mark.slow
def test_a_job_killed_while_its_outputs_are_stored_leaves_none_of_them_and_runs_again(node_process, tmp_path):
    node, module, data, jid = _large_job(node_process, tmp_path)
    job = _run_killed_while_storing(node, module, data, jid)
    assert job["state"] == "interrupted" and job["outputs"] == [] and job["executions"] == 0, job
    listed = json.loads(ok(node.xsc("store", "ls", "--json")))
    files = listed["files"] if isinstance(listed, dict) else listed
    assert not [f for f in files if jid[:16] in str(f.get("name"))], files  # no output of it kept, whole or not
    assert json.loads(ok(node.xsc("ledger", "verify", "--json")))["ok"]
    again = json.loads(ok(node.xsc("compute", "run", module, "--json", input=data.read_bytes())))
    assert again["state"] == "done" and again["executions"] == 1 and len(again["outputs"]) == 3


@pytest.mark.slow
def test_a_job_run_again_and_killed_while_it_replaces_its_outputs_leaves_each_file_named_once(node_process, tmp_path):
    node, module, data, jid = _large_job(node_process, tmp_path)
    first = json.loads(ok(node.xsc("compute", "run", module, "--json", input=data.read_bytes())))
    assert first["id"] == jid and len(job_files(node, jid)) == 3
    # Run again: its first output published takes the first run's out of the list.
    job = _run_killed_while_storing(node, module, data, jid)
    assert job["state"] == "interrupted" and job["outputs"] == [] and "replacing" not in job, job
    assert job_files(node, jid) == []  # neither run's outputs: the first's were replaced, the second's removed
    assert job["charge_total"] == first["charge"]  # the run cut short was not charged
    again = json.loads(ok(node.xsc("compute", "run", module, "--json", input=data.read_bytes())))
    files = job_files(node, jid)
    assert sorted(f["capability"] for f in files) == sorted(o["capability"] for o in again["outputs"])
    assert len({f["name"] for f in files}) == 3 and again["executions"] == 2
    assert json.loads(ok(node.xsc("ledger", "verify", "--json")))["ok"]


def test_stdout_can_be_stored_as_a_file(xsc_node, tmp_path):
    import hashlib

    data = b"to be counted\n" * 5000
    run = json.loads(ok(xsc_node.xsc("compute", "run", SHA256, "--stdout-to-store", "--no-outputs", "--json",
                                     input=data)))
    (stored,) = run["outputs"]
    digest_line = (hashlib.sha256(data).hexdigest() + "\n").encode()
    assert stored["name"] == "stdout" and stored["size"] == len(digest_line)
    assert stored["sha256"] == hashlib.sha256(digest_line).hexdigest() and run["stdout"] == ""
    target = tmp_path / "stdout"
    ok(xsc_node.xsc("store", "get", stored["capability"], "-o", str(target)))
    assert target.read_bytes() == digest_line
    named = {f["capability"]: f["name"] for f in json.loads(ok(xsc_node.xsc("store", "ls", "--json")))}
    assert named[stored["capability"]] == f"job:{run['id']}:stdout"
    line = error_line(xsc_node.xsc("compute", "run", SHA256, "--stdout-to-store", "--bytes-out", "10", input=data))
    assert "stdout went over its cap" in line, line


def test_an_s3_object_is_an_input_through_the_bucket_index(xsc_node, tmp_path):
    import hashlib
    import urllib.request

    parts = [b"first part of the object\n" * 100, b"and its second part\n" * 50]
    caps = []
    for n, body in enumerate(parts):
        path = tmp_path / f"part{n}"
        path.write_bytes(body)
        caps.append(put(xsc_node, path))
    token = (xsc_node.data_dir / "api-token").read_text().strip()

    def call(method: str, path: str, body: dict | None = None) -> None:
        request = urllib.request.Request(xsc_node.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        urllib.request.urlopen(request).close()

    call("PUT", "/v1/s3/buckets/photos")
    call("PUT", "/v1/s3/buckets/photos/object?key=2024/big.txt",
         {"parts": [{"cap": c, "size": len(b)} for c, b in zip(caps, parts)], "etag": "x"})
    whole = b"".join(parts)
    printed = ok(xsc_node.xsc("compute", "run", SHA256, "/in/obj", "--input", "s3://photos/2024/big.txt:/in/obj",
                              "--no-stdin"))
    assert printed == hashlib.sha256(whole).hexdigest() + "\n"
    line = error_line(xsc_node.xsc("compute", "run", SHA256, "/in/obj", "--input", "s3://photos/nope:/in/obj",
                                   "--no-stdin"))
    assert "input /in/obj cannot be read" in line and "nope" in line, line


def test_a_rerun_of_a_job_whose_s3_input_changed_since_is_refused(xsc_node, tmp_path):
    import urllib.request

    token = (xsc_node.data_dir / "api-token").read_text().strip()

    def write(body: bytes) -> None:
        (path := tmp_path / "part").write_bytes(body)
        parts = [{"cap": put(xsc_node, path), "size": len(body)}]
        for method, where, sent in (("PUT", "/v1/s3/buckets/logs", None),
                                    ("PUT", "/v1/s3/buckets/logs/object?key=day.txt", {"parts": parts, "etag": "x"})):
            urllib.request.urlopen(urllib.request.Request(
                xsc_node.url + where, method=method, data=None if sent is None else json.dumps(sent).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})).close()

    write(b"first day\n")
    first = json.loads(ok(xsc_node.xsc("compute", "run", SHA256, "/in/log", "--input", "s3://logs/day.txt:/in/log",
                                       "--no-stdin", "--json")))
    assert json.loads(ok(xsc_node.xsc("compute", "rerun", first["id"], "--json")))["executions"] == 2
    write(b"second day\n")
    line = error_line(xsc_node.xsc("compute", "rerun", first["id"]))
    assert line == "xsc: error: what the job reads changed since it ran: run again, it would be another job (run " \
        "the new job with: xsc compute run SPEC.toml (or MODULE ...))", line
    assert json.loads(ok(xsc_node.xsc("compute", "job", first["id"], "--json")))["executions"] == 2


def test_map_runs_one_job_per_input_and_names_each_failure(xsc_node, tmp_path):
    import hashlib

    bodies = [f"input number {n}\n".encode() * (n + 1) for n in range(5)]
    caps = []
    for n, body in enumerate(bodies):
        path = tmp_path / f"in{n}"
        path.write_bytes(body)
        caps.append(put(xsc_node, path))
    gone = tmp_path / "gone"
    gone.write_bytes(b"removed before the map\n")
    missing = put(xsc_node, gone)
    ok(xsc_node.xsc("store", "rm", missing))
    over = [arg for cap in [*caps, missing] for arg in ("--over", cap)]
    result = xsc_node.xsc("compute", "map", SHA256, *over, "--as", "-", "--json")
    assert result.returncode == 1
    manifest = json.loads(result.stdout)
    assert manifest["failed"] == 1 and len(manifest["results"]) == 6
    for body, cap, r in zip(bodies, caps, manifest["results"]):
        assert r["input"] == cap and r["state"] == "done" and r["stdout"] == hashlib.sha256(body).hexdigest() + "\n"
    assert manifest["results"][5]["input"] == missing and "cannot be read" in manifest["results"][5]["error"]
    assert f"xsc: {missing}: " in result.stderr.decode()
