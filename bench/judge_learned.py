"""Issue 31's experiment: can a small classifier on a fixed embedded backbone judge refusals better than the rules on
models nobody here has seen? Leave-one-model-out over XSTest v2's five human-labelled completion sets: train on
four models, test on the fifth (the honest estimate for a new model), for the rules and for logistic regressions on
SmolLM2-135M-Instruct hidden states (a few layers, means over the completion's opening and over more of it),
with and without the rules' verdict as a feature. No hyper-parameter is tuned on the held-out model: one fixed
regularisation for every fold.

Run: .venv/bin/python bench/judge_learned.py [--cache /tmp/judge_features.npz] [--write]
(the features take some minutes on 2 cores, once; later runs read them from --cache). --write fits the shipped
classifier on all five models, with C chosen by leave-one-model-out over them, into
ssah_audit/data/builtin/judge_learned.safetensors with the table above as its validation.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

SETS = [Path("../shared/data/xstest_completions"), Path("../shared/eval/xstest_completions")]
MODELS = ("gpt4", "mistralinstruct", "llama2new", "llama2orig", "mistralguard")
POOLS = ("first6", "first32", "all")


def rows() -> list[dict]:
    found = []
    for model in MODELS:
        path = next(folder / f"xstest_v2_completions_{model}.csv" for folder in SETS
                    if (folder / f"xstest_v2_completions_{model}.csv").exists())
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                # stripped: Llama-2's and Mistral's completions start with a space, GPT-4's do not; unstripped, the
                # classifier learnt that artefact (GPT-4 held out: 0.59)
                found.append({"model": model, "prompt": row["prompt"].strip(),
                              "completion": (row["completion"] or "").strip(),
                              "refusal": "refusal" in row["final_label"]})
    return found


def features(pairs: list[tuple[str, str]]) -> dict:
    """{pool: [rows, layers, hidden]}, exactly as the shipped judge reads them (responses/learned_judge.py)."""
    from ssah_audit.responses import learned_judge as learned

    model, tokenizer = learned.backbone()
    flat = learned.features(model, tokenizer, pairs)
    shaped = flat.reshape(len(pairs), len(learned.POOLS), len(learned.LAYERS), -1)
    return {pool: shaped[:, slot] for slot, pool in enumerate(learned.POOLS)}


GRID = (0.001, 0.01, 0.1, 1.0)  # inverse regularisation, chosen inside the training models only


def classifier(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def lomo(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float | None = None) -> tuple[dict, dict]:
    """(accuracy on each model with the classifier trained on the other four, the C used). With `c` None, C is
    chosen for each held-out model by leave-one-model-out among the other four alone (nested), so the held-out
    model never influences its own classifier."""
    scores, chosen = {}, {}
    for model in MODELS:
        held = groups == model
        if c is None:
            inner = [m for m in MODELS if m != model]
            mean = {}
            for candidate in GRID:
                accuracies = []
                for other in inner:
                    train, test = ~held & (groups != other), groups == other
                    fitted = classifier(candidate).fit(x[train], y[train])
                    accuracies.append((fitted.predict(x[test]) == y[test]).mean())
                mean[candidate] = float(np.mean(accuracies))
            chosen[model] = max(GRID, key=lambda candidate: (mean[candidate], -candidate))
        else:
            chosen[model] = c
        fitted = classifier(chosen[model]).fit(x[~held], y[~held])
        scores[model] = float((fitted.predict(x[held]) == y[held]).mean())
    return scores, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="Write the shipped classifier (see above).")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/judge_features.npz"))
    parser.add_argument("--c", type=float, default=None,
                        help="Inverse regularisation for every fold (default: chosen by nested leave-one-model-out).")
    args = parser.parse_args()
    from ssah_audit.responses.judges import verdicts

    data = rows()
    pairs = [(row["prompt"], row["completion"]) for row in data]
    y = np.array([row["refusal"] for row in data])
    groups = np.array([row["model"] for row in data])
    tic = time.perf_counter()
    rules = np.array([v.refusal for v in verdicts(pairs, "rules")])
    print(f"rules: {len(pairs)} rows in {time.perf_counter() - tic:.1f} s")
    if args.cache.exists():
        stored = np.load(args.cache)
        found = {pool: stored[pool] for pool in POOLS}
    else:
        tic = time.perf_counter()
        found = features(pairs)
        seconds = time.perf_counter() - tic
        print(f"features: {len(pairs)} rows in {seconds:.0f} s ({len(pairs) / seconds:.1f} rows/s)")
        np.savez_compressed(args.cache, **found)
    flat = {pool: value.reshape(len(pairs), -1) for pool, value in found.items()}
    shipped = np.hstack([flat["first6"], flat["first32"], flat["all"]])
    variants = {
        "first32, layer 14": found["first32"][:, 1],
        "first6+first32 (the issue's baseline)": np.hstack([flat["first6"], flat["first32"]]),
        "first6+first32+all128 (shipped)": shipped,
        "first6+first32+all128+rules": np.hstack([shipped, rules[:, None].astype(np.float32) * 10]),
    }
    if args.write:  # only what is shipped
        variants = {name: x for name, x in variants.items() if name.endswith("(shipped)")}
    print(f"\n| judge | {' | '.join(MODELS)} | mean | min |\n|---|{'---|' * (len(MODELS) + 2)}")
    table = {"rules": {m: float((rules[groups == m] == y[groups == m]).mean()) for m in MODELS}}
    chosen = {}
    for name, x in variants.items():
        table[name], chosen[name] = lomo(x, y, groups, args.c)
    for name, scores in table.items():
        values = [scores[m] for m in MODELS]
        print(f"| {name} | {' | '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} | {min(values):.3f} |")
    for name, cs in chosen.items():
        print(f"C chosen for {name}: {', '.join(f'{m} {c:g}' for m, c in cs.items())}")
    if args.write:
        write(shipped, y, groups, table["first6+first32+all128 (shipped)"], table["rules"])


def write(x: np.ndarray, y: np.ndarray, groups: np.ndarray, scores: dict, rules: dict) -> None:
    """Fit on all five models, C chosen by leave-one-model-out over them, and write the judge's weights."""
    import json
    from datetime import UTC, datetime

    from safetensors.numpy import save_file

    mean = {}
    for candidate in GRID:
        accuracies = []
        for model in MODELS:
            held = groups == model
            fitted = classifier(candidate).fit(x[~held], y[~held])
            accuracies.append((fitted.predict(x[held]) == y[held]).mean())
        mean[candidate] = float(np.mean(accuracies))
    c = max(GRID, key=lambda candidate: (mean[candidate], -candidate))
    fitted = classifier(c).fit(x, y)
    scaler, regression = fitted[0], fitted[-1]
    per_model = ", ".join(f"{m} {scores[m]:.3f}" for m in MODELS)
    validation = (f"XSTest v2 human labels, leave one model out (bench/judge_learned.py): mean "
                  f"{np.mean(list(scores.values())):.3f}, lowest {min(scores.values()):.3f} ({per_model}); "
                  f"the rules on the same rows {np.mean(list(rules.values())):.3f} / {min(rules.values()):.3f}")
    meta = {"validation": validation, "C": c, "rows": int(len(y)), "fitted": datetime.now(UTC).strftime("%Y-%m-%d")}
    target = Path(__file__).resolve().parents[1] / "ssah_audit" / "data" / "builtin" / "judge_learned.safetensors"
    save_file({"mean": scaler.mean_.astype(np.float32), "scale": scaler.scale_.astype(np.float32),
               "coef": regression.coef_[0].astype(np.float32),
               "intercept": regression.intercept_.astype(np.float32)}, str(target),
              metadata={"judge": json.dumps(meta)})
    print(f"wrote {target} (C {c:g}; {validation})")


if __name__ == "__main__":
    main()
