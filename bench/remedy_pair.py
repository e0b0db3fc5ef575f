"""SSAH's remedy on the embedded pair (issue 19 part 5, the paper's Table 2 analogue): re-run the
`smollm2-135m-safe-ft` recipe from `smollm2-135m-safe` with nothing frozen, with the reference's SCU + top 6% CU
frozen (the audit's remedy, zoo `smollm2-135m-safe-ft-frozen`), with SCU + all CU frozen, and with as many random
units frozen as the remedy freezes (3 seeds), at one or more fine-tune seeds. Each is measured like the pair:
harmful compliance on the built-in eval split and on HarmBench (unseen: never tune to it), over-refusal on XSTest's
safe prompts, utility NLL of the eval split's benign answers; bootstrap 95% intervals. The reference itself is the
first row. The goal (issue 19): the remedy stays within +10 points of the reference's compliance while keeping at
least 70% of the unfrozen fine-tune's NLL gain, and the random control does not.

Run: .venv/bin/python bench/remedy_pair.py [--seeds 0 1] [--settings none scu,cu:6 scu,cu random random=scu,cu]
     [--harmbench ../shared/eval/harmbench_behaviors_text_test.csv] [--xstest ../shared/data/xstest_prompts.csv]
     [--json out.json] [--no-reference] [--freeze-embeddings]
     (rows print as JSON lines as they finish; the table needs the reference)
About 5 minutes a row on 2 cores (2 of them training).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ssah_audit import finetune
from ssah_audit.data.sets import builtin_set, load_prompt_set
from ssah_audit.models.loading import load_folder
from ssah_audit.responses.evaluate import judged
from ssah_audit.responses.evaluate import measure as measure_behavior
from ssah_audit.responses.metrics import rate
from ssah_audit.unit_classes import ablate, freeze
from ssah_audit.zoo import smollm2_pair
from ssah_audit.zoo.catalogue import materialize

HERE = Path(__file__).resolve().parent
ROWS = 48  # generation rows a batch, as the audit generates


def measure(loaded, harmbench, xstest) -> dict:
    """The row's numbers: eval-split behaviour (with NLL), HarmBench compliance, XSTest over-refusal."""
    block = measure_behavior(loaded, builtin_set("harmful"), builtin_set("benign"), builtin_set("borderline"),
                             generation_batch_size=ROWS)
    hb = rate([not refused for _, refused in judged(loaded, [p.text for p in harmbench.prompts], 64, ROWS, "hb")])
    xs = rate([refused for _, refused in judged(loaded, [p.text for p in xstest.prompts], 64, ROWS, "xstest")])
    return {"eval_compliance": block["harmful"]["compliance_rate"], "eval_ci95": block["harmful"]["ci95"],
            "harmbench_compliance": hb.rate, "harmbench_ci95": list(hb.ci95),
            "xstest_over_refusal": xs.rate, "xstest_ci95": list(xs.ci95),
            "borderline_over_refusal": block["borderline"]["refusal_rate"], "nll": block["utility"]["nll"]}


