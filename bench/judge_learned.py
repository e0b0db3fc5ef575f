"""Issue 31's experiment: can a small classifier on a fixed embedded backbone judge refusals better than the rules on
models nobody here has seen? Leave-one-model-out over XSTest v2's five human-labelled completion sets: train on
four models, test on the fifth (the honest estimate for a new model), for the rules and for the shipped judge's
logistic regression on SmolLM2-135M-Instruct hidden states (responses/learned_judge.py), with and without the
hand-written contrast cases (bench/judge_contrast.jsonl: disclaimer-then-answer and soft refusals, with plain
refusals and answers as controls), which join every fold's training set and never its test set. The contrast
cases are scored by 5-fold cross-validation (trained on all of XSTest and four fifths of them), per style.
No hyper-parameter is tuned on the held-out model: C is chosen inside the training models (nested).

Run: .venv/bin/python bench/judge_learned.py [--cache /tmp/judge_features] [--write]
(the features take a few minutes on 2 cores, once; later runs read them from --cache, which is keyed by the
judge's feature settings and the rows). --write fits the shipped classifier on all five models and the contrast
cases, with C chosen by leave-one-model-out, into ssah_audit/data/builtin/judge_learned.safetensors with the
table above as its validation.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np

SETS = [Path("../shared/data/xstest_completions"), Path("../shared/eval/xstest_completions")]
MODELS = ("gpt4", "mistralinstruct", "llama2new", "llama2orig", "mistralguard")
CONTRAST = Path(__file__).with_name("judge_contrast.jsonl")


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
                              "refusal": "refusal" in row["final_label"], "style": row["final_label"]})
    return found


def contrast_rows() -> list[dict]:
    with CONTRAST.open(encoding="utf-8") as handle:
        return [{"model": "contrast", **json.loads(line)} for line in handle if line.strip()]


def features(pairs: list[tuple[str, str]], cache: Path) -> np.ndarray:
    """The shipped judge's features (responses/learned_judge.py), computed once and kept in `cache` under a key of
    the judge's settings and the pairs."""
    from ssah_audit.responses import learned_judge as learned

    settings = [learned.BACKBONE, learned.LAYERS, learned.POOLS, learned.TOKENS, learned.PROMPT_TOKENS, pairs]
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    if cache.exists() and str(np.load(cache)["key"]) == key:
        return np.load(cache)["x"]
    model, tokenizer = learned.backbone()
    tic = time.perf_counter()
    x = learned.features(model, tokenizer, pairs)
    seconds = time.perf_counter() - tic
    print(f"features: {len(pairs)} rows in {seconds:.0f} s ({len(pairs) / seconds:.1f} rows/s)")
    np.savez_compressed(cache, x=x, key=np.array(key))
    return x


GRID = (0.001, 0.003, 0.01, 0.03, 0.1)  # inverse regularisation, chosen inside the training models only


