"""A bad input is one line that says what is wrong and names what fixes it, in the CLI's own words."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.support.compute import WASM

ADD = str(WASM / "add.wasm")
SHA256 = str(WASM / "sha256.wasm")


def _line(done) -> str:
    """The one error line of a command that must have failed with exit 1, printing nothing on stdout."""
    assert done.exit_code == 1 and done.stdout == "", done.output
    (line,) = done.stderr.splitlines()
    return line


def test_compute_inputs_are_refused_naming_the_fix(thread_node) -> None:
    node = thread_node()
    # an empty function name, its module not yet deployed: deployed and asked again, the node names its functions
    assert _line(node.xsc("compute", "invoke", ADD, "", "1")) == \
        "xsc: error: the function to call is empty (name one of its functions: add, sub)"
    module_id = hashlib.sha256(Path(ADD).read_bytes()).hexdigest()
    assert _line(node.xsc("compute", "invoke", module_id, "", "1")) == \
        "xsc: error: the function to call is empty (name one of its functions: add, sub)"
    range_fix = "(use a number between -2147483648 and 4294967295)"
    assert _line(node.xsc("compute", "invoke", ADD, "add", "99999999999999999999", "1")) == \
        f"xsc: error: argument 1 of add is out of range for an i32: 99999999999999999999 {range_fix}"
    # thousands of digits (past the 4,300 int() reads): quoted cut short, and still the node's one line, not a 500
    for typed in ("9" * 5000, "0x" + "f" * 5000):
        line = _line(node.xsc("compute", "invoke", ADD, "add", typed, "1"))
        assert line.startswith(f"xsc: error: argument 1 of add is out of range for an i32: {typed[:40]}"), line
        assert line.endswith(f"… {range_fix}") and len(line) < 200, line
    assert node.xsc("compute", "invoke", ADD, "add", "0" * 5000 + "2", "3").stdout == "5\n"  # leading zeros: a number
    line = _line(node.xsc("compute", "invoke", ADD, "add", "x" * 5000, "1"))  # nor is a word of thousands quoted whole
    assert line.startswith("xsc: error: argument 1 of add is not an i32: 'xxx") and len(line) < 200, line
    for given in ("=x", "1A=x"):
        name = given.partition("=")[0]
        assert _line(node.xsc("compute", "run", SHA256, "--env", given)) == (
            f"xsc: error: env: {name!r} is not a variable name (up to 128 letters, digits and _, not first a digit) "
            f"(give each as: --env NAME=VALUE)")
    assert _line(node.xsc("compute", "run", SHA256, "--env", "BIG=" + "x" * 70_000)) == (
        "xsc: error: env is 68.4 KiB, over 64.0 KiB (its names and values in all) "
        "(store a large value as a file and mount it: --input CAP:/in/NAME)")
    for bucket, named in (("nobucket", "nobucket"), ("No_Bucket", "NAME")):
        assert _line(node.xsc("compute", "map", SHA256, "--over", f"s3://{bucket}/x")) == (
            f"xsc: error: no bucket named {bucket!r} (make it: xsc s3 mb {named}; xsc s3 buckets lists them)")


def test_this_nodes_own_id_is_said_to_be_its_own_not_an_unknown_peer(thread_node) -> None:
    node = thread_node()
    own = json.loads(node.xsc("node", "status", "--json").stdout)["id"]
    for typed in (own[:6], own[:6].upper(), own):
        assert _line(node.xsc("market", "recognize", typed, "5")) == (
            "xsc: error: a node does not recognise itself: that is this node's own id "
            "(see the ids of its peers with: xsc peers ls)")
        assert _line(node.xsc("peers", "rm", typed)) == (
            "xsc: error: that is this node's own id: a node is no peer of its own "
            "(see the ids of its peers with: xsc peers ls)")
    assert _line(node.xsc("market", "recognize", "zz", "5")) == \
        "xsc: error: no known peer starts with zz (see them with: xsc peers ls)"


def test_a_negative_config_value_is_judged_by_the_keys_own_bound(thread_node) -> None:
    node = thread_node()
    config = node.data_dir / "config.toml"
    before = config.read_bytes()
    for typed, shown in (("-5", "-5"), ("-5GiB", "'-5GiB'")):  # a number, and a size with its unit
        done = node.xsc("config", "set", "storage.capacity", typed)
        assert done.exit_code == 1 and done.stdout == "", done.output
        assert done.stderr.splitlines() == [
            f"xsc: error: bad configuration value storage.capacity: size must not be negative: {shown} (nothing "
            f"written; try: xsc config set storage.capacity 10GiB)"]
        assert config.read_bytes() == before
    typo = node.xsc("config", "set", "storage.capacity", "--jsn")  # a misspelt long option is no value
    assert typo.exit_code == 2 and typo.stderr.startswith("xsc: usage error: no such option '--jsn' (did you mean "
                                                          "--json?"), typo.output
    assert config.read_bytes() == before


def test_a_pipe_is_put_through_stdin_and_a_device_at_o_is_written_through(thread_node, tmp_path: Path) -> None:
    node = thread_node()
    pipe = tmp_path / "a pipe"
    os.mkfifo(pipe)
    assert _line(node.xsc("store", "put", str(pipe))) == \
        f"xsc: error: not a regular file: {pipe} (put what it gives through stdin: xsc store put - < '{pipe}')"
    assert _line(node.xsc("store", "put", str(tmp_path))) == \
        f"xsc: error: not a regular file: {tmp_path} (put one file at a time)"
    cap = node.xsc("store", "put", "-", input=b"some bytes").stdout.strip()
    before = sorted(os.listdir("/dev"))
    done = node.xsc("store", "get", cap, "-o", os.devnull)
    assert done.exit_code == 0 and done.output == "", done.output
    assert Path(os.devnull).is_char_device() and sorted(os.listdir("/dev")) == before  # nothing beside it, no rename


def test_a_capability_of_other_k_and_m_names_where_it_reads(thread_node) -> None:
    node = thread_node()
    cap = node.xsc("store", "put", "-", input=b"some bytes").stdout.strip()
    key, digest, _, _, size = cap.removeprefix("xsc:chk:").split(":")
    other = f"xsc:chk:{key}:{digest}:3:3:{size}"
    for args in (["store", "get", other], ["store", "check", other]):
        assert _line(node.xsc(*args)) == (
            "xsc: error: this node stores RS(k=4, m=2) files; the capability says k=3, m=3 (read it on a node that "
            "stores RS(k=3, m=3) files, or copy it again: this node's capabilities end in :4:2:<size>)")


def test_a_control_character_in_an_env_name_or_value_is_refused_in_one_line_for_jobs_and_functions(
        thread_node) -> None:
    """A NUL would end the variable early, a newline split a log or header line it is written into: no CGI variable
    holds either, nor does an env a job or a web function is given."""
    node = thread_node()
    stored = "store one of several lines as a file and mount it: --input CAP:/in/NAME"
    for command in (["compute", "run", SHA256], ["compute", "serve", "site", SHA256]):
        for value, char, at in (("x\ny", r"'\n'", 2), ("\0", r"'\x00'", 1), ("a\tb", r"'\t'", 2),
                                ("ok\x1b[2J", r"'\x1b'", 3), ("\x7f", r"'\x7f'", 1), ("\x85", r"'\x85'", 1)):
            assert _line(node.xsc(*command, "--env", f"GREETING={value}")) == (
                f"xsc: error: env: GREETING's value holds a control character, {char} at character {at} "
                f"(give values of one line without control characters; {stored})"), (command, value)
        for name in ("A\nB", "A\0"):
            assert _line(node.xsc(*command, "--env", f"{name}=x")) == (
                f"xsc: error: env: {name!r} is not a variable name (up to 128 letters, digits and _, not first a "
                f"digit) (give each as: --env NAME=VALUE)")
    assert node.xsc("compute", "run", SHA256, "--env", "GREETING=héllo wörld").exit_code == 0  # text, not controls
    assert json.loads(node.xsc("compute", "functions", "--json").stdout)["functions"] == []  # none served
