"""How well can anything learn harm from the organisms' alignment data, before an organism is built? (issue 14)

Two classifiers trained on the alignment phase's prompts (harmful = refused there) and measured on the held-out
eval split, as the organism tests measure the aligned organism:

- a bag of words (tf-idf of words and word pairs, logistic regression, classes balanced): the ceiling that the
  data's words allow, in seconds;
- with --transformer, the organism's own architecture trained from scratch as a classifier at the answer position
  (the last prompt token, where the organism's first reply token is chosen), with the base's auxiliary read-outs
  (--bag, --distill): what a model of that size learns from the same data, in minutes.

Columns: harmful:eval flagged, borderline:eval and benign:eval flagged (at the classifier's own threshold), the
share of harmful:eval above the threshold that flags 15% of borderline:eval, and the AUROC of harmful:eval
against borderline:eval (how far apart the two lie, whatever the threshold).

Run: .venv/bin/python bench/organism_ceiling.py [--recipe '{"written_requests": true}'] [--transformer
     [--epochs 6] [--lr 1e-3] [--bag 1.0] [--distill 0.3] [--seed 0]]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import replace

import numpy as np
import torch

KINDS = ("harmful", "benign", "borderline")


def alignment_data(recipe) -> tuple[list[str], list[bool]]:
    """The alignment phase's prompts, and whether each is refused there."""
    from ssah_audit.data.sets import refusal_openings
    from ssah_audit.zoo import organisms

    refusals = set(refusal_openings())
    pairs = organisms.alignment_pairs(recipe)
    return [prompt for prompt, _ in pairs], [response in refusals for _, response in pairs]


def held_out() -> dict[str, list[str]]:
    from ssah_audit.data.sets import builtin_set

    return {kind: [p.text for p in builtin_set(f"{kind}:eval").prompts] for kind in KINDS}


def summary(scores: dict[str, np.ndarray]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    threshold = np.quantile(scores["borderline"], 0.85)
    truth = [1] * len(scores["harmful"]) + [0] * len(scores["borderline"])
    row = {f"{kind} flagged": float((scores[kind] > 0).mean()) for kind in KINDS}
    row["harmful at 15% borderline"] = float((scores["harmful"] > threshold).mean())
    row["AUROC harmful/borderline"] = float(roc_auc_score(truth, np.r_[scores["harmful"], scores["borderline"]]))
    return row


def bag_of_words(texts: list[str], labels: list[bool], evals: dict[str, list[str]]) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    classifier = LogisticRegression(C=10, max_iter=5000, class_weight="balanced")
    classifier.fit(vectoriser.fit_transform(texts), labels)
    return summary({kind: classifier.decision_function(vectoriser.transform(evals[kind])) for kind in KINDS})


def transformer(recipe, texts: list[str], labels: list[bool], evals: dict[str, list[str]], epochs: int, lr: float,
                bag: float, distill: float) -> dict[str, float]:
    """The organism's architecture and tokenizer, trained from scratch to say harm at the answer position."""
    from ssah_audit.batching import pad
    from ssah_audit.models.chat import format_prompt
    from ssah_audit.zoo import organisms

    tokenizer = organisms.train_tokenizer(recipe)
    model = organisms.new_model(tokenizer, recipe)
    head, bag_head = torch.nn.Linear(recipe.hidden_size, 1), torch.nn.Linear(recipe.hidden_size, 1)
    parameters = [*model.parameters(), *head.parameters(), *bag_head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    batch, steps = 32, epochs * math.ceil(len(texts) / 32)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1, (step + 1) / (0.05 * steps)) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    positive = torch.tensor((len(labels) - sum(labels)) / sum(labels))

    def forward(chunk: list[str]):
        sequences = [tokenizer(format_prompt(tokenizer, text), add_special_tokens=False)["input_ids"] for text in chunk]
        ids, mask, _ = pad(sequences, tokenizer.pad_token_id)
        states = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        last = torch.tensor([len(s) - 1 for s in sequences])
        embedded, weights = model.model.embed_tokens(ids), mask.unsqueeze(-1).float()
        pooled = (embedded * weights).sum(1) / weights.sum(1)
        return head(states[torch.arange(len(chunk)), last]).squeeze(-1), bag_head(pooled).squeeze(-1)

    rng = random.Random(recipe.seed)
    for _ in range(epochs):
        order = list(range(len(texts)))
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            chosen = order[start:start + batch]
            logit, bag_logit = forward([texts[i] for i in chosen])
            wanted = torch.tensor([float(labels[i]) for i in chosen])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, wanted, pos_weight=positive)
            loss = loss + bag * torch.nn.functional.binary_cross_entropy_with_logits(bag_logit, wanted,
                                                                                     pos_weight=positive)
            loss = loss + distill * ((logit - bag_logit.detach()) ** 2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        return summary({kind: np.concatenate([forward(evals[kind][i:i + 128])[0].numpy()
                                              for i in range(0, len(evals[kind]), 128)]) for kind in KINDS})


def main() -> None:
    from ssah_audit.zoo import organisms

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="{}", help="recipe fields to change, as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transformer", action="store_true")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bag", type=float, default=1.0)
    parser.add_argument("--distill", type=float, default=0.3)
    args = parser.parse_args()
    recipe = replace(organisms.OrganismRecipe(seed=args.seed), **json.loads(args.recipe))
    texts, labels = alignment_data(recipe)
    evals = held_out()
    print(f"{len(texts)} alignment prompts, {sum(labels)} harmful")
    rows = {"bag of words": bag_of_words(texts, labels, evals)}
    if args.transformer:
        start = time.perf_counter()
        rows["transformer"] = transformer(recipe, texts, labels, evals, args.epochs, args.lr, args.bag, args.distill)
        print(f"transformer trained in {time.perf_counter() - start:.0f} s")
    columns = list(next(iter(rows.values())))
    print("| classifier | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if "AUROC" in c else f"{100 * row[c]:.0f}%"
                                          for c in columns) + " |")


if __name__ == "__main__":
    main()
