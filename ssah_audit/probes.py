"""The probe variants, registered in components.PROBES: each reads SSAH's reasoning direction its own way and
returns what probing.measure turns into the document (the variant's fields, each prompt's lean, the last-token
states of the harmful and benign queries that the linear probes and refusal directions read)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import path_preference, self_continuation
from .probe_paths import build_items
from .probing import distances, prompt_states, summarise


@dataclass(frozen=True)
class Measured:
    doc: dict  # the variant's part of the document: variant, layers, steps, margin, safe_direction_score, ...
    per_prompt: np.ndarray  # each harmful prompt's lean (> 0: towards refusal)
    harmful_states: torch.Tensor  # [prompts, layers + 1, hidden], the query's last token
    benign_states: torch.Tensor


@dataclass(frozen=True)
class ProbeVariant:
    """`measure(loaded, items, harmful, benign, steps, batch_size, completions)`: `items` are the harmful prompts'
    paths (probe_paths.build_items); `completions` the model's own greedy completions when already generated."""

    name: str
    description: str
    measure: Callable[..., Measured]


def _self(loaded, items, harmful, benign, steps, batch_size, completions) -> Measured:
    """Its passes hold every query's states too, for the linear probes and directions."""
    own = self_continuation.own_continuations(loaded, harmful.prompts, steps, batch_size, completions)
    harmful_leans = self_continuation.leans(loaded.model, items, own, steps, batch_size)
    benign_layers, benign_states = self_continuation.query_leans(
        loaded.model, build_items(loaded.tokenizer, benign.prompts, steps), batch_size)
    return Measured(path_preference.summarise(harmful_leans, benign_layers), harmful_leans.per_prompt,
                    harmful_leans.query_states, benign_states)


def _lens(loaded, items, harmful, benign, steps, batch_size, completions) -> Measured:
    harmful_leans = path_preference.leans(loaded.model, items, steps, batch_size)
    benign_items = build_items(loaded.tokenizer, benign.prompts, steps)
    benign_layers = path_preference.leans(loaded.model, benign_items, steps, batch_size).per_layer
    return Measured(path_preference.summarise(harmful_leans, benign_layers), harmful_leans.per_prompt,
                    *_query_states(loaded, harmful, benign, batch_size))


def _query_states(loaded, harmful, benign, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
    """The harmful and benign queries' last-token states, for a variant whose passes do not hold them."""
    return prompt_states(loaded, harmful.prompts, batch_size), prompt_states(loaded, benign.prompts, batch_size)


def _paper(loaded, items, harmful, benign, steps, batch_size, completions) -> Measured:
    d_r, d_c = distances(loaded.model, items, steps, batch_size=batch_size)
    return Measured({"variant": "paper", **summarise(d_r, d_c).as_dict()}, (d_c - d_r)[:, :, 1:].mean(axis=(1, 2)),
                    *_query_states(loaded, harmful, benign, batch_size))


SELF = ProbeVariant("self", "the model's own continuation against a refusal and a compliance path (the default)",
                    _self)
LENS = ProbeVariant("lens", "the preference between the two paths read through the LM head", _lens)
PAPER = ProbeVariant("paper", "the SSAH paper's cosine margin (kept for reproduction: it does not separate models)",
                     _paper)
