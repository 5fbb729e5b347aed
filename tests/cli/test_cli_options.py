"""Global options where users put them: before or after the subcommand."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.support.nodes import free_port, start_xsc
from tests.support.cli import xsc


def test_data_dir_node_and_json_work_after_the_subcommand(thread_node, tmp_path: Path) -> None:
    node = thread_node()
    cap = node.xsc("store", "put", "-", input=b"where users put options").stdout.strip()
    before = xsc("--data-dir", str(node.data_dir), "store", "ls", "--json")
    after = xsc("store", "ls", "--data-dir", str(node.data_dir), "--json")
    assert before.exit_code == after.exit_code == 0, after.output
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(after.stdout)[0]["capability"] == cap

    root_json = xsc("--json", "store", "ls", "--data-dir", str(node.data_dir))
    assert root_json.exit_code == 0 and json.loads(root_json.stdout) == json.loads(after.stdout)

    # --node after the command, with the token of that node (no data dir of its own)
    other = tmp_path / "empty"
    by_url = xsc("store", "get", cap, "--node", node.url, "--data-dir", str(other),
                 env={"XSC_TOKEN": (node.data_dir / "api-token").read_text().strip()})
    assert by_url.exit_code == 0 and by_url.stdout == "where users put options", by_url.output

    # the one after the command wins over the one before it
    wrong = xsc("--data-dir", str(other), "store", "ls", "--data-dir", str(node.data_dir))
    assert wrong.exit_code == 0, wrong.output


def test_json_on_a_command_without_json_is_a_usage_error() -> None:
    result = xsc("--json", "store", "get", "xsc:chk:x")
    assert result.exit_code == 2
    assert "has no --json output" in result.stderr and len(result.stderr.splitlines()) <= 2


@pytest.mark.parametrize("ratio", ["2", "x", "-0.1", "nan"])
def test_a_bad_min_availability_is_a_usage_error_as_a_bad_duration_is(tmp_path: Path, ratio: str) -> None:
    (tmp_path / "f").write_bytes(b"x")
    result = xsc("store", "put", str(tmp_path / "f"), "--min-availability", ratio, "--node", "http://127.0.0.1:9")
    assert result.exit_code == 2, result.output  # refused as it is parsed: no node is asked
    assert result.stderr.splitlines()[0] == "xsc: usage error: invalid value for '--min-availability': a ratio from " \
        f"0 to 1, not {ratio!r} (e.g. --min-availability 0.99)", result.stderr


def test_verbose_after_the_command_says_it_goes_before_it() -> None:
    for flag in ("--verbose", "-v"):
        result = xsc("store", "put", "photo.jpg", flag)
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines()[0] == f"xsc: usage error: no such option '{flag}' (it goes before the " \
            "command: xsc --verbose store put ...)", result.stderr
    assert "goes before" not in xsc("store", "put", "photo.jpg", "--verbos").stderr  # another option: no such hint


def test_the_hints_the_cli_prints_are_commands_that_parse(tmp_path: Path) -> None:
    data_dir = tmp_path / "never started"  # a space: the hint's command pastes only if the path is quoted
    result = xsc("store", "ls", "--data-dir", str(data_dir))
    assert result.exit_code == 1
    hint = re.search(r"start one with: (xsc node start[^)]*)\)", result.stderr).group(1)
    words = shlex.split(hint)
    assert words[words.index("--data-dir") + 1] == str(data_dir), hint
    parsed = xsc(*words[1:], "--help")
    assert parsed.exit_code == 0 and "--data-dir" in parsed.stdout, parsed.output


def test_node_start_takes_data_dir_after_the_subcommand_and_says_listening_once(tmp_path: Path) -> None:
    """As printed by the CLI's own hints and docs/peers.md: `xsc node start --data-dir X` (items 1 and 11)."""
    data_dir, port = tmp_path / "n", free_port()
    proc = start_xsc("node", "start", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}",
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: list[str] = []
    try:
        while not any("listening on" in line for line in seen):
            line = proc.stdout.readline().decode()
            assert line, "".join(seen)
            seen.append(line)
        assert str(data_dir) in seen[-1]
        # the line says the CLI can reach the node: its URL is recorded before it (as a script goes on right away)
        assert (data_dir / "node.url").read_text().strip() == f"http://127.0.0.1:{port}"
        status = xsc("node", "status", "--json", "--data-dir", str(data_dir))
        assert status.exit_code == 0 and json.loads(status.stdout)["listen"] == f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0
    assert ("".join(seen) + rest).count("listening on") == 1, "".join(seen) + rest


