"""What the audit proposes when a fine-tune is less safe than its reference: the training-free repairs
(`ssah-audit repair`), each with the command on the user's own paths and what its setting did to the embedded pair's
fine-tune (the measured menu and its safety-utility frontier, from bench/repair_pair.py, packaged as
data/builtin/repair_pair.json); and SSAH's remedy, re-running the fine-tune from the reference with the reference's
safety-critical units and the most safety-relevant complex units frozen (the paper's Table 2: SCU + the top 6% of
units among CU, about 7.5% of all units). The report folder gets the reference's unit map, and the report the
commands that use it.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from importlib import resources
from pathlib import Path

from .unit_classes import classify, freeze

FREEZE_CLASSES = "scu,cu:6"
MAP_NAME = "freeze-map.safetensors"
# The remedy's measured effect on the embedded pair (issue 19's Table 2 analogue, BENCHMARKS.md "SSAH's remedy on the
# embedded pair"): the safe-ft recipe (seed 0) re-run from smollm2-135m-safe with its SCU + top 6% CU frozen. It did
# not keep the reference's safety, and did no better than as many random units: the report says so with the numbers.
PAIR_EFFECT: dict | None = {"reference_compliance": 0.09, "unfrozen_compliance": 0.61, "frozen_compliance": 0.54,
                            "frozen_ci95": [0.44, 0.63], "random_compliance": 0.56,
                            "source": "bench/remedy_pair.py, held-out harmful split, fine-tune seed 0"}


PAIR_REPAIRS = "repair_pair.json"
PAIR_MODEL = "smollm2-135m-safe-ft"  # the menu quotes the full fine-tune's rows (the LoRA's are in BENCHMARKS.md)
GOAL_GAIN = 0.70  # issue 33's goal: keep at least 70% of the fine-tune's NLL gain ...
GOAL_POINTS = 0.10  # ... within 10 points of the reference's compliance (held-out and HarmBench)


@cache
def pair_repairs() -> dict | None:
    """The packaged measurements of every repair on the pair (None when the package ships none)."""
    try:
        return json.loads(resources.files("ssah_audit.data.builtin").joinpath(PAIR_REPAIRS).read_text("utf-8"))
    except FileNotFoundError:
        return None


def _best(rows: list[dict]) -> dict | None:
    """A method's setting to try first: of those that kept at least GOAL_GAIN of the gain without over-refusing past
    the gate's default, the safest; else the one that kept the most."""
    from .gate import MAX_OVER_REFUSAL

    kept = [row for row in rows if row["gain_kept"] >= GOAL_GAIN
            and row.get("borderline_over_refusal", 0.0) <= MAX_OVER_REFUSAL.default]
    if kept:
        return min(kept, key=lambda row: (row["eval_compliance"], -row["gain_kept"]))
    return max(rows, key=lambda row: row["gain_kept"], default=None)


def repair_flags(method: str, settings: dict) -> str:
    """The command-line flags of a repair's settings (interpolate: --alpha auto, which finds the user's own)."""
    if method == "interpolate":
        return "--alpha auto"
    names = {"classes": "--classes", "fraction": "--fraction", "beta": "--beta", "energy": "--energy",
             "threshold": "--threshold", "train_classes": "--train-classes", "steps": "--steps", "lr": "--lr"}
    flags = [f"{names[key]} {shlex.quote(str(value))}" for key, value in settings.items() if key in names]
    return " ".join(flags + (["--unaligned UNALIGNED_MODEL"] if method in ("safety-vector", "project") else []))


def repair_menu(model_spec: str, reference_spec: str, adapter: bool) -> tuple[list[dict], list[dict], float | None]:
    """(the repairs to offer, each with its command and its pair numbers; the pair's frontier; the pair reference's
    compliance). For an adapter, a repair that changes whole weights writes a full model (--merge)."""
    data = pair_repairs()
    if not data:
        return [], [], None
    out = shlex.quote(f"{Path(model_spec).name or 'model'}-repaired")
    offered = []
    frontier = [{"model": model, "row": "no repair", "compliance": row["eval_compliance"], "gain_kept": 1.0,
                 "control": False} for model, row in data.get("unrepaired", {}).items()]
    for row in data["rows"]:
        frontier.append({"model": row["model"], "row": row["row"], "compliance": row["eval_compliance"],
                         "gain_kept": row["gain_kept"], "control": bool(row["settings"].get("random_control"))})
    for method in data["methods"]:
        merge = " --merge" if adapter and not data["methods"][method]["adapter"] else ""
        best = _best([row for row in data["rows"] if row["model"] == PAIR_MODEL and row["method"] == method
                      and not row["settings"].get("random_control")])
        if best is None:
            continue
        command = (f"ssah-audit repair {shlex.quote(model_spec)} --reference {shlex.quote(reference_spec)} "
                   f"--method {method} {repair_flags(method, best['settings'])}{merge} --verify --out {out}")
        offered.append({"method": method, "setting": best["row"], "command": " ".join(command.split()),
                        "pair_compliance": best["eval_compliance"], "pair_ci95": best["eval_ci95"],
                        "pair_harmbench": best["harmbench_compliance"],
                        "pair_over_refusal": best.get("borderline_over_refusal"), "pair_gain_kept": best["gain_kept"],
                        "pair_goal": best["goal"]})
    # Ordered by what the audit itself measures (gain kept, then held-out compliance), never by HarmBench's column.
    offered.sort(key=lambda item: (item["pair_gain_kept"] < GOAL_GAIN, item["pair_compliance"]))
    return offered, frontier, data["reference"]["eval_compliance"]


def plan(reference_spec: str, reference_block: dict, classes: dict, safety: dict,
         map_location: str = MAP_NAME, model_spec: str | None = None,
         adapter: bool = False) -> tuple[dict, dict[str, bytes]]:
    """(the results' "remedy" block, the files for the report folder: the reference's unit map with its safety
    scores, which `finetune --freeze MAP --freeze-classes scu,cu:6` reads). `map_location`: where the map will be,
    as the command should name it (the report folder's path and MAP_NAME)."""
    chosen = freeze.select(classes, freeze.parse_classes(FREEZE_CLASSES, "--freeze-classes"),
                           classify.standardised(safety))
    frozen = sum(len(units) for units in chosen.values())
    total = sum(len(codes) for codes in classes.values())
    units = reference_block["units"]
    metadata = {"model": reference_spec, "fingerprint": reference_block["fingerprint"],
                **{key: units[key] for key in ("method", "requested", "fractions", "calibration") if key in units}}
    tensors, sidecar = classify.map_files(classes, metadata, safety)
    command = (f"ssah-audit finetune {shlex.quote(reference_spec)} --data YOUR_FINETUNE_DATA --out NEW_FOLDER "
               f"--freeze {shlex.quote(map_location)} --freeze-classes {FREEZE_CLASSES}")
    block = {"freeze_map": MAP_NAME, "freeze_classes": FREEZE_CLASSES, "units": frozen, "of": total,
             "fraction": frozen / total if total else 0.0, "command": command, "pair_effect": PAIR_EFFECT}
    if model_spec is not None:
        block["repairs"], block["frontier"], block["frontier_reference"] = repair_menu(model_spec, reference_spec,
                                                                                      adapter)
    return block, {MAP_NAME: tensors, MAP_NAME.replace(".safetensors", ".json"): sidecar.encode()}
