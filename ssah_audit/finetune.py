"""A small supervised fine-tuning loop: chat-formatted (prompt, response) pairs, loss on response tokens,
AdamW with linear warm-up and cosine decay, length-bucketed batches, gradient accumulation, optional bf16
autocast on CPUs with bf16 hardware, and optional gradient masks (train only chosen units).

Used by `ssah-audit finetune`, by the zoo builds and by the organisms. Seeded: the same data, settings and
machine give the same weights.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .batching import check_context, pad
from .errors import UserError
from .models.chat import encode_exchange
from .progress import progress_bar
from .responses.generate import padding_id


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 1
    lr: float = 2e-5
    batch_size: int = 8
    grad_accum: int = 1  # batches per optimiser step
    max_steps: int | None = None  # optimiser steps; stops early when reached
    weight_decay: float = 0.0
    warmup: float = 0.05  # share of the steps spent warming up
    response_only: bool = True
    max_response_tokens: int | None = None
    max_length: int | None = None  # examples longer than this are cut (prompt kept whole)
    precision: str = "fp32"  # fp32, bf16 (autocast) or auto (bf16 on GPUs and on CPUs with AMX)
    seed: int = 0


@dataclass(frozen=True)
class AuxiliaryLoss:
    """A loss on the hidden states beside the language-modelling one, with parameters of its own (trained, then
    dropped): `loss(hidden_states, example_indices)` gets every layer's states of a right-padded batch and the
    indices of its examples in the training data. The organisms' base learns a harm read-out with one."""

    parameters: tuple[torch.nn.Parameter, ...]
    loss: Callable[[tuple[torch.Tensor, ...], list[int]], torch.Tensor]


