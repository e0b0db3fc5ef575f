"""The checks of single values in a results document (see record.py): each returns what the value should have
been, or None when it is fine.

Names, settings and keys are at most NAME_CHARS characters (the longest path a system allows): a 20 MB model
name made matplotlib and the report hang. Sample prompts and completions may be long; reports show their start.
"""

from __future__ import annotations

import math

NAME_CHARS = 4096


def finite(value) -> str | None:
    """A finite number: a threshold or a share, which has no meaning as NaN or infinity."""
    return None if type(value) in (int, float) and math.isfinite(value) else "a finite number"


def number(value) -> str | None:
    """A measured number, which may not be finite (an NLL that overflowed): the strict writer stores such a value
    as null, Python's json as NaN or Infinity; both are read back as NaN (shown as "nan")."""
    return None if value is None or type(value) in (int, float) else "a number"


def rate(value) -> str | None:
    """A share: a report would show 1.5 as "150%"."""
    return finite(value) or (None if 0 <= value <= 1 else "a share between 0 and 1")


def count(value) -> str | None:
    return None if type(value) is int and value >= 0 else "a whole number >= 0"


def interval(value) -> str | None:
    """A 95% interval: two shares, low to high."""
    if not isinstance(value, list) or len(value) != 2 or any(map(rate, value)):
        return "two shares between 0 and 1"
    return None if value[0] <= value[1] else "[low, high] with low <= high"


def text(value) -> str | None:
    """A name or a short note."""
    if not isinstance(value, str):
        return "a string"
    return None if len(value) <= NAME_CHARS else f"at most {NAME_CHARS:,} characters long"


def long_text(value) -> str | None:
    return None if isinstance(value, str) else "a string"


def flag(value) -> str | None:
    return None if type(value) is bool else "true or false"


def status(value) -> str | None:
    return None if value in ("pass", "fail", "skipped") else "pass, fail or skipped"


def scalar(value) -> str | None:
    """A value shown as it is (a package version, a timing, a setting): anything but an object or a list."""
    if isinstance(value, dict | list):
        return "a single value"
    return text(value) if isinstance(value, str) else None


def shown(value) -> str:
    """The offending value, briefly."""
    if isinstance(value, str) and len(value) > 60:
        return f"a string of {len(value):,} characters"
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value)) or f"{value!r:.60}"
