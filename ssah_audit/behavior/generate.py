"""Batched greedy generation: chat-formatted, left-padded, KV-cached, stopping when every sequence ends.

Prompts are sorted by length before batching, so a batch pads little, and the outputs are returned in
the caller's order. Greedy decoding makes the result deterministic.
"""

from __future__ import annotations

import torch

from ..batching import check_context, pad
from ..models.chat import format_prompt
from ..progress import progress_bar

DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_BATCH_SIZE = 16


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: the generation config's eos ids (chat models list several) and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids + [tokenizer.eos_token_id] if i is not None]
    return sorted(set(ids))


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             batch_size: int = DEFAULT_BATCH_SIZE, system: str | None = None, description: str = "generating",
             formatted: bool = False) -> list[str]:
    """Greedy completions of `prompts` (chat-formatted unless `formatted`), in the order given."""
    texts = prompts if formatted else [format_prompt(tokenizer, p, system) for p in prompts]
    encoded = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    if encoded:
        check_context(model, max(map(len, encoded)) + max_new_tokens, "the longest prompt plus the new tokens")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    completions: list[str] = [""] * len(texts)
    with progress_bar(description, len(texts)) as advance:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            # Left padding: every prompt ends where generation starts.
            ids, mask, _ = pad([encoded[i] for i in chunk], pad_id, side="left")
            width = ids.shape[1]
            output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                    max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad_id,
                                    temperature=None, top_p=None, top_k=None)
            for row, i in enumerate(chunk):
                completions[i] = tokenizer.decode(output[row, width:], skip_special_tokens=True).strip()
            advance(len(chunk))
    return completions
