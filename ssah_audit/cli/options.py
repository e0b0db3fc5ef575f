"""The options and inputs several commands share: the model options, written once, and which files a run reads
(so that no output may replace them)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .. import config as defaults
from ..errors import UserError
from .common import handles_errors

if TYPE_CHECKING:
    from ..models.loading import LoadOptions

MODEL_HELP = (
    "A model folder, a LoRA adapter folder, a .gguf file, a zoo name (see `zoo list`) or a Hugging Face hub id."
)
SET_HELP = "A built-in set (with an optional :train/:eval/:all split) or a CSV/JSON/JSONL prompt file."

LoadOptionsMaker = Callable[[], "LoadOptions"]


class Dtype(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def _option(name: str, annotation: type, default: typer.models.OptionInfo) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


MODEL_OPTIONS = [
    _option("dtype", Dtype, typer.Option(Dtype.auto, "--dtype", help="auto: float32 on CPU, bfloat16 on GPU.")),
    _option("device", str, typer.Option("auto", "--device", help="auto (device_map='auto' with a GPU), cpu, cuda, "
                                        "cuda:N.")),
    _option("trust_remote_code", bool, typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own "
                                                    "Python code to run.")),
    _option("allow_pickle", bool, typer.Option(False, "--allow-pickle", help="Allow pickle weights (.bin/.pt), which "
                                               "can run code.")),
    _option("base", str, typer.Option(None, "--base", help="For a LoRA adapter folder: the model to apply it to "
                                      "(default: the base its adapter_config.json names).")),
]


def component_option(registry, default: str, flag: str, help: str):
    """An option naming a registered component (a unit score, a probe variant): any name the registry knows,
    plugins' included, checked as the command line is read (a usage error, one line, exit 2)."""
    def known(value: str | None) -> str | None:
        if value is not None and value not in registry:
            raise typer.BadParameter(f"unknown {registry.kind} {value!r} (known: {', '.join(registry.names())})")
        return value

    return typer.Option(default, flag, help=help, callback=known)


JUDGE_HELP = ("The judge that decides refusal or compliance for every rate: learned (the default: a classifier "
              "on SmolLM2-135M's hidden states), rules (fast, string rules), a plugin's registered name, hf:PATH (a "
              "local sequence classifier folder; hf:PATH#LABEL names its refusal label), guard:PATH[#chat|#wildguard] "
              "(a local guard or judge model asked yes or no), learned:PATH (a judge refitted on your labels by "
              "judge-fit) or endpoint:URL (an OpenAI-compatible chat server). BENCHMARKS.md gives each built-in "
              "judge's accuracy.")


def judge_spec(value: str | None) -> str | None:
    """A --judge value checked as the command line is read: a registered name, or hf:PATH naming a folder (the
    classifier itself loads when the work starts)."""
    from ..responses.judges import check_spec

    try:
        return None if value is None else check_spec(value)
    except UserError as exc:
        raise typer.BadParameter(str(exc)) from None


def judge_option(default: str | None = defaults.JUDGE, help: str = JUDGE_HELP):
    return typer.Option(default, "--judge", help=help, callback=judge_spec)


def prompt_field_option(help: str = "The prompt column of prompt files."):
    return typer.Option(None, "--prompt-field", help=help)


def limit_option():
    return typer.Option(None, "--limit", min=1, help="Use only the first N prompts of each set.")


def max_new_tokens_option():
    return typer.Option(defaults.MAX_NEW_TOKENS, "--max-new-tokens", min=1, help="Tokens generated per prompt.")


def json_stdout_option():
    return typer.Option(False, "--json", help="Print JSON on stdout.")


def batch_size_option(default: int, help: str = "Sequences per forward pass."):
    return typer.Option(default, "--batch-size", min=1, help=help)


def seed_option(help: str):
    return typer.Option(defaults.SEED, "--seed", min=0, help=help)


def json_file_option(help: str):
    return typer.Option(None, "--json", help=help)


def overwrite_option(help: str):
    return typer.Option(False, "--overwrite", help=help)


def model_command(command):
    """A command that loads a model: errors mapped to exit codes, and the shared model options."""
    return handles_errors(with_model_options(command))


def with_model_options(command):
    """Give a command --dtype, --device, --trust-remote-code, --allow-pickle and --base, after its own options. typer
    reads a command's options from its signature, so they are appended to it; the command takes `load_options`
    instead, which builds the LoadOptions when called (models.loading imports torch: a command checks its input
    first)."""
    signature = inspect.signature(command)
    own = [param for param in signature.parameters.values() if param.name != "load_options"]

    @functools.wraps(command)
    def wrapper(*args, dtype, device, trust_remote_code, allow_pickle, base, **kwargs):
        load_options = functools.partial(_load_options, dtype, device, trust_remote_code, allow_pickle, base)
        return command(*args, load_options=load_options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + MODEL_OPTIONS)
    wrapper.__annotations__ = {name: hint for name, hint in command.__annotations__.items() if name != "load_options"}
    wrapper.__annotations__.update((param.name, param.annotation) for param in MODEL_OPTIONS)
    return wrapper


def _load_options(dtype: Dtype, device: str, trust_remote_code: bool, allow_pickle: bool,
                  base: str | None) -> LoadOptions:
    from ..models.loading import LoadOptions

    return LoadOptions(dtype=dtype.value, device=device, trust_remote_code=trust_remote_code,
                       allow_pickle=allow_pickle, base=base)


def input_files(*specs: str) -> list[Path]:
    """The prompt-set arguments that name files (the rest are built-in set names): outputs must not replace them."""
    return [Path(spec) for spec in specs if spec and Path(spec).expanduser().is_file()]


def model_paths(*specs: str | None) -> list[Path]:
    """Where each model given as a folder, a .gguf file or an already built zoo name lies on disk; nothing is
    fetched or built to find out (a hub id, or a zoo model not built yet, has no files an output could hit)."""
    from ..models.adapters import base_spec, is_adapter_folder
    from ..zoo import catalogue as zoo

    paths = []
    for spec in filter(None, specs):
        path = zoo.cached_path(spec) if zoo.is_zoo_name(spec) else Path(spec).expanduser()
        if path is not None and path.exists():
            paths.append(path)
            if is_adapter_folder(path):  # an adapter reads its base too
                try:
                    paths += model_paths(base_spec(path, None))
                except UserError:
                    pass  # no readable base named: loading says so
    return paths


def model_files(*specs: str | None) -> list[Path]:
    """Every file of the models a run reads (a folder's files, a .gguf itself): inputs no output may replace."""
    files = []
    for path in model_paths(*specs):
        files += [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file()]
    return files
