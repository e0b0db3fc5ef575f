"""Reading a text file a user gave (a prompt file, audit.toml, a results.json, a sidecar, an adapter config): a
regular file only, of a bounded size, decoded as UTF-8, every failure one line naming the file. A FIFO blocks
for ever and /dev/zero fills memory until the system kills the run; both are refused before a byte is read."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

MiB = 2**20


def read_text(path: Path, what: str, most: int, encoding: str = "utf-8") -> str:
    """The text of `path`, at most `most` bytes; `what` names the file in errors ("prompt file", "config file")."""
    path = path.expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise UserError(f"cannot read {what} {path}: it is a folder, not a file")
    if not path.is_file():
        raise UserError(f"cannot read {what} {path}: it is not a regular file (a device, a pipe or a socket)")
    if info.st_size > most:
        raise UserError(f"{what} {path} has {info.st_size:,} bytes, more than the {most:,} a {what} may have")
    try:
        with open(path, "rb") as handle:
            data = handle.read(most + 1)  # a file that grew since stat() is still read no further
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > most:
        raise UserError(f"{what} {path} has more than the {most:,} bytes a {what} may have")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text: {exc.reason} at byte {exc.start:,}") from None
