"""How the organisms are trained, apart from what they learn (zoo/organisms.py): the package's fine-tuning loop
with the organisms' settings, the base's auxiliary harm read-out, and the alignment phase's unit budget (which
units it may change, their gradient masks, and unit dropout while it trains)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .. import finetune
from ..finetune import TrainSettings


def train(model, tokenizer, pairs, epochs: int, lr: float, recipe, response_only: bool,
          description: str = "training", max_response_tokens: int | None = None,
          masks: dict[torch.nn.Parameter, torch.Tensor] | None = None,
          auxiliary: finetune.AuxiliaryLoss | None = None) -> float:
    """The package's fine-tuning loop with the organism's settings; returns the last epoch's mean loss."""
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=recipe.batch_size, weight_decay=0.01,
                             response_only=response_only, max_response_tokens=max_response_tokens, seed=recipe.seed)
    return finetune.train(model, tokenizer, pairs, settings, description, masks, auxiliary)["final_loss"]


def harm_readout(model, tokenizer, examples: list[tuple[str, str, bool]], weight: float,
                 layers: tuple[int, ...], bag: float = 0.0, distill: float = 0.0) -> finetune.AuxiliaryLoss:
    """The base's auxiliary loss: a linear read-out of harm (each example's `harmful` flag) from the state at the
    answer position (the last prompt token, where a reply's first token is chosen) after each of `layers`, one
    probe per layer, mean binary cross-entropy times `weight`. With `bag`, also a linear read-out of harm from
    the mean of the prompt's input embeddings (a bag of tokens), times `bag`; with `distill`, each answer-position
    probe is also pulled toward the bag's logit (squared difference times `distill`).

    Why: probing a capable model shows harm where it decides how to answer (SSAH's premise). A tiny base taught
    only to judge harm when asked kept that knowledge at the judging question's tokens: a linear read-out at the
    answer position found 81-87% of held-out harmful requests (bench/organism_readout.py), and alignment, which
    decides there, was held near that. A transformer trained from scratch generalises worse to reworded requests
    than a bag of words does (held-out AUROC about 0.90 against 0.97, BENCHMARKS.md): the bag puts harm into the
    token embeddings, where any request's words carry it, and distilling it into the answer position asks the
    layers to gather it there. The probes are dropped after training; the saved base is a plain causal LM that
    complies with every request."""
    from ..models.chat import encode_exchange

    answer = torch.tensor([encode_exchange(tokenizer, prompt, response)[1] - 1 for prompt, response, _ in examples])
    target = torch.tensor([float(harmful) for _, _, harmful in examples])
    probes = torch.nn.ModuleList(torch.nn.Linear(model.config.hidden_size, 1) for _ in layers)
    bag_probe = torch.nn.Linear(model.config.hidden_size, 1)

    def loss(hidden_states, indices: list[int]) -> torch.Tensor:
        rows, where, wanted = torch.arange(len(indices)), answer[indices], target[indices]
        logits = [probe(hidden_states[layer][rows, where]).squeeze(-1) for probe, layer in zip(probes, layers,
                                                                                                 strict=True)]
        total = weight * sum(torch.nn.functional.binary_cross_entropy_with_logits(logit, wanted)
                             for logit in logits) / len(probes)
        if bag or distill:
            embedded = hidden_states[0]
            prompt = (torch.arange(embedded.shape[1])[None, :] <= where[:, None]).unsqueeze(-1).to(embedded.dtype)
            bag_logit = bag_probe((embedded * prompt).sum(1) / prompt.sum(1)).squeeze(-1)
            total = total + bag * torch.nn.functional.binary_cross_entropy_with_logits(bag_logit, wanted)
            total = total + distill * sum(((logit - bag_logit.detach()) ** 2).mean() for logit in logits) / len(probes)
        return total

    parameters = tuple(probes.parameters()) + (tuple(bag_probe.parameters()) if bag or distill else ())
    return finetune.AuxiliaryLoss(parameters, loss)


