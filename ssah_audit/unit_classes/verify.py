"""Ablation verification (the paper's Table 1): remove each class and measure what breaks.

Every condition is measured the same way on held-out prompts: harmful compliance (greedy generation and
the judge), the logit refusal score (mean log-odds of a refusal opening) and utility NLL of benign
reference answers. The random control has as many units as SCU and is repeated over seeds (mean, sd).
The conditions' generations share batches (units.ablate.row_ablation): each batch carries `batch_size`
prompts in every condition.
"""

from __future__ import annotations

import numpy as np

from ..data.prompt import spread_indices
from ..responses.evaluate import judged
from ..responses.generate import generate
from ..responses.judges import refusals
from ..responses.metrics import answer_nll, refusal_score_recorder
from .ablate import ablated, count, from_ranking, random_units, row_ablation
from .classify import units_of

RANDOM_SEEDS = (0, 1, 2)
SWEEP_PERCENTS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
SUGGESTION_RULE = ("the smallest SCU fraction whose ablation reaches at least 80% of the largest compliance rise "
                   "in the sweep while utility NLL stays within 15% of the dense model")
METRICS = ("compliance_rate", "refusal_score", "nll")
# The rows `verify(few=...)` measures on fewer prompts and answers: the gate and the summary read the SCU row against
# its random control, and a class's own effect is large (removing UCU multiplies the NLL by 2.5-3.5 on the pair;
# removing RU moves little), so those two rows need fewer prompts to show it (BENCHMARKS.md "The audit in rounds").
FEW_ROWS = ("UCU", "RU")


def measure(loaded, harmful: list[str], benign: list[tuple[str, str]], max_new_tokens: int = 64,
            batch_size: int = 16, label: str = "dense") -> dict:
    scores: list[float] = []
    complied = [not refused for _, refused in judged(loaded, harmful, max_new_tokens, batch_size,
                                                      f"{loaded.spec}: {label}", scores)]
    return row(loaded, harmful, benign, complied, scores, batch_size)


def row(loaded, harmful: list[str], benign: list[tuple[str, str]], complied: list[bool], refusal: list[float],
        batch_size: int) -> dict:
    """One condition's table row from its judged compliance and refusal scores (from the generation's first step)
    and the model as it stands (ablation applied) for the NLL."""
    return {"compliance_rate": float(np.mean(complied)), "refusal_score": float(np.mean(refusal)),
            "nll": answer_nll(loaded.model, loaded.tokenizer, benign, batch_size)["nll"], "n": len(harmful),
            "answers": len(benign)}


def generate_conditions(loaded, conditions: list[dict], prompts: list[str], max_new_tokens: int = 64,
                        batch_size: int = 16, description: str = "ablations", rows: int | None = None,
                        prompts_of: list[list[int]] | None = None) -> tuple[list[list[str]], list[list[float]]]:
    """Greedy completions of `prompts` under each condition (the units to remove), all conditions in shared
    batches of `rows` rows (default `batch_size` prompts x len(conditions)), and each row's refusal score from its
    first step; one list of each per condition. `prompts_of`, when given, names the prompts (indices) each
    condition measures, in that order (default: all of them)."""
    prompts_of = prompts_of or [list(range(len(prompts)))] * len(conditions)
    which = [k for k, chosen in enumerate(prompts_of) for _ in chosen]
    texts = [prompts[i] for chosen in prompts_of for i in chosen]
    scores = [0.0] * len(which)
    with row_ablation(loaded.units, conditions) as select:
        completions = generate(loaded.model, loaded.tokenizer, texts, max_new_tokens,
                               rows or batch_size * len(conditions), description=f"{loaded.spec}: {description}",
                               before_batch=lambda chunk: select([which[i] for i in chunk]), variants=which,
                               first_step=refusal_score_recorder(scores, loaded.tokenizer))
    starts = [0]
    for chosen in prompts_of:
        starts.append(starts[-1] + len(chosen))

    def per_condition(values):
        return [values[starts[k]:starts[k + 1]] for k in range(len(conditions))]

    return per_condition(completions), per_condition(scores)


