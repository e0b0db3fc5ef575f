"""LoRA/PEFT adapters: what most fine-tunes that reach a safety review are. An adapter folder
(`adapter_config.json` + `adapter_model.safetensors`) is applied to its base with `peft` and merged in memory, so
hooks, scores and ablations see ordinary weights; the low-rank factors are kept, so drift against the base can be
computed from them (compare/units.py) without a dense delta per module.

The base comes from the adapter's `base_model_name_or_path` or `--base`; models.resolve loads it (a folder, zoo
name, GGUF or hub id), this module only checks the folder and applies it.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache import content_key, sha256_file
from ..errors import UserError
from ..inputs import MiB, read_text

if TYPE_CHECKING:  # torch loads only when an adapter is applied: the CLI reads adapter configs before that
    import torch

CONFIG = "adapter_config.json"
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LowRank:
    """One adapted linear map: delta W (out x in) = scale * B @ A."""

    a: torch.Tensor  # [rank, in], float64
    b: torch.Tensor  # [out, rank], float64
    scale: float


def is_adapter_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def read_config(folder: Path) -> dict:
    try:
        config = json.loads(read_text(folder / CONFIG, "adapter config", MiB))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{folder / CONFIG} is not a readable adapter config: {exc}") from None
    if not isinstance(config, dict):
        raise UserError(f"{folder / CONFIG} is not a JSON object")
    kind = str(config.get("peft_type", "")).upper()
    if kind != "LORA":
        raise UserError(f"{folder} is an adapter of type {kind or 'unknown'}; only LoRA adapters are supported")
    if config.get("use_dora"):
        raise UserError(f"{folder} is a DoRA adapter (use_dora); only plain LoRA adapters are supported")
    check_fields(folder / CONFIG, config)
    return config


def check_fields(where: Path, config: dict) -> None:
    """peft takes these fields on trust: lora_alpha "big" failed deep inside it (TypeError), and inspect, which
    never calls peft, showed r 0. Every command reads the config through here, so all refuse alike."""
    r, alpha, targets = config.get("r"), config.get("lora_alpha"), config.get("target_modules")
    if "r" in config and (type(r) is not int or r < 1):
        raise UserError(f"{where}: r must be a whole number >= 1, not {r!r}")
    if "lora_alpha" in config and (type(alpha) not in (int, float) or not math.isfinite(alpha)):
        raise UserError(f"{where}: lora_alpha must be a number, not {alpha!r}")
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as exc:
            raise UserError(f"{where}: target_modules {targets!r} is not a valid regular expression: {exc}") from exc
    elif targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise UserError(f"{where}: target_modules must be a module name, a list of them or a regular expression, "
                        f"not {targets!r}")


def base_spec(folder: Path, override: str | None) -> str:
    """The model the adapter applies to: --base, else the adapter's own base_model_name_or_path. The config is
    checked either way, before any base loads."""
    base = read_config(folder).get("base_model_name_or_path")
    if override:
        return override
    if not base:
        raise UserError(f"the adapter {folder} does not name its base model; give it with --base MODEL")
    refuse_cycle(folder, str(base))
    return str(base)


def refuse_cycle(folder: Path, base: str) -> None:
    """An adapter naming itself as its base, or adapters naming each other, sent whatever follows bases round
    until a RecursionError: name the loop instead. --base skips the adapter's own base, and this with it."""
    names, seen = [str(folder)], [folder.resolve()]
    while base and is_adapter_folder(path := Path(base).expanduser()):
        names.append(base)
        if path.resolve() in seen:
            loop = names[seen.index(path.resolve()):]
            if len(loop) == 2:
                raise UserError(f"the adapter {loop[0]} names itself as its base; give its base with --base MODEL")
            raise UserError(f"adapters form a cycle: {' -> '.join(loop)}; give the base with --base MODEL")
        seen.append(path.resolve())
        try:
            base = str(read_config(path).get("base_model_name_or_path") or "")
        except UserError:
            return  # not a loop: loading says what is wrong with that adapter


