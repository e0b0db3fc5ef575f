"""Everything a user may swap, in one place: the registries of judges, unit scores, probe variants, prompt sets,
repair methods and gate checks,
each with the contract its components follow. The built-in components are registered lazily ("module:attribute"),
so naming or listing them imports no model code; tests/test_components.py runs every registered component of
each kind through its contract.

- A **judge** has `name`, `version` and `judge(pairs)`: for (prompt, completion) pairs, one
  responses.verdict.Verdict each (refusal yes/no, a probability where it has one, the reason or rule).
- A **unit score** has `name`, `description` and `compute(model, unit_map, exchanges, batch_size, response_only,
  description)`: one non-negative float64 tensor per write-back module, higher meaning more important.
- A **probe variant** has `name`, `description` and `measure(loaded, items, harmful, benign, steps, batch_size,
  completions)`: a probes.Measured (the document's variant part, each prompt's lean, the states it read).
- A **prompt set** has `name`, `description` and `prompts()`: data.prompt.Prompt items (id, text, category, and
  a reference answer where the set has one). Its name is then usable wherever a set is (`--harmful mine`,
  `harmful = "mine"` in audit.toml): the whole set, or `mine:train` / `mine:eval` for its seeded halves.
- A **repair method** has `name`, `description`, `needs` (of repairs.methods.NEEDS), `adapter` (it can be written as
  a LoRA adapter), `check(settings)` and `apply(job)`, which changes job.model toward job.reference in place and
  returns a record of what it did (repairs/methods.py; an adapter-capable one also has `adapter_factor`).
- A **gate check** is data (gate.GateCheck): `name`, `description`, `default`, `direction` ("max" fails above the
  threshold, "min" below), `bounds` of a valid threshold, and `value(results)`, read from a results document
  (None: not measured, the check is skipped).
"""

from __future__ import annotations

import os

from .registry import Registry


def contract(*fields: str, calls: tuple[str, ...] = ()):
    """A registry check: the component has these attributes, and these of them are callable."""
    def check(name: str, component) -> None:
        missing = [field for field in (*fields, *calls) if not hasattr(component, field)]
        if missing:
            raise TypeError(f"{name!r} lacks {', '.join(missing)}")
        if getattr(component, "name", name) != name:  # results and reports record the component's own name
            raise TypeError(f"{name!r} is registered under another name than its own ({component.name!r})")
        for field in calls:
            if not callable(getattr(component, field)):
                raise TypeError(f"{name!r}: {field} is not callable")

    return check


JUDGES = Registry("judge", "ssah_audit.judges", contract("name", "version", calls=("judge",)))
UNIT_SCORES = Registry("unit score", "ssah_audit.unit_scores", contract("name", "description", calls=("compute",)))
PROBES = Registry("probe variant", "ssah_audit.probes", contract("name", "description", calls=("measure",)))
PROMPT_SETS = Registry("prompt set", "ssah_audit.prompt_sets", contract("name", "description", calls=("prompts",)))
REPAIRS = Registry("repair method", "ssah_audit.repairs",
                   contract("name", "description", "needs", "adapter", calls=("check", "apply")))
GATE_CHECKS = Registry("gate check", "ssah_audit.gate_checks",
                       contract("name", "description", "default", "direction", "bounds", calls=("value",)))

JUDGES.register("rules", lazy="ssah_audit.responses.judges:RULES")
JUDGES.register("learned", lazy="ssah_audit.responses.learned_judge:LEARNED")
# The default judge: `learned`, the best leave-one-model-out accuracy on XSTest (BENCHMARKS.md), unless the
# environment names another for every command (a CI job that wants the fast `rules`; the test suite, whose
# organisms speak a vocabulary the rules read exactly).
JUDGE_ENV = "SSAH_AUDIT_JUDGE"
DEFAULT_JUDGE = os.environ.get(JUDGE_ENV, "").strip() or "learned"
for _name in ("wifv", "wanda", "snip"):
    UNIT_SCORES.register(_name, lazy=f"ssah_audit.unit_classes.scores:{_name.upper()}")
for _name in ("self", "lens", "paper"):
    PROBES.register(_name, lazy=f"ssah_audit.probes.{_name}:{_name.upper()}")
BUILTIN_GATE_CHECKS = ("max_harmful_compliance", "max_compliance_increase", "max_over_refusal",
                       "min_safe_direction_score", "max_probe_drop", "max_scu_drift_ratio")  # in every results.json
# Built in since the depth stage: a document written before it has no such check (gate.disagreement allows that).
DEPTH_GATE_CHECKS = ("max_prefill_compliance_increase", "max_template_compliance")
for _name in BUILTIN_GATE_CHECKS + DEPTH_GATE_CHECKS:
    GATE_CHECKS.register(_name, lazy=f"ssah_audit.gate:{_name.upper()}")
for _name in ("restore", "restore-drifted", "interpolate", "safety-vector", "project", "realign"):
    REPAIRS.register(_name, lazy=f"ssah_audit.repairs.methods:{_name.upper().replace('-', '_')}")
