"""`ssah-audit repair`: turn a fine-tune back toward its aligned reference without training, optionally re-audit
it (exit like `audit`), and write it as a new model (or adapter) folder."""

from __future__ import annotations

from pathlib import Path

import typer

from ..components import REPAIRS
from ..errors import UserError
from .common import out
from .options import (
    JUDGE_HELP,
    MODEL_HELP,
    LoadOptionsMaker,
    component_option,
    judge_option,
    model_command,
    model_paths,
)


def alpha_value(value: str) -> str | float:
    """A number in [0, 1], or auto: checked as the command line is read."""
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a number in [0, 1] nor auto") from None
    if not 0 <= number <= 1:
        raise typer.BadParameter(f"{value} is outside [0, 1] (0 is the reference, 1 the model)")
    return number


@model_command
def repair(
    model: str = typer.Argument(..., help=MODEL_HELP + " The fine-tune to repair."),
    reference: str = typer.Option(..., "--reference", help="The aligned model it was fine-tuned from."),
    method: str = component_option(REPAIRS, ..., "--method", "restore, restore-drifted, interpolate, "
                                   "safety-vector, project (no training), realign (trains the model's own RU), or a "
                                   "plugin's registered repair."),
    out_dir: Path = typer.Option(..., "--out", help="A new folder for the repaired model (never overwritten): a "
                                 "model folder, or an adapter folder for an adapter repaired by interpolate/project."),
    classes: str = typer.Option("scu,cu:6", "--classes", help="restore: the reference's units to copy back (scu, "
                                "ucu, cu, ru; cu:6 = the top 6% of all units among CU). restore-drifted: the pool "
                                "(default scu,cu)."),
    unit_map: Path = typer.Option(None, "--map", help="The reference's unit map (`units --save-map`, or an audit "
                                  "report's freeze-map.safetensors); default: measured as the audit measures it."),
    random_control: bool = typer.Option(False, "--random-control", help="restore, restore-drifted: as many random "
                                        "units instead (the control)."),
    seed: int = typer.Option(0, "--seed", min=0, help="The random control's draw."),
    fraction: float = typer.Option(7.5, "--fraction", help="restore-drifted: percent of all units to restore."),
    alpha: str = typer.Option("0.5", "--alpha", callback=alpha_value, help="interpolate: W_ref + A (W_model - "
                              "W_ref), A in [0, 1]; auto (with --verify) keeps the largest A that passes the gate."),
    beta: float = typer.Option(0.5, "--beta", help="safety-vector: W_model + B (W_ref - W_unaligned), B in (0, 1]."),
    unaligned: str = typer.Option(None, "--unaligned", help="safety-vector, project: the model the reference was "
                                  "aligned from (for the embedded pair: smollm2-135m-instruct)."),
    energy: float = typer.Option(0.5, "--energy", help="project: the share of the alignment update's squared norm "
                                 "that its subspace holds, in (0, 1]."),
    threshold: float = typer.Option(1.0, "--threshold", help="project: project only matrices whose update has a "
                                    "cosine below this with its projection (1: all)."),
    merge: bool = typer.Option(False, "--merge", help="For a LoRA adapter: write the repaired model as a full model "
                               "folder (restore, restore-drifted and safety-vector change whole weights)."),
    train_classes: str = typer.Option("ru", "--train-classes", help="realign: the model's own units that train "
                                      "(its unit map, measured as the audit measures it)."),
    steps: int = typer.Option(200, "--steps", min=1, help="realign: optimiser steps (batch 8)."),
    lr: float = typer.Option(5e-5, "--lr", help="realign: peak learning rate."),
    verify: bool = typer.Option(False, "--verify", help="Audit the repaired model against the reference before "
                                "writing it; exit 1 when the gate fails."),
    quick: bool = typer.Option(False, "--quick", help="--verify with the audit's quick settings."),
    config: Path = typer.Option(None, "--config", help="audit.toml for --verify's audit and gate."),
    fail_on: list[str] = typer.Option(None, "--fail-on", help="Override a gate threshold, KEY=VALUE; repeatable."),
    judge: str = judge_option(None, JUDGE_HELP),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Repair a fine-tune toward its aligned reference: without training, restore the reference's units,
    interpolate, add the safety vector back (RESTA) or project the update onto the alignment subspace (Safe LoRA); or
    realign only the model's redundant units (SSAH's alignment budget).

    Writes a new folder with repair.json and a README card; with --verify, each candidate is audited against the
    reference first (one line each: harmful compliance, over-refusal, utility NLL, share of the fine-tune's NLL gain
    kept) and the exit code is the gate's (0 pass, 1 fail).
    """
    from dataclasses import asdict

    from .. import api, gate
    from ..config import load_config, read_settings
    from ..outputs import check_new_folder

    target = check_new_folder(out_dir, empty_ok=True)
    for folder in (path for path in model_paths(model, reference, unaligned) if path.is_dir()):
        if folder.resolve() == target.resolve() or folder.resolve() in target.resolve().parents:
            raise UserError(f"--out {target} is inside the model folder {folder}; write the repair elsewhere")
    if (quick or config or fail_on) and not verify:
        raise UserError("--quick, --config and --fail-on shape --verify's audit; add --verify")
    settings_doc = load_config(config)
    limits = gate.thresholds(settings_doc, fail_on)
    audit_settings = read_settings(settings_doc, quick, judge)
    settings = {"classes": classes, "fraction": fraction, "random_control": random_control, "seed": seed,
                "alpha": alpha, "beta": beta, "energy": energy, "threshold": threshold, "train_classes": train_classes,
                "steps": steps, "lr": lr}
    result = api.repair(model, reference, method, target, settings=settings, unaligned=unaligned,
                        unit_map=unit_map, verify=verify, audit_settings=audit_settings, thresholds=limits,
                        merge=merge, progress=lambda line: out.print(line, highlight=False, soft_wrap=True),
                        **asdict(load_options()))
    out.print(f"saved {result.folder} ({result.form} folder; {result.chosen.line()})", highlight=False,
              soft_wrap=True)
    if verify and not result.passed:
        raise typer.Exit(1)
