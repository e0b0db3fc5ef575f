"""`ssah-audit prompts`: the built-in prompt sets, and a prompt file checked and shown safely on a terminal."""

from __future__ import annotations

import json
import unicodedata

import typer
from rich.markup import escape
from rich.table import Table

from .common import handles_errors, out
from .options import json_stdout_option

app = typer.Typer(help="Built-in prompt sets and prompt files.", no_args_is_help=True, rich_markup_mode=None)


@app.command("list")
@handles_errors
def prompts_list(as_json: bool = json_stdout_option()) -> None:
    """List the built-in prompt sets, and any a plugin registered, with the sizes of their train and eval splits."""
    from ..components import PROMPT_SETS
    from ..data.sets import BUILTIN_SETS, builtin_set, compliance_openings, refusal_openings, registered_set

    rows = [{"name": name, "description": text, "train": len(builtin_set(f"{name}:train")),
             "eval": len(builtin_set(f"{name}:eval")), "categories": len(builtin_set(f"{name}:all").categories())}
            for name, text in BUILTIN_SETS.items()]
    rows += [{"name": name, "description": PROMPT_SETS.get(name).description,
              "train": len(registered_set(f"{name}:train")), "eval": len(registered_set(f"{name}:eval")),
              "categories": len(registered_set(name).categories())} for name in PROMPT_SETS.names()]
    if as_json:
        typer.echo(json.dumps({"sets": rows, "refusal_openings": len(refusal_openings()),
                               "compliance_openings": len(compliance_openings())}, indent=2))
        return
    table = Table(title="prompt sets (built in: NAME = NAME:eval, NAME:train is for calibration; registered: NAME "
                        "is the whole set)")
    for column in ("name", "train", "eval", "categories", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], str(row["train"]), str(row["eval"]), str(row["categories"]), row["description"])
    out.print(table)


@app.command("show")
@handles_errors
def prompts_show(
    source: str = typer.Argument(..., help="A built-in set (harmful, benign:train, ...) or a CSV/JSON/JSONL file."),
    prompt_field: str = typer.Option(None, "--prompt-field", help="The column holding the prompt."),
    limit: int = typer.Option(10, "--limit", min=0, help="How many prompts to print."),
    as_json: bool = json_stdout_option(),
) -> None:
    """Load a prompt set (checking the file format) and print its first prompts."""
    from dataclasses import asdict

    from ..data.sets import load_prompt_set

    prompt_set = load_prompt_set(source, prompt_field)
    if as_json:
        typer.echo(json.dumps({"name": prompt_set.name, "source": prompt_set.source, "n": len(prompt_set),
                               "prompts": [asdict(p) for p in prompt_set.limit(limit).prompts]}, indent=2))
        return
    out.print(f"[bold]{shown(prompt_set.name)}[/]: {len(prompt_set)} prompts ({shown(prompt_set.source)})",
              highlight=False)
    for prompt in prompt_set.limit(limit).prompts:
        out.print(f"  [dim]{shown(prompt.id)}[/] [cyan]{shown(prompt.category)}[/] {shown(prompt.text)}",
                  highlight=False)


BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


SHOWN_CHARS = 500


def shown(value, limit: int = SHOWN_CHARS) -> str:
    """Untrusted text for the terminal: rich markup escaped, and control characters (terminal escape sequences,
    bidi overrides, line breaks) written as Python escapes, so a prompt can neither drive the terminal nor
    disguise itself. Past `limit` characters it is cut, and says so: printing a 50 MB prompt took minutes."""
    text = str(value)
    cut = f" … [{len(text) - limit:,} more characters]" if len(text) > limit else ""
    text = "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc"
                   or ch in BIDI_CONTROLS else ch for ch in text[:limit])
    return escape(text + cut)
