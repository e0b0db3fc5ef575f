"""What every probe variant reads: a chat-formatted query with its refusal and compliance continuation paths, and
the hidden states at chosen positions of such sequences, one batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .. import config as defaults
from ..batching import check_context, groups_of, pad, positions_from_mask
from ..data.sets import compliance_openings, refusal_openings
from ..errors import UserError
from ..models.chat import format_prompt
from ..models.prefix import cache_keyword, decoder, opening_batch, returned_cache

DEFAULT_STEPS = defaults.STEPS
REFUSAL_VARIANTS = 4  # refusal openings averaged per prompt
# Path rows per pass of query_path_states, per `batch_size`: each row holds every layer's states along its path and
# the query's keys and values, about 6 MB for SmolLM2-135M. Measured on 100 prompts (9 paths each): 144 rows a pass
# took 14.2 s and 1.3 GB over the loaded model, 64 rows 15.0 s and 0.56 GB, 36 rows 15.9 s and 0.37 GB.
PATH_ROWS_PER_BATCH = 4
COMPLIANCE_VARIANTS = 4  # compliance openings averaged when the prompt set has no target of its own


@dataclass(frozen=True)
class ProbeItem:
    """One query with its continuations, already tokenised (continuations at least `steps` tokens long)."""

    query: list[int]
    refusals: list[list[int]]
    compliances: list[list[int]]


def tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def long_enough(tokenizer, texts, steps: int) -> list[list[int]]:
    """Continuation token ids, each extended with its own repetition if shorter than `steps` tokens."""
    out = []
    for text in texts:
        ids, again = tokens(tokenizer, text), tokens(tokenizer, " " + text)
        if not again:
            raise UserError(f"the tokenizer gives no tokens for the continuation {text!r}")
        repeats = max(0, -(-(steps - len(ids)) // len(again)))  # as many as needed, computed, not grown
        out.append((ids + again * repeats)[:steps])
    return out


def build_items(tokenizer, prompts, steps: int) -> list[ProbeItem]:
    """ProbeItems for prompts (data.sets.Prompt): R from the reserved refusal openings, C from the prompt's
    own compliance target when it has one (AdvBench "Sure, here is ..."), else the compliance openings."""
    refusals = refusal_openings()[:REFUSAL_VARIANTS]
    items = []
    for prompt in prompts:
        compliances = [prompt.target] if prompt.target else compliance_openings()[:COMPLIANCE_VARIANTS]
        items.append(ProbeItem(tokens(tokenizer, format_prompt(tokenizer, prompt.text)),
                               long_enough(tokenizer, refusals, steps), long_enough(tokenizer, compliances, steps)))
    return items


@torch.inference_mode()
def hidden_batches(model, sequences: list[list[int]], positions: list[list[int]], padding_side: str = "right",
                   batch_size: int = 16) -> Iterator[torch.Tensor]:
    """Hidden states (all layers, embedding output first) at the given positions, one batch at a time, float64.

    Yields [batch, n_positions, n_layers + 1, hidden], so a caller can reduce each batch before the next: all
    sequences' states at once take 1.6 MB per sequence for SmolLM2-135M and 11 MB for an 8B model. Padding is exact
    either way: right padding keeps positions 0..n-1; left padding passes explicit position_ids so every real token
    keeps its position.
    """
    device = next(model.parameters()).device
    check_context(model, max(len(seq) for seq in sequences), "the longest probe sequence")
    for start in range(0, len(sequences), batch_size):
        chunk, wanted = sequences[start:start + batch_size], positions[start:start + batch_size]
        ids, mask, offsets = pad(chunk, side=padding_side)
        kwargs = {}
        if padding_side == "left":
            kwargs["position_ids"] = positions_from_mask(mask).to(device)
        # the decoder without its LM head: a [batch, length, vocabulary] logits tensor would be the largest thing here
        states = decoder(model)(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                                  **kwargs).hidden_states
        # gathered before the float64 copy: every position of every layer would be [batch, layers + 1, width, hidden]
        yield torch.stack([torch.stack([layer[row, [offset + p for p in where]] for layer in states], dim=1).double()
                           .cpu() for row, (offset, where) in enumerate(zip(offsets, wanted, strict=True))])


@torch.inference_mode()
def query_path_states(model, queries: list[list[int]], paths: list[list[list[int]]], steps: int,
                      batch_size: int = 16) -> Iterator[tuple[list[int], torch.Tensor, list[torch.Tensor]]]:
    """Hidden states (all layers, embedding output first, float64) after each query and along each of its paths,
    a group of queries at a time: yields (the queries' indices, [queries, layers + 1, hidden] after each query,
    one [its paths, steps, layers + 1, hidden] per query, after Q + path[:k] for k = 1..steps). A group holds at
    most PATH_ROWS_PER_BATCH x `batch_size` paths (at least one query).

    Why: a query has about nine paths of ten tokens and is four times longer than one, so encoding it once and
    letting every path attend to its keys and values (the cache, repeated per path) does a quarter of the work of
    encoding Q + path nine times, with the same states (causal attention; tests/test_probing.py checks them
    against whole sequences). Queries are left-padded with explicit position ids, so every real token keeps its
    position, after their common opening, encoded once; every path is cut to `steps` tokens (all are at least
    that long), so paths need no padding.
    """
    device = next(model.parameters()).device
    check_context(model, max(len(query) for query in queries) + steps, "the longest probe sequence")
    for group in groups_of([len(p) for p in paths], PATH_ROWS_PER_BATCH * batch_size):
        encoded, cache, mask, positions = _encode_queries(model, [queries[i] for i in group])
        after_query = torch.stack([layer[:, -1] for layer in encoded.hidden_states], dim=1).double().cpu()
        counts = [len(paths[i]) for i in group]
        rows = torch.repeat_interleave(torch.arange(len(group)), torch.tensor(counts))
        cache.batch_select_indices(rows.to(device))
        tokens = torch.tensor([path[:steps] for i in group for path in paths[i]], dtype=torch.long)
        along = decoder(model)(input_ids=tokens.to(device), **{cache_keyword(model): cache},
                                 attention_mask=torch.cat([mask[rows], torch.ones_like(tokens)], dim=1).to(device),
                                 position_ids=(positions[rows, -1:] + 1 + torch.arange(steps)).to(device),
                                 output_hidden_states=True).hidden_states
        states = torch.stack(along, dim=2).double().cpu()  # [paths, steps, layers + 1, hidden]
        del encoded, cache, along
        yield group, after_query, list(states.split(counts))


@torch.inference_mode()
def query_states(model, queries: list[list[int]], batch_size: int = 16) -> torch.Tensor:
    """Hidden states (all layers, embedding output first, float64) after each query: [queries, layers + 1, hidden],
    `batch_size` queries a pass, their common opening encoded once (see _encode_queries)."""
    check_context(model, max(len(query) for query in queries), "the longest probe sequence")
    found = []
    for start in range(0, len(queries), batch_size):
        encoded = _encode_queries(model, queries[start:start + batch_size])[0]
        found.append(torch.stack([layer[:, -1] for layer in encoded.hidden_states], dim=1).double().cpu())
        del encoded
    return torch.cat(found)


def _encode_queries(model, queries: list[list[int]]):
    """(the decoder's output with hidden states after each query's own tokens, its cache, attention mask and position
    ids) of left-padded queries, their common opening (the chat template's system prompt) encoded once
    (models.prefix.opening_batch)."""
    ids, mask, cache, shared = opening_batch(model, queries, kinds=[0] * len(queries))
    positions = positions_from_mask(mask)
    encoded = decoder(model)(input_ids=ids[:, shared:], attention_mask=mask, position_ids=positions[:, shared:],
                             use_cache=True, output_hidden_states=True, **cache)
    return encoded, returned_cache(encoded), mask.cpu(), positions.cpu()


def hidden_at(model, sequences: list[list[int]], positions: list[list[int]], padding_side: str = "right",
              batch_size: int = 16) -> torch.Tensor:
    """All of `hidden_batches` at once: [n_sequences, n_positions, n_layers + 1, hidden]."""
    return torch.cat(list(hidden_batches(model, sequences, positions, padding_side, batch_size)))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)
