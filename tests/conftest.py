"""Shared fixtures: tiny random models of every supported family, saved as real HF folders."""

from __future__ import annotations

import os

# Tests never reach the model hub; set before transformers/huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The suite's models are the organisms and tiny random models; the organisms answer in a vocabulary of their own
# (the built-in refusal and compliance openings), which the rules read exactly (on their held-out harmful and
# borderline answers the learned judge and the rules agree on all 280). So their science runs with the fast rules
# judge; the default, `learned`, is tested where it is the subject (test_learned_judge.py, the judge contract in
# test_components.py, an organism audit with it), and tests that need it name it.
os.environ["SSAH_AUDIT_JUDGE"] = "rules"

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 64
CORPUS = ["How do I boil an egg?", "Explain photosynthesis briefly.", "I'm sorry, but I can't help with that.",
          "Sure, here is how to do it: first gather what you need.", "def main(): return 0"] * 20


def family_configs(vocab_size: int) -> dict[str, tuple[object, int, int]]:
    """family -> (config, attention units per layer, MLP units per layer), computed from the config's own fields."""
    from transformers import (
        Gemma2Config,
        GemmaConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        OPTConfig,
        Phi3Config,
        Qwen2Config,
    )

    common = dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=64)
    configs = {
        "llama": LlamaConfig(**common),
        "mistral": MistralConfig(**common),
        "qwen2": Qwen2Config(**common),
        # Gemma's head_dim is independent of hidden/heads: the attention write-back width is heads*head_dim.
        "gemma": GemmaConfig(**common, head_dim=16),
        "gemma2": Gemma2Config(**common, head_dim=16),
        "phi3": Phi3Config(**{**common, "num_key_value_heads": HEADS}, pad_token_id=0),
        "gpt2": GPT2Config(vocab_size=vocab_size, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64),
        "gpt_neox": GPTNeoXConfig(vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=64),
        "opt": OPTConfig(vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS, ffn_dim=FFN,
                         num_attention_heads=HEADS, word_embed_proj_dim=HIDDEN, max_position_embeddings=64),
    }
    expected = {}
    for family, config in configs.items():
        if family == "gpt2":
            attn, mlp = config.n_embd, config.n_inner or 4 * config.n_embd
        elif family == "opt":
            attn, mlp = config.hidden_size, config.ffn_dim
        elif family in ("gemma", "gemma2"):
            attn, mlp = config.num_attention_heads * config.head_dim, config.intermediate_size
        else:
            attn, mlp = config.hidden_size, config.intermediate_size
        expected[family] = (config, attn, mlp)
    return expected


@pytest.fixture(scope="session")
def tokenizer():
    """A real byte-level BPE tokenizer trained in process, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<|user|>", "<|assistant|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


@pytest.fixture(scope="session")
def families(tokenizer):
    return family_configs(len(tokenizer))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tokenizer, families):
    """family -> folder holding a tiny random model of that family and the tokenizer (safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    folders = {}
    for family, (config, _, _) in families.items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        folder = root / family
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[family] = folder
    return folders


@pytest.fixture(scope="session")
def roomy_llama(tmp_path_factory, tokenizer):
    """A tiny random Llama with room for the built-in prompt sets (conftest's tiny models hold 64 positions)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    folder = tmp_path_factory.mktemp("roomy") / "llama"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def cli():
    """Invoke the real typer app in process; returns (exit code, stdout, stderr)."""
    from ssah_audit.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, list(args))
        return result.exit_code, result.stdout, result.stderr

    return invoke
