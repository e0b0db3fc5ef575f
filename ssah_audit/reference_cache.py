"""The audit's cached reference blocks: a reference's measurements, kept under the cache's audit-references/ by its
fingerprint and the settings, so auditing many fine-tunes against one reference measures it once.

An entry is three files: block.json (the measurements), tensors.pt (unit classes, refusal directions, raw safety
scores, the benign queries' final states) and calibration.json (the reference's own refusals). It is built in a
staging folder and published in one rename, so a full disk or a kill never leaves half an entry under its key; an
entry is checked whole on every read, and a damaged one (edited, truncated, from a bug) is measured again with a
warning naming it, never trusted.
A cache that cannot be written (read-only, full) costs only the caching: the audit goes on and says so.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from .cache import cache_root, staging_folder
from .errors import UserError
from .progress import warn

FILES = ("block.json", "tensors.pt", "calibration.json")
TENSORS = ("classes", "directions", "safety", "codes", "benign_final")


def entry_folder(key: str) -> Path:
    return cache_root() / "audit-references" / key


def problem(folder: Path) -> str | None:
    """Why the entry at `folder` cannot be used (None when it can): a file missing, unreadable or not what the
    audit wrote. Reads every file; `cache prune` uses the same check."""
    try:
        _read(folder)
    except _Damaged as exc:
        return str(exc)
    return None


class _Damaged(Exception):
    pass


def _read(folder: Path) -> tuple[dict, dict, dict]:
    import torch

    from .results import ModelBlock

    for name in FILES:
        if not (folder / name).is_file():
            raise _Damaged(f"{name} is missing")
    try:
        block = json.loads((folder / "block.json").read_text(encoding="utf-8"))
        calibration = json.loads((folder / "calibration.json").read_text(encoding="utf-8"))
        tensors = torch.load(folder / "tensors.pt", weights_only=True, map_location="cpu")
    except (OSError, ValueError, RecursionError, RuntimeError, EOFError) as exc:  # truncated, not JSON, not torch
        raise _Damaged(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()) from None
    except Exception as exc:  # torch's unpickler refusing a foreign object, among others
        raise _Damaged(f"tensors.pt: {type(exc).__name__}") from None
    try:
        ModelBlock.read(block, "", folder / "block.json")  # builds a checked copy, the block stays as it was
    except UserError as exc:
        raise _Damaged(str(exc).split(": ", 1)[-1]) from None
    if not isinstance(tensors, dict) or any(key not in tensors for key in TENSORS) or \
            not all(isinstance(tensors[key], torch.Tensor) for key in ("directions", "benign_final")) or \
            not _tensors_by_name(tensors["classes"]) or \
            not _tensors_by_name(tensors["safety"]):
        raise _Damaged(f"tensors.pt does not hold {', '.join(TENSORS)}")
    pairs = calibration.get("pairs") if isinstance(calibration, dict) else None
    if not isinstance(pairs, list) or not all(isinstance(calibration.get(k), str) for k in ("model", "source")) or \
            not all(isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in pairs):
        raise _Damaged("calibration.json is not a list of (prompt, refusal) pairs with its model and source")
    return block, tensors, calibration


def _tensors_by_name(value) -> bool:
    """Unit classes and safety scores: one tensor per write-back module, by the module's name."""
    import torch

    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def load(folder: Path) -> tuple[dict, dict, dict] | None:
    """(block, tensors, calibration) of a usable entry; None when there is none. A damaged entry is named in a
    warning and left to be replaced by the measurement that follows (or removed by `cache prune`)."""
    if not folder.exists():
        return None
    try:
        return _read(folder)
    except _Damaged as exc:
        warn(f"warning: the cached reference measurements in {folder} are damaged ({exc}); measuring the reference "
             "again")
        return None


def writable(folder: Path) -> bool:
    """Whether an entry can be published at `folder` (checked before the reference is measured, not after): when
    it cannot, say so once; the audit runs uncached."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".write-check.", dir=folder.parent))
        return True
    except OSError as exc:
        warn(f"warning: the cache {folder.parent} cannot be written ({exc.strerror or exc}); the reference is "
             "measured without being cached")
        return False


def save(folder: Path, block: dict, tensors: dict, calibration: dict) -> None:
    """Publish the entry whole or not at all. tensors.pt is serialised in memory first: torch's own writer meets
    a full disk with an opaque "unexpected pos" error after truncating the file; a plain write says ENOSPC."""
    import torch

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    try:
        with staging_folder(folder, usable=lambda entry: problem(entry) is None) as tmp:
            (tmp / "tensors.pt").write_bytes(buffer.getvalue())
            (tmp / "calibration.json").write_text(json.dumps(calibration) + "\n", encoding="utf-8")
            (tmp / "block.json").write_text(json.dumps(block) + "\n", encoding="utf-8")
    except OSError as exc:
        warn(f"warning: could not cache the reference's measurements in {folder} ({exc.strerror or exc}); the audit "
             "goes on without caching them")
