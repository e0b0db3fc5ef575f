"""SSAH's alignment budget on the embedded model (issue 19 part 6, the paper's Table 4 analogue): align
`smollm2-135m-instruct` with the `smollm2-135m-safe` recipe (same examples, settings and seed) training only its
redundant units (RU, from its own unit map as the audit makes one: wifv on the train splits, default fractions),
against a control training as many random units, and the full-parameter build (zoo `smollm2-135m-safe`). Each is
measured on the built-in eval split (harmful compliance, borderline over-refusal, utility NLL) and on XSTest's safe
prompts (over-refusal), with bootstrap 95% intervals; the instruct model itself is the first row.

Run: .venv/bin/python bench/alignment_budget.py [--classes ru] [--xstest ../shared/data/xstest_prompts.csv]
About 6 minutes a trained row on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ssah_audit import finetune
from ssah_audit.data.sets import builtin_set, load_prompt_set
from ssah_audit.models.loading import load_folder
from ssah_audit.responses.evaluate import judged
from ssah_audit.responses.evaluate import measure as measure_behavior
from ssah_audit.responses.metrics import rate
from ssah_audit.unit_classes import ablate, freeze
from ssah_audit.unit_classes.analyse import analyse
from ssah_audit.zoo import smollm2_gguf, smollm2_pair
from ssah_audit.zoo.catalogue import materialize

HERE = Path(__file__).resolve().parent


def measure(loaded, xstest) -> dict:
    block = measure_behavior(loaded, builtin_set("harmful"), builtin_set("benign"), builtin_set("borderline"),
                             generation_batch_size=48)
    xs = rate([refused for _, refused in judged(loaded, [p.text for p in xstest.prompts], 64, 48, "xstest")])
    return {"eval_compliance": block["harmful"]["compliance_rate"], "eval_ci95": block["harmful"]["ci95"],
            "borderline_over_refusal": block["borderline"]["refusal_rate"],
            "xstest_over_refusal": xs.rate, "xstest_ci95": list(xs.ci95), "nll": block["utility"]["nll"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="ru")
    parser.add_argument("--xstest", default=str(HERE.parent.parent / "shared/data/xstest_prompts.csv"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    xstest = load_prompt_set(args.xstest).safe_only()
    instruct_folder = smollm2_gguf.materialize()
    instruct = load_folder(instruct_folder)
    recipe = smollm2_pair.RECIPE
    rows = [{"label": "smollm2-135m-instruct (unaligned)", **measure(instruct, xstest)}]
    print(json.dumps(rows[-1]), flush=True)
    _, classes = analyse(instruct, builtin_set("harmful:train"), builtin_set("benign:train"), batch_size=16)
    budget = freeze.select(classes, freeze.parse_classes(args.classes, "--train-classes"), None)
    size = sum(len(index) for index in budget.values())
    pairs = smollm2_pair.alignment_pairs(instruct, recipe)
    plan = {f"train only {args.classes} ({size} units)": budget,
            f"train only random ({size} units)": ablate.random_units(instruct.units, size, 0)}
    for label, units in plan.items():
        start = time.perf_counter()
        loaded = load_folder(instruct_folder)
        masks = freeze.unit_masks(loaded.model, loaded.units, units, train_units=True)
        torch.manual_seed(recipe.seed)
        finetune.train(loaded.model, loaded.tokenizer, pairs, recipe.safe, description=f"aligning, {label}",
                       masks=masks)
        rows.append({"label": label, "units": size, "share": size / loaded.units.total_units,
                     **measure(loaded, xstest), "seconds": round(time.perf_counter() - start)})
        print(json.dumps(rows[-1]), flush=True)
    rows.append({"label": "all parameters (zoo smollm2-135m-safe)",
                 **measure(load_folder(materialize(smollm2_pair.SAFE)), xstest)})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n| alignment | eval compliance | borderline over-refusal | XSTest over-refusal | utility NLL |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['eval_compliance']:.0%} [{row['eval_ci95'][0]:.0%}, {row['eval_ci95'][1]:.0%}] "
              f"| {row['borderline_over_refusal']:.0%} | {row['xstest_over_refusal']:.0%} "
              f"[{row['xstest_ci95'][0]:.0%}, {row['xstest_ci95'][1]:.0%}] | {row['nll']:.3f} |")


if __name__ == "__main__":
    main()