def weights_file(folder: Path, allow_pickle: bool) -> Path:
    if (folder / SAFE_WEIGHTS).is_file():
        return folder / SAFE_WEIGHTS
    if (folder / PICKLE_WEIGHTS).is_file():
        if not allow_pickle:
            raise UserError(f"the adapter {folder} has only pickle weights ({PICKLE_WEIGHTS}), which can run code; "
                            "pass --allow-pickle if you trust it")
        return folder / PICKLE_WEIGHTS
    raise UserError(f"the adapter folder {folder} has {CONFIG} but no weights ({SAFE_WEIGHTS})")


def apply(base, folder: Path, spec: str, base_name: str, allow_pickle: bool, weights: bool = True):
    """The LoadedModel of `base` (consumed: its weights are changed in place) with the adapter merged in. With
    weights=False (`inspect`: the base built from its config alone) the adapter is described from its weight
    file's tensor names and shapes and not applied."""
    from .loading import LoadedModel, first_line
    from .unit_map import build_unit_map

    config = read_config(folder)
    weights_path = weights_file(folder, allow_pickle)
    shapes = adapted_modules(weights_path)
    fingerprint = content_key("adapter", base.fingerprint, sha256_file(weights_path), config)
    missing = [name for name in shapes if not _has_module(base.model, name)]
    if missing:
        raise UserError(f"the adapter {folder} adapts {missing[0]}, which its base {base_name} "
                        f"({base.model.config.model_type}) does not have")
    check_targets(folder, config.get("target_modules"), shapes, base.model, base_name)
    factors, model = None, base.model
    if weights:
        from peft import PeftModel

        try:
            with quiet_peft():
                peft_model = PeftModel.from_pretrained(base.model, str(folder), is_trainable=False)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise UserError(f"the adapter {folder} does not fit its base {base_name} "
                            f"({base.model.config.model_type}, hidden size {base.model.config.hidden_size}): "
                            f"{first_line(exc)}") from exc
        factors = low_rank_factors(peft_model)
        model = peft_model.merge_and_unload().eval()
    units = build_unit_map(model)
    info = describe_adapter(config, shapes, model, units, base_name, base.fingerprint)
    tokenizer = base.tokenizer
    if (folder / "tokenizer_config.json").is_file():  # an adapter that changed the vocabulary ships its tokenizer
        from .loading import LoadOptions, load_tokenizer

        tokenizer = load_tokenizer(str(folder), LoadOptions())
    return LoadedModel(spec=spec, source="adapter", location=str(folder), model=model, tokenizer=tokenizer,
                       units=units, fingerprint=fingerprint, adapter=info, low_rank=factors)


def check_targets(folder: Path, targets, adapted: dict[str, int], model, base_name: str) -> None:
    """peft skips a target the base lacks, and the weights of a module no target names, without a word: the
    merged model would change less than the adapter says. Checked on module names alone, so inspect (the base on
    the meta device) refuses what behavior refuses."""
    if targets is None or (isinstance(targets, str) and targets.lower() == "all-linear"):
        return
    names = [name for name, _ in model.named_modules()]
    entries = [targets] if isinstance(targets, str) else targets

    def named(entry: str, name: str) -> bool:
        """peft's rule: a string is a regular expression; a list entry is a module's name or the end of it."""
        if isinstance(targets, str):
            return re.fullmatch(entry, name) is not None
        return name == entry or name.endswith("." + entry)

    for entry in entries:
        if not any(named(entry, name) for name in names):
            raise UserError(f"the adapter {folder} targets {entry}, which its base {base_name} "
                            f"({model.config.model_type}) does not have")
    stray = [name for name in adapted if not any(named(entry, name) for entry in entries)]
    if stray:
        raise UserError(f"the adapter {folder} has weights for {stray[0]}, which its target_modules do not name "
                        f"({len(stray)} module(s)); peft would leave them out")


