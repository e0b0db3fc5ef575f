"""Probing the reasoning direction (SSAH §1): does the model lean to refusing or to fulfilling? `measure` is
the probe command's document for every variant (self.py, the default; lens.py; paper.py): the variant's reading,
each prompt's lean, per-layer linear probes (harmful vs benign) and the difference-in-means refusal direction.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..batching import check_characters, check_context
from .paths import DEFAULT_STEPS, build_items


def linear_probe_accuracy(harmful: torch.Tensor, benign: torch.Tensor, folds: int = 5, seed: int = 0) -> list[float]:
    """Per layer, held-out accuracy (stratified k-fold) of a logistic regression telling harmful from benign
    prompts by their last-token states."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.array([1] * len(harmful) + [0] * len(benign))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    accuracies = []
    for layer in range(harmful.shape[1]):
        features = torch.cat([harmful[:, layer], benign[:, layer]]).numpy()
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        accuracies.append(float(cross_val_score(classifier, features, labels, cv=splitter).mean()))
    return accuracies


def refusal_directions(harmful: torch.Tensor, benign: torch.Tensor) -> torch.Tensor:
    """Difference-in-means direction per layer (harmful mean minus benign mean): [layers + 1, hidden]."""
    return harmful.mean(dim=0) - benign.mean(dim=0)


def check_steps(model, steps: int) -> None:
    """K continuation tokens after a query of at least one token: refused before any work when the context cannot
    hold them (10^9 steps once built paths for minutes before the context check came)."""
    check_context(model, steps + 1, f"{steps:,} probe steps")


def measure(loaded, harmful, benign, steps: int = DEFAULT_STEPS, batch_size: int = 16, variant: str = "self",
            completions: list[str] | None = None, states_out: dict | None = None) -> tuple[dict, torch.Tensor]:
    """Everything `ssah-audit probe` reports for one model, as JSON data, plus the refusal directions
    ([layers + 1, hidden]) that a reference comparison needs. `variant` names a registered probe variant:
    "self" (self.py, the default) compares the model's own continuation with a refusal and a compliance path;
    "lens" (lens.py) is its preference between those paths read through the LM head; "paper" is the cosine margin of the
    SSAH paper, kept for reproduction: it does not tell aligned from unaligned models apart (README, probing).
    `completions`: the model's greedy completions of the harmful prompts, when already generated. `states_out`, when
    given, receives "benign_final": the benign queries' last-token states after the final norm [prompts, hidden],
    from which the LM head reads each one's first-token distribution (the audit's first-token KL) without a pass."""
    from ..components import PROBES

    probe_variant = PROBES.get(variant)
    check_characters(loaded, harmful, benign)
    check_steps(loaded.model, steps)
    start = time.perf_counter()
    items = build_items(loaded.tokenizer, harmful.prompts, steps)
    measured = probe_variant.measure(loaded, items, harmful, benign, steps, batch_size, completions)
    doc, per_prompt = measured.doc, measured.per_prompt
    harmful_states, benign_states = measured.harmful_states, measured.benign_states
    directions = refusal_directions(harmful_states, benign_states)
    if states_out is not None:
        states_out["benign_final"] = benign_states[:, -1].float()  # the last layer's entry carries the final norm
    folds = min(5, len(harmful_states), len(benign_states))
    accuracy = linear_probe_accuracy(harmful_states, benign_states, folds) if folds >= 2 else None
    doc = {"model": loaded.spec, "fingerprint": loaded.fingerprint, **doc,
           "layer_margin": np.array(doc["margin"])[:, 1:].mean(axis=1).tolist(),  # k >= 2, both variants
           "per_prompt": [{"prompt": p.text, "lean": float(value), "predicts": "refusal" if value > 0 else "compliance"}
                          for p, value in zip(harmful.prompts, per_prompt, strict=True)],
           "linear_probe_accuracy": accuracy, "refusal_direction_norm": directions.norm(dim=-1).tolist(),
           "sets": {"harmful": harmful.name, "benign": benign.name},
           "n": {"harmful": len(harmful.prompts), "benign": len(benign.prompts)},
           "seconds": round(time.perf_counter() - start, 2)}
    return doc, directions
