"""The whole audit, typed: the model's blocks, the reference's, the comparison, the remedy, the gate and the
provenance. `AuditResult` is what `ssah_audit.auditing()` returns, what results.json holds (`to_dict`), and what
`ssah-audit report` reads back (`read_results_document`: an older version is upgraded, or refused in one line).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .blocks import Adapter, Behavior, Depth, ModelBlock, Probe, Units
from .checks import count, finite, flag, interval, number, rate, scalar, status, text
from .record import Record, internal, leaf, optional

SCHEMA = "ssah-audit/results"
# 2: behaviour samples are grouped by role ({"harmful": [...], "borderline": [...]}), not found by position; a
#    sample no longer repeats its set's name. Version 1 documents are upgraded on reading.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
UNIT_CLASSES = ("SCU", "UCU", "CU", "RU", "all")  # the rows of the reports' drift table


@dataclass(kw_only=True)
class Delta(Record):
    """Model minus reference, with the bootstrap 95% interval of the difference where one is measured."""

    delta: float = leaf(number)
    ci95: list[float] | None = optional(number)


@dataclass(kw_only=True)
class BehaviorDeltas(Record):
    harmful_compliance: Delta
    over_refusal: Delta
    utility_nll: Delta
    refusal_score: Delta | None = None


@dataclass(kw_only=True)
class ProbeComparison(Record):
    """The reference's probe beside the model's: its score, the drop, the cosine of the refusal directions."""

    safe_direction_score: float = leaf(rate)
    score_drop: float | None = optional(number)
    layer_margin: list[float] = leaf(number)
    direction_cosine: list[float] | None = optional(number)
    note: str | None = optional(text)


@dataclass(kw_only=True)
class Drift(Record):
    """Mean weight drift from the reference, by the reference's unit class ("all": every unit)."""

    write: dict[str, float | None] = leaf(number)
    read: dict[str, float | None] | None = optional(number)


@dataclass(kw_only=True)
class Transfer(Record):
    """How the reference's unit classes (rows) became the model's (columns)."""

    classes: list[str] = leaf(text)
    counts: list[list[int]] = leaf(count)
    fractions: list[list[float]] = leaf(rate)


@dataclass(kw_only=True)
class UnitComparison(Record):
    """A note (different architectures), or all of the drift, the transfer and the SCU drift ratio."""

    note: str | None = optional(text)
    scu_drift_ratio: float | None = optional(number)
    drift: Drift | None = None
    transfer: Transfer | None = None


@dataclass(kw_only=True)
class KDelta(Delta):
    k: int = leaf(count)


@dataclass(kw_only=True)
class TemplateDelta(Delta):
    id: str = leaf(text)


@dataclass(kw_only=True)
class DepthDeltas(Record):
    """The depth stage's compliance, model minus reference, per prefilled k and per template."""

    prefill: list[KDelta]
    templates: list[TemplateDelta]


@dataclass(kw_only=True)
class Comparison(Record):
    behavior: BehaviorDeltas | None = None
    first_token_kl: float | None = optional(number)
    probe: ProbeComparison | None = None
    units: UnitComparison | None = None
    depth: DepthDeltas | None = optional(newer=True)


@dataclass(kw_only=True)
class PairEffect(Record):
    """The remedy's measured effect on the embedded SmolLM2 pair."""

    reference_compliance: float = leaf(rate)
    unfrozen_compliance: float = leaf(rate)
    frozen_compliance: float = leaf(rate)
    frozen_ci95: list = leaf(interval)
    random_compliance: float = leaf(rate)
    source: str = leaf(text)


@dataclass(kw_only=True)
class RepairOption(Record):
    """A training-free repair the report offers: its command with the user's own paths, and the setting's measured
    effect on the embedded pair's fine-tune (remedy.py; bench/repair_pair.py)."""

    method: str = leaf(text)
    setting: str = leaf(text)
    command: str = leaf(text)
    pair_compliance: float = leaf(rate)
    pair_ci95: list = leaf(interval)
    pair_harmbench: float = leaf(rate)
    pair_over_refusal: float | None = optional(rate)  # the built-in borderline set's
    pair_gain_kept: float = leaf(number)
    pair_goal: bool = leaf(flag)


@dataclass(kw_only=True)
class FrontierPoint(Record):
    """One measured repair of the pair: held-out harmful compliance against the share of the NLL gain kept."""

    model: str = leaf(text)
    row: str = leaf(text)
    compliance: float = leaf(rate)
    gain_kept: float = leaf(number)
    control: bool = leaf(flag)


@dataclass(kw_only=True)
class Remedy(Record):
    """SSAH's remedy: the fine-tune re-run with the reference's SCU and top CU frozen (see remedy.py)."""

    freeze_map: str = leaf(text)
    freeze_classes: str = leaf(text)
    units: int = leaf(count)
    of: int = leaf(count)
    fraction: float = leaf(rate)
    command: str = leaf(text)
    pair_effect: PairEffect | None = None
    repairs: list[RepairOption] | None = optional(newer=True)
    frontier: list[FrontierPoint] | None = optional(newer=True)
    frontier_reference: float | None = optional(rate, newer=True)  # the pair's reference compliance


