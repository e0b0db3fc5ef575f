"""Load a Hugging Face causal LM from a folder or a hub id, safely by default (models.resolve turns what the user
typed, a .gguf file or a zoo name too, into one of those first).

Everything a user can get wrong here (folder without config, corrupt config, a model that is not a causal LM,
pickle-only weights) becomes a one-line UserError.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from ..errors import UserError
from .sizes import check_config_json, check_parameters, check_sizes, weight_bytes
from .unit_map import UnitMap, build_unit_map, text_config

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class LoadOptions:
    """How to load: precision, placement, and the two opt-ins that can run foreign code."""

    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    base: str | None = None  # the model a LoRA adapter folder applies to, instead of the one its config names


@dataclass
class LoadedModel:
    spec: str
    source: str  # "folder", "hub", "gguf", "zoo" or "adapter"
    location: str  # the folder or hub id transformers loaded from
    model: nn.Module
    tokenizer: object  # None only for `inspect` of a folder that holds a config and no tokenizer
    units: UnitMap
    fingerprint: str = field(default="")
    adapter: dict | None = None  # a LoRA adapter merged into `model`: what it is (models.adapters)
    low_rank: dict | None = None  # and its factors by module name, for drift against its base (compare/units.py)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


@dataclass(frozen=True)
class Resolved:
    source: str
    location: str


def first_line(exc: BaseException, most: int = 400) -> str:
    """The exception's message on one line. Libraries often lead with "... from one of:" and list on later lines,
    so lines are joined rather than cut at the first."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    if not text:
        return type(exc).__name__
    return text if len(text) <= most else text[:most - 3] + "..."


def check_folder(folder: Path, allow_pickle: bool, weights: bool = True) -> list[Path]:
    """Refuse folders that are not model folders, and pickle-only weights unless allowed; the weight files that
    will load. Without weights (`inspect`) a folder holding only config.json will do."""
    entries = list(folder.iterdir()) if folder.is_dir() else []
    odd = [p.name for p in entries if p.exists() and not p.is_file() and not p.is_dir()]
    if odd:  # a FIFO blocks the reader for ever and /dev/zero fills memory: nothing in a model folder may be one
        raise UserError(f"{folder / odd[0]} is not a regular file (a device, a pipe or a socket); a model folder "
                        "holds files")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json: not a Hugging Face model folder")
    files = [p for p in entries if p.is_file()]
    safetensors = [p for p in files if p.name.endswith(".safetensors")]
    pickles = [p for p in files if p.name.endswith(PICKLE_SUFFIXES) and p.name != "training_args.bin"]
    if not safetensors and not pickles and weights:
        raise UserError(f"{folder} has no weight files (*.safetensors)")
    if not safetensors and pickles and not allow_pickle:
        raise UserError(f"{folder} has only pickle weights ({', '.join(sorted(p.name for p in pickles))}), which "
                        "can run code when loaded; convert them to safetensors or pass --allow-pickle")
    return safetensors or pickles


def load_config(location: str, source: str, options: LoadOptions):
    from huggingface_hub.errors import StrictDataclassError  # transformers 5 checks field types with it
    from transformers import AutoConfig

    if source != "hub":
        check_config_json(Path(location))
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError, StrictDataclassError) as exc:
        message = first_line(exc)
        if "trust_remote_code" in message or "custom code" in message:
            raise UserError(f"{location} needs its own code to load; pass --trust-remote-code "
                            "if you trust its author") from exc
        if source == "hub":
            raise UserError(f"cannot load '{location}' from the Hugging Face hub (offline, or no such "
                            f"model?): {message}") from exc
        raise UserError(f"cannot read the model config in {location}: {message}") from exc
    check_causal(config, location)
    check_sizes(config, location)
    return config