def encode_pairs(tokenizer, pairs: list[tuple[str, str] | tuple[str, str, bool]], response_only: bool = True,
                 max_response_tokens: int | None = None, max_length: int | None = None
                 ) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels; labels are -100 on prompt tokens when training on responses only. Responses
    can be cut to their first tokens (where the fulfil-or-refuse choice is made) or to a total length.
    A pair may carry a third item, `finished`; False (a generation cut at its limit) means no end-of-turn."""
    encoded = []
    for prompt, response, *rest in pairs:
        ids, n_prompt = encode_exchange(tokenizer, prompt, response, finished=rest[0] if rest else True)
        if max_response_tokens is not None:
            ids = ids[: n_prompt + max_response_tokens]
        if max_length is not None:
            ids = ids[: max(max_length, n_prompt + 1)]
        labels = [-100] * n_prompt + ids[n_prompt:] if response_only else list(ids)
        encoded.append((ids, labels))
    return encoded


def length_buckets(data, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length examples: little padding, so about half the wasted compute."""
    order = list(range(len(data)))
    rng.shuffle(order)
    pool = batch_size * 8
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: len(data[i][0]))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def cpu_has_bf16() -> bool:
    """AMX tiles make bf16 matmuls several times faster; AVX512-BF16 alone measured no faster than fp32 here
    (SmolLM2 fine-tuning, 89 vs 93 tokens/s), so it does not count."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
    return precision == "bf16"


def train(model, tokenizer, pairs: list[tuple[str, str] | tuple[str, str, bool]], settings: TrainSettings,
          description: str = "training", masks: dict[torch.nn.Parameter, torch.Tensor] | None = None,
          auxiliary: AuxiliaryLoss | None = None) -> dict:
    """Fine-tune `model` in place; returns the log: steps, per-step losses, the last epoch's mean loss, time.

    With `masks`, only those parameters train, and only where their mask is 1 (a parameter partly masked gets no
    weight decay, so nothing outside the mask moves, bit for bit). With `auxiliary`, its loss is added to every
    batch's and its parameters train with the model's.
    """
    start = time.perf_counter()
    data = encode_pairs(tokenizer, pairs, settings.response_only, settings.max_response_tokens, settings.max_length)
    check_context(model, max(len(ids) for ids, _ in data), "the longest training example")
    per_epoch = math.ceil(len(length_buckets(data, settings.batch_size, random.Random(0))) / settings.grad_accum)
    total = settings.epochs * per_epoch
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    if masks:
        model.requires_grad_(False)
        whole, partial = [], []
        for parameter, mask in masks.items():
            parameter.requires_grad_(True)
            if bool(mask.all()):
                whole.append(parameter)
            else:
                parameter.register_hook(lambda grad, mask=mask: grad * mask)
                partial.append(parameter)
        # Decoupled weight decay would move masked-out entries, so a partly masked parameter gets none; Adam's
        # update of an entry whose gradient was always 0 is exactly 0.
        groups = [{"params": whole, "weight_decay": settings.weight_decay}, {"params": partial, "weight_decay": 0.0}]
    else:
        groups = [{"params": list(model.parameters()), "weight_decay": settings.weight_decay}]
    if auxiliary is not None:
        groups.append({"params": list(auxiliary.parameters), "weight_decay": settings.weight_decay})
    optimizer = torch.optim.AdamW([group for group in groups if group["params"]], lr=settings.lr)
    warmup = max(1, int(total * settings.warmup + 1e-9))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total)))
    device = next(model.parameters()).device
    bf16 = use_bf16(settings.precision, device)
    eos = tokenizer.eos_token_id
    pad_id = padding_id(tokenizer, [eos] if eos is not None else [])  # padding is masked: a base LM without either
    rng = random.Random(settings.seed)
    losses, epoch_means, step = [], [], 0
    model.train()
    with progress_bar(description, total) as advance:
        for _ in range(settings.epochs):
            batches = length_buckets(data, settings.batch_size, rng)
            epoch = []
            for first in range(0, len(batches), settings.grad_accum):
                if step >= total:
                    break
                group = batches[first:first + settings.grad_accum]
                loss = _step(model, data, group, pad_id, device, bf16, auxiliary)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if not math.isfinite(loss):
                    raise UserError(f"training diverged at step {step} (loss {loss}); lower --lr")
                losses.append(loss)
                epoch.append(loss)
                advance(status=f"loss {loss:.3f}")
            if epoch:
                epoch_means.append(sum(epoch) / len(epoch))
    model.eval()
    return {"steps": step, "losses": losses, "final_loss": epoch_means[-1] if epoch_means else math.nan,
            "precision": "bf16" if bf16 else "fp32", "examples": len(data),
            "tokens_per_epoch": sum(len(ids) for ids, _ in data), "seconds": round(time.perf_counter() - start, 1)}


def _step(model, data, group: list[list[int]], pad_id: int, device, bf16: bool,
          auxiliary: AuxiliaryLoss | None = None) -> float:
    """Forward and backward over the batches of one optimiser step (gradients averaged); returns the loss."""
    total = 0.0
    for indices in group:
        batch = [data[i] for i in indices]
        ids, mask, _, labels = pad([seq for seq, _ in batch], pad_id, fill=[lab for _, lab in batch])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device),
                        output_hidden_states=auxiliary is not None)
            loss = out.loss if auxiliary is None else out.loss + auxiliary.loss(out.hidden_states, indices)
        (loss / len(group)).backward()
        total += loss.item() / len(group)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    return total


def save(model, tokenizer, folder: Path, card: dict) -> None:
    """A normal HF folder (safetensors, tokenizer, chat template, generation config) plus `training.json`
    (the full log) and a README.md model card rendered from it."""
    from .outputs import json_text
    from .reporting.templates import render

    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "training.json").write_text(json_text(card), encoding="utf-8")
    (folder / "README.md").write_text(render("model_card.md.j2", card=card, curve=loss_curve(card["log"]["losses"])),
                                      encoding="utf-8")


def loss_curve(losses: list[float], points: int = 10) -> list[tuple[int, float]]:
    """(step, mean loss) at about `points` evenly spaced places: the card's loss table."""
    if not losses:
        return []
    size = max(1, math.ceil(len(losses) / points))
    return [(min(start + size, len(losses)), sum(losses[start:start + size]) / len(losses[start:start + size]))
            for start in range(0, len(losses), size)]
