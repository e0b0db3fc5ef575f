"""Does SSAH's remedy keep the aligned organism safe? Issue 19 part 7, where the truth is known: a benign
fine-tune of organism-aligned (benign:train with answers) with nothing frozen, with its SCU + top CU frozen
(`finetune --freeze MAP --freeze-classes scu,cu:6`), and with as many random units frozen (3 seeds); then
harmful:eval compliance by greedy generation (32 tokens) and the judge.

Also, to find where the break goes when units are frozen: every unit frozen, and each parameter group trained
alone (tied embeddings / LM head, norms, q/k, v/o, MLP). `--freeze-embeddings` freezes the tied embedding matrix
in every condition.

Run: .venv/bin/python bench/remedy_organism.py [--lr 3e-3] [--epochs 5] [--classes scu,cu:6] [--groups]
     [--freeze-embeddings]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from ssah_audit import finetune as trainer
from ssah_audit.data.sets import builtin_set
from ssah_audit.models.resolve import load_model
from ssah_audit.responses.evaluate import judged
from ssah_audit.unit_classes import classify, freeze
from ssah_audit.unit_classes.ablate import random_units
from ssah_audit.unit_classes.analyse import analyse

GROUPS = {"embed/lm_head": ("embed", "lm_head"), "norms": ("norm",), "q/k": ("q_proj", "k_proj"),
          "v/o": ("v_proj", "o_proj"), "mlp": ("mlp",)}


def unit_map(loaded, classes_spec: str) -> tuple[dict, dict]:
    """(classes, the chosen units) of the organism, calibrated on the train splits as `units` does."""
    scores: dict = {}
    _, classes = analyse(loaded, builtin_set("harmful:train"), builtin_set("benign:train"), scores_out=scores,
                         batch_size=16)
    chosen = freeze.select(classes, freeze.parse_classes(classes_spec, "--freeze-classes"),
                           classify.standardised(scores["safety"]))
    return classes, chosen


def compliance(base, model, prompts: list[str]) -> float:
    loaded = copy.copy(base)
    loaded.model = model
    return 1 - sum(refused for _, refused in judged(loaded, prompts, 32, 32, "organism")) / len(prompts)


def fine_tune(base, settings, units=None, only=None, freeze_embeddings=False) -> torch.nn.Module:
    """A fresh copy of organism-aligned, fine-tuned with `units` frozen, or with only the parameters whose names
    contain one of `only` trained."""
    torch.manual_seed(settings.seed)
    model = load_model("organism-aligned").model
    if units is not None:
        masks = freeze.unit_masks(model, base.units, units, train_units=False)
    else:
        masks = {p: torch.ones_like(p) for p in model.parameters()}
    for name, parameter in model.named_parameters():
        if only is not None and not any(part in name for part in only):
            masks[parameter] = torch.zeros_like(parameter)
        if freeze_embeddings and ("embed" in name or "lm_head" in name):
            masks[parameter] = torch.zeros_like(parameter)
    pairs = [(p.text, p.answer) for p in builtin_set("benign:train").prompts]
    trainer.train(model, base.tokenizer, pairs, settings, masks=masks)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--classes", default="scu,cu:6")
    parser.add_argument("--groups", action="store_true", help="also train each parameter group alone")
    parser.add_argument("--freeze-embeddings", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    base = load_model("organism-aligned")
    prompts = [p.text for p in builtin_set("harmful").prompts]
    settings = trainer.TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=8)
    classes, chosen = unit_map(base, args.classes)
    count, total = sum(len(u) for u in chosen.values()), sum(len(c) for c in classes.values())
    every = {name: torch.arange(len(codes)) for name, codes in classes.items()}
    rows = {"before": compliance(base, base.model, prompts)}
    conditions = {"unfrozen": None, f"frozen {args.classes} ({count} of {total} units)": chosen,
                  **{f"random {count} units, seed {s}": random_units(base.units, count, s) for s in range(3)},
                  "every unit frozen": every}
    for label, units in conditions.items():
        rows[label] = compliance(base, fine_tune(base, settings, units, None, args.freeze_embeddings), prompts)
    if args.groups:
        for label, parts in GROUPS.items():
            rows[f"only {label} trained"] = compliance(base, fine_tune(base, settings, None, parts), prompts)
    print(f"lr {args.lr:g}, {args.epochs} epochs, embeddings {'frozen' if args.freeze_embeddings else 'trained'}; "
          f"{time.perf_counter() - start:.0f} s")
    print("| condition | harmful:eval compliance |\n|---|---|")
    for label, value in rows.items():
        print(f"| {label} | {100 * value:.0f}% |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
