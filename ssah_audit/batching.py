"""Padding token sequences into one batch: the single place that decides where padding goes."""

from __future__ import annotations

import torch

from .errors import UserError


def pad(sequences: list[list[int]], pad_id: int = 0, side: str = "right",
        fill: list[list[int]] | None = None, fill_pad: int = -100) -> tuple[torch.Tensor, ...]:
    """(ids, attention_mask, offsets[, filled]) for `sequences` padded on `side`.

    Right padding keeps every token at its natural position; left padding makes every sequence end at the
    last column (what generation needs). offsets[i] is where sequence i starts. `fill`, when given, is a
    per-token companion (labels) padded the same way with `fill_pad`.
    """
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    filled = torch.full((len(sequences), width), fill_pad, dtype=torch.long) if fill is not None else None
    offsets = []
    for row, seq in enumerate(sequences):
        start = width - len(seq) if side == "left" else 0
        ids[row, start:start + len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, start:start + len(seq)] = 1
        if filled is not None:
            filled[row, start:start + len(fill[row])] = torch.tensor(fill[row], dtype=torch.long)
        offsets.append(start)
    return (ids, mask, offsets) if filled is None else (ids, mask, offsets, filled)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so left padding does not shift positions."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def check_context(model, length: int, what: str = "an input") -> None:
    """A sequence longer than the model's learned positions fails deep inside torch (an IndexError on GPT-2,
    silent garbage on others); say so up front, in one line."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if limit and length > limit:
        raise UserError(f"{what} needs {length} tokens but the model's context is {limit}; use shorter prompts "
                        "or fewer steps/new tokens")
