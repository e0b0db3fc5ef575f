"""The audit stage by stage against the compute limit (issue 18): wall time, token positions through the models,
achieved GFLOP/s (2 x parameters x tokens / s) and the ratio of each stage's wall time to the time its tokens would
take at the machine's fp32 matmul rate (measured in the same run), and peak RSS.

Two audits of MODEL against REFERENCE in one process: first with no reference block cached (a fresh audit-references
folder beside the cached models), then with the reference's block cached, as a CI gate auditing its next fine-tune
would run. The plain round is timed before, between and after them, and each audit is stated in the mean of the
rounds either side of it.

The judge's share is timed too (every verdict the audit asks for, the backbone's first load included): the audit
with a judge that costs nothing would take the total less that, so total / (total - judge) is what the judge
costs over the rules (which judge thousands of answers a second).

Run: .venv/bin/python bench/audit_stages.py [--model smollm2-135m-safe-ft] [--reference smollm2-135m-safe] [--quick]
     [--set KEY=VALUE ...]   (AuditSettings fields, e.g. --set verify_tokens=64 for the ablation rows of before,
     judge=rules) [--report FOLDER]   (the second audit's reports, as reports/example holds them)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from machine import TokenCounter, matmul_gflops, peak_rss_mib


def fresh_reference_cache() -> None:
    """Point the cache at a root that shares the built models (symlinks) but holds no audit-reference block."""
    from ssah_audit.cache import KINDS, cache_root

    real, root = cache_root(), Path(tempfile.mkdtemp(prefix="audit-stages-"))
    for kind in KINDS:
        if kind != "audit-references" and (real / kind).is_dir():
            (root / kind).symlink_to(real / kind)
    os.environ["SSAH_AUDIT_CACHE"] = str(root)


class StageClock(dict):
    """The audit's timings: each time a stage reports its seconds, the token positions counted since the last."""

    def __init__(self, counters: list[TokenCounter]):
        super().__init__()
        self.counters, self.tokens, self._seen = counters, {}, 0

    def __setitem__(self, key, value):
        now = sum(counter.tokens for counter in self.counters)
        self.tokens[key], self._seen = now - self._seen, now
        super().__setitem__(key, value)


class JudgeClock:
    """Seconds and answers in every call for verdicts (responses.judges.verdicts, which refusals calls too)."""

    def __init__(self):
        from ssah_audit.responses import judges

        self.module, self.original, self.seconds, self.answers = judges, judges.verdicts, 0.0, 0

        def timed(pairs, judge=None):
            tic = time.perf_counter()
            try:
                return self.original(pairs, judge)
            finally:
                self.seconds += time.perf_counter() - tic
                self.answers += len(pairs)

        judges.verdicts = timed

    def close(self):
        self.module.verdicts = self.original


def plain_round(loaded) -> float:
    """Seconds of one plain Hugging Face generation round, the unit the audit's cost is stated in (issue 36): the
    100 held-out harmful prompts, chat-formatted, 64 new tokens, 16 a batch, left-padded, `model.generate`, greedy."""
    import torch

    from ssah_audit.data.sets import builtin_set
    from ssah_audit.models.chat import format_prompt

    tokenizer, model = loaded.tokenizer, loaded.model
    texts = [format_prompt(tokenizer, p.text) for p in builtin_set("harmful").prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(texts), 16):
            batch = tokenizer(texts[first:first + 16], return_tensors="pt", padding=True, add_special_tokens=False)
            model.generate(**batch, max_new_tokens=64, do_sample=False, pad_token_id=pad)
    tokenizer.padding_side = side
    return time.perf_counter() - start


