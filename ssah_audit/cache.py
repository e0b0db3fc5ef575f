"""The on-disk cache (~/.cache/ssah-audit, or $SSAH_AUDIT_CACHE): content-keyed, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .outputs import make_staging, publish_modes, rename_noreplace, unmark

COMPLETE_MARK = ".complete"
KINDS = ("gguf", "zoo", "organisms", "audit-references")  # every folder the cache makes below its root
MARKER = ".ssah-audit-cache"
MARKER_TEXT = ("This folder is an ssah-audit cache (see `ssah-audit cache list`); `ssah-audit cache prune` "
               "removes only its own superseded builds in it.\n")


def cache_root() -> Path:
    """Where expensive artefacts live; one folder per kind of artefact below it."""
    env = os.environ.get("SSAH_AUDIT_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "ssah-audit"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "SSAH_AUDIT_CACHE" if env else "the default cache folder"
        raise UserError(f"cannot use {root} ({where}) as the cache folder: {exc.strerror or exc}") from None
    _claim(root)
    return root


def is_ours(root: Path) -> bool:
    """Whether `root` is recognisably an ssah-audit cache: it carries the marker, or (an empty folder, or a cache
    an older version wrote before the marker existed) it holds nothing but our own kind folders."""
    if (root / MARKER).is_file():
        return True
    try:
        return all(entry.name in KINDS and entry.is_dir() and not entry.is_symlink() for entry in root.iterdir())
    except OSError:
        return False


def _claim(root: Path) -> None:
    """Mark a root that is recognisably ours, so that files a user adds later do not make it foreign. A folder
    holding anything else (SSAH_AUDIT_CACHE pointed at a home folder) is used but never marked, so never pruned."""
    if not (root / MARKER).is_file() and is_ours(root):
        try:
            (root / MARKER).write_text(MARKER_TEXT)
        except OSError:  # a read-only shared cache still reads
            pass


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_key(*parts: object) -> str:
    """A short stable key for a JSON-serialisable description of what was computed."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARK).is_file()


@contextmanager
def staging_folder(final: Path, usable: Callable[[Path], bool] = is_complete) -> Iterator[Path]:
    """Build a folder next to `final`, then move it into place in one rename.

    A crash leaves only a temporary folder behind, never a half-written `final`; the
    `.complete` mark written last is what readers check. For cache entries only: it replaces an entry of its own
    at `final` that is not `usable` (incomplete, damaged). A usable one that another process published meanwhile
    (two runs building one content-keyed entry at once) is kept, and this build dropped: replacing it would pull
    the folder from under a run already reading it. A user's path goes through outputs.new_folder, which never
    replaces anything.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_staging(final)
    try:
        yield tmp
        (tmp / COMPLETE_MARK).write_text("ok\n")
        unmark(tmp)
        publish_modes(tmp)
        for _ in range(3):  # another process may publish or remove between our tries
            try:
                rename_noreplace(tmp, final)
                break
            except FileExistsError:
                if usable(final):
                    break
                shutil.rmtree(final, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cached_folder(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, building it atomically with `build(tmp_folder)` when it is missing or incomplete."""
    if not is_complete(final):
        with staging_folder(final) as tmp:
            build(tmp)
    return final
