"""Loading real checkpoints, and every bad input being one clear line with exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ssah_audit.errors import UserError
from ssah_audit.models.loading import LoadOptions
from ssah_audit.models.resolve import load_model


def assert_one_line_error(result, *fragments: str) -> None:
    code, stdout, stderr = result
    assert code == 2, (code, stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_loaded_model_generates_with_its_chat_template(tiny_models):
    loaded = load_model(str(tiny_models["llama"]))
    assert loaded.source == "folder" and loaded.has_chat_template
    text = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                add_generation_prompt=True)
    ids = loaded.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = loaded.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.input_ids.shape[1] + 3
    assert next(loaded.model.parameters()).device.type == "cpu"


def test_dtype_option_sets_the_weight_precision(tiny_models):
    assert next(load_model(str(tiny_models["qwen2"])).model.parameters()).dtype == torch.float32
    loaded = load_model(str(tiny_models["qwen2"]), LoadOptions(dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_fingerprint_changes_with_the_weights(tiny_models, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_models["llama"], copy)
    first = load_model(str(copy), weights=False).fingerprint
    assert first == load_model(str(tiny_models["llama"]), weights=False).fingerprint
    model = load_model(str(copy)).model
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    model.save_pretrained(copy)
    assert load_model(str(copy), weights=False).fingerprint != first


def test_missing_path(cli, tmp_path):
    assert_one_line_error(cli("inspect", str(tmp_path / "nope")), "no such model folder or file")


def test_folder_without_config(cli, tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    assert_one_line_error(cli("inspect", str(tmp_path)), "has no config.json")


def test_corrupt_config(cli, tiny_models, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_models["llama"], folder)
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    assert_one_line_error(cli("inspect", str(folder)), "cannot read the model config")


def test_custom_code_model_asks_for_trust_remote_code(cli, tiny_models, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_models["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my-custom-lm", architectures=["MyCustomForCausalLM"],
                  auto_map={"AutoConfig": "modeling.MyConfig", "AutoModelForCausalLM": "modeling.MyModel"})
    (folder / "config.json").write_text(json.dumps(config))
    assert_one_line_error(cli("inspect", str(folder)), "--trust-remote-code")


def test_non_causal_model(cli, tokenizer, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=4, intermediate_size=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert_one_line_error(cli("inspect", str(folder)), "not a causal language model", "BertForMaskedLM")


def test_pickle_only_checkpoint_needs_allow_pickle(cli, tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    shutil.copytree(tiny_models["llama"], folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert_one_line_error(cli("inspect", str(folder)), "only pickle weights", "--allow-pickle")
    code, stdout, _ = cli("inspect", str(folder), "--allow-pickle", "--json")
    assert code == 0 and json.loads(stdout)["model_type"] == "llama"
    with pytest.raises(UserError):
        load_model(str(folder))
    loaded = load_model(str(folder), LoadOptions(allow_pickle=True))
    assert torch.equal(loaded.model.lm_head.weight, model.lm_head.weight)


def test_a_plain_file_is_not_a_model(cli, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert_one_line_error(cli("inspect", str(path)), "not a model folder or a .gguf file")


def test_hub_id_offline_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_line_error(cli("inspect", "some-org/some-model-that-is-not-cached"), "hub")


def test_device_that_is_not_there(cli, tiny_models):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_one_line_error(cli("inspect", str(tiny_models["llama"]), "--device", "cuda"), "no CUDA GPU")
    assert_one_line_error(cli("inspect", str(tiny_models["llama"]), "--device", "warp9"), "unknown device")


def test_bad_dtype_is_rejected_by_the_cli(cli, tiny_models):
    code, _, stderr = cli("inspect", str(tiny_models["llama"]), "--dtype", "int3")
    assert code == 2 and "Traceback" not in stderr
