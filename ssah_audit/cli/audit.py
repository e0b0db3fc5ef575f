"""`ssah-audit audit` runs every measurement against a reference and gates on it; `report` re-renders its
results without a model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .. import config as defaults
from ..errors import UserError
from .common import err, handles_errors, out
from .options import (
    JUDGE_HELP,
    MODEL_HELP,
    LoadOptionsMaker,
    input_files,
    judge_option,
    model_command,
    model_files,
    overwrite_option,
)


@model_command
def audit(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="The aligned reference to compare with (default for a "
                                  "LoRA adapter: its base)."),
    config: Path = typer.Option(None, "--config", help="audit.toml: an [audit] table of settings, a [gate] table "
                                "of thresholds."),
    out_dir: Path = typer.Option(None, "--out", help="The report folder (must not exist); default "
                                 "reports/<model>-<UTC time>."),
    formats: str = typer.Option("html,md,json", "--format", help="Comma-separated: html, md, json."),
    junit_file: Path = typer.Option(None, "--junit", help="Write the gate as JUnit XML (one case per check)."),
    fail_on: list[str] = typer.Option(None, "--fail-on", help="Override a gate threshold, KEY=VALUE; repeatable."),
    quick: bool = typer.Option(False, "--quick", help="A fast look: 20 prompts a set, short generations."),
    judge: str = judge_option(None, JUDGE_HELP + " Default: the [judge] table's name, else rules."),
    prefill: str = typer.Option(None, "--prefill", help="Depth stage: compliant tokens prefilled, comma-separated "
                                f"(default {defaults.PREFILL}; none: no prefilling)."),
    templates: str = typer.Option(None, "--templates", help="Depth stage: jailbreak templates, the built-in "
                                  f"'{defaults.TEMPLATES}', a CSV/JSON/JSONL file with a 'template' column holding "
                                  "{prompt}, or none."),
    overwrite: bool = overwrite_option("Replace an existing --junit file."),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Audit a model against an aligned reference: behaviour, probing, units (verified by ablation),
    comparison, gate and reports. Exit 0 when the gate passes, 1 when it fails.
    """
    from dataclasses import asdict

    from .. import api, gate
    from ..config import load_config, read_settings
    from ..outputs import check_new_folder, check_outputs, write_atomic
    from ..reporting import render

    chosen = render.parse_formats(formats)
    settings_doc = load_config(config)
    limits = gate.thresholds(settings_doc, fail_on)
    settings = read_settings(settings_doc, quick, judge, prefill=prefill, templates=templates)
    inputs = ([config] if config else []) + input_files(settings.harmful, settings.benign, settings.borderline,
                                                        settings.safety_data, settings.utility_data,
                                                        settings.templates)
    inputs += model_files(model, reference)
    folder = check_new_folder(out_dir or render.new_folder(Path("reports"), model), make_parent=not out_dir)
    [junit_target] = check_outputs([junit_file], overwrite, inputs, folders=[folder])
    results = api.audit(model, reference, settings=settings, thresholds=limits, map_folder=folder,
                        **asdict(load_options()))
    passed = results.gate.passed
    failures = []  # an output that cannot be written must not hide the gate's verdict or change its exit code
    published = None
    try:
        published = render.write(results, folder, chosen, default_name=not out_dir)
    except (UserError, OSError) as exc:
        failures.append(f"the report was not written: {_why(exc)}")
    if junit_target:
        try:
            write_atomic(junit_target, gate.junit([gate.Check(**c) for c in results.gate.checks]))
        except (UserError, OSError) as exc:
            failures.append(f"the JUnit file was not written: {_why(exc)}")
    _gate_table(results)
    if published:
        out.print(f"report: {published}", highlight=False)
    for failure in failures:
        err.print(f"error: {failure}", highlight=False, markup=False, soft_wrap=True)
    if failures:  # exit 1 when the gate failed, whatever else did; 2 when it passed but an output is missing
        err.print(f"gate: {'PASS' if passed else 'FAIL'}", highlight=False, markup=False)
    if not passed or failures:
        raise typer.Exit(1 if not passed else 2)


def _why(exc: Exception) -> str:
    """One line: a UserError's own message, or the system's reason for any other OSError."""
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    return str(exc)


def _gate_table(results: dict) -> None:
    verdict = "PASS" if results["gate"]["passed"] else "FAIL"
    table = Table(title=f"{results['model']}: gate {verdict}")
    for column in ("check", "value", "threshold", "status"):
        table.add_column(column, justify="left" if column == "check" else "right")
    for check in results["gate"]["checks"]:
        value = "-" if check["value"] is None else f"{check['value']:.4g}"
        table.add_row(check["name"], value, f"{check['threshold']:.4g}", check["status"])
    out.print(table)


@handles_errors
def report(
    results_file: Path = typer.Argument(..., help="A results.json written by `ssah-audit audit`."),
    out_dir: Path = typer.Option(None, "--out", help="The new report folder; default reports/<model>-<UTC time>."),
    formats: str = typer.Option("html,md,json", "--format", help="Comma-separated: html, md, json."),
) -> None:
    """Re-render the reports from a results.json, without loading any model."""
    from ..outputs import check_new_folder
    from ..reporting import render

    chosen = render.parse_formats(formats)
    results = render.read_results(results_file)
    folder = check_new_folder(out_dir or render.new_folder(Path("reports"), results["model"]),
                              make_parent=not out_dir)
    folder = render.write(results, folder, chosen, default_name=not out_dir)
    out.print(f"report: {folder}", highlight=False)
