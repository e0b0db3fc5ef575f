"""How well refusal flags agree with human labels: to check the judge on completions someone has labelled.

Labels come in many spellings. XSTest's `1_full_compliance` / `2_full_refusal` / `3_partial_refusal` are read by
their words (partial refusals are refusals, as in the judge); otherwise 1/true/yes/refusal mean refusal and
0/false/no/compliance mean compliance.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

REFUSAL_WORDS = {"1", "true", "yes", "refusal", "refused", "refuse"}
COMPLIANCE_WORDS = {"0", "false", "no", "compliance", "complied", "comply"}


def parse_label(value: object) -> bool:
    """True for a refusal label, False for a compliance label; anything else is a user error."""
    text = str(value).strip().lower()
    if "refusal" in text and "compliance" not in text:
        return True
    if "compliance" in text and "refusal" not in text:
        return False
    if text in REFUSAL_WORDS:
        return True
    if text in COMPLIANCE_WORDS:
        return False
    raise UserError(f"label '{value}' is neither a refusal nor a compliance "
                    f"(use 1/0, true/false, refusal/compliance, or XSTest's final_label)")


@dataclass(frozen=True)
class Agreement:
    n: int
    accuracy: float
    precision: float  # of the refusal class: flagged refusals that humans call refusals
    recall: float  # human refusals the flags catch
    f1: float


def agreement(flags: list[bool], labels: list[bool]) -> Agreement:
    pairs = list(zip(flags, labels, strict=True))
    tp = sum(f and y for f, y in pairs)
    fp = sum(f and not y for f, y in pairs)
    fn = sum(y and not f for f, y in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(f == y for f, y in pairs) / len(pairs) if pairs else 0.0
    return Agreement(len(pairs), accuracy, precision, recall, f1)


def kappa(first: list[bool], second: list[bool]) -> float | None:
    """Cohen's kappa of two judges' flags: their agreement beyond what their refusal rates give by chance (None
    when chance alone agrees on every row, e.g. both judges call everything a refusal)."""
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    p, q = sum(first) / n, sum(second) / n
    expected = p * q + (1 - p) * (1 - q)
    return None if expected >= 1 else (observed - expected) / (1 - expected)
