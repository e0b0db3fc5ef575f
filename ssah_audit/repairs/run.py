"""Repair a fine-tune toward its reference, optionally re-audit it, and write it as a new folder.

`repair()` is the API behind `ssah-audit repair`: the inputs are checked before anything loads; the repaired model
is verified in memory (each candidate audited against the reference, whose measured block comes from the audit's
reference cache) before anything is written; the output is a new folder (a full model folder, or a PEFT adapter
folder for an adapter input and a repair that keeps adapter form) with repair.json and a README card. The user's
model, reference and output path are never touched: the folder is built beside its destination and published in
one rename that cannot replace anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..errors import UserError
from .methods import RepairJob, RepairSettings
from .weights import check_same_shape, weight_out_in

SETTING_KEYS = ("alpha", "beta", "classes", "fraction", "energy", "threshold", "train_classes", "steps", "lr",
                "random_control")  # what a candidate's line names
AUTO_GRID = tuple(i / 10 for i in range(11))  # --alpha auto: the alphas it may choose, 0 (the reference) to 1


@dataclass
class Candidate:
    """One repaired model tried: its setting and, with verify, what the re-audit measured."""

    setting: dict
    record: dict
    harmful_compliance: float | None = None
    harmful_ci95: list | None = None
    over_refusal: float | None = None
    nll: float | None = None
    gain_kept: float | None = None
    passed: bool | None = None
    failed_checks: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one line per candidate that `repair --verify` prints."""
        what = ", ".join(f"{key} {value}" for key, value in self.setting.items())
        if self.passed is None:
            return f"{what}: not verified"
        gain = "n/a" if self.gain_kept is None else f"{self.gain_kept:.0%}"
        low, high = self.harmful_ci95
        verdict = "PASS" if self.passed else f"FAIL ({', '.join(self.failed_checks)})"
        return (f"{what}: harmful compliance {self.harmful_compliance:.0%} [{low:.0%}, {high:.0%}], over-refusal "
                f"{self.over_refusal:.0%}, utility NLL {self.nll:.3f}, NLL gain kept {gain}: {verdict}")


@dataclass
class RepairResult:
    """What `repair` did: the method, its settings, every candidate tried (one, or several for --alpha auto), the
    chosen one, the model's and reference's utility NLL (verify), the audit of the chosen one, and the folder."""

    method: str
    model: str
    reference: str
    settings: dict
    candidates: list[Candidate]
    chosen: Candidate
    model_nll: float | None = None
    reference_nll: float | None = None
    audit: object = None  # AuditResult of the chosen candidate (verify)
    folder: Path | None = None
    form: str = "model"  # "model" or "adapter"
    model_fingerprint: str = ""
    loaded: object = None  # the repaired LoadedModel, to measure further in memory

    def __str__(self) -> str:
        return f"{self.model}: {self.chosen.line()}"

    @property
    def passed(self) -> bool | None:
        return self.chosen.passed


def check_inputs(method, settings: RepairSettings, auto: bool, verify: bool, unaligned: str | None,
                 unit_map: str | Path | None) -> None:
    """Every option's bound before anything loads: one line, exit 2."""
    if auto:
        if method.name != "interpolate":
            raise UserError("--alpha auto belongs to --method interpolate")
        if not verify:
            raise UserError("--alpha auto chooses by re-auditing each alpha: add --verify")
    method.check(settings)
    if "unaligned" in method.needs and not unaligned:
        raise UserError(f"--method {method.name} needs --unaligned: the model the reference was aligned from")
    if "unaligned" not in method.needs and unaligned:
        raise UserError(f"--method {method.name} does not read --unaligned")
    if unit_map is not None and "units" not in method.needs:
        raise UserError(f"--method {method.name} does not read a unit map (--map)")


