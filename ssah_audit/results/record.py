"""Typed results: each part of a results document is a `Record`, a dataclass whose fields say both the shape
(a field's type: another record, `list[...]`, `dict[str, ...]`, `X | None` for a part that may be absent) and
the check of each leaf value (`leaf(rate)`). One definition therefore writes results.json (`to_dict`), reads it
back with every value checked (`read`: a wrong value is one line naming where it is), and is what reports and
the Python API read, by attribute (`result.gate.passed`).

A record also reads like the mapping it is written as (`result["gate"]["passed"]`), as transformers'
ModelOutput does: templates and older code read keys. Keys a record does not name (a probe variant's own
measurements) are kept in `extra`, read back and written out unchanged, so a variant can add to its block
without a new schema.
"""

from __future__ import annotations

import functools
import math
import operator
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path

from ..errors import UserError
from .checks import NAME_CHARS, number, shown


def leaf(check, **kwargs):
    """A field whose values (every element of a list or dict of them) are checked by `check`, which returns what
    the value should have been, or None when it is fine."""
    return field(metadata={"check": check}, **kwargs)


def optional(check=None, *, newer: bool = False):
    """A field that may be absent or null. `newer`: a field later versions added, left out when written as None,
    so an older document reads and writes back unchanged."""
    return field(default=None, metadata={**({"check": check} if check else {}), "newer": newer})


@dataclass(kw_only=True)
class Record(Mapping):
    """A part of a results document: attributes for code, keys for templates, `extra` for keys not named here."""

    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, key: str):
        if key != "extra" and key in _names(type(self)):
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self):
        return iter([*_names(type(self)), *self.extra])

    def __len__(self) -> int:
        return len(_names(type(self))) + len(self.extra)

    def to_dict(self) -> dict:
        """The document as JSON-ready dicts and lists (NaN stays NaN: outputs.json_text writes it as null)."""
        newer = _newer(type(self))
        return {key: _plain(value) for key, value in self.items() if not (value is None and key in newer)}

    @classmethod
    def read(cls, value, where: str = "", path: Path | str = "results") -> Record:
        """Check a document (parsed JSON, untrusted) against this record and build it; a measured number stored
        as null becomes NaN. Refuses in one UserError naming the first wrong value."""
        return _read(value, cls, None, where, str(path))

    @classmethod
    def build(cls, value: dict) -> Record:
        """This record from a document our own code just measured: structured as `read` does, values unchecked
        (a measurement is not refused after the work; `read` checks what comes back from a file)."""
        return _read(value, cls, None, "", "", strict=False)


def internal(**kwargs):
    """A field the object carries that is not part of the document (neither written nor read)."""
    return field(repr=False, compare=False, metadata={"internal": True}, **kwargs)


@cache
def _names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "extra" and not f.metadata.get("internal"))


@cache
def _newer(cls) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls) if f.metadata.get("newer"))


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _plain(value):
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _read(value, kind, check, where: str, path: str, strict: bool = True):
    """`value` checked against the type `kind` (leaves by `check`) and built."""
    inner = _optional_of(kind)
    if inner is not None:
        return None if value is None else _read(value, inner, check, where, path, strict)
    origin = typing.get_origin(kind)
    if isinstance(kind, type) and issubclass(kind, Record):
        _expect(isinstance(value, dict), "an object", value, where, path)
        built, hints = {}, _hints(kind)
        for f in fields(kind):
            if f.name not in _names(kind):
                continue
            key = _join(where, f.name)
            if f.name not in value:
                if _optional_of(hints[f.name]) is None:
                    raise UserError(f"{path} is incomplete: '{key}' is missing")
                continue
            built[f.name] = _read(value[f.name], hints[f.name], f.metadata.get("check"), key, path, strict)
        extra = {key: item for key, item in value.items() if key not in built and key not in _names(kind)}
        return kind(**built, extra=extra)
    if origin is list:
        _expect(isinstance(value, list), "a list", value, where, path)
        [element] = typing.get_args(kind)
        return [_read(item, element, check, f"{where}[{index}]", path, strict) for index, item in enumerate(value)]
    if origin is dict:
        _expect(isinstance(value, dict), "an object", value, where, path)
        element = typing.get_args(kind)[1]
        for key in value if strict else ():
            _expect(len(key) <= NAME_CHARS, f"keyed by names of at most {NAME_CHARS:,} characters", key, where, path)
        return {key: _read(item, element, check, _join(where, key), path, strict) for key, item in value.items()}
    if check is not None and strict:
        wanted = check(value)
        _expect(wanted is None, wanted, value, where, path)
        if check is number and value is None:
            return math.nan
    return value


def _optional_of(kind):
    """X for `X | None`, else None."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(args) < len(typing.get_args(kind)):
            return args[0] if len(args) == 1 else functools.reduce(operator.or_, args)
    return None


def _expect(ok: bool, wanted: str | None, value, where: str, path: str) -> None:
    if not ok:
        raise UserError(f"{path} is not a valid results document: {where} must be {wanted}, not {shown(value)}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
