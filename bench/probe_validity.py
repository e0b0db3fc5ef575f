"""Does the probe predict behaviour? Issue 17's validation: every probe variant's score per model, and the
per-prompt AUROC of its lean against each prompt's own refusal (greedy generation + the judge), models pooled.

Variants (one row each):
- paper: the SSAH paper's cosine margin d_C - d_R, mean over layers and k >= 2 (paper.distances);
- self (the default probe): the cosine margin of the model's own greedy continuation G, d(G[:k], C[:k]) -
  d(G[:k], R[:k]) between last-token states, mean over layers and k >= 2 (probes/self.py; its first
  `steps` tokens are taken from the judged completions, as the audit does);
- lens: log p(R[:K]) - log p(C[:K]) at the last layer (probes/lens.py);
- lens@layer L: the same read at each earlier layer through the final norm and LM head (the best one is printed);
- forced prefix: log p(refusal opening's first token) - log p(C[0]) before any compliant token (probes/lens.py);

Run: .venv/bin/python bench/probe_validity.py [--models organism-aligned organism-unaligned]
       [--harmful harmful] [--prompt-field F] [--limit N] [--max-new-tokens 64]
     SmolLM2 trio on HarmBench (unseen: never tune to it):
     .venv/bin/python bench/probe_validity.py --models smollm2-135m-instruct smollm2-135m-safe smollm2-135m-safe-ft \\
       --harmful ../shared/eval/harmbench_behaviors_text_test.csv --prompt-field Behavior --limit 100
A zoo name that is not built yet is built first (the SmolLM2 pair takes tens of minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ssah_audit.data.sets import load_prompt_set
from ssah_audit.models.resolve import load_model
from ssah_audit.probes import lens as lens_probe
from ssah_audit.probes import paper
from ssah_audit.probes import paths as probe_paths
from ssah_audit.probes import self as self_probe
from ssah_audit.responses.evaluate import judged


def per_prompt_leans(loaded, prompts, steps: int, batch_size: int, completions: list[str]) -> dict[str, np.ndarray]:
    """Each variant's per-prompt lean (> 0 predicts a refusal)."""
    items = probe_paths.build_items(loaded.tokenizer, prompts, steps)
    d_r, d_c = paper.distances(loaded.model, items, steps, batch_size=batch_size)
    lens = lens_probe.leans(loaded.model, items, steps, batch_size)
    own = self_probe.own_continuations(loaded, prompts, steps, batch_size, completions)
    out = {"paper": (d_c - d_r)[:, :, 1:].mean(axis=(1, 2)), "forced prefix": lens.hold[:, -1, 0],
           "self (default)": self_probe.leans(loaded.model, items, own, steps, batch_size).per_prompt}
    for layer in range(lens.lean.shape[1]):
        out[f"lens@{layer}"] = lens.lean[:, layer, -1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["organism-aligned", "organism-unaligned"])
    parser.add_argument("--harmful", default="harmful")
    parser.add_argument("--prompt-field")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--steps", type=int, default=probe_paths.DEFAULT_STEPS)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    harmful = load_prompt_set(args.harmful, args.prompt_field).limit(args.limit)
    prompts = harmful.prompts
    refused, leans, layers = {}, {}, None
    for name in args.models:
        start = time.perf_counter()
        loaded = load_model(name)
        verdicts = judged(loaded, [p.text for p in prompts], args.max_new_tokens, args.batch_size, name)
        refused[name] = np.array([r for _, r in verdicts], dtype=float)
        leans[name] = per_prompt_leans(loaded, prompts, args.steps, args.batch_size, [c for c, _ in verdicts])
        layers = loaded.model.config.num_hidden_layers + 1
        print(f"{name}: refusal {refused[name].mean():.0%} of {len(prompts)} ({harmful.name}), "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    variants = ["paper", "self (default)", "forced prefix"] + [f"lens@{layer}" for layer in range(layers)]
    pooled = np.concatenate([refused[name] for name in args.models])
    print("\n| variant | " + " | ".join(f"{name} score" for name in args.models) + " | pooled AUROC vs own refusal |")
    print("|---|" + "---|" * (len(args.models) + 1))
    for variant in variants:
        # the paper's score is the share of positive cells; for one row per prompt, the share of positive leans
        scores = [float((leans[name][variant] > 0).mean()) for name in args.models]
        values = np.concatenate([leans[name][variant] for name in args.models])
        auroc = (lens_probe.auroc(values[pooled == 1], values[pooled == 0])
                 if 0 < pooled.mean() < 1 else float("nan"))
        label = "lens" if variant == f"lens@{layers - 1}" else variant
        print(f"| {label} | " + " | ".join(f"{s:.2f}" for s in scores) + f" | {auroc:.3f} |")
    print("| measured refusal (judge) | " + " | ".join(f"{refused[n].mean():.2f}" for n in args.models) + " | - |")


if __name__ == "__main__":
    main()
