"""Gradient masks from a unit map: SSAH's remedy and its alignment budget.

Freezing the reference's safety-critical units (and the most safety-relevant complex units) while fine-tuning
keeps its safety (the paper's Table 2); training only the redundant units aligns a model without touching
what it can do (Table 4). A unit is its write-back column and its read-in rows (the value projection in
attention, every projection that makes the unit's input in the MLP; `models.units.read_ins`), plus those
rows' bias entries. A fused projection (GPT-2's c_attn makes q, k and v in one matrix) is not a read-in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..models.unit_map import in_out_features, is_conv1d, read_ins
from .classify import CODE

SELECTABLE = {"scu": "SCU", "ucu": "UCU", "cu": "CU", "ru": "RU"}
CLASS_NAMES = {"SCU": "safety-critical units", "UCU": "utility-critical units", "CU": "complex units",
               "RU": "redundant units"}


@dataclass(frozen=True)
class Selection:
    """A class of the map, whole (percent None) or its top `percent` of all units by safety score."""

    unit_class: str
    percent: float | None = None


def parse_classes(spec: str, option: str) -> list[Selection]:
    """`scu,cu:6` → SCU whole, and the 6% of all units that are CU with the highest safety score."""
    selections = []
    for part in (piece.strip() for piece in spec.split(",")):
        name, _, percent = part.partition(":")
        if name.lower() not in SELECTABLE:
            raise UserError(f"{option} {spec!r}: {part!r} is not a unit class (scu, ucu, cu, ru; cu:6 for the top "
                            "6% of all units among CU)")
        value = None
        if percent:
            try:
                value = float(percent)
            except ValueError:
                value = -1.0
            if not 0 < value <= 100:
                raise UserError(f"{option} {spec!r}: {percent!r} is not a percentage in (0, 100]")
        selections.append(Selection(SELECTABLE[name.lower()], value))
    return selections


def describe(selections: list[Selection]) -> str:
    """The selections in words, as a report says them: "its safety-critical units and the top 6% of units
    among its complex units"."""
    words = [f"its {CLASS_NAMES[s.unit_class]}" if s.percent is None
             else f"the top {s.percent:g}% of units among its {CLASS_NAMES[s.unit_class]}" for s in selections]
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def select(classes: dict[str, torch.Tensor], selections: list[Selection],
           safety: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The chosen units, per module (sorted indices). A partial class takes its units with the highest
    standardised safety score: complex units matter for safety and utility alike, and the ones to protect
    are those safety leans on most (the paper's "top CU"; METHOD-NOTES §4)."""
    names = list(classes)
    codes = torch.cat([classes[name] for name in names])
    owner = torch.cat([torch.full((len(classes[name]),), i) for i, name in enumerate(names)])
    index = torch.cat([torch.arange(len(classes[name])) for name in names])
    chosen = torch.zeros(len(codes), dtype=torch.bool)
    for selection in selections:
        members = codes == CODE[selection.unit_class]
        if selection.percent is None:
            chosen |= members
            continue
        if safety is None:
            raise UserError(f"the unit map keeps no safety scores, so {selection.unit_class.lower()}:"
                            f"{selection.percent:g} cannot be ranked; write the map again with `ssah-audit units "
                            "--save-map`")
        key = torch.cat([safety[name].double() for name in names])
        candidates = members.nonzero().squeeze(1)
        order = torch.argsort(key[candidates], descending=True, stable=True)
        chosen[candidates[order[:round(len(codes) * selection.percent / 100)]]] = True
    return {name: index[chosen & (owner == i)] for i, name in enumerate(names) if (chosen & (owner == i)).any()}


def check_map_fits(unit_map, document: dict, path) -> None:
    """A map made for another architecture would freeze the wrong units: one line, exit 2."""
    expected = {wb.name: wb.units for wb in unit_map.modules()}
    if document.get("modules") != expected:
        raise UserError(f"unit map {path} was made for another architecture ({len(document.get('modules', {}))} "
                        f"write-back modules) than this model's ({len(expected)}); make one for it with "
                        "`ssah-audit units --save-map`")


def unit_masks(model, unit_map, units: dict[str, torch.Tensor],
               train_units: bool) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Gradient masks for `finetune.train`. `train_units` False (freeze): every parameter trains except the
    chosen units' entries. True (train only): only the chosen units' entries train."""
    fill, mark = (0.0, 1.0) if train_units else (1.0, 0.0)
    masks: dict[torch.nn.Parameter, torch.Tensor] = {}
    if not train_units:
        masks = {p: torch.ones_like(p) for p in model.parameters() if p.requires_grad}

    def mask_of(parameter: torch.nn.Parameter) -> torch.Tensor:
        if parameter not in masks:
            masks[parameter] = torch.full_like(parameter, fill)
        return masks[parameter]

    for wb in unit_map.modules():
        chosen = units.get(wb.name)
        if chosen is None or not len(chosen):
            continue
        _out_in(wb.module, mask_of(wb.module.weight))[:, chosen] = mark
        for name in read_ins(model, wb.name, wb.units):
            module = model.get_submodule(name)
            _out_in(module, mask_of(module.weight))[chosen, :] = mark
            if getattr(module, "bias", None) is not None and in_out_features(module)[1] == wb.units:
                mask_of(module.bias)[chosen] = mark
    return masks


def _out_in(module, mask: torch.Tensor) -> torch.Tensor:
    """The mask seen as (out, in), like `weight_out_in`: a view, so writing to it writes the mask."""
    return mask.T if is_conv1d(module) else mask