def _command_paths() -> list[list[str]]:
    """Every group and command of `xsc`, as the words that name it."""
    import click

    from xsc.cli import cli

    paths, todo = [], [([], cli)]
    while todo:
        words, command = todo.pop()
        paths.append(words)
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            todo += [([*words, name], command.get_command(ctx, name)) for name in command.list_commands(ctx)]
    return sorted(paths)


def test_every_command_has_help_that_fits_80_columns() -> None:
    paths = _command_paths()
    assert len(paths) > 60  # the walk found the lazily loaded groups' commands
    for words in paths:
        result = xsc(*words, "--help", env={"COLUMNS": "80"})
        assert result.exit_code == 0, (words, result.output)
        wide = [line for line in result.stdout.splitlines() if len(line) > 80]
        assert not wide, (words, wide)


def test_every_command_and_option_says_what_it_is() -> None:
    import click

    from xsc.cli import cli

    bare = []
    for words in _command_paths():
        command, ctx = cli, click.Context(cli)
        for word in words:
            command = command.get_command(ctx, word)
            ctx = click.Context(command, parent=ctx)
        if not (command.help or command.short_help):
            bare.append(" ".join(["xsc", *words]))
        bare += [f"xsc {' '.join(words)} {param.opts[0]}" for param in command.params
                 if isinstance(param, click.Option) and not param.hidden and not param.help]
    assert bare == [], f"commands and options whose --help says nothing: {bare}"


def test_a_groups_list_shows_each_commands_first_sentence_whole() -> None:
    import click

    from xsc.cli import cli

    for words in _command_paths():
        command = cli
        ctx = click.Context(cli)
        for word in words:
            command = command.get_command(ctx, word)
            ctx = click.Context(command, parent=ctx)
        if not isinstance(command, click.Group) or not words:
            continue  # `xsc --help` lists the groups from a table of its own
        listing = xsc(*words, "--help", env={"COLUMNS": "80"}).stdout.split("Commands:")[1]
        assert "..." not in listing, (words, listing)


def test_compute_says_in_one_line_each_kind_of_thing_it_runs() -> None:
    listed = next(line for line in xsc("--help", env={"COLUMNS": "80"}).stdout.splitlines()
                  if line.strip().startswith("compute "))
    own = xsc("compute", "--help").stdout.splitlines()[2].strip()
    for said in (listed, own):
        assert all(kind in said for kind in ("modules", "jobs", "maps", "web functions", "watches")), said
    assert listed.split(None, 1)[1] == own


def test_every_command_that_prints_a_files_shares_takes_wide() -> None:
    """`store check`, `verify` and `repair` print one table (a share's node id whole, its detail under its row on
    a narrow terminal): `--wide` on one is `--wide` on all."""
    import inspect

    from xsc.cli import store

    printing = [c for c in store.store.commands.values()
                if "shares_table(" in inspect.getsource(c.callback) or "report_of(" in inspect.getsource(c.callback)]
    assert {c.name for c in printing} >= {"check", "verify", "repair"}
    assert [c.name for c in printing if "wide" not in {p.name for p in c.params}] == []


def test_a_node_named_by_its_address_without_a_token_is_told_where_its_token_comes_from(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XSC_HOME": None, "XSC_TOKEN": None, "XSC_NODE_LISTEN": None}
    for named in (("--node", "http://127.0.0.1:9"), ()):
        result = xsc(*named, "store", "ls", env={**env, "XSC_NODE_LISTEN": "127.0.0.1:9"} if not named else env)
        assert result.exit_code == 1 and result.stderr == (
            f"xsc: error: no API token for the node at http://127.0.0.1:9: $XSC_TOKEN is not set, and "
            f"{tmp_path / '.xsc'} holds none (set XSC_TOKEN to that node's <data dir>/api-token, or give "
            "--data-dir DIR of that node)\n"), result.output
    empty = tmp_path / "empty"  # a data dir set by $XSC_HOME (a shell's profile) that holds no node's token
    result = xsc("--node", "http://127.0.0.1:9", "store", "ls", env={**env, "XSC_HOME": str(empty)})
    assert result.exit_code == 1 and result.stderr == (
        f"xsc: error: no API token for the node at http://127.0.0.1:9: $XSC_TOKEN is not set, and {empty} holds none "
        "(set XSC_TOKEN to that node's <data dir>/api-token, or give --data-dir DIR of that node)\n"), result.output
