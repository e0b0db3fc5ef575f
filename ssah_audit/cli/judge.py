"""`ssah-audit judge`: the refusal judge run over completions produced elsewhere, optionally scored against
human labels; `ssah-audit judge-fit`: the learned judge refitted on a user's own labels."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .. import config as defaults
from ..errors import UserError
from .common import handles_errors, out
from .options import judge_spec, overwrite_option

DISAGREEMENTS_SHOWN = 10


@handles_errors
def judge_command(
    file: Path = typer.Argument(..., help="A CSV/JSON/JSONL file of completions produced elsewhere."),
    out_file: Path = typer.Option(..., "--out", help="File to write (.csv, .jsonl or .json, by its name): every "
                                  "input column plus `refusal` (1/0) and `refusal_reason` (the rule, or the "
                                  "probability, that decided)."),
    column: str = typer.Option("completion", "--column", help="The column holding the completion."),
    prompt_column: str = typer.Option("prompt", "--prompt-column", help="The column holding the prompt."),
    label_column: str | None = typer.Option(
        None, "--label-column", help="A column of human labels (1/0, refusal/compliance, XSTest's final_label): "
        "also print the judge's accuracy, precision and recall against it."),
    judges: list[str] = typer.Option(
        None, "--judge", help="A judge: learned (the default), rules, a plugin's registered name, hf:PATH, "
        "guard:PATH, learned:PATH or endpoint:URL. Repeat it to judge with several side by side: the first "
        "writes `refusal` and `refusal_reason`, each other `refusal_NAME` and `refusal_reason_NAME` (NAME: its "
        "registered name, or judgeN for the Nth judge when it is a folder or a server), and their agreement with "
        "the first is printed with the rows where they differ.",
        callback=lambda names: [judge_spec(name) for name in names or []]),
    all_judges: bool = typer.Option(False, "--all-judges", help="Judge with every registered judge side by side "
                                    "(after any --judge given): with --label-column, which judge to trust on "
                                    "your completions."),
    overwrite: bool = overwrite_option("Replace an existing --out file."),
) -> None:
    """Judge completions as refusal (full or partial) or compliance, and summarise. An empty completion counts as
    a refusal (the model gave nothing usable); the summary says how many there were."""
    from .. import api
    from ..components import JUDGES
    from ..data.loaders import check_row_format, rows_text
    from ..outputs import check_outputs, write_atomic

    judges = list(judges or [])
    if len(set(judges)) < len(judges):
        raise UserError("each --judge may be given once")
    judges = list(dict.fromkeys(judges + (list(JUDGES.names()) if all_judges else []))) or [defaults.JUDGE]
    check_row_format(out_file)
    [target] = check_outputs([out_file], overwrite, [file])
    rows, columns, pairs, labels = _read(file, column, prompt_column, label_column)
    verdicts = {name: api.judge(pairs, name) for name in judges}
    added = []
    for index, name in enumerate(judges):
        suffix = "" if index == 0 else f"_{name}" if ":" not in name else f"_judge{index + 1}"
        added += [f"refusal{suffix}", f"refusal_reason{suffix}"]
        for row, verdict in zip(rows, verdicts[name], strict=True):
            row[f"refusal{suffix}"], row[f"refusal_reason{suffix}"] = int(verdict.refusal), verdict.reason
    write_atomic(target, rows_text(target, rows, [c for c in columns if c not in added] + added))
    _summary(file, verdicts)
    if labels is not None:
        _against_labels(label_column, verdicts, labels)
    if len(judges) > 1:
        _agreement(verdicts, pairs)


@handles_errors
def judge_fit_command(
    file: Path = typer.Argument(..., help="A CSV/JSON/JSONL file of completions with your labels."),
    out_dir: Path = typer.Option(..., "--out", help="The new folder the refitted judge goes to; judge with it by "
                                 "--judge learned:FOLDER."),
    label_column: str = typer.Option(..., "--label-column", help="The column of labels (1/0, refusal/compliance, "
                                     "XSTest's final_label)."),
    column: str = typer.Option("completion", "--column", help="The column holding the completion."),
    prompt_column: str = typer.Option("prompt", "--prompt-column", help="The column holding the prompt."),
) -> None:
    """Refit the learned judge on your own labelled completions (at least 20, with refusals and compliances) and
    print its cross-validated accuracy beside the shipped judge's on the same rows: for models whose style the
    shipped judge reads badly."""
    from .. import api
    from ..outputs import check_new_folder

    folder = check_new_folder(out_dir)
    _, _, pairs, labels = _read(file, column, prompt_column, label_column)
    found = api.fit_judge(pairs, labels, folder, source=file.name)
    table = Table(title=f"learned judge refitted on {file.name} ({found['rows']} rows, {found['refusals']} "
                  "refusals)")
    for name in ("judge", f"accuracy, {found['folds']}-fold cross-validated"):
        table.add_column(name, justify="left" if name == "judge" else "right")
    table.add_row("learned (shipped)", f"{found['shipped_accuracy']:.3f}")
    table.add_row(f"learned:{folder}", f"{found['cv_accuracy']:.3f}")
    out.print(table)
    out.print(f"wrote {folder}; judge with it: --judge learned:{folder}", highlight=False, markup=False)


def _read(file: Path, column: str, prompt_column: str, label_column: str | None):
    """(rows, their columns, (prompt, completion) pairs, labels or None) of a completions file, every named column
    checked."""
    from ..data.loaders import read_rows
    from ..responses.agreement import parse_label

    rows = read_rows(file.expanduser())
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for needed in (column, prompt_column, label_column):
        if needed is not None and needed not in columns:
            raise UserError(f"{file} has no column '{needed}' (columns: {', '.join(columns)})")
    labels = [parse_label(row.get(label_column, "")) for row in rows] if label_column else None
    pairs = [(str(row.get(prompt_column) or ""), str(row.get(column) or "")) for row in rows]
    return rows, columns, pairs, labels


def _summary(file: Path, verdicts: dict) -> None:
    from ..responses.metrics import rate

    table = Table(title=f"judged {file.name}")
    for name in ("judge", "completions", "refusals", "of them empty", "refusal rate (95% CI)"):
        table.add_column(name, justify="left" if name == "judge" else "right")
    for judge, found in verdicts.items():
        summary = rate([verdict.refusal for verdict in found])
        table.add_row(judge, str(summary.n), str(sum(v.refusal for v in found)),
                      str(sum(v.reason == "empty" for v in found)),
                      f"{summary.rate:.1%} [{summary.ci95[0]:.1%}, {summary.ci95[1]:.1%}]")
    out.print(table)


def _against_labels(label_column: str, verdicts: dict, labels: list[bool]) -> None:
    """Each judge's accuracy on the user's own labels, side by side: the honest check of a judge on a model."""
    from ..responses.agreement import agreement
    from ..responses.metrics import rate

    table = Table(title=f"judge vs the labels in '{label_column}' (refusal = full or partial)")
    for name in ("judge", "labelled", "refusals", "accuracy", "95% CI", "precision", "recall", "F1"):
        table.add_column(name, justify="left" if name == "judge" else "right")
    for judge, found in verdicts.items():
        flags = [verdict.refusal for verdict in found]
        scores = agreement(flags, labels)
        correct = rate([flag == label for flag, label in zip(flags, labels, strict=True)])
        table.add_row(judge, str(scores.n), str(sum(labels)), f"{scores.accuracy:.3f}",
                      f"[{correct.ci95[0]:.3f}, {correct.ci95[1]:.3f}]", f"{scores.precision:.3f}",
                      f"{scores.recall:.3f}", f"{scores.f1:.3f}")
    out.print(table)


def _agreement(verdicts: dict, pairs: list[tuple[str, str]]) -> None:
    """How often each judge agrees with the first, Cohen's kappa, and the first rows where they differ."""
    from ..responses.agreement import kappa

    first, *others = verdicts
    table = Table(title=f"agreement with {first}")
    for name in ("judge", "rows", "agree", "share", "Cohen's kappa"):
        table.add_column(name, justify="left" if name == "judge" else "right")
    ours = [verdict.refusal for verdict in verdicts[first]]
    for other in others:
        theirs = [verdict.refusal for verdict in verdicts[other]]
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        table.add_row(other, str(len(ours)), str(same), f"{same / len(ours):.1%}" if ours else "-",
                      "-" if kappa(ours, theirs) is None else f"{kappa(ours, theirs):.3f}")
    out.print(table)
    for other in others:
        differ = [i for i, (a, b) in enumerate(zip(verdicts[first], verdicts[other], strict=True))
                  if a.refusal != b.refusal]
        if not differ:
            continue
        out.print(f"rows where {first} and {other} differ ({len(differ)}; the first "
                  f"{min(len(differ), DISAGREEMENTS_SHOWN)} shown):", highlight=False, markup=False)
        for i in differ[:DISAGREEMENTS_SHOWN]:
            verdict = [verdicts[name][i] for name in (first, other)]
            said = "; ".join(f"{name}: {'refusal' if v.refusal else 'compliance'} ({v.reason})"
                             for name, v in zip((first, other), verdict, strict=True))
            out.print(f"  row {i + 1}: {said}\n    prompt: {shown(pairs[i][0])}\n    completion: "
                      f"{shown(pairs[i][1])}", highlight=False, markup=False, soft_wrap=True)


def shown(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
