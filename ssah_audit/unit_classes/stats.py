"""Streaming statistics of every unit's activation: the input channels of each write-back projection.

A forward pre-hook on each write-back module sees its input x (batch, tokens, units). It keeps, per unit,
the count, mean, M2 (sum of squared deviations) and sum of squares over the selected tokens, in float64,
merged batch by batch with Chan et al.'s parallel update. Selected: every real token, or with
response_only the positions that predict the response (from the last prompt token on). Memory is O(units)
whatever the number of tokens; nothing is stored per token.

`saliency` is the gradient-based companion used by the `snip` score: Σ over response tokens of x_j · ∂L/∂x_j
with L the response-token NLL.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..batching import by_length, check_context, pad
from ..models.chat import encode_exchange
from ..models.prefix import MIN_SHARED, cache_keyword, common_prefix, decoder, returned_cache
from ..progress import progress_bar


@dataclass
class RunningStats:
    """Per-unit count, mean, M2 and sum of squares of one module's input, float64."""

    count: int
    mean: torch.Tensor
    m2: torch.Tensor
    sumsq: torch.Tensor

    @classmethod
    def empty(cls, units: int, device="cpu") -> RunningStats:
        zeros = torch.zeros(units, dtype=torch.float64, device=device)
        return cls(0, zeros.clone(), zeros.clone(), zeros.clone())

    def add(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Merge a block of rows (tokens) x: [n, units], row i counted weights[i] times (whole numbers; a batch's
        shared opening, encoded once, stands for every row that has it)."""
        if x.shape[0] == 0:
            return
        x = x.double()
        w = torch.ones(x.shape[0], dtype=torch.float64, device=x.device) if weights is None else weights.double()
        n = int(w.sum())
        if n == 0:
            return
        batch_mean = (w[:, None] * x).sum(dim=0) / n
        centred = x - batch_mean
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += (w[:, None] * centred * centred).sum(dim=0) + delta * delta * (self.count * n / total)
        self.sumsq += (w[:, None] * x * x).sum(dim=0)
        self.count = total

    @property
    def variance(self) -> torch.Tensor:
        """Sample variance (N - 1), the paper's Eq. 1."""
        return self.m2 / max(self.count - 1, 1)

    @property
    def l2(self) -> torch.Tensor:
        """‖x_j‖₂ over all selected tokens (structured Wanda)."""
        return self.sumsq.sqrt()


def encode(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Chat-formatted (prompt, response) pairs as (ids, number of prompt tokens)."""
    return [encode_exchange(tokenizer, prompt, response) for prompt, response in pairs]


def _batches(model, exchanges: list[tuple[list[int], int]], batch_size: int, response_only: bool):
    """Length-sorted right-padded batches: (ids, attention mask, token selection)."""
    check_context(model, max(len(ids) for ids, _ in exchanges), "the longest calibration example")
    for batch in by_length([ids for ids, _ in exchanges], batch_size):
        chunk = [exchanges[i] for i in batch]
        ids, mask, _ = pad([seq for seq, _ in chunk])
        select = mask.bool()
        if response_only:
            for row, (_, n_prompt) in enumerate(chunk):
                select[row, :n_prompt - 1] = False  # from the last prompt token: it predicts the first response token
        yield ids, mask, select, chunk


@contextmanager
def _pre_hooks(unit_map, make_hook):
    handles = [wb.module.register_forward_pre_hook(make_hook(wb.name)) for wb in unit_map.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def collect(model, unit_map, exchanges, batch_size: int = 8, response_only: bool = False,
            description: str = "unit statistics") -> dict[str, RunningStats]:
    """RunningStats for every write-back module over `exchanges` (see `encode`)."""
    device = next(model.parameters()).device
    stats = {wb.name: RunningStats.empty(wb.units, device) for wb in unit_map.modules()}
    selected = {}

    def make_hook(name):
        def hook(module, args):
            if selected["weights"] is None:
                stats[name].add(args[0][selected["tokens"]])
            else:  # the shared opening, one row: each position counted for every row that selects it
                stats[name].add(args[0][0], selected["weights"])
        return hook

    body = decoder(model)  # the decoder without the LM head: its logits are not needed here
    with _pre_hooks(unit_map, make_hook), progress_bar(description, len(exchanges)) as advance:
        for ids, mask, select, chunk in _batches(model, exchanges, batch_size, response_only):
            ids, mask, select = ids.to(device), mask.to(device), select.to(device)
            # the chat template's opening (SmolLM2's system prompt: a third of a calibration pair) is the same in
            # every row: encoded once and counted once per row, its statistics are the same to float rounding
            shared = common_prefix(ids, mask) if len(ids) > 1 else 0
            kwargs = {}
            if shared >= MIN_SHARED:
                selected["weights"] = select[:, :shared].sum(dim=0)
                opening = body(input_ids=ids[:1, :shared], attention_mask=mask[:1, :shared], use_cache=True)
                cache = returned_cache(opening)
                cache.batch_repeat_interleave(len(ids))
                kwargs = {cache_keyword(model): cache,
                          "position_ids": torch.arange(shared, ids.shape[1], device=device).expand(len(ids), -1)}
                ids, select = ids[:, shared:], select[:, shared:]
            selected["weights"], selected["tokens"] = None, select
            body(input_ids=ids, attention_mask=mask, **kwargs)
            advance(len(chunk))
    return stats


@contextmanager
def _frozen(model):
    """No parameter needs a gradient for the duration (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def saliency(model, unit_map, exchanges, batch_size: int = 8,
             description: str = "unit saliency") -> dict[str, torch.Tensor]:
    """Per unit, Σ x_j · ∂L/∂x_j over response tokens (float64), L = summed response-token NLL. Gradients
    flow from the input embeddings, so no parameter gradient is ever stored."""
    device = next(model.parameters()).device
    totals = {wb.name: torch.zeros(wb.units, dtype=torch.float64, device=device) for wb in unit_map.modules()}
    selected = {}

    def make_hook(name):
        def hook(module, args):
            x = args[0]
            if x.requires_grad:
                def accumulate(grad):
                    totals[name].add_((x.detach() * grad)[selected["tokens"]].double().sum(dim=0))
                x.register_hook(accumulate)
        return hook

    embeddings = model.get_input_embeddings()
    with _pre_hooks(unit_map, make_hook), _frozen(model), progress_bar(description, len(exchanges)) as advance, \
            torch.enable_grad():
        for ids, mask, select, chunk in _batches(model, exchanges, batch_size, response_only=True):
            selected["tokens"] = select.to(device)
            inputs = embeddings(ids.to(device)).detach().requires_grad_(True)
            logits = model(inputs_embeds=inputs, attention_mask=mask.to(device)).logits.float()
            labels = torch.where(select, ids, torch.full_like(ids, -100))[:, 1:].to(device)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100,
                                                     reduction="sum")
            loss.backward()
            advance(len(chunk))
    return totals
