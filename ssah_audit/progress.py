"""Progress bars for anything that takes more than a second: on stderr, only on a terminal, off with --quiet."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

QUIET = {"on": False}


def set_quiet(quiet: bool) -> None:
    QUIET["on"] = quiet


@contextmanager
def progress_bar(description: str, total: int):
    """Yields advance(n=1, **fields); a no-op when quiet or when stderr is not a terminal (CI logs)."""
    enabled = not QUIET["on"] and sys.stderr.isatty()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not enabled) as bar:
        task = bar.add_task(description, total=total, status="")

        def advance(n: int = 1, **fields) -> None:
            bar.update(task, advance=n, **fields)

        yield advance


def is_quiet() -> bool:
    return QUIET["on"]


def notice(message: str) -> None:
    """Tell the user something worth knowing (a long first use, skipped input) on stderr: stdout stays
    machine-readable. Silent with --quiet."""
    if not is_quiet():
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Something that changes what a run does or keeps (a damaged cache entry measured again, a cache that cannot
    be written): on stderr even with --quiet, since a CI log is where it must be seen."""
    print(message, file=sys.stderr, flush=True)
