"""The LM head, applied only where a measurement needs it: a full forward's [batch, length, vocabulary] logits are the
largest tensor a forward pass makes (16 x 150 x 49,152 floats is 470 MB for SmolLM2), and most of its positions are
thrown away."""

from __future__ import annotations

import torch

from .prefix import last_hidden_states

HEAD_CHUNK = 512  # positions through the LM head at once


def output_log_probs(model, states: torch.Tensor) -> torch.Tensor:
    """log p(next token) from final-normed states [..., hidden] through the LM head (float32; gemma2's soft cap)."""
    return torch.log_softmax(_capped(model, model.get_output_embeddings()(states).float()), dim=-1)


def output_logits(model, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The LM head's logits [..., len(ids)] for the tokens `ids` only (float32; gemma2's soft cap), from final-normed
    states [..., hidden]. Why: a difference of log-probabilities at one position (a lean, a forced readout) is the
    difference of the logits, the normaliser cancelling, and the head's rows for a few tokens are a sliver of its
    49,152 (SmolLM2): the self probe's readouts cost 12 s of its 65 at 1 thread through the whole head."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:  # an adapted or quantised head: through the whole of it
        return _capped(model, head(states).float())[..., ids]
    bias = head.bias[ids] if head.bias is not None else None
    return _capped(model, torch.nn.functional.linear(states, head.weight[ids], bias).float())


def _capped(model, logits: torch.Tensor) -> torch.Tensor:
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def final_states(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states [batch, length, hidden] (final norm applied) of a right-padded batch, without
    the LM head; the batch's common prefix (the chat template's opening) encoded once (models.prefix)."""
    return last_hidden_states(model, ids, mask)


def token_log_probs(model, states: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """log p(wanted[i] | the state states[i]) for states [n, hidden], the head run HEAD_CHUNK positions at a time."""
    return torch.cat([output_log_probs(model, states[start:start + HEAD_CHUNK])
                      .gather(-1, wanted[start:start + HEAD_CHUNK, None])[:, 0]
                      for start in range(0, len(states), HEAD_CHUNK)]) if len(states) else states.new_zeros(0)
