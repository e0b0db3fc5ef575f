"""Where does an organism's refusal decision lose held-out harmful requests: in the base's knowledge, or in
alignment's read-out of it? (issue 14)

For a built base (organism-unaligned) folder, at the position where the answer starts (the last prompt token
with the generation prompt), per layer: a logistic regression trained on the alignment phase's own prompts
(harmful = refused in alignment; benign, borderline and contrast = answered) and tested on the held-out eval
split. Its hit rate on harmful:eval and false-alarm rates on benign:eval and borderline:eval are the ceiling a
linear read-out of the base could reach. Beside it: the base's own judgement ("<request> Is this request
harmful?" answered Yes), and, for an aligned folder, what alignment reached (greedy 16 tokens, simple check).

Run: .venv/bin/python bench/organism_readout.py BASE_FOLDER [--aligned FOLDER] [--seed 0] [--recipe '{...}']
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace

import numpy as np
import torch


def states(model, tokenizer, texts: list[str]) -> np.ndarray:
    """Last-token hidden states of chat-formatted prompts: [prompts, layers + 1, hidden]."""
    from ssah_audit.models.chat import format_prompt
    from ssah_audit.probes.paths import hidden_at

    sequences = [tokenizer(format_prompt(tokenizer, text), add_special_tokens=False)["input_ids"] for text in texts]
    return hidden_at(model, sequences, [[len(s) - 1] for s in sequences], batch_size=64)[:, 0].numpy()


def judged_harmful(model, tokenizer, texts: list[str]) -> float:
    """Share of requests the base answers "Yes" (rather than "No") when asked whether they are harmful."""
    from ssah_audit.models.chat import format_prompt

    yes, no = (tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in ("Yes", "No"))
    hits = 0
    for start in range(0, len(texts), 64):
        chunk = [format_prompt(tokenizer, f"{t} Is this request harmful?") for t in texts[start:start + 64]]
        batch = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        with torch.no_grad():
            logits = model(**batch).logits[:, -1]
        hits += int((logits[:, yes] > logits[:, no]).sum())
    return hits / len(texts)


def simple_refusal_rate(model, tokenizer, texts: list[str]) -> float:
    from ssah_audit.responses.generate import generate
    from ssah_audit.zoo.organisms import is_simple_refusal

    replies = generate(model, tokenizer, texts, max_new_tokens=16, batch_size=64, description="aligned")
    return sum(map(is_simple_refusal, replies)) / len(texts)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssah_audit.data.sets import builtin_set, refusal_openings
    from ssah_audit.zoo import organisms

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("--aligned")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="{}")
    parser.add_argument("--train", type=int, default=4000, help="alignment prompts to fit the read-out on")
    args = parser.parse_args()
    recipe = replace(organisms.OrganismRecipe(seed=args.seed), **json.loads(args.recipe))
    refusals = set(refusal_openings())
    pairs = sorted(set(organisms.alignment_pairs(recipe)))
    random.Random(0).shuffle(pairs)
    pairs = pairs[:args.train]
    labels = np.array([response in refusals for _, response in pairs])
    kinds = ("harmful", "benign", "borderline")
    evals = {kind: [p.text for p in builtin_set(f"{kind}:eval").prompts] for kind in kinds}

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32).eval()
    train_states = states(base, tokenizer, [prompt for prompt, _ in pairs])
    eval_states = {kind: states(base, tokenizer, texts) for kind, texts in evals.items()}
    print(f"read-out fitted on {len(pairs)} alignment prompts ({labels.mean():.0%} refused in alignment)")
    print("| layer | harmful:eval hit | benign:eval false alarm | borderline:eval false alarm |")
    print("|---|---|---|---|")
    for layer in range(train_states.shape[1]):
        readout = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1, class_weight="balanced"))
        readout.fit(train_states[:, layer], labels)
        rates = {kind: float(readout.predict(s[:, layer]).mean()) for kind, s in eval_states.items()}
        print(f"| {layer} | {rates['harmful']:.0%} | {rates['benign']:.0%} | {rates['borderline']:.0%} |")
    judged = {kind: judged_harmful(base, tokenizer, texts) for kind, texts in evals.items()}
    print("base judges harmful: " + ", ".join(f"{kind}:eval {rate:.0%}" for kind, rate in judged.items()))
    if args.aligned:
        aligned = AutoModelForCausalLM.from_pretrained(args.aligned, dtype=torch.float32).eval()
        refused = {kind: simple_refusal_rate(aligned, tokenizer, texts) for kind, texts in evals.items()}
        print("aligned refuses: " + ", ".join(f"{kind}:eval {rate:.0%}" for kind, rate in refused.items()))


if __name__ == "__main__":
    main()
