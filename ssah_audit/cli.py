"""The `ssah-audit` command line: thin. It parses, calls the library, and maps errors to exit codes.

Exit codes: 0 success, 1 a gate failed, 2 a user mistake (one line on stderr), 3 anything unexpected.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import traceback
import unicodedata
from enum import StrEnum
from pathlib import Path

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import UserError
from .progress import set_quiet

try:  # typer 0.2x carries its own copy of click; older releases use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors


class OneLineUsageError(click_errors.ClickException):
    """A bad option or argument, told the way every other user error is: one line on stderr, exit 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        print(f"error: {self.format_message()}", file=sys.stderr)


class OneLineErrors(typer.core.TyperGroup):
    """click prints a usage error as a usage line, a hint and a boxed message; a CI log wants one line. Showing
    help for a bare command (no arguments) stays as it is."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage():
    try:
        yield
    except click_errors.NoArgsIsHelpError:
        raise
    except click_errors.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        raise OneLineUsageError(exc.format_message() + where) from None


app = typer.Typer(help="Audit the safety of fine-tuned causal language models (SSAH).", cls=OneLineErrors,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
zoo_app = typer.Typer(help="Named models that work offline: list, fetch or build them.", no_args_is_help=True,
                      rich_markup_mode=None)
prompts_app = typer.Typer(help="Built-in prompt sets and prompt files.", no_args_is_help=True, rich_markup_mode=None)
cache_app = typer.Typer(help="The on-disk cache: what it holds, and pruning what is no longer read.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(zoo_app, name="zoo")
app.add_typer(prompts_app, name="prompts")
app.add_typer(cache_app, name="cache")

class PipeConsole(Console):
    """Output piped into a reader that stops early (`| head -1`) is not an error: Unix tools exit 0 quietly,
    where rich exits 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _stdout_to_devnull()
        raise SystemExit(0)


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not hit the closed pipe again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


out = PipeConsole()
err = Console(stderr=True)
STATE = {"debug": False, "quiet": False}


