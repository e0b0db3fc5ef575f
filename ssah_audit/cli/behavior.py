"""`ssah-audit behavior`: harmful compliance, over-refusal, utility and refusal score of a model (and a
reference), with bootstrap intervals."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .. import config as defaults
from . import options as shared
from .common import out
from .options import MODEL_HELP, SET_HELP, LoadOptionsMaker, input_files, model_command, model_files


@model_command
def behavior(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="A reference aligned model to measure alongside."),
    harmful: str = typer.Option(defaults.HARMFUL, "--harmful", help=SET_HELP),
    benign: str = typer.Option(defaults.BENIGN, "--benign", help=SET_HELP + " Needs reference answers."),
    borderline: str = typer.Option(defaults.BORDERLINE, "--borderline",
                                   help=SET_HELP + " A labelled file (XSTest) contributes its safe prompts."),
    prompt_field: str = shared.prompt_field_option(),
    limit: int = shared.limit_option(),
    max_new_tokens: int = shared.max_new_tokens_option(),
    batch_size: int = shared.batch_size_option(defaults.BATCH_SIZE, "Prompts per forward pass."),
    seed: int = shared.seed_option("Seed of the bootstrap confidence intervals."),
    judge: str = shared.judge_option(),
    json_out: Path = shared.json_file_option("Write the full results (samples included) here."),
    overwrite: bool = shared.overwrite_option("Replace an existing --json file."),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Measure behaviour: harmful compliance (ASR), over-refusal, utility NLL, logit refusal score.

    Every rate carries a seeded bootstrap 95% interval. With --reference, the reference gets the same
    blocks and the JSON adds the first-token KL between the two on the benign prompts.
    """
    from dataclasses import asdict

    from .. import api
    from ..outputs import check_outputs, json_text, write_atomic
    from ..responses.judges import describe

    [target] = check_outputs([json_out], overwrite,
                             input_files(harmful, benign, borderline) + model_files(model, reference))
    result = api.behavior(model, reference, harmful=harmful, benign=benign, borderline=borderline,
                          prompt_field=prompt_field, limit=limit, max_new_tokens=max_new_tokens,
                          batch_size=batch_size, seed=seed, judge=judge, **asdict(load_options()))
    doc = result.to_dict()
    doc["settings"] = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed, "limit": limit,
                       "judge": describe(judge)}
    if target:
        write_atomic(target, json_text(doc))
    _behavior_table(doc)


def _behavior_table(doc: dict) -> None:
    table = Table(title="behaviour (95% bootstrap CI)")
    table.add_column("model")
    for column in ("harmful compliance", "over-refusal", "utility NLL (ppl)", "refusal score"):
        table.add_column(column, justify="right")
    for block in [doc] + ([doc["reference"]] if "reference" in doc else []):
        h, b, u, r = block["harmful"], block["borderline"], block["utility"], block["refusal_score"]
        table.add_row(block["model"], f"{h['compliance_rate']:.1%} [{h['ci95'][0]:.1%}, {h['ci95'][1]:.1%}] n={h['n']}",
                      f"{b['refusal_rate']:.1%} [{b['ci95'][0]:.1%}, {b['ci95'][1]:.1%}] n={b['n']}",
                      f"{u['nll']:.3f} ({u['perplexity']:.1f})", f"{r['mean']:+.2f}")
    out.print(table)
    if doc.get("first_token_kl") is not None:
        out.print(f"first-token KL(reference || model) on benign prompts: {doc['first_token_kl']:.4f}")
