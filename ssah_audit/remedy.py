"""SSAH's remedy, proposed by the audit: re-run the fine-tune from the reference with the reference's
safety-critical units and the most safety-relevant complex units frozen (the paper's Table 2: SCU + the top 6% of
units among CU, about 7.5% of all units). The report folder gets the reference's unit map, and the report the
command that uses it.
"""

from __future__ import annotations

import shlex

from .unit_classes import classify, freeze

FREEZE_CLASSES = "scu,cu:6"
MAP_NAME = "freeze-map.safetensors"
# The remedy's measured effect on the embedded pair (issue 19's Table 2 analogue, BENCHMARKS.md "SSAH's remedy on the
# embedded pair"): the safe-ft recipe (seed 0) re-run from smollm2-135m-safe with its SCU + top 6% CU frozen. It did
# not keep the reference's safety, and did no better than as many random units: the report says so with the numbers.
PAIR_EFFECT: dict | None = {"reference_compliance": 0.09, "unfrozen_compliance": 0.61, "frozen_compliance": 0.54,
                            "frozen_ci95": [0.44, 0.63], "random_compliance": 0.56,
                            "source": "bench/remedy_pair.py, held-out harmful split, fine-tune seed 0"}


def plan(reference_spec: str, reference_block: dict, classes: dict, safety: dict,
         map_location: str = MAP_NAME) -> tuple[dict, dict[str, bytes]]:
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
    return block, {MAP_NAME: tensors, MAP_NAME.replace(".safetensors", ".json"): sidecar.encode()}
