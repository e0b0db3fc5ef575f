"""Encoding a batch's common token prefix once: chat-formatted sequences of one model all open with the same
template tokens (SmolLM2's system prompt is 23 of a 42-token harmful prompt), so a batch can run that prefix as one
row and let every sequence attend to its cached keys and values, with the same states (causal attention)."""

from __future__ import annotations

import inspect

import torch

from ..batching import pad, positions_from_mask

MIN_SHARED = 8  # shorter common prefixes are not worth a second pass


def decoder(model):
    """The decoder stack without the LM head, also through a PEFT wrapper (a LoRA being trained or measured before
    it is merged), whose own `base_model` is the LoRA wrapper around the whole causal LM."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base_model


def cache_keyword(model) -> str:
    """transformers 5.x calls the forward's key/value cache `cache`; earlier versions `past_key_values`."""
    return "cache" if "cache" in inspect.signature(decoder(model).forward).parameters else "past_key_values"


def returned_cache(output):
    """The key/value cache a forward pass returned (`cache` in transformers 5.x, `past_key_values` before)."""
    return output.get("cache", output.get("past_key_values"))


def common_prefix(ids: torch.Tensor, mask: torch.Tensor) -> int:
    """How many leading positions every row of a right-padded batch shares (real tokens, same ids), leaving every
    row at least one position of its own."""
    same = (ids == ids[:1]).all(dim=0) & mask.bool().all(dim=0)
    shared = int(same.long().cumprod(0).sum())
    return min(shared, int(mask.sum(dim=1).min()) - 1)


def shared_length(rows: list[list[int]]) -> int:
    """How many leading tokens every row shares, leaving each row at least one token of its own (common_prefix's
    form for unpadded lists of ids)."""
    shortest = min(map(len, rows))
    length = next((i for i in range(shortest) if any(row[i] != rows[0][i] for row in rows)), shortest)
    return min(length, shortest - 1)


def opening_batch(model, rows: list[list[int]], pad_id: int = 0, kinds: list | None = None,
                  select=None) -> tuple[torch.Tensor, torch.Tensor, dict, int]:
    """(ids, attention mask, the cache keyword, the opening's columns) of a left-padded batch whose rows' openings are
    encoded once (every prompt ends where generation or a path starts). Chat-formatted prompts of one model open
    with the same template tokens (SmolLM2's system prompt, a jailbreak template's preamble): rows of one kind
    (`kinds`; None: no two rows share anything) share their common opening, encoded once, and continue from its
    cached keys and values, their own tokens left-padded after it; the openings of several kinds are encoded
    together, left-padded. Position ids follow the attention mask, so every real token keeps the position it has
    without the sharing (tests/test_behavior.py, tests/test_probing.py). `select`, when given, is called with the
    batch rows whose model each opening is encoded with (row ablation: a kind is an ablation condition)."""
    device = next(model.parameters()).device
    distinct = list(dict.fromkeys(kinds or []))
    members = {kind: [r for r, k in enumerate(kinds) if k == kind] for kind in distinct}
    shared = {kind: shared_length([rows[r] for r in members[kind]]) for kind in distinct}
    if len(distinct) == len(rows) or min(shared.values(), default=0) < 1 or max(shared.values()) < MIN_SHARED:
        ids, mask, _ = pad(rows, pad_id, side="left")
        return ids.to(device), mask.to(device), {}, 0
    if select is not None:
        select([members[kind][0] for kind in distinct])
    opening, opening_mask, _ = pad([rows[members[kind][0]][:shared[kind]] for kind in distinct], pad_id, side="left")
    opening, opening_mask = opening.to(device), opening_mask.to(device)
    padded = {} if bool(opening_mask.all()) else {"attention_mask": opening_mask,  # one opening: no padding
                                                  "position_ids": positions_from_mask(opening_mask)}
    cache = returned_cache(decoder(model)(input_ids=opening, use_cache=True, **padded))
    which = torch.tensor([distinct.index(kind) for kind in kinds], device=device)
    cache.batch_select_indices(which)
    ids, mask, _ = pad([row[shared[kind]:] for row, kind in zip(rows, kinds, strict=True)], pad_id, side="left")
    ids = torch.cat([opening[which], ids.to(device)], dim=1)
    return (ids, torch.cat([opening_mask[which], mask.to(device)], dim=1), {cache_keyword(model): cache},
            opening.shape[1])


def last_hidden_states(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states [batch, length, hidden] of a right-padded batch, its common prefix encoded
    once when it is at least MIN_SHARED tokens long."""
    shared = common_prefix(ids, mask) if len(ids) > 1 else 0
    if shared < MIN_SHARED:
        return decoder(model)(input_ids=ids, attention_mask=mask).last_hidden_state
    encoded = decoder(model)(input_ids=ids[:1, :shared], attention_mask=mask[:1, :shared], use_cache=True)
    cache = returned_cache(encoded)
    cache.batch_repeat_interleave(len(ids))
    positions = torch.arange(shared, ids.shape[1], device=ids.device).expand(len(ids), -1)
    rest = decoder(model)(input_ids=ids[:, shared:], attention_mask=mask, position_ids=positions,
                            **{cache_keyword(model): cache}).last_hidden_state
    return torch.cat([encoded.last_hidden_state.expand(len(ids), -1, -1), rest], dim=1)
