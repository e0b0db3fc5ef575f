"""`ssah-audit probe`: after a harmful query, does the model lean to refusing or to complying, per layer and step
(the model's own continuation against a refusal and a compliance path by default; the lens and the paper's cosine
margin with --variant), with linear probes and the refusal direction."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .. import config as defaults
from ..components import PROBES
from . import options as shared
from .common import out, status
from .options import MODEL_HELP, SET_HELP, LoadOptionsMaker, input_files, model_command, model_files


@model_command
def probe(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="A reference aligned model to compare with."),
    harmful: str = typer.Option(defaults.HARMFUL, "--harmful", help=SET_HELP + " A `target` column (AdvBench) is "
                                "used as the compliance continuation."),
    benign: str = typer.Option(defaults.BENIGN, "--benign", help=SET_HELP + " The contrast set of the linear probes."),
    prompt_field: str = shared.prompt_field_option(),
    steps: int = typer.Option(defaults.STEPS, "--steps", min=2, help="Continuation tokens K read per prompt."),
    variant: str = shared.component_option(PROBES, defaults.PROBE_VARIANT, "--variant",
                                           "A registered probe variant. self: does the model's own continuation sit "
                                           "nearer a refusal or a compliance path, per layer and step (predicts "
                                           "behaviour; validated on SmolLM2). lens: its preference log p(refusal "
                                           "path) - log p(compliance path), read at every layer. paper: the SSAH "
                                           "paper's cosine margin, for reproduction only. Or a plugin's."),
    limit: int = shared.limit_option(),
    batch_size: int = shared.batch_size_option(defaults.BATCH_SIZE, "Sequences per forward pass."),
    json_out: Path = shared.json_file_option("Write the full probe document here."),
    plot: Path = typer.Option(None, "--plot", help="Write the margin figure (PNG) here."),
    overwrite: bool = shared.overwrite_option("Replace existing --json/--plot files."),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Probe the reasoning direction: after a harmful query, does the model lean to refusing or to fulfilling,
    per layer and per continuation token? The score is the share of harmful prompts it leans to refuse (self, lens)
    or the paper's share of cells with a positive cosine margin (paper). Plus per-layer linear probes (harmful vs
    benign) and the difference-in-means refusal direction.
    """
    from dataclasses import asdict

    from .. import api
    from ..outputs import check_outputs, json_text, write_atomic

    targets = check_outputs([json_out, plot], overwrite, input_files(harmful, benign) + model_files(model, reference))
    with status(f"probing {model}" + (f" and {reference}" if reference else "")):
        doc = api.probe(model, reference, variant=variant, harmful=harmful, benign=benign,
                        prompt_field=prompt_field, steps=steps, limit=limit, batch_size=batch_size,
                        **asdict(load_options())).to_dict()
    if targets[0]:
        write_atomic(targets[0], json_text(doc))
    if targets[1]:
        from ..reporting.plots import probe_figure

        write_atomic(targets[1], probe_figure(doc))
    _probe_table(doc)


def _probe_table(doc: dict) -> None:
    reference = doc.get("reference") or {}
    lens = doc["variant"] == "lens"
    predictive = doc["variant"] in ("self", "lens")  # a score that is a predicted refusal rate
    table = Table(title=f"probe ({doc['variant']}): {doc['model']} (safe_direction_score "
                        f"{doc['safe_direction_score']:.2f}"
                        + (f"; reference {reference['safe_direction_score']:.2f})" if reference else ")"))
    columns = ["layer", "mean lean, nats (k>=2)" if lens else "mean margin (k>=2)"]
    columns += ["harmful vs benign AUROC"] if predictive else []
    columns += ["linear probe acc", "refusal dir norm"]
    if reference:
        columns += ["ref lean" if lens else "ref margin", "dir cosine"]
    for column in columns:
        table.add_column(column, justify="right")
    accuracy = doc["linear_probe_accuracy"] or [None] * doc["layers"]
    separation = doc.get("layer_separation") or [None] * doc["layers"]
    for layer in range(doc["layers"]):
        row = [str(layer), f"{doc['layer_margin'][layer]:+.3f}"]
        row += ["-" if separation[layer] is None else f"{separation[layer]:.2f}"] if predictive else []
        row += ["-" if accuracy[layer] is None else f"{accuracy[layer]:.2f}",
                f"{doc['refusal_direction_norm'][layer]:.2f}"]
        if reference:
            cosines = reference.get("direction_cosine")
            row += [f"{reference['layer_margin'][layer]:+.3f}" if reference.get("margin_delta") else "-",
                    f"{cosines[layer]:+.2f}" if cosines else "-"]
        table.add_row(*row)
    out.print(table)
    if predictive:
        low, high = doc["safe_direction_ci95"]
        forced = doc["forced_prefix"]["tokens_to_comply"]
        out.print(f"predicted refusal of harmful prompts {doc['safe_direction_score']:.0%} [{low:.0%}, {high:.0%}]; "
                  f"refusal decided from layer {doc['decision_layer'] if doc['decision_layer'] is not None else '-'}; "
                  "after " + (f"{forced} forced compliant token(s) fewer than half still turn to refusal"
                              if forced is not None else "every forced compliant token half or more still turn to "
                              "refusal"), highlight=False)
    if reference.get("note"):
        out.print(f"note: {reference['note']}", highlight=False)