def measure_conditions(loaded, conditions: dict, harmful: list[str], benign: list[tuple[str, str]],
                       max_new_tokens: int = 64, batch_size: int = 16, description: str = "ablations",
                       completions_out: dict | None = None, rows: int | None = None,
                       subsets: dict | None = None) -> dict:
    """measure() under each condition (label: the units to remove), the generations of all conditions in shared
    batches (the refusal scores from their first step); the NLL per condition with its columns zeroed.
    `completions_out`, when given, receives each condition's completions (bench/ablation_batching.py); `rows`: rows
    per generation batch (see generate_conditions); `subsets`: {label: (prompt indices, answer indices)} for a
    condition measured on some of the prompts and answers only (the others measure all)."""
    subsets = subsets or {}
    everything = (list(range(len(harmful))), list(range(len(benign))))
    chosen_of = [subsets.get(label, everything) for label in conditions]
    generated, scores = generate_conditions(loaded, list(conditions.values()), harmful, max_new_tokens, batch_size,
                                            description, rows, [prompts for prompts, _ in chosen_of])
    if completions_out is not None:
        completions_out.update(zip(conditions, generated, strict=True))
    # one call for every condition: a judge that encodes a prompt once for all its completions reads each once
    asked = [harmful[i] for prompts, _ in chosen_of for i in prompts]
    flat = refusals(list(zip(asked, [c for completions in generated for c in completions], strict=True)))
    table, start = {}, 0
    for (label, chosen), refusal, (prompts, answers) in zip(conditions.items(), scores, chosen_of, strict=True):
        complied = [not refused for refused in flat[start:start + len(prompts)]]
        start += len(prompts)
        with ablated(loaded.units, chosen):
            table[label] = row(loaded, [harmful[i] for i in prompts], [benign[i] for i in answers], complied,
                               refusal, batch_size) | {"units": count(chosen)}
    return table


def verify(loaded, classes, harmful: list[str], benign: list[tuple[str, str]], max_new_tokens: int = 64,
           batch_size: int = 16, seeds=RANDOM_SEEDS, dense: dict | None = None, rows: int | None = None,
           few: int | None = None) -> dict:
    """{"dense" | "SCU" | "UCU" | "RU" | "random": {compliance_rate, refusal_score, nll, units, n, answers, ...}}.

    `dense`, when the caller already measured the unablated model on these prompts with these settings (the
    audit's behaviour stage did), is used as it is instead of being measured again. `few`: the UCU and RU rows
    measure that many of the prompts and of the answers, spread over them (data.prompt.spread_indices); the SCU
    row, its random control and the dense row measure all (FEW_ROWS says why)."""
    conditions = {name: units_of(classes, name) for name in ("SCU", "UCU", "RU")}
    size = count(conditions["SCU"])
    conditions |= {f"random {seed}": random_units(loaded.units, size, seed) for seed in seeds}
    if dense is None:
        conditions["dense"] = {}
    subset = (spread_indices(len(harmful), few), spread_indices(len(benign), few))
    measured = measure_conditions(loaded, conditions, harmful, benign, max_new_tokens, batch_size,
                                  ("dense, " if dense is None else "")
                                  + f"without SCU, UCU, RU and {len(seeds)} x {size} random units", rows=rows,
                                  subsets={name: subset for name in FEW_ROWS})
    table = {"dense": (dense or measured["dense"]) | {"units": 0}}
    table |= {name: measured[name] for name in ("SCU", "UCU", "RU")}
    runs = [measured[f"random {seed}"] for seed in seeds]
    table["random"] = {key: float(np.mean([r[key] for r in runs])) for key in METRICS}
    table["random"] |= {"sd": {key: float(np.std([r[key] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
                               for key in METRICS},
                        "seeds": list(seeds), "units": size, "n": runs[0]["n"], "answers": runs[0]["answers"]}
    return table


def sweep(loaded, ranking: list[tuple[str, int]], harmful: list[str], benign: list[tuple[str, str]], dense: dict,
          percents=SWEEP_PERCENTS, max_new_tokens: int = 64, batch_size: int = 16) -> dict:
    """Ablate the top p% of the SCU ranking for each p; suggest a fraction by SUGGESTION_RULE."""
    conditions = {percent: from_ranking(ranking, round(len(ranking) * percent / 100)) for percent in percents}
    measured = measure_conditions(loaded, conditions, harmful, benign, max_new_tokens, batch_size,
                                  f"without the top {', '.join(f'{p:g}' for p in percents)}% of the SCU ranking")
    points = [{"percent": percent, "units": measured[percent]["units"], **measured[percent]} for percent in percents]
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
