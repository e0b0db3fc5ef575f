"""GGUF files (quantised llama.cpp checkpoints) de-quantised once into a cached safetensors folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..cache import cache_root, cached_folder, sha256_file
from ..errors import UserError
from .loading import first_line


def gguf_to_folder(gguf_path: Path) -> Path:
    """De-quantise a GGUF file once into a cached safetensors folder (loads then take about a second)."""
    digest = sha256_file(gguf_path)
    target = cache_root() / "gguf" / digest[:16]

    def convert(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
        except (ValueError, OSError, KeyError) as exc:
            raise UserError(f"cannot load {gguf_path} as a GGUF causal LM: {first_line(exc)}") from exc
        # The weights are already de-quantised floats; drop the GGUF marker so save_pretrained accepts them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "ssah_source.json").write_text(json.dumps({"gguf": gguf_path.name, "sha256": digest}))

    return cached_folder(target, convert)
