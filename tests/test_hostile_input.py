"""Hostile input from the sweep of issue 15, one test per item: each bad input is one line on stderr and exit 2,
found before any work it would spoil, and nothing the user wrote is lost."""

from __future__ import annotations

import pytest

from .test_cli_errors import one_line


@pytest.mark.parametrize("text, expected", [
    ("[gates]\nmax_harmful_compliance = 0.0\n", "unknown table(s) [gates]"),
    ("[audits]\nlimit = 5\n", "unknown table(s) [audits]"),
    ("[audit]\nlimit = 5\n[gate]\nmax_over_refusal = 0.1\n[extra]\n", "unknown table(s) [extra]"),
    ("gate = 5\n", "gate must be a table"),
    ("audit = [1, 2]\n", "audit must be a table"),
])
def test_audit_toml_holds_only_audit_and_gate_tables(cli, tmp_path, text, expected):
    """A typo in a table name used to be ignored, so CI gated at the defaults (issue 15, item 5)."""
    config = tmp_path / "audit.toml"
    config.write_text(text)
    code, _, stderr = cli("audit", "/no/such/model", "--config", str(config), "--out", str(tmp_path / "r"))
    one_line(code, stderr, expected)
    assert not (tmp_path / "r").exists()


def _edit_weights(source, target, edit):
    """A copy of the model folder `source` whose safetensors state dict went through `edit`."""
    from safetensors.torch import load_file, save_file

    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    weights = edit(load_file(target / "model.safetensors"))
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # gpt2 ties its lm_head to the embeddings: not missing
def test_a_checkpoint_missing_a_layer_is_refused_not_filled_at_random(cli, tiny_models, tmp_path, family):
    """Every weight of the last layer deleted: it used to load with random weights and give results (item 7)."""
    import torch

    from .conftest import LAYERS

    layer = f".{LAYERS - 1}."
    model = _edit_weights(tiny_models[family], tmp_path / "m",
                          lambda weights: {name: value for name, value in weights.items() if layer not in name}
                          | {"extra.weight": torch.zeros(2)})
    code, _, stderr = cli("behavior", str(model), "--limit", "1")
    one_line(code, stderr, "do not match its config")
    missing = stderr.split("tensor(s) missing (")[1].split(")")[0]
    assert layer in missing and missing.endswith(" more") and "1 tensor(s) unexpected (extra.weight)" in stderr


def test_a_tensor_of_another_shape_is_named(cli, tiny_models, tmp_path):
    def shrink(weights):
        name = sorted(weights)[-1]
        return {**weights, name: weights[name][:1].clone()}

    model = _edit_weights(tiny_models["llama"], tmp_path / "m", shrink)
    code, _, stderr = cli("behavior", str(model), "--limit", "1")
    one_line(code, stderr, "of another shape")


def test_an_intact_checkpoint_of_every_family_loads(tiny_models):
    """The refusals above must not catch good models: tied weights are not missing, real sizes pass."""
    from ssah_audit.models.resolve import load_model

    for family, folder in tiny_models.items():
        assert load_model(str(folder)).units.layers, family


def _copy(source, target):
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


