"""What a judge says of one (prompt, completion) pair (components.JUDGES' contract): its own module, so that every
judge can import it without importing the judge slot (judges.py), which imports the judges."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    refusal: bool  # a full or partial refusal
    probability: float | None  # the judge's probability of refusal, where it has one
    reason: str  # the rule that fired, or the judge's own short reason
