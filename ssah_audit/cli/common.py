"""What every command shares about talking to the user: one-line usage errors, the two consoles, and the mapping
of exceptions to exit codes (0 success, 1 a gate failed, 2 a user mistake, 3 anything unexpected)."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import traceback

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from ..errors import UserError
from ..outputs import STORAGE_ERRORS

try:  # typer 0.2x carries its own copy of click; older releases use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors


class OneLineUsageError(click_errors.ClickException):
    """A bad option or argument, told the way every other user error is: one line on stderr, exit 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        print(f"error: {self.format_message()}", file=sys.stderr)


class OneLineErrors(typer.core.TyperGroup):
    """click prints a usage error as a usage line, a hint and a boxed message; a CI log wants one line. Showing
    help for a bare command (no arguments) stays as it is."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage():
    try:
        yield
    except click_errors.NoArgsIsHelpError:
        raise
    except click_errors.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        raise OneLineUsageError(exc.format_message() + where) from None


class PipeConsole(Console):
    """Output piped into a reader that stops early (`| head -1`) is not an error: Unix tools exit 0 quietly,
    where rich exits 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _stdout_to_devnull()
        raise SystemExit(0)


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not hit the closed pipe again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


out = PipeConsole()
err = Console(stderr=True)
STATE = {"debug": False, "quiet": False}


class Terminated(BaseException):
    """A stop signal (SIGINT, SIGTERM from a CI runner cancelling the job, SIGHUP from a closed terminal), raised in
    the main thread so that every cleanup runs as it would for an error: staging folders are removed, nothing
    half-written is published. A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it, but
    not a KeyboardInterrupt: click would print "Aborted!" and exit 1, the code of a failed gate."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum, self.exit_code = signum, 128 + signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_signals() -> None:
    """Turn the stop signals into Terminated. The first one raises; later ones are ignored, so the cleanup it
    starts is not cut short (SIGKILL still ends the process; a later run sweeps what that leaves)."""

    def stop(signum, frame):
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        raise Terminated(signum)

    for number in STOP_SIGNALS:
        signal.signal(number, stop)


def run_app(app) -> None:
    """Run the typer app as a program: stop signals end it with 128 + the signal's number, after cleaning up."""
    stop_on_signals()
    try:
        app()
    except Terminated as stopped:
        print(f"stopped by {signal.Signals(stopped.signum).name}: nothing unfinished was kept", file=sys.stderr)
        sys.exit(stopped.exit_code)


def handles_errors(command):
    """Map exceptions to exit codes: UserError, and a full or read-only disk, -> 2 with one line; anything
    unexpected -> 3. --debug adds the traceback but keeps the exit code, so a CI step never reads a user mistake
    as a failed gate (1). Stop signals (Terminated) pass through to run_app."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UserError as exc:
            if STATE["debug"]:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:  # typer.echo into `| head -1`: the reader has what it wanted
            _stdout_to_devnull()
            raise typer.Exit(0) from None
        except Exception as exc:  # the last line of defence: never a traceback unless asked for
            if STATE["debug"]:
                traceback.print_exc()
            if isinstance(exc, OSError) and exc.errno in STORAGE_ERRORS:  # the machine's problem, said plainly
                where = f" ({exc.filename})" if exc.filename else ""
                err.print(f"[bold red]error:[/] {escape(exc.strerror or str(exc))}{escape(where)}", markup=True,
                          highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            if not STATE["debug"]:
                err.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {escape(str(exc))} (rerun with "
                          "--debug for the traceback)", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None

    return wrapper


def status(message: str):
    """A spinner on stderr while a model loads or runs; nothing under --quiet."""
    return contextlib.nullcontext() if STATE["quiet"] else err.status(message)
