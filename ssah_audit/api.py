"""The Python API: each command of the CLI as one call a notebook or a script can make, returning typed results
(results/) instead of printing. The CLI parses its options, checks its output paths, calls these, and prints.

A model is given as the CLI takes it (a folder, a .gguf file, a LoRA adapter folder, a zoo name such as
`organism-unaligned`, a hub id) or as a model `load_model` already returned, so a notebook loads once and
measures many times. Wrong input raises `ssah_audit.UserError`, whose message is the CLI's one line.
"""

from __future__ import annotations

from pathlib import Path

from .auditing import AuditSettings, settings_from
from .errors import UserError
from .models.loading import LoadedModel, LoadOptions
from .progress import warn
from .results import AuditResult, Behavior, ModelBlock, Probe, Units


def load_model(model: str | LoadedModel, *, dtype: str = "auto", device: str = "auto",
               trust_remote_code: bool = False, allow_pickle: bool = False, base: str | None = None) -> LoadedModel:
    """A causal LM with its tokenizer and unit map; the options are the CLI's --dtype, --device,
    --trust-remote-code, --allow-pickle and --base. A model already loaded comes back as it is."""
    from .models.resolve import load_model as load

    if isinstance(model, LoadedModel):
        return model
    return load(model, LoadOptions(dtype, device, trust_remote_code, allow_pickle, base))


def _reference(reference: str | LoadedModel | None) -> LoadedModel | None:
    """A reference loads with its own base: `base` belongs to the model under study (see resolve.load_reference)."""
    return None if reference is None else load_model(reference)


def audit(model: str | LoadedModel, reference: str | LoadedModel | None = None, *, quick: bool = False,
          settings: AuditSettings | dict | None = None, config: str | Path | None = None,
          thresholds: dict[str, float] | None = None, out: str | Path | None = None,
          formats: tuple[str, ...] = ("html", "md", "json"), **load) -> AuditResult:
    """The whole audit (`ssah-audit audit`): behaviour, probe and units of the model and the reference, their
    comparison, the remedy and the gate. `settings`: an AuditSettings or a dict of its fields, over the defaults
    (or the quick ones); `config`: an audit.toml whose [audit] and [gate] tables apply first; `thresholds`: gate
    thresholds by check name, over both. Without a reference, a LoRA adapter is audited against its base. With
    `out`, the report folder (which must not exist) is written as the CLI writes it. `load`: load_model's options
    for the model."""
    from . import auditing, gate

    table = gate.load_config(Path(config).expanduser()) if config is not None else {}
    limits = gate.thresholds(table)
    for name, value in (thresholds or {}).items():
        limits[name] = gate.parse_threshold(name, value)
    chosen = _settings(settings, table.get("audit") or {}, quick)
    loaded = load_model(model, **load)
    base_is_reference = reference is None and loaded.adapter is not None
    if base_is_reference:  # an adapter is audited against what it was tuned from, unless told otherwise
        reference = loaded.adapter["base"]
        warn(f"no --reference: auditing the adapter against its base, {reference}")
    files: dict[str, bytes] = {}
    folder = Path(out).expanduser() if out is not None else None
    result = auditing.run(loaded, _reference(reference), chosen, limits, base_is_reference=base_is_reference,
                          files_out=files, folder=folder)
    if folder is not None:
        from .reporting import render

        render.write(result, folder, formats, files)
    return result


def _settings(settings: AuditSettings | dict | None, table: dict, quick: bool) -> AuditSettings:
    """audit.toml's [audit] table, then `settings` over it."""
    if isinstance(settings, AuditSettings):
        return settings
    if settings is not None and not isinstance(settings, dict):
        raise UserError(f"settings must be an AuditSettings or a dict, not {type(settings).__name__}")
    return settings_from({**table, **(settings or {})}, quick)


