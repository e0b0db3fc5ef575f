"""Hostile input from the sweep of issue 35, items 12 and 13: a base LM with no eos and no pad token generates
instead of crashing, and every malformed LoRA adapter (a base that loops back, fields peft cannot use, targets that
do not fit) is one line and exit 2 in every command, inspect included, before any work."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from .test_adapters import make_adapter
from .test_cli_errors import one_line


@pytest.fixture(scope="module")
def base_lm(tmp_path_factory, tokenizer, families):
    """A tiny llama whose tokenizer and configs name no eos, pad or bos token and no chat template (a base LM),
    with context enough for the built-in prompts."""
    import torch
    from transformers import AutoModelForCausalLM

    config = families["llama"][0].__class__(**{**families["llama"][0].to_dict(), "max_position_embeddings": 256,
                                               "eos_token_id": None, "pad_token_id": None, "bos_token_id": None})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = None
    model.generation_config.bos_token_id = None
    folder = tmp_path_factory.mktemp("base-lm") / "llama"
    model.save_pretrained(folder)
    bare = copy.deepcopy(tokenizer)
    bare.eos_token = bare.pad_token = None
    bare.chat_template = None
    bare.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("command", ["behavior", "probe", "finetune"])
def test_a_model_without_eos_or_pad_generates_to_max_new_tokens(cli, base_lm, tmp_path, command):
    """Issue 35, item 12: such a model exited 3 (IndexError in generate's `stops[0]`); its rows now run to
    max_new_tokens, left padding with a valid id that the attention mask hides."""
    from ssah_audit.models.resolve import load_model
    from ssah_audit.responses.generate import generate

    loaded = load_model(str(base_lm))
    assert loaded.tokenizer.eos_token_id is None and loaded.tokenizer.pad_token_id is None
    texts, finished = generate(loaded.model, loaded.tokenizer, ["Hi", "How do I boil an egg?"], max_new_tokens=5,
                               with_finished=True)
    assert finished == [False, False] and all(isinstance(text, str) for text in texts)
    if command == "finetune":  # it pads its batches too (it took the eos id, None here, and failed in pad())
        code, _, stderr = cli("--quiet", "finetune", str(base_lm), "--data", "benign:train", "--limit", "2",
                              "--max-steps", "1", "--batch-size", "2", "--max-length", "32", "--out",
                              str(tmp_path / "ft"))
        assert code == 0, stderr
        assert (tmp_path / "ft" / "model.safetensors").is_file()
        return
    out = tmp_path / "out.json"
    code, stdout, stderr = cli("--quiet", command, str(base_lm), "--limit", "2", "--json", str(out))
    assert code == 0, stderr
    doc = json.loads(out.read_text())
    if command == "behavior":
        assert doc["harmful"]["n"] == 2 and len(doc["samples"]) >= 2
    else:
        assert doc and stdout.strip()


@pytest.fixture(scope="module")
def good_adapter(base_lm, tmp_path_factory):
    from ssah_audit.models.adapters import quiet_peft

    folder = tmp_path_factory.mktemp("adapters") / "good"
    with quiet_peft():
        make_adapter(base_lm, folder, "llama")
    return folder


def _variant(good, folder, **change):
    """A copy of the adapter `good` at `folder` with its adapter_config.json changed."""
    shutil.copytree(good, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config | change))
    return folder


def _case(name, good, tmp_path):
    """(adapter folder, extra arguments, what the one line must say) for the case `name`."""
    a, b = tmp_path / "a", tmp_path / "b"
    targets = json.loads((good / "adapter_config.json").read_text())["target_modules"]
    if name == "names itself":
        folder = _variant(good, a, base_model_name_or_path=str(a))
        return folder, [], f"the adapter {a} names itself as its base"
    if name in ("a cycle", "--base names a looping adapter"):
        _variant(good, a, base_model_name_or_path=str(b))
        _variant(good, b, base_model_name_or_path=str(a))
        if name == "a cycle":
            return a, [], f"adapters form a cycle: {a} -> {b} -> {a}"
        return good, ["--base", str(a)], f"the base of adapter {good}, {a}, is itself an adapter"
    edits = {"lora_alpha big": ({"lora_alpha": "big"}, "lora_alpha must be a number, not 'big'"),
             "r 0": ({"r": 0}, "r must be a whole number >= 1, not 0"),
             "r 2.5": ({"r": 2.5}, "r must be a whole number >= 1, not 2.5"),
             "targets not a list": ({"target_modules": {"q_proj": 1}}, "target_modules must be a module name"),
             "a target the base lacks": ({"target_modules": targets + ["no_such_proj"]},
                                         "targets no_such_proj, which its base"),
             "weights no target names": ({"target_modules": ["q_proj"]}, "which its target_modules do not name")}
    change, expected = edits[name]
    return _variant(good, a, **change), [], expected


CASES = ["names itself", "a cycle", "--base names a looping adapter", "lora_alpha big", "r 0", "r 2.5",
         "targets not a list", "a target the base lacks", "weights no target names"]


@pytest.mark.parametrize("command", ["inspect", "behavior", "audit"])
@pytest.mark.parametrize("name", CASES)
def test_a_malformed_adapter_is_one_line_in_every_command(cli, good_adapter, tmp_path, name, command):
    """Issue 35, item 13: a base that loops back exited 3 (RecursionError), lora_alpha "big" exited 3 (TypeError),
    and inspect printed r 0 or a target the base lacks; now each is refused alike, in one line, writing nothing."""
    folder, extra, expected = _case(name, good_adapter, tmp_path)
    out = tmp_path / "report"
    args = {"inspect": [], "behavior": ["--limit", "1", "--json", str(out)], "audit": ["--quick", "--out", str(out)]}
    code, _, stderr = cli(command, str(folder), *extra, *args[command])
    one_line(code, stderr, expected)
    assert not out.exists()


@pytest.mark.parametrize("name", ["names itself", "a cycle"])
def test_base_overrides_an_adapter_base_that_loops(cli, base_lm, good_adapter, tmp_path, name):
    """Issue 35, item 13: --base means the adapter's own base is never read, so a looping one does not matter."""
    folder, _, _ = _case(name, good_adapter, tmp_path)
    code, _, stderr = cli("--quiet", "behavior", str(folder), "--base", str(base_lm), "--limit", "1",
                          "--max-new-tokens", "2")
    assert code == 0, stderr
    code, stdout, stderr = cli("inspect", str(folder), "--base", str(base_lm), "--json")
    assert code == 0 and json.loads(stdout)["adapter"]["base"] == str(base_lm), stderr
