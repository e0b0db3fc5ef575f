"""Writing result files: checked before the work starts, written atomically, never silently overwritten."""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .staging import make_staging, sweep_abandoned, unmark


def check_output(path: Path, overwrite: bool) -> Path:
    """Fail fast (before any model work) when `path` exists or cannot be written."""
    path = path.expanduser()
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a file")
    if (path.exists() or path.is_symlink()) and not overwrite:  # a dangling symlink is a path the user made too
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    _check_writable(path)
    return path


def check_new_folder(path: Path, empty_ok: bool = False, make_parent: bool = False) -> Path:
    """Fail fast (before any model work) when an output folder exists (outputs never overwrite a run; with
    `empty_ok` an empty folder is taken), or cannot be made. `make_parent` makes a default parent (reports/)."""
    path = path.expanduser()
    if path.exists() or path.is_symlink():
        if not (empty_ok and path.is_dir() and not path.is_symlink() and not any(path.iterdir())):
            empty = " and is not an empty folder" if empty_ok else ""
            raise UserError(f"{path} already exists{empty}; outputs never overwrite a run: choose a new --out")
    if make_parent:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot make {path.parent}: {exc.strerror or exc}") from None
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    _check_writable(path)
    return path


def _check_writable(path: Path) -> None:
    """Make and remove a hidden folder beside `path`: the only sure test that the output can be written there
    (permissions, a read-only or pseudo file system such as /proc), done before the work rather than after it."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_outputs(paths: list[Path | None], overwrite: bool, inputs: list[Path] = (),
                  folders: list[Path] = ()) -> list[Path | None]:
    """check_output for each given path (None: not asked for), and refuse a run that would write one file twice
    (the second output would silently replace the first), a file where it writes an output folder, or over one
    of its own inputs."""
    checked = [check_output(path, overwrite) if path else None for path in paths]
    seen: set[Path] = {folder.resolve() for folder in folders}
    for path in filter(None, checked):
        if path.resolve() in seen:
            raise UserError(f"{path} is named for two outputs; give each output its own file")
        seen.add(path.resolve())
    for source in inputs:
        if source.expanduser().resolve() in seen:
            raise UserError(f"{source} is an input of this run; write the output to another file")
    return checked


def json_text(document) -> str:
    """A results document as strict JSON (allow_nan=False): a bare NaN or Infinity, which Python writes by
    default, is rejected by strict parsers (jq, browsers, Go, Rust), so a value that is not finite is null."""
    return json.dumps(_finite(document), indent=2, allow_nan=False) + "\n"


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# No space left, over quota, a read-only file system, no permission: the machine's answer, not a bug of ours.
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def storage_failure(exc: BaseException | None, path: Path) -> None:
    """A full, read-only or forbidden disk met while writing `path`, as one line naming it (the system's own error
    names no file when a write, not an open, fails); any other exception is left to its caller."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRORS:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    try:
        _write_atomic(path, content)
    except OSError as exc:
        storage_failure(exc, path)
        raise


def _write_atomic(path: Path, content: str | bytes) -> None:
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


class new_folder:
    """Build an output folder in a hidden staging folder beside `final`, then publish it in one rename that
    cannot replace anything: a folder that appeared at `final` while the run worked is never removed (the
    existence check ran before the work). With `empty_ok`, an empty folder the user named is given up to the
    rename (os.rmdir removes only an empty folder, so nothing put there meanwhile can be lost). With `next_free`
    (a name we chose, such as the default report folder), a taken name means the next free one, `<final>-1`...;
    `published` says where the folder went. Unfinished work (an error, Ctrl-C, SIGTERM) is removed."""

    def __init__(self, final: Path, empty_ok: bool = False, next_free: bool = False):
        self.final, self.empty_ok, self.next_free = final, empty_ok, next_free
        self.published: Path | None = None

    def __enter__(self) -> Path:
        sweep_abandoned(self.final.parent)
        try:
            self.tmp = make_staging(self.final)
        except OSError as exc:
            storage_failure(exc, self.final)
            raise
        return self.tmp

    def __exit__(self, kind, exc, trace) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)  # unfinished work of our own, never published
            storage_failure(exc, self.final)
            return  # the exception goes on
        try:
            unmark(self.tmp)
            publish_modes(self.tmp)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        final = self.final
        if self.empty_ok and final.is_dir() and not final.is_symlink():
            try:
                os.rmdir(final)
            except OSError:
                pass  # no longer empty: the rename below refuses it
        self.published = (_publish_next_free(self.tmp, final) if self.next_free else publish_folder(self.tmp, final))


def publish_folder(tmp: Path, final: Path) -> Path:
    """Move a finished folder to `final`, or, when something is there now, keep it under a visible name beside
    it and say so in one line: the user's path is left alone and the finished work is not lost."""
    try:
        rename_noreplace(tmp, final)
        return final
    except FileExistsError:
        pass
    kept = _publish_next_free(tmp, final)
    raise UserError(f"{final} appeared while this run was working and was left as it is; the finished output is "
                    f"in {kept}")


def next_free_name(final: Path) -> Path:
    """`final` when nothing is there (not even a dangling symlink), else the first free sibling <final>-N."""
    for candidate in (final, *(final.with_name(f"{final.name}-{n}") for n in range(1, 10_000))):
        if not (candidate.exists() or candidate.is_symlink()):
            return candidate
    raise UserError(f"no free name beside {final}; choose --out")


def _publish_next_free(tmp: Path, final: Path) -> Path:
    """Publish at `final` or the first free sibling name <final>-N (the hidden staging folder if none is)."""
    for n in range(0, 100):
        target = final if n == 0 else final.with_name(f"{final.name}-{n}")
        try:
            rename_noreplace(tmp, target)
            return target
        except FileExistsError:
            continue
    return tmp


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename the folder `src` to `dst`, raising FileExistsError when anything is at `dst`.

    os.rename replaces an empty folder at `dst` and an exists-check before it races, so: Linux's
    renameat2(RENAME_NOREPLACE), atomic; where the system or file system lacks it, os.mkdir(dst) (which fails
    on anything there) and moving the entries into the folder we just made, not atomic for readers but still
    never replacing anything."""
    if _renameat2_noreplace(src, dst):
        return
    os.mkdir(dst)
    for item in src.iterdir():
        os.rename(item, dst / item.name)
    src.rmdir()


def _renameat2_noreplace(src: Path, dst: Path) -> bool:
    """True when renamed; False when renameat2 or its flag is unavailable here; OSError (FileExistsError) else."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        return False
    at_fdcwd, rename_noreplace_flag = -100, 1
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if function(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace_flag) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(dst))
