"""LoRA/PEFT adapters wherever a model is accepted (issue 20): made with `peft` itself on tiny models of three
families, loaded by folder, merged in memory, drift from the low-rank factors, the base as the audit's default
reference, and one line with exit 2 for every broken adapter."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from ssah_audit.compare.units import unit_drift
from ssah_audit.errors import UserError
from ssah_audit.models.loading import LoadOptions
from ssah_audit.models.resolve import load_model

# family -> LoRA targets covering write-backs and read-ins (gpt2's Conv1D layers need fan_in_fan_out)
TARGETS = {"llama": ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
           "qwen2": ["v_proj", "o_proj", "down_proj"],
           "gpt2": ["c_attn", "c_proj", "c_fc"]}
RANK, ALPHA = 4, 8


def make_adapter(base_folder, out, family: str, seed: int = 0, b_scale: float = 1.0):
    """A real PEFT adapter on `base_folder`, with random non-zero B (a fresh LoRA is the identity)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_folder)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS[family], fan_in_fan_out=family == "gpt2",
                        init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(b_scale)
    peft_model.save_pretrained(out)
    return peft_model


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {family: (make_adapter(tiny_models[family], root / family, family), root / family)
            for family in TARGETS}


@pytest.mark.parametrize("family", list(TARGETS))
def test_an_adapter_folder_loads_merged_into_its_base(adapters, tiny_models, family):
    peft_model, folder = adapters[family]
    loaded = load_model(str(folder))
    assert loaded.source == "adapter" and loaded.adapter["base"] == str(tiny_models[family])
    assert loaded.adapter["rank"] == RANK and loaded.adapter["alpha"] == ALPHA
    ids = torch.tensor([[5, 17, 42, 7, 99]])
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        merged = loaded.model(input_ids=ids).logits
        base = load_model(str(tiny_models[family])).model(input_ids=ids).logits
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged, base, atol=1e-3), "the adapter changed nothing"
    assert not any("lora" in name for name, _ in loaded.model.named_modules()), "merged: ordinary modules only"
    trainable = sum(p.numel() for name, p in peft_model.named_parameters() if "lora_" in name)
    assert loaded.adapter["trainable_parameters"] == trainable
    touched = loaded.adapter["units_touched"]
    assert touched["of"] == loaded.units.total_units and 0 < touched["any"] <= touched["of"]
    # the fingerprint covers base and adapter: another adapter on the same base is another model
    assert loaded.fingerprint != load_model(str(tiny_models[family])).fingerprint


@pytest.mark.parametrize("family", list(TARGETS))
def test_low_rank_drift_equals_the_drift_of_the_merged_weights(adapters, tiny_models, family):
    """Within 1e-6 relative: the factors are exact in float64; the merged weights carry float32 rounding of
    W + delta W, about 6e-8 of |W| per entry, and delta W is of the order of W here (B scaled up)."""
    _, folder = adapters[family]
    big = folder.parent / f"{family}-big"
    make_adapter(tiny_models[family], big, family, seed=1, b_scale=30.0)
    loaded, base = load_model(str(big)), load_model(str(tiny_models[family]))
    fast = unit_drift(loaded, base)
    dense = unit_drift(dataclasses.replace(loaded, low_rank=None), base)
    assert set(fast["write"]) == set(dense["write"]) and set(fast["read"]) == set(dense["read"])
    adapted = [name for name in fast["write"] if name in loaded.low_rank]
    assert adapted, "the adapter targets write-back modules"
    for kind in ("write", "read"):
        for name in fast[kind]:
            torch.testing.assert_close(fast[kind][name], dense[kind][name], rtol=1e-6, atol=1e-9)
    assert max(float(fast["write"][name].mean()) for name in adapted) > 0.1, "a drift worth comparing"


