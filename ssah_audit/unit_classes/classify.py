"""From safety and utility scores to the four unit classes, and the unit-map file that keeps them.

Scores are z-scored per write-back module first (raw variances differ by orders of magnitude between
modules and between data sets), then ranked globally over all units:

1. SCU: the highest z_S - z_U (safety-critical, not utility-critical);
2. UCU: of the rest, the highest z_U - z_S;
3. RU:  of the rest, the lowest z_S + z_U (redundant for both);
4. CU:  everything else (complex: matters for both).

SCU is picked first because it is the class the audit is about; with the default fractions the three
picks rarely compete for the same units. Ties break by module order then unit index (stable sorts), so a
map is deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import config as defaults
from ..errors import UserError
from ..inputs import MiB, read_text

CLASSES = ("CU", "SCU", "UCU", "RU")  # the int8 code of a class is its index here
CODE = {name: code for code, name in enumerate(CLASSES)}
MAP_FORMAT = "ssah-audit unit map v1"


@dataclass(frozen=True)
class Fractions:
    """Percent of all units in each picked class; CU is the remainder."""

    scu: float = defaults.SCU
    ucu: float = defaults.UCU
    ru: float = defaults.RU

    def __post_init__(self):
        defaults.check_fractions(self.scu, self.ucu, self.ru)


def zscore(values: torch.Tensor) -> torch.Tensor:
    std = values.std()
    if not torch.isfinite(std) or std == 0:
        return torch.zeros_like(values)
    return (values - values.mean()) / std


def standardised(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: zscore(value.double()) for name, value in scores.items()}


def _top(key: torch.Tensor, free: torch.Tensor, count: int, highest: bool) -> torch.Tensor:
    """Indices of the `count` free units with the highest (or lowest) key; stable for ties."""
    candidates = free.nonzero().squeeze(1)
    order = torch.argsort(key[candidates], descending=highest, stable=True)
    return candidates[order[:count]]


def classify(safety: dict[str, torch.Tensor], utility: dict[str, torch.Tensor],
             fractions: Fractions = Fractions()) -> dict[str, torch.Tensor]:
    """One int8 class vector (codes of CLASSES) per write-back module, in the order of `safety`."""
    names = list(safety)
    z_s, z_u = standardised(safety), standardised(utility)
    sizes = [len(safety[name]) for name in names]
    flat_s = torch.cat([z_s[name] for name in names])
    flat_u = torch.cat([z_u[name] for name in names])
    total = len(flat_s)
    codes = torch.full((total,), CODE["CU"], dtype=torch.int8)
    free = torch.ones(total, dtype=torch.bool)
    for name, key, highest, percent in (("SCU", flat_s - flat_u, True, fractions.scu),
                                        ("UCU", flat_u - flat_s, True, fractions.ucu),
                                        ("RU", flat_s + flat_u, False, fractions.ru)):
        picked = _top(key, free, round(total * percent / 100), highest)
        codes[picked] = CODE[name]
        free[picked] = False
    return dict(zip(names, torch.split(codes, sizes), strict=True))


def safety_ranking(safety: dict[str, torch.Tensor], utility: dict[str, torch.Tensor]) -> list[tuple[str, int]]:
    """All units as (module, index), most safety-specific first (descending z_S - z_U): the SCU order,
    used by the sweep to ablate the top p% at any p without re-scoring."""
    z_s, z_u = standardised(safety), standardised(utility)
    units = [(name, j) for name in safety for j in range(len(safety[name]))]
    key = torch.cat([z_s[name] - z_u[name] for name in safety])
    return [units[i] for i in torch.argsort(key, descending=True, stable=True).tolist()]


def fractions_of(classes: dict[str, torch.Tensor]) -> dict[str, float]:
    flat = torch.cat(list(classes.values()))
    return {name: float((flat == CODE[name]).sum()) / len(flat) for name in CLASSES}


def per_layer(classes: dict[str, torch.Tensor], unit_map) -> list[dict]:
    """Counts of each class per layer, attention and MLP apart."""
    def counts(name: str) -> dict[str, int]:
        return {cls: int((classes[name] == CODE[cls]).sum()) for cls in CLASSES}

    return [{"layer": layer.index, "attn": counts(layer.attn.name), "mlp": counts(layer.mlp.name)}
            for layer in unit_map.layers]


def units_of(classes: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Indices of the units of one class, per module."""
    return {module: (codes == CODE[name]).nonzero().squeeze(1) for module, codes in classes.items()}


SAFETY_KEY = "safety_z."  # prefix of the per-unit standardised safety scores kept beside the classes


def map_files(classes: dict[str, torch.Tensor], metadata: dict,
              safety: dict[str, torch.Tensor] | None = None) -> tuple[bytes, str]:
    """A unit map's two files, (safetensors bytes, JSON sidecar text): the class vectors, and the settings and
    fingerprints. With `safety` (raw safety scores per module) the map also keeps each unit's standardised safety
    score, so a part of a class can be ranked later (`finetune --freeze MAP --freeze-classes cu:6`)."""
    from safetensors.torch import save

    from ..outputs import json_text

    document = {"format": MAP_FORMAT, "classes": list(CLASSES), **metadata,
                "modules": {name: len(codes) for name, codes in classes.items()},
                "safety_scores": safety is not None}
    tensors = {name: codes.contiguous() for name, codes in classes.items()}
    if safety is not None:
        tensors |= {SAFETY_KEY + name: z.float().contiguous() for name, z in standardised(safety).items()}
    return save(tensors, metadata={"format": MAP_FORMAT}), json_text(document)


def save_map(path: Path, classes: dict[str, torch.Tensor], metadata: dict,
             safety: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `map_files` to `path` and its .json sidecar beside it, each atomically. Returns the sidecar's path."""
    from ..outputs import write_atomic

    tensors, document = map_files(classes, metadata, safety)
    sidecar = path.with_suffix(".json")
    write_atomic(path, tensors)
    write_atomic(sidecar, document)
    return sidecar


def load_map(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The class vectors and the sidecar document of a saved unit map; a damaged file is one clear line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    sidecar = path.with_suffix(".json")
    try:
        classes = load_file(str(path))
        document = json.loads(read_text(sidecar, "unit map sidecar", 64 * MiB))
    except FileNotFoundError as exc:
        raise UserError(f"unit map {exc.filename} does not exist") from None
    except (SafetensorError, json.JSONDecodeError, OSError) as exc:
        raise UserError(f"{path} is not a readable unit map: {exc}") from None
    except RecursionError:
        raise UserError(f"{path} is not a readable unit map: {sidecar.name} is nested too deeply") from None
    codes = {name: tensor for name, tensor in classes.items() if not name.startswith(SAFETY_KEY)}
    if document.get("format") != MAP_FORMAT or set(document.get("modules", {})) != set(codes):
        raise UserError(f"{path} and {sidecar.name} do not belong together as a unit map ({MAP_FORMAT})")
    return {name: codes[name] for name in document["modules"]}, document


def load_safety_scores(path: Path) -> dict[str, torch.Tensor] | None:
    """The standardised safety score of every unit, per module, if the map keeps them (maps written before
    they were kept do not)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    scores = {name[len(SAFETY_KEY):]: z for name, z in tensors.items() if name.startswith(SAFETY_KEY)}
    return scores or None
