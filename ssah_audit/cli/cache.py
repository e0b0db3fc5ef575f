"""`ssah-audit cache`: what the on-disk cache holds, and pruning what this version no longer reads."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from .common import handles_errors, out
from .options import json_stdout_option

app = typer.Typer(help="The on-disk cache: what it holds, and pruning what is no longer read.",
                  no_args_is_help=True, rich_markup_mode=None)


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:,.1f} MiB"


def _cache_rows(entries) -> list[dict]:
    return [{"kind": e.kind, "name": e.name, "path": str(e.path), "size_bytes": e.size_bytes, "status": e.status}
            for e in entries]


def _cache_table(title: str, entries) -> None:
    table = Table(title=title)
    for column in ("kind", "name", "size", "status"):
        table.add_column(column, justify="right" if column == "size" else "left", overflow="fold")
    for e in entries:
        table.add_row(e.kind, e.name, _mib(e.size_bytes), e.status)
    out.print(table)


@app.command("list")
@handles_errors
def cache_list(as_json: bool = json_stdout_option()) -> None:
    """List cached artefacts with their size and whether this version still reads them."""
    from ..cache import cache_root
    from ..cache_admin import entries

    found = entries()
    if as_json:
        typer.echo(json.dumps({"root": str(cache_root()), "entries": _cache_rows(found)}, indent=2))
        return
    _cache_table(f"ssah-audit cache ({cache_root()})", found)
    removable = sum(e.size_bytes for e in found if e.removable)
    out.print(f"total {_mib(sum(e.size_bytes for e in found))}; `ssah-audit cache prune` frees {_mib(removable)}")


@app.command("prune")
@handles_errors
def cache_prune(dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
                as_json: bool = json_stdout_option()) -> None:
    """Remove superseded builds (an older recipe's key) and abandoned staging folders; keep everything in use."""
    from ..cache_admin import prune

    removed = prune(dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "removed": _cache_rows(removed)}, indent=2))
        return
    if removed:
        _cache_table("would remove" if dry_run else "removed", removed)
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {_mib(sum(e.size_bytes for e in removed))} ({len(removed)} entries)")
