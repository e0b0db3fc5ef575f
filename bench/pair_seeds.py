"""How stable is the embedded pair's behaviour across training seeds? Builds smollm2-135m-safe and -safe-ft with
the default recipe at several seeds (each build cached like the default one, about 13 minutes per seed on 2 cores)
and prints each model card's measured rows: eval-split harmful compliance, over-refusal and benign-answer NLL.

The seed drives the model's own sampled answers, the refusal phrasings, the data order and the training RNG; the
prompts and every other setting are fixed. Builds for seeds other than 0 are not read by the package: `ssah-audit
cache prune` removes them.
Run: .venv/bin/python bench/pair_seeds.py [SEED ...]   (default 0 1 2)
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import replace

from ssah_audit.zoo.smollm2_pair import RECIPE, SAFE, SAFE_FT, build


def card_rows(folder) -> list[str]:
    measured = json.loads((folder / "training.json").read_text(encoding="utf-8"))["measured"]
    return [value for key, value in measured.items() if key != "generation"]


def main() -> None:
    seeds = [int(arg) for arg in sys.argv[1:]] or [0, 1, 2]
    results = {}
    for seed in seeds:
        recipe = replace(RECIPE, seed=seed)
        for name in (SAFE, SAFE_FT):
            results[(seed, name)] = card_rows(build(name, recipe))
            print(f"seed {seed} {name:<22} compliance {results[(seed, name)][0]:<22} over-refusal "
                  f"{results[(seed, name)][1]:<22} NLL {results[(seed, name)][2]}", flush=True)
    for name in (SAFE, SAFE_FT):
        rates = [float(results[(seed, name)][0].split("%")[0]) for seed in seeds]
        refusals = [float(results[(seed, name)][1].split("%")[0]) for seed in seeds]
        spread = (lambda xs: f"{statistics.mean(xs):.1f}% (sd {statistics.stdev(xs):.1f})") if len(seeds) > 1 else (
            lambda xs: f"{xs[0]:.1f}%")
        print(f"{name}: compliance {spread(rates)}, over-refusal {spread(refusals)} over seeds {seeds}")


if __name__ == "__main__":
    main()
