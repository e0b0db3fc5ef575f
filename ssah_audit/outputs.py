"""Writing result files: checked before the work starts, written atomically, never silently overwritten."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError


def check_output(path: Path, overwrite: bool) -> Path:
    """Fail fast (before any model work) when `path` exists or cannot be written."""
    path = path.expanduser()
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def check_outputs(paths: list[Path | None], overwrite: bool, inputs: list[Path] = ()) -> list[Path | None]:
    """check_output for each given path (None: not asked for), and refuse a run that would write one file twice
    (the second output would silently replace the first) or write over one of its own inputs."""
    checked = [check_output(path, overwrite) if path else None for path in paths]
    seen: set[Path] = set()
    for path in filter(None, checked):
        if path.resolve() in seen:
            raise UserError(f"{path} is named for two outputs; give each output its own file")
        seen.add(path.resolve())
    for source in inputs:
        if source.expanduser().resolve() in seen:
            raise UserError(f"{source} is an input of this run; write the output to another file")
    return checked


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
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_mode(directory: bool = False) -> int:
    """What open() or mkdir() would give a new file or folder (0666 / 0777 less the umask): mkstemp and mkdtemp
    make theirs private (0600 / 0700), which a shared results folder must not inherit."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def publish_modes(folder: Path) -> None:
    """Give a folder built in a private temporary place, and everything in it, the default permissions."""
    modes = {True: default_mode(directory=True), False: default_mode()}  # the umask is read once, not per path
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, modes[path.is_dir()])


def _mode_for(path: Path) -> int:
    """A replaced file keeps its permissions; a new one gets the default ones."""
    return path.stat().st_mode & 0o7777 if path.exists() else default_mode()
