"""`ssah-audit inspect`: a model's architecture and unit map, read without loading the weights."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from ..errors import UserError
from .common import out, status
from .options import MODEL_HELP, LoadOptionsMaker, model_command


@model_command
def inspect(
    model: str = typer.Argument(..., help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the machine-readable document on stdout."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the unit map as a Markdown table."),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Show a model's architecture and unit map (write-back modules and units per layer).

    Reads the config and tokenizer only: the weights are not loaded (nor needed), so any size inspects in seconds.
    """
    from ..models.loading import describe
    from ..models.resolve import load_model

    if as_json and markdown:
        raise UserError("--json and --markdown both print the document; choose one")
    with status(f"loading {model}"):
        loaded = load_model(model, load_options(), weights=False)
    doc = describe(loaded)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    if markdown:
        from ..reporting.templates import render

        typer.echo(render("inspect.md.j2", doc=doc), nl=False)
        return
    template = "yes" if doc["chat_template"] else "no (plain fallback)" if loaded.tokenizer else "no tokenizer here"
    out.print(f"[bold]{doc['model']}[/]  {doc['architecture']} ({doc['model_type']}), "
              f"{doc['num_parameters']:,} parameters, hidden {doc['hidden_size']}, chat template: {template}",
              highlight=False)
    if doc["adapter"]:
        out.print(_adapter_line(doc["adapter"]), highlight=False)
    table = Table(title=f"unit map: {doc['units']['attn']:,} attention + {doc['units']['mlp']:,} MLP = "
                        f"{doc['units']['total']:,} units")
    for column in ("layer", "attention write-back", "units", "MLP write-back", "units"):
        table.add_column(column, justify="right" if column in ("layer", "units") else "left", overflow="fold")
    for layer in doc["layers"]:
        table.add_row(str(layer["index"]), layer["attn_module"], f"{layer['attn_units']:,}",
                      layer["mlp_module"], f"{layer['mlp_units']:,}")
    out.print(table)


def _adapter_line(adapter: dict) -> str:
    touched = adapter["units_touched"]
    return (f"LoRA adapter on {adapter['base']}: rank {adapter['rank']}, alpha {adapter['alpha']}, targets "
            f"{', '.join(adapter['target_modules'])} ({adapter['adapted_modules']} modules, "
            f"{adapter['trainable_parameters']:,} parameters); can move {touched['any']:,} of {touched['of']:,} units "
            f"({touched['write_back']:,} through their write-back column, {touched['read_in']:,} through read-in rows)")
