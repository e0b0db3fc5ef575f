"""Hostile model files from the sweep of issue 35, one test per item: each is one line on stderr and exit 2, found
before any expensive work (never a traceback, never exit 3, never an allocation the size a config or a file
declares), and `inspect` answers from a config alone."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from .test_cli_errors import one_line


def _with_config(source, target, change: dict):
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps(config | change))
    return target


@pytest.mark.parametrize("command", ["inspect", "behavior"])
@pytest.mark.parametrize("family, change, expected", [
    ("llama", {"num_attention_heads": 0}, "num_attention_heads = 0; it must be a whole number >= 1"),
    ("gpt2", {"n_head": 0}, "n_head = 0; it must be a whole number >= 1"),
    ("llama", {"vocab_size": 1e12}, "vocab_size = 1000000000000.0; it must be a whole number >= 1"),
    ("llama", {"num_key_value_heads": 3}, "num_key_value_heads = 3, which does not divide num_attention_heads = 4"),
    ("gpt2", {"n_head": 3}, "hidden_size = 32, which num_attention_heads = 3 does not divide"),
    ("llama", {"vocab_size": 10**12}, "parameters (vocab_size 1,000,000,000,000, hidden_size 32, num_hidden_layers"),
    ("gpt2", {"n_embd": 2**30, "n_head": 1}, "more than 10,000,000,000,000: one of its sizes is wrong"),
])
def test_config_sizes_that_cannot_be_built_are_one_line(cli, tiny_models, tmp_path, family, change, expected,
                                                        command):
    """Issue 35, item 10: heads = 0 was a ZeroDivisionError inside transformers (exit 3), and a vocabulary of
    10**12 an attempt to allocate 128 TB; both are now refused from the config, before anything is built."""
    model = _with_config(tiny_models[family], tmp_path / "m", change)
    code, _, stderr = cli(command, str(model), *(["--limit", "1"] if command == "behavior" else []))
    one_line(code, stderr, expected)


def test_a_config_larger_than_its_weights_is_inspected_but_never_loaded(cli, tiny_models, tmp_path):
    """Issue 35, item 10: a vocabulary of 10**10 is a size `inspect` may report (nothing is allocated), but loading
    it against 150 KB of weights would allocate 1.3 TB for the rows the checkpoint lacks."""
    model = _with_config(tiny_models["llama"], tmp_path / "m", {"vocab_size": 10**10})
    code, stdout, stderr = cli("inspect", str(model), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["num_parameters"] > 2 * 10**11
    code, _, stderr = cli("behavior", str(model), "--limit", "1")
    one_line(code, stderr, "too few at even one bit a parameter: the weights are cut short, or the config belongs")


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    """A small but real GGUF file (llama metadata, a vocabulary, two float tensors) from gguf's own writer."""
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"token{i}" for i in range(300)])
    writer.add_tensor("token_embd.weight", np.zeros((300, 8), np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.mark.parametrize("cut", ["5 bytes", "bare magic", "header", "in a key", "in the vocabulary",
                                 "in the tensor table", "in the tensor data", "a 2**40-byte string"])
def test_a_gguf_file_cut_short_is_one_line_naming_it(cli, tmp_path, gguf_bytes, cut):
    """Issue 35, item 11: a GGUF cut anywhere in its header or metadata was a bare struct.error ("unpack_from
    requires a buffer", exit 3); a declared length is checked against the bytes left, never allocated."""
    from ssah_audit.models.gguf import check_gguf

    vocabulary = gguf_bytes.index(b"token150")
    table = gguf_bytes.index(b"token_embd.weight")
    contents = {
        "5 bytes": gguf_bytes[:5], "bare magic": b"GGUF", "header": gguf_bytes[:24], "in a key": gguf_bytes[:40],
        "in the vocabulary": gguf_bytes[:vocabulary], "in the tensor table": gguf_bytes[:table + 4],
        "in the tensor data": gguf_bytes[:-100],
        "a 2**40-byte string": b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**40) + b"general.architecture",
    }[cut]
    path = tmp_path / "cut.gguf"
    path.write_bytes(contents)
    code, _, stderr = cli("inspect", str(path))
    one_line(code, stderr, "cut.gguf is not a complete GGUF file: ")
    intact = tmp_path / "intact.gguf"
    intact.write_bytes(gguf_bytes)
    check_gguf(intact)  # the whole file passes the same walk


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_plain_pickle_state_dict_is_one_line_with_no_torch_warning(cli, tiny_models, tmp_path, protocol):
    """Issue 35, item 14b: a state dict written with pickle.dump, not torch.save, was refused with exit 2, but
    torch warned about the pickle protocol first (three lines on stderr)."""
    import pickle

    from safetensors.torch import load_file

    model = tmp_path / "m"
    shutil.copytree(tiny_models["llama"], model)
    weights = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    with open(model / "pytorch_model.bin", "wb") as handle:
        pickle.dump(weights, handle, protocol=protocol)
    code, _, stderr = cli("behavior", str(model), "--allow-pickle", "--limit", "1")
    one_line(code, stderr, "are a plain pickle, not torch.save's format")


LLAMA_70B = dict(architectures=["LlamaForCausalLM"], hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                 num_key_value_heads=8, intermediate_size=28672, vocab_size=128256, max_position_embeddings=131072)


@pytest.mark.parametrize("family", ["llama-70b", "llama-70b with tokenizer", "gpt2", "opt", "gemma2"])
def test_inspect_answers_from_a_config_alone(cli, tiny_models, families, tmp_path, family):
    """Issue 35, item 15: a folder holding only a 70B config.json was refused for having no weight files, though
    `inspect` reads the config only, any size; commands that run the model still need the weights."""
    from transformers import LlamaConfig

    folder = tmp_path / "config-only"
    folder.mkdir()
    if family.startswith("llama-70b"):
        LlamaConfig(**LLAMA_70B).save_pretrained(folder)
        layers, hidden, attn, mlp = 80, 8192, 8192, 28672
        if family.endswith("tokenizer"):
            for item in tiny_models["llama"].iterdir():
                if "token" in item.name or "template" in item.name:
                    shutil.copy(item, folder)
    else:
        shutil.copy(tiny_models[family] / "config.json", folder)
        config, attn, mlp = families[family]
        layers, hidden = config.num_hidden_layers, config.hidden_size
    code, stdout, stderr = cli("inspect", str(folder), "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert (doc["num_layers"], doc["hidden_size"]) == (layers, hidden)
    assert doc["units"] == {"attn": attn * layers, "mlp": mlp * layers, "total": (attn + mlp) * layers}
    with_tokenizer = family.endswith("tokenizer")
    assert doc["chat_template"] is with_tokenizer
    if family.startswith("llama-70b"):
        assert 70e9 < doc["num_parameters"] < 71e9
    code, stdout, stderr = cli("inspect", str(folder))
    assert code == 0, stderr
    assert f"chat template: {'yes' if with_tokenizer else 'no tokenizer here'}" in " ".join(stdout.split())
    code, _, stderr = cli("behavior", str(folder), "--limit", "1")
    one_line(code, stderr, "has no weight files")
