"""Named components a user may swap without editing the package: judges, unit scores, probe variants, prompt sets,
gate checks.

Each kind has one Registry (components.py), its contract kept beside the built-in components (responses/judges.py,
unit_classes/scores.py, probes/variant.py, data/prompt.py, gate.py). A component is registered by name in code
(`REGISTRY.register("name", component)`, or as a decorator), or by another installed package through the
registry's entry-point group, for example in its pyproject.toml:

    [project.entry-points."ssah_audit.judges"]
    my-judge = "my_package.judges:MyJudge"

Entry points are read on the first lookup, not at import, so a broken plugin costs nothing until it is asked for,
and then fails in one line naming it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Components of one kind by name. A component may be registered lazily, as "module:attribute" (or found as
    an entry point): listing and checking names then imports nothing, so the command line starts fast, and the
    module is imported on the first `get`. `check` is applied to every component when it is materialised (the
    contract's cheap part: the right type, the fields a caller reads), so a bad plugin fails where it is named
    rather than deep inside an audit."""

    def __init__(self, kind: str, group: str, check: Callable[[str, T], None] | None = None):
        self.kind, self.group, self._check = kind, group, check
        self._items: dict[str, T | str | metadata.EntryPoint] = {}
        self._plugins_read = False

    def register(self, name: str, component: T | None = None, *, lazy: str | None = None, replace: bool = False):
        """Register `component` as `name` (or `lazy`, "module:attribute", imported when first asked for); with
        neither, a decorator that registers what it decorates. A name registered twice is an error unless
        `replace` (a user's own component may shadow ours)."""
        def store(item) -> object:
            if not isinstance(name, str) or not name.replace("-", "_").replace(".", "_").isidentifier():
                raise ValueError(f"a {self.kind} name is a word (letters, digits, -, _ or .), not {name!r}")
            if name in self._items and not replace and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is registered already; pass replace=True to replace it")
            if self._check is not None and not isinstance(item, str | metadata.EntryPoint):
                self._check(name, item)
            self._items[name] = item
            return item

        if lazy is not None:
            return store(lazy)
        return store if component is None else store(component)

    def get(self, name: str) -> T:
        """The component called `name`; an unknown name is one line listing the known ones."""
        if name not in self._items:
            self._read_plugins()
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})")
        item = self._items[name]
        if isinstance(item, str | metadata.EntryPoint):
            item = self._materialise(name, item)
        return item

    def names(self) -> list[str]:
        self._read_plugins()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _materialise(self, name: str, placeholder: str | metadata.EntryPoint) -> T:
        try:
            if isinstance(placeholder, str):
                module, _, attribute = placeholder.partition(":")
                item = getattr(importlib.import_module(module), attribute)
            else:
                item = placeholder.load()
            if self._check is not None:
                self._check(name, item)
        except Exception as exc:  # someone else's package, or a typo in a lazy name: one line that names it
            where = placeholder if isinstance(placeholder, str) else f"{placeholder.value} ({self.group})"
            raise UserError(f"the {self.kind} {name!r} from {where} cannot be used: {type(exc).__name__}: "
                            f"{exc}") from None
        self._items[name] = item
        return item

    def _read_plugins(self) -> None:
        """Add what installed packages declare under this registry's entry-point group, once (not loaded yet)."""
        if self._plugins_read:
            return
        self._plugins_read = True
        for point in metadata.entry_points(group=self.group):
            self._items.setdefault(point.name, point)
