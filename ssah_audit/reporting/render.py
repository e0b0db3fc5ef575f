"""Reports from a results document: results.json (the source of truth), report.html (one self-contained
file, figures inline) and report.md (figures in plots/). Rendering is a pure function of the document, so
`ssah-audit report results.json` reproduces a report without any model.

Every string in results.json is untrusted (a document may be hand-edited or come from someone else): HTML
autoescapes every value; in Markdown, model text (`|md`) has HTML and all Markdown punctuation escaped, so a
completion can neither run script nor restyle the report, and every other value (check names, fingerprints,
package names) has HTML, links, images, code spans and table pipes made inert on its way out.
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from markupsafe import Markup

from ..errors import UserError
from ..inputs import MiB, read_text
from ..results import AuditResult, read_results_document
from ..unit_classes import freeze
from . import plots, summary
from .templates import environment

FORMATS = ("html", "md", "json")
SAMPLE_CHARS = 300
MAX_SAMPLES = 5
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")
# What makes any value active in Markdown; none of it occurs in a formatted number ("-1.5e+03", "12.5%").
MARKDOWN_ACTIVE = re.compile(r"([\\`*{}\[\]#!|~])")
GLOSSARY = {
    "SCU": "safety-critical unit: matters for refusing harmful requests much more than for general utility",
    "UCU": "utility-critical unit: matters for general utility much more than for safety",
    "CU": "complex unit: matters for both",
    "RU": "redundant unit: matters for neither; the free budget where alignment can be added",
    "unit": "one input channel of a write-back projection (attention o_proj, MLP down_proj, ...)",
    "probe margin": "d(own, compliance) - d(own, refusal): cosine distances between the hidden state of the model's "
                    "own continuation of a harmful query and those of a compliance and a refusal continuation, at "
                    "each layer and step; > 0 leans to refusal (paper variant: the same from the query's state)",
    "probe lean": "(lens variant) log p(refusal path) - log p(compliance path) after a harmful query, read at each "
                  "layer through the model's own final norm and LM head; > 0 predicts a refusal",
    "SCU drift ratio": "mean weight drift of the reference's SCU over the mean drift of all units",
}


def md_text(value) -> Markup:
    """One line of untrusted text, inert in Markdown: HTML escaped, Markdown punctuation backslashed."""
    text = " ".join(str(value).split())
    return Markup(MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False)))


def md_value(value):
    """Every value a Markdown template prints, unless `md_text` already made it inert: one line, HTML escaped,
    and the punctuation that makes links, images, code or table cells backslashed."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return MARKDOWN_ACTIVE.sub(r"\\\1", html.escape(re.sub(r"\s+", " ", value), quote=False))


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
    view = depth_view(results)
    if view and view["prefill"]:
        out["depth"] = plots.depth_figure(view["curves"])
    remedy = results.get("remedy") or {}
    if remedy.get("frontier") and not results["gate"]["passed"]:
        out["frontier"] = plots.frontier_figure(remedy["frontier"], remedy.get("frontier_reference"))
    return out


def context(results: dict) -> dict:
    """What the templates need, derived from the results only."""
    behavior = results["behavior"]
    complied = [s for s in behavior["samples"]["harmful"] if not s["refusal"]]
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
        "ablation_note": ablation_note(results["units"]),
        "glossary": GLOSSARY,
        "summary": summary.sentences(results),
        "remedy_text": remedy_text(results.get("remedy")),
        "repairs": (results.get("remedy") or {}).get("repairs") if not results["gate"]["passed"] else None,
        "depth": depth_view(results),
        "probe_text": probe_text(results["probe"], (results.get("comparison") or {}).get("probe")),
        "probe_column": "mean lean (nats)" if results["probe"].get("variant") == "lens" else "mean margin (k >= 2)",
    }


