"""Unit ablation: zero B[:, j] for chosen units, then put back exactly what was there; or, per batch row,
zero the units' inputs, so one batch carries several ablation conditions.

Zeroing a unit's write-back column removes its contribution to the residual stream (for every token and
every input), which is structured pruning of that unit. The checkpoint on disk is never touched; the
columns are copied before and restored bit for bit after, even when the measurement inside fails.
Zeroing the unit's input x_j instead makes the same term B[:, j] x_j exactly 0, and can differ per row.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..models.unit_map import weight_out_in


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


@contextmanager
def row_ablation(unit_map, conditions: list[dict[str, torch.Tensor]]):
    """Within the block, row r of a batch runs without the units of conditions[which[r]]: yields `select`, to be
    called before each batch with `which`, each row's condition index. A forward pre-hook multiplies each
    write-back's input by the rows' 0/1 masks. Why: a generation step of a small model reads every weight for
    the few rows of one batch; carrying every condition of a verification (dense, -SCU, -UCU, -RU, random
    controls) in one batch reads them once for all (bench/ablation_batching.py)."""
    modules = {wb.name: wb for wb in unit_map.modules()}
    keep: dict[str, torch.Tensor] = {}
    for name in sorted({name for chosen in conditions for name, index in chosen.items() if len(index)}):
        keep[name] = torch.ones(len(conditions), modules[name].units)
        for k, chosen in enumerate(conditions):
            if name in chosen:
                keep[name][k, chosen[name]] = 0
    current: dict[str, torch.Tensor | None] = {}

    def masking(name: str):
        def hook(module, args):
            rows = current.get(name)
            if rows is None:
                return None
            x = args[0]
            rows = rows.to(x.device, x.dtype)
            # (batch, tokens, units), or (batch * tokens, units) where a family flattens its tokens (OPT)
            shaped = x.reshape(rows.shape[0], -1, x.shape[-1])
            return ((shaped * rows[:, None, :]).reshape(x.shape),) + tuple(args[1:])
        return hook

    def select(which: list[int]) -> None:
        index = torch.as_tensor(which, dtype=torch.long)
        for name, mask in keep.items():
            rows = mask[index]
            current[name] = None if bool(rows.all()) else rows

    handles = [modules[name].module.register_forward_pre_hook(masking(name)) for name in keep]
    try:
        yield select
    finally:
        for handle in handles:
            handle.remove()


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