def load_inputs(method, model, reference, unaligned, load: dict, merge: bool = False):
    """The three models, checked against each other: the same architecture, and an adapter only where the repair
    can be written as one (or `merge`: written as a full model), of the reference itself."""
    loaded = _load(model, load)
    if loaded.adapter is not None and not method.adapter and not merge:
        raise UserError(f"--method {method.name} changes whole weights, which a LoRA adapter cannot hold; repair "
                        "an adapter with interpolate or project, or add --merge to write a full model folder")
    ref = _load(reference, {**load, "base": None})
    check_same_shape(loaded.model, ref.model, f"the model {loaded.spec}", f"the reference {ref.spec}")
    if loaded.adapter is not None and not merge and loaded.adapter["base_fingerprint"] != ref.fingerprint:
        raise UserError(f"the adapter {loaded.spec} was trained on {loaded.adapter['base']}, not on the reference "
                        f"{ref.spec}: an adapter is repaired toward its own base; give that base as --reference")
    base = None
    if unaligned:
        base = _load(unaligned, {**load, "base": None})
        check_same_shape(ref.model, base.model, f"the reference {ref.spec}", f"the unaligned model {base.spec}")
    return loaded, ref, base


def _load(model, load: dict):
    """A model as the CLI takes it, or one already loaded (the API's Model), with load_model's options."""
    from ..models.loading import LoadedModel, LoadOptions
    from ..models.resolve import load_model

    return model if isinstance(model, LoadedModel) else load_model(model, LoadOptions(**load))


def _audit_settings(settings):
    """The re-audit's settings: an AuditSettings as it is, or a dict of its fields over the defaults."""
    from ..config import AuditSettings, read_settings

    if settings is None or isinstance(settings, AuditSettings):
        return settings or AuditSettings()
    if not isinstance(settings, dict):
        raise UserError(f"audit_settings must be an AuditSettings or a dict, not {type(settings).__name__}")
    return read_settings({"audit": settings})


def reference_units(reference, unit_map: str | Path | None, audit_settings) -> tuple[dict, dict | None]:
    """(the reference's unit classes, their standardised safety scores): from a saved map (`units --save-map`, or
    an audit report's freeze-map.safetensors), else as the audit measures the reference (its cached block, or
    measured now and cached for the re-audit)."""
    from ..unit_classes import classify, freeze

    if unit_map is not None:
        path = Path(unit_map).expanduser()
        classes, document = classify.load_map(path)
        freeze.check_map_fits(reference.units, document, path)
        return classes, classify.load_safety_scores(path)
    classes, safety, _ = _measured_reference(reference, audit_settings)
    return classes, safety


def _measured_reference(reference, audit_settings) -> tuple[dict, dict, tuple[list, str]]:
    """The reference as the audit measures it (cached): classes, standardised safety scores, calibration refusals."""
    from ..auditing import Sets, measure_reference
    from ..unit_classes import classify

    measured = measure_reference(reference, Sets.load(audit_settings), audit_settings, {})
    return measured.classes, classify.standardised(measured.safety), measured.refusals


def model_units(job: RepairJob, audit_settings) -> None:
    """The model's own unit map, as the audit's model stage makes it (its safety scores calibrated on the reference's
    refusals), and the training data of a repair that trains: the reference's refusals and the benign answers."""
    from ..auditing import Sets
    from ..unit_classes import classify
    from ..unit_classes.analyse import analyse
    from ..unit_classes.calibration import utility_pairs
    from ..unit_classes.classify import Fractions

    _, _, (pairs, source) = _measured_reference(job.reference, audit_settings)
    sets = Sets.load(audit_settings)
    scores: dict = {}
    _, job.model_classes = analyse(job.model, sets.safety, sets.utility, audit_settings.method,
                                   Fractions(audit_settings.scu, audit_settings.ucu, audit_settings.ru),
                                   batch_size=audit_settings.batch_size, seed=audit_settings.seed, scores_out=scores,
                                   safety_pairs=(pairs, source))
    job.model_safety = classify.standardised(scores["safety"])
    job.safety_pairs, job.utility_pairs = pairs, utility_pairs(sets.utility)


