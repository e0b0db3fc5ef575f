"""Batched vs one-prompt-at-a-time greedy generation on smollm2-135m-instruct: same outputs, how much faster.

Run: .venv/bin/python bench/generation.py [--prompts 32] [--max-new-tokens 48] [--batch-size 16]
Prompts are the first N AdvBench goals when ../shared/data is present, else the built-in harmful eval split.
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
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from ssah_audit.data.sets import load_prompt_set
    from ssah_audit.models.resolve import load_model
    from ssah_audit.responses.generate import generate

    loaded = load_model("smollm2-135m-instruct")
    source = str(ADVBENCH) if ADVBENCH.exists() else "harmful"
    prompts = [p.text for p in load_prompt_set(source).prompts[: args.prompts]]

    start = time.perf_counter()
    batched = generate(loaded.model, loaded.tokenizer, prompts, args.max_new_tokens, args.batch_size)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = [generate(loaded.model, loaded.tokenizer, [p], args.max_new_tokens, 1)[0] for p in prompts]
    single_s = time.perf_counter() - start

    same = sum(a == b for a, b in zip(batched, single, strict=True))
    print(f"prompts {len(prompts)} from {Path(source).name}, max_new_tokens {args.max_new_tokens}, "
          f"batch size {args.batch_size}, torch threads {__import__('torch').get_num_threads()}")
    print(f"one at a time: {single_s:7.2f} s   batched: {batched_s:7.2f} s   speed-up: {single_s / batched_s:.2f}x")
    print(f"identical outputs: {same}/{len(prompts)}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
