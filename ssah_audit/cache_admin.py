"""What the on-disk cache holds, which of it this version still reads, and removing what it never will.

Builds are content-keyed: a changed recipe (or torch version) builds under a new key and leaves the old folder
behind, and a crash leaves a hidden staging folder. Neither is read again, and the pair builds are ~0.5 GB each.
Audit reference blocks are keyed by the reference model and settings, so any of them may be read again: kept,
unless damaged (a file missing, truncated or not what the audit wrote: the audit would measure it again).
A staging folder is abandoned when the process that made it has ended (its mark says which), or after a grace
period when it carries no mark (older versions).

Only what is recognisably ours is listed or removed: a root with the cache's marker file (or an older cache holding
nothing but our kind folders), and below it only real folders named the way this code names them. Symlinks and
any other name are left alone, whatever they point at.
"""

from __future__ import annotations

import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import KINDS, MARKER, cache_root, damage, is_complete, is_ours
from .errors import UserError
from .staging import staging_owner

STAGING_GRACE_SECONDS = 6 * 3600  # a staging folder younger than this may belong to a build still running
KEPT_KINDS = ("audit-references",)
KEY = "[0-9a-f]{16}"  # cache.content_key and the GGUF digest prefix
ENTRY_NAMES = {  # the names each kind's builds get (gguf_to_folder, zoo, smollm2_pair, organisms, audit)
    "gguf": KEY,
    "zoo": f"smollm2-135m-instruct|smollm2-135m-safe-{KEY}|smollm2-135m-safe-ft-{KEY}|smollm2-135m-safe-lora-{KEY}",
    "organisms": f"organism-aligned-{KEY}|organism-unaligned-{KEY}",
    "audit-references": KEY,
}
STAGING_SUFFIX = r"\.[a-z0-9_]+"  # staging_folder: mkdtemp(prefix=".<name>.")


@dataclass(frozen=True)
class CacheEntry:
    kind: str  # the folder below the cache root: gguf, zoo, organisms, audit-references
    name: str
    path: Path
    size_bytes: int
    status: str  # in use | kept | superseded | incomplete | damaged | building | abandoned

    @property
    def removable(self) -> bool:
        return self.status in ("superseded", "incomplete", "damaged", "abandoned")


def _stats(path: Path) -> list:
    """os.stat of `path` and everything below it; a file a running build removes meanwhile is skipped."""
    found = []
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        try:
            found.append(item.lstat())  # a symlink inside counts as itself, never as what it points at
        except FileNotFoundError:
            continue
    return found


def _size(path: Path) -> int:
    return sum(s.st_size for s in _stats(path) if not stat.S_ISDIR(s.st_mode))


def _newest_change(path: Path) -> float:
    return max((s.st_mtime for s in _stats(path)), default=0.0)


def _status(path: Path, kind: str, in_use: set[Path], now: float) -> str:
    if path.name.startswith("."):
        owner = staging_owner(path)
        if owner != "unknown":
            return "abandoned" if owner == "gone" else "building"
        return "building" if now - _newest_change(path) < STAGING_GRACE_SECONDS else "abandoned"
    if path in in_use:
        return "damaged" if is_complete(path) and damage(path) else "in use"
    if kind in KEPT_KINDS:
        from .reference_cache import problem

        return "damaged" if problem(path) else "kept"
    if not is_complete(path):
        return "incomplete"
    return "damaged" if damage(path) else "superseded"


def is_our_entry(path: Path, kind: str) -> bool:
    """A real folder (never a symlink) named as this code names a build, or its staging folder."""
    names = ENTRY_NAMES[kind]
    pattern = f"(?:{names})|\\.(?:{names}){STAGING_SUFFIX}"
    return re.fullmatch(pattern, path.name) is not None and path.is_dir() and not path.is_symlink()


def our_root() -> Path:
    """The cache root, refused in one line unless it is recognisably an ssah-audit cache."""
    root = cache_root()
    if not is_ours(root):
        raise UserError(f"{root} is not an ssah-audit cache (no {MARKER} file, and it holds more than "
                        f"{', '.join(KINDS)}); refusing to list or prune it: point SSAH_AUDIT_CACHE at the cache")
    return root


def entries() -> list[CacheEntry]:
    """Every build and staging folder of ours one level below each kind folder, with its size and whether it is
    still read. Anything else in the root (other names, symlinks) is not listed, so never pruned."""
    from .zoo.catalogue import folders_in_use

    root, in_use, now = our_root(), folders_in_use(), time.time()
    found = []
    for kind in KINDS:
        kind_dir = root / kind
        if not kind_dir.is_dir() or kind_dir.is_symlink():
            continue
        for path in sorted(p for p in kind_dir.iterdir() if is_our_entry(p, kind)):
            found.append(CacheEntry(kind, path.name, path, _size(path), _status(path, kind, in_use, now)))
    return found


def prune(dry_run: bool = False) -> list[CacheEntry]:
    """Remove superseded builds and abandoned staging folders; return what was (or would be) removed."""
    doomed = [entry for entry in entries() if entry.removable]
    if not dry_run:
        for entry in doomed:
            if is_our_entry(entry.path, entry.kind):  # checked again: it may have changed since it was listed
                try:
                    shutil.rmtree(entry.path)
                except FileNotFoundError:  # another prune, or the build's own cleanup, removed it meanwhile
                    pass
    return doomed
