"""The built-in repairs, registered as components (components.REPAIRS): each turns a fine-tune back toward its
aligned reference (all but `realign` without training), and says in a record what it did.

A repair has `name`, `description`, `needs` (a subset of NEEDS: the reference's unit map, the model the reference
was aligned from, the model's own unit map, the reference's safety data), `adapter` (True when it can be written
as a LoRA adapter of the same rank), `check(settings)` (its options' bounds, before anything loads), and
`apply(job)`, which changes `job.model` in place and returns the record. An adapter-capable repair also has
`adapter_factor(job, module, b)`: the new LoRA B of one adapted module (delta W = scale B A, so a repair linear in
delta W that acts on its rows is exact on B).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..unit_classes import ablate, freeze
from . import weights

NEEDS = frozenset({"units", "unaligned", "model_units", "safety_data"})
DEFAULT_CLASSES = "scu,cu:6"  # the audit's remedy: SCU + the top 6% of units among CU (the paper's Table 2)


@dataclass(frozen=True)
class RepairSettings:
    """Every repair's options (each reads its own); the CLI's flags and the API's keywords."""

    classes: str = DEFAULT_CLASSES  # restore: the reference's units to copy back
    fraction: float = 7.5  # restore-drifted: percent of all units restored
    random_control: bool = False  # restore, restore-drifted: as many random units instead
    seed: int = 0  # the random control's draw
    alpha: float = 0.5  # interpolate: W_ref + alpha (W_model - W_ref)
    beta: float = 0.5  # safety-vector: W_model + beta (W_aligned - W_unaligned)
    energy: float = 0.5  # project: share of the alignment update's squared norm its subspace holds
    threshold: float = 1.0  # project: matrices whose update has cosine below this with its projection are projected
    train_classes: str = "ru"  # realign: the model's own units that train
    steps: int = 200  # realign: optimiser steps
    lr: float = 5e-5  # realign: peak learning rate


@dataclass
class RepairJob:
    """What a repair works on: the model (changed in place), the reference, the unaligned model where the repair
    needs it, the reference's unit classes and safety scores where it needs them, and the settings."""

    model: object  # LoadedModel
    reference: object
    settings: RepairSettings
    unaligned: object = None
    classes: dict | None = None  # reference's unit classes per write-back module
    safety: dict | None = None  # its standardised safety scores
    bases: dict = field(default_factory=dict)  # project: alignment bases by module, computed once
    adapter_b: dict = field(default_factory=dict)  # an adapter's repaired B factors by module (what is written)
    model_classes: dict | None = None  # realign: the model's own unit classes, as the audit measures them
    model_safety: dict | None = None  # and their standardised safety scores
    safety_pairs: list | None = None  # realign: (harmful prompt, the reference's own refusal)
    utility_pairs: list | None = None  # realign: (benign prompt, reference answer), so that utility is kept


def _percent(value: float, option: str) -> None:
    if not 0 < value <= 100:
        raise UserError(f"{option} must be a percentage in (0, 100], not {value:g}")


def _share(value: float, option: str, low_open: bool = False) -> None:
    if not (0 < value <= 1 if low_open else 0 <= value <= 1):
        raise UserError(f"{option} must be in {'(0' if low_open else '[0'}, 1], not {value:g}")


def _count(units: dict[str, torch.Tensor]) -> int:
    return sum(len(index) for index in units.values())


