"""Single-pass probing vs the naive per-step recomputation on smollm2-135m-instruct (K = 10).

Run: .venv/bin/python bench/probing.py [--prompts 8] [--steps 10]
Prints both wall times, the speed-up, the largest difference between the two results, and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ADVBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "advbench_harmful_behaviors.csv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import numpy as np

    from ssah_audit import probe_paths, probing
    from ssah_audit.data.sets import load_prompt_set
    from ssah_audit.models.resolve import load_model

    loaded = load_model("smollm2-135m-instruct")
    source = str(ADVBENCH) if ADVBENCH.exists() else "harmful"
    prompts = load_prompt_set(source).prompts[: args.prompts]
    items = probe_paths.build_items(loaded.tokenizer, prompts, args.steps)

    start = time.perf_counter()
    fast = probing.distances(loaded.model, items, args.steps)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = probing.naive_distances(loaded.model, items, args.steps)
    slow_s = time.perf_counter() - start
    diff = max(float(np.abs(fast[0] - slow[0]).max()), float(np.abs(fast[1] - slow[1]).max()))
    print(f"{len(items)} prompts from {Path(source).name}, K={args.steps}, "
          f"{len(items[0].refusals)} refusal + {len(items[0].compliances)} compliance continuations each")
    print(f"naive: {slow_s:7.2f} s   single pass: {fast_s:7.2f} s   speed-up: {slow_s / fast_s:.1f}x   "
          f"max |difference|: {diff:.2e}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