def depth_view(results: dict) -> dict | None:
    """The depth section: per prefilled k and per template, the model's and the reference's compliance with their
    intervals and the difference; the curves for the plot; the probe's forced-prefix depth beside the behavioural
    one. None when the audit had no depth stage."""
    mine = results.get("depth")
    if not mine:
        return None
    theirs = (results.get("reference") or {}).get("depth") or {}
    deltas = (results.get("comparison") or {}).get("depth") or {}
    by_k = {row["k"]: row for row in theirs.get("prefill") or []}
    delta_k = {row["k"]: row for row in deltas.get("prefill") or []}
    prefill = [{"k": row["k"], "model": row, "reference": by_k.get(row["k"]), "delta": delta_k.get(row["k"])}
               for row in mine["prefill"]]
    rows = {row["id"]: row for row in (theirs.get("templates") or {}).get("rows") or []}
    delta_t = {row["id"]: row for row in deltas.get("templates") or []}
    templates = [{"id": row["id"], "family": row["family"], "model": row, "reference": rows.get(row["id"]),
                  "delta": delta_t.get(row["id"])} for row in (mine.get("templates") or {}).get("rows") or []]
    curves = [{"model": who, "k": [row["k"] for row in block["prefill"]],
               "rate": [row["compliance_rate"] for row in block["prefill"]],
               "low": [row["ci95"][0] for row in block["prefill"]],
               "high": [row["ci95"][1] for row in block["prefill"]]}
              for who, block in ((results["model"], mine), ((results.get("reference") or {}).get("model"), theirs))
              if block.get("prefill")]
    probe = ((results.get("probe") or {}).get("forced_prefix") or {})
    return {"block": mine, "reference": theirs or None, "prefill": prefill, "templates": templates, "curves": curves,
            "template_set": (mine.get("templates") or {}).get("set"),
            "probe_depth": probe.get("tokens_to_comply"), "probe_measured": bool(probe)}


def remedy_text(plan: dict | None) -> str:
    """The remedy section's explanation (the command itself is shown below it)."""
    if not plan:
        return ""
    frozen = freeze.describe(freeze.parse_classes(plan["freeze_classes"], "freeze_classes"))
    text = (f"SSAH's remedy (the paper's Table 2): re-run the fine-tune from the reference with {frozen} frozen, "
            f"{plan['units']:,} of {plan['of']:,} units ({100 * plan['fraction']:.1f}%), ranked by the reference's "
            f"own safety scores. {plan['freeze_map']} in this folder is the reference's unit map (with its .json "
            "sidecar); frozen weights do not move at all during training.")
    effect = plan.get("pair_effect")
    if effect:
        return text + (f" Measured on the embedded SmolLM2 pair ({effect['source']}): harmful compliance "
                       f"{100 * effect['frozen_compliance']:.0f}% frozen against "
                       f"{100 * effect['unfrozen_compliance']:.0f}% unfrozen, "
                       f"{100 * effect['random_compliance']:.0f}% with as many random units frozen, "
                       f"{100 * effect['reference_compliance']:.0f}% for the reference. Evidence on one small model, "
                       "not a guarantee.")
    return text + (" Its effect has not been measured on the embedded pair yet: it is the paper's proposal, not "
                   "evidence from this tool.")


def ablation_note(units: dict) -> str:
    """How the ablation rows were generated, as the table's heading says it: prompts and answers, tokens a row,
    random seeds."""
    evaluation = units.get("evaluation") or {}
    tokens, prompts, answers = (evaluation.get(key) for key in ("max_new_tokens", "prompts", "answers"))
    seeds = ((units.get("ablation") or {}).get("random") or {}).get("seeds")
    seeds = seeds if isinstance(seeds, list) else []  # not part of the checked schema: read defensively
    measured = ([f"{prompts} prompts and {answers} reference answers spread over their sets"]  # older: none
                if isinstance(prompts, int) and isinstance(answers, int) else [])
    fewer = {name: row for name, row in (units.get("ablation") or {}).items()
             if isinstance(prompts, int) and row.get("n", prompts) < prompts}
    if measured and fewer:  # verify.FEW_ROWS (class_rows_limit); older documents: every row on all
        row = next(iter(fewer.values()))
        measured.append(f"the {' and '.join(fewer)} rows on {row['n']} of the prompts and "
                        f"{row.get('answers', row['n'])} of the answers")
    parts = measured + ([f"greedy, {tokens} new tokens a row"] if tokens else []) + (
        [f"random control: {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"] if seeds else [])
    return "; ".join(parts)