def test_inspect_shows_the_adapter(cli, adapters, tiny_models):
    _, folder = adapters["llama"]
    code, stdout, stderr = cli("inspect", str(folder), "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)["adapter"]
    assert doc["base"] == str(tiny_models["llama"]) and doc["rank"] == RANK
    assert doc["target_modules"] == sorted(TARGETS["llama"])
    # write-backs (o_proj, down_proj) and read-ins (v_proj; gate/up) of every layer: every unit can move
    assert doc["units_touched"]["any"] == doc["units_touched"]["of"]
    code, stdout, stderr = cli("inspect", str(folder))
    assert code == 0 and "LoRA adapter on" in stdout and f"rank {RANK}" in stdout


def test_base_overrides_the_adapter_config(cli, adapters, tiny_models, tmp_path):
    _, folder = adapters["llama"]
    copy = tmp_path / "base-copy"
    shutil.copytree(tiny_models["llama"], copy)
    loaded = load_model(str(folder), LoadOptions(base=str(copy)))
    assert loaded.adapter["base"] == str(copy)


def test_audit_of_an_adapter_defaults_to_its_base_as_reference(cli, families, tokenizer, tmp_path):
    """A qwen2 base with room for the built-in prompts (the shared tiny models have a 64-token context)."""
    from transformers import AutoModelForCausalLM

    config = families["qwen2"][0].__class__(**{**families["qwen2"][0].to_dict(), "max_position_embeddings": 256})
    torch.manual_seed(0)
    base = tmp_path / "qwen2-base"
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    folder = tmp_path / "qwen2-adapter"
    make_adapter(base, folder, "qwen2")
    settings = tmp_path / "audit.toml"
    # no jailbreak templates: the tiny tokenizer spells them in more tokens than this base holds
    settings.write_text("[audit]\nlimit = 6\nmax_new_tokens = 4\nsteps = 2\nverify = false\nbatch_size = 6\n"
                        'templates = "none"\n')
    out = tmp_path / "report"
    code, stdout, stderr = cli("--quiet", "audit", str(folder), "--config", str(settings), "--out", str(out),
                               "--format", "json,md")
    assert code in (0, 1), stderr
    assert "against its base" in stderr
    results = json.loads((out / "results.json").read_text())
    assert results["reference"]["model"] == str(base)
    assert results["reference_is_adapter_base"] is True and results["adapter"]["rank"] == RANK
    assert "the adapter's own base" in (out / "report.md").read_text()
    assert results["comparison"]["units"]["drift"]["write"]["all"] > 0


def broken_adapters(adapters, tiny_models, families, tmp_path):
    """name -> (adapter folder, extra CLI args, what the one line must say)."""
    _, good = adapters["llama"]
    cases = {}
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(good / "adapter_config.json", no_weights)
    cases["no weights"] = (no_weights, [], "no weights")
    missing_base = tmp_path / "missing-base"
    shutil.copytree(good, missing_base)
    config = json.loads((missing_base / "adapter_config.json").read_text())
    (missing_base / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "/no/such/base"}))
    cases["missing base"] = (missing_base, [], "the base of adapter")
    offline_hub = tmp_path / "offline-hub"
    shutil.copytree(good, offline_hub)
    (offline_hub / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "org/model"}))
    cases["hub base offline"] = (offline_hub, [], "the base of adapter")
    cases["another architecture"] = (good, ["--base", str(tiny_models["gpt2"])], "does not")
    wider = tmp_path / "llama-wider"
    if families is not None:
        from transformers import AutoModelForCausalLM

        wide = families["llama"][0].__class__(**{**families["llama"][0].to_dict(), "hidden_size": 48})
        AutoModelForCausalLM.from_config(wide).save_pretrained(wider)
        for item in tiny_models["llama"].glob("tokenizer*"):
            shutil.copy(item, wider)
        cases["another hidden size"] = (good, ["--base", str(wider)], "does not fit its base")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(good / "adapter_config.json", pickled)
    from safetensors.torch import load_file

    torch.save(load_file(good / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    cases["pickle without --allow-pickle"] = (pickled, [], "--allow-pickle")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    shutil.copy(good / "adapter_config.json", garbage)
    (garbage / "adapter_model.bin").write_bytes(b"\x80\x04not a pickle of tensors")
    cases["unreadable .bin"] = (garbage, ["--allow-pickle"], "not a loadable tensor file")
    not_lora = tmp_path / "ia3"
    shutil.copytree(good, not_lora)
    (not_lora / "adapter_config.json").write_text(json.dumps(config | {"peft_type": "IA3"}))
    cases["not LoRA"] = (not_lora, [], "only LoRA")
    return cases


def test_broken_adapters_are_one_line_exit_2_and_write_nothing(cli, adapters, tiny_models, families, tmp_path):
    for name, (folder, extra, message) in broken_adapters(adapters, tiny_models, families, tmp_path).items():
        out = tmp_path / f"report-{name.replace(' ', '-')}"
        code, stdout, stderr = cli("audit", str(folder), "--quick", "--out", str(out), *extra)
        assert code == 2, (name, code, stderr)
        assert message in stderr and len(stderr.strip().splitlines()) == 1, (name, stderr)
        assert not out.exists(), name


def test_a_pickle_adapter_loads_with_allow_pickle(adapters, tiny_models, tmp_path):
    _, good = adapters["llama"]
    cases = broken_adapters(adapters, tiny_models, None, tmp_path)
    pickled = cases["pickle without --allow-pickle"][0]
    with pytest.raises(UserError, match="--allow-pickle"):
        load_model(str(pickled))
    loaded = load_model(str(pickled), LoadOptions(allow_pickle=True))
    reference = load_model(str(good))
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=ids).logits, reference.model(input_ids=ids).logits)


