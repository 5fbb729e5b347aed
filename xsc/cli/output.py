"""Where errors become CLI messages and exit codes, and the options and helpers commands share (tables: tables.py)."""

from __future__ import annotations

import math
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any, Sequence

import click
from click.core import ParameterSource

from ..errors import InvalidArgument, XscError, shown
from ..units import credits_argument, duration_argument, parse_credits, parse_duration, parse_seconds
from .interrupts import INTERRUPTED

if TYPE_CHECKING:
    from pathlib import Path

EXIT_ERROR = 1
EXIT_USAGE = 2


VERBOSE = False  # `xsc --verbose`: an error's details follow its one line


# click's names of its number types, as a value that is not one is said
CLICK_NUMBERS = (("integer range", "a whole number"), ("float range", "a number"), ("integer", "a whole number"),
                 ("float", "a number"))


def usage_message(exc: click.UsageError) -> str:
    """A usage error in one or two short lines: what is wrong, then the usage and where help is."""
    if isinstance(exc, click.BadParameter) and exc.ctx is not None and exc.param is not None \
            and exc.param.envvar and exc.ctx.get_parameter_source(exc.param.name) is ParameterSource.ENVIRONMENT:
        exc.param_hint = f"${exc.param.envvar}"  # where the value came from: the flag was never given
    message = exc.format_message()
    for click_name, plain in CLICK_NUMBERS:  # "'abc' is not a valid integer range" reads as if a range were asked
        message = message.replace(f" is not a valid {click_name}.", f" is not {plain}.")
    message = message[:1].lower() + message[1:].rstrip(".")
    # click quotes what was typed whole ("got unexpected extra argument (...)"): a pasted file of an argument
    # would fill the screen, its control characters reaching the terminal.  One printable line, cut.
    message = shown(message)
    if isinstance(exc, click.NoSuchOption) and exc.option_name in ("--verbose", "-v") and exc.ctx is not None:
        # the one global option the CLI takes before the command only (it must hold from the command's start)
        command = exc.ctx.command_path.removeprefix("xsc").strip()
        message += f" (it goes before the command: xsc --verbose {command} ...)"
    lines = [f"xsc: usage error: {message}"]
    if exc.ctx is not None:
        usage = exc.ctx.get_usage().replace("Usage: ", "usage: ", 1)
        lines.append(f"{usage} (more: {exc.ctx.command_path} --help)")
    return "\n".join(lines)


