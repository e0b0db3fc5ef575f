"""The `ssah-audit` command line: thin. It parses, calls the library, and maps errors to exit codes.

Exit codes: 0 success, 1 a gate failed, 2 a user mistake (one line on stderr), 3 anything unexpected.
One module a command (or command group); this one builds the app from them.
"""

from __future__ import annotations

import os

import typer

from ..progress import set_quiet
from ..threads import use_available_cores
from . import audit, behavior, cache, finetune, inspect, judge, probe, prompts, repair, units, zoo
from .common import STATE, OneLineErrors, handles_errors, run_app

app = typer.Typer(help="Audit the safety of fine-tuned causal language models (SSAH).", cls=OneLineErrors,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
for command in (inspect.inspect, behavior.behavior, probe.probe, units.units, finetune.finetune, audit.audit,
                audit.report, repair.repair):
    app.command()(command)
app.command("judge")(judge.judge_command)
app.command("judge-fit")(judge.judge_fit_command)
app.add_typer(zoo.app, name="zoo")
app.add_typer(prompts.app, name="prompts")
app.add_typer(cache.app, name="cache")


@app.callback()
@handles_errors
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Also print the traceback of an error (same exit codes)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (for CI logs)."),
) -> None:
    STATE["debug"], STATE["quiet"] = debug, quiet
    use_available_cores()  # before torch loads: in a CPU-limited container it would start a thread per host core
    set_quiet(quiet)
    if quiet or not debug:
        _quiet_libraries(show_progress=not quiet)


def _quiet_libraries(show_progress: bool) -> None:
    """transformers' warnings and per-tensor progress bars drown our own output; keep them for --debug."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main() -> None:
    """Console-script entry point."""
    run_app(app)