def apply(method, job: RepairJob, as_adapter: bool | None = None) -> dict:
    """Run the repair on job.model (in place). An adapter's repair (as_adapter, default: the model is an adapter)
    is done on its B factors and folded into the merged weights (W += scale (B' - B) A), so what is audited is what
    is written; otherwise on the (merged) weights."""
    if not (job.model.adapter is not None if as_adapter is None else as_adapter):
        return method.apply(job)
    changed = {}
    with torch.no_grad():
        for module, factors in job.model.low_rank.items():
            new_b = method.adapter_factor(job, module, factors.b)
            if new_b is factors.b:
                continue
            changed[module] = new_b
            weight = weight_out_in(job.model.model.get_submodule(module))  # a view: GPT-2's Conv1D is (in, out)
            weight.add_((factors.scale * (new_b.double() - factors.b) @ factors.a).to(weight.dtype))
    job.adapter_b = changed
    return {"adapted_modules": len(job.model.low_rank), "changed_modules": len(changed),
            **{key: value for key, value in asdict(job.settings).items() if key in _adapter_keys(method)}}


def _adapter_keys(method) -> tuple[str, ...]:
    return {"interpolate": ("alpha",), "project": ("energy", "threshold")}.get(method.name, ())


def verify_candidate(candidate: Candidate, loaded, reference, audit_settings, thresholds, model_nll: float):
    """Audit the repaired model in memory against the reference and fill in the candidate's numbers."""
    from .. import auditing, gate

    limits = gate.thresholds()
    limits.update(thresholds or {})
    result = auditing.run(loaded, reference, audit_settings, limits)
    behavior = result.behavior
    candidate.harmful_compliance = behavior.harmful.compliance_rate
    candidate.harmful_ci95 = list(behavior.harmful.ci95)
    candidate.over_refusal = behavior.borderline.refusal_rate
    candidate.nll = behavior.utility.nll
    reference_nll = result.reference.behavior.utility.nll
    gain = reference_nll - model_nll
    candidate.gain_kept = (reference_nll - candidate.nll) / gain if gain > 0 else None
    candidate.passed = result.gate.passed
    candidate.failed_checks = [check.name for check in result.gate.failed]
    return result, reference_nll


def utility_nll(loaded, audit_settings) -> float:
    """The model's utility NLL as the audit's behaviour stage measures it (the benign set's reference answers)."""
    from ..auditing import Sets
    from ..responses.metrics import answer_nll

    answered = Sets.load(audit_settings).benign.answered("utility NLL")
    return answer_nll(loaded.model, loaded.tokenizer, answered, audit_settings.batch_size)["nll"]