def _control(job: RepairJob, chosen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The random control: as many units as `chosen`, drawn uniformly from all units (seeded)."""
    return ablate.random_units(job.model.units, _count(chosen), job.settings.seed)


class Restore:
    name = "restore"
    description = ("Copy the reference's weights at its chosen units (--classes, default SCU + top 6% CU) into the "
                   "model; --random-control restores as many random units.")
    needs = frozenset({"units"})
    adapter = False

    def check(self, settings: RepairSettings) -> None:
        freeze.parse_classes(settings.classes, "--classes")

    def apply(self, job: RepairJob) -> dict:
        chosen = freeze.select(job.classes, freeze.parse_classes(job.settings.classes, "--classes"), job.safety)
        if not _count(chosen):
            raise UserError(f"--classes {job.settings.classes!r} selects no unit of the reference's unit map")
        if job.settings.random_control:
            chosen = _control(job, chosen)
        changed = weights.restore_units(job.model.model, job.reference.model, job.model.units, chosen)
        return {"classes": job.settings.classes, "random_control": job.settings.random_control,
                "units": _count(chosen), "of": job.model.units.total_units, "entries_changed": changed}


class RestoreDrifted:
    name = "restore-drifted"
    description = ("NLSR's selection: among the reference's safety-relevant units (--classes, default SCU + CU), "
                   "restore the --fraction percent of all units that fine-tuning moved most.")
    needs = frozenset({"units"})
    adapter = False

    def check(self, settings: RepairSettings) -> None:
        freeze.parse_classes(self._classes(settings), "--classes")
        _percent(settings.fraction, "--fraction")

    @staticmethod
    def _classes(settings: RepairSettings) -> str:
        return "scu,cu" if settings.classes == DEFAULT_CLASSES else settings.classes

    def apply(self, job: RepairJob) -> dict:
        spec = self._classes(job.settings)
        pool = freeze.select(job.classes, freeze.parse_classes(spec, "--classes"), job.safety)
        drift = weights.unit_drift(job.model.model, job.reference.model, job.model.units)
        ranking = sorted(((float(drift[name][i]), name, int(i)) for name, index in pool.items() for i in index),
                         reverse=True)
        wanted = min(len(ranking), round(job.model.units.total_units * job.settings.fraction / 100))
        if not wanted:
            raise UserError(f"--classes {spec!r} with --fraction {job.settings.fraction:g} selects no unit")
        chosen = ablate.from_ranking([(name, i) for _, name, i in ranking], wanted)
        if job.settings.random_control:
            chosen = _control(job, chosen)
        changed = weights.restore_units(job.model.model, job.reference.model, job.model.units, chosen)
        return {"classes": spec, "fraction": job.settings.fraction, "random_control": job.settings.random_control,
                "units": _count(chosen), "of": job.model.units.total_units, "pool": _count(pool),
                "least_drift_restored": ranking[wanted - 1][0], "entries_changed": changed}


class Interpolate:
    name = "interpolate"
    description = "W_ref + alpha (W_model - W_ref): alpha 1 is the model, 0 the reference (--alpha)."
    needs = frozenset()
    adapter = True

    def check(self, settings: RepairSettings) -> None:
        _share(settings.alpha, "--alpha")

    def apply(self, job: RepairJob) -> dict:
        weights.interpolate(job.model.model, job.reference.model, job.settings.alpha)
        return {"alpha": job.settings.alpha}

    def adapter_factor(self, job: RepairJob, module: str, b: torch.Tensor) -> torch.Tensor:
        return b * job.settings.alpha


class SafetyVector:
    name = "safety-vector"
    description = ("RESTA: add beta (W_aligned - W_unaligned) to the model, the safety the reference's alignment "
                   "added (--unaligned, --beta).")
    needs = frozenset({"unaligned"})
    adapter = False

    def check(self, settings: RepairSettings) -> None:
        _share(settings.beta, "--beta", low_open=True)

    def apply(self, job: RepairJob) -> dict:
        weights.add_difference(job.model.model, job.reference.model, job.unaligned.model, job.settings.beta)
        return {"beta": job.settings.beta, "unaligned": job.unaligned.spec}


class Project:
    name = "project"
    description = ("Safe LoRA: per attention/MLP matrix, keep only the part of the fine-tune's update that lies in "
                   "the alignment subspace of W_aligned - W_unaligned (--unaligned, --energy, --threshold).")
    needs = frozenset({"unaligned"})
    adapter = True

    def check(self, settings: RepairSettings) -> None:
        _share(settings.energy, "--energy", low_open=True)
        _share(settings.threshold, "--threshold", low_open=True)

    def apply(self, job: RepairJob) -> dict:
        done = weights.project_deltas(job.model.model, job.reference.model, job.unaligned.model, job.model.units,
                                      job.settings.energy, job.settings.threshold)
        return {"energy": job.settings.energy, "threshold": job.settings.threshold, "unaligned": job.unaligned.spec,
                "projected": done["projected"], "matrices": done["matrices"]}

    def adapter_factor(self, job: RepairJob, module: str, b: torch.Tensor) -> torch.Tensor:
        """P (scale B A) = scale (P B) A; only where the update's cosine with its projection is below threshold."""
        basis = self._basis(job, module)
        kept = weights.project(b, basis)
        a = job.model.low_rank[module].a
        if weights.cosine(b.double() @ a, kept @ a) >= job.settings.threshold:
            return b
        return kept.to(b.dtype)

    @staticmethod
    def _basis(job: RepairJob, module: str) -> torch.Tensor:
        if module not in job.bases:
            aligned = weights.weight_out_in(job.reference.model.get_submodule(module))
            unaligned = weights.weight_out_in(job.unaligned.model.get_submodule(module))
            job.bases[module] = weights.alignment_basis(aligned.double() - unaligned.double(), job.settings.energy)
        return job.bases[module]


class Realign:
    name = "realign"
    description = ("SSAH's alignment budget after the fact: train only the model's own redundant units (its unit map, "
                   "--train-classes) on the reference's refusals and benign answers for --steps steps; "
                   "--random-control trains as many random units.")
    needs = frozenset({"model_units", "safety_data"})
    adapter = False

    def check(self, settings: RepairSettings) -> None:
        freeze.parse_classes(settings.train_classes, "--train-classes")
        if type(settings.steps) is not int or settings.steps < 1:
            raise UserError(f"--steps must be a whole number >= 1, not {settings.steps!r}")
        if not 0 < settings.lr < 1:
            raise UserError(f"--lr must be in (0, 1), not {settings.lr:g}")

    def apply(self, job: RepairJob) -> dict:
        from .. import finetune

        chosen = freeze.select(job.model_classes, freeze.parse_classes(job.settings.train_classes, "--train-classes"),
                               job.model_safety)
        if not _count(chosen):
            raise UserError(f"--train-classes {job.settings.train_classes!r} selects no unit of the model's unit map")
        if job.settings.random_control:
            chosen = _control(job, chosen)
        masks = freeze.unit_masks(job.model.model, job.model.units, chosen, train_units=True)
        pairs = list(job.safety_pairs) + list(job.utility_pairs)
        epochs = -(-job.settings.steps * 8 // max(1, len(pairs)))  # enough epochs for the steps (batch 8)
        settings = finetune.TrainSettings(epochs=epochs, lr=job.settings.lr, batch_size=8, max_steps=job.settings.steps,
                                          max_length=256, precision="auto", seed=job.settings.seed)
        torch.manual_seed(job.settings.seed)
        log = finetune.train(job.model.model, job.model.tokenizer, pairs, settings, description="realigning",
                             masks=masks)
        job.model.model.requires_grad_(True)  # as loaded: the masks' training left most weights without gradients
        return {"train_classes": job.settings.train_classes, "random_control": job.settings.random_control,
                "units": _count(chosen), "of": job.model.units.total_units, "steps": log["steps"],
                "lr": job.settings.lr, "examples": len(pairs), "final_loss": round(log["final_loss"], 4),
                "seconds": log["seconds"]}


RESTORE, RESTORE_DRIFTED, INTERPOLATE, SAFETY_VECTOR, PROJECT, REALIGN = (
    Restore(), RestoreDrifted(), Interpolate(), SafetyVector(), Project(), Realign())
