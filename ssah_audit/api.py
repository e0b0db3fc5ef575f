"""The Python API: each command of the CLI as one call a notebook or a script can make, returning typed results
(results/) instead of printing. The CLI parses its options, checks its output paths, calls these, and prints.

A model is given as the CLI takes it (a folder, a .gguf file, a LoRA adapter folder, a zoo name such as
`organism-unaligned`, a hub id) or as a model `load_model` already returned, so a notebook loads once and
measures many times. Wrong input raises `ssah_audit.UserError`, whose message is the CLI's one line.
"""

from __future__ import annotations

from pathlib import Path

from . import config as defaults
from .config import AuditSettings, load_config, read_settings
from .errors import ReportNotWritten, UserError
from .models.loading import LoadedModel, LoadOptions
from .progress import warn
from .results import AuditResult, Behavior, ModelBlock, Probe, Units

Model = str | LoadedModel  # as the CLI takes it, or what load_model returned


def load_model(model: Model, *, dtype: str = "auto", device: str = "auto",
               trust_remote_code: bool = False, allow_pickle: bool = False, base: str | None = None) -> LoadedModel:
    """A causal LM with its tokenizer and unit map; the options are the CLI's --dtype, --device,
    --trust-remote-code, --allow-pickle and --base. A model already loaded comes back as it is."""
    from .models.resolve import load_model as load

    if isinstance(model, LoadedModel):
        return model
    return load(model, LoadOptions(dtype, device, trust_remote_code, allow_pickle, base))


def audit(model: Model, reference: Model | None = None, *, quick: bool = False,
          settings: AuditSettings | dict | None = None, config: str | Path | None = None,
          thresholds: dict[str, float] | None = None, out: str | Path | None = None,
          formats: tuple[str, ...] = ("html", "md", "json"), map_folder: str | Path | None = None,
          **load) -> AuditResult:
    """The whole audit (`ssah-audit audit`): behaviour, probe and units of the model and the reference, their
    comparison, the remedy and the gate. `settings`: a dict of AuditSettings fields over the defaults (the quick
    ones with `quick`) and over `config`, an audit.toml whose [audit], [judge] and [gate] tables apply first; or an
    AuditSettings, taken as it is (the CLI passes one, already merged);
    `thresholds`: gate thresholds by check name, over both. Without a reference, a LoRA adapter is audited
    against its base. `out`: the report folder to write (checked before the work: it must not exist);
    `map_folder`: where the remedy's freeze map will be, for a caller that writes the report itself (default:
    `out`). A report that cannot be written after the work raises ReportNotWritten, which holds the result.
    `load`: load_model's options (dtype, device, trust_remote_code, allow_pickle, base) for the model."""
    from . import auditing, gate
    from .outputs import check_new_folder

    table = load_config(Path(config).expanduser()) if config is not None else {}
    limits = gate.thresholds(table)
    for name, value in (thresholds or {}).items():
        limits[name] = gate.parse_threshold(name, value)
    chosen = _settings(settings, table, quick)
    folder = check_new_folder(Path(out)) if out is not None else None
    if folder is not None:
        from .reporting.render import check_formats

        check_formats(formats)
    loaded = load_model(model, **load)
    base_is_reference = reference is None and loaded.adapter is not None
    if base_is_reference:  # an adapter is audited against what it was tuned from, unless told otherwise
        reference = loaded.adapter["base"]
        warn(f"no --reference: auditing the adapter against its base, {reference}")
    if reference is not None:  # the model's options, but its own base (see resolve.load_reference)
        reference = load_model(reference, **{**load, "base": None})
    where = Path(map_folder).expanduser() if map_folder is not None else folder
    result = auditing.run(loaded, reference, chosen, limits, base_is_reference=base_is_reference, folder=where)
    if folder is not None:
        from .reporting import render

        try:
            render.write(result, folder, formats)
        except (UserError, OSError) as exc:
            reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            raise ReportNotWritten(f"the audit ran, but its report was not written: {reason} (the result is on "
                                   "this error's .result)", result) from None
    return result


