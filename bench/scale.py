"""How the audit scales with model size (issue 18): random-weight Llama-architecture models of about 135M, 500M and
1.1B parameters (SmolLM2's tokenizer and chat template, SmolLM2-like shapes), each audited with --quick and no
reference in a fresh process; per stage the wall time, token positions through the model and the peak RSS within
the stage (sampled every 20 ms), against the weights' own size.

Time and memory should grow about linearly with parameters, and peak RSS stay within about 1.5x the weights plus a
constant. A random model never stops by itself, so every row is generated to the limit: the worst case.

Run: .venv/bin/python bench/scale.py [--sizes 135m 500m 1.1b] [--dtype float32|bfloat16]
     (one size per process: .venv/bin/python bench/scale.py --one 500m)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import TokenCounter, matmul_gflops

# (hidden, intermediate, layers, heads, kv heads): SmolLM2-135M's shape, then wider and deeper ones like it
SHAPES = {"135m": (576, 1536, 30, 9, 3), "500m": (1152, 3072, 32, 16, 4), "1.1b": (2048, 5632, 22, 32, 4)}


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2 ** 20


class StagePeaks(dict):
    """The audit's timings; for each stage, its token positions and the largest RSS seen while it ran."""

    def __init__(self, counter: TokenCounter):
        super().__init__()
        self.counter, self.tokens, self.peaks = counter, {}, {}
        self._seen, self._peak, self._running = 0, rss_mib(), True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while self._running:
            self._peak = max(self._peak, rss_mib())
            time.sleep(0.02)

    def __setitem__(self, key, value):
        self.tokens[key], self._seen = self.counter.tokens - self._seen, self.counter.tokens
        self.peaks[key], self._peak = max(self._peak, rss_mib()), rss_mib()
        super().__setitem__(key, value)

    def stop(self) -> None:
        self._running = False


def build(size: str, dtype: str, folder: Path) -> int:
    """A random-weight model of `size` with SmolLM2's tokenizer saved in `folder`; its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ssah_audit.models.resolve import load_model

    tokenizer = load_model("smollm2-135m-instruct").tokenizer
    hidden, intermediate, layers, heads, kv = SHAPES[size]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                         max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=100000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def one(size: str, dtype: str) -> dict:
    """Build, load and audit one size (in this process); a JSON-ready row."""
    from ssah_audit.auditing import AuditSettings, run
    from ssah_audit.models.resolve import load_model

    with tempfile.TemporaryDirectory(prefix=f"scale-{size}-") as folder:
        parameters = build(size, dtype, Path(folder))
        tic, before = time.perf_counter(), rss_mib()
        loaded = load_model(folder)
        load_seconds, loaded_rss = time.perf_counter() - tic, rss_mib()
        counter = TokenCounter(loaded.model)
        clock = StagePeaks(counter)
        run(loaded, None, AuditSettings.quick(), timings=clock)
        clock.stop()
    weights = parameters * (2 if dtype == "bfloat16" else 4) / 2 ** 20
    stages = {key.split(".", 1)[1]: {"seconds": value, "tokens": clock.tokens[key], "peak_rss_mib": clock.peaks[key]}
              for key, value in clock.items() if key.startswith("model.")}
    return {"size": size, "parameters": parameters, "dtype": dtype, "weights_mib": weights,
            "load_seconds": load_seconds, "rss_before_load_mib": before, "rss_loaded_mib": loaded_rss,
            "stages": stages, "matmul_gflops": matmul_gflops()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--one", choices=list(SHAPES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.dtype)))
        return
    rows = []
    for size in args.sizes:  # a fresh process per size: one's peak RSS must not carry into the next
        done = subprocess.run([sys.executable, __file__, "--one", size, "--dtype", args.dtype], check=True,
                              capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{size}: done", file=sys.stderr, flush=True)
    print(f"dtype {args.dtype}; --quick audit, no reference; RSS is the process's resident memory, "
          "model loaded and the ~0.5 GB of Python, torch and transformers included")
    print("| model | parameters | weights MiB | load s | RSS loaded MiB | stage | wall s | token positions | "
          "GFLOP/s | peak RSS MiB | peak / weights |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for stage, measured in row["stages"].items():
            gflops = 2 * row["parameters"] * measured["tokens"] / measured["seconds"] / 1e9
            print(f"| {row['size']} | {row['parameters'] / 1e6:.0f}M | {row['weights_mib']:.0f} | "
                  f"{row['load_seconds']:.1f} | {row['rss_loaded_mib']:.0f} | {stage} | {measured['seconds']:.1f} | "
                  f"{measured['tokens']:,} | {gflops:.0f} | {measured['peak_rss_mib']:.0f} | "
                  f"{measured['peak_rss_mib'] / row['weights_mib']:.2f} |")
    base = rows[0]
    for row in rows[1:]:
        growth = row["parameters"] / base["parameters"]
        times = ", ".join(f"{stage} {measured['seconds'] / base['stages'][stage]['seconds']:.1f}x"
                          for stage, measured in row["stages"].items())
        print(f"{row['size']} against {base['size']}: parameters {growth:.1f}x; time {times}")


if __name__ == "__main__":
    main()
