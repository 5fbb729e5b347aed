"""The CLI's one progress bar: drawn on stderr, and only when stderr is a terminal (a pipe, a log file and --json
output never see it); gone once the work is done, so what the command prints after it stands alone.

    with progress_bar("put photo.jpg", size, data=True, shown=not as_json) as bar:
        bar.advance(len(chunk))                       # so much more done
        bar.show(done, total, "verify: share 2 ok")   # where a walk told by the node is, said again
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class Bar:
    """A bar of rich's on stderr, or, when there is none to draw, the same calls doing nothing."""

    def __init__(self, progress=None, task=None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def show(self, done: int, total: int | None = None, label: str | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total, description=label)


@contextmanager
def progress_bar(label: str, total: int | None = None, *, data: bool = False, shown: bool = True) -> Iterator[Bar]:
    """A bar for work of `total` steps (None: not known), labelled `label`; `data`: the steps are bytes, shown with
    their speed.  Drawn only if `shown` and stderr is a terminal."""
    if not (shown and sys.stderr.isatty()):
        yield Bar()
        return
    from rich.console import Console  # here: a command with no bar to draw does without rich (~30 ms)
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)

    counted = [DownloadColumn(), TransferSpeedColumn()] if data else [MofNCompleteColumn()]
    with Progress("[progress.description]{task.description}", BarColumn(), *counted, TimeRemainingColumn(),
                  transient=True, console=Console(stderr=True)) as progress:
        yield Bar(progress, progress.add_task(label, total=total))
