"""Built-in prompt sets, their splits, the file loaders and chat formatting."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ssah_audit.data.loaders import load_file
from ssah_audit.data.sets import (
    builtin_prompts,
    builtin_set,
    compliance_openings,
    load_prompt_set,
    refusal_openings,
    split,
)
from ssah_audit.errors import UserError
from ssah_audit.models.chat import FALLBACK_TEMPLATE, format_exchange, format_prompt

from .test_loading import assert_one_line_error

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this checkout")


def test_builtin_sets_are_large_and_varied_enough():
    harmful, benign, borderline = (builtin_prompts(k) for k in ("harmful", "benign", "borderline"))
    assert len(harmful) >= 150 and len({p.category for p in harmful}) >= 8
    assert len(benign) >= 150 and all(p.answer and len(p.answer.split()) >= 3 for p in benign)
    assert len(borderline) >= 60
    assert len(refusal_openings()) >= 8 and len(compliance_openings()) >= 8
    every_text = [p.text.lower() for p in harmful + benign + borderline]
    assert len(set(every_text)) == len(every_text), "a prompt appears twice"
    ids = [p.id for p in harmful + benign + borderline]
    assert len(set(ids)) == len(ids)


def test_openings_say_what_they_are():
    refusal_words = ("sorry", "can't", "cannot", "won't", "unable", "not able", "decline", "apolog", "not")
    assert all(any(w in r.lower() for w in refusal_words) for r in refusal_openings())
    assert not any(w in c.lower() for c in compliance_openings() for w in refusal_words[:6])


@pytest.mark.parametrize("kind", ["harmful", "benign", "borderline"])
def test_train_and_eval_splits_are_disjoint_stratified_and_complete(kind):
    train, evaluation = builtin_set(f"{kind}:train"), builtin_set(f"{kind}:eval")
    assert not {p.id for p in train.prompts} & {p.id for p in evaluation.prompts}
    assert len(train) + len(evaluation) == len(builtin_prompts(kind))
    for category, count in builtin_set(f"{kind}:all").categories().items():
        assert abs(train.categories()[category] - count / 2) <= 1
    assert builtin_set(kind).prompts == evaluation.prompts, "a bare name means the evaluation split"


def test_a_spread_subset_keeps_the_sets_mix_of_categories():
    """The depth stage and the ablation rows measure a few prompts of a set grouped by category: spread over it,
    every category keeps its share, where the first 20 of the harmful set held two of its ten categories."""
    harmful = builtin_set("harmful")
    counts = harmful.categories()
    for n in (20, 50):
        subset, indices = harmful.spread(n)
        assert len(subset) == n == len(set(indices)) and indices == sorted(indices)
        assert [harmful.prompts[i] for i in indices] == list(subset.prompts)
        for category, count in counts.items():
            assert abs(subset.categories()[category] - count * n / len(harmful)) <= 1, (n, category)
    assert len(harmful.limit(20).categories()) < len(counts) / 2  # why not the first n
    assert harmful.spread(None) == (harmful, list(range(len(harmful)))) == harmful.spread(10 * len(harmful))


def test_splits_are_seeded():
    prompts = builtin_prompts("harmful")
    assert split(prompts, "train", seed=0) == split(prompts, "train", seed=0)
    assert split(prompts, "train", seed=0) != split(prompts, "train", seed=1)


def test_unknown_set_name(cli):
    assert_one_line_error(cli("prompts", "show", "harmfull"), "neither a built-in prompt set")
    assert_one_line_error(cli("prompts", "show", "harmful:test"), "unknown split")


@needs_shared
def test_advbench_is_recognised_with_its_compliance_targets():
    advbench = load_file(SHARED / "advbench_harmful_behaviors.csv")
    assert len(advbench) == 520 and advbench.source.startswith("advbench")
    assert advbench.prompts[0].target.startswith("Sure, here is")


@needs_shared
def test_xstest_and_alpaca_files_are_recognised():
    xstest = load_file(SHARED / "xstest_prompts.csv")
    assert xstest.source.startswith("xstest") and len(xstest) == 450
    assert {p.label for p in xstest.prompts} == {"safe", "unsafe"}
    assert len(xstest.safe_only()) == 250 and builtin_set("borderline").safe_only() == builtin_set("borderline")
    alpaca = load_file(SHARED / "alpaca_harmless_instructions.json")
    assert alpaca.source.startswith("alpaca") and len(alpaca) == 6264
    seeds = load_file(SHARED / "alpaca_seed_tasks.jsonl")
    assert seeds.source.startswith("alpaca") and len(seeds) == 175 and all(p.answer for p in seeds.prompts)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_harmbench_strongreject_and_generic_formats(tmp_path):
    header = ["Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID"]
    harmbench = load_file(write_csv(tmp_path / "hb.csv", header, [["Do a bad thing", "standard", "crime", "b1"]]))
    assert harmbench.source.startswith("harmbench") and harmbench.prompts[0].id == "b1"
    assert harmbench.prompts[0].category == "crime"
    strong = load_file(write_csv(tmp_path / "sr.csv", ["category", "source", "forbidden_prompt"],
                                 [["fraud", "x", "Forge a cheque"]]))
    assert strong.source.startswith("strongreject") and strong.prompts[0].text == "Forge a cheque"
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(json.dumps({"question": "What is 2+2?", "answer": "4"}) + "\n")
    generic = load_file(jsonl)
    assert generic.prompts[0].text == "What is 2+2?" and generic.prompts[0].answer == "4"
    custom = write_csv(tmp_path / "custom.csv", ["ask", "note"], [["Name a colour", "x"]])
    assert load_prompt_set(str(custom), prompt_field="ask").prompts[0].text == "Name a colour"


def test_multi_line_prompts_keep_their_line_breaks(tmp_path):
    """A quoted CSV field may span lines, and a JSONL string may hold U+2028: both arrive as written."""
    poem = "Write a poem.\nIt must rhyme.\n\nKeep it short."
    csv_file = write_csv(tmp_path / "multi.csv", ["prompt"], [[poem], ["second"]])
    assert [p.text for p in load_file(csv_file).prompts] == [poem, "second"]
    jsonl = tmp_path / "sep.jsonl"
    jsonl.write_text(json.dumps({"prompt": "one\u2028two"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_file(jsonl).prompts[0].text == "one\u2028two"


def test_csv_without_a_prompt_column(cli, tmp_path):
    path = write_csv(tmp_path / "bad.csv", ["title", "body"], [["a", "b"]])
    assert_one_line_error(cli("prompts", "show", str(path)), "no prompt column", "--prompt-field")
    assert_one_line_error(cli("prompts", "show", str(path), "--prompt-field", "ask"), "no column 'ask'")


@pytest.mark.parametrize("name,content", [("empty.csv", ""), ("empty.jsonl", "\n\n"), ("header.csv", "prompt\n"),
                                          ("empty.json", "[]"), ("blank.csv", "prompt\n\"\"\n")])
def test_empty_prompt_files(cli, tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    code, _, stderr = cli("prompts", "show", str(path))
    assert_one_line_error((code, "", stderr))
    with pytest.raises(UserError):
        load_prompt_set(str(path))


def test_broken_json_is_one_line(cli, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"prompt": "a"')
    assert_one_line_error(cli("prompts", "show", str(path)), "not valid JSON")


def test_prompts_show_json_and_list(cli):
    code, stdout, _ = cli("prompts", "show", "benign:train", "--limit", "3", "--json")
    doc = json.loads(stdout)
    assert code == 0 and doc["n"] == len(builtin_set("benign:train")) and len(doc["prompts"]) == 3
    code, stdout, _ = cli("prompts", "list", "--json")
    assert code == 0 and {row["name"] for row in json.loads(stdout)["sets"]} == {"harmful", "benign", "borderline",
                                                                                  "instructions", "contrast"}


def test_chat_formatting_uses_the_tokenizers_template(tokenizer):
    prompt_text = format_prompt(tokenizer, "Boil an egg?")
    assert prompt_text == "<|user|>Boil an egg?<eos><|assistant|>"
    prompt_only, full = format_exchange(tokenizer, "Boil an egg?", "Ten minutes.")
    assert prompt_only == prompt_text and full.startswith(prompt_text) and "Ten minutes." in full


def test_chat_formatting_falls_back_for_base_models(tokenizer):
    base = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<eos>")
    base.chat_template = None
    assert format_prompt(base, "Hi") == FALLBACK_TEMPLATE.format(prompt="Hi")
    prompt_only, full = format_exchange(base, "Hi", "Hello")
    assert full == prompt_only + "Hello<eos>"


def test_answered_pairs_and_their_prompt_indices_agree():
    """`answered_indices` names the prompt behind each of `answered`'s pairs, skipping prompts without an answer."""
    from ssah_audit.data.prompt import Prompt, PromptSet

    prompts = PromptSet("mixed", "test", (Prompt("a", "one", answer="1"), Prompt("b", "two"),
                                         Prompt("c", "three", answer="3"), Prompt("d", "four", answer="")))
    assert prompts.answered_indices() == [0, 2]
    assert prompts.answered("a test") == [(prompts.prompts[i].text, prompts.prompts[i].answer) for i in [0, 2]]
