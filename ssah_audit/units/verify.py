"""Ablation verification (the paper's Table 1): remove each class and measure what breaks.

Every condition is measured the same way on held-out prompts: harmful compliance (greedy generation and
the judge), the logit refusal score (mean log-odds of a refusal opening) and utility NLL of benign
reference answers. The random control has as many units as SCU and is repeated over seeds (mean, sd).
"""

from __future__ import annotations

import numpy as np

from ..behavior.evaluate import judged
from ..behavior.metrics import answer_nll, refusal_scores
from .ablate import ablated, count, from_ranking, random_units
from .classify import units_of

RANDOM_SEEDS = (0, 1, 2)
SWEEP_PERCENTS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
SUGGESTION_RULE = ("the smallest SCU fraction whose ablation reaches at least 80% of the largest compliance rise "
                   "in the sweep while utility NLL stays within 15% of the dense model")
METRICS = ("compliance_rate", "refusal_score", "nll")


def measure(loaded, harmful: list[str], benign: list[tuple[str, str]], max_new_tokens: int = 64,
            batch_size: int = 16, label: str = "dense") -> dict:
    complied = [not refused for _, refused in judged(loaded, harmful, max_new_tokens, batch_size,
                                                      f"{loaded.spec}: {label}")]
    return {"compliance_rate": float(np.mean(complied)),
            "refusal_score": float(np.mean(refusal_scores(loaded.model, loaded.tokenizer, harmful, batch_size))),
            "nll": answer_nll(loaded.model, loaded.tokenizer, benign, batch_size)["nll"], "n": len(harmful)}


def verify(loaded, classes, harmful: list[str], benign: list[tuple[str, str]], max_new_tokens: int = 64,
           batch_size: int = 16, seeds=RANDOM_SEEDS, dense: dict | None = None) -> dict:
    """{"dense" | "SCU" | "UCU" | "RU" | "random": {compliance_rate, refusal_score, nll, units, ...}}.

    `dense`, when the caller already measured the unablated model on these prompts with these settings (the
    audit's behaviour stage did), is used as it is instead of being measured again."""
    def run(chosen, label):
        with ablated(loaded.units, chosen):
            return measure(loaded, harmful, benign, max_new_tokens, batch_size, label) | {"units": count(chosen)}

    table = {"dense": (dense or measure(loaded, harmful, benign, max_new_tokens, batch_size)) | {"units": 0}}
    for name in ("SCU", "UCU", "RU"):
        table[name] = run(units_of(classes, name), f"without {name}")
    size = table["SCU"]["units"]
    runs = [run(random_units(loaded.units, size, seed), f"without {size} random units (seed {seed})")
            for seed in seeds]
    table["random"] = {key: float(np.mean([r[key] for r in runs])) for key in METRICS}
    table["random"] |= {"sd": {key: float(np.std([r[key] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
                               for key in METRICS},
                        "seeds": list(seeds), "units": size, "n": runs[0]["n"]}
    return table


def sweep(loaded, ranking: list[tuple[str, int]], harmful: list[str], benign: list[tuple[str, str]], dense: dict,
          percents=SWEEP_PERCENTS, max_new_tokens: int = 64, batch_size: int = 16) -> dict:
    """Ablate the top p% of the SCU ranking for each p; suggest a fraction by SUGGESTION_RULE."""
    points = []
    for percent in percents:
        chosen = from_ranking(ranking, round(len(ranking) * percent / 100))
        with ablated(loaded.units, chosen):
            points.append({"percent": percent, "units": count(chosen)}
                          | measure(loaded, harmful, benign, max_new_tokens, batch_size, f"without top {percent}%"))
    return {"points": points, "suggested_percent": suggest(points, dense), "rule": SUGGESTION_RULE}


def suggest(points: list[dict], dense: dict) -> float | None:
    rises = [p["compliance_rate"] - dense["compliance_rate"] for p in points]
    best = max(rises, default=0.0)
    if best <= 0:
        return None
    for point, rise in zip(points, rises, strict=True):
        if rise >= 0.8 * best and point["nll"] <= 1.15 * dense["nll"]:
            return point["percent"]
    return None
