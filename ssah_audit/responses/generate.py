"""Batched greedy generation: chat-formatted, left-padded, KV-cached; a row leaves its batch when it ends.

Prompts are sorted by length before batching, so a batch pads little, and the outputs are returned in
the caller's order. Greedy decoding makes the result deterministic.
"""

from __future__ import annotations

import inspect
import math

import torch

from ..batching import check_context, positions_from_mask
from ..models.chat import format_prompt
from ..models.prefix import cache_keyword, opening_batch, returned_cache
from ..progress import progress_bar

DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_BATCH_SIZE = 16


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: the generation config's eos ids (chat models list several) and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids + [tokenizer.eos_token_id] if i is not None]
    return sorted(set(ids))


def padding_id(tokenizer, stops: list[int]) -> int:
    """The id that fills left padding and rows that ended. A base LM may have no pad and no eos token: its
    padding is masked and no row ends early, so any valid id does, and 0 always is one."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return stops[0] if stops else 0


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             batch_size: int = DEFAULT_BATCH_SIZE, system: str | None = None, description: str = "generating",
             formatted: bool = False, with_finished: bool = False, sample_seed: int | None = None,
             greedy_tokens: int = 0, before_batch=None, first_step=None,
             variants: list[int] | None = None) -> list[str] | tuple[list[str], list[bool]]:
    """Greedy completions of `prompts` (chat-formatted unless `formatted`), in the order given. With
    `with_finished`, also whether each one ended by itself (False: cut at `max_new_tokens`).

    With `sample_seed`: the first `greedy_tokens` greedy, the rest seeded samples from the model's full
    distribution (temperature 1, no top-k/top-p). Training on such answers keeps the model's opening (where
    it chooses to fulfil or refuse) as sharp as greedy answers would, and the rest of its distribution as it
    was, where greedy answers sharpen it. `before_batch`, when given, is called with each batch's prompt indices
    before it runs (units.ablate.row_ablation uses it to set each row's ablation). `variants`, when given, says which
    prompts share an opening and a model (a jailbreak template; an ablation condition): a batch encodes each
    variant's common opening once (without it every prompt is one variant, unless `before_batch` changes the model
    row by row: then nothing is shared). `first_step`, when given, is
    called with each batch's prompt indices and the log-probabilities of its first generated token
    [rows, vocabulary]: the prompt's next-token distribution, which a refusal score needs, without another pass."""
    texts = prompts if formatted else [format_prompt(tokenizer, p, system) for p in prompts]
    encoded = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    if encoded:
        check_context(model, max(map(len, encoded)) + max_new_tokens, "the longest prompt plus the new tokens")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    stops = stop_token_ids(model, tokenizer)
    pad_id = padding_id(tokenizer, stops)
    sampling = sample_seed is not None
    if sampling:
        torch.manual_seed(sample_seed)
    first = min(greedy_tokens, max_new_tokens) if sampling else max_new_tokens
    completions: list[str] = [""] * len(texts)
    finished: list[bool] = [True] * len(texts)
    with progress_bar(description, len(texts)) as advance:
        for chunk in even_batches(order, batch_size):
            # rows of different variants (ablations, templates) have different openings or states: one encoding each
            kinds = ([variants[i] for i in chunk] if variants is not None else
                     [0] * len(chunk) if before_batch is None else None)
            select = None if before_batch is None else lambda rows, chunk=chunk: before_batch([chunk[r] for r in rows])
            ids, mask, cache, opened = opening_batch(model, [encoded[i] for i in chunk], pad_id,
                                                kinds if SHARE_PREFIX else None, select)
            if before_batch is not None:
                before_batch(chunk)
            width = ids.shape[1]
            output = ids
            watch = _FirstStep(first_step, chunk) if first_step is not None else None
            if first and not sampling and COMPACT:
                output = _greedy(model, ids, mask, cache, opened, first, stops, pad_id, watch, select)
            elif first:
                output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=first, eos_token_id=stops,
                                        pad_token_id=pad_id, do_sample=False, temperature=None, top_p=None, top_k=None,
                                        logits_processor=_processors(watch), **cache)
            if sampling and output.shape[1] - width < max_new_tokens:
                grown = output.shape[1] - width
                mask = torch.cat([mask, mask.new_ones(len(chunk), grown)], 1)
                output = model.generate(input_ids=output, attention_mask=mask, max_new_tokens=max_new_tokens - grown,
                                        eos_token_id=stops, pad_token_id=pad_id, do_sample=True, temperature=1.0,
                                        top_p=1.0, top_k=0, repetition_penalty=1.0,
                                        logits_processor=_processors(None if first else watch))
            for row, i in enumerate(chunk):
                new = output[row, width:].tolist()
                end = next((k for k, token in enumerate(new) if token in stops), None)
                finished[i] = end is not None
                completions[i] = tokenizer.decode(new[:end], skip_special_tokens=True).strip()
            advance(len(chunk))
    return (completions, finished) if with_finished else completions


