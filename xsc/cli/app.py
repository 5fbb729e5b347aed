"""The `xsc` command line.  Subcommands are imported lazily so `xsc --help` stays fast.

The global options `--data-dir`, `--node` and `--json` are accepted before the subcommand
(`xsc --data-dir X store ls`) and after it (`xsc store ls --data-dir X`): every command that
talks to a node gets them added when its group is first loaded."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

import click

from .output import run_cli

SUBCOMMANDS = {
    "node": ("xsc.cli.node", "node", "Run a node and see how it is doing."),
    "config": ("xsc.cli.config", "config", "Show or set the node's configuration."),
    "store": ("xsc.cli.store", "store", "Put, get, check, verify and repair files."),
    "compute": ("xsc.cli.compute", "compute", "Wasm modules and invokes, jobs, maps, web functions, watches."),
    "ledger": ("xsc.cli.ledger", "ledger", "Balances, history and verification of the signed ledger."),
    "allocation": ("xsc.cli.allocation", "allocation", "The mutual-recognition allocator and its simulator."),
    "peers": ("xsc.cli.peers", "peers", "The nodes this node knows: list, join, forget."),
    "health": ("xsc.cli.health", "health", "How reachable this node's peers are."),
    "market": ("xsc.cli.market", "market", "Asks, bids, clearing prices, this node's offer, deals, recognition."),
    "ui": ("xsc.cli.ui", "ui", "Open the node's dashboard in a browser (a one-time login link)."),
    "devnet": ("xsc.cli.devnet", "devnet", "Run a local network of nodes for trying things out."),
    "s3": ("xsc.cli.s3", "s3", "Serve S3 (boto3, rclone, AWS CLI, s3cmd) over this node's storage; access keys."),
}
# Groups whose commands do not use a node's data dir (devnet has its own --dir).
_NO_NODE_OPTIONS = {"devnet", "allocation"}
_GLOBALS_ADDED = "_xsc_globals_added"


class _DataDir(click.Path):
    """A data dir's path: an empty one (`--data-dir "$UNSET"`) is refused, not taken for the default."""

    def convert(self, value, param, ctx):
        if value == "":
            self.fail("an empty path names no directory (name one, or leave it out for $XSC_HOME, else ~/.xsc)",
                      param, ctx)
        return super().convert(value, param, ctx)


def _set_global(name: str):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None:
            root = ctx.find_root()
            if root.obj is not None:
                setattr(root.obj, name, value)
        return value
    return callback


def _no_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    root = ctx.find_root()
    if value or getattr(root.obj, "json", False):
        raise click.UsageError(f"`{ctx.command_path}` has no --json output", ctx)
    return value