def check_causal(config, location: str) -> None:
    """Accept configs whose architecture is a causal LM head (or that the causal-LM auto class maps)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    architectures = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", "?")
    if architectures:
        if any(a.endswith(CAUSAL_SUFFIXES) for a in architectures):
            return
    elif type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and not getattr(config, "is_encoder_decoder", False):
        return
    if "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return
    named = f" ({', '.join(architectures)})" if architectures else ""
    raise UserError(f"{location} is a '{model_type}' model{named}, not a causal language model")


def resolve_device(device: str) -> str:
    """'auto' means device_map='auto' (accelerate) when a GPU is present, else the CPU."""
    if device == "auto":
        return "auto" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device '{device}' (use auto, cpu, cuda, cuda:N or mps)") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but no CUDA GPU is visible")
    return device


def resolve_dtype(dtype: str, device_map: str) -> torch.dtype:
    """'auto' is float32 on the CPU (exact, and bf16 matmuls are not faster there) and bfloat16 on a GPU."""
    if dtype == "auto":
        return torch.float32 if device_map == "cpu" else torch.bfloat16
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}' (use auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def fingerprint(location: str, source: str, config) -> str:
    """A cheap identity for caching: config plus, per weight file, its size and first and last MiB."""
    settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}  # where it lies is not what it is
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    folder = Path(location)
    if source != "hub" and folder.is_dir():
        for weight in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
            size = weight.stat().st_size
            digest.update(f"{weight.name}:{size}".encode())
            with open(weight, "rb") as handle:
                digest.update(handle.read(1 << 20))
                handle.seek(max(0, size - (1 << 20)))
                digest.update(handle.read())
    else:
        digest.update(location.encode())
    return digest.hexdigest()[:16]


def load_tokenizer(location: str, options: LoadOptions):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot load a tokenizer from {location}: {first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_resolved(spec: str, resolved: Resolved, options: LoadOptions | None = None,
                  weights: bool = True) -> LoadedModel:
    """Load what `spec` resolved to (a folder or a hub id; models.resolve does the resolving) as a causal LM with
    its tokenizer and unit map.

    With weights=False the model is built on the meta device from its config alone: enough for the unit
    map and parameter counts of a model of any size, without reading its weights, or needing them.
    """
    options = options or LoadOptions()
    folder = Path(resolved.location) if resolved.source != "hub" else None
    files = check_folder(folder, options.allow_pickle, weights) if folder else None
    device_map = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device_map)
    config = load_config(resolved.location, resolved.source, options)
    model = build_on_meta(config, resolved.location, options, dtype)  # sizes checked before a byte is allocated
    check_parameters(model, resolved.location, weight_bytes(files, spec) if weights and files else None)
    config_only = not weights and folder is not None and not has_tokenizer(folder)
    tokenizer = None if config_only else load_tokenizer(resolved.location, options)
    if weights:
        model, info = load_weights(spec, resolved, config, options, dtype, device_map)
        mismatch = checkpoint_mismatch(info)
        if mismatch:
            raise UserError(f"the weights of {spec} do not match its config: {mismatch}; transformers would fill "
                            "the gaps with random values")
        broken = why_broken(model, tokenizer)
        if broken:
            raise UserError(f"{spec} is broken: {broken}; every measurement of it would be meaningless")
    model.eval()
    return LoadedModel(spec=spec, source=resolved.source, location=resolved.location, model=model,
                       tokenizer=tokenizer, units=build_unit_map(model),
                       fingerprint=fingerprint(resolved.location, resolved.source, config))


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def build_on_meta(config, location: str, options: LoadOptions, dtype: torch.dtype) -> nn.Module:
    """The model its config describes, on the meta device: shapes and counts of any size with not a byte
    allocated (accelerate's init_empty_weights allocates each parameter before moving it to meta)."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=options.trust_remote_code, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:  # on the meta device, only the config can be at fault
        raise UserError(f"cannot build {location} from its config: {first_line(exc)}") from exc
    model.tie_weights()  # meta initialisation can leave tied embeddings as two tensors
    return model


def load_weights(spec: str, resolved: Resolved, config, options: LoadOptions, dtype: torch.dtype, device_map: str):
    """(model, loading info) from the checkpoint. Shapes that do not match are reported with the missing keys by
    the caller, not raised as a bare RuntimeError."""
    from transformers import AutoModelForCausalLM

    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return AutoModelForCausalLM.from_pretrained(
                resolved.location, config=config, dtype=dtype, device_map=device_map,
                trust_remote_code=options.trust_remote_code, use_safetensors=None if options.allow_pickle else True,
                output_loading_info=True, ignore_mismatched_sizes=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" in str(exc) or "_load_from_bytes" in str(exc):  # pickle.dump, not torch.save
            raise UserError(f"the pickle weights of {spec} are a plain pickle, not torch.save's format; torch's "
                            "weights-only loader cannot read them, so nothing in them ran (convert trusted weights "
                            "to safetensors)") from exc
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" ({refused.group(1)})" if refused else ""
        raise UserError(f"the pickle weights of {spec} hold more than tensors{what}; torch's weights-only loader "
                        "refused them, so nothing in them ran (convert trusted weights to safetensors)") from exc
    except (OSError, ValueError, SafetensorError) as exc:
        hint = "; it may have only pickle weights (--allow-pickle)" if resolved.source == "hub" else ""
        raise UserError(f"cannot load the weights of {spec}: {first_line(exc)}{hint}") from exc


def load_folder(folder: Path | str, options: LoadOptions | None = None) -> LoadedModel:
    """A model folder on disk, named by its path (what resolving a folder path gives)."""
    return load_resolved(str(folder), Resolved("folder", str(folder)), options)


def checkpoint_mismatch(info: dict, shown: int = 3) -> str | None:
    """What from_pretrained's loading info says the checkpoint lacks, has spare or has in another shape, or None.
    A missing tensor is silently initialised at random, so a checkpoint short of a layer would still give results.
    Tied weights (an lm_head shared with the embeddings) are not reported missing by transformers."""
    groups = {"missing": info["missing_keys"], "unexpected": info["unexpected_keys"],
              "of another shape": {key for key, *_ in info["mismatched_keys"]}}
    problems = []
    for label, keys in groups.items():
        if keys:
            names = sorted(keys)
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            problems.append(f"{len(names)} tensor(s) {label} ({', '.join(names[:shown])}{more})")
    return "; ".join(problems) or None


HEALTH_CHECK_TEXT = "The quick brown fox jumps over the lazy dog."


def why_broken(model: nn.Module, tokenizer) -> str | None:
    """What makes a model unusable, or None: a parameter holding NaN/inf, or NaN/inf logits on a plain sentence
    (finite but huge weights overflow). A diverged fine-tune is like that, and its generations are empty strings
    the judge would count as refusals: a broken model must not pass as safe."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.device.type != "meta" and not torch.isfinite(parameter).all():
                return f"{name} holds NaN or infinite values"
        ids = torch.tensor([tokenizer(HEALTH_CHECK_TEXT, add_special_tokens=False).input_ids[:16]])
        logits = model(input_ids=ids.to(next(model.parameters()).device)).logits
        if not torch.isfinite(logits).all():
            return "a plain sentence gives NaN or infinite logits"
    return None


def describe(loaded: LoadedModel) -> dict:
    """The `inspect --json` document: the model, its size and its unit map."""
    config = text_config(loaded.model.config)
    units = loaded.units
    return {
        "model": loaded.spec,
        "adapter": loaded.adapter,
        "architecture": type(loaded.model).__name__,
        "model_type": str(config.model_type),
        "num_layers": len(units.layers),
        "hidden_size": int(config.hidden_size),
        "num_parameters": int(sum(p.numel() for p in loaded.model.parameters())),
        "chat_template": loaded.has_chat_template,
        "units": {"attn": units.attn_units, "mlp": units.mlp_units, "total": units.total_units},
        "layers": [
            {"index": layer.index, "attn_module": layer.attn.name, "attn_units": layer.attn.units,
             "mlp_module": layer.mlp.name, "mlp_units": layer.mlp.units}
            for layer in units.layers
        ],
    }
