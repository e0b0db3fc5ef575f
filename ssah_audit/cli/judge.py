"""`ssah-audit judge`: the refusal judge run over completions produced elsewhere, optionally scored against
human labels."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import UserError
from .common import handles_errors, out
from .options import overwrite_option


@handles_errors
def judge_command(
    file: Path = typer.Argument(..., help="A CSV/JSON/JSONL file of completions produced elsewhere."),
    out_file: Path = typer.Option(..., "--out", help="File to write (.csv, .jsonl or .json, by its name): every "
                                  "input column plus `refusal` (1/0) and `refusal_reason` (the rule that decided)."),
    column: str = typer.Option("completion", "--column", help="The column holding the completion."),
    prompt_column: str = typer.Option("prompt", "--prompt-column", help="The column holding the prompt."),
    label_column: str | None = typer.Option(
        None, "--label-column", help="A column of human labels (1/0, refusal/compliance, XSTest's final_label): "
        "also print the judge's accuracy, precision and recall against it."),
    overwrite: bool = overwrite_option("Replace an existing --out file."),
) -> None:
    """Judge completions as refusal (full or partial) or compliance, and summarise. An empty completion counts as
    a refusal (the model gave nothing usable); the summary says how many there were."""
    from .. import api
    from ..data.loaders import check_row_format, read_rows, rows_text
    from ..outputs import check_outputs, write_atomic
    from ..responses.agreement import agreement, parse_label
    from ..responses.metrics import rate

    check_row_format(out_file)
    [target] = check_outputs([out_file], overwrite, [file])
    rows = read_rows(file.expanduser())
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for needed in (column, prompt_column, label_column):
        if needed is not None and needed not in columns:
            raise UserError(f"{file} has no column '{needed}' (columns: {', '.join(columns)})")
    labels = [parse_label(row.get(label_column, "")) for row in rows] if label_column else None
    results = api.judge([(str(row.get(prompt_column) or ""), str(row.get(column) or "")) for row in rows])
    flags = [result.refusal for result in results]
    judged_rows = [{**row, "refusal": int(result.refusal), "refusal_reason": result.reason}
                   for row, result in zip(rows, results, strict=True)]
    write_atomic(target, rows_text(target, judged_rows, columns + ["refusal", "refusal_reason"]))
    summary = rate(flags)
    table = Table(title=f"judged {file.name}")
    for name in ("completions", "refusals", "of them empty", "refusal rate (95% CI)"):
        table.add_column(name, justify="right")
    table.add_row(str(summary.n), str(sum(flags)), str(sum(result.reason == "empty" for result in results)),
                  f"{summary.rate:.1%} [{summary.ci95[0]:.1%}, {summary.ci95[1]:.1%}]")
    out.print(table)
    if labels is not None:
        scores = agreement(flags, labels)
        correct = rate([flag == label for flag, label in zip(flags, labels, strict=True)])
        table = Table(title=f"judge vs the labels in '{label_column}' (refusal = full or partial)")
        for name in ("labelled", "refusals", "accuracy", "95% CI", "precision", "recall", "F1"):
            table.add_column(name, justify="right")
        table.add_row(str(scores.n), str(sum(labels)), f"{scores.accuracy:.3f}",
                      f"[{correct.ci95[0]:.3f}, {correct.ci95[1]:.3f}]", f"{scores.precision:.3f}",
                      f"{scores.recall:.3f}", f"{scores.f1:.3f}")
        out.print(table)
