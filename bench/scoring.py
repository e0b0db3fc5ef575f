"""Cost of a unit-scoring pass relative to a bare forward pass over the same tokens, on smollm2-135m-instruct.

Run: .venv/bin/python bench/scoring.py [--pairs 64] [--batch-size 8] [--repeats 3]
The calibration data is what `ssah-audit units` uses: harmful train prompts with refusal openings and benign
train prompts with their answers. Prints the best-of-N wall time of the bare decoder forward, of the
streaming statistics pass (hooks on all 60 write-backs, float64 merges), of the snip pass (forward and
backward), their ratios, and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from ssah_audit.data.sets import builtin_set
    from ssah_audit.models.resolve import load_model
    from ssah_audit.progress import set_quiet
    from ssah_audit.unit_classes import calibration, stats

    set_quiet(True)
    loaded = load_model("smollm2-135m-instruct")
    half = args.pairs // 2
    pairs = (calibration.safety_pairs(builtin_set("harmful:train").limit(half))[0]
             + calibration.utility_pairs(builtin_set("benign:train").limit(half)))
    exchanges = stats.encode(loaded.tokenizer, pairs)
    batches = list(stats._batches(loaded.model, exchanges, args.batch_size, response_only=False))
    tokens = sum(int(mask.sum()) for _, mask, _, _ in batches)

    @torch.inference_mode()
    def bare():
        for ids, mask, _, _ in batches:
            loaded.model.base_model(input_ids=ids, attention_mask=mask)

    bare_s = best_of(args.repeats, bare)
    stats_s = best_of(args.repeats, lambda: stats.collect(loaded.model, loaded.units, exchanges, args.batch_size))
    snip_s = best_of(1, lambda: stats.saliency(loaded.model, loaded.units, exchanges, args.batch_size))
    print(f"{len(exchanges)} calibration exchanges, {tokens:,} real tokens, batch {args.batch_size}, "
          f"{loaded.units.total_units:,} units in {len(loaded.units.modules())} write-backs")
    print(f"bare forward: {bare_s:6.2f} s   statistics pass: {stats_s:6.2f} s   ratio {stats_s / bare_s:.2f}x")
    print(f"snip pass (forward + backward): {snip_s:6.2f} s   ratio {snip_s / bare_s:.2f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
