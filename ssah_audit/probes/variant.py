"""What a probe variant is (components.PROBES): a name, a description, and `measure`, which reads SSAH's
reasoning direction its own way and returns a Measured: the variant's part of the document, each prompt's lean,
and the last-token states of the harmful and benign queries that the linear probes and refusal directions read.
The variants themselves: self.py (the default), lens.py, paper.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..models.chat import format_prompt
from .paths import hidden_at, tokens


@dataclass(frozen=True)
class Measured:
    doc: dict  # the variant's part of the document: variant, layers, steps, margin, safe_direction_score, ...
    per_prompt: np.ndarray  # each harmful prompt's lean (> 0: towards refusal)
    harmful_states: torch.Tensor  # [prompts, layers + 1, hidden], the query's last token
    benign_states: torch.Tensor


@dataclass(frozen=True)
class ProbeVariant:
    """`measure(loaded, items, harmful, benign, steps, batch_size, completions)`: `items` are the harmful prompts'
    paths (paths.build_items); `completions` the model's own greedy completions when already generated."""

    name: str
    description: str
    measure: Callable[..., Measured]


def prompt_states(loaded, prompts, batch_size: int = 16) -> torch.Tensor:
    """Last-token hidden states of chat-formatted prompts at every layer: [prompts, layers + 1, hidden]."""
    sequences = [tokens(loaded.tokenizer, format_prompt(loaded.tokenizer, p.text)) for p in prompts]
    return hidden_at(loaded.model, sequences, [[len(s) - 1] for s in sequences], batch_size=batch_size)[:, 0]


def query_states(loaded, harmful, benign, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
    """The harmful and benign queries' last-token states, for a variant whose passes do not hold them."""
    return prompt_states(loaded, harmful.prompts, batch_size), prompt_states(loaded, benign.prompts, batch_size)
