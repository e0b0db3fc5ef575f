"""Issue 31's experiment: can a small classifier on a fixed embedded backbone judge refusals better than the rules on
models nobody here has seen? Leave-one-model-out over XSTest v2's five human-labelled completion sets: train on
four models, test on the fifth (the honest estimate for a new model), for the rules and for logistic regressions on
SmolLM2-135M-Instruct hidden states (a few layers, means over the completion's opening and over more of it),
with and without the rules' verdict as a feature. No hyper-parameter is tuned on the held-out model: one fixed
regularisation for every fold.

Run: .venv/bin/python bench/judge_learned.py [--tokens 128] [--layers 8 14 20] [--cache /tmp/judge_features.npz]
(the features take some minutes on 2 cores, once; later runs read them from --cache).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

SETS = [Path("../shared/data/xstest_completions"), Path("../shared/eval/xstest_completions")]
MODELS = ("gpt4", "mistralinstruct", "llama2new", "llama2orig", "mistralguard")
POOLS = {"first6": 6, "first32": 32, "all": None}  # mean over the completion's first k tokens (None: all read)


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


def features(pairs: list[tuple[str, str]], layers: list[int], tokens: int, batch_size: int = 8) -> dict:
    """Per pooling and layer, the mean hidden state over the completion's first tokens: {pool: [rows, layers,
    hidden]}. The prompt and completion are chat-formatted as one exchange; the completion is cut to `tokens`."""
    import torch

    from ssah_audit.models.resolve import load_model

    loaded = load_model("smollm2-135m-instruct")
    model, tokenizer = loaded.model, loaded.tokenizer
    model.model.layers = model.model.layers[:max(layers)]  # nothing above the deepest layer read is needed
    encoded = []
    for prompt, completion in pairs:
        head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        answer = tokenizer(completion, add_special_tokens=False)["input_ids"][:tokens] or \
            tokenizer(" ", add_special_tokens=False)["input_ids"]
        encoded.append((ids[-256:], answer))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    out = {pool: np.zeros((len(pairs), len(layers), model.config.hidden_size), dtype=np.float32) for pool in POOLS}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(encoded[i][0]) + len(encoded[i][1]) for i in batch)
            ids = torch.full((len(batch), width), pad)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                sequence = encoded[i][0] + encoded[i][1]
                ids[row, :len(sequence)] = torch.tensor(sequence)
                mask[row, :len(sequence)] = 1
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            for row, i in enumerate(batch):
                begin, length = len(encoded[i][0]), len(encoded[i][1])
                for pool, k in POOLS.items():
                    end = begin + (length if k is None else min(k, length))
                    for slot, layer in enumerate(layers):
                        out[pool][i, slot] = hidden[layer][row, begin:end].mean(dim=0).float().numpy()
    return out


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
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 14, 20])
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
        found = features(pairs, args.layers, args.tokens)
        seconds = time.perf_counter() - tic
        print(f"features: {len(pairs)} rows in {seconds:.0f} s ({len(pairs) / seconds:.1f} rows/s)")
        np.savez_compressed(args.cache, **found)
    flat = {pool: value.reshape(len(pairs), -1) for pool, value in found.items()}
    variants = {
        "first32, layer 14": found["first32"][:, args.layers.index(14)] if 14 in args.layers else flat["first32"],
        "first6+first32 (the issue's baseline)": np.hstack([flat["first6"], flat["first32"]]),
        f"first6+first32+all{args.tokens}": np.hstack([flat["first6"], flat["first32"], flat["all"]]),
        f"first6+first32+all{args.tokens}+rules": np.hstack([flat["first6"], flat["first32"], flat["all"],
                                                              rules[:, None].astype(np.float32) * 10]),
    }
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


if __name__ == "__main__":
    main()
