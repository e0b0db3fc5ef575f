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


def by_length(sequences: list[list[int]], size: int) -> list[list[int]]:
    """Indices of `sequences` in batches of `size`, shortest first: a right-padded batch of similar lengths pads
    little (the utility answers run 53-86 tokens; in the given order their batches carried 17% padding)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    return [order[start:start + size] for start in range(0, len(order), size)]


def groups_of(counts: list[int], rows: int) -> list[list[int]]:
    """Consecutive indices in groups whose counts sum to at most `rows` (an index with more is a group alone): a
    query with its paths or its completions, whose query is encoded once and its rows run after it."""
    groups: list[list[int]] = []
    size = 0
    for index, count in enumerate(counts):
        if not groups or size + count > rows:
            groups.append([])
            size = 0
        groups[-1].append(index)
        size += count
    return groups


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so left padding does not shift positions."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def context_length(model) -> int | None:
    """How many positions the model learned, where its config says."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_context(model, length: int, what: str = "an input") -> None:
    """A sequence longer than the model's learned positions fails deep inside torch (an IndexError on GPT-2,
    silent garbage on others); say so up front, in one line."""
    limit = context_length(model)
    if limit and length > limit:
        raise UserError(f"{what} needs {length} tokens but the model's context is {limit}; use shorter prompts "
                        "or fewer steps/new tokens")


def check_characters(loaded, *prompt_sets) -> None:
    """Refuse a prompt too long for the context from its length in characters, before the tokenizer spends
    minutes and gigabytes on it (a 50 MB prompt took 75 s and 7.9 GB): no token stands for more characters than
    the longest entry of the vocabulary, so a prompt longer than context x that many characters cannot fit.
    The prompt's answer and compliance target count too: they are tokenised after it."""
    limit = context_length(loaded.model)
    if not limit:
        return
    sizes = [(len(p.text) + len(p.answer or "") + len(p.target or ""), p.id, s.name)
             for s in prompt_sets if s is not None for p in s.prompts]
    chars, prompt_id, set_name = max(sizes, default=(0, "", ""))
    if chars <= limit:  # a token is at least one character: certainly fits, and no need to read the vocabulary
        return
    most = limit * max(map(len, loaded.tokenizer.get_vocab()))
    if chars > most:
        raise UserError(f"prompt {prompt_id} of {set_name} has {chars:,} characters, more than the model's "
                        f"context of {limit:,} tokens can hold (at most {most:,} characters with this tokenizer); "
                        "use shorter prompts")
