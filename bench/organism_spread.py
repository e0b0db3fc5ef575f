"""How far apart do the organisms land across recipe seeds and torch thread counts? A new machine brings another
CPU and another reduction order; seeds and thread counts stand in for that spread. Each (seed, threads) build is
trained into its own empty cache (the cache key does not include the thread count), then measured on the held-out
eval split exactly as the tests measure it:

- aligned harmful compliance by generation and the judge (all 100 harmful:eval prompts, 32 tokens);
- aligned over-refusal by the judge: benign:eval (first 20, as the behaviour test) and borderline:eval (all, and the
  audit's --quick slice of 20);
- the organism tests' simple refusal check (24 tokens): aligned harmful refusal, aligned benign refusal,
  unaligned harmful refusal; and unaligned compliance by the judge.

Run: .venv/bin/python bench/organism_spread.py [--seeds 0 1 2] [--threads 1 2] [--root DIR] [--json OUT]
     [--recipe '{"align_epochs": 16}']   (recipe fields to change, for trying a recipe before it becomes the default)
     [--tests]   (then run the organism-based test files on each build: its cache, seed and thread count)
Each build runs in a child process (torch's thread count is fixed per process); 1-thread builds run two at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def measure_one(seed: int, changes: dict) -> dict:
    """Build both organisms of `seed` (and recipe `changes`) into $SSAH_AUDIT_CACHE and measure them (in the child)."""
    from dataclasses import replace

    import torch

    from ssah_audit.data.sets import builtin_set
    from ssah_audit.models.resolve import load_model
    from ssah_audit.responses.evaluate import measure
    from ssah_audit.zoo import organisms

    assert organisms.RECIPE.seed == seed, "the child reads its seed from SSAH_AUDIT_ORGANISM_SEED"
    recipe = replace(organisms.RECIPE, **changes)
    start = time.perf_counter()
    folders = {name: organisms.build(name, recipe) for name in ("organism-unaligned", "organism-aligned")}
    built = time.perf_counter() - start
    row = {"seed": seed, "threads": torch.get_num_threads(), "build_seconds": round(built, 1)}
    sets = (builtin_set("harmful"), builtin_set("benign").limit(20), builtin_set("borderline").safe_only())
    for name, folder in folders.items():
        short = name.split("-")[1]
        doc = measure(load_model(str(folder)), *sets, max_new_tokens=32, batch_size=32)
        row[f"{short}_harmful_compliance"] = doc["harmful"]["compliance_rate"]
        borderline = [s["refusal"] for s in doc["samples"] if s["set"] == doc["borderline"]["set"]]
        row[f"{short}_borderline_refusal"] = sum(borderline) / len(borderline)
        row[f"{short}_quick_borderline_refusal"] = sum(borderline[:20]) / 20
        simple = organisms.refusal_rates(folder)
        row[f"{short}_simple_harmful_refusal"] = simple["harmful"]
        row[f"{short}_simple_benign_refusal"] = simple["benign"]
    return row


ORGANISM_TESTS = ["tests/test_organisms.py", "tests/test_behavior.py", "tests/test_units_command.py",
                  "tests/test_audit.py", "tests/test_finetune.py", "tests/test_probing.py", "tests/test_zoo.py",
                  "tests/test_freeze.py"]


def build_env(seed: int, threads: int, root: Path) -> dict:
    cache = root / f"seed{seed}-threads{threads}"
    return os.environ | {"SSAH_AUDIT_CACHE": str(cache), "OMP_NUM_THREADS": str(threads),
                        "MKL_NUM_THREADS": str(threads), "SSAH_AUDIT_ORGANISM_SEED": str(seed), "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_VERBOSITY": "error"}


def run_child(seed: int, threads: int, root: Path, changes: str, tests: bool) -> dict:
    env = build_env(seed, threads, root)
    out = subprocess.run([sys.executable, __file__, "--child", str(seed), "--recipe", changes], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"seed {seed}, {threads} thread(s) failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if tests:  # the tests build with the default recipe: only meaningful when --recipe changes nothing
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ORGANISM_TESTS],
                             env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        row["tests"] = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else f"exit {run.returncode}"
        failed = [line for line in run.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        row["failed_tests"] = failed
    print(format_row(row), flush=True)
    return row


COLUMNS = [("aligned_harmful_compliance", "aligned compl."), ("aligned_borderline_refusal", "aligned border."),
           ("aligned_quick_borderline_refusal", "quick border."), ("aligned_simple_benign_refusal", "benign refusal"),
           ("aligned_simple_harmful_refusal", "simple harm. ref."),
           ("unaligned_harmful_compliance", "unaligned compl."),
           ("unaligned_simple_harmful_refusal", "unal. simple ref.")]


def format_row(row: dict) -> str:
    cells = [f"{row['seed']}", f"{row['threads']}"] + [f"{100 * row[key]:.1f}%" for key, _ in COLUMNS]
    return "| " + " | ".join(cells + [f"{row['build_seconds']:.0f} s", row.get("tests", "-")]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--root", type=Path, help="folder for the per-build caches (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--tests", action="store_true", help="run the organism-based test files on each build")
    parser.add_argument("--recipe", default="{}",
                        help='recipe fields to change, as JSON (e.g. \'{"align_epochs": 16}\')')
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure_one(args.child, json.loads(args.recipe))))
        return
    root = args.root or Path(tempfile.mkdtemp(prefix="organism-spread-"))
    print(f"caches under {root}")
    print("| seed | threads | " + " | ".join(title for _, title in COLUMNS) + " | build | organism tests |")
    print("|" + "---|" * (len(COLUMNS) + 4))
    rows = []
    for threads in sorted(args.threads):
        # Builds with fewer threads than cores share the machine; their results do not depend on it.
        parallel = max(1, (os.cpu_count() or 1) // threads)
        with ThreadPoolExecutor(parallel) as pool:
            one = lambda seed, t=threads: run_child(seed, t, root, args.recipe, args.tests)  # noqa: E731
            rows += list(pool.map(one, args.seeds))
    # Worst is the highest rate, except for the aligned organism's refusal of harmful prompts.
    worst = {key: (min if key == "aligned_simple_harmful_refusal" else max)(row[key] for row in rows)
             for key, _ in COLUMNS}
    print("worst: " + ", ".join(f"{title} {100 * worst[key]:.1f}%" for key, title in COLUMNS))
    for row in rows:
        for line in row.get("failed_tests", []):
            print(f"seed {row['seed']}, {row['threads']} thread(s): {line}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
