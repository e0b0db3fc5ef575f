"""Writing result files: checked before the work starts, written atomically, never silently overwritten."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError


def check_output(path: Path, overwrite: bool) -> Path:
    """Fail fast (before any model work) when `path` exists or cannot be written."""
    path = path.expanduser()
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a file")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if isinstance(content, bytes):
            with os.fdopen(handle, "wb") as out:
                out.write(content)
        else:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
                out.write(content)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
