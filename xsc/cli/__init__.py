"""The `xsc` command line: its commands are in app.py; this module is the console script's entry (`xsc.cli:main`).

It imports nothing heavy, so that a Ctrl-C while the CLI is still being imported (click and the package: tens of
milliseconds at the start of every command) ends the command as any Ctrl-C does, with one line and exit 130,
not a traceback from whichever module the signal landed in (interrupts.py)."""

from __future__ import annotations

from .interrupts import loud_again, quiet_while_starting


def main() -> None:
    quiet = quiet_while_starting()
    from .app import main as run

    if quiet:
        loud_again()
    run()


def __getattr__(name: str) -> object:
    """`from xsc.cli import cli` and the app's other names, imported when first asked for."""
    if name.startswith("__") or name == "app":  # (asked by the import system itself: not the app's)
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"{__name__}.app"), name)
