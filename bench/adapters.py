"""A LoRA adapter on smollm2-135m-instruct: what loading and merging cost, and drift from the low-rank factors
against drift from dense weight differences.

The adapter is made here with `peft` (rank 16 on every linear layer, random non-zero B, as a trained adapter
would be) and saved to a temporary folder. Prints wall times of loading the base alone and base + adapter (with
`peft`'s merge), drift both ways with the largest relative difference between them, and peak resident memory.
Run: .venv/bin/python bench/adapters.py [--rank 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile
from pathlib import Path

from loading import timed  # bench/loading.py: this folder is on the path when a bench script runs

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def make_adapter(base_folder: str, out: Path, rank: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_folder),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                      init_lora_weights=False))
    model.peft_config["default"].base_model_name_or_path = "smollm2-135m-instruct"
    model.save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    from transformers.utils import logging

    from ssah_audit.compare.units import unit_drift
    from ssah_audit.models.resolve import load_model

    logging.disable_progress_bar()
    base, _ = timed("load smollm2-135m-instruct (fetched on first use)", lambda: load_model("smollm2-135m-instruct"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "adapter"
        make_adapter(base.location, folder, args.rank)
        adapter, with_adapter = timed(f"load base + rank-{args.rank} adapter, merged", lambda: load_model(str(folder)))
    _, base_only = timed("load smollm2-135m-instruct again", lambda: load_model("smollm2-135m-instruct"))
    print(f"adapter: {adapter.adapter['adapted_modules']} modules, {adapter.adapter['trainable_parameters']:,} "
          f"LoRA parameters; loading + merging costs {with_adapter - base_only:.2f} s over the base alone")
    fast, low_rank = timed("drift from the low-rank factors", lambda: unit_drift(adapter, base))
    dense, full = timed("drift from dense weight differences", lambda: unit_drift(
        dataclasses.replace(adapter, low_rank=None), base))
    worst = max(float(((fast[kind][name] - dense[kind][name]).abs() / dense[kind][name].abs().clamp_min(1e-12)).max())
                for kind in ("write", "read") for name in fast[kind])
    print(f"low-rank vs dense drift: {full / low_rank:.1f}x; largest relative difference {worst:.1e}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