def _settings(settings: AuditSettings | dict | None, doc: dict, quick: bool) -> AuditSettings:
    """audit.toml's [audit] and [judge] tables, then `settings` over them."""
    if isinstance(settings, AuditSettings):
        return settings
    if settings is not None and not isinstance(settings, dict):
        raise UserError(f"settings must be an AuditSettings or a dict, not {type(settings).__name__}")
    return read_settings({**doc, "audit": {**(doc.get("audit") or {}), **(settings or {})}}, quick)


def _sets(specs, prompt_field: str | None, limit: int | None) -> list:
    from .data.sets import load_prompt_set

    return [load_prompt_set(spec, prompt_field).limit(limit) for spec in specs]


def behavior(model: Model, reference: Model | None = None, *, harmful: str = defaults.HARMFUL,
             benign: str = defaults.BENIGN, borderline: str = defaults.BORDERLINE, prompt_field: str | None = None,
             limit: int | None = None, max_new_tokens: int = defaults.MAX_NEW_TOKENS,
             batch_size: int = defaults.BATCH_SIZE, seed: int = defaults.SEED, judge: str | None = None,
             **load) -> Behavior:
    """Harmful compliance, over-refusal, utility NLL and refusal score, with bootstrap intervals
    (`ssah-audit behavior`); `judge`: a registered judge's name (default: the rules). With a reference,
    `result["reference"]` is its Behavior and `result["first_token_kl"]` KL(reference || model) of the first
    token on the benign prompts. `load`: load_model's options."""
    from .compare.behavior import first_token_kl
    from .data.sets import load_prompt_set
    from .responses.evaluate import measure
    from .responses.judges import DEFAULT_JUDGE, using

    sets = [load_prompt_set(spec, prompt_field) for spec in (harmful, benign, borderline)]
    sets[2] = sets[2].safe_only()
    sets = [prompt_set.limit(limit) for prompt_set in sets]
    with using(judge or DEFAULT_JUDGE):
        loaded = load_model(model, **load)
        result = Behavior.build(measure(loaded, *sets, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                        seed=seed))
        if reference is not None:
            ref = load_model(reference, **{**load, "base": None})
            result.extra["reference"] = Behavior.build(measure(ref, *sets, max_new_tokens=max_new_tokens,
                                                               batch_size=batch_size, seed=seed))
            result.extra["first_token_kl"] = first_token_kl(loaded, ref, sets[1], batch_size)
    return result


def probe(model: Model, reference: Model | None = None, *, variant: str = defaults.PROBE_VARIANT,
          harmful: str = defaults.HARMFUL, benign: str = defaults.BENIGN, prompt_field: str | None = None,
          steps: int = defaults.STEPS, limit: int | None = None, batch_size: int = defaults.BATCH_SIZE,
          **load) -> Probe:
    """The reasoning direction per layer and step (`ssah-audit probe`); `variant`: a registered probe variant.
    With a reference, `result["reference"]` compares the two (its score, the drop, the directions' cosine)."""
    from .compare.probe import compare
    from .components import PROBES
    from .probes.measure import check_steps, measure

    PROBES.get(variant)
    sets = _sets((harmful, benign), prompt_field, limit)
    loaded = load_model(model, **load)
    ref = None if reference is None else load_model(reference, **{**load, "base": None})
    for one in filter(None, (loaded, ref)):
        check_steps(one.model, steps)
    doc, directions = measure(loaded, *sets, steps, batch_size, variant)
    if ref is not None:
        ref_doc, ref_directions = measure(ref, *sets, steps, batch_size, variant)
        doc["reference"] = compare(doc, ref_doc, directions, ref_directions)
    return Probe.build(doc)


