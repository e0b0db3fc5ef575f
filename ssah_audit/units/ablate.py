"""Reversible unit ablation: zero B[:, j] for chosen units, then put back exactly what was there.

Zeroing a unit's write-back column removes its contribution to the residual stream (for every token and
every input), which is structured pruning of that unit. The checkpoint on disk is never touched; the
columns are copied before and restored bit for bit after, even when the measurement inside fails.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..models.units import weight_out_in


@contextmanager
def ablated(unit_map, chosen: dict[str, torch.Tensor]):
    """Within the block, the units chosen[module] (index tensors) of each named write-back are zeroed."""
    modules = {wb.name: wb.module for wb in unit_map.modules()}
    saved = []
    try:
        with torch.no_grad():
            for name, index in chosen.items():
                if len(index) == 0:
                    continue
                weight = weight_out_in(modules[name])  # a view: writes reach the parameter
                saved.append((weight, index, weight[:, index].clone()))
                weight[:, index] = 0
        yield
    finally:
        with torch.no_grad():
            for weight, index, columns in reversed(saved):
                weight[:, index] = columns


def count(chosen: dict[str, torch.Tensor]) -> int:
    return sum(len(index) for index in chosen.values())


def random_units(unit_map, how_many: int, seed: int) -> dict[str, torch.Tensor]:
    """`how_many` units drawn uniformly from all units (the control of the same size as SCU), seeded."""
    modules = unit_map.modules()
    offsets = torch.tensor([0] + [wb.units for wb in modules]).cumsum(0)
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(int(offsets[-1]), generator=generator)[:how_many].sort().values
    return {wb.name: picked[(picked >= offsets[i]) & (picked < offsets[i + 1])] - offsets[i]
            for i, wb in enumerate(modules)}


def from_ranking(ranking: list[tuple[str, int]], how_many: int) -> dict[str, torch.Tensor]:
    """The first `how_many` units of a (module, index) ranking, as index tensors per module."""
    chosen: dict[str, list[int]] = {}
    for name, index in ranking[:how_many]:
        chosen.setdefault(name, []).append(index)
    return {name: torch.tensor(sorted(indices), dtype=torch.long) for name, indices in chosen.items()}