def run_cli(group: click.Group, args: Sequence[str] | None = None) -> None:
    try:
        group.main(args=args, standalone_mode=False, prog_name="xsc")
    except click.exceptions.Abort as exc:  # click's form of a Ctrl-C in a command (a KeyboardInterrupt)
        click.echo(getattr(exc.__cause__, "said", INTERRUPTED), err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # a group without its command: its help, as click shows it
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        click.echo(usage_message(exc), err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"xsc: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except XscError as exc:
        click.echo(f"xsc: error: {exc.with_hint}", err=True)
        if VERBOSE and exc.details:
            from .. import codec

            click.echo(codec.text(exc.details, indent=2, sort_keys=True), err=True)
        sys.exit(EXIT_ERROR)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except OSError as exc:
        if exc.filename is None:  # not a file the user named: a fault of the program, kept whole
            raise
        click.echo(f"xsc: error: {file_error(exc)}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt as exc:
        click.echo(getattr(exc, "said", INTERRUPTED), err=True)
        sys.exit(130)
    except Exception as exc:
        if not _interrupted(exc):
            raise
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    sys.exit(0)


def _interrupted(exc: BaseException) -> bool:
    """Did a Ctrl-C cause `exc`?  One that lands in a module being imported (a command's modules are imported
    as it starts) can come out wrapped in another error, e.g. a RuntimeError from a class being made."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def path_id(text: str, what: str, listing: str) -> str:
    """An id or a name the user gave, quoted whole as one segment of a path of the node's API (so that 'ID?x' or
    'ID/x' is refused as not an id, not sent as ID's path).  An empty one (`"$JOB"` with JOB unset) is refused here,
    naming what is missing and the command that lists them: its path would name no resource, and the node's 404 for
    it would say nothing the user gave."""
    from urllib.parse import quote

    from ..errors import InvalidArgument

    if not text:
        raise InvalidArgument(f"no {what} given: an empty one names none", hint=f"see them with: {listing}")
    return quote(text, safe="")


def file_error(exc: OSError) -> str:
    """A file or directory the system refused (a path too long, a data dir where none can be made), in one line."""
    def shown(name: Any) -> str:
        text = os.fsencode(name).decode(errors="backslashreplace") if isinstance(name, (str, bytes)) else str(name)
        return text or "''"

    where = shown(exc.filename) + (f" -> {shown(exc.filename2)}" if exc.filename2 is not None else "")
    reason = (exc.strerror or type(exc).__name__).lower()
    return f"{where}: {reason} (check the path, and that it is yours to use)"


def output_file(output: str, force: bool, *, devices: bool = False) -> Path:
    """The -o file, checked before anything is fetched: its folder exists, and it does not (unless --force).  With
    `devices`, a character device (/dev/null, to time or check a get) is taken as it is, to be written through."""
    from pathlib import Path

    from ..errors import InvalidArgument

    target = Path(output)
    folder = target.parent
    if not folder.is_dir():
        raise InvalidArgument(f"cannot write {output}: there is no folder {folder}",
                              hint="create it first, or give -o a path in an existing folder")
    if target.is_dir():
        raise InvalidArgument(f"cannot write {output}: it is a folder", hint="give -o a file name")
    if devices and target.is_char_device():  # nothing is renamed over it, and it holds nothing to overwrite
        if not os.access(target, os.W_OK):
            raise InvalidArgument(f"cannot write {output}: permission denied")
        return target
    # The file is written beside FILE and renamed over it: a device or a pipe (/dev/null) would be replaced.
    if target.exists() and not target.is_file():
        raise InvalidArgument(f"cannot write {output}: it is not a regular file",
                              hint=f"write to stdout and redirect it: -o - > {shlex.quote(str(output))}")
    if target.exists() and not force:
        raise InvalidArgument(f"{output} already exists", hint="add --force to overwrite it, or pick another -o")
    if not os.access(folder, os.W_OK):
        raise InvalidArgument(f"cannot write {output}: permission denied in {folder}")
    return target


def emit_json(value: Any) -> None:
    from .. import codec  # imported here, as in client/sync.py: a get prints no JSON

    click.echo(codec.text(value, indent=2, sort_keys=True))


def program_output(facts: dict[str, Any]) -> None:
    """What a WASI program wrote (an invoke's, a job's, or what one wrote before it failed), on this command's
    stdout and stderr as the program wrote them, and a warning for a stream the node cut (an invoke's, at 64 KiB)."""
    for stream, out in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        if facts.get(stream):
            out.write(facts[stream])
            out.flush()
    for stream in ("stdout", "stderr"):
        dropped = facts.get(f"{stream}_truncated")
        if dropped:
            click.echo(f"xsc: warning: the program's {stream} was cut at 64 KiB; {dropped} more bytes were dropped",
                       err=True)


def _json_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """`--json` given here or before the command (`xsc --json store ls`)."""
    return bool(value or getattr(ctx.find_root().obj, "json", False))


json_option = click.option("--json", "as_json", is_flag=True, callback=_json_flag, help="Print JSON for scripts.")
wide_option = click.option("--wide", is_flag=True, help="Show every column whole, however wide the table.")


class Duration(click.ParamType):
    """A flag's time in the units of every seconds key (250ms, 30s, 1.5m, 2h; one parser, xsc.units), a bare number
    being seconds so that scripts written for seconds keep working; `whole`: whole seconds (an int).  A bad value, or
    one outside `least` to `most` seconds, is a usage error naming the flag and a value it takes, `example`."""

    name = "duration"

    def __init__(self, example: str, *, least: float = 0, most: float | None = None, whole: bool = False) -> None:
        self.example, self.least, self.most, self.whole = example, least, most, whole

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | int:
        flag = param.opts[0] if param is not None and param.opts else "it"
        example = f"(e.g. {flag} {self.example})"
        try:  # a default is given as a number, a typed value as text: both through the one parser
            seconds = parse_duration(value) if self.whole else parse_seconds(value)
        except InvalidArgument as err:
            self.fail(f"{err.message} {example}", param, ctx)
        if isinstance(seconds, float) and not math.isfinite(seconds):  # more digits than a float holds
            self.fail(f"{shown(str(value), 40)} is too long a time {example}", param, ctx)
        if seconds < self.least or (self.most is not None and seconds > self.most):
            bounds = f"is not within {_said(self.least)} to {_said(self.most)}" if self.most is not None \
                else f"is less than {_said(self.least)}"
            self.fail(f"{shown(str(value), 40)} {bounds} {example}", param, ctx)
        return seconds


def _said(seconds: float) -> str:
    """A bound of a Duration as the flag takes it: 10m, 1s, 250ms."""
    return duration_argument(int(seconds) if float(seconds).is_integer() else seconds)


class Credits(click.ParamType):
    """An amount of credits (units.parse_credits) in micro-credits, at least `least` and at most `most`; `word` (e.g.
    `default`) is None.  A bad or negative one (`-1`: an argument to a PassesArgs command) is a usage error, exit 2."""
    name = "credits"

    def __init__(self, least: int = 1, most: int | None = None, what: str = "an amount", word: str = "") -> None:
        self.least, self.most, self.what, self.word = least, most, what, word
        self.rule = f"positive, at least {credits_argument(least)}" if least else "0 or more"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if not isinstance(value, str) or (self.word and value.strip().lower() == self.word):
            return None if isinstance(value, str) else value
        text = value.strip()
        try:  # a negative figure is refused as negative, below (click's message names the argument)
            micro = -parse_credits(text[1:]) if text[:1] == "-" else parse_credits(text, self.most, self.what)
        except InvalidArgument:
            try:
                micro = parse_credits(text, self.most, self.what)  # no figure: its refusal says the text as typed
            except InvalidArgument as err:
                self.fail(err.with_hint, param, ctx)
        if micro < self.least:
            self.fail(f"the amount must be {self.rule} credits, not {shown(text, 40)}", param, ctx)
        return micro


class PassesArgs(click.Command):
    """A command whose trailing arguments go to a wasm function or program (`invoke`, `run`): a long option it does
    not know, before a `--`, is a usage error rather than an argument, so a misspelt `--stdn FILE` is not run as the
    program's argv; everything after `--`, and words with one dash (`-5`, `-inf`, a program's `-x`), are arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value: dict[str, bool] = {name: False for name in self.get_help_option_names(ctx)}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                takes_value.update((name, not (param.is_flag or param.count))
                                   for name in (*param.opts, *param.secondary_opts))
        at = 0
        while at < len(args) and args[at] != "--":
            name, given, _ = args[at].partition("=")
            if name in takes_value:
                at += 2 if takes_value[name] and not given else 1
                continue
            if name.startswith("--") and name != "--":
                raise _no_such_option(ctx, name, args[at], [n for n in takes_value if n.startswith("--")])
            at += 1
        return super().parse_args(ctx, args)


def _no_such_option(ctx: click.Context, name: str, given: str, options: list[str]) -> click.NoSuchOption:
    if name == "--verbose":  # usage_message says where the global option goes
        return click.NoSuchOption(name, ctx=ctx)
    import difflib

    close = difflib.get_close_matches(name, options, n=1)
    meant = f"did you mean {close[0]}? " if close else ""
    return click.NoSuchOption(name, message=f"no such option '{name}' ({meant}an argument that begins with -- "
                                            f"goes after a --: {ctx.command_path} ... -- {given})", ctx=ctx)
