"""The audit: behaviour, probing and units on the model and on the reference, then the comparison and the gate.
Returns the results document (versioned schema), the single source of truth the reports render from.

The reference's measurements are cached (keyed by its fingerprint, the settings and the package version),
so auditing many fine-tunes against one reference measures the reference once.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import __version__, gate, remedy
from .cache import content_key
from .compare import behavior as compare_behavior
from .compare import probe as compare_probe
from .compare.units import compare_units, same_architecture
from .config import AuditSettings
from .data.jailbreaks import TemplateSet, load_templates
from .data.prompt import PromptSet
from .data.sets import load_prompt_set
from .probes.measure import check_steps
from .probes.measure import measure as measure_probe
from .responses.depth import check_fits
from .responses.depth import measure as measure_depth
from .responses.evaluate import measure as measure_behavior
from .responses.generate import first_tokens
from .responses.judges import describe as describe_judge
from .responses.judges import refusals, using
from .responses.metrics import mean_nll
from .results import SCHEMA, SCHEMA_VERSION, AuditResult
from .unit_classes.analyse import analyse
from .unit_classes.classify import Fractions

# Bumped when the way a reference block is measured changes, so a block cached by older code is not reused.
# 2: unit scores and ablations at the audit's batch size (was half of it), the dense row taken from behaviour.
# 3: the probe block is the lens probe (was the paper's cosine margin).
# 4: the raw safety scores are cached beside the classes (the remedy's freeze map ranks CU by them).
# 5: the probe block is the self-continuation probe (was the lens); ablation rows generate verify_tokens;
#    generation runs generation_batch_size rows a batch; the random control has random_seeds seeds (1).
# 6: the reference's calibration refusals (which calibrate the audited model's safety score) are kept with the
#    block; the self probe encodes each query once for all its paths, and NLL and first-token passes a batch's
#    common prefix once (the same states to float rounding).
# 7: behaviour samples grouped by role (results schema 2).
# 8: the depth block (prefilling and jailbreak templates).
# 9: generation 96 rows a batch (the ablation rows too); an opening shared per ablation condition and per template;
#    unit statistics encode a batch's opening once; the learned judge encodes a prompt once for its completions.
# 10: the benign queries' final states are kept (the first-token KL reads them instead of running both models).
# 11: the ablation rows measure verify_limit prompts and answers and the depth stage depth_limit prompts, each
#     spread over its set (PromptSet.spread).
# 12: the UCU and RU ablation rows measure class_rows_limit of those prompts and answers; the borderline prompts
#     generate borderline_tokens.
REFERENCE_RECIPE = 12


@dataclass(frozen=True)
class Sets:
    harmful: PromptSet
    benign: PromptSet
    borderline: PromptSet
    safety: PromptSet
    utility: PromptSet
    templates: TemplateSet | None = None  # the depth stage's jailbreak templates
    depth_limit: int | None = None
    verify_limit: int | None = None

    @property
    def attacked(self) -> tuple[PromptSet, list[int]]:
        """The harmful prompts the depth stage attacks, depth_limit of them spread over the set (PromptSet.spread),
        and their indices in it."""
        return self.harmful.spread(self.depth_limit)

    @property
    def verified(self) -> tuple[PromptSet, list[int], PromptSet, list[int]]:
        """The harmful prompts and the benign prompts each ablation row measures, verify_limit of each spread over
        its set, with their indices in it."""
        return (*self.harmful.spread(self.verify_limit), *self.benign.spread(self.verify_limit))

    @classmethod
    def load(cls, settings: AuditSettings) -> Sets:
        def get(spec: str, safe_only: bool = False) -> PromptSet:
            prompt_set = load_prompt_set(spec)
            return (prompt_set.safe_only() if safe_only else prompt_set).limit(settings.limit)

        return cls(get(settings.harmful), get(settings.benign), get(settings.borderline, safe_only=True),
                   get(settings.safety_data), get(settings.utility_data), load_templates(settings.templates),
                   settings.depth_limit, settings.verify_limit)


def measure_one(loaded, sets: Sets, settings: AuditSettings, safety_pairs: tuple[list, str] | None = None,
                timings: dict | None = None, label: str = "model", scores_out: dict | None = None,
                states_out: dict | None = None) -> tuple[dict, dict, object]:
    """(block of results, unit classes, refusal directions) for one model; `safety_pairs`: the reference's
    calibration refusals (from measure_reference), else the built-in refusal openings calibrate the safety score;
    `scores_out` receives the raw unit scores (see units.analyse), `states_out` the probe's benign final states
    (see probes.measure)."""
    timings = timings if timings is not None else {}
    tic = time.perf_counter()
    details: dict = {}
    behavior = measure_behavior(loaded, sets.harmful, sets.benign, sets.borderline, settings.max_new_tokens,
                                settings.batch_size, settings.seed, settings.generation_batch_size, details,
                                settings.borderline_tokens)
    timings[f"{label}.behavior"] = round(time.perf_counter() - tic, 2)
    tic = time.perf_counter()
    depth = None
    if settings.prefill_tokens or sets.templates:
        attacked, which = sets.attacked
        depth = measure_depth(loaded, attacked, settings.prefill_tokens, sets.templates, settings.attack_tokens,
                              settings.generation_batch_size, settings.seed,
                              [behavior["samples"]["harmful"][i]["completion"] for i in which], len(sets.harmful))
        timings[f"{label}.depth"] = round(time.perf_counter() - tic, 2)
    tic = time.perf_counter()
    # the probe's own continuations of the harmful prompts are the first tokens of behaviour's greedy completions
    completions = [s["completion"] for s in behavior["samples"]["harmful"]]
    probe, directions = measure_probe(loaded, sets.harmful, sets.benign, settings.steps, settings.batch_size,
                                        completions=completions, states_out=states_out)
    timings[f"{label}.probe"] = round(time.perf_counter() - tic, 2)
    tic = time.perf_counter()
    harmful, prompts, benign, chosen = sets.verified
    answered = sets.benign.answered_indices()  # behaviour's NLL pairs
    answers = [answered.index(i) for i in chosen if i in answered]
    units, classes = analyse(loaded, sets.safety, sets.utility, settings.method,
                             Fractions(settings.scu, settings.ucu, settings.ru), None,
                             harmful, benign, run_verify=settings.verify,
                             batch_size=settings.batch_size, max_new_tokens=settings.ablation_tokens,
                             seed=settings.seed,
                             dense=dense_row(behavior, details, loaded.tokenizer, settings.ablation_tokens, prompts,
                                             answers),
                             scores_out=scores_out, generation_batch_size=settings.generation_batch_size,
                             random_seeds=tuple(range(settings.random_seeds)), safety_pairs=safety_pairs,
                             few=settings.class_rows_limit)
    timings[f"{label}.units"] = round(time.perf_counter() - tic, 2)
    block = {"model": loaded.spec, "fingerprint": loaded.fingerprint, "architecture": describe_model(loaded),
             "adapter": loaded.adapter,
             "behavior": behavior, "probe": probe, "units": units}
    if depth is not None:
        block["depth"] = depth
    return block, classes, directions


def dense_row(behavior: dict, details: dict, tokenizer, tokens: int, prompts: list[int], answers: list[int]) -> dict:
    """The unablated row of the ablation table, read off the behaviour stage (its block and its `details`, see
    responses.evaluate.measure) on the harmful prompts and reference answers at these indices: the same greedy
    generation (cut to the ablation rows' `tokens`), judge, refusal score and NLL at the same batch size, so
    measuring it again would only repeat the work (tests/test_audit.py checks that the two agree)."""
    harmful = [behavior["samples"]["harmful"][i] for i in prompts]
    complied = [not refused for refused in refusals([(s["prompt"], first_tokens(tokenizer, s["completion"], tokens))
                                                    for s in harmful])]
    scores = [details["refusal_scores"][i] for i in prompts]
    return {"compliance_rate": sum(complied) / len(complied) if complied else 0.0,
            "refusal_score": sum(scores) / len(scores) if scores else 0.0,
            "nll": mean_nll([details["nll_per_answer"][i] for i in answers]), "n": len(harmful),
            "answers": len(answers)}


def describe_model(loaded) -> dict:
    config = loaded.model.config
    return {"class": type(loaded.model).__name__, "model_type": config.model_type,
            "layers": len(loaded.units.layers), "units": loaded.units.total_units,
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "chat_template": loaded.has_chat_template}


def _reference_cache_key(reference, settings: AuditSettings) -> str:
    return content_key("audit-reference", SCHEMA_VERSION, REFERENCE_RECIPE, __version__, reference.fingerprint,
                       asdict(settings), describe_judge(settings.judge))


@dataclass(frozen=True)
class MeasuredReference:
    """What the audit keeps of its reference (cached whole). `refusals`: the reference's own replies to the safety
    calibration prompts, which calibrate the audited model's safety score; `benign_final`: its benign queries' final
    states, the reference side of the first-token KL."""

    block: dict
    classes: dict
    directions: object
    safety: dict  # the raw safety scores (the remedy's freeze map ranks CU by them)
    refusals: tuple[list, str]
    benign_final: object


def measure_reference(reference, sets: Sets, settings: AuditSettings, timings: dict) -> MeasuredReference:
    """The reference's measurements, from the cache when this reference was measured with these settings before
    (the calibration refusals and the states depend only on the reference and the settings, so a cached reference
    need not generate or run anything again)."""
    from . import reference_cache
    from .unit_classes.calibration import safety_pairs
    from .unit_classes.classify import CLASSES

    folder = reference_cache.entry_folder(_reference_cache_key(reference, settings))
    cached = reference_cache.load(folder)
    if cached is not None:
        block, tensors, calibration = cached
        timings["reference.cached"] = True
        # The same weights measured under another name (the cache key is the fingerprint): report today's name.
        parts = [block] + [block.get(key) for key in ("behavior", "probe", "units")]
        for part in parts:
            if isinstance(part, dict) and "model" in part:
                part["model"] = reference.spec
        source = calibration["source"].replace(calibration["model"], reference.spec)
        return MeasuredReference(block, tensors["classes"], tensors["directions"], tensors["safety"],
                                 ([tuple(pair) for pair in calibration["pairs"]], source), tensors["benign_final"])
    keep = reference_cache.writable(folder)  # before the work: a read-only cache is said now, not after it
    scores, states = {}, {}
    block, classes, directions = measure_one(reference, sets, settings, None, timings, "reference", scores, states)
    tic = time.perf_counter()
    pairs, source = safety_pairs(sets.safety, reference, settings.seed, batch_size=settings.generation_batch_size)
    timings["reference.calibration"] = round(time.perf_counter() - tic, 2)
    if keep:
        reference_cache.save(folder, block, {"classes": classes, "directions": directions, "safety": scores["safety"],
                                             "codes": list(CLASSES), "benign_final": states["benign_final"]},
                             {"model": reference.spec, "source": source, "pairs": pairs})
    return MeasuredReference(block, classes, directions, scores["safety"], (pairs, source), states["benign_final"])


def run(loaded, reference=None, settings: AuditSettings = AuditSettings(), limits: dict | None = None,
        base_is_reference: bool = False, folder: Path | None = None, timings: dict | None = None) -> AuditResult:
    """The whole audit as one results document (base_is_reference: the reference is the model's own adapter base,
    chosen by default, which the report says). The result's `files` are the files that belong in the report
    folder beside the results (the remedy's freeze map), by name; `folder` is that report folder, which the
    remedy's command names. `timings`, when given, receives each stage's seconds as it ends
    (bench/audit_stages.py)."""
    with using(settings.judge):
        return _run(loaded, reference, settings, limits, base_is_reference, folder, timings)


def _run(loaded, reference, settings: AuditSettings, limits: dict | None, base_is_reference: bool,
         folder: Path | None, timings: dict | None) -> AuditResult:
    start = time.perf_counter()
    timings = timings if timings is not None else {}
    sets = Sets.load(settings)
    for model in filter(None, (loaded, reference)):  # sizes first: a later stage must not fail after the work
        check_steps(model.model, settings.steps)
        check_fits(model, sets.attacked[0], settings.prefill_tokens, sets.templates, settings.attack_tokens)
    measured = measure_reference(reference, sets, settings, timings) if reference is not None else None
    states: dict = {}
    block, classes, directions = measure_one(loaded, sets, settings, measured and measured.refusals, timings,
                                             states_out=states)
    comparison = {}
    tic = time.perf_counter()
    if measured is not None:
        ref_block = measured.block
        comparison["behavior"] = compare_behavior.deltas(block["behavior"], ref_block["behavior"], settings.seed)
        comparison["first_token_kl"] = compare_behavior.first_token_kl_of_states(
            loaded, reference, states["benign_final"], measured.benign_final)
        if block.get("depth") and ref_block.get("depth"):
            comparison["depth"] = compare_behavior.depth_deltas(block["depth"], ref_block["depth"], settings.seed)
        comparison["probe"] = compare_probe.compare(block["probe"], ref_block["probe"], directions,
                                                    measured.directions)
        reason = same_architecture(loaded, reference)
        comparison["units"] = ({"note": reason} if reason else
                               compare_units(loaded, reference, measured.classes, classes))
        timings["comparison"] = round(time.perf_counter() - tic, 2)
    results = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        **block,
        "reference": measured and measured.block,
        "reference_is_adapter_base": base_is_reference,
        "comparison": comparison,
        "remedy": None,
        "settings": asdict(settings),
        "sets": {name: {"name": s.name, "source": s.source, "n": len(s)} for name, s in vars(sets).items()
                 if isinstance(s, PromptSet)},
    }
    files = {}
    if measured is not None:
        where = str(folder / remedy.MAP_NAME) if folder else remedy.MAP_NAME
        results["remedy"], files = remedy.plan(reference.spec, measured.block, measured.classes, measured.safety, where,
                                               loaded.spec, loaded.adapter is not None)
    checks = gate.evaluate(results, limits or gate.thresholds())
    results["gate"] = {"passed": gate.passed(checks), "checks": [c.as_dict() for c in checks]}
    timings["total"] = round(time.perf_counter() - start, 2)
    results["provenance"] = provenance(settings, timings)
    result = AuditResult.build(results)
    result.files.update(files)
    return result


def provenance(settings: AuditSettings, timings: dict) -> dict:
    from importlib import metadata

    packages = {}
    for name in ("ssah-audit", "torch", "transformers", "tokenizers", "scikit-learn", "numpy", "jinja2"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "seed": settings.seed,
            "python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "timings_seconds": dict(timings), "judge": describe_judge(settings.judge)}
