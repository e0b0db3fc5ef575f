"""`ssah-audit zoo`: the named models that work offline, and fetching or building them."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from ..errors import UserError
from .common import handles_errors, out, status
from .options import json_stdout_option

app = typer.Typer(help="Named models that work offline: list, fetch or build them.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command("list")
@handles_errors
def zoo_list(as_json: bool = json_stdout_option()) -> None:
    """List the named models and whether each is cached."""
    from ..zoo import catalogue as zoo

    rows = zoo.listing()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="ssah-audit zoo")
    for column in ("name", "kind", "cached", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["kind"], "yes" if row["cached"] else "no", row["description"])
    out.print(table)


@app.command("build")
@handles_errors
def zoo_build(name: str = typer.Argument(..., help="A model made on this machine: smollm2-135m-safe, "
                                         "smollm2-135m-safe-ft or an organism (see `zoo list`).")) -> None:
    """Build a zoo model that is made by fine-tuning on this machine (cached; resumes from what is built)."""
    from ..zoo import catalogue as zoo

    buildable = [row["name"] for row in zoo.listing() if row["kind"] in ("build", "organism")]
    if name not in buildable:
        raise UserError(f"'{name}' is not built locally (buildable: {', '.join(buildable)}); `zoo fetch` downloads")
    typer.echo(str(zoo.materialize(name)))


@app.command("fetch")
@handles_errors
def zoo_fetch(name: str = typer.Argument(..., help="A zoo name (see `zoo list`).")) -> None:
    """Fetch (or train, for organisms) a zoo model into the cache and print its folder."""
    from ..zoo import catalogue as zoo

    if not zoo.is_zoo_name(name):
        raise UserError(f"unknown zoo model '{name}' (known: {', '.join(zoo.names())})")
    with status(f"preparing {name} (first use downloads or trains it)"):
        folder = zoo.materialize(name)
    typer.echo(str(folder))
