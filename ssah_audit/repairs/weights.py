"""Weight arithmetic between a fine-tune, its aligned reference and the model that reference was aligned from:
the operations every training-free repair is made of. Parameters are changed in place, under no_grad, through
`named_parameters()` (a tied embedding and LM head is one parameter, so it is changed once).

A unit is what `finetune --freeze` freezes (unit_classes.freeze): its write-back column, its read-in rows and
those rows' bias entries.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..models.unit_map import is_conv1d, weight_out_in
from ..unit_classes.freeze import unit_masks


def parameters(model) -> dict[str, torch.nn.Parameter]:
    return dict(model.named_parameters())


def check_same_shape(model, other, what: str, other_name: str) -> None:
    """Weight arithmetic needs the same parameters of the same shapes: one line naming the first difference."""
    mine, theirs = parameters(model), parameters(other)
    if set(mine) != set(theirs):
        only = sorted(set(mine) ^ set(theirs))
        raise UserError(f"{other_name} is not the same architecture as {what}: parameter {only[0]} is in one of "
                        f"them only ({len(only)} such)")
    for name, parameter in mine.items():
        if parameter.shape != theirs[name].shape:
            raise UserError(f"{other_name} is not the same architecture as {what}: {name} is "
                            f"{tuple(theirs[name].shape)} there and {tuple(parameter.shape)} here")


@torch.no_grad()
def interpolate(model, reference, alpha: float) -> None:
    """W_ref + alpha * (W_model - W_ref): alpha 1 is the model, 0 the reference."""
    ref = parameters(reference)
    for name, parameter in model.named_parameters():
        parameter.copy_(torch.lerp(ref[name].to(parameter.dtype), parameter, alpha))


@torch.no_grad()
def add_difference(model, aligned, unaligned, beta: float) -> None:
    """W_model + beta * (W_aligned - W_unaligned): RESTA's safety vector added back."""
    plus, minus = parameters(aligned), parameters(unaligned)
    for name, parameter in model.named_parameters():
        parameter.add_((plus[name].double() - minus[name].double()).mul_(beta).to(parameter.dtype))


def unit_entry_masks(model, unit_map, units: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{parameter name: a 0/1 mask of the chosen units' entries}: freeze's definition of a unit, by name."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    return {names[id(parameter)]: mask.bool() for parameter, mask in
            unit_masks(model, unit_map, units, train_units=True).items()}


@torch.no_grad()
def restore_units(model, reference, unit_map, units: dict[str, torch.Tensor]) -> int:
    """Copy the reference's weights at the chosen units into the model; returns how many entries changed."""
    ref = parameters(reference)
    own = parameters(model)
    changed = 0
    for name, mask in unit_entry_masks(model, unit_map, units).items():
        parameter = own[name]
        changed += int((mask & (parameter != ref[name])).sum())
        parameter.copy_(torch.where(mask, ref[name].to(parameter.dtype), parameter))
    return changed


@torch.no_grad()
def unit_drift(model, reference, unit_map) -> dict[str, torch.Tensor]:
    """Per unit, ||its entries in the model - in the reference|| / ||its entries in the reference|| (float64):
    how far fine-tuning moved each unit (NLSR's selection reads this)."""
    from ..models.unit_map import in_out_features, read_ins

    drift = {}
    for wb in unit_map.modules():
        delta = torch.zeros(wb.units, dtype=torch.float64)
        norm = torch.zeros(wb.units, dtype=torch.float64)
        mine, theirs = weight_out_in(wb.module).double(), weight_out_in(reference.get_submodule(wb.name)).double()
        delta += (mine - theirs).pow(2).sum(0)
        norm += theirs.pow(2).sum(0)
        for name in read_ins(model, wb.name, wb.units):
            module, other = model.get_submodule(name), reference.get_submodule(name)
            mine, theirs = weight_out_in(module).double(), weight_out_in(other).double()
            delta += (mine - theirs).pow(2).sum(1)
            norm += theirs.pow(2).sum(1)
            if getattr(module, "bias", None) is not None and in_out_features(module)[1] == wb.units:
                delta += (module.bias.double() - other.bias.double()).pow(2)
                norm += other.bias.double().pow(2)
        drift[wb.name] = delta.sqrt() / norm.sqrt().clamp_min(1e-12)
    return drift


def alignment_basis(direction: torch.Tensor, energy: float) -> torch.Tensor:
    """The leading left-singular vectors of the alignment update V = W_aligned - W_unaligned (out x in) that hold
    `energy` of its squared norm: an orthonormal (out x k) basis of the subspace the alignment wrote into."""
    u, s, _ = torch.linalg.svd(direction.double(), full_matrices=False)
    share = s.pow(2).cumsum(0) / s.pow(2).sum().clamp_min(1e-300)
    k = int((share < energy - 1e-12).sum()) + 1
    return u[:, :min(k, len(s))]


def project(update: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The part of `update` (out x in) in the span of `basis`: basis basisᵀ update (float64)."""
    return basis @ (basis.T @ update.double())


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else 1.0


def projectable(model, unit_map) -> list[str]:
    """The matrices a projection applies to: every 2-D weight inside the decoder layers (attention and MLP
    projections); embeddings, norms and biases keep the fine-tune's values."""
    prefix = unit_map.layers_path + "."
    return [name for name, parameter in model.named_parameters()
            if name.startswith(prefix) and parameter.dim() == 2]


@torch.no_grad()
def project_deltas(model, reference, unaligned, unit_map, energy: float, threshold: float) -> dict:
    """Safe LoRA on a full fine-tune: for every projectable matrix, the update W_model - W_ref is replaced by its
    projection onto the alignment subspace of that matrix, where the update's cosine with its projection is below
    `threshold` (1 projects every matrix). Matrices are read as (out, in), GPT-2's Conv1D included. Returns how
    many matrices were projected and the cosines."""
    cosines, projected = {}, 0
    for name in projectable(model, unit_map):
        owner = name.rpartition(".")[0]
        mine, ref, base = (_out_in(m.get_submodule(owner), name) for m in (model, reference, unaligned))
        update = mine.double() - ref.double()
        kept = project(update, alignment_basis(ref.double() - base.double(), energy))
        cosines[name] = cosine(update, kept)
        if cosines[name] < threshold:
            mine.copy_((ref.double() + kept).to(mine.dtype))
            projected += 1
    return {"projected": projected, "matrices": len(cosines), "cosines": cosines}


def _out_in(module, name: str) -> torch.Tensor:
    parameter = getattr(module, name.rpartition(".")[2])
    return parameter.T if is_conv1d(module) else parameter
