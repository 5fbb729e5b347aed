"""A Ctrl-C of a command: the one line it prints, and its handling while the CLI is still being imported (this
module imports nothing heavy: it is in place before click is)."""

from __future__ import annotations

import os

import _signal  # not `signal`: it imports enum, and enum is milliseconds

INTERRUPTED = "xsc: interrupted"  # what every Ctrl-C of a command prints, and it exits 130


class GoesOn(KeyboardInterrupt):
    """A Ctrl-C of a command whose request reached the node whole: the node goes on with it, and the one line says
    so, with the command that finds it."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.said = f"{INTERRUPTED}: {what}"


def _while_starting(signum: int, frame: object) -> None:
    # Nothing is written yet, nor open to clean up: the process can end where it stands.
    os.write(2, (INTERRUPTED + "\n").encode())
    os._exit(130)


def quiet_while_starting() -> bool:
    """Until `loud_again`, a SIGINT prints INTERRUPTED and ends the process, where Python's own handler would
    print a traceback from whichever module the signal landed in; False if nothing was changed."""
    return _handle_sigint(_while_starting)


def loud_again() -> None:
    """Python's own handler again: from here on the CLI handles the KeyboardInterrupt (output.run_cli), removing
    what a command leaves half done, e.g. a get's partial file."""
    _handle_sigint(_signal.default_int_handler)


def _handle_sigint(handler: object) -> bool:
    """Handle SIGINT with `handler` if Python's own handler (or ours) is in place: a SIGINT the caller ignores stays
    ignored, and a thread other than the main one cannot set one (the CLI run inside a program)."""
    if _signal.getsignal(_signal.SIGINT) not in (_signal.default_int_handler, _while_starting):
        return False
    try:
        _signal.signal(_signal.SIGINT, handler)
    except ValueError:
        return False
    return True
