"""The measurements of one model, typed: behaviour, probe and units (see record.py for how a field's type and
check read a document). The `behavior`, `probe` and `units` commands and the audit all produce these blocks."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import count, flag, interval, long_text, number, rate, text
from .record import Record, internal, leaf, optional


@dataclass(kw_only=True)
class Sample(Record):
    """One prompt, the model's greedy completion, and the judge's verdict."""

    prompt: str = leaf(long_text)
    completion: str = leaf(long_text)
    refusal: bool = leaf(flag)


@dataclass(kw_only=True)
class HarmfulRate(Record):
    """Harmful compliance (attack success rate) with its bootstrap 95% interval, on the set named `set`."""

    n: int = leaf(count)
    compliance_rate: float = leaf(rate)
    ci95: list = leaf(interval)
    set: str = leaf(text)


@dataclass(kw_only=True)
class BorderlineRate(Record):
    """Over-refusal: the refusal rate on safe-but-scary prompts."""

    n: int = leaf(count)
    refusal_rate: float = leaf(rate)
    ci95: list = leaf(interval)
    set: str = leaf(text)
    tokens: int | None = optional(count, newer=True)  # generated a prompt (the audit's borderline_tokens)


@dataclass(kw_only=True)
class Utility(Record):
    """NLL of the benign set's reference answers (its perplexity beside it)."""

    nll: float = leaf(number)
    perplexity: float = leaf(number)


@dataclass(kw_only=True)
class RefusalScore(Record):
    """The logit refusal score of the harmful prompts' first generated token."""

    mean: float = leaf(number)


@dataclass(kw_only=True)
class Behavior(Record):
    """What the model does: `samples` by role ("harmful", "borderline"), in prompt order."""

    model: str = leaf(text)
    harmful: HarmfulRate
    borderline: BorderlineRate
    utility: Utility
    refusal_score: RefusalScore
    samples: dict[str, list[Sample]]


@dataclass(kw_only=True)
class AttackSample(Record):
    """One attacked prompt: the bare request, the prefilled start of the answer (prefilling only), the model's
    continuation (all the judge read) and the verdict."""

    prompt: str = leaf(long_text)
    prefill: str | None = optional(long_text)
    completion: str = leaf(long_text)
    refusal: bool = leaf(flag)


@dataclass(kw_only=True)
class AttackRow(Record):
    """Harmful compliance under one attack, with its bootstrap interval (each kind adds what it is, then its
    samples, so that results.json shows the numbers before the texts)."""

    n: int = leaf(count)
    compliance_rate: float = leaf(rate)
    ci95: list = leaf(interval)


@dataclass(kw_only=True)
class PrefillRow(AttackRow):
    """With the first k tokens of a compliant answer prefilled."""

    k: int = leaf(count)
    samples: list[AttackSample]


@dataclass(kw_only=True)
class TemplateRow(AttackRow):
    """With every prompt inside one jailbreak template."""

    id: str = leaf(text)
    family: str = leaf(text)
    samples: list[AttackSample]


@dataclass(kw_only=True)
class TemplateRows(Record):
    set: str = leaf(text)
    source: str = leaf(text)
    rows: list[TemplateRow]


@dataclass(kw_only=True)
class Depth(Record):
    """How deep the alignment is (responses/depth.py): compliance under prefilling and jailbreak templates on `n`
    prompts of the harmful set `set` (spread over its `spread_of` prompts; a document without it attacked its first
    `n`), each continuation at most `tokens` tokens; `depth` is the smallest prefilled k at which more than half
    comply (None: none does)."""

    set: str = leaf(text)
    n: int = leaf(count)
    tokens: int = leaf(count)
    prefill: list[PrefillRow]
    depth: int | None = optional(count)
    templates: TemplateRows | None = None
    spread_of: int | None = optional(count)


@dataclass(kw_only=True)
class ForcedPrefix(Record):
    """After k forced compliant tokens, the share of prompts that still turn to refusal."""

    share_returning: list[float] = leaf(rate)
    tokens_to_comply: int | None = optional(count)


@dataclass(kw_only=True)
class Probe(Record):
    """The reasoning direction per layer and step; a variant's own measurements are in `extra`."""

    variant: str | None = optional(text)
    layers: int = leaf(count)
    steps: int = leaf(count)
    safe_direction_score: float = leaf(rate)
    safe_direction_ci95: list | None = optional(interval)
    layer_margin: list[float] = leaf(number)
    margin: list[list[float]] = leaf(number)
    decision_layer: int | None = optional(count)
    forced_prefix: ForcedPrefix | None = None
    linear_probe_accuracy: list[float] | None = optional(rate)
    refusal_direction_norm: list[float] = leaf(number)


@dataclass(kw_only=True)
class AblationRow(Record):
    """Harmful compliance, refusal score and utility NLL with one class of units zeroed."""

    units: int = leaf(count)
    n: int = leaf(count)
    compliance_rate: float = leaf(rate)
    refusal_score: float = leaf(number)
    nll: float = leaf(number)
    answers: int | None = optional(count, newer=True)  # reference answers behind the NLL (n prompts behind the rest)


@dataclass(kw_only=True)
class Evaluation(Record):
    max_new_tokens: int = leaf(count)


@dataclass(kw_only=True)
class LayerUnits(Record):
    """Units of each class in one layer's attention and MLP write-backs."""

    layer: int = leaf(count)
    attn: dict[str, int] = leaf(count)
    mlp: dict[str, int] = leaf(count)


@dataclass(kw_only=True)
class Units(Record):
    """The unit classes (SCU, UCU, CU, RU) and their ablation."""

    units: int = leaf(count)
    method: str = leaf(text)
    fractions: dict[str, float] = leaf(rate)
    ablation: dict[str, AblationRow] | None = None
    evaluation: Evaluation | None = None
    per_layer: list[LayerUnits]
    # Where `ssah_audit.units` measured them: the class codes and the raw scores ("safety", "utility"), per module.
    classes: dict = internal(default_factory=dict)
    scores: dict = internal(default_factory=dict)


@dataclass(kw_only=True)
class Adapter(Record):
    """A LoRA adapter's shape, when the audited model is one."""

    base: str = leaf(text)
    rank: int = leaf(count)
    alpha: float | None = optional(number)
    adapted_modules: int = leaf(count)
    target_modules: list[str] = leaf(text)
    trainable_parameters: int = leaf(count)
    units_touched: dict[str, int] = leaf(count)


@dataclass(kw_only=True)
class ModelBlock(Record):
    """One model's blocks (the reference's, in an audit)."""

    model: str = leaf(text)
    fingerprint: str = leaf(text)
    behavior: Behavior
    probe: Probe | None = None
    units: Units
    depth: Depth | None = optional(newer=True)


__all__ = ["Sample", "HarmfulRate", "BorderlineRate", "Utility", "RefusalScore", "Behavior", "AttackSample",
           "AttackRow", "PrefillRow", "TemplateRow", "TemplateRows", "Depth", "ForcedPrefix",
           "Probe", "AblationRow", "Evaluation", "LayerUnits", "Units", "Adapter", "ModelBlock"]