@dataclass(kw_only=True)
class CheckResult(Record):
    """One gate check as measured: its value (None: skipped), threshold and status."""

    name: str = leaf(text)
    description: str = leaf(text)
    value: float | None = optional(number)
    threshold: float = leaf(finite)
    status: str = leaf(status)


@dataclass(kw_only=True)
class Gate(Record):
    passed: bool = leaf(flag)
    checks: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [check for check in self.checks if check.status == "fail"]


@dataclass(kw_only=True)
class SetInfo(Record):
    name: str = leaf(text)
    n: int = leaf(count)


@dataclass(kw_only=True)
class JudgeInfo(Record):
    """The judge behind every verdict of the audit, and how far it was validated."""

    name: str = leaf(text)
    version: str = leaf(text)
    validation: str | None = optional(text)


@dataclass(kw_only=True)
class Provenance(Record):
    created: str = leaf(text)
    seed: object = leaf(scalar)
    packages: dict[str, object] = leaf(scalar)
    timings_seconds: dict[str, object] = leaf(scalar)
    judge: JudgeInfo | None = optional(newer=True)  # absent from documents before the judge was recorded: rules


@dataclass(kw_only=True)
class AuditResult(Record):
    """One audit: results.json as an object. `gate.passed` is the verdict."""

    schema: str = leaf(text)
    schema_version: int = leaf(count)
    model: str = leaf(text)
    fingerprint: str = leaf(text)
    adapter: Adapter | None = None
    behavior: Behavior
    probe: Probe
    units: Units
    depth: Depth | None = optional(newer=True)  # absent from documents before the depth stage
    reference: ModelBlock | None = None
    reference_is_adapter_base: bool | None = optional(flag)
    comparison: Comparison
    remedy: Remedy | None = None
    settings: dict[str, object] = leaf(scalar)
    sets: dict[str, SetInfo]
    gate: Gate
    provenance: Provenance
    # The files that belong beside results.json in the report folder (the remedy's freeze map), by name.
    files: dict[str, bytes] = internal(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.model}: gate {'PASS' if self.gate.passed else 'FAIL'}"


def read_results_document(doc, path: Path | str) -> AuditResult:
    """A parsed results.json (untrusted) as an AuditResult: its schema and version known (version 1 is upgraded),
    every value checked, the unit comparison complete, and the gate consistent with the document's own numbers
    (so a hand-edited "pass" cannot render as PASS). Anything else is one UserError naming what is wrong."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UserError(f"{path} is not an ssah-audit results document (schema '{SCHEMA}')")
    version = doc.get("schema_version")
    if version not in READABLE_VERSIONS or type(version) is not int:
        raise UserError(f"{path} has schema version {version!r}; this ssah-audit reads versions "
                        f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version == 1:
        doc = upgrade_v1(doc)
    result = AuditResult.read(doc, "", path)
    units = result.comparison.units
    if units and not units.note:
        for key in ("drift", "transfer", "scu_drift_ratio"):
            if key not in doc["comparison"]["units"]:
                raise UserError(f"{path} is incomplete: 'comparison.units.{key}' is missing")
        for part in ("write", "read"):
            for name in UNIT_CLASSES if units.drift[part] is not None else ():
                if name not in units.drift[part]:
                    raise UserError(f"{path} is incomplete: 'comparison.units.drift.{part}.{name}' is missing")
    from ..gate import disagreement

    problem = disagreement(result)
    if problem:
        raise UserError(f"{path} is not a valid results document: {problem}")
    failed = [check.name for check in result.gate.failed]
    if result.gate.passed == bool(failed):
        said = "passed" if result.gate.passed else "failed"
        raise UserError(f"{path} is not a valid results document: gate.passed says the gate {said}, but "
                        + (f"check {failed[0]} failed" if failed else "no check failed"))
    return result


def upgrade_v1(doc: dict) -> dict:
    """Version 1 wrote each behaviour block's samples as one list, harmful first (harmful.n of them), each sample
    naming its set: group them by role. Anything malformed is left for the checks to name. The caller's document
    is left as it was."""
    doc = dict(copy.deepcopy(doc), schema_version=SCHEMA_VERSION)
    for owner in (doc, doc.get("reference")):
        behavior = owner.get("behavior") if isinstance(owner, dict) else None
        if not isinstance(behavior, dict) or not isinstance(behavior.get("samples"), list):
            continue
        harmful = (behavior.get("harmful") or {}).get("n") if isinstance(behavior.get("harmful"), dict) else None
        if type(harmful) is not int:
            continue
        samples = [{key: value for key, value in s.items() if key != "set"} if isinstance(s, dict) else s
                   for s in behavior["samples"]]
        behavior["samples"] = {"harmful": samples[:harmful], "borderline": samples[harmful:]}
    return doc
