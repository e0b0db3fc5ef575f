"""A config's sizes checked before anything is built from them. A zero heads count used to surface as a
ZeroDivisionError inside transformers, and a vocab_size of 10**12 as an attempt to allocate 128 TB (issue 35,
item 10); both are a mistake in config.json, told in one line."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..errors import UserError
from ..inputs import read_text
from .unit_map import text_config

SIZE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "head_dim", "max_position_embeddings")
# The same sizes as config.json may spell them (GPT-2's and OPT's names), read before transformers reads the file.
RAW_SIZE_KEYS = frozenset(SIZE_FIELDS + ("n_embd", "n_layer", "n_head", "n_inner", "n_positions", "n_ctx", "ffn_dim"))
SHOWN_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size")
MAX_PARAMETERS = 10**13  # ten trillion: several times the largest model ever published
CONFIG_BYTES = 16 * 2**20  # a config.json is a few KB; a 70B model's is 1 KB
MIN_BITS_PER_PARAMETER = 1  # the fewest any checkpoint stores a parameter in (1-bit and ternary packs)


def check_config_json(folder: Path) -> None:
    """The raw sizes in a folder's config.json (and in the configs nested in it, such as text_config), before
    transformers reads it: some config classes divide by them while validating themselves."""
    try:
        raw = json.loads(read_text(folder / "config.json", "model config", CONFIG_BYTES))
    except ValueError:
        return  # transformers says what is wrong with the file
    except RecursionError:
        raise UserError(f"{folder / 'config.json'} is nested too deeply to be a model config") from None
    for name, value in _raw_sizes(raw):
        _check_whole(name, value, str(folder))


def _raw_sizes(raw):
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key in RAW_SIZE_KEYS:
                yield key, value
            else:
                yield from _raw_sizes(value)


def _check_whole(name: str, value, location: str) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise UserError(f"the config.json of {location} says {name} = {value!r:.40}; it must be a whole "
                        "number >= 1")


def check_sizes(config, location: str) -> None:
    """The sizes a model is built from must be whole numbers >= 1 that fit together: transformers does not check
    them all, and a bad one surfaces later as a puzzling error (no layers to find, a division by zero) or as
    nothing at all (key-value heads that do not divide the heads)."""
    sizes = {name: getattr(text_config(config), name, None) for name in SIZE_FIELDS}
    for name, value in sizes.items():
        _check_whole(name, value, location)
    hidden, heads, groups = sizes["hidden_size"], sizes["num_attention_heads"], sizes["num_key_value_heads"]
    if heads and groups and heads % groups:
        raise UserError(f"the config.json of {location} says num_key_value_heads = {groups}, which does not divide "
                        f"num_attention_heads = {heads}")
    if hidden and heads and sizes["head_dim"] is None and hidden % heads:  # no head_dim: heads split hidden_size
        raise UserError(f"the config.json of {location} says hidden_size = {hidden}, which num_attention_heads = "
                        f"{heads} does not divide")
    if hidden and sizes["vocab_size"] and sizes["num_hidden_layers"]:  # a dense decoder's count, before building
        feed_forward = sizes["intermediate_size"] or 4 * hidden
        estimate = hidden * (sizes["vocab_size"] + sizes["num_hidden_layers"] * (4 * hidden + 3 * feed_forward))
        if estimate > MAX_PARAMETERS:
            raise UserError(f"the config.json of {location} describes about {estimate:,} parameters "
                            f"({_shown(config)}), more than {MAX_PARAMETERS:,}: one of its sizes is wrong")


def check_parameters(model: nn.Module, location: str, file_bytes: int | None) -> None:
    """The model a config describes (built on the meta device, so nothing is allocated) must be of a size that
    exists, and no larger than its weight files could hold at one bit a parameter: transformers would allocate
    what the files lack and fill it at random."""
    count = sum(parameter.numel() for parameter in model.parameters())
    described = f"the config.json of {location} describes {count:,} parameters ({_shown(model.config)})"
    if count > MAX_PARAMETERS:
        raise UserError(f"{described}, more than {MAX_PARAMETERS:,}: one of its sizes is wrong")
    if file_bytes is not None and count * MIN_BITS_PER_PARAMETER > 8 * file_bytes:
        raise UserError(f"{described}, but its weight files hold only {file_bytes:,} bytes, too few at even one bit "
                        "a parameter: the weights are cut short, or the config belongs to another model")


def weight_bytes(files: list[Path], spec: str) -> int | None:
    """The bytes of safetensors weight files, once each header is known to cover its file (a file cut short is
    told as such, not as a config that does not fit its weights); None for pickles, which torch's weights-only
    loader reads first and judges on what they hold."""
    from safetensors import SafetensorError, safe_open

    if not files or files[0].suffix != ".safetensors":
        return None
    for path in files:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            reason = " ".join(str(exc).split())
            raise UserError(f"cannot load the weights of {spec}: {path.name}: {reason}") from exc
    return sum(path.stat().st_size for path in files)


def _shown(config) -> str:
    config = text_config(config)
    return ", ".join(f"{name} {getattr(config, name):,}" for name in SHOWN_SIZES
                     if isinstance(getattr(config, name, None), int))
