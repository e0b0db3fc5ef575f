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
from .outputs import publish_modes, rename_noreplace
from .progress import warn
from .staging import make_staging, unmark

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


def damage(folder: Path) -> str | None:
    """Why a complete build cannot be loaded (None when it can): a safetensors file cut short or whose header is
    not one. Cheap (headers only), so every use checks: a truncated build once stuck, failing every run."""
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with open(weights, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size)) if 0 < size < 100 * 2**20 else None
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
            return f"{weights.name} is not a safetensors file"
        if weights.stat().st_size != 8 + size + end:
            return f"{weights.name} holds {weights.stat().st_size:,} bytes where its header needs {8 + size + end:,}"
    return None


def usable(folder: Path) -> bool:
    """A build that finished and is still whole."""
    return is_complete(folder) and damage(folder) is None


@contextmanager
def staging_folder(final: Path, usable: Callable[[Path], bool] = usable) -> Iterator[Path]:
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
    """Return `final`, building it atomically with `build(tmp_folder)` when it is missing, incomplete or damaged
    (said in a warning naming it: a build is measured by what it holds, and a damaged one holds nothing usable)."""
    if not usable(final):
        if is_complete(final):
            warn(f"warning: the cached build {final} is damaged ({damage(final)}); building it again")
        with staging_folder(final) as tmp:
            build(tmp)
    return final
