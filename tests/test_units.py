"""The unit map finds every layer's attention and MLP write-back with the right unit counts, per family."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ssah_audit.errors import UserError
from ssah_audit.models import unit_map as units_module
from ssah_audit.models.unit_map import build_unit_map, weight_out_in

from .conftest import HIDDEN, LAYERS

FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox", "opt"]
INSPECT_KEYS = {"model": str, "architecture": str, "model_type": str, "num_layers": int, "hidden_size": int,
                "num_parameters": int, "chat_template": bool, "units": dict, "layers": list,
                "adapter": type(None)}  # a LoRA adapter's description (tests/test_adapters.py), else null
LAYER_KEYS = {"index": int, "attn_module": str, "attn_units": int, "mlp_module": str, "mlp_units": int}


@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_json_is_the_documented_document(cli, tiny_models, families, family):
    code, stdout, stderr = cli("inspect", str(tiny_models[family]), "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert set(doc) == set(INSPECT_KEYS)
    for key, kind in INSPECT_KEYS.items():
        assert type(doc[key]) is kind, key
    config, attn, mlp = families[family]
    assert doc["model_type"] == config.model_type
    assert doc["num_layers"] == LAYERS and doc["hidden_size"] == HIDDEN
    assert doc["chat_template"] is True
    assert doc["units"] == {"attn": attn * LAYERS, "mlp": mlp * LAYERS, "total": (attn + mlp) * LAYERS}
    assert [layer["index"] for layer in doc["layers"]] == list(range(LAYERS))
    for layer in doc["layers"]:
        assert set(layer) == set(LAYER_KEYS) and all(type(layer[k]) is t for k, t in LAYER_KEYS.items())
        assert (layer["attn_units"], layer["mlp_units"]) == (attn, mlp)
        assert f".{layer['index']}." in layer["attn_module"] and f".{layer['index']}." in layer["mlp_module"]


@pytest.mark.parametrize("family", FAMILIES)
def test_num_parameters_matches_the_loaded_model(cli, tiny_models, family):
    from transformers import AutoModelForCausalLM

    doc = json.loads(cli("inspect", str(tiny_models[family]), "--json")[1])
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family])
    assert doc["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert doc["architecture"] == type(model).__name__


@pytest.mark.parametrize("family", FAMILIES)
def test_write_back_column_is_what_unit_j_writes(tiny_models, family):
    """B[:, j] from weight_out_in is the residual-stream contribution of unit j (Conv1D included)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models[family]).eval()
    for write_back in build_unit_map(model).modules():
        x = torch.zeros(1, write_back.units)
        x[0, 3] = 1.0
        bias = write_back.module(torch.zeros(1, write_back.units))
        with torch.no_grad():
            column = write_back.module(x) - bias
        # one fp32 matmul against a one-hot input minus the bias: exact up to the bias subtraction's rounding
        assert torch.allclose(column[0], weight_out_in(write_back.module)[:, 3], atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_fallback_maps_every_known_family_the_same_way(tiny_models, family, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models[family])
    by_table = build_unit_map(model)
    monkeypatch.setattr(units_module, "FAMILY_WRITE_BACKS", {})
    by_fallback = build_unit_map(model)
    assert [(wb.name, wb.units) for wb in by_fallback.modules()] == [(wb.name, wb.units) for wb in by_table.modules()]


class Ambiguous(nn.Module):
    """A decoder whose layers have two residual-width projections and no recognisable names."""

    def __init__(self):
        super().__init__()

        class Config:
            model_type = "mystery"
            num_hidden_layers = 2
            hidden_size = 8

        self.config = Config()
        self.blocks = nn.ModuleList(nn.ModuleDict({"left": nn.Linear(8, 8), "right": nn.Linear(16, 8)})
                                    for _ in range(2))


def test_fallback_fails_with_a_message_listing_what_it_found():
    with pytest.raises(UserError) as info:
        build_unit_map(Ambiguous())
    message = str(info.value)
    assert "mystery" in message and "left 8->8" in message and "right 16->8" in message


def test_a_mapped_module_that_does_not_write_to_the_residual_stream_is_refused(tiny_models, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    monkeypatch.setitem(units_module.FAMILY_WRITE_BACKS, "llama", ("self_attn.q_proj", "mlp.up_proj"))
    with pytest.raises(UserError, match="does not write back to the residual stream"):
        build_unit_map(model)


def test_inspect_markdown_renders_the_packaged_template(cli, tiny_models):
    code, stdout, _ = cli("inspect", str(tiny_models["gpt2"]), "--markdown")
    assert code == 0
    assert "| 1 | `transformer.h.1.attn.c_proj` | 32 | `transformer.h.1.mlp.c_proj` | 128 |" in stdout
