"""The built-in unit importance scores (docs/design.md, units), registered in components.UNIT_SCORES, where a user's own
score can join them.

- wifv (default, the paper's Eq. 1): sample variance of x_j × ‖B[:, j]‖²
- wanda: ‖x_j‖₂ × ‖B[:, j]‖₂ (structured Wanda)
- snip: |Σ x_j · ∂L/∂x_j| over response tokens (a first-order estimate of the loss change when j is removed)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..components import UNIT_SCORES
from ..models.unit_map import weight_out_in
from . import stats as unit_stats


@dataclass(frozen=True)
class UnitScore:
    """A unit importance score (see components.py): `compute(model, unit_map, exchanges, batch_size,
    response_only, description)` gives one non-negative float64 tensor per write-back module (its units, on the
    CPU), higher meaning more important. `exchanges` are encoded calibration pairs (units.stats.encode);
    `response_only` restricts statistics to the response's tokens."""

    name: str
    description: str
    compute: Callable[..., dict[str, torch.Tensor]]


def column_norms(module) -> torch.Tensor:
    """‖B[:, j]‖₂ for every unit j of a write-back module, float64."""
    return weight_out_in(module).detach().double().norm(dim=0)


def from_statistics(weigh: Callable[[unit_stats.RunningStats, torch.Tensor], torch.Tensor]):
    """A score computed from each unit's streaming activation statistics and its write-back column norm."""
    @torch.no_grad()
    def compute(model, unit_map, exchanges, batch_size, response_only, description):
        collected = unit_stats.collect(model, unit_map, exchanges, batch_size, response_only, description)
        result = {}
        for wb in unit_map.modules():
            norms = column_norms(wb.module).to(collected[wb.name].mean.device)
            result[wb.name] = weigh(collected[wb.name], norms).cpu()
        return result

    return compute


def _snip(model, unit_map, exchanges, batch_size, response_only, description):
    totals = unit_stats.saliency(model, unit_map, exchanges, batch_size, description)
    return {name: total.abs().cpu() for name, total in totals.items()}


WIFV = UnitScore("wifv", "activation variance x |B[:,j]|^2 (the paper's Eq. 1)",
                 from_statistics(lambda stats, norms: stats.variance * norms.square()))
WANDA = UnitScore("wanda", "|x_j|_2 x |B[:,j]|_2 (structured Wanda)",
                  from_statistics(lambda stats, norms: stats.l2 * norms))
SNIP = UnitScore("snip", "|sum of x_j * dL/dx_j| over response tokens (needs gradients)", _snip)


def scores(model, unit_map, exchanges, method: str = "wifv", batch_size: int = 8, response_only: bool = False,
           description: str = "scoring") -> dict[str, torch.Tensor]:
    """One importance score per unit, per write-back module (float64 on the CPU), by the registered score
    `method`."""
    return UNIT_SCORES.get(method).compute(model, unit_map, exchanges, batch_size, response_only, description)
