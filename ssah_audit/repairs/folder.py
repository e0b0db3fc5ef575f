"""The repaired model on disk: a normal Hugging Face folder, or for an adapter input a PEFT adapter folder of the
same rank and targets (its B factors repaired), each with repair.json (what was done and measured) and a README
card rendered from it."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from ..errors import UserError

CARD = "repair.json"


def card(loaded, job, outcome) -> dict:
    from .. import __version__
    from ..components import REPAIRS

    method = REPAIRS.get(outcome.method)
    return {"name": None, "version": __version__, "form": outcome.form, "method": outcome.method,
            "description": method.description, "settings": outcome.settings, "record": outcome.chosen.record,
            "model": outcome.model, "model_fingerprint": outcome.model_fingerprint,
            "reference": outcome.reference, "reference_fingerprint": job.reference.fingerprint,
            "unaligned": job.unaligned.spec if job.unaligned is not None else None,
            "model_nll": outcome.model_nll, "reference_nll": outcome.reference_nll,
            "candidates": [asdict(candidate) | {"line": candidate.line()} for candidate in outcome.candidates],
            "chosen": outcome.chosen.line()}


def write(target: Path, loaded, job, outcome) -> Path:
    """Build the folder beside `target` and publish it in one rename (outputs.new_folder)."""
    from ..outputs import json_text, new_folder
    from ..reporting.templates import render

    document = card(loaded, job, outcome) | {"name": target.name, "path": str(target)}
    with new_folder(target, empty_ok=True) as tmp:
        if outcome.form == "adapter":
            _write_adapter(Path(loaded.location), tmp, job.adapter_b)
        else:
            loaded.model.save_pretrained(tmp, safe_serialization=True)
            loaded.tokenizer.save_pretrained(tmp)
        (tmp / CARD).write_text(json_text(document), encoding="utf-8")
        (tmp / "README.md").write_text(render("repair_card.md.j2", card=document), encoding="utf-8")
    return target


def _write_adapter(source: Path, tmp: Path, new_b: dict) -> None:
    """The adapter's own files, its weights with the repaired B factors (safetensors, whatever the input was)."""
    import torch
    from safetensors.torch import load_file, save_file

    from ..models.adapters import CONFIG, PEFT_PREFIX, SAFE_WEIGHTS, weights_file

    path = weights_file(source, allow_pickle=True)
    tensors = (load_file(str(path)) if path.suffix == ".safetensors"
               else torch.load(path, map_location="cpu", weights_only=True))
    for module, b in new_b.items():
        key = f"{PEFT_PREFIX}{module}.lora_B.weight"
        if key not in tensors:
            raise UserError(f"the adapter {source} keeps {module}'s B factor under another name than {key}; "
                            "nothing was written")
        tensors[key] = b.to(tensors[key].dtype).contiguous()
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(tmp / SAFE_WEIGHTS),
              metadata={"format": "pt"})
    shutil.copyfile(source / CONFIG, tmp / CONFIG)
    for item in source.iterdir():  # an adapter that ships its tokenizer keeps it
        if item.is_file() and item.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab",
                                                    "merges")):
            shutil.copyfile(item, tmp / item.name)
