"""ssah-audit: safety audits of causal language models, following the Superficial Safety Alignment Hypothesis.

The Python API (docs/python-api.md): `audit`, `behavior`, `probe`, `units`, `judge`, `repair`, `load_model`, `report`
and `read_results` (api.py), the settings and result types (audit.AuditSettings, results/), and the registries a
plugin fills (components.py). Names load on first use, so `import ssah_audit` imports no model code.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    **{name: "ssah_audit.api" for name in ("audit", "behavior", "probe", "units", "judge", "fit_judge", "load_model",
                                             "report", "read_results", "repair")},
    "RepairSettings": "ssah_audit.repairs.methods",
    "AuditSettings": "ssah_audit.auditing",
    **{name: "ssah_audit.results" for name in ("AuditResult", "Behavior", "Probe", "Units", "ModelBlock", "Gate",
                                                "CheckResult", "Comparison", "Record")},
    **{name: "ssah_audit.components" for name in ("JUDGES", "UNIT_SCORES", "PROBES", "PROMPT_SETS", "GATE_CHECKS",
                                                   "REPAIRS")},
    "Verdict": "ssah_audit.responses.judges",
    "Prompt": "ssah_audit.data.prompt",
    "PromptSet": "ssah_audit.data.prompt",
    "GateCheck": "ssah_audit.gate",
    "UserError": "ssah_audit.errors",
    "ReportNotWritten": "ssah_audit.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ssah_audit' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