SHARE_PREFIX = True  # off only to compare: tests/test_behavior.py checks the completions are the same without it


COMPACT = True  # off only to compare: greedy rows leave the batch when they end (tests/test_behavior.py)


def _greedy(model, ids: torch.Tensor, mask: torch.Tensor, cache: dict, opened: int, max_new_tokens: int,
            stops: list[int], pad_id: int, watch, select) -> torch.Tensor:
    """`model.generate`'s greedy output (prompt columns, then new tokens, `pad_id` after a row's stop) for a
    left-padded batch whose first `opened` columns `cache` already holds, where a row that has ended leaves the
    batch: its cached keys and values are dropped, so later steps compute only the rows still going. Why: refusals
    end in 10-20 tokens and a 64-token batch otherwise carries them to the end (a refusing model's completions
    average 20 tokens). `select(rows)` re-selects the rows' ablations (units.ablate.row_ablation) as they leave."""
    keyword = cache_keyword(model)
    past = cache.get(keyword)
    extra = {"logits_to_keep": 1} if _keeps_logits(model) else {}
    positions = positions_from_mask(mask)
    inputs, position, live = ids[:, opened:], positions[:, opened:], torch.arange(len(ids), device=ids.device)
    new = torch.full((len(ids), max_new_tokens), pad_id, dtype=ids.dtype, device=ids.device)
    stop = torch.tensor(stops, dtype=ids.dtype, device=ids.device)
    for step in range(max_new_tokens):
        output = model(input_ids=inputs, attention_mask=mask, position_ids=position, use_cache=True,
                       **({keyword: past} if past is not None else {}), **extra)
        logits = output.logits[:, -1]
        if watch is not None and step == 0:
            watch(None, logits)
        token = logits.argmax(-1)
        new[live, step] = token
        going = ~torch.isin(token, stop)
        if step == max_new_tokens - 1 or not bool(going.any()):
            break
        past = returned_cache(output)
        if not bool(going.all()):
            kept = going.nonzero().squeeze(1)
            past.batch_select_indices(kept)
            live, token, mask, position = live[kept], token[kept], mask[kept], position[kept]
            if select is not None:
                select(live.tolist())
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        inputs, position = token[:, None], position[:, -1:] + 1
    return torch.cat([ids, new], dim=1)


def _keeps_logits(model) -> bool:
    """Whether the causal LM's forward can compute the head on the last position only (most transformers 5.x
    families can): a generation step needs no other."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def even_batches(items: list, batch_size: int) -> list[list]:
    """`items` in round(n / batch_size) batches of equal size (within one), never more than 1.25 x batch_size.

    Why: a decoding step costs nearly as much for 4 rows as for 48 (it reads every weight), so 100 prompts at 48
    rows as 48 + 48 + 4 pay a third batch of steps for 4 prompts; as 50 + 50 they do not."""
    most = max(1, int(1.25 * batch_size))
    count = max(round(len(items) / batch_size), math.ceil(len(items) / most), 1 if items else 0)
    size, extra = divmod(len(items), count) if count else (0, 0)
    batches, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        batches.append(items[start:end])
        start = end
    return batches


class _FirstStep:
    """A logits processor that hands the first step's log-probabilities to a callback and changes nothing."""

    def __init__(self, callback, indices: list[int]):
        self.callback, self.indices, self.seen = callback, indices, False

    def __call__(self, input_ids, scores):
        if not self.seen:
            self.seen = True
            self.callback(self.indices, torch.log_softmax(scores.float(), dim=-1))
        return scores


def _processors(watch: _FirstStep | None):
    from transformers import LogitsProcessorList

    return LogitsProcessorList([watch] if watch is not None else [])


def first_tokens(tokenizer, completion: str, tokens: int) -> str:
    """The completion cut to its first `tokens` tokens: what a greedy generation of that length would have said
    (greedy decoding is a prefix of itself), up to re-tokenisation at the cut."""
    ids = tokenizer(completion, add_special_tokens=False).input_ids
    return completion if len(ids) <= tokens else tokenizer.decode(ids[:tokens], skip_special_tokens=True).strip()
