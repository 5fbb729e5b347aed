"""The one place where errors become CLI messages and exit codes, plus shared rendering helpers."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable

import click

from ..errors import XscError

EXIT_ERROR = 1
EXIT_USAGE = 2


def run_cli(group: click.Group) -> None:
    try:
        group.main(standalone_mode=False, prog_name="xsc")
    except click.exceptions.Abort:
        click.echo("xsc: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except XscError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        click.echo(f"xsc: error: {exc.message}{hint}", err=True)
        sys.exit(EXIT_ERROR)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("xsc: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def table(columns: list[str], rows: Iterable[Iterable[Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")  # long ids and capabilities stay whole and copyable
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    Console().print(t)


def key_values(pairs: Iterable[tuple[str, Any]]) -> None:
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        click.echo(f"{k + ':':<{width + 1}} {v}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
