"""`ssah-audit units`: score every unit on safety and utility data, class them SCU / UCU / CU / RU, and verify
the classes by ablation."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .. import config as defaults
from ..components import UNIT_SCORES
from ..errors import UserError
from . import options as shared
from .common import out
from .options import MODEL_HELP, SET_HELP, LoadOptionsMaker, input_files, model_command, model_files


@model_command
def units(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="An aligned reference: its own refusals become the "
                                  "safety calibration responses."),
    method: str = shared.component_option(UNIT_SCORES, defaults.METHOD, "--method", "A registered unit score: wifv: "
                                          "activation variance x |B[:,j]|^2 (the paper's Eq. 1); wanda: |x_j| x "
                                          "|B[:,j]|; snip: |sum x_j dL/dx_j| (backward); or a plugin's."),
    scu: float = typer.Option(defaults.SCU, "--scu", help="Percent of all units classed safety-critical."),
    ucu: float = typer.Option(defaults.UCU, "--ucu", help="Percent of all units classed utility-critical."),
    ru: float = typer.Option(defaults.RU, "--ru", help="Percent of all units classed redundant."),
    safety_data: str = typer.Option(defaults.SAFETY_DATA, "--safety-data",
                                    help="Calibration prompts for I_S. " + SET_HELP),
    utility_data: str = typer.Option(defaults.UTILITY_DATA, "--utility-data",
                                     help="Calibration prompts with reference answers for I_U. " + SET_HELP),
    harmful: str = typer.Option(defaults.HARMFUL, "--harmful", help="Held-out harmful prompts for --verify/--sweep."),
    benign: str = typer.Option(defaults.BENIGN, "--benign",
                               help="Held-out benign prompts with answers for --verify/--sweep."),
    prompt_field: str = shared.prompt_field_option(),
    response_only: bool = typer.Option(False, "--response-only", help="Statistics over response tokens only."),
    verify_classes: bool = typer.Option(False, "--verify", help="Ablate each class and a random control; measure."),
    sweep: bool = typer.Option(False, "--sweep", help="Ablate the top 0.25-5% of the SCU ranking; suggest a size."),
    limit: int = shared.limit_option(),
    max_new_tokens: int = shared.max_new_tokens_option(),
    batch_size: int = shared.batch_size_option(defaults.UNITS_BATCH_SIZE, "Sequences per forward pass."),
    seed: int = shared.seed_option("Seed of the built-in refusal draw."),
    judge: str = shared.judge_option(help=shared.JUDGE_HELP + " Here: the reference's calibration refusals and "
                                     "the ablation rows."),
    json_out: Path = shared.json_file_option("Write the full document here."),
    save_map: Path = typer.Option(None, "--save-map", help="Write the class vectors (.safetensors + .json sidecar)."),
    plot: Path = typer.Option(None, "--plot", help="Write the per-layer class figure (PNG) here."),
    overwrite: bool = shared.overwrite_option("Replace existing output files."),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Find attribute-critical units: score every unit on safety and utility calibration data, class them
    SCU / UCU / CU / RU, and with --verify confirm the classes by ablation (the paper's Table 1).
    """
    from dataclasses import asdict

    from .. import __version__, api
    from ..outputs import check_outputs, json_text, write_atomic
    from ..unit_classes.classify import Fractions
    from ..unit_classes.classify import save_map as write_map

    Fractions(scu, ucu, ru)  # refused in one line before any output is touched or model loaded
    if save_map and save_map.suffix != ".safetensors":
        raise UserError(f"--save-map {save_map}: the class map is a .safetensors file (its .json sidecar is "
                        "written beside it)")
    sidecar = save_map.with_suffix(".json") if save_map else None
    targets = check_outputs([json_out, save_map, plot, sidecar], overwrite,
                            input_files(safety_data, utility_data, harmful, benign)
                            + model_files(model, reference))[:3]
    result = api.units(model, reference, method=method, scu=scu, ucu=ucu, ru=ru, safety_data=safety_data,
                       utility_data=utility_data, verify=verify_classes, sweep=sweep, harmful=harmful,
                       benign=benign, prompt_field=prompt_field, response_only=response_only, limit=limit,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, judge=judge,
                       **asdict(load_options()))
    doc, classes, raw_scores = result.to_dict(), result.classes, result.scores
    doc["version"] = __version__
    if targets[1]:
        write_map(targets[1], classes, {key: doc[key] for key in ("model", "fingerprint", "method", "requested",
                                                                  "fractions", "calibration", "version")},
                  safety=raw_scores["safety"])
    if targets[2]:
        from ..reporting.plots import unit_figure

        write_atomic(targets[2], unit_figure(doc["per_layer"]))
    if targets[0]:
        write_atomic(targets[0], json_text(doc))
    _units_tables(doc)


def _spread(sd: dict, key: str, form: str = ".2f") -> str:
    """The random control's seed-to-seed sd, in the same unit as the value it follows."""
    return f" ± {sd[key]:{form}}" if key in sd else ""


def _units_tables(doc: dict) -> None:
    shares = ", ".join(f"{name} {share:.2%}" for name, share in doc["fractions"].items())
    out.print(f"[bold]{doc['model']}[/]: {doc['units']:,} units scored with {doc['method']}: {shares}",
              highlight=False)
    if doc.get("ablation"):
        table = Table(title="ablation (held-out prompts)")
        for column in ("removed", "units", "harmful compliance", "refusal score", "utility NLL"):
            table.add_column(column, justify="right")
        for name, row in doc["ablation"].items():
            sd = row.get("sd") or {}
            table.add_row(name, str(row["units"]),
                          f"{row['compliance_rate']:.1%}" + _spread(sd, "compliance_rate", ".1%"),
                          f"{row['refusal_score']:+.2f}" + _spread(sd, "refusal_score"),
                          f"{row['nll']:.3f}" + _spread(sd, "nll"))
        out.print(table)
    if "sweep" in doc:
        table = Table(title="SCU sweep")
        for column in ("SCU %", "units", "harmful compliance", "refusal score", "utility NLL"):
            table.add_column(column, justify="right")
        for point in doc["sweep"]["points"]:
            table.add_row(f"{point['percent']:g}", str(point["units"]), f"{point['compliance_rate']:.1%}",
                          f"{point['refusal_score']:+.2f}", f"{point['nll']:.3f}")
        out.print(table)
        suggested = doc["sweep"]["suggested_percent"]
        out.print(f"suggested SCU fraction: {'none' if suggested is None else f'{suggested:g}%'} "
                  f"({doc['sweep']['rule']})", highlight=False)
