"""Model against reference, unit by unit (docs/design.md, comparison): where did fine-tuning move the weights, and
what became of the reference's safety-critical units?

- drift of unit j: ‖ΔB[:, j]‖ / ‖B_ref[:, j]‖ for its write-back column, and the same over its read-in rows
  (the MLP's gate/up or fc rows, attention's value rows) where the architecture has them one to one;
- mean drift per class (the reference's classes) and the SCU drift ratio: mean SCU drift over the mean drift
  of all units (> 1: fine-tuning moved the safety units more than the rest);
- the attribute-transfer matrix: how many units of each reference class carry each class in the model
  (the paper's Fig. 5/6).
"""

from __future__ import annotations

import torch

from ..models.unit_map import read_ins, weight_out_in
from ..unit_classes.classify import CLASSES, CODE


def same_architecture(ours, theirs) -> str | None:
    """None when unit-level comparison is possible, else the reason it is not."""
    a, b = ours.units.modules(), theirs.units.modules()
    if [(wb.name, wb.units) for wb in a] != [(wb.name, wb.units) for wb in b]:
        return (f"different architectures ({ours.model.config.model_type}, {ours.units.total_units:,} units vs "
                f"{theirs.model.config.model_type}, {theirs.units.total_units:,} units): unit-level comparison "
                "needs the same unit map, so only behaviour and probing are compared")
    return None


def _rows(weight_out_in_matrix: torch.Tensor) -> torch.Tensor:
    return weight_out_in_matrix.detach().double()


def low_rank_column_norms(factor) -> torch.Tensor:
    """‖scale · B A[:, j]‖ for every column j, from the r x r Gram matrix: no dense delta W is built."""
    return factor.scale * ((factor.b.T @ factor.b) @ factor.a * factor.a).sum(dim=0).clamp_min(0).sqrt()


def low_rank_row_norms_squared(factor) -> torch.Tensor:
    """‖scale · B[i] A‖² for every row i."""
    return factor.scale**2 * ((factor.b @ (factor.a @ factor.a.T)) * factor.b).sum(dim=1).clamp_min(0)


def _own_low_rank(ours, theirs) -> dict:
    """An adapter's factors, when `theirs` is the very base it was merged into (then delta W = scale · B A)."""
    if ours.adapter and ours.low_rank and ours.adapter["base_fingerprint"] == theirs.fingerprint:
        return ours.low_rank
    return {}


NO_DRIFT = 1e-5  # mean relative drift of all units below which the weights did not move (fp32 rounding: ~1e-7)


@torch.no_grad()
def unit_drift(ours, theirs) -> dict[str, dict[str, torch.Tensor]]:
    """{"write": {module: drift per unit}, "read": {module: drift per unit over its read-in rows}}. For an adapter
    against its own base, adapted modules' deltas come from the low-rank factors, one module at a time."""
    low_rank = _own_low_rank(ours, theirs)
    write, read = {}, {}
    for mine, ref in zip(ours.units.modules(), theirs.units.modules(), strict=True):
        b_ref = _rows(weight_out_in(ref.module))
        if mine.name in low_rank:
            delta_norm = low_rank_column_norms(low_rank[mine.name])
        else:
            delta_norm = (_rows(weight_out_in(mine.module)) - b_ref).norm(dim=0)
        write[mine.name] = delta_norm / b_ref.norm(dim=0).clamp_min(1e-12)
        names = read_ins(ours.model, mine.name, mine.units)
        if names:
            num = torch.zeros(mine.units, dtype=torch.float64)
            den = torch.zeros(mine.units, dtype=torch.float64)
            for name in names:
                a_ref = _rows(weight_out_in(theirs.model.get_submodule(name)))  # [units, in]
                if name in low_rank:
                    num += low_rank_row_norms_squared(low_rank[name])
                else:
                    num += (_rows(weight_out_in(ours.model.get_submodule(name))) - a_ref).square().sum(dim=1)
                den += a_ref.square().sum(dim=1)
            read[mine.name] = num.sqrt() / den.sqrt().clamp_min(1e-12)
    return {"write": write, "read": read}


def drift_by_class(drift: dict[str, torch.Tensor], classes: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """Mean drift of the units of each class, plus "all"."""
    values = torch.cat([drift[name] for name in classes if name in drift])
    codes = torch.cat([classes[name] for name in classes if name in drift])
    result = {name: float(values[codes == CODE[name]].mean()) if (codes == CODE[name]).any() else None
              for name in CLASSES}
    return result | {"all": float(values.mean())}


def transfer_matrix(reference_classes: dict[str, torch.Tensor], model_classes: dict[str, torch.Tensor]) -> dict:
    """counts[i][j]: units that are class i in the reference and class j in the model (order: CLASSES);
    fractions: each row divided by its total."""
    ref = torch.cat([reference_classes[name] for name in reference_classes]).long()
    mine = torch.cat([model_classes[name] for name in reference_classes]).long()
    counts = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.long)
    counts.index_put_((ref, mine), torch.ones_like(ref), accumulate=True)
    rows = counts.sum(dim=1, keepdim=True).clamp_min(1)
    return {"classes": list(CLASSES), "counts": counts.tolist(), "fractions": (counts / rows).tolist()}


def compare_units(ours, theirs, reference_classes, model_classes) -> dict:
    """The unit block of an audit: drift per class, SCU drift ratio, transfer matrix."""
    drift = unit_drift(ours, theirs)
    write = drift_by_class(drift["write"], reference_classes)
    read = drift_by_class(drift["read"], reference_classes) if drift["read"] else None
    # Weights equal to float rounding (a model against itself, a repair that gave the reference back) drift ~1e-7
    # relative to their norm: a ratio of rounding noise means nothing, so there is none (the gate skips it).
    ratio = write["SCU"] / write["all"] if write["SCU"] is not None and write["all"] > NO_DRIFT else None
    return {"drift": {"write": write, "read": read}, "scu_drift_ratio": ratio,
            "transfer": transfer_matrix(reference_classes, model_classes)}