def repair(model, reference, method: str, out: str | Path | None = None, *, settings: RepairSettings | dict | None
           = None, unaligned=None, unit_map: str | Path | None = None, verify: bool = False, audit_settings=None,
           thresholds: dict | None = None, progress=None, merge: bool = False, **load) -> RepairResult:
    """Repair `model` toward `reference` with the registered repair `method` (components.REPAIRS) and write it
    to `out` (a new folder; None: keep it in memory only). `settings`: RepairSettings or a dict of its fields;
    `alpha="auto"` (interpolate, with verify) walks the grid 1, 0.9, ... down by bisection and keeps the largest
    alpha that passes the gate. `verify`: re-audit each candidate against the reference (audit_settings: an
    AuditSettings or dict, as `audit` takes them; thresholds: the gate's). `progress(line)` gets a line per
    candidate. `merge`: an adapter is repaired and written as a full model folder (whole-weight repairs need it).
    `load`: load_model's options for the model."""
    from ..components import REPAIRS
    from ..outputs import check_new_folder

    chosen_method = REPAIRS.get(method)
    values = asdict(settings) if isinstance(settings, RepairSettings) else dict(settings or {})
    auto = values.get("alpha") == "auto"
    if auto:
        values.pop("alpha")
    try:
        repair_settings = RepairSettings(**values)
    except TypeError as exc:
        raise UserError(f"repair settings: {exc}") from None
    check_inputs(chosen_method, repair_settings, auto, verify, unaligned, unit_map)
    target = check_new_folder(Path(out).expanduser(), empty_ok=True) if out is not None else None
    audit_config = _audit_settings(audit_settings)
    loaded, ref, base = load_inputs(chosen_method, model, reference, unaligned, load, merge)
    as_adapter = loaded.adapter is not None and not merge
    job = RepairJob(loaded, ref, repair_settings, base)
    if "units" in chosen_method.needs:
        job.classes, job.safety = reference_units(ref, unit_map, audit_config)
    if chosen_method.needs & {"model_units", "safety_data"}:
        model_units(job, audit_config)
    model_nll = utility_nll(loaded, audit_config) if verify else None
    original = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()} if auto else None
    spec, fingerprint = loaded.spec, loaded.fingerprint

    def build(alpha: float | None) -> dict:
        job.settings = repair_settings if alpha is None else replace(repair_settings, alpha=alpha)
        if original is not None:
            loaded.model.load_state_dict(original)
        record = apply(chosen_method, job, as_adapter)
        _check_not_broken(loaded, chosen_method.name)
        loaded.spec = f"{spec} repaired ({chosen_method.name})"
        loaded.fingerprint = _fingerprint(fingerprint, ref, base, chosen_method.name, job.settings)
        return record

    def attempt(alpha: float | None) -> tuple[Candidate, object, float | None]:
        record = build(alpha)
        setting = {key: value for key, value in record.items() if key in SETTING_KEYS}
        candidate = Candidate({"method": chosen_method.name, **setting}, record)
        result, reference_nll = None, None
        if verify:
            result, reference_nll = verify_candidate(candidate, loaded, ref, audit_config, thresholds, model_nll)
        if progress:
            progress(candidate.line())
        return candidate, result, reference_nll

    tried = []
    if auto:
        chosen, result, reference_nll = _bisect(attempt, tried)
        if chosen is not tried[-1][0]:  # the weights hold the last alpha tried
            build(chosen.setting["alpha"])
    else:
        tried.append(attempt(None))
        chosen, result, reference_nll = tried[0]
    outcome = RepairResult(chosen_method.name, spec, ref.spec, {**asdict(job.settings)}, [c for c, _, _ in tried],
                           chosen, model_nll, reference_nll, result,
                           form="adapter" if as_adapter else "model", model_fingerprint=fingerprint,
                           loaded=loaded)
    if target is not None:
        from .folder import write

        outcome.folder = write(target, loaded, job, outcome)
    return outcome


def _bisect(attempt, tried: list):
    """The largest alpha of AUTO_GRID that passes the gate, assuming a smaller alpha (nearer the reference) passes
    whenever a larger one does: alpha 1 first, then bisection, about four audits."""
    low, high = 0, len(AUTO_GRID) - 1  # AUTO_GRID[low] assumed to pass (the reference), AUTO_GRID[high] unknown
    tried.append(attempt(AUTO_GRID[high]))
    if tried[-1][0].passed:
        return tried[-1]
    best = None
    while high - low > 1:
        middle = (low + high) // 2
        tried.append(attempt(AUTO_GRID[middle]))
        if tried[-1][0].passed:
            low, best = middle, tried[-1]
        else:
            high = middle
    if best is None:  # nothing above 0 passed: the reference's own weights
        tried.append(attempt(AUTO_GRID[0]))
        best = tried[-1]
    return best


def _check_not_broken(loaded, name: str) -> None:
    from ..models.loading import why_broken

    broken = why_broken(loaded.model, loaded.tokenizer)
    if broken:
        raise UserError(f"the {name} repair made a broken model ({broken}); nothing was written")


def _fingerprint(fingerprint: str, reference, unaligned, method: str, settings: RepairSettings) -> str:
    from ..cache import content_key

    return content_key("repair", fingerprint, reference.fingerprint, unaligned.fingerprint if unaligned else None,
                       method, json.dumps(asdict(settings), sort_keys=True))