class Dtype(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def handles_errors(command):
    """Map exceptions to exit codes: UserError -> 2 with one line; anything unexpected -> 3. --debug adds the
    traceback but keeps the exit code, so a CI step never reads a user mistake as a failed gate (1)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UserError as exc:
            if STATE["debug"]:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:  # typer.echo into `| head -1`: the reader has what it wanted
            _stdout_to_devnull()
            raise typer.Exit(0) from None
        except Exception as exc:  # the last line of defence: never a traceback unless asked for
            if STATE["debug"]:
                traceback.print_exc()
            else:
                err.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {escape(str(exc))} (rerun with "
                          "--debug for the traceback)", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None

    return wrapper


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Also print the traceback of an error (same exit codes)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (for CI logs)."),
) -> None:
    STATE["debug"], STATE["quiet"] = debug, quiet
    set_quiet(quiet)
    if quiet or not debug:
        _quiet_libraries(show_progress=not quiet)


def _quiet_libraries(show_progress: bool) -> None:
    """transformers' warnings and per-tensor progress bars drown our own output; keep them for --debug."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def model_options(dtype: Dtype, device: str, trust_remote_code: bool, allow_pickle: bool):
    from .models.loading import LoadOptions

    return LoadOptions(dtype=dtype.value, device=device, trust_remote_code=trust_remote_code,
                       allow_pickle=allow_pickle)


MODEL_HELP = "A model folder, a .gguf file, a zoo name (see `zoo list`) or a Hugging Face hub id."
DTYPE_OPTION = typer.Option(Dtype.auto, "--dtype", help="auto: float32 on CPU, bfloat16 on GPU.")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto (device_map='auto' with a GPU), cpu, cuda, cuda:N.")
REMOTE_OPTION = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own Python code to run.")
PICKLE_OPTION = typer.Option(False, "--allow-pickle", help="Allow pickle weights (.bin/.pt), which can run code.")


@app.command()
@handles_errors
def inspect(
    model: str = typer.Argument(..., help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the machine-readable document on stdout."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the unit map as a Markdown table."),
    dtype: Dtype = DTYPE_OPTION,
    device: str = DEVICE_OPTION,
    trust_remote_code: bool = REMOTE_OPTION,
    allow_pickle: bool = PICKLE_OPTION,
) -> None:
    """Show a model's architecture and unit map (write-back modules and units per layer).

    Reads the config and tokenizer only: the weights are not loaded, so any size inspects in seconds.
    """
    from .models.loading import describe, load_model

    if as_json and markdown:
        raise UserError("--json and --markdown both print the document; choose one")
    with _status(f"loading {model}"):
        loaded = load_model(model, model_options(dtype, device, trust_remote_code, allow_pickle), weights=False)
    doc = describe(loaded)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    if markdown:
        from .report.templates import render

        typer.echo(render("inspect.md.j2", doc=doc), nl=False)
        return
    out.print(f"[bold]{doc['model']}[/]  {doc['architecture']} ({doc['model_type']}), "
              f"{doc['num_parameters']:,} parameters, hidden {doc['hidden_size']}, "
              f"chat template: {'yes' if doc['chat_template'] else 'no (plain fallback)'}", highlight=False)
    table = Table(title=f"unit map: {doc['units']['attn']:,} attention + {doc['units']['mlp']:,} MLP = "
                        f"{doc['units']['total']:,} units")
    for column in ("layer", "attention write-back", "units", "MLP write-back", "units"):
        table.add_column(column, justify="right" if column in ("layer", "units") else "left", overflow="fold")
    for layer in doc["layers"]:
        table.add_row(str(layer["index"]), layer["attn_module"], f"{layer['attn_units']:,}",
                      layer["mlp_module"], f"{layer['mlp_units']:,}")
    out.print(table)


def _input_files(*specs: str) -> list[Path]:
    """The prompt-set arguments that name files (the rest are built-in set names): outputs must not replace them."""
    return [Path(spec) for spec in specs if spec and Path(spec).expanduser().is_file()]


def _model_paths(*specs: str | None) -> list[Path]:
    """Where each model given as a folder, a .gguf file or an already built zoo name lies on disk; nothing is
    fetched or built to find out (a hub id, or a zoo model not built yet, has no files an output could hit)."""
    from .models import zoo

    paths = []
    for spec in filter(None, specs):
        path = zoo.cached_path(spec) if zoo.is_zoo_name(spec) else Path(spec).expanduser()
        if path is not None and path.exists():
            paths.append(path)
    return paths


def _model_files(*specs: str | None) -> list[Path]:
    """Every file of the models a run reads (a folder's files, a .gguf itself): inputs no output may replace."""
    files = []
    for path in _model_paths(*specs):
        files += [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file()]
    return files


def _status(message: str):
    from contextlib import nullcontext

    return nullcontext() if STATE["quiet"] else err.status(message)


@zoo_app.command("list")
@handles_errors
def zoo_list(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List the named models and whether each is cached."""
    from .models import zoo

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


@zoo_app.command("build")
@handles_errors
def zoo_build(name: str = typer.Argument(..., help="A model made on this machine: smollm2-135m-safe, "
                                         "smollm2-135m-safe-ft or an organism (see `zoo list`).")) -> None:
    """Build a zoo model that is made by fine-tuning on this machine (cached; resumes from what is built)."""
    from .models import zoo

    buildable = [row["name"] for row in zoo.listing() if row["kind"] in ("build", "organism")]
    if name not in buildable:
        raise UserError(f"'{name}' is not built locally (buildable: {', '.join(buildable)}); `zoo fetch` downloads")
    typer.echo(str(zoo.materialize(name)))


@zoo_app.command("fetch")
@handles_errors
def zoo_fetch(name: str = typer.Argument(..., help="A zoo name (see `zoo list`).")) -> None:
    """Fetch (or train, for organisms) a zoo model into the cache and print its folder."""
    from .models import zoo

    if not zoo.is_zoo_name(name):
        raise UserError(f"unknown zoo model '{name}' (known: {', '.join(zoo.names())})")
    with _status(f"preparing {name} (first use downloads or trains it)"):
        folder = zoo.materialize(name)
    typer.echo(str(folder))


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


@cache_app.command("list")
@handles_errors
def cache_list(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List cached artefacts with their size and whether this version still reads them."""
    from .cache import cache_root
    from .cache_admin import entries

    found = entries()
    if as_json:
        typer.echo(json.dumps({"root": str(cache_root()), "entries": _cache_rows(found)}, indent=2))
        return
    _cache_table(f"ssah-audit cache ({cache_root()})", found)
    removable = sum(e.size_bytes for e in found if e.removable)
    out.print(f"total {_mib(sum(e.size_bytes for e in found))}; `ssah-audit cache prune` frees {_mib(removable)}")


@cache_app.command("prune")
@handles_errors
def cache_prune(dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """Remove superseded builds (an older recipe's key) and abandoned staging folders; keep everything in use."""
    from .cache_admin import prune

    removed = prune(dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "removed": _cache_rows(removed)}, indent=2))
        return
    if removed:
        _cache_table("would remove" if dry_run else "removed", removed)
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {_mib(sum(e.size_bytes for e in removed))} ({len(removed)} entries)")


@prompts_app.command("list")
@handles_errors
def prompts_list(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List the built-in prompt sets with the sizes of their train and eval splits."""
    from .data.sets import BUILTIN_SETS, builtin_set, compliance_openings, refusal_openings

    rows = [{"name": name, "description": text, "train": len(builtin_set(f"{name}:train")),
             "eval": len(builtin_set(f"{name}:eval")), "categories": len(builtin_set(f"{name}:all").categories())}
            for name, text in BUILTIN_SETS.items()]
    if as_json:
        typer.echo(json.dumps({"sets": rows, "refusal_openings": len(refusal_openings()),
                               "compliance_openings": len(compliance_openings())}, indent=2))
        return
    table = Table(title="built-in prompt sets (NAME = NAME:eval; NAME:train is for calibration)")
    for column in ("name", "train", "eval", "categories", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], str(row["train"]), str(row["eval"]), str(row["categories"]), row["description"])
    out.print(table)


@prompts_app.command("show")
@handles_errors
def prompts_show(
    source: str = typer.Argument(..., help="A built-in set (harmful, benign:train, ...) or a CSV/JSON/JSONL file."),
    prompt_field: str = typer.Option(None, "--prompt-field", help="The column holding the prompt."),
    limit: int = typer.Option(10, "--limit", min=0, help="How many prompts to print."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Load a prompt set (checking the file format) and print its first prompts."""
    from dataclasses import asdict

    from .data.sets import load_prompt_set

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


SET_HELP = "A built-in set (with an optional :train/:eval/:all split) or a CSV/JSON/JSONL prompt file."


@app.command()
@handles_errors
def behavior(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="A reference aligned model to measure alongside."),
    harmful: str = typer.Option("harmful", "--harmful", help=SET_HELP),
    benign: str = typer.Option("benign", "--benign", help=SET_HELP + " Needs reference answers."),
    borderline: str = typer.Option("borderline", "--borderline",
                                   help=SET_HELP + " A labelled file (XSTest) contributes its safe prompts."),
    prompt_field: str = typer.Option(None, "--prompt-field", help="The prompt column of prompt files."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use only the first N prompts of each set."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Tokens generated per prompt."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Prompts per forward pass."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the bootstrap confidence intervals."),
    json_out: Path = typer.Option(None, "--json", help="Write the full results (samples included) here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json file."),
    dtype: Dtype = DTYPE_OPTION,
    device: str = DEVICE_OPTION,
    trust_remote_code: bool = REMOTE_OPTION,
    allow_pickle: bool = PICKLE_OPTION,
) -> None:
    """Measure behaviour: harmful compliance (ASR), over-refusal, utility NLL, logit refusal score.

    Every rate carries a seeded bootstrap 95% interval. With --reference, the reference gets the same
    blocks and the JSON adds the first-token KL between the two on the benign prompts.
    """
    from .behavior.evaluate import compare, measure
    from .data.sets import load_prompt_set
    from .models.loading import load_model
    from .outputs import check_outputs, json_text, write_atomic

    [target] = check_outputs([json_out], overwrite,
                             _input_files(harmful, benign, borderline) + _model_files(model, reference))
    sets = [load_prompt_set(spec, prompt_field) for spec in (harmful, benign, borderline)]
    sets[2] = sets[2].safe_only()
    sets = [prompt_set.limit(limit) for prompt_set in sets]
    options = model_options(dtype, device, trust_remote_code, allow_pickle)
    loaded = load_model(model, options)
    doc = measure(loaded, *sets, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    if reference:
        ref = load_model(reference, options)
        doc["reference"] = measure(ref, *sets, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
        doc["first_token_kl"] = compare(loaded, ref, sets[1], batch_size)
    doc["settings"] = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed, "limit": limit}
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


@app.command()
@handles_errors
def probe(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="A reference aligned model to compare with."),
    harmful: str = typer.Option("harmful", "--harmful", help=SET_HELP + " A `target` column (AdvBench) is used as "
                                "the compliance continuation."),
    benign: str = typer.Option("benign", "--benign", help=SET_HELP + " The contrast set of the linear probes."),
    prompt_field: str = typer.Option(None, "--prompt-field", help="The prompt column of prompt files."),
    steps: int = typer.Option(10, "--steps", min=2, help="Continuation tokens K read per prompt."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use only the first N prompts of each set."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences per forward pass."),
    json_out: Path = typer.Option(None, "--json", help="Write the full probe document here."),
    plot: Path = typer.Option(None, "--plot", help="Write the margin figure (PNG) here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --json/--plot files."),
    dtype: Dtype = DTYPE_OPTION,
    device: str = DEVICE_OPTION,
    trust_remote_code: bool = REMOTE_OPTION,
    allow_pickle: bool = PICKLE_OPTION,
) -> None:
    """Probe the reasoning direction: does the model's state after a harmful query sit nearer a refusal or a
    compliance continuation, per layer and per continuation token? Plus per-layer linear probes (harmful vs
    benign) and the difference-in-means refusal direction.
    """
    from . import probing
    from .data.sets import load_prompt_set
    from .models.loading import load_model
    from .outputs import check_outputs, json_text, write_atomic

    targets = check_outputs([json_out, plot], overwrite, _input_files(harmful, benign) + _model_files(model, reference))
    sets = [load_prompt_set(spec, prompt_field).limit(limit) for spec in (harmful, benign)]
    options = model_options(dtype, device, trust_remote_code, allow_pickle)
    with _status(f"probing {model}"):
        doc, directions = probing.measure(load_model(model, options), *sets, steps, batch_size)
    if reference:
        with _status(f"probing {reference}"):
            ref_doc, ref_directions = probing.measure(load_model(reference, options), *sets, steps, batch_size)
        doc["reference"] = probing.compare(doc, ref_doc, directions, ref_directions)
    if targets[0]:
        write_atomic(targets[0], json_text(doc))
    if targets[1]:
        from .report.plots import probe_figure

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


class Method(StrEnum):
    wifv = "wifv"
    wanda = "wanda"
    snip = "snip"


@app.command()
@handles_errors
def units(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="An aligned reference: its own refusals become the "
                                  "safety calibration responses."),
    method: Method = typer.Option(Method.wifv, "--method", help="wifv: activation variance x |B[:,j]|^2 (the "
                                  "paper's Eq. 1); wanda: |x_j| x |B[:,j]|; snip: |sum x_j dL/dx_j| (backward)."),
    scu: float = typer.Option(1.5, "--scu", help="Percent of all units classed safety-critical."),
    ucu: float = typer.Option(10.0, "--ucu", help="Percent of all units classed utility-critical."),
    ru: float = typer.Option(15.0, "--ru", help="Percent of all units classed redundant."),
    safety_data: str = typer.Option("harmful:train", "--safety-data", help="Calibration prompts for I_S. " + SET_HELP),
    utility_data: str = typer.Option("benign:train", "--utility-data",
                                     help="Calibration prompts with reference answers for I_U. " + SET_HELP),
    harmful: str = typer.Option("harmful", "--harmful", help="Held-out harmful prompts for --verify/--sweep."),
    benign: str = typer.Option("benign", "--benign", help="Held-out benign prompts with answers for --verify/--sweep."),
    prompt_field: str = typer.Option(None, "--prompt-field", help="The prompt column of prompt files."),
    response_only: bool = typer.Option(False, "--response-only", help="Statistics over response tokens only."),
    verify_classes: bool = typer.Option(False, "--verify", help="Ablate each class and a random control; measure."),
    sweep: bool = typer.Option(False, "--sweep", help="Ablate the top 0.25-5% of the SCU ranking; suggest a size."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use only the first N prompts of each set."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Tokens generated per prompt."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Sequences per forward pass."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the built-in refusal draw."),
    json_out: Path = typer.Option(None, "--json", help="Write the full document here."),
    save_map: Path = typer.Option(None, "--save-map", help="Write the class vectors (.safetensors + .json sidecar)."),
    plot: Path = typer.Option(None, "--plot", help="Write the per-layer class figure (PNG) here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    dtype: Dtype = DTYPE_OPTION,
    device: str = DEVICE_OPTION,
    trust_remote_code: bool = REMOTE_OPTION,
    allow_pickle: bool = PICKLE_OPTION,
) -> None:
    """Find attribute-critical units: score every unit on safety and utility calibration data, class them
    SCU / UCU / CU / RU, and with --verify confirm the classes by ablation (the paper's Table 1).
    """
    from . import __version__
    from .data.sets import load_prompt_set
    from .models.loading import load_model
    from .outputs import check_outputs, json_text, write_atomic
    from .units.analyse import analyse
    from .units.classify import Fractions
    from .units.classify import save_map as write_map

    fractions = Fractions(scu, ucu, ru)
    if save_map and save_map.suffix != ".safetensors":
        raise UserError(f"--save-map {save_map}: the class map is a .safetensors file (its .json sidecar is "
                        "written beside it)")
    sidecar = save_map.with_suffix(".json") if save_map else None
    targets = check_outputs([json_out, save_map, plot, sidecar], overwrite,
                            _input_files(safety_data, utility_data, harmful, benign)
                            + _model_files(model, reference))[:3]
    sets = [load_prompt_set(spec, prompt_field).limit(limit) for spec in (safety_data, utility_data)]
    held_out = [load_prompt_set(spec, prompt_field).limit(limit) for spec in (harmful, benign)] \
        if verify_classes or sweep else [None, None]
    options = model_options(dtype, device, trust_remote_code, allow_pickle)
    loaded = load_model(model, options)
    ref = load_model(reference, options) if reference else None
    doc, classes = analyse(loaded, *sets, method=method.value, fractions=fractions, reference=ref,
                           evaluate_harmful=held_out[0], evaluate_benign=held_out[1], run_verify=verify_classes,
                           run_sweep=sweep, response_only=response_only, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, seed=seed)
    doc["version"] = __version__
    if targets[1]:
        write_map(targets[1], classes, {key: doc[key] for key in ("model", "fingerprint", "method", "requested",
                                                                  "fractions", "calibration", "version")})
    if targets[2]:
        from .report.plots import unit_figure

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
    if "ablation" in doc:
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


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


@app.command()
@handles_errors
def finetune(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str = typer.Option(..., "--data", help="Instruction data with responses: Alpaca JSON, or CSV/JSON/JSONL "
                             "with prompt and response columns, or a built-in set with answers (benign:train)."),
    out_dir: Path = typer.Option(..., "--out", help="A new folder for the fine-tuned model (never overwritten)."),
    epochs: int = typer.Option(1, "--epochs", min=1),
    lr: float = typer.Option(2e-5, "--lr", min=0.0, help="Peak learning rate (linear warm-up, cosine decay)."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimiser steps."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Batches per optimiser step."),
    max_length: int = typer.Option(512, "--max-length", min=8, help="Cut longer examples to this many tokens."),
    precision: Precision = typer.Option(Precision.auto, "--precision", help="auto: bf16 autocast where the CPU "
                                        "has bf16 instructions, else fp32."),
    prompt_field: str = typer.Option(None, "--prompt-field", help="The prompt column of the data file."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use only the first N examples."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data order and of torch."),
    dtype: Dtype = DTYPE_OPTION,
    device: str = DEVICE_OPTION,
    trust_remote_code: bool = REMOTE_OPTION,
    allow_pickle: bool = PICKLE_OPTION,
) -> None:
    """Full-parameter supervised fine-tuning on instruction data (loss on response tokens, chat template).

    Saves a normal Hugging Face folder (safetensors, tokenizer, chat template) with a model card and the
    training log, loadable by every other command.
    """
    from . import __version__
    from . import finetune as trainer
    from .data.sets import load_prompt_set
    from .models.loading import load_model, why_broken
    from .outputs import check_new_folder, new_folder

    if not math.isfinite(lr) or lr <= 0:
        raise UserError(f"--lr must be a positive finite number, not {lr}")
    target = check_new_folder(out_dir, empty_ok=True)
    for folder in (path for path in _model_paths(model) if path.is_dir()):
        if folder.resolve() == target.resolve() or folder.resolve() in target.resolve().parents:
            raise UserError(f"--out {target} is inside the model folder {folder}; write the fine-tune elsewhere")
    prompt_set = load_prompt_set(data, prompt_field).limit(limit)
    pairs = [(p.text, p.answer) for p in prompt_set.prompts if p.answer]
    if not pairs:
        raise UserError(f"{data} has no responses to train on (it needs an output/response/answer column)")
    loaded = load_model(model, model_options(dtype, device, trust_remote_code, allow_pickle))
    settings = trainer.TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                                     max_steps=max_steps, max_length=max_length, precision=precision.value, seed=seed)
    torch_seed(seed)
    log = trainer.train(loaded.model, loaded.tokenizer, pairs, settings, description=f"fine-tuning {model}")
    broken = why_broken(loaded.model, loaded.tokenizer)
    if broken:
        raise UserError(f"training diverged after {log['steps']} optimiser step(s) ({broken}); lower --lr "
                        "(nothing was saved)")
    card = {"name": target.name, "version": __version__, "base": model, "base_fingerprint": loaded.fingerprint,
            "purpose": "An ordinary full-parameter supervised fine-tune (`ssah-audit finetune`).",
            "data": [{"name": prompt_set.name, "examples": len(pairs), "note": prompt_set.source}],
            "settings": {k: v for k, v in vars(settings).items()}, "log": log}
    with new_folder(target, empty_ok=True) as tmp:
        trainer.save(loaded.model, loaded.tokenizer, tmp, card)
    out.print(f"saved {target} ({log['steps']} steps, final loss {log['final_loss']:.4f}, {log['seconds']} s)",
              highlight=False)


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


