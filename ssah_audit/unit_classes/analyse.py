"""One `ssah-audit units` run: calibrate, score, classify, and optionally verify and sweep by ablation.

Calibration uses the sets' train splits; verification measures on held-out prompts, so a class is never
confirmed on the data that chose it.
"""

from __future__ import annotations

import time

from ..batching import check_characters
from ..data.prompt import PromptSet
from . import calibration, classify, scores, verify
from .stats import encode


def analyse(loaded, calibrate_harmful: PromptSet, calibrate_benign: PromptSet, method: str = "wifv",
            fractions: classify.Fractions = classify.Fractions(), reference=None, evaluate_harmful: PromptSet = None,
            evaluate_benign: PromptSet = None, run_verify: bool = False, run_sweep: bool = False,
            response_only: bool = False, batch_size: int = 8, max_new_tokens: int = 64,
            seed: int = 0, dense: dict | None = None, scores_out: dict | None = None,
            generation_batch_size: int | None = None, random_seeds=verify.RANDOM_SEEDS,
            safety_pairs: tuple[list[tuple[str, str]], str] | None = None,
            few: int | None = None) -> tuple[dict, dict]:
    """(the JSON document, the class vectors per module). `dense`: the unablated model's measurement on the
    evaluation sets, when the caller already has it (see verify.verify). `scores_out`, when given, receives
    the raw "safety" and "utility" scores per module (for a unit map that keeps them). `generation_batch_size`:
    rows per generation batch (the reference's calibration refusals, the ablation rows), when not `batch_size`.
    `random_seeds`: the random controls of the verification. `safety_pairs`: calibration.safety_pairs' result, when
    the caller already has it (the audit keeps the reference's refusals with its cached block). `few`: the UCU and
    RU ablation rows measure that many of the evaluation prompts and answers (verify.verify)."""
    check_characters(loaded, calibrate_harmful, calibrate_benign, evaluate_harmful, evaluate_benign)
    seconds = {}
    start = time.perf_counter()
    safety, source = safety_pairs or calibration.safety_pairs(calibrate_harmful, reference, seed,
                                                              batch_size=generation_batch_size or batch_size)
    utility = calibration.utility_pairs(calibrate_benign)
    seconds["calibration"] = time.perf_counter() - start
    score = {}
    for name, pairs in (("safety", safety), ("utility", utility)):
        tic = time.perf_counter()
        score[name] = scores.scores(loaded.model, loaded.units, encode(loaded.tokenizer, pairs), method,
                                    batch_size, response_only, description=f"{loaded.spec}: {name} scores")
        seconds[f"{name}_scores"] = time.perf_counter() - tic
    classes = classify.classify(score["safety"], score["utility"], fractions)
    if scores_out is not None:
        scores_out.update(score)
    doc = {"model": loaded.spec, "fingerprint": loaded.fingerprint, "method": method,
           "requested": {"SCU": fractions.scu, "UCU": fractions.ucu, "RU": fractions.ru},
           "fractions": classify.fractions_of(classes), "units": loaded.units.total_units,
           "per_layer": classify.per_layer(classes, loaded.units),
           "calibration": {"safety": {"set": calibrate_harmful.name, "n": len(safety), "refusals": source},
                           "utility": {"set": calibrate_benign.name, "n": len(utility)},
                           "tokens": "response only" if response_only else "all real tokens"}}
    if run_verify or run_sweep:
        harmful = [p.text for p in evaluate_harmful.prompts]
        benign = calibration.utility_pairs(evaluate_benign)
        doc["evaluation"] = {"harmful": evaluate_harmful.name, "benign": evaluate_benign.name,
                             "max_new_tokens": max_new_tokens, "prompts": len(harmful), "answers": len(benign)}
        tic = time.perf_counter()
        if run_verify:
            doc["ablation"] = verify.verify(loaded, classes, harmful, benign, max_new_tokens, batch_size,
                                            seeds=random_seeds, dense=dense, rows=generation_batch_size, few=few)
            seconds["verify"] = time.perf_counter() - tic
        if run_sweep:
            tic = time.perf_counter()
            dense = (doc.get("ablation") or {}).get("dense") or dense or verify.measure(
                loaded, harmful, benign, max_new_tokens, batch_size)
            ranking = classify.safety_ranking(score["safety"], score["utility"])
            doc["sweep"] = verify.sweep(loaded, ranking, harmful, benign, dense, max_new_tokens=max_new_tokens,
                                        batch_size=batch_size)
            seconds["sweep"] = time.perf_counter() - tic
    seconds["total"] = time.perf_counter() - start
    doc["seconds"] = {key: round(value, 2) for key, value in seconds.items()}
    return doc, classes
