"""Probing's fast paths against their baselines on smollm2-135m-instruct (K = 10):
- the paper variant's single pass per path against the naive per-step recomputation;
- the default self probe, each query encoded once for all its paths (probes/paths.query_path_states), against every
  path encoded whole as Q + path, the way it ran before.

Run: .venv/bin/python bench/probing.py [--prompts 8] [--steps 10] [--variants paper self] [--harmful SET]
Prints the wall times, the speed-ups, the largest difference between the results, and peak RSS.
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
    parser.add_argument("--harmful", help="prompt set (default: AdvBench, whose own targets make one compliance "
                        "path per prompt; the built-in set has four, as the audit probes)")
    parser.add_argument("--variants", nargs="+", default=["paper", "self"], choices=["paper", "self"])
    args = parser.parse_args()

    import numpy as np

    from ssah_audit.data.sets import load_prompt_set
    from ssah_audit.models.resolve import load_model
    from ssah_audit.probes import paper
    from ssah_audit.probes import paths as probe_paths
    from ssah_audit.probes import self as self_probe

    loaded = load_model("smollm2-135m-instruct")
    source = args.harmful or (str(ADVBENCH) if ADVBENCH.exists() else "harmful")
    prompts = load_prompt_set(source).prompts[: args.prompts]
    items = probe_paths.build_items(loaded.tokenizer, prompts, args.steps)

    print(f"{len(items)} prompts from {Path(source).name}, K={args.steps}, "
          f"{len(items[0].refusals)} refusal + {len(items[0].compliances)} compliance continuations each")
    if "paper" in args.variants:
        start = time.perf_counter()
        fast = paper.distances(loaded.model, items, args.steps)
        fast_s = time.perf_counter() - start
        start = time.perf_counter()
        slow = paper.naive_distances(loaded.model, items, args.steps)
        slow_s = time.perf_counter() - start
        diff = max(float(np.abs(fast[0] - slow[0]).max()), float(np.abs(fast[1] - slow[1]).max()))
        print(f"paper variant: naive: {slow_s:7.2f} s   single pass: {fast_s:7.2f} s   "
              f"speed-up: {slow_s / fast_s:.1f}x   max |difference|: {diff:.2e}")
    if "self" in args.variants:
        own = self_probe.own_continuations(loaded, prompts, args.steps)
        start = time.perf_counter()
        shared = self_probe.leans(loaded.model, items, own, args.steps).lean
        shared_s = time.perf_counter() - start
        start = time.perf_counter()
        whole = whole_sequence_margins(loaded.model, items, own, args.steps)
        whole_s = time.perf_counter() - start
        print(f"self probe: whole sequences {whole_s:7.2f} s   query encoded once: {shared_s:7.2f} s   "
              f"speed-up: {whole_s / shared_s:.1f}x   max |difference|: {float(np.abs(shared - whole).max()):.2e}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def whole_sequence_margins(model, items, own, steps: int, batch_size: int = 16):
    """The self probe's margins [prompts, layers + 1, steps] with every path encoded whole (Q + path[:steps]),
    about `batch_size` sequences a pass: the baseline of the shared-query pass."""
    import torch

    from ssah_audit.probes.paths import cosine_distance, hidden_at

    margins = []
    for index, item in enumerate(items):
        paths = [own[index]] + item.refusals + item.compliances
        positions = [[len(item.query) + k for k in range(steps)]] * len(paths)
        states = hidden_at(model, [item.query + path[:steps] for path in paths], positions, batch_size=batch_size)
        mine, refusing = states[0], states[1:1 + len(item.refusals)].mean(dim=0)
        complying = states[1 + len(item.refusals):].mean(dim=0)
        margins.append((cosine_distance(mine, complying) - cosine_distance(mine, refusing)).T)
    return torch.stack(margins).numpy()


if __name__ == "__main__":
    main()
