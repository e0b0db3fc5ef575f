"""The unit map: for every decoder layer, the attention and MLP write-back modules and their units.

A *unit* (docs/design.md, units) is one hidden dimension j of a depth-2 block f(X) = B σ(A X), i.e. one input
channel of the write-back projection B. The map is found from the module tree: a small table of
per-family module names, and a checked fallback for families it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError

# Relative names (inside one decoder layer) of the attention and MLP write-back projections.
FAMILY_WRITE_BACKS: dict[str, tuple[str, str]] = {
    "llama": ("self_attn.o_proj", "mlp.down_proj"),
    "mistral": ("self_attn.o_proj", "mlp.down_proj"),
    "qwen2": ("self_attn.o_proj", "mlp.down_proj"),
    "qwen3": ("self_attn.o_proj", "mlp.down_proj"),
    "gemma": ("self_attn.o_proj", "mlp.down_proj"),
    "gemma2": ("self_attn.o_proj", "mlp.down_proj"),
    "gemma3_text": ("self_attn.o_proj", "mlp.down_proj"),
    "phi3": ("self_attn.o_proj", "mlp.down_proj"),
    "gpt2": ("attn.c_proj", "mlp.c_proj"),
    "gpt_neox": ("attention.dense", "mlp.dense_4h_to_h"),
    "opt": ("self_attn.out_proj", "fc2"),
}

# Names seen in other families; the fallback tries them before the structural search.
KNOWN_ATTN_NAMES = ("self_attn.o_proj", "self_attn.out_proj", "attn.c_proj", "attn.out_proj",
                    "attention.dense", "self_attention.dense", "attn.o_proj", "attention.o_proj")
KNOWN_MLP_NAMES = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "fc2", "mlp.fc2", "mlp.fc_out",
                   "feed_forward.w2", "mlp.w2", "ffn.down_proj")


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2 style Conv1D: a linear layer whose weight is stored as (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def in_out_features(module: nn.Module) -> tuple[int, int]:
    weight = module.weight
    if is_conv1d(module):
        return int(weight.shape[0]), int(weight.shape[1])
    return int(weight.shape[1]), int(weight.shape[0])


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The weight B as (out, in), so that B[:, j] is the write-back column of unit j (a view, no copy)."""
    return module.weight.T if is_conv1d(module) else module.weight


@dataclass(frozen=True)
class WriteBack:
    """One write-back projection: its dotted name in the model and its number of units (input channels)."""

    name: str
    module: nn.Module
    units: int


@dataclass(frozen=True)
class LayerUnits:
    index: int
    attn: WriteBack
    mlp: WriteBack


@dataclass(frozen=True)
class UnitMap:
    layers_path: str
    layers: tuple[LayerUnits, ...]

    @property
    def attn_units(self) -> int:
        return sum(layer.attn.units for layer in self.layers)

    @property
    def mlp_units(self) -> int:
        return sum(layer.mlp.units for layer in self.layers)

    @property
    def total_units(self) -> int:
        return self.attn_units + self.mlp_units

    def modules(self) -> list[WriteBack]:
        """Every write-back module, attention then MLP, layer by layer."""
        return [wb for layer in self.layers for wb in (layer.attn, layer.mlp)]


def text_config(config):
    getter = getattr(config, "get_text_config", None)
    return getter() if getter else config