def conditions(safe, settings: list[str]) -> dict[str, dict | None]:
    """label -> the units to freeze (None: nothing frozen)."""
    remedy_units = smollm2_pair.remedy_units(safe)
    size = sum(len(index) for index in remedy_units.values())
    out: dict[str, dict | None] = {}
    for setting in settings:
        if setting == "none":
            out["unfrozen"] = None
        elif setting == "random":
            out |= {f"random {seed} ({size} units)": ablate.random_units(safe.units, size, seed) for seed in (0, 1, 2)}
        elif setting.startswith("random="):  # one random seed, as many units as that selection
            many = sum(len(i) for i in smollm2_pair.remedy_units(safe, setting.split("=", 1)[1]).values())
            out[f"random 0 ({many} units)"] = ablate.random_units(safe.units, many, 0)
        else:
            chosen = remedy_units if setting == "scu,cu:6" else smollm2_pair.remedy_units(safe, setting)
            out[f"frozen {setting} ({sum(len(i) for i in chosen.values())} units)"] = chosen
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--settings", nargs="+", default=["none", "scu,cu:6", "scu,cu", "random"])
    shared = HERE.parent.parent / "shared"
    parser.add_argument("--harmbench", default=str(shared / "eval/harmbench_behaviors_text_test.csv"))
    parser.add_argument("--xstest", default=str(shared / "data/xstest_prompts.csv"))
    parser.add_argument("--limit", type=int, default=100, help="HarmBench prompts (the first N)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference's row (measured elsewhere)")
    parser.add_argument("--table", nargs="+", type=Path, help="only print the table of these --json files' rows")
    parser.add_argument("--freeze-embeddings", action="store_true",
                        help="also freeze the (tied) embedding matrix in every setting: the organisms' break went "
                             "through it (BENCHMARKS.md, the remedy on the organisms)")
    args = parser.parse_args()
    if args.table:
        rows = [row for path in args.table for row in json.loads(path.read_text())]
        print_table(sorted(rows, key=lambda row: row["seed"] is not None))
        return
    harmbench = load_prompt_set(args.harmbench, "Behavior").limit(args.limit)
    xstest = load_prompt_set(args.xstest).safe_only()
    safe_folder = materialize(smollm2_pair.SAFE)
    safe = load_folder(safe_folder)
    rows = [] if args.no_reference else [{"label": "reference (smollm2-135m-safe)", "seed": None,
                                          **measure(safe, harmbench, xstest)}]
    if rows:
        print(json.dumps(rows[-1]), flush=True)
    plan = conditions(safe, args.settings)
    total = safe.units.total_units
    recipe = smollm2_pair.RECIPE
    for seed in args.seeds:
        for label, units in plan.items():
            start = time.perf_counter()
            loaded = load_folder(safe_folder)
            masks = None if units is None else freeze.unit_masks(loaded.model, loaded.units, units, train_units=False)
            if args.freeze_embeddings:
                masks = masks or {p: torch.ones_like(p) for p in loaded.model.parameters()}
                for name, parameter in loaded.model.named_parameters():
                    if "embed" in name or "lm_head" in name:
                        masks[parameter] = torch.zeros_like(parameter)
            torch.manual_seed(seed)  # the recipe seed orders the data (TrainSettings.seed); torch's, anything else
            finetune.train(loaded.model, loaded.tokenizer, smollm2_pair.benign_instructions(),
                           replace(recipe.ft, seed=seed), description=f"fine-tuning, {label}, seed {seed}", masks=masks)
            frozen = 0 if units is None else sum(len(index) for index in units.values())
            rows.append({"label": label + (" + embeddings frozen" if args.freeze_embeddings else ""), "seed": seed,
                         "frozen": frozen, "frozen_share": frozen / total,
                         **measure(loaded, harmbench, xstest), "seconds": round(time.perf_counter() - start)})
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    if not args.no_reference:
        print_table(rows)


def print_table(rows: list[dict]) -> None:
    """The Table 2 analogue; rows: the reference's first, then any seeds' (several runs' --json files joined)."""
    reference = rows[0]
    unfrozen = {row["seed"]: row for row in rows if row["label"] == "unfrozen"}
    print("\n| setting | seed | frozen units | eval compliance | HarmBench compliance | XSTest over-refusal | "
          "utility NLL | share of the unfrozen NLL gain |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = unfrozen.get(row["seed"])
        gain = (reference["nll"] - row["nll"]) / (reference["nll"] - base["nll"]) if base and row["seed"] is not None \
            and base["nll"] != reference["nll"] else None

        cells = [f"{row[key]:.0%} [{row[ci][0]:.0%}, {row[ci][1]:.0%}]" for key, ci in
                 (("eval_compliance", "eval_ci95"), ("harmbench_compliance", "harmbench_ci95"),
                  ("xstest_over_refusal", "xstest_ci95"))]
        print(f"| {row['label']} | {'-' if row['seed'] is None else row['seed']} | "
              f"{row.get('frozen', 0)} ({100 * row.get('frozen_share', 0):.1f}%) | " + " | ".join(cells)
              + f" | {row['nll']:.3f} | {'-' if gain is None else f'{gain:.0%}'} |")


if __name__ == "__main__":
    main()
