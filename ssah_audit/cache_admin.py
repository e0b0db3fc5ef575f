"""What the on-disk cache holds, which of it this version still reads, and removing what it never will.

Builds are content-keyed: a changed recipe (or torch version) builds under a new key and leaves the old folder
behind, and a crash leaves a hidden staging folder. Neither is read again, and the pair builds are ~0.5 GB each.
Audit reference blocks are keyed by the reference model and settings, so any of them may be read again: kept.
"""

from __future__ import annotations

import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root, is_complete

STAGING_GRACE_SECONDS = 6 * 3600  # a staging folder younger than this may belong to a build still running
KEPT_KINDS = ("audit-references",)


@dataclass(frozen=True)
class CacheEntry:
    kind: str  # the folder below the cache root: gguf, zoo, organisms, audit-references
    name: str
    path: Path
    size_bytes: int
    status: str  # in use | kept | superseded | incomplete | building | abandoned

    @property
    def removable(self) -> bool:
        return self.status in ("superseded", "incomplete", "abandoned")


def _stats(path: Path) -> list:
    """os.stat of `path` and everything below it; a file a running build removes meanwhile is skipped."""
    found = []
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        try:
            found.append(item.stat())
        except FileNotFoundError:
            continue
    return found


def _size(path: Path) -> int:
    return sum(s.st_size for s in _stats(path) if not stat.S_ISDIR(s.st_mode))


def _newest_change(path: Path) -> float:
    return max((s.st_mtime for s in _stats(path)), default=0.0)


def _status(path: Path, kind: str, in_use: set[Path], now: float) -> str:
    if path.name.startswith("."):
        return "building" if now - _newest_change(path) < STAGING_GRACE_SECONDS else "abandoned"
    if path in in_use:
        return "in use"
    if kind in KEPT_KINDS:
        return "kept"
    return "superseded" if is_complete(path) or not path.is_dir() else "incomplete"


def entries() -> list[CacheEntry]:
    """Every folder one level below each kind of artefact, with its size and whether it is still read."""
    from .models.zoo import folders_in_use

    root, in_use, now = cache_root(), folders_in_use(), time.time()
    found = []
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(kind_dir.iterdir()):
            found.append(CacheEntry(kind_dir.name, path.name, path, _size(path),
                                    _status(path, kind_dir.name, in_use, now)))
    return found


def prune(dry_run: bool = False) -> list[CacheEntry]:
    """Remove superseded builds and abandoned staging folders; return what was (or would be) removed."""
    doomed = [entry for entry in entries() if entry.removable]
    if not dry_run:
        for entry in doomed:
            if entry.path.is_dir():
                shutil.rmtree(entry.path)
            else:
                entry.path.unlink()
    return doomed
