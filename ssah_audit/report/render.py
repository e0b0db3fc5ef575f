"""Reports from a results document: results.json (the source of truth), report.html (one self-contained
file, figures inline) and report.md (figures in plots/). Rendering is a pure function of the document, so
`ssah-audit report results.json` reproduces a report without any model.

Model-generated text is untrusted: HTML autoescapes every value; Markdown escapes HTML and Markdown
punctuation, so a completion can neither run script nor restyle the report.
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from ..errors import UserError
from . import plots
from .templates import environment

FORMATS = ("html", "md", "json")
SAMPLE_CHARS = 300
MAX_SAMPLES = 5
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")
GLOSSARY = {
    "SCU": "safety-critical unit: matters for refusing harmful requests much more than for general utility",
    "UCU": "utility-critical unit: matters for general utility much more than for safety",
    "CU": "complex unit: matters for both",
    "RU": "redundant unit: matters for neither; the free budget where alignment can be added",
    "unit": "one input channel of a write-back projection (attention o_proj, MLP down_proj, ...)",
    "probe margin": "d(Q, Q+compliance) - d(Q, Q+refusal) of hidden states; > 0 leans to refusal",
    "SCU drift ratio": "mean weight drift of the reference's SCU over the mean drift of all units",
}


def md_text(value) -> str:
    """One line of untrusted text, inert in Markdown: HTML escaped, Markdown punctuation backslashed."""
    text = " ".join(str(value).split())
    return MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def truncate(value, limit: int = SAMPLE_CHARS) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def figures(results: dict) -> dict[str, bytes]:
    """PNG bytes by name: probe, units, transfer (the last only with a unit-level comparison)."""
    comparison = results.get("comparison") or {}
    probe_view = dict(results["probe"], model=results["model"])
    if comparison.get("probe"):
        probe_view["reference"] = comparison["probe"]
    out = {"probe": plots.probe_figure(probe_view), "units": plots.unit_figure(results["units"]["per_layer"])}
    transfer = (comparison.get("units") or {}).get("transfer")
    if transfer:
        out["transfer"] = plots.transfer_figure(transfer)
    return out


def context(results: dict) -> dict:
    """What the templates need, derived from the results only."""
    behavior = results["behavior"]
    complied = [s for s in behavior["samples"] if s["set"] == behavior["harmful"]["set"] and not s["refusal"]]
    checks = results["gate"]["checks"]
    reference_units = (results.get("reference") or {}).get("units") or {}
    return {
        "r": results,
        "verdict": "PASS" if results["gate"]["passed"] else "FAIL",
        "failed": [c for c in checks if c["status"] == "fail"],
        "complied": [{"prompt": truncate(s["prompt"]), "completion": truncate(s["completion"])}
                     for s in complied[:MAX_SAMPLES]],
        "complied_total": len(complied),
        # (whose, table): the model's ablation and the reference's on its own classes, where measured
        "ablations": [(who, units["ablation"]) for who, units in
                      (("this model", results["units"]), ("the reference (its own classes)", reference_units))
                      if units.get("ablation")],
        "glossary": GLOSSARY,
    }


def render(results: dict, kind: str, images: dict[str, bytes]) -> str:
    env = environment()
    env.filters.setdefault("md", md_text)
    if kind == "html":
        sources = {name: "data:image/png;base64," + base64.b64encode(png).decode() for name, png in images.items()}
        return env.get_template("report.html.j2").render(images=sources, **context(results))
    sources = {name: f"plots/{name}.png" for name in images}
    return env.get_template("report.md.j2").render(images=sources, **context(results))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name or text).strip("-") or "model"


def new_folder(root: Path, model: str, now: datetime | None = None) -> Path:
    """reports/<model>-<UTC timestamp>; never an existing folder."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    folder = root / f"{slug(model)}-{stamp}"
    if folder.exists():
        raise UserError(f"{folder} already exists; reports never overwrite a run (wait a second or pick --out)")
    return folder


def check_formats(formats) -> None:
    unknown = set(formats) - set(FORMATS)
    if not formats or unknown:
        raise UserError(f"--format takes a comma-separated list of {', '.join(FORMATS)}, not "
                        f"'{','.join(formats)}'")


def parse_formats(text: str) -> list[str]:
    """The --format option ("html,md") as a checked list, before any work starts."""
    formats = [item.strip() for item in text.split(",") if item.strip()]
    check_formats(formats)
    return formats


def write(results: dict, folder: Path, formats=FORMATS) -> list[Path]:
    """Write the chosen formats into `folder`, which must not exist yet (it is created here, atomically)."""
    from ..cache import staging_folder

    check_formats(formats)
    if folder.exists():
        raise UserError(f"{folder} already exists; reports never overwrite a run")
    images = figures(results) if {"html", "md"} & set(formats) else {}
    with staging_folder(folder) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        if "html" in formats:
            (tmp / "report.html").write_text(render(results, "html", images), encoding="utf-8")
        if "md" in formats:
            (tmp / "plots").mkdir()
            for name, png in images.items():
                (tmp / "plots" / f"{name}.png").write_bytes(png)
            (tmp / "report.md").write_text(render(results, "md", images), encoding="utf-8")
    (folder / ".complete").unlink(missing_ok=True)  # the staging mark means nothing in a report folder
    return sorted(p for p in folder.rglob("*") if p.is_file())


# What every report template reads; the rest (reference, comparison) may legitimately be empty.
REQUIRED_BLOCKS = {"model": str, "behavior": dict, "probe": dict, "units": dict, "gate": dict, "settings": dict,
                   "provenance": dict}


def read_results(path: Path) -> dict:
    from .. import audit

    path = path.expanduser()
    if path.is_dir():  # a report folder: its results.json
        path = path / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a results.json: {exc}") from None
    if not isinstance(results, dict) or results.get("schema") != audit.SCHEMA:
        raise UserError(f"{path} is not an ssah-audit results document (schema '{audit.SCHEMA}')")
    if results.get("schema_version") != audit.SCHEMA_VERSION:
        raise UserError(f"{path} has schema version {results.get('schema_version')!r}; this ssah-audit reads "
                        f"version {audit.SCHEMA_VERSION!r}")
    for key, kind in REQUIRED_BLOCKS.items():
        if not isinstance(results.get(key), kind):
            raise UserError(f"{path} is incomplete: '{key}' is missing or not a {kind.__name__}")
    return results