def behavior(model: str | LoadedModel, *, harmful: str = "harmful", benign: str = "benign",
             borderline: str = "borderline", limit: int | None = None, max_new_tokens: int = 64,
             batch_size: int = 16, seed: int = 0, judge: str | None = None) -> Behavior:
    """Harmful compliance, over-refusal, utility NLL and refusal score, with bootstrap intervals
    (`ssah-audit behavior`); `judge`: a registered judge's name (default: the rules)."""
    from .data.sets import load_prompt_set
    from .responses.evaluate import measure
    from .responses.judges import DEFAULT_JUDGE, using

    sets = [load_prompt_set(spec) for spec in (harmful, benign, borderline)]
    sets[2] = sets[2].safe_only()
    sets = [prompt_set.limit(limit) for prompt_set in sets]
    with using(judge or DEFAULT_JUDGE):
        doc = measure(load_model(model), *sets, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    return Behavior.build(doc)


def probe(model: str | LoadedModel, *, variant: str = "self", harmful: str = "harmful", benign: str = "benign",
          steps: int = 10, limit: int | None = None, batch_size: int = 16) -> Probe:
    """The reasoning direction per layer and step (`ssah-audit probe`); `variant`: a registered probe variant."""
    from . import probing
    from .data.sets import load_prompt_set

    sets = [load_prompt_set(spec).limit(limit) for spec in (harmful, benign)]
    loaded = load_model(model)
    probing.check_steps(loaded.model, steps)
    doc, _ = probing.measure(loaded, *sets, steps, batch_size, variant)
    return Probe.build(doc)


def units(model: str | LoadedModel, reference: str | LoadedModel | None = None, *, method: str = "wifv",
          scu: float = 1.5, ucu: float = 10.0, ru: float = 15.0, safety_data: str = "harmful:train",
          utility_data: str = "benign:train", verify: bool = False, harmful: str = "harmful",
          benign: str = "benign", limit: int | None = None, max_new_tokens: int = 64, batch_size: int = 8,
          seed: int = 0) -> Units:
    """Score, class and (with `verify`) ablate the units (`ssah-audit units`); `method`: a registered unit score.
    The class vectors themselves: `units.analyse.analyse`, which this calls."""
    from .components import UNIT_SCORES
    from .data.sets import load_prompt_set
    from .unit_classes.analyse import analyse
    from .unit_classes.classify import Fractions, check_fractions

    UNIT_SCORES.get(method)
    check_fractions(scu, ucu, ru)
    sets = [load_prompt_set(spec).limit(limit) for spec in (safety_data, utility_data)]
    held_out = [load_prompt_set(spec).limit(limit) for spec in (harmful, benign)] if verify else [None, None]
    doc, _ = analyse(load_model(model), *sets, method=method, fractions=Fractions(scu, ucu, ru),
                     reference=_reference(reference), evaluate_harmful=held_out[0], evaluate_benign=held_out[1],
                     run_verify=verify, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed)
    return Units.build(doc)


def judge(pairs, judge: str = "rules") -> list:
    """The verdicts of a registered judge on (prompt, completion) pairs: behavior.judges.Verdict each (refusal,
    probability where the judge has one, reason). A single pair may be given as it is."""
    from .responses.judges import verdicts

    pairs = [pairs] if isinstance(pairs, tuple) and len(pairs) == 2 and isinstance(pairs[0], str) else list(pairs)
    if not all(isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
               for pair in pairs):
        raise UserError("judge takes (prompt, completion) pairs of strings")
    return verdicts([tuple(pair) for pair in pairs], judge)


def report(results: AuditResult | str | Path, out: str | Path, formats: tuple[str, ...] = ("html", "md", "json")
           ) -> Path:
    """Render an audit's reports into the new folder `out` (`ssah-audit report`), from an AuditResult or a
    results.json; returns the folder."""
    from .reporting import render

    if not isinstance(results, AuditResult):
        results = render.read_results(Path(results))
    return render.write(results, Path(out).expanduser(), formats)


def read_results(path: str | Path) -> AuditResult:
    """A results.json (or a report folder) read back and checked; version 1 documents are upgraded."""
    from .reporting import render

    return render.read_results(Path(path))


__all__ = ["AuditSettings", "AuditResult", "Behavior", "ModelBlock", "Probe", "Units", "audit", "behavior", "judge",
           "load_model", "probe", "read_results", "report", "units"]
