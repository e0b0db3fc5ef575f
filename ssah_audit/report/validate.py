"""The one check of a results.json read back for `ssah-audit report`: the file is user input, so everything the
reports read must be there and of the right kind before anything is drawn. A wrong value is one line naming
where it is (`behavior.harmful.compliance_rate must be a number, not 'high'`), never a traceback.

A spec mirrors the document: a dict names required keys, `maybe(spec)` a key that may be absent or null,
`each(spec)` an object of any keys, `[spec]` a list, and a function checks one value, returning what the value
should have been or None when it is fine.

Names, settings and keys are at most NAME_CHARS characters (the longest path a system allows): a 20 MB model
name made matplotlib and the report hang. Sample prompts and completions may be long; reports show their start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

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


@dataclass(frozen=True)
class maybe:
    spec: object


@dataclass(frozen=True)
class each:
    spec: object


INTERVAL = interval
BEHAVIOR = {
    "model": text,
    "harmful": {"n": count, "compliance_rate": rate, "ci95": INTERVAL, "set": text},
    "borderline": {"n": count, "refusal_rate": rate, "ci95": INTERVAL, "set": text},
    "utility": {"nll": number, "perplexity": number},
    "refusal_score": {"mean": number},
    "samples": [{"set": text, "prompt": long_text, "completion": long_text, "refusal": flag}],
}
PROBE = {"variant": maybe(text), "layers": count, "steps": count, "safe_direction_score": rate,
         "safe_direction_ci95": maybe(INTERVAL), "layer_margin": [number], "margin": [[number]],
         "decision_layer": maybe(count), "forced_prefix": maybe({"share_returning": [rate],
                                                                 "tokens_to_comply": maybe(count)}),
         "linear_probe_accuracy": maybe([rate]), "refusal_direction_norm": [number]}
ABLATION_ROW = {"units": count, "n": count, "compliance_rate": rate, "refusal_score": number, "nll": number}
UNITS = {"units": count, "method": text, "fractions": each(rate), "ablation": maybe(each(ABLATION_ROW)),
         "evaluation": maybe({"max_new_tokens": count}),
         "per_layer": [{"layer": count, "attn": each(count), "mlp": each(count)}]}
DRIFT = each(maybe(number))
UNIT_CLASSES = ("SCU", "UCU", "CU", "RU", "all")  # the rows of the reports' drift table
ADAPTER = {"base": text, "rank": count, "alpha": maybe(number), "adapted_modules": count, "target_modules": [text],
           "trainable_parameters": count, "units_touched": {"any": count, "of": count}}
SPEC = {
    "model": text,
    "fingerprint": text,
    "adapter": maybe(ADAPTER),
    "reference_is_adapter_base": maybe(flag),
    "remedy": maybe({"freeze_map": text, "freeze_classes": text, "units": count, "of": count, "fraction": rate,
                     "command": text,
                     "pair_effect": maybe({"reference_compliance": rate, "unfrozen_compliance": rate,
                                           "frozen_compliance": rate, "frozen_ci95": INTERVAL,
                                           "random_compliance": rate, "source": text})}),
    "behavior": BEHAVIOR,
    "probe": PROBE,
    "units": UNITS,
    "reference": maybe({"model": text, "fingerprint": text, "behavior": BEHAVIOR, "units": UNITS}),
    "comparison": {
        "behavior": maybe({"harmful_compliance": {"delta": number, "ci95": [number]},
                           "over_refusal": {"delta": number}, "utility_nll": {"delta": number}}),
        "first_token_kl": maybe(number),
        "probe": maybe({"safe_direction_score": rate, "score_drop": maybe(number), "layer_margin": [number],
                        "direction_cosine": maybe([number]), "note": maybe(text)}),
        "units": maybe({"note": maybe(text), "scu_drift_ratio": maybe(number),
                        "drift": maybe({"write": DRIFT, "read": maybe(DRIFT)}),
                        "transfer": maybe({"classes": [text], "counts": [[count]], "fractions": [[rate]]})}),
    },
    "settings": each(scalar),
    "sets": each({"name": text, "n": count}),
    "gate": {"passed": flag, "checks": [{"name": text, "description": text, "value": maybe(number),
                                         "threshold": finite, "status": status}]},
    "provenance": {"created": text, "seed": scalar, "packages": each(scalar), "timings_seconds": each(scalar)},
}


def check(results: dict, path: Path) -> None:
    """Refuse, in one line, a results document the reports cannot render as it stands. A measured number stored
    as null becomes NaN in place, so the reports show "nan" where it was not finite."""
    _walk(results, SPEC, "", path)
    units = results["comparison"].get("units")
    if units and not units.get("note"):  # a unit comparison is a note, or all of drift, transfer and the ratio
        for key in ("drift", "transfer", "scu_drift_ratio"):
            if key not in units:
                raise UserError(f"{path} is incomplete: 'comparison.units.{key}' is missing")
        for part in ("write", "read"):
            for name in UNIT_CLASSES if units["drift"].get(part) is not None else ():
                if name not in units["drift"][part]:
                    raise UserError(f"{path} is incomplete: 'comparison.units.drift.{part}.{name}' is missing")
    from ..gate import disagreement

    problem = disagreement(results)
    if problem:
        raise UserError(f"{path} is not a valid results document: {problem}")
    gate = results["gate"]
    failed = [c["name"] for c in gate["checks"] if c["status"] == "fail"]
    if gate["passed"] == bool(failed):
        said = "passed" if gate["passed"] else "failed"
        raise UserError(f"{path} is not a valid results document: gate.passed says the gate {said}, but "
                        + (f"check {failed[0]} failed" if failed else "no check failed"))


def check_block(block: dict, path: Path) -> None:
    """One model's measurements (the audit's cached reference block) as the reports will read them."""
    for part, spec in (("behavior", BEHAVIOR), ("probe", PROBE), ("units", UNITS)):
        _walk(block.get(part) if isinstance(block, dict) else None, spec, part, path)


def _walk(value, spec, where: str, path: Path):
    """Check `value` against `spec`; returns it, with a null measured number as NaN (containers are updated)."""
    if isinstance(spec, maybe):
        if value is None:
            return None
        spec = spec.spec
    if isinstance(spec, dict):
        _expect(isinstance(value, dict), "an object", value, where, path)
        for key, inner in spec.items():
            if key not in value and not isinstance(inner, maybe):
                raise UserError(f"{path} is incomplete: '{_join(where, key)}' is missing")
            if key in value:
                value[key] = _walk(value[key], inner, _join(where, key), path)
    elif isinstance(spec, each):
        _expect(isinstance(value, dict), "an object", value, where, path)
        for key, item in value.items():
            _expect(len(key) <= NAME_CHARS, f"keyed by names of at most {NAME_CHARS:,} characters", key, where, path)
            value[key] = _walk(item, spec.spec, _join(where, key), path)
    elif isinstance(spec, list):
        _expect(isinstance(value, list), "a list", value, where, path)
        for index, item in enumerate(value):
            value[index] = _walk(item, spec[0], f"{where}[{index}]", path)
    else:
        wanted = spec(value)
        _expect(wanted is None, wanted, value, where, path)
        if spec is number and value is None:
            return math.nan
    return value


def _expect(ok: bool, wanted: str | None, value, where: str, path: Path) -> None:
    if not ok:
        raise UserError(f"{path} is not a valid results document: {where} must be {wanted}, not {_shown(value)}")


def _shown(value) -> str:
    """The offending value, briefly."""
    if isinstance(value, str) and len(value) > 60:
        return f"a string of {len(value):,} characters"
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value)) or f"{value!r:.60}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