def find_decoder_layers(model: nn.Module, num_layers: int) -> tuple[str, nn.ModuleList]:
    """The ModuleList holding the decoder blocks: the one whose length is the config's layer count."""
    candidates = [(name, mod) for name, mod in model.named_modules()
                  if isinstance(mod, nn.ModuleList) and len(mod) == num_layers and num_layers > 0
                  and len(_projections(mod[0])) >= 2]
    if not candidates:
        lists = [f"{n} ({len(m)})" for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
        raise UserError(f"cannot find the {num_layers} decoder layers in {type(model).__name__}; "
                        f"module lists found: {', '.join(lists) or 'none'}")
    # Prefer the shallowest list (the text decoder, not a nested per-layer list).
    return min(candidates, key=lambda item: item[0].count("."))


def _projections(layer: nn.Module) -> dict[str, nn.Module]:
    return {name: mod for name, mod in layer.named_modules() if name and is_projection(mod)}


def _describe(projections: dict[str, nn.Module]) -> str:
    parts = []
    for name, mod in projections.items():
        n_in, n_out = in_out_features(mod)
        parts.append(f"{name} {n_in}->{n_out}")
    return ", ".join(parts) or "no linear layers"


def _pick(projections: dict[str, nn.Module], known: tuple[str, ...], keyword: tuple[str, ...],
          hidden: int) -> str | None:
    """A write-back among `projections`: a known name, else the only projection into the residual width
    whose path mentions one of `keyword`."""
    for name in known:
        if name in projections and in_out_features(projections[name])[1] == hidden:
            return name
    matches = [name for name, mod in projections.items()
               if in_out_features(mod)[1] == hidden and any(k in name.lower() for k in keyword)]
    return matches[-1] if len(set(m.split(".")[0] for m in matches)) == 1 and matches else None


def _fallback_names(layer: nn.Module, hidden: int, model_type: str) -> tuple[str, str]:
    projections = _projections(layer)
    attn = _pick(projections, KNOWN_ATTN_NAMES, ("attn", "attention"), hidden)
    mlp_pool = {n: m for n, m in projections.items() if not (attn and n.split(".")[0] == attn.split(".")[0])}
    mlp = _pick(mlp_pool, KNOWN_MLP_NAMES, ("mlp", "ffn", "feed_forward", "fc"), hidden)
    if attn is None or mlp is None or attn == mlp:
        raise UserError(f"unknown model family '{model_type}': cannot tell the attention and MLP write-back "
                        f"projections apart in a decoder layer; found: {_describe(projections)}")
    return attn, mlp


def build_unit_map(model: nn.Module) -> UnitMap:
    """Map every decoder layer of `model` to its attention and MLP write-back modules, checked for shape."""
    config = text_config(model.config)
    num_layers = int(config.num_hidden_layers)
    hidden = int(config.hidden_size)
    model_type = str(config.model_type)
    layers_path, layer_list = find_decoder_layers(model, num_layers)
    first = layer_list[0]
    attn_rel, mlp_rel = FAMILY_WRITE_BACKS.get(model_type) or _fallback_names(first, hidden, model_type)

    layers = []
    for index, layer in enumerate(layer_list):
        pair = []
        for rel in (attn_rel, mlp_rel):
            try:
                module = layer.get_submodule(rel)
            except AttributeError as exc:
                raise UserError(f"layer {index} of this '{model_type}' model has no '{rel}'; found: "
                                f"{_describe(_projections(layer))}") from exc
            n_in, n_out = in_out_features(module) if is_projection(module) else (0, -1)
            if n_out != hidden:
                raise UserError(f"'{layers_path}.{index}.{rel}' does not write back to the residual stream "
                                f"(output width {n_out}, hidden size {hidden})")
            pair.append(WriteBack(f"{layers_path}.{index}.{rel}", module, n_in))
        layers.append(LayerUnits(index, pair[0], pair[1]))
    return UnitMap(layers_path, tuple(layers))


VALUE_NAMES = ("v_proj", "value", "v")


def read_ins(model, write_back_name: str, units: int) -> list[str]:
    """Projections that produce the units' inputs one to one: siblings of the write-back in the same block
    with `units` outputs (all of them in an MLP; only value projections in attention, where queries and keys
    do not map to units)."""
    parent_name, _, own = write_back_name.rpartition(".")
    parent = model.get_submodule(parent_name)
    attention = "attn" in parent_name.lower() or "attention" in parent_name.lower()
    names = []
    for name, module in parent.named_children():
        if name == own or not is_projection(module) or in_out_features(module)[1] != units:
            continue
        if attention and name not in VALUE_NAMES:
            continue
        names.append(f"{parent_name}.{name}")
    return names
