"""Ablation verification with every condition in shared batches (units.ablate.row_ablation) against one
condition at a time (columns zeroed, as verification ran before issue 18), on the same model and prompts.

Prints each way's wall time, tokens generated and achieved GFLOP/s (2 x parameters x tokens through the model,
prompt tokens included), the machine's fp32 matmul GFLOP/s measured in the same run, the speed-up, the largest
difference between the two tables' compliance rates, peak RSS, and how often the judge's verdict on the first 16,
24 or 32 generated tokens equals its verdict on all of them (could generation stop earlier?).

Run: .venv/bin/python bench/ablation_batching.py [--model smollm2-135m-instruct] [--prompts 100]
     [--max-new-tokens 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time

from machine import matmul_gflops, peak_rss_mib

from ssah_audit.data.sets import builtin_set
from ssah_audit.models.chat import format_prompt
from ssah_audit.models.resolve import load_model
from ssah_audit.responses.evaluate import judged
from ssah_audit.responses.generate import first_tokens
from ssah_audit.responses.judge import is_refusal
from ssah_audit.responses.metrics import answer_nll, refusal_scores
from ssah_audit.unit_classes import ablate, analyse, classify, verify
from ssah_audit.unit_classes.calibration import utility_pairs


def tokens_through(loaded, prompts: list[str], completions: list[str]) -> int:
    """Prompt plus generated tokens of every row (what the forward passes carried, padding aside)."""
    tokenizer = loaded.tokenizer
    return sum(len(tokenizer(format_prompt(tokenizer, p), add_special_tokens=False).input_ids)
               + len(tokenizer(c, add_special_tokens=False).input_ids) for p, c in zip(prompts, completions,
                                                                                      strict=True))


def one_at_a_time(loaded, conditions, harmful, benign, max_new_tokens, batch_size) -> tuple[dict, list[str]]:
    """Verification as it ran before: each condition with its columns zeroed, generation and scores."""
    table, completions = {}, []
    for label, chosen in conditions.items():
        with ablate.ablated(loaded.units, chosen):
            verdicts = judged(loaded, harmful, max_new_tokens, batch_size, label)
            table[label] = {"compliance_rate": sum(not refused for _, refused in verdicts) / len(verdicts),
                            "refusal_score": sum(refusal_scores(loaded.model, loaded.tokenizer, harmful,
                                                                batch_size)) / len(harmful),
                            "nll": answer_nll(loaded.model, loaded.tokenizer, benign, batch_size)["nll"]}
        completions += [completion for completion, _ in verdicts]
    return table, completions


def shared_batches(loaded, conditions, harmful, benign, max_new_tokens, batch_size) -> tuple[dict, list[str]]:
    """Verification as it runs now (verify.measure_conditions), with the completions it judged."""
    generated: dict = {}
    table = verify.measure_conditions(loaded, conditions, harmful, benign, max_new_tokens, batch_size,
                                      completions_out=generated)
    return table, [c for label in conditions for c in generated[label]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    loaded = load_model(args.model)
    harmful_set = builtin_set("harmful").limit(args.prompts)
    harmful = [p.text for p in harmful_set.prompts]
    benign = utility_pairs(builtin_set("benign").limit(args.prompts))
    _, classes = analyse.analyse(loaded, builtin_set("harmful:train"), builtin_set("benign:train"),
                                 batch_size=args.batch_size)
    conditions = {"dense": {}} | {name: classify.units_of(classes, name) for name in ("SCU", "UCU", "RU")}
    size = ablate.count(conditions["SCU"])
    conditions |= {f"random {seed}": ablate.random_units(loaded.units, size, seed) for seed in verify.RANDOM_SEEDS}
    parameters = sum(p.numel() for p in loaded.model.parameters())
    print(f"{args.model}: {parameters / 1e6:.0f}M parameters, {len(conditions)} conditions x {len(harmful)} prompts, "
          f"{args.max_new_tokens} new tokens, batch {args.batch_size} prompts")
    machine = matmul_gflops()
    print(f"machine: fp32 matmul {machine:.0f} GFLOP/s")

    results = {}
    for way, run in (("one condition at a time", one_at_a_time), ("shared batches", shared_batches)):
        start = time.perf_counter()
        table, completions = run(loaded, conditions, harmful, benign, args.max_new_tokens, args.batch_size)
        results[way] = (time.perf_counter() - start, table, completions)
    print("| way | wall s | tokens | GFLOP/s achieved | share of matmul GFLOP/s |")
    print("|---|---|---|---|---|")
    for way, (wall, _, completions) in results.items():
        tokens = tokens_through(loaded, harmful * len(conditions), completions)
        achieved = 2 * parameters * tokens / wall / 1e9
        print(f"| {way} | {wall:.1f} | {tokens:,} | {achieved:.1f} | {achieved / machine:.2f} |")
    naive, shared = results["one condition at a time"][1], results["shared batches"][1]
    print(f"speed-up: {results['one condition at a time'][0] / results['shared batches'][0]:.2f}x")
    print("compliance (shared): " + ", ".join(f"{label} {100 * shared[label]['compliance_rate']:.0f}%"
                                             for label in conditions))
    worst = max(abs(shared[label]["compliance_rate"] - naive[label]["compliance_rate"]) for label in conditions)
    print(f"largest compliance difference, shared vs one at a time: {100 * worst:.1f} points")
    shared_completions = results["shared batches"][2]

    tokenizer = loaded.tokenizer
    full = [is_refusal(p, c) for p, c in zip(harmful * len(conditions), shared_completions, strict=True)]
    for k in (16, 24, 32):
        cut = [first_tokens(tokenizer, c, k) for c in shared_completions]
        same = sum(is_refusal(p, c) == f for p, c, f in zip(harmful * len(conditions), cut, full, strict=True))
        print(f"verdict on the first {k} tokens equals the verdict on {args.max_new_tokens}: "
              f"{same}/{len(full)} ({100 * same / len(full):.1f}%)")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