def audit_once(model, reference, settings) -> tuple[list[tuple[str, float, int]], dict, JudgeClock]:
    """[(stage, seconds, tokens)] of one audit, the total last, its results, and the judge's time in it."""
    from ssah_audit import auditing as audit

    counters = [TokenCounter(model.model), TokenCounter(reference.model)]
    clock, judge = StageClock(counters), JudgeClock()
    start = time.perf_counter()
    try:
        results = audit.run(model, reference, settings, timings=clock)
    finally:
        judge.close()
        for counter in counters:
            counter.close()
    wall = time.perf_counter() - start
    rows = [(key, value, clock.tokens[key]) for key, value in clock.items()
            if key != "total" and isinstance(value, float)]
    rows.append(("audit total", wall, sum(counter.tokens for counter in counters)))
    return rows, results, judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-safe-ft")
    parser.add_argument("--reference", default="smollm2-135m-safe")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--report", type=Path, help="Render the second audit's reports into this new folder.")
    parser.add_argument("--threads", type=int, help="torch threads for the round and both audits (a slower machine: "
                        "1 on a 2-core one); default torch's own")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    fresh_reference_cache()
    from ssah_audit.auditing import AuditSettings
    from ssah_audit.models.resolve import load_model

    changes = {}
    for item in args.set:
        key, value = item.split("=", 1)
        changes[key] = int(value) if value.isdigit() else value
    settings = AuditSettings.quick(**changes) if args.quick else AuditSettings(**changes)
    model, reference = load_model(args.model), load_model(args.reference)
    parameters = sum(p.numel() for p in model.model.parameters())
    machine = matmul_gflops()
    import torch

    print(f"{args.model} against {args.reference}: {parameters / 1e6:.0f}M parameters; settings {changes or 'default'}"
          f"{' (quick)' if args.quick else ''}; {torch.get_num_threads()} torch threads; machine fp32 matmul "
          f"{machine:.0f} GFLOP/s")
    before = plain_round(model)
    print(f"one plain HF generation round (100 harmful prompts x 64 tokens, batch 16, model.generate): "
          f"{before:.1f} s, timed again after each audit; an audit's rounds are against the mean of the rounds "
          "before and after it (the machine's speed drifts by 10-30% within an hour here)")
    for label in ("no reference block cached", "reference block cached"):
        rows, results, judge = audit_once(model, reference, settings)
        after = plain_round(model)
        round_seconds, before = (before + after) / 2, after
        print(f"\nround before {2 * round_seconds - after:.1f} s, after {after:.1f} s: mean {round_seconds:.1f} s")
        print(f"{label}: verdict {'PASS' if results['gate']['passed'] else 'FAIL'}, compliance "
              f"{results['behavior']['harmful']['compliance_rate']:.0%} vs "
              f"{results['reference']['behavior']['harmful']['compliance_rate']:.0%}, probe "
              f"{results['probe']['safe_direction_score']:.2f} vs "
              f"{results['comparison']['probe']['safe_direction_score']:.2f}")
        print("| stage | wall s | rounds | token positions | GFLOP/s achieved | wall / limit at the matmul rate |")
        print("|---|---|---|---|---|---|")
        for stage, seconds, tokens in rows:
            flops = 2 * parameters * tokens
            achieved = flops / seconds / 1e9 if seconds else 0.0
            ratio = seconds / (flops / machine / 1e9) if tokens else float("inf")
            print(f"| {stage} | {seconds:.1f} | {seconds / round_seconds:.2f} | {tokens:,} | {achieved:.1f} | "
                  f"{ratio:.1f}x |")
        for who, block in (("model", results), ("reference", results["reference"])):
            print(f"{who} units stage, seconds: {block['units'].get('seconds')}; probe {block['probe']['seconds']} s")
        total = rows[-1][1]
        print(f"**{label}: {total:.1f} s = {total / round_seconds:.2f} rounds**")
        print(f"judge {settings.judge}: {judge.answers} answers in {judge.seconds:.1f} s "
              f"({judge.answers / max(judge.seconds, 1e-9):.0f} a second), {judge.seconds / total:.1%} of the audit; "
              f"the audit over the same audit with a judge that costs nothing: {total / (total - judge.seconds):.3f}x")
    if args.report:
        from ssah_audit.api import report

        print(f"reports: {report(results, args.report)}")
    print(f"\npeak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