def units(model: Model, reference: Model | None = None, *, method: str = defaults.METHOD,
          scu: float = defaults.SCU, ucu: float = defaults.UCU, ru: float = defaults.RU,
          safety_data: str = defaults.SAFETY_DATA, utility_data: str = defaults.UTILITY_DATA, verify: bool = False,
          sweep: bool = False, harmful: str = defaults.HARMFUL, benign: str = defaults.BENIGN,
          prompt_field: str | None = None, response_only: bool = False, limit: int | None = None,
          max_new_tokens: int = defaults.MAX_NEW_TOKENS, batch_size: int = defaults.UNITS_BATCH_SIZE,
          seed: int = defaults.SEED, judge: str | None = None, **load) -> Units:
    """Score, class and (with `verify`) ablate the units (`ssah-audit units`); `method`: a registered unit score;
    `sweep`: ablate the top 0.25-5% of the SCU ranking; `judge` judges the reference's calibration refusals and
    the ablation rows. The class vectors and raw scores, per module, come with the result as `result.classes`
    and `result.scores` (not part of its document)."""
    from .components import UNIT_SCORES
    from .responses.judges import using
    from .unit_classes.analyse import analyse
    from .unit_classes.classify import Fractions

    UNIT_SCORES.get(method)
    fractions = Fractions(scu, ucu, ru)
    sets = _sets((safety_data, utility_data), prompt_field, limit)
    held_out = _sets((harmful, benign), prompt_field, limit) if verify or sweep else [None, None]
    loaded = load_model(model, **load)
    ref = None if reference is None else load_model(reference, **{**load, "base": None})
    raw: dict = {}
    with using(judge or defaults.JUDGE):
        doc, classes = analyse(loaded, *sets, method=method, fractions=fractions, reference=ref,
                               evaluate_harmful=held_out[0], evaluate_benign=held_out[1], run_verify=verify,
                               run_sweep=sweep, response_only=response_only, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, seed=seed, scores_out=raw)
    result = Units.build(doc)
    result.classes, result.scores = classes, raw
    return result


def judge(pairs, judge: str = defaults.JUDGE) -> list:
    """The verdicts of a judge (a registered name or hf:PATH) on (prompt, completion) pairs: a Verdict each (refusal,
    probability where the judge has one, reason). A single pair may be given as it is."""
    from .responses.judges import verdicts

    pairs = [pairs] if isinstance(pairs, tuple) and len(pairs) == 2 and isinstance(pairs[0], str) else list(pairs)
    if not all(isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
               for pair in pairs):
        raise UserError("judge takes (prompt, completion) pairs of strings")
    return verdicts([tuple(pair) for pair in pairs], judge)


def fit_judge(pairs, labels, out: str | Path, source: str = "") -> dict:
    """Refit the learned judge on labelled (prompt, completion) pairs (labels: True for refusal) into the new folder
    `out`, for `judge="learned:OUT"`; returns what was measured (rows, refusals, C, folds, its cross-validated
    accuracy and the shipped judge's on the same rows)."""
    from .outputs import check_new_folder
    from .responses.learned_judge import fit

    pairs = [tuple(pair) for pair in pairs]
    if len(pairs) != len(labels) or not all(len(pair) == 2 and all(isinstance(part, str) for part in pair)
                                            for pair in pairs):
        raise UserError("fit_judge takes (prompt, completion) pairs of strings and one label each")
    return fit(pairs, [bool(label) for label in labels], check_new_folder(Path(out)), source)


def repair(model: Model, reference: Model, method: str, out: str | Path | None = None, **options):
    """Repair `model` toward `reference` without training (`ssah-audit repair`): `method` is a registered repair
    (components.REPAIRS: restore, restore-drifted, interpolate, safety-vector, project), `out` a new folder for
    the repaired model (None: kept in memory, on the result's audit). Options: settings (a RepairSettings or dict:
    classes, fraction, random_control, seed, alpha (or "auto"), beta, energy, threshold), unaligned, unit_map,
    verify, audit_settings, thresholds, progress, merge, and load_model's options. A model given already loaded is
    repaired in place (load it again for another repair). Returns a repairs.run.RepairResult (`.loaded`: the repaired
    model; `.audit`: the chosen candidate's AuditResult with verify)."""
    from .repairs.run import repair as run

    return run(model, reference, method, out, **options)


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
