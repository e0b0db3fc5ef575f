"""The probe of a model against its reference's: the reference's score, the drop, per-cell margin deltas and the
per-layer cosine between the two refusal directions."""

from __future__ import annotations

import numpy as np
import torch


def direction_cosines(ours: torch.Tensor, theirs: torch.Tensor) -> list[float]:
    """Per-layer cosine between two models' refusal directions (same architecture and width)."""
    return torch.nn.functional.cosine_similarity(ours, theirs, dim=-1).tolist()


def compare(ours: dict, theirs: dict, our_directions: torch.Tensor, their_directions: torch.Tensor) -> dict:
    """The reference block: its score, per-cell margin deltas (model minus reference) and per-layer cosines
    between the two refusal directions. Different depth or width cannot be compared cell by cell; say so."""
    block = {"model": theirs["model"], "variant": theirs.get("variant", "paper"),
             "safe_direction_score": theirs["safe_direction_score"],
             "score_drop": theirs["safe_direction_score"] - ours["safe_direction_score"],
             "margin": theirs["margin"], "layer_margin": theirs["layer_margin"]}
    block |= {key: theirs[key] for key in ("safe_direction_ci95", "decision_layer", "forced_prefix") if key in theirs}
    if np.shape(ours["margin"]) != np.shape(theirs["margin"]):
        return block | {"margin_delta": None, "direction_cosine": None,
                        "note": f"not comparable layer by layer: {ours['layers']} vs {theirs['layers']} layers"}
    block["margin_delta"] = (np.array(ours["margin"]) - np.array(theirs["margin"])).tolist()
    if our_directions.shape != their_directions.shape:
        return block | {"direction_cosine": None, "note": f"hidden sizes differ ({our_directions.shape[-1]} vs "
                        f"{their_directions.shape[-1]}): refusal directions live in different spaces"}
    return block | {"direction_cosine": direction_cosines(our_directions, their_directions)}