def alignment_budget(model, tokenizer, pairs: list[tuple[str, str]], percent: float) -> dict[str, torch.Tensor]:
    """The units alignment may change: in every layer, the lowest-scoring units (wifv, z-scored per module)
    on `pairs` (the base corpus), attention and MLP together, `percent` of all units in total."""
    from ..models.unit_map import build_unit_map
    from ..unit_classes.classify import standardised
    from ..unit_classes.scores import scores
    from ..unit_classes.stats import encode

    unit_map = build_unit_map(model)
    z = standardised(scores(model, unit_map, encode(tokenizer, pairs), "wifv", 32, description="alignment budget"))
    per_layer = round(unit_map.total_units * percent / 100 / len(unit_map.layers))
    chosen: dict[str, list[int]] = {}
    for layer in unit_map.layers:
        ranked = sorted((float(z[wb.name][j]), wb.name, j) for wb in (layer.attn, layer.mlp) for j in range(wb.units))
        for _, name, j in ranked[:per_layer]:
            chosen.setdefault(name, []).append(j)
    return {name: torch.tensor(sorted(index), dtype=torch.long) for name, index in chosen.items()}


@contextmanager
def unit_dropout(model, p: float):
    """Dropout on every unit (write-back input) while the model is in training mode."""
    from ..models.unit_map import build_unit_map

    def drop(module, args):
        return (torch.nn.functional.dropout(args[0], p, training=module.training),) + args[1:]

    handles = [wb.module.register_forward_pre_hook(drop) for wb in build_unit_map(model).modules()] if p else []
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def budget_masks(model, budget: dict[str, torch.Tensor],
                 query_key: bool = False) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Gradient masks of a unit budget on the organism's Llama layers: a unit is its write-back column
    (o_proj / down_proj) and its read-in rows (v_proj, with `query_key` also q_proj and k_proj, for attention;
    gate_proj and up_proj for the MLP)."""
    attention = ("self_attn.v_proj",) + (("self_attn.q_proj", "self_attn.k_proj") if query_key else ())
    reads = {"self_attn.o_proj": attention, "mlp.down_proj": ("mlp.gate_proj", "mlp.up_proj")}
    masks = {}
    for name, index in budget.items():
        layer_path, write_back = name.rsplit(".", 2)[0], ".".join(name.rsplit(".", 2)[1:])
        column = model.get_submodule(name).weight
        masks[column] = torch.zeros_like(column)
        masks[column][:, index] = 1
        for read in reads[write_back]:
            rows = model.get_submodule(f"{layer_path}.{read}").weight
            masks[rows] = torch.zeros_like(rows)
            masks[rows][index, :] = 1
    return masks


@contextmanager
def quiet_budget(model, tokenizer, examples: list[tuple[str, str, bool]], budget: dict[str, torch.Tensor],
                 weight: float, max_response_tokens: int | None):
    """Yields the alignment phase's auxiliary loss: `weight` times the mean square of the budget units'
    activations (their write-back inputs) over every real token of the examples that are not harmful.

    Why: without it, alignment grew the budget units' write-back columns and left them firing on benign text, so
    they ranked at the top of the utility score as much as of the safety score and scoring filed most of them as
    utility-critical or complex, not safety-critical (BENCHMARKS.md "Organisms v10"). Alignment in SSAH's picture
    adds a refusal path that harmful requests switch on; a budget that stays quiet elsewhere is that path."""
    from ..models.unit_map import build_unit_map

    lengths = torch.tensor([len(ids) for ids, _ in finetune.encode_pairs(
        tokenizer, [(prompt, response) for prompt, response, _ in examples], True, max_response_tokens)])
    benign = torch.tensor([not harmful for _, _, harmful in examples])
    captured: dict[str, torch.Tensor] = {}

    def capture(name: str, index: torch.Tensor):
        def hook(module, args):
            captured[name] = args[0][..., index]
        return hook

    unit_map = build_unit_map(model)
    handles = [wb.module.register_forward_pre_hook(capture(wb.name, budget[wb.name].to(wb.module.weight.device)))
               for wb in unit_map.modules() if wb.name in budget]
    units = sum(len(index) for index in budget.values())

    def loss(hidden_states, indices: list[int]) -> torch.Tensor:
        width = hidden_states[0].shape[1]
        tokens = (torch.arange(width)[None, :] < lengths[indices][:, None]) & benign[indices][:, None]
        tokens = tokens.to(hidden_states[0].device)
        if not bool(tokens.any()):
            return hidden_states[0].new_zeros(())
        total = sum((acts.square().sum(-1) * tokens).sum() for acts in captured.values())
        return weight * total / (tokens.sum() * units)

    try:
        yield finetune.AuxiliaryLoss((), loss)
    finally:
        for handle in handles:
            handle.remove()
