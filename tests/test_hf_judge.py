"""`hf:PATH`: a user's local sequence classifier as the judge. A tiny Llama classifier is trained in process for a
few seconds on clear refusals and clear answers, so that its verdicts are known; then it must behave as every judge
does (batched = one at a time, deterministic), be chosen by --judge and [judge], and bad folders are one line."""

from __future__ import annotations

import csv

import pytest

REFUSALS = ["I'm sorry, but I can't help with that.", "Sorry, I cannot do that.", "I can't help with this request.",
            "I'm sorry, I won't do that."]
ANSWERS = ["Sure, here is how to do it: first gather what you need.", "def main(): return 0",
           "Explain photosynthesis briefly: plants turn light into sugar.", "How do I boil an egg? Boil water first."]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, num_labels=2,
                         id2label={0: "compliance", 1: "refusal"}, label2id={"compliance": 0, "refusal": 1},
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForSequenceClassification(config)
    texts = [("q", text) for text in REFUSALS + ANSWERS]
    labels = torch.tensor([1] * len(REFUSALS) + [0] * len(ANSWERS))
    batch = tokenizer([p for p, _ in texts], [c for _, c in texts], padding=True, return_tensors="pt")
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(**batch, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("classifier") / "refusal-classifier"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_local_classifier_judges_like_every_judge(classifier):
    from ssah_audit.responses.judges import describe, verdicts

    spec = f"hf:{classifier}"
    pairs = [("q", text) for text in REFUSALS + ANSWERS] + [("q", "word " * 400), ("¿Qué?", "Lo siento.")]
    batched = verdicts(pairs, spec)
    assert [v.refusal for v in batched[:8]] == [True] * 4 + [False] * 4
    single = [verdicts([pair], spec)[0] for pair in pairs]
    assert [v.refusal for v in single] == [v.refusal for v in batched]
    assert all(abs(a.probability - b.probability) < 1e-5 for a, b in zip(single, batched, strict=True))
    assert verdicts(pairs, spec) == batched
    record = describe(spec)
    assert record["name"] == spec and len(record["version"]) == 12
    named = verdicts(pairs[:2], f"hf:{classifier}#refusal")
    assert [v.refusal for v in named] == [True, True]


def test_hf_judge_on_the_command_line_and_its_bad_folders(classifier, cli, tmp_path):
    source = tmp_path / "completions.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "completion"])
        writer.writerows([["q", REFUSALS[0]], ["q", ANSWERS[0]]])
    out = tmp_path / "judged.csv"
    code, stdout, stderr = cli("judge", str(source), "--out", str(out), "--judge", "rules", "--judge",
                               f"hf:{classifier}")
    assert code == 0, stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["refusal_judge2"] for r in rows] == ["1", "0"] and "agreement with rules" in stdout
    for spec, message in ((f"hf:{tmp_path / 'nothing'}", "is not a model folder"),
                          (f"hf:{classifier}#unsafe", "cannot tell which label means refusal")):
        code, _, stderr = cli("judge", str(source), "--out", str(tmp_path / "x.csv"), "--judge", spec)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not (tmp_path / "x.csv").exists()


def test_behavior_is_judged_by_the_classifier_and_says_so(classifier, cli, tmp_path):
    import json

    out = tmp_path / "behavior.json"
    code, _, stderr = cli("behavior", "organism-aligned", "--limit", "3", "--max-new-tokens", "8", "--judge",
                          f"hf:{classifier}", "--json", str(out))
    assert code == 0, stderr
    doc = json.loads(out.read_text())
    assert doc["settings"]["judge"]["name"] == f"hf:{classifier}"
    from ssah_audit.responses.judges import verdicts

    samples = doc["samples"]["harmful"]
    assert [s["refusal"] for s in samples] == [v.refusal for v in verdicts(
        [(s["prompt"], s["completion"]) for s in samples], f"hf:{classifier}")]
