"""Every flag that takes a time takes it in the units of the config's seconds keys (250ms, 30s, 1.5m, 2h), a bare
number being seconds; a bad one is a usage error in one line that names the flag and a value it takes."""

from __future__ import annotations

import click
import pytest

from xsc.cli.allocation import simulate
from xsc.cli.compute import invoke
from xsc.cli.devnet import delay_line, down, up
from xsc.cli.functions import serve as serve_function
from xsc.cli.jobs import run
from xsc.cli.s3 import serve as serve_s3
from xsc.cli.store import put, renew

from tests.support.cli import xsc

# (the command's words, the arguments it needs besides the flag, its command object, the flag, its parameter)
FLAGS = [
    (["compute", "invoke"], ["m.wasm", "add"], invoke, "--timeout", "timeout"),
    (["compute", "run"], ["m.wasm"], run, "--timeout", "timeout"),
    (["compute", "serve"], ["site", "m.wasm"], serve_function, "--timeout", "timeout"),
    (["devnet", "up"], [], up, "--timeout", "timeout"),
    (["devnet", "up"], [], up, "--delay", "delay"),
    (["devnet", "down"], [], down, "--timeout", "timeout"),
    (["devnet", "delay-line"], ["ns"], delay_line, "--delay", "delay"),
    (["s3", "serve"], [], serve_s3, "--reconcile-interval", "reconcile_interval"),
    (["allocation", "simulate"], [], simulate, "--max-time", "max_time_s"),
    (["store", "put"], ["f"], put, "--duration", "duration"),
    (["store", "renew"], ["CAP"], renew, "--duration", "duration"),
]


def _parsed(command, args: list[str]) -> dict:
    with command.make_context(command.name, args) as ctx:
        return ctx.params


# what each takes, in a unit and as a bare number (seconds): within its bounds, whole seconds for simulated time
TAKEN = {"--timeout": [("1500ms", 1.5), ("2", 2.0), ("1.5m", 90.0)], "--delay": [("250ms", 0.25), ("2", 2.0)],
         "--reconcile-interval": [("1.5m", 90.0), ("2", 2.0), ("1h", 3600.0)], "--max-time": [("1h", 3600), ("90", 90)],
         "--duration": [("30d", 2_592_000), ("2w", 1_209_600), ("1.5h", 5400), ("3600", 3600)]}


@pytest.mark.parametrize("words, rest, command, flag, name", FLAGS, ids=[f"{f[0][-1]}{f[3]}" for f in FLAGS])
def test_a_time_flag_takes_a_unit_and_a_bare_number_as_seconds(words, rest, command, flag, name) -> None:
    for given, seconds in TAKEN[flag]:
        value = _parsed(command, [*rest, flag, given])[name]
        assert value == seconds and type(value) is type(seconds), (given, value)


@pytest.mark.parametrize("words, rest, command, flag, name", FLAGS, ids=[f"{f[0][-1]}{f[3]}" for f in FLAGS])
@pytest.mark.parametrize("given, said", [
    ("10x", "unknown unit 'x' in the duration '10x'"),
    ("5min", "unknown unit 'min' in the duration '5min'"),
    ("soon", "not a duration: 'soon'"),
    ("-5", "duration must not be negative: '-5'"),
    ("-1.5m", "duration must not be negative: '-1.5m'"),
    ("nan", "not a duration: 'nan'"),
    ("inf", "not a duration: 'inf'"),
    ("9" * 400, "9" * 39 + "…"),  # past a float: too long a time, or past the flag's bounds
])
def test_a_bad_time_is_one_usage_line_naming_the_flag_and_a_good_example(words, rest, command, flag, name, given,
                                                                         said) -> None:
    result = xsc(*words, *rest, flag, given, env={"XSC_TOKEN": "t"})
    assert result.exit_code == 2, result.output
    first, usage = result.stderr.splitlines()
    assert first.startswith(f"xsc: usage error: invalid value for '{flag}': "), first
    assert said in first and first.endswith(f" (e.g. {flag} {command.params[_index(command, name)].type.example})")
    assert usage.startswith(f"usage: xsc {' '.join(words)} ")


def _index(command, name: str) -> int:
    return next(i for i, param in enumerate(command.params) if param.name == name)


@pytest.mark.parametrize("args, said", [
    (["devnet", "up", "--timeout", "500ms"], "invalid value for '--timeout': 500ms is not within 1s to 10m"),
    (["devnet", "up", "--timeout", "11m"], "invalid value for '--timeout': 11m is not within 1s to 10m"),
    (["devnet", "down", "--timeout", "601"], "invalid value for '--timeout': 601 is not within 0s to 10m"),
    (["devnet", "delay-line", "--delay", "11s", "ns"], "invalid value for '--delay': 11s is not within 0s to 10s"),
    (["s3", "serve", "--reconcile-interval", "0.5s"],
     "invalid value for '--reconcile-interval': 0.5s is less than 1s"),
    (["allocation", "simulate", "--max-time", "2d"], "invalid value for '--max-time': 2d is not within 1s to 1d"),
    (["compute", "invoke", "m.wasm", "add", "--timeout", "9" * 400],
     f"invalid value for '--timeout': {'9' * 39}… is too long a time"),
    (["allocation", "simulate", "--max-time", "1.5s"],
     "invalid value for '--max-time': not a whole number of seconds: '1.5s'"),
    (["store", "put", "f", "--duration", "30s"], "invalid value for '--duration': 30s is not within 1m to 3650d"),
    (["store", "renew", "CAP", "--duration", "3651d"],
     "invalid value for '--duration': 3651d is not within 1m to 3650d"),
    (["store", "renew", "CAP", "--duration", "90500ms"],
     "invalid value for '--duration': not a whole number of seconds: '90500ms'"),
])
def test_a_time_outside_a_flags_bounds_is_refused_with_them(args, said) -> None:
    result = xsc(*args)
    assert result.exit_code == 2 and result.stderr.splitlines()[0].startswith(f"xsc: usage error: {said} (e.g. "), \
        result.stderr


@pytest.mark.parametrize("words, rest, command, flag, name", FLAGS, ids=[f"{f[0][-1]}{f[3]}" for f in FLAGS])
def test_help_shows_a_time_flag_as_a_duration_with_an_example(words, rest, command, flag, name) -> None:
    result = xsc(*words, "--help")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"{flag} "))
    assert line.split()[:2] == [flag, "DURATION"]
    assert "e.g. " in command.params[_index(command, name)].help


def test_defaults_are_read_as_the_help_shows_them() -> None:
    assert _parsed(up, [])["timeout"] == 60.0 and _parsed(up, [])["delay"] == 0.0
    assert _parsed(down, [])["timeout"] == 30.0
    assert _parsed(serve_s3, [])["reconcile_interval"] == 300.0
    assert _parsed(simulate, [])["max_time_s"] == 600
    assert _parsed(put, ["f"])["duration"] is None and _parsed(renew, ["CAP"])["duration"] is None  # the node's own


def test_no_option_takes_a_bare_float() -> None:
    """A time is a Duration, which refuses nan and inf; a bare float option would take them, and a request's JSON
    would carry them as null (the node's default, silently): every number a command takes is an int or a Duration."""
    from xsc.cli.app import cli

    def floats(command: click.Command, words: list[str]) -> list[str]:
        found = [f"{' '.join(words)} {p.name}" for p in command.params
                 for t in getattr(p.type, "types", None) or [p.type] if isinstance(t, click.types.FloatParamType)]
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                found += floats(command.get_command(ctx, name), [*words, name])
        return found

    assert floats(cli, ["xsc"]) == []
