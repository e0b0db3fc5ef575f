"""The LM head, applied only where a measurement needs it: a full forward's [batch, length, vocabulary] logits are the
largest tensor a forward pass makes (16 x 150 x 49,152 floats is 470 MB for SmolLM2), and most of its positions are
thrown away."""

from __future__ import annotations

import torch

from .prefix import last_hidden_states

HEAD_CHUNK = 512  # positions through the LM head at once


def output_log_probs(model, states: torch.Tensor) -> torch.Tensor:
    """log p(next token) from final-normed states [..., hidden] through the LM head (float32; gemma2's soft cap)."""
    logits = model.get_output_embeddings()(states).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1)


def final_states(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states [batch, length, hidden] (final norm applied) of a right-padded batch, without
    the LM head; the batch's common prefix (the chat template's opening) encoded once (models.prefix)."""
    return last_hidden_states(model, ids, mask)


def token_log_probs(model, states: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """log p(wanted[i] | the state states[i]) for states [n, hidden], the head run HEAD_CHUNK positions at a time."""
    return torch.cat([output_log_probs(model, states[start:start + HEAD_CHUNK])
                      .gather(-1, wanted[start:start + HEAD_CHUNK, None])[:, 0]
                      for start in range(0, len(states), HEAD_CHUNK)]) if len(states) else states.new_zeros(0)
