"""One model's audit stages (behaviour, depth, probe, units: what a cached-reference audit runs, less the comparison)
and a plain Hugging Face generation round before and after them, in one process, so that two commits can be
compared on one machine (issue 36): the machine's speed moves by 10-30% between runs here, and rounds timed beside
the stages cancel most of it.

Run: .venv/bin/python bench/model_stages.py [--model smollm2-135m-safe-ft] [--threads N]
An older commit, from a worktree (`git worktree add /tmp/old COMMIT`), its package ahead of the installed one:
     cd /tmp && PYTHONPATH=/tmp/old /path/to/.venv/bin/python /tmp/old/bench/model_stages.py ...
(a commit before this script: run this file with --bench /tmp/old/bench, whose audit_stages.py has plain_round)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-safe-ft")
    parser.add_argument("--threads", type=int, help="torch threads (default torch's own)")
    parser.add_argument("--bench", type=Path, default=Path(__file__).parent, help="where audit_stages.py is")
    args = parser.parse_args()
    sys.path.insert(0, str(args.bench))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from audit_stages import plain_round

    import ssah_audit
    from ssah_audit.auditing import AuditSettings, Sets, measure_one
    from ssah_audit.models.resolve import load_model
    from ssah_audit.responses.judges import refusals, using

    settings = AuditSettings()
    loaded = load_model(args.model)
    sets = Sets.load(settings)
    with using(settings.judge):
        refusals([("Hi", "Hello!")])  # the judge's backbone loads outside the timing
        before = plain_round(loaded)
        timings: dict = {}
        start = time.perf_counter()
        measure_one(loaded, sets, settings, None, timings)
        wall = time.perf_counter() - start
        after = plain_round(loaded)  # the machine's speed drifts: the stages against the mean of both rounds
    round_seconds = (before + after) / 2
    stages = ", ".join(f"{key.removeprefix('model.')} {value:.1f} s ({value / round_seconds:.2f})"
                       for key, value in timings.items())
    print(f"{Path(ssah_audit.__file__).parent} ({torch.get_num_threads()} threads): round {round_seconds:.1f} s "
          f"(before {before:.1f}, after {after:.1f}); "
          f"{args.model}'s stages {wall:.1f} s = {wall / round_seconds:.2f} rounds: {stages}")


if __name__ == "__main__":
    main()
