"""The default probe (`--variant self`): does the model's own continuation of a harmful query travel towards
refusing or towards complying, read at every layer and every step?

For a chat-formatted query Q, the model's own greedy continuation G, refusal openings R and compliance
continuations C, the margin at layer l and step k is

    margin(l, k) = d(h_l(Q+G[:k]), mean_v h_l(Q+C_v[:k])) - d(h_l(Q+G[:k]), mean_v h_l(Q+R_v[:k]))

with d the cosine distance between last-token states: > 0 where the model's own path sits nearer the refusal
path than the compliance path. A prompt's lean is the mean over layers and k >= 2 (as the paper's score leaves
k = 1 out); the score is the share of harmful prompts that lean to refusal. Why this and not the lens: on SmolLM2
the lens read the refusal openings as likelier than compliance after every harmful request, in the aligned model
and in both fine-tunes alike, while the model's own path tells them apart (BENCHMARKS.md, probe validity: pooled
per-prompt AUROC 0.96 against judged refusal on HarmBench, lens 0.79, paper 0.34).

Forced prefix, from the same compliance passes at the last layer: after Q + C[:k], is a refusal opening's first
token likelier than C[k]? Decision layer, from the state after Q at each layer read through the final norm and
LM head (the logit lens): log mean p_l(refusal openings' first tokens) - log mean p_l(compliance first tokens);
the own path cannot show it, as it carries the output's tokens into every layer. One pass encodes a query, and one
pass over its paths, attending to the query's cached keys and values, gives every path's every k at once (causal
attention; paths.query_path_states).
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.head import output_logits
from ..responses.generate import generate
from .lens import Leans, forced_readout, lens_states, summarise
from .paths import ProbeItem, build_items, cosine_distance, long_enough, query_path_states, query_states
from .variant import Measured, ProbeVariant


def own_continuations(loaded, prompts, steps: int, batch_size: int = 16,
                      completions: list[str] | None = None) -> list[list[int]]:
    """The model's own greedy continuation of each prompt, `steps` tokens long (a shorter one is repeated, an
    empty one is "."). `completions`: greedy completions already generated for these prompts (the audit's
    behaviour stage), whose first `steps` tokens are the same path."""
    if completions is None:
        completions = generate(loaded.model, loaded.tokenizer, [p.text for p in prompts], steps, batch_size,
                               description=f"{loaded.spec}: own continuations")
    return long_enough(loaded.tokenizer, [c or "." for c in completions], steps)


@torch.inference_mode()
def leans(model, items: list[ProbeItem], own: list[list[int]], steps: int, batch_size: int = 16) -> Leans:
    """Leans [prompts, layers + 1, steps] and last-layer holds [prompts, 1, steps] of ProbeItems, given each
    prompt's own continuation (each path at least `steps` tokens long)."""
    device = next(model.parameters()).device
    margins, holds, queries = [], [], []
    paths = [[own[index]] + item.refusals + item.compliances for index, item in enumerate(items)]
    for group, after_query, along in query_path_states(model, [item.query for item in items], paths, steps,
                                                       batch_size):
        for index, query_state, after in zip(group, after_query, along, strict=True):
            item, n_refusals = items[index], len(items[index].refusals)
            mine, refusing = after[0], after[1:1 + n_refusals].mean(dim=0)
            complying = after[1 + n_refusals:].mean(dim=0)
            margins.append((cosine_distance(mine, complying) - cosine_distance(mine, refusing)).T)
            # the last layer's state after Q + C[:k], k = 0..steps-1, predicts C[k]
            compliances = after[1 + n_refusals:, :steps - 1, -1]
            final = torch.cat([query_state[-1].expand(len(compliances), 1, -1), compliances], dim=1)
            # log p(refusal) - log p(C[k]) at one position: the logits of the tokens read, the normaliser cancelling
            read, column = _read([t for c in item.compliances for t in c[:steps]] + [r[0] for r in item.refusals],
                                 device)
            wanted = torch.tensor([[column[t] for t in c[:steps]] for c in item.compliances], device=device)
            marked = torch.tensor(sorted({column[r[0]] for r in item.refusals}), device=device)
            logits = output_logits(model, final.to(device, model.dtype), read)
            target, refusal = forced_readout(logits, wanted, marked)
            holds.append((refusal - target).double().mean(dim=0).cpu()[None])
            queries.append(query_state.clone())  # a view would keep the whole group's states alive
    queries = torch.stack(queries)
    return Leans(torch.stack(margins).numpy(), torch.stack(holds).numpy(), "self",
                 first_token_leans(model, queries, items, batch_size).numpy(), queries)