def test_finetune_lora_writes_an_adapter_that_peft_and_ssah_audit_load(cli, tiny_models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    code, stdout, stderr = cli("--quiet", "finetune", str(tiny_models["llama"]), "--data", "benign:train",
                               "--limit", "16", "--max-length", "48", "--epochs", "3", "--max-steps", "4",
                               "--lr", "1e-2", "--lora", "4", "--lora-targets", "v_proj,o_proj,down_proj",
                               "--out", str(out))
    assert code == 0, stderr
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert config["base_model_name_or_path"] == str(tiny_models["llama"].resolve())
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    card = json.loads((out / "training.json").read_text())
    assert card["lora"]["r"] == 4 and card["log"]["steps"] == 4 and "LoRA" in (out / "README.md").read_text()
    by_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]), out).eval()
    ours = load_model(str(out))
    assert ours.adapter["target_modules"] == ["down_proj", "o_proj", "v_proj"]
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(ours.model(input_ids=ids).logits, by_peft(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-5)
        base = load_model(str(tiny_models["llama"])).model(input_ids=ids).logits
    assert not torch.allclose(ours.model(input_ids=ids).logits, base, atol=1e-4), "training moved the adapter"


def test_finetune_lora_options_are_checked_in_one_line(cli, tiny_models, tmp_path):
    code, _, stderr = cli("finetune", str(tiny_models["llama"]), "--data", "benign:train", "--lora-alpha", "4",
                          "--out", str(tmp_path / "a"))
    assert code == 2 and "--lora" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = cli("finetune", str(tiny_models["llama"]), "--data", "benign:train", "--max-length", "48",
                          "--lora", "2", "--lora-targets", "no_such_proj", "--out", str(tmp_path / "b"))
    assert code == 2 and "no_such_proj" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_unmerged_lora_reads_the_states_its_merged_model_reads(adapters, tiny_models, tokenizer):
    """A LoRA being trained is measured before it is merged (the zoo's smollm2-135m-safe-lora card measures it so):
    the decoder's states through the PEFT wrapper, with a shared prefix encoded once, are the merged model's.
    (They once failed: the PEFT wrapper's own `base_model` is the whole causal LM.)"""
    from ssah_audit.batching import pad
    from ssah_audit.models.head import final_states
    from ssah_audit.models.prefix import MIN_SHARED

    peft_model, _ = adapters["llama"]
    opening = "How do I boil an egg? Explain photosynthesis briefly. "
    texts = [opening + "I'm sorry, but I can't help with that.", opening + "def main(): return 0"]
    ids, mask, _ = pad([tokenizer(text)["input_ids"] for text in texts], tokenizer.pad_token_id)
    assert (ids[0] == ids[1])[:MIN_SHARED].all()  # the shared-prefix path is the one taken
    with torch.inference_mode():
        unmerged = final_states(peft_model, ids, mask)
        merged = final_states(_merged(peft_model), ids, mask)
    assert torch.allclose(unmerged, merged, atol=1e-5)


def _merged(peft_model):
    """A merged copy, leaving the module's adapter (shared by other tests) as it is."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()