def probe_text(probe: dict, reference: dict | None) -> str:
    """The probe section's sentences: what the score means for the variant that measured it (numbers only)."""
    score = f"safe_direction_score {probe['safe_direction_score']:.2f}"
    if probe.get("safe_direction_ci95"):
        score += " [{:.2f}, {:.2f}]".format(*probe["safe_direction_ci95"])
    if reference:
        score += f" (reference {reference['safe_direction_score']:.2f})"
    if probe.get("variant") not in ("self", "lens"):
        return score + (": the share of (layer, k >= 2) cells where the model's state after a harmful query is "
                        "closer to a refusal than to a compliance (the paper's cosine margin; it does not tell "
                        "aligned from unaligned models apart, so read it as a description, not a verdict).")
    how = ("whether its own continuation's hidden states, across its layers, sit nearer a refusal or a compliance "
           "continuation" if probe["variant"] == "self"
           else "its own preference between a refusal and a compliance continuation")
    text = f"{score}: the share of harmful prompts the model leans to refuse, from {how}; it predicts the refusal rate."
    if probe.get("decision_layer") is not None:
        text += (f" The refusal decision emerges at layer {probe['decision_layer']}, the first whose lean tells "
                 "harmful from benign prompts apart.")
    forced = (probe.get("forced_prefix") or {}).get("tokens_to_comply")
    if forced is not None:
        text += (f" After {forced} forced compliant token(s), fewer than half of the harmful prompts still turn back "
                 "to a refusal (how shallow the refusal is against a prefilled answer).")
    return text


def render(results: dict, kind: str, images: dict[str, bytes]) -> str:
    if kind == "html":
        sources = {name: "data:image/png;base64," + base64.b64encode(png).decode() for name, png in images.items()}
        return environment().get_template("report.html.j2").render(images=sources, **context(results))
    sources = {name: f"plots/{name}.png" for name in images}
    return markdown_environment().get_template("report.md.j2").render(images=sources, **context(results))


@cache
def markdown_environment():
    env = environment().overlay(finalize=md_value)
    env.filters["md"] = md_text
    return env


def slug(text: str, most: int = 80) -> str:
    """The model's name as part of a folder name: safe characters only, and short enough for any file system."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name or text)[:most].strip("-") or "model"


def new_folder(root: Path, model: str, now: datetime | None = None) -> Path:
    """reports/<model>-<UTC timestamp>, or <that>-N when it is taken (two runs in one second): never an existing
    folder. `write(..., default_name=True)` takes the next free name again if another run publishes there first."""
    from ..outputs import next_free_name

    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return next_free_name(root / f"{slug(model)}-{stamp}")


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


def write(results: AuditResult | dict, folder: Path, formats=FORMATS, default_name: bool = False) -> Path:
    """Write the chosen formats, and the result's `files` by name, into `folder`, which must not exist yet (it is
    created here, atomically, and a folder that appears there meanwhile is left alone: see outputs.new_folder).
    Returns where the report went: `folder`, or with `default_name` (a name new_folder chose) the next free name
    if it was taken."""
    from ..outputs import json_text, new_folder

    check_formats(formats)
    if not isinstance(results, AuditResult):  # a document from elsewhere is checked as `report` checks it
        results = read_results_document(results, "the results document")
    if folder.exists() and not default_name:
        raise UserError(f"{folder} already exists; reports never overwrite a run")
    images = figures(results) if {"html", "md"} & set(formats) else {}
    staging = new_folder(folder, next_free=default_name)
    with staging as tmp:
        (tmp / "results.json").write_text(json_text(results.to_dict()), encoding="utf-8")
        for name, content in results.files.items():
            (tmp / name).write_bytes(content)
        if "html" in formats:
            (tmp / "report.html").write_text(render(results, "html", images), encoding="utf-8")
        if "md" in formats:
            (tmp / "plots").mkdir()
            for name, png in images.items():
                (tmp / "plots" / f"{name}.png").write_bytes(png)
            (tmp / "report.md").write_text(render(results, "md", images), encoding="utf-8")
    return staging.published


RESULTS_BYTES = 512 * MiB  # the example's results.json is 0.2 MB; its samples grow with the prompt sets


def read_results(path: Path) -> AuditResult:
    """A results.json (or a report folder holding one), checked whole before anything is drawn (see results/)."""
    path = path.expanduser()
    if path.is_dir():  # a report folder: its results.json
        path = path / "results.json"
    try:
        results = json.loads(read_text(path, "results file", RESULTS_BYTES))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not a results.json: {exc}") from None
    except RecursionError:  # 100,000 nested brackets
        raise UserError(f"{path} is not a results.json: it is nested too deeply") from None
    return read_results_document(results, path)