@torch.inference_mode()
def query_leans(model, items: list[ProbeItem], batch_size: int = 16) -> tuple[np.ndarray, torch.Tensor]:
    """(first-token leans [prompts, layers + 1], states after Q [prompts, layers + 1, hidden]) from one pass of each
    query alone: all the decision layer and the linear probes need of the benign prompts."""
    states = query_states(model, [item.query for item in items], batch_size)
    return first_token_leans(model, states, items, batch_size).numpy(), states


@torch.inference_mode()
def first_token_leans(model, after_query: torch.Tensor, items: list[ProbeItem],
                      batch_size: int = 16) -> torch.Tensor:
    """[prompts, layers + 1]: log mean p_l(R_v[0] | Q) - log mean p_l(C_v[0] | Q) from each prompt's states after Q
    ([prompts, layers + 1, hidden]), `batch_size` prompts' layers at a time through the LM head's rows for the
    first tokens read (the normaliser cancels in the difference: models.head.output_logits; equal to float rounding
    to the whole head's log-probabilities, a tenth of the time)."""
    device = next(model.parameters()).device
    leans = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        read, column = _read([path[0] for item in chunk for path in item.refusals + item.compliances], device)
        states = after_query[start:start + batch_size].to(device, model.dtype)
        readable = torch.stack(lens_states(model, list(states.unbind(1))), dim=1)
        logits = output_logits(model, readable, read)  # [prompts, layers + 1, tokens read]
        for layers, item in zip(logits, chunk, strict=True):
            leans.append((_log_mean(layers, item.refusals, column) - _log_mean(layers, item.compliances, column))
                         .cpu())
    return torch.stack(leans)


def _read(tokens: list[int], device) -> tuple[torch.Tensor, dict[int, int]]:
    """The distinct tokens a readout compares, as the LM head's rows to read, and each one's column in what it gives
    (models.head.output_logits)."""
    read = sorted(set(tokens))
    return torch.tensor(read, device=device), {token: place for place, token in enumerate(read)}


def _log_mean(logits: torch.Tensor, paths: list[list[int]], column: dict[int, int]) -> torch.Tensor:
    """[layers + 1]: log of the mean probability of the paths' first tokens, less the log-normaliser, from logits
    [layers + 1, tokens read] whose columns `column` names."""
    chosen = logits[:, [column[path[0]] for path in paths]].double()
    return torch.logsumexp(chosen, dim=-1) - torch.log(torch.tensor(float(len(paths)), dtype=torch.float64))


def _self(loaded, items, harmful, benign, steps, batch_size, completions) -> Measured:
    """Its passes hold every query's states too, for the linear probes and directions."""
    own = own_continuations(loaded, harmful.prompts, steps, batch_size, completions)
    harmful_leans = leans(loaded.model, items, own, steps, batch_size)
    benign_layers, benign_states = query_leans(
        loaded.model, build_items(loaded.tokenizer, benign.prompts, steps), batch_size)
    return Measured(summarise(harmful_leans, benign_layers), harmful_leans.per_prompt,
                    harmful_leans.query_states, benign_states)


SELF = ProbeVariant("self", "the model's own continuation against a refusal and a compliance path (the default)",
                    _self)