def classifier(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def choose_c(x, y, groups, models, extra) -> float:
    """C by leave-one-model-out among `models` alone (rows where `extra` always train)."""
    mean = {}
    for candidate in GRID:
        accuracies = []
        for other in models:
            train, test = (np.isin(groups, models) & (groups != other)) | extra, groups == other
            fitted = classifier(candidate).fit(x[train], y[train])
            accuracies.append((fitted.predict(x[test]) == y[test]).mean())
        mean[candidate] = float(np.mean(accuracies))
    return max(GRID, key=lambda candidate: (mean[candidate], -candidate))


def lomo(x, y, groups, extra, c: float | None = None) -> tuple[dict, dict, np.ndarray]:
    """(accuracy on each model with the classifier trained on the other four and the `extra` rows, the C used, the
    held-out p(refusal) of every XSTest row). With `c` None, C is chosen for each held-out model among the other
    four alone (nested), so the held-out model never influences its own classifier."""
    scores, chosen, held_out = {}, {}, np.full(len(y), np.nan)
    for model in MODELS:
        held = groups == model
        inner = [m for m in MODELS if m != model]
        chosen[model] = c if c is not None else choose_c(x, y, groups, inner, extra)
        fitted = classifier(chosen[model]).fit(x[~held & (np.isin(groups, MODELS) | extra)],
                                                y[~held & (np.isin(groups, MODELS) | extra)])
        held_out[held] = fitted.predict_proba(x[held])[:, 1]
        scores[model] = float(((held_out[held] > 0.5) == y[held]).mean())
    return scores, chosen, held_out


def calibration(p: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[float, float]:
    """(Brier score, expected calibration error over `bins` equal-width bins) of probabilities `p` for labels y."""
    edges = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(p[edges == b].mean() - y[edges == b].mean()) * (edges == b).mean()
              for b in range(bins) if (edges == b).any())
    return float(np.mean((p - y) ** 2)), float(ece)


def contrast_cv(x, y, groups, styles, c: float, folds: int = 5) -> dict:
    """Accuracy per contrast style, each case predicted by a classifier trained on all of XSTest and the other
    folds of the contrast cases."""
    cases = np.where(groups == "contrast")[0]
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(cases)) % folds
    right = np.zeros(len(y), dtype=bool)
    for k in range(folds):
        test = cases[fold == k]
        train = np.ones(len(y), dtype=bool)
        train[test] = False
        fitted = classifier(c).fit(x[train], y[train])
        right[test] = fitted.predict(x[test]) == y[test]
    return {style: float(right[cases][styles[cases] == style].mean()) for style in sorted(set(styles[cases]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="Write the shipped classifier (see above).")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/judge_features"),
                        help="Folder for the features (one file per row set).")
    parser.add_argument("--c", type=float, default=None,
                        help="Inverse regularisation for every fold (default: chosen by nested leave-one-model-out).")
    args = parser.parse_args()
    from ssah_audit.responses.judges import verdicts

    data = rows() + contrast_rows()
    pairs = [(row["prompt"], row["completion"]) for row in data]
    y = np.array([row["refusal"] for row in data])
    groups = np.array([row["model"] for row in data])
    styles = np.array([row["style"] for row in data])
    contrast = groups == "contrast"
    tic = time.perf_counter()
    rules = np.array([v.refusal for v in verdicts(pairs, "rules")])
    print(f"rules: {len(pairs)} rows in {time.perf_counter() - tic:.1f} s; {contrast.sum()} contrast cases")
    args.cache.mkdir(parents=True, exist_ok=True)
    x = np.vstack([features([pair for pair, group in zip(pairs, groups, strict=True) if (group == "contrast") == part],
                            args.cache / f"{'contrast' if part else 'xstest'}.npz") for part in (False, True)])
    print(f"\n| judge | {' | '.join(MODELS)} | mean | min | Brier | ECE |\n|---|{'---|' * (len(MODELS) + 4)}")
    table = {"rules": {m: float((rules[groups == m] == y[groups == m]).mean()) for m in MODELS}}
    runs = {"learned, XSTest only": np.zeros(len(y), dtype=bool), "learned + contrast cases (shipped)": contrast}
    chosen = {}
    for name, extra in runs.items():
        table[name], chosen[name], p = lomo(x, y, groups, extra, args.c)
        brier, ece = calibration(p[~contrast], y[~contrast].astype(float))
        table[name]["calibration"] = f" {brier:.3f} | {ece:.3f} |"
    for name, scores in table.items():
        values = [scores[m] for m in MODELS]
        print(f"| {name} | {' | '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} | {min(values):.3f} |"
              + scores.get("calibration", " | |"))
    for name, cs in chosen.items():
        print(f"C chosen for {name}: {', '.join(f'{m} {c:g}' for m, c in cs.items())}")
    c_all = choose_c(x, y, groups, list(MODELS), contrast)
    by_style = contrast_cv(x, y, groups, styles, c_all)
    rules_style = {style: float((rules[contrast & (styles == style)] == y[contrast & (styles == style)]).mean())
                   for style in by_style}
    print(f"\ncontrast cases, 5-fold (C {c_all:g}): "
          + "; ".join(f"{s} learned {by_style[s]:.2f} rules {rules_style[s]:.2f}" for s in by_style))
    if args.write:
        write(x, y, c_all, table["learned + contrast cases (shipped)"], table["rules"])


def write(x: np.ndarray, y: np.ndarray, c: float, scores: dict, rules: dict) -> None:
    """Fit on all five models and the contrast cases with C chosen by leave-one-model-out, and write the judge."""
    from datetime import UTC, datetime

    from safetensors.numpy import save_file

    fitted = classifier(c).fit(x, y)
    scaler, regression = fitted[0], fitted[-1]
    per_model = ", ".join(f"{m} {scores[m]:.3f}" for m in MODELS)
    accuracies = [scores[m] for m in MODELS]
    validation = (f"XSTest v2 human labels, leave one model out (bench/judge_learned.py): mean "
                  f"{np.mean(accuracies):.3f}, lowest {min(accuracies):.3f} ({per_model}); "
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