def _has_module(model, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def adapted_modules(weights_path: Path) -> dict[str, int]:
    """{module name in the base model: LoRA parameters} from the weight file's tensor names (`<module>.lora_A.weight`
    and `lora_B`), read from the header alone for safetensors."""
    if weights_path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights_path), framework="pt") as handle:
                sizes = {key: math.prod(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    else:
        import torch

        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
            raise UserError(f"{weights_path} is not a loadable tensor file (torch's weights-only loader refused it, "
                            f"so nothing in it ran): {str(exc).splitlines()[0][:200]}") from exc
        sizes = {key: value.numel() for key, value in state.items()}
    modules: dict[str, int] = {}
    for key, size in sizes.items():
        for part in (".lora_A.", ".lora_B."):
            if part in key:
                name = key.split(part)[0].removeprefix(PEFT_PREFIX)
                modules[name] = modules.get(name, 0) + size
    if not modules:
        raise UserError(f"{weights_path} holds no LoRA weights (no lora_A/lora_B tensors)")
    return modules


def low_rank_factors(peft_model) -> dict[str, LowRank]:
    """{module name in the merged model: its factors}, read before merging (merging removes them)."""
    from peft.tuners.lora import LoraLayer

    factors = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            a = module.lora_A["default"].weight.detach().double().clone()
            b = module.lora_B["default"].weight.detach().double().clone()
            factors[name.removeprefix(PEFT_PREFIX)] = LowRank(a, b, float(module.scaling["default"]))
    return factors


def touched_units(adapted, model, units) -> dict:
    """How many units the adapter can move: through their write-back column (the write-back module is adapted)
    and through their read-in rows (a projection feeding them one to one, value, gate or up, is)."""
    from .unit_map import read_ins

    write = read = either = 0
    for wb in units.modules():
        writes = wb.name in adapted
        reads = any(name in adapted for name in read_ins(model, wb.name, wb.units))
        write, read, either = write + writes * wb.units, read + reads * wb.units, either + (writes or reads) * wb.units
    return {"write_back": write, "read_in": read, "any": either, "of": units.total_units}


def describe_adapter(config: dict, adapted: dict[str, int], model, units, base_name: str,
                     base_fingerprint: str) -> dict:
    """What `inspect` and the report say about an adapter."""
    return {
        "base": base_name,
        "base_fingerprint": base_fingerprint,
        "rank": int(config.get("r", 0)),
        "alpha": config.get("lora_alpha"),
        "target_modules": sorted({name.rpartition(".")[2] for name in adapted}),
        "adapted_modules": len(adapted),
        "trainable_parameters": int(sum(adapted.values())),
        "units_touched": touched_units(adapted, model, units),
        "modules_to_save": list(config.get("modules_to_save") or []),
    }


@contextmanager
def quiet_peft():
    """peft asks transformers 5 a deprecated question (`is_gradient_checkpointing`) while it wraps a model: a
    FutureWarning on every adapter a user loads or trains, about nothing they can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def wrap_for_training(loaded, settings: dict, base_name: str):
    """`loaded.model` with fresh LoRA layers (only they train), for `finetune --lora`; its saved config names
    `base_name` as the base, so the adapter folder loads by itself wherever that base does."""
    from peft import LoraConfig, get_peft_model

    targets = settings["target_modules"]
    if targets != "all-linear":
        targets = [name.strip() for name in targets.split(",") if name.strip()]
    try:
        with quiet_peft():
            model = get_peft_model(loaded.model, LoraConfig(r=settings["r"], lora_alpha=settings["lora_alpha"],
                                                            target_modules=targets, lora_dropout=0.0,
                                                            task_type="CAUSAL_LM"))
    except ValueError as exc:
        from .loading import first_line

        raise UserError(f"cannot put LoRA layers on {loaded.spec}: {first_line(exc)}") from exc
    model.peft_config["default"].base_model_name_or_path = base_name
    return model