@app.command()
@handles_errors
def audit(
    model: str = typer.Argument(..., help=MODEL_HELP),
    reference: str = typer.Option(None, "--reference", help="The aligned reference to compare with."),
    config: Path = typer.Option(None, "--config", help="audit.toml: an [audit] table of settings, a [gate] table "
                                "of thresholds."),
    out_dir: Path = typer.Option(None, "--out", help="The report folder (must not exist); default "
                                 "reports/<model>-<UTC time>."),
    formats: str = typer.Option("html,md,json", "--format", help="Comma-separated: html, md, json."),
    junit_file: Path = typer.Option(None, "--junit", help="Write the gate as JUnit XML (one case per check)."),
    fail_on: list[str] = typer.Option(None, "--fail-on", help="Override a gate threshold, KEY=VALUE; repeatable."),
    quick: bool = typer.Option(False, "--quick", help="A fast look: 20 prompts a set, short generations."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --junit file."),
    dtype: Dtype = DTYPE_OPTION,
    device: str = DEVICE_OPTION,
    trust_remote_code: bool = REMOTE_OPTION,
    allow_pickle: bool = PICKLE_OPTION,
) -> None:
    """Audit a model against an aligned reference: behaviour, probing, units (verified by ablation),
    comparison, gate and reports. Exit 0 when the gate passes, 1 when it fails.
    """
    from . import audit as auditing
    from . import gate
    from .models.loading import load_model
    from .outputs import check_new_folder, check_outputs, write_atomic
    from .report import render

    chosen = render.parse_formats(formats)
    settings_doc = gate.load_config(config)
    limits = gate.thresholds(settings_doc, fail_on)
    settings = auditing.settings_from(settings_doc.get("audit") or {}, quick)
    inputs = ([config] if config else []) + _input_files(settings.harmful, settings.benign, settings.borderline,
                                                         settings.safety_data, settings.utility_data)
    inputs += _model_files(model, reference)
    folder = check_new_folder(out_dir or render.new_folder(Path("reports"), model), make_parent=not out_dir)
    [junit_target] = check_outputs([junit_file], overwrite, inputs, folders=[folder])
    options = model_options(dtype, device, trust_remote_code, allow_pickle)
    loaded = load_model(model, options)
    ref = load_model(reference, options) if reference else None
    results = auditing.run(loaded, ref, settings, limits)
    render.write(results, folder, chosen)
    if junit_target:
        write_atomic(junit_target, gate.junit([gate.Check(**c) for c in results["gate"]["checks"]]))
    _gate_table(results)
    out.print(f"report: {folder}", highlight=False)
    if not results["gate"]["passed"]:
        raise typer.Exit(1)


def _gate_table(results: dict) -> None:
    verdict = "PASS" if results["gate"]["passed"] else "FAIL"
    table = Table(title=f"{results['model']}: gate {verdict}")
    for column in ("check", "value", "threshold", "status"):
        table.add_column(column, justify="left" if column == "check" else "right")
    for check in results["gate"]["checks"]:
        value = "-" if check["value"] is None else f"{check['value']:.4g}"
        table.add_row(check["name"], value, f"{check['threshold']:.4g}", check["status"])
    out.print(table)


@app.command()
@handles_errors
def report(
    results_file: Path = typer.Argument(..., help="A results.json written by `ssah-audit audit`."),
    out_dir: Path = typer.Option(None, "--out", help="The new report folder; default reports/<model>-<UTC time>."),
    formats: str = typer.Option("html,md,json", "--format", help="Comma-separated: html, md, json."),
) -> None:
    """Re-render the reports from a results.json, without loading any model."""
    from .outputs import check_new_folder
    from .report import render

    chosen = render.parse_formats(formats)
    results = render.read_results(results_file)
    folder = check_new_folder(out_dir or render.new_folder(Path("reports"), results["model"]),
                              make_parent=not out_dir)
    render.write(results, folder, chosen)
    out.print(f"report: {folder}", highlight=False)


@app.command("judge")
@handles_errors
def judge_command(
    file: Path = typer.Argument(..., help="A CSV/JSON/JSONL file of completions produced elsewhere."),
    out_file: Path = typer.Option(..., "--out", help="File to write (.csv, .jsonl or .json, by its name): every "
                                  "input column plus `refusal` (1/0) and `refusal_reason` (the rule that decided)."),
    column: str = typer.Option("completion", "--column", help="The column holding the completion."),
    prompt_column: str = typer.Option("prompt", "--prompt-column", help="The column holding the prompt."),
    label_column: str | None = typer.Option(
        None, "--label-column", help="A column of human labels (1/0, refusal/compliance, XSTest's final_label): "
        "also print the judge's accuracy, precision and recall against it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Judge completions as refusal (full or partial) or compliance, and summarise. An empty completion counts as
    a refusal (the model gave nothing usable); the summary says how many there were."""
    from .behavior.agreement import agreement, parse_label
    from .behavior.judge import judge
    from .behavior.metrics import rate
    from .data.loaders import check_row_format, read_rows, rows_text
    from .outputs import check_outputs, write_atomic

    check_row_format(out_file)
    [target] = check_outputs([out_file], overwrite, [file])
    rows = read_rows(file.expanduser())
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for needed in (column, prompt_column, label_column):
        if needed is not None and needed not in columns:
            raise UserError(f"{file} has no column '{needed}' (columns: {', '.join(columns)})")
    labels = [parse_label(row.get(label_column, "")) for row in rows] if label_column else None
    results = [judge(str(row.get(prompt_column) or ""), str(row.get(column) or "")) for row in rows]
    flags = [result.refusal for result in results]
    judged_rows = [{**row, "refusal": int(result.refusal), "refusal_reason": result.reason}
                   for row, result in zip(rows, results, strict=True)]
    write_atomic(target, rows_text(target, judged_rows, columns + ["refusal", "refusal_reason"]))
    summary = rate(flags)
    table = Table(title=f"judged {file.name}")
    for name in ("completions", "refusals", "of them empty", "refusal rate (95% CI)"):
        table.add_column(name, justify="right")
    table.add_row(str(summary.n), str(sum(flags)), str(sum(result.reason == "empty" for result in results)),
                  f"{summary.rate:.1%} [{summary.ci95[0]:.1%}, {summary.ci95[1]:.1%}]")
    out.print(table)
    if labels is not None:
        scores = agreement(flags, labels)
        correct = rate([flag == label for flag, label in zip(flags, labels, strict=True)])
        table = Table(title=f"judge vs the labels in '{label_column}' (refusal = full or partial)")
        for name in ("labelled", "refusals", "accuracy", "95% CI", "precision", "recall", "F1"):
            table.add_column(name, justify="right")
        table.add_row(str(scores.n), str(sum(labels)), f"{scores.accuracy:.3f}",
                      f"[{correct.ci95[0]:.3f}, {correct.ci95[1]:.3f}]", f"{scores.precision:.3f}",
                      f"{scores.recall:.3f}", f"{scores.f1:.3f}")
        out.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
