"""`ssah-audit probe`: where the model's state after a harmful query points (refusal or compliance), per layer,
with linear probes and the refusal direction."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from . import options as shared
from .common import out, status
from .options import MODEL_HELP, SET_HELP, LoadOptionsMaker, input_files, model_command, model_files


@model_command
def probe(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="A reference aligned model to compare with."),
    harmful: str = typer.Option("harmful", "--harmful", help=SET_HELP + " A `target` column (AdvBench) is used as "
                                "the compliance continuation."),
    benign: str = typer.Option("benign", "--benign", help=SET_HELP + " The contrast set of the linear probes."),
    prompt_field: str = shared.prompt_field_option(),
    steps: int = typer.Option(10, "--steps", min=2, help="Continuation tokens K read per prompt."),
    limit: int = shared.limit_option(),
    batch_size: int = shared.batch_size_option(16, "Sequences per forward pass."),
    json_out: Path = shared.json_file_option("Write the full probe document here."),
    plot: Path = typer.Option(None, "--plot", help="Write the margin figure (PNG) here."),
    overwrite: bool = shared.overwrite_option("Replace existing --json/--plot files."),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Probe the reasoning direction: does the model's state after a harmful query sit nearer a refusal or a
    compliance continuation, per layer and per continuation token? Plus per-layer linear probes (harmful vs
    benign) and the difference-in-means refusal direction.
    """
    from .. import probing
    from ..data.sets import load_prompt_set
    from ..models.resolve import load_model, load_reference
    from ..outputs import check_outputs, json_text, write_atomic

    targets = check_outputs([json_out, plot], overwrite, input_files(harmful, benign) + model_files(model, reference))
    sets = [load_prompt_set(spec, prompt_field).limit(limit) for spec in (harmful, benign)]
    options = load_options()
    with status(f"probing {model}"):
        doc, directions = probing.measure(load_model(model, options), *sets, steps, batch_size)
    if reference:
        with status(f"probing {reference}"):
            ref_doc, ref_directions = probing.measure(load_reference(reference, options), *sets, steps, batch_size)
        doc["reference"] = probing.compare(doc, ref_doc, directions, ref_directions)
    if targets[0]:
        write_atomic(targets[0], json_text(doc))
    if targets[1]:
        from ..report.plots import probe_figure

        write_atomic(targets[1], probe_figure(doc))
    _probe_table(doc)


def _probe_table(doc: dict) -> None:
    reference = doc.get("reference") or {}
    table = Table(title=f"probe: {doc['model']} (safe_direction_score {doc['safe_direction_score']:.2f}"
                        + (f"; reference {reference['safe_direction_score']:.2f})" if reference else ")"))
    columns = ["layer", "mean margin (k>=2)", "linear probe acc", "refusal dir norm"]
    if reference:
        columns += ["ref margin", "dir cosine"]
    for column in columns:
        table.add_column(column, justify="right")
    accuracy = doc["linear_probe_accuracy"] or [None] * doc["layers"]
    for layer in range(doc["layers"]):
        row = [str(layer), f"{doc['layer_margin'][layer]:+.3f}",
               "-" if accuracy[layer] is None else f"{accuracy[layer]:.2f}",
               f"{doc['refusal_direction_norm'][layer]:.2f}"]
        if reference:
            cosines = reference.get("direction_cosine")
            row += [f"{reference['layer_margin'][layer]:+.3f}" if reference.get("margin_delta") else "-",
                    f"{cosines[layer]:+.2f}" if cosines else "-"]
        table.add_row(*row)
    out.print(table)
    if reference.get("note"):
        out.print(f"note: {reference['note']}", highlight=False)