def _first_sentence(text: str) -> str:
    """The first sentence of a command's help, whole: what its group's list shows (click would cut it at 45
    characters or so, mid-sentence, with "..."); a period inside parentheses (e.g.) does not end it."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    depth = 0
    for i, char in enumerate(paragraph):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "." and depth <= 0 and (i + 1 == len(paragraph) or paragraph[i + 1] == " "):
            return paragraph[:i + 1]
    return paragraph


def _add_global_options(command: click.Command, uses_node: bool) -> None:
    """Let the global options be given after the subcommand too (they win over those before it)."""
    if getattr(command, _GLOBALS_ADDED, False):
        return
    setattr(command, _GLOBALS_ADDED, True)
    if command.help and not command.short_help:
        command.short_help = _first_sentence(command.help)
    if isinstance(command, click.Group):
        if isinstance(command, GroupWithLazyModules):
            command.uses_node = uses_node
        for sub in command.commands.values():
            _add_global_options(sub, uses_node)
        return
    names = {opt for p in command.params for opt in getattr(p, "opts", [])}
    if uses_node:
        if "--data-dir" not in names:
            command.params.append(click.Option(
                ["--data-dir"], type=_DataDir(file_okay=False), expose_value=False, is_eager=True,
                callback=_set_global("_data_dir"), help="The node's data dir (also before the command)."))
        if "--node" not in names:
            command.params.append(click.Option(
                ["--node"], metavar="URL", expose_value=False, is_eager=True,
                callback=_set_global("_node_url"), help="The node's URL (also before the command)."))
    if "--json" not in names:
        command.params.append(click.Option(["--json"], is_flag=True, expose_value=False, hidden=True,
                                           callback=_no_json))
    _usage_errors_from_parsing(command)


def _usage_errors_from_parsing(command: click.Command) -> None:
    """A bad value found while the command line is parsed (an option's check) is a usage error: exit 2."""
    from ..errors import XscError

    parse_args = command.parse_args

    def parse(ctx: click.Context, args: list[str]) -> list[str]:
        try:
            rest = _in_context(parse_args, ctx, args)
        except XscError as err:
            raise click.UsageError(err.with_hint, ctx) from None
        _values_requests_carry(ctx)
        return rest

    command.parse_args = parse  # type: ignore[method-assign]


def _in_context(parse_args: Callable[[click.Context, list[str]], list[str]], ctx: click.Context,
                args: list[str]) -> list[str]:
    """click's parser raises an option given without its value with no context: given this one, the error is said
    with the command's usage line, as every other usage error is."""
    try:
        return parse_args(ctx, args)
    except click.UsageError as err:
        if err.ctx is None:
            err.ctx = ctx
        raise


def _values_requests_carry(ctx: click.Context) -> None:
    """Values given on the command line go into requests (JSON, URLs, headers), which carry only Unicode: text that
    is not UTF-8 (Python keeps its bytes as lone surrogates) is a usage error here.  A path need not be text.  (No
    option takes a bare float, whose nan or inf JSON would carry as null: a time is a Duration, which refuses them.)"""
    for param in ctx.command.params:
        if isinstance(param.type, click.Path):
            continue
        value = ctx.params.get(param.name) if param.name else None
        for text in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode()
                except UnicodeEncodeError:
                    shown = os.fsencode(text).decode(errors="backslashreplace")  # the bytes as given
                    raise click.UsageError(f"{param.get_error_hint(ctx)} is not UTF-8 text: '{shown}'", ctx) from None


class GroupWithLazyModules(click.Group):
    """A group whose commands from `modules` (each a module with a COMMANDS tuple) are imported only when one of
    them is named or the group's commands are listed: `xsc compute invoke` does not pay for the job commands."""

    def __init__(self, *args, modules: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.modules = modules
        self.uses_node: bool | None = None  # set when the global options were added to the group's commands

    def _load(self) -> None:
        modules, self.modules = self.modules, ()
        for module in modules:
            for command in importlib.import_module(module).COMMANDS:
                self.add_command(command)
                if self.uses_node is not None:
                    _add_global_options(command, self.uses_node)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands:
            self._load()
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)


class LazyGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return _in_context(super().parse_args, ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr, _ = SUBCOMMANDS[name]
        command = getattr(importlib.import_module(module), attr)
        _add_global_options(command, name not in _NO_NODE_OPTIONS)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text without importing every subcommand module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", envvar="XSC_HOME", type=_DataDir(file_okay=False),
              help="The node's data dir (default: $XSC_HOME, else ~/.xsc); also accepted after the command.")
@click.option("--node", "node_url", envvar="XSC_NODE", metavar="URL",
              help="The node's URL (default: where the node in the data dir listens); also after the command.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (commands that have --json).")
@click.option("--verbose", "-v", is_flag=True, envvar="XSC_VERBOSE",
              help="On an error, print its details after the one-line summary (each peer's refusal, whole).")
@click.version_option(package_name="xsc", prog_name="xsc")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, node_url: str | None, as_json: bool, verbose: bool) -> None:
    """XSC: a peer-to-peer storage-and-compute node."""
    from . import output
    from .context import CliContext

    output.VERBOSE = verbose
    ctx.obj = CliContext(data_dir, node_url, as_json=as_json)


def main() -> None:
    ending: SystemExit | None = None
    try:
        run_cli(cli)
    except SystemExit as end:  # how every command ends (output.run_cli)
        ending = end
        raise
    finally:
        # The process ends here: the collections of its exit would free every module's classes and functions one
        # by one (~7 ms of a short command, a `store get` for one), which the system takes back whole.  Frozen, they
        # are out of the collector's sight (xsc/node/collector.py); atexit's handlers and the flush of stdout and
        # stderr still run, and what is freed by its last reference still is.
        import gc

        gc.freeze()
        if ending is not None:
            _end_now(ending.code)


def _end_now(code: object) -> None:
    """End the process with `code` once atexit's handlers have run and stdout and stderr are flushed, as the
    interpreter would, but without its finalization after them, which tears down every module (2-3 ms of a `store
    get`).  Returns, for the interpreter's own exit, where that does more: another thread still runs (it waits for
    those that are not daemons), the code is a message to print, or a flush fails (it reports that, exit 120)."""
    import atexit
    import threading

    if threading.active_count() > 1 or not (code is None or isinstance(code, int)):
        return
    atexit._run_exitfuncs()  # each handler once: the interpreter's exit, should it follow, finds none left
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # no stdout (None), closed, or its reader gone
        return
    os._exit(code or 0)
