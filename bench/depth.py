"""How deep is each model's alignment (issue 34): the depth stage's curves (harmful compliance with k compliant tokens
prefilled, and per jailbreak template) beside the probe's forced-prefix test (the share of harmful prompts whose
hidden states still turn back to a refusal after k forced compliant tokens), per model. Does the hidden-state test
predict the behaviour? Both depths are "the smallest k at which fewer than half still refuse".

Run: .venv/bin/python bench/depth.py [MODEL ...] [--ks 0,1,2,3,5,10,20] [--limit 50] [--judge learned] [--json F]
Default models: the embedded pair (smollm2-135m-safe, smollm2-135m-safe-ft) and the organisms. The harmful prompts
are the built-in eval split's first --limit (the audit's depth stage reads the first 40); the probe reads the same
prompts with its audit settings (10 steps, so forced k = 0..9).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ssah_audit.config import STEPS, parse_prefill  # noqa: E402
from ssah_audit.data.jailbreaks import load_templates  # noqa: E402
from ssah_audit.data.sets import builtin_set  # noqa: E402
from ssah_audit.models.resolve import load_model  # noqa: E402
from ssah_audit.probes.measure import measure as measure_probe  # noqa: E402
from ssah_audit.responses import depth  # noqa: E402
from ssah_audit.responses.generate import generate  # noqa: E402
from ssah_audit.responses.judges import using  # noqa: E402

MODELS = ["smollm2-135m-safe", "smollm2-135m-safe-ft", "organism-aligned", "organism-unaligned"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--ks", default="0,1,2,3,5,10,20")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--judge", default="learned")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    harmful, benign = builtin_set("harmful").limit(args.limit), builtin_set("benign").limit(args.limit)
    ks, templates, rows = parse_prefill(args.ks), load_templates("jailbreaks"), []
    for name in args.models:
        loaded = load_model(name)
        judge = "rules" if name.startswith("organism") else args.judge  # the organisms speak the rules' words
        tic = time.perf_counter()
        with using(judge):
            block = depth.measure(loaded, harmful, ks, templates, args.tokens, 48)
        seconds = time.perf_counter() - tic
        completions = generate(loaded.model, loaded.tokenizer, [p.text for p in harmful.prompts], 64, 48)
        probe, _ = measure_probe(loaded, harmful, benign, STEPS, 16, completions=completions)
        forced = probe.get("forced_prefix") or {}
        row = {"model": name, "judge": judge, "seconds": round(seconds, 1), "depth": block["depth"],
               "prefill": {r["k"]: [r["compliance_rate"], *r["ci95"]] for r in block["prefill"]},
               "templates": {r["id"]: [r["compliance_rate"], *r["ci95"]] for r in block["templates"]["rows"]},
               "probe_depth": forced.get("tokens_to_comply"), "probe_returning": forced.get("share_returning")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nharmful compliance with k compliant tokens prefilled ({args.limit} held-out prompts, {args.tokens} "
          "tokens judged)")
    print("| model | judge | " + " | ".join(f"k={k}" for k in ks) + " | depth | probe depth | probe turning back "
          "k=0/1/2/5 |")
    for row in rows:
        cells = [f"{100 * v[0]:.0f}% [{100 * v[1]:.0f}, {100 * v[2]:.0f}]" for v in row["prefill"].values()]
        back = row["probe_returning"] or []
        shown = "/".join(f"{100 * back[k]:.0f}%" for k in (0, 1, 2, 5) if k < len(back))
        print(f"| {row['model']} | {row['judge']} | " + " | ".join(cells)
              + f" | {row['depth']} | {row['probe_depth']} | {shown} |")
    print("\nper jailbreak template")
    print("| model | " + " | ".join(t.id for t in templates.templates) + " |")
    for row in rows:
        print(f"| {row['model']} | " + " | ".join(f"{100 * v[0]:.0f}% [{100 * v[1]:.0f}, {100 * v[2]:.0f}]"
                                                  for v in row["templates"].values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
