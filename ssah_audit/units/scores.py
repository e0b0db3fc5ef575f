"""Unit importance scores from the streaming statistics (DESIGN.md §2.3).

- wifv (default, the paper's Eq. 1): sample variance of x_j × ‖B[:, j]‖²
- wanda: ‖x_j‖₂ × ‖B[:, j]‖₂ (structured Wanda)
- snip: |Σ x_j · ∂L/∂x_j| over response tokens (a first-order estimate of the loss change when j is removed)
"""

from __future__ import annotations

import torch

from ..models.units import weight_out_in
from . import stats as unit_stats

METHODS = ("wifv", "wanda", "snip")


def column_norms(module) -> torch.Tensor:
    """‖B[:, j]‖₂ for every unit j of a write-back module, float64."""
    return weight_out_in(module).detach().double().norm(dim=0)


@torch.no_grad()
def scores(model, unit_map, exchanges, method: str = "wifv", batch_size: int = 8, response_only: bool = False,
           description: str = "scoring") -> dict[str, torch.Tensor]:
    """One importance score per unit, per write-back module (float64 on the CPU)."""
    if method == "snip":
        totals = unit_stats.saliency(model, unit_map, exchanges, batch_size, description)
        return {name: total.abs().cpu() for name, total in totals.items()}
    collected = unit_stats.collect(model, unit_map, exchanges, batch_size, response_only, description)
    result = {}
    for wb in unit_map.modules():
        norms = column_norms(wb.module).to(collected[wb.name].mean.device)
        if method == "wifv":
            result[wb.name] = (collected[wb.name].variance * norms.square()).cpu()
        else:
            result[wb.name] = (collected[wb.name].l2 * norms).cpu()
    return result