class _Opens:
    """A pickle that creates a file when unpickled: torch's weights-only loader must refuse it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_malicious_pickle_is_refused_in_one_line_even_when_pickles_are_allowed(cli, tiny_models, tmp_path):
    import torch

    model = _copy(tiny_models["llama"], tmp_path / "m")
    (model / "model.safetensors").unlink()
    ran = tmp_path / "the-pickle-ran"
    torch.save({"model.embed_tokens.weight": _Opens(ran)}, model / "pytorch_model.bin")
    code, _, stderr = cli("behavior", str(model), "--allow-pickle", "--limit", "1")
    one_line(code, stderr, "hold more than tensors (io.open)")
    assert not ran.exists()


@pytest.mark.parametrize("change, expected", [({"hidden_size": "lots"}, "hidden_size"),
                                              ({"num_hidden_layers": -3}, "num_hidden_layers = -3"),
                                              ({"vocab_size": 0}, "vocab_size = 0")])
@pytest.mark.parametrize("command", ["inspect", "behavior"])
def test_config_sizes_that_cannot_build_a_model_are_one_line(cli, tiny_models, tmp_path, change, expected, command):
    import json

    model = _copy(tiny_models["llama"], tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | change))
    code, _, stderr = cli(command, str(model), *(["--limit", "1"] if command == "behavior" else []))
    one_line(code, stderr, expected)


def _example_results() -> dict:
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parents[1] / "reports" / "example" / "results.json").read_text())


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["behavior"]["harmful"].update(compliance_rate="high"),
     "behavior.harmful.compliance_rate must be a finite number, not 'high'"),
    (lambda r: r["gate"]["checks"][0].update(threshold=[0.2]),
     "gate.checks[0].threshold must be a finite number, not a list"),
    (lambda r: r["gate"].update(passed="yes"), "gate.passed must be true or false, not 'yes'"),
    (lambda r: r["units"].update(per_layer={}), "units.per_layer must be a list, not an object"),
    (lambda r: r["provenance"].update(packages={"torch": {"version": 2}}), "provenance.packages.torch must be"),
    (lambda r: r["behavior"]["samples"]["harmful"][3].pop("completion"),
     "'behavior.samples.harmful[3].completion' is missing"),
])
def test_a_results_document_of_the_wrong_types_is_refused_by_report(cli, tmp_path, edit, expected):
    import json

    results = _example_results()
    edit(results)
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results))
    code, _, stderr = cli("report", str(source), "--out", str(tmp_path / "r"))
    one_line(code, stderr, expected)
    assert not (tmp_path / "r").exists()


def test_a_prompt_with_a_lone_surrogate_is_one_line(cli, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "How do I bake bread?"}\n{"prompt": "hi \\ud800 there"}\n')
    for args in (["prompts", "show", str(prompts)], ["behavior", "/no/such/model", "--harmful", str(prompts)],
                 ["judge", str(prompts), "--column", "prompt", "--out", str(tmp_path / "j.csv")]):
        code, _, stderr = cli(*args)
        one_line(code, stderr, "record 2 holds a lone surrogate")
    assert not (tmp_path / "j.csv").exists()


def test_prompts_show_cuts_a_huge_prompt_and_says_so(cli, tmp_path):
    """One 50 MB prompt once printed for more than ten minutes (item 9); 5 MB shows the same cut."""
    import json

    prompts = tmp_path / "big.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n" + json.dumps({"prompt": "x" * 5_000_000})
                       + "\n")
    code, stdout, stderr = cli("prompts", "show", str(prompts))
    assert code == 0, stderr
    assert len(stdout) < 2_000 and "[4,999,500 more characters]" in stdout


def test_a_prompt_too_long_for_the_context_is_refused_before_it_is_tokenised(cli, tiny_models, tmp_path):
    """The refusal comes from the character count ("characters"), not from the token count after tokenising it
    ("needs N tokens"), which took 75 s and 7.9 GB for 50 MB (item 9)."""
    import json

    prompts = tmp_path / "big.jsonl"
    prompts.write_text(json.dumps({"prompt": "x" * 2_000_000}) + "\n")
    for command in (["behavior", "--harmful"], ["probe", "--harmful"], ["units", "--safety-data"]):
        code, _, stderr = cli(command[0], str(tiny_models["llama"]), command[1], str(prompts), "--limit", "1")
        one_line(code, stderr, "prompt row-1 of big has 2,000,000 characters, more than the model's context")


def test_report_refuses_a_huge_name_and_draws_a_long_one_in_a_short_folder(cli, tmp_path, monkeypatch):
    """A 20 MB model name never finished rendering (item 9): names are capped at the longest path a system
    allows, and a name that long still renders quickly, into a folder whose name the file system takes."""
    import json

    results = _example_results()
    results["model"] = "m" * 5_000_000
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps(results))
    code, _, stderr = cli("report", str(huge), "--out", str(tmp_path / "r"))
    one_line(code, stderr, "model must be at most 4,096 characters long, not a string of 5,000,000 characters")
    results["model"] = "m" * 4096
    results["provenance"]["packages"]["x" * 4097] = "1"
    long_key = tmp_path / "key.json"
    long_key.write_text(json.dumps(results))
    code, _, stderr = cli("report", str(long_key), "--out", str(tmp_path / "r"))
    one_line(code, stderr, "provenance.packages must be keyed by names of at most 4,096 characters")
    del results["provenance"]["packages"]["x" * 4097]
    long_name = tmp_path / "long.json"
    long_name.write_text(json.dumps(results))
    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli("report", str(long_name), "--format", "md")
    assert code == 0, stderr
    [folder] = (tmp_path / "reports").iterdir()
    assert len(folder.name) < 100 and (folder / "report.md").is_file()


EXAMPLE_COMPLIANCE = _example_results()["behavior"]["harmful"]["compliance_rate"]


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["gate"].update(passed=True), "gate.passed says the gate passed, but check max_harmful_compliance "
                                             "failed"),
    (lambda r: r["gate"].update(passed=False, checks=[dict(c, status="pass") for c in r["gate"]["checks"]]),
     f"gate.checks[0] (max_harmful_compliance) says pass, but value {EXAMPLE_COMPLIANCE} against threshold 0.2 is "
     "a fail"),
    (lambda r: r["behavior"]["harmful"].update(n=-4), "behavior.harmful.n must be a whole number >= 0, not -4"),
    (lambda r: r["behavior"]["harmful"].update(compliance_rate=7.5),
     "behavior.harmful.compliance_rate must be a share between 0 and 1, not 7.5"),
    (lambda r: r["units"]["fractions"].update(SCU=-0.1), "units.fractions.SCU must be a share between 0 and 1"),
    (lambda r: r["behavior"]["borderline"].update(ci95=[0.5, 0.1]),
     "behavior.borderline.ci95 must be [low, high] with low <= high"),
    (lambda r: r["behavior"]["harmful"].update(compliance_rate=float("nan")),
     "behavior.harmful.compliance_rate must be a finite number, not nan"),
    # issue 35, item 9: a gate that disagrees with the document's own numbers
    (lambda r: [c.update(status="pass") for c in r["gate"]["checks"]] and r["gate"].update(passed=True),
     f"gate.checks[0] (max_harmful_compliance) says pass, but value {EXAMPLE_COMPLIANCE} against threshold 0.2 is "
     "a fail"),
    (lambda r: r["gate"]["checks"][0].update(value=0.1, status="pass") or r["gate"].update(passed=True),
     "gate.checks[0] (max_harmful_compliance) has value 0.1, but the document's measurements give "
     f"{EXAMPLE_COMPLIANCE}"),
    (lambda r: r["gate"]["checks"][0].update(threshold=0.9, status="pass") or r["gate"]["checks"][1].update(
        threshold=5.0), "gate.checks[1] (max_compliance_increase): gate check max_compliance_increase is a rate"),
    (lambda r: r["gate"].update(checks=r["gate"]["checks"][1:]), "gate check max_harmful_compliance is missing"),
    (lambda r: r["gate"]["checks"].append(dict(r["gate"]["checks"][0])),
     "gate check 'max_harmful_compliance' is unknown or given twice"),
    (lambda r: r["gate"]["checks"][0].update(name="max_everything"), "gate check 'max_everything' is unknown"),
])
def test_results_that_contradict_themselves_are_refused_not_rendered(cli, tmp_path, edit, expected):
    """A hand-edited document once rendered as "PASS" with a failing check, or as "750%" (issue 15, item 11); checks
    that all said "pass" while their values were above their thresholds rendered as PASS (issue 35, item 9)."""
    import json

    results = _example_results()
    edit(results)
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results))  # NaN as the bare token Python writes, which json.loads reads back
    code, _, stderr = cli("report", str(source), "--out", str(tmp_path / "r"))
    one_line(code, stderr, expected)
    assert not (tmp_path / "r").exists()


def test_every_string_of_the_document_is_inert_in_markdown(cli, tmp_path):
    """Check names, fingerprints, package names and settings reached report.md raw (issue 15, item 10): HTML, links,
    images, code spans and table pipes from any field of results.json come out escaped, numbers as they were."""
    import json
    import re

    attack = "<svg onload=alert(1)> [x](javascript:alert(2)) ![t](http://t.example/p.png) `c` | cell"
    results = _example_results()
    results["fingerprint"] = attack
    results["gate"]["checks"][0]["description"] = attack
    results["provenance"]["packages"][attack] = attack
    results["provenance"]["created"] = attack
    results["units"]["method"] = attack
    results["sets"][next(iter(results["sets"]))]["name"] = attack
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results))
    code, _, stderr = cli("report", str(source), "--out", str(tmp_path / "r"), "--format", "md")
    assert code == 0, stderr
    markdown = (tmp_path / "r" / "report.md").read_text()
    for raw in ("<svg", "[x](", "![t](", "`c`"):
        assert raw not in markdown, raw
    assert not re.search(r"(?<!\\)\| cell", markdown)  # a bare pipe would split the table cell
    assert markdown.count("&lt;svg onload=alert(1)&gt;") + markdown.count("&lt;svg onload=alert\\(1\\)&gt;") >= 6
    threshold = results["gate"]["checks"][1]["threshold"]
    assert f"| {threshold:.4g} |" in markdown  # numbers keep their dots, signs and exponents
