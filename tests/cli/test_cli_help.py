"""Every command's --help says what it does in its first line, names each of its arguments as its usage line shows
it, and gives every option a line of help."""

from __future__ import annotations

import re

import click

from xsc.cli import cli

from tests.support.cli import xsc


def _commands(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            yield from _commands(command.get_command(click.Context(command), name), (*path, name))


def _names(argument: click.Argument) -> set[str]:
    """The words an argument goes by in its usage (`MODULE.wasm|ID|SPEC.toml`: MODULE, ID, SPEC; `[ACCOUNT]`:
    ACCOUNT): its help names one of them."""
    if isinstance(argument.type, click.Choice):  # shown as {read|write}: named by its choices
        return {str(choice) for choice in argument.type.choices}
    shown = (argument.metavar or argument.name.upper()).strip("[].")
    return {re.split(r"[.\[\]]", alternative)[0] for alternative in shown.split("|")}


def test_every_command_says_what_it_does_names_its_arguments_and_helps_every_option() -> None:
    wrong = []
    for path, command in _commands(cli):
        shown = xsc(*path, "--help")
        assert shown.exit_code == 0, (path, shown.output)
        text = shown.stdout.split("\nOptions:")[0]
        said = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        if not said:
            wrong.append(f"xsc {' '.join(path)}: no line saying what it does")
        for argument in (p for p in command.params if isinstance(p, click.Argument)):
            if not any(re.search(rf"\b{re.escape(name)}\b", " ".join(said)) for name in _names(argument)):
                wrong.append(f"xsc {' '.join(path)}: its help does not name {'|'.join(sorted(_names(argument)))}")
        for option in (p for p in command.params if isinstance(p, click.Option)):
            if not option.hidden and not option.help:
                wrong.append(f"xsc {' '.join(path)}: {option.opts[0]} has no help")
    assert not wrong, "\n".join(wrong)
