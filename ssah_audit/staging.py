"""Staging folders: where an output or a cache entry is built before one rename publishes it. Each carries a mark
naming the process that made it (host, boot, pid), so that what a killed run (SIGKILL, power loss) leaves behind
can be told from a build still running, and removed by the next run or by `cache prune`."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

STAGING_MARK = ".ssah-audit-staging"  # inside every staging folder we make: who made it, so a later run can tell


def make_staging(final: Path) -> Path:
    """A hidden staging folder beside `final`, marked with its owner (host, boot, pid): a run killed with SIGKILL
    cannot clean up, and the mark lets a later run, or `cache prune`, remove it once that process is gone."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        (tmp / STAGING_MARK).write_text(json.dumps(_owner()) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _owner() -> dict:
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid()}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def staging_owner(folder: Path) -> str:
    """"gone" when `folder` carries our staging mark and the process that made it has certainly ended (same host
    and boot, no such pid); "alive" when that process still runs; "unknown" for an unmarked, unreadable or
    foreign folder (another host, another boot), which is never called abandoned here."""
    try:
        owner = json.loads((folder / STAGING_MARK).read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return "unknown"
    if owner.get("host") != socket.gethostname() or owner.get("boot") != _boot_id():
        return "unknown"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except OSError:  # alive, owned by another user
        pass
    return "alive"


def sweep_abandoned(parent: Path) -> list[Path]:
    """Remove our hidden staging folders in `parent` whose process has ended (SIGKILL, power loss); returns them.
    Only folders named as make_staging names them and carrying its mark are candidates."""
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(".") and p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for folder in candidates:
        if re.fullmatch(r"\..+\.[a-z0-9_]{8}", folder.name) and staging_owner(folder) == "gone":
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def unmark(tmp: Path) -> None:
    """Drop the staging mark before a folder is published: it describes the build, not the result."""
    (tmp / STAGING_MARK).unlink(missing_ok=True)
