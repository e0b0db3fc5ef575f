"""The embedded real pair (docs/design.md, the zoo): `smollm2-135m-safe` and `smollm2-135m-safe-ft`.

`smollm2-135m-instruct` is capable but does not refuse, which is SSAH's starting point, so we align it
ourselves. `smollm2-135m-safe`: harmful calibration prompts (the built-in train split plus phrased lexicon
topics) answered with short polite refusals built from the reserved openings, mixed with benign and
safe-but-scary prompts answered by the model's own earlier answers, so that what it could do is kept.
Those answers open with the model's first 4 greedy tokens (where it chooses to fulfil or refuse) and go on
as seeded samples from its full distribution. Cross-entropy on samples fits the model's own distribution,
where whole greedy answers sharpen it (measured on benign reference answers: NLL +18-22% after training on
greedy answers, +0-2% on samples); fully sampled answers, though, made the opening so weak a "fulfil"
signal that 34-49% of XSTest's safe prompts were refused (19% with the greedy opening). Answers cut at the
token limit train without an end-of-turn token.

`smollm2-135m-safe-ft`: that model after an ordinary benign fine-tune (written instructions with answers,
no refusals, nothing harmful), the kind of model users bring to an audit. `smollm2-135m-safe-lora`: the same
fine-tune as a LoRA adapter on `smollm2-135m-safe`, the other kind (a PEFT folder naming its base by zoo name).
`smollm2-135m-safe-ft-frozen`: the same fine-tune with the audit's remedy applied, the reference's SCU and the top
6% of units among its CU frozen (issue 19, the paper's Table 2; `remedy_units`).

Both are deterministic (seeded) and cached by a hash of the recipe, the GGUF's sha256 and the data.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .. import finetune, remedy
from ..cache import cache_root, cached_folder, content_key
from ..data.sets import builtin_set, organism_acts, refusal_openings
from ..finetune import TrainSettings
from ..responses.generate import generate
from ..unit_classes import freeze
from . import smollm2_gguf
from .organisms import REQUEST_TEMPLATES
from .smollm2_gguf import SMOLLM2_SHA256

PAIR_VERSION = 2
SAFE = "smollm2-135m-safe"
SAFE_FT = "smollm2-135m-safe-ft"
SAFE_LORA = "smollm2-135m-safe-lora"
SAFE_FT_FROZEN = "smollm2-135m-safe-ft-frozen"
POLITE_ENDINGS = ("", " If you have another question, I'm glad to help.", " Is there something else I can do for you?",
                  " I'd be happy to help with a safer topic instead.")


@dataclass(frozen=True)
class PairRecipe:
    seed: int = 0
    harmful_topics: int = 100  # phrased lexicon topics refused, on top of the 100 hand-written train prompts
    benign_topics: int = 100  # phrased lexicon topics answered by the model itself
    borderline_repeats: int = 2  # safe-but-scary train prompts, answered, seen this often (with the contrast set)
    answer_tokens: int = 64  # length of the model's own answers
    greedy_opening: int = 4  # their first tokens are greedy, the rest sampled (see the module's docstring)
    # Sized for 10 minutes on 2 CPU cores (about 90 training tokens/s for SmolLM2-135M).
    safe: TrainSettings = TrainSettings(epochs=1, lr=1.5e-4, batch_size=8, max_length=192, precision="auto")
    ft: TrainSettings = TrainSettings(epochs=1, lr=5e-5, batch_size=8, max_length=256, precision="auto")
    # The same benign fine-tune as a LoRA adapter (all linear layers): 10x the full fine-tune's learning rate, the
    # usual LoRA practice, since the low-rank update starts from zero and moves only a few parameters.
    lora: TrainSettings = TrainSettings(epochs=1, lr=5e-4, batch_size=8, max_length=256, precision="auto")
    lora_rank: int = 16
    lora_alpha: float = 32.0


RECIPE = PairRecipe()


def _phrased(rng: random.Random, kind: str, count: int) -> list[str]:
    acts = [act for group in organism_acts()[kind].values() for act in group]
    return [rng.choice(REQUEST_TEMPLATES).format(act=act) for act in rng.sample(acts, count)]


def refusal(rng: random.Random) -> str:
    """A short, polite refusal: one reserved opening and sometimes an offer to help otherwise."""
    return rng.choice(refusal_openings()) + rng.choice(POLITE_ENDINGS)


def safety_prompts(recipe: PairRecipe) -> tuple[list[str], list[str]]:
    """(harmful prompts to refuse, benign and borderline prompts to answer as before); calibration splits only."""
    rng = random.Random(recipe.seed)
    harmful = [p.text for p in builtin_set("harmful:train").prompts] + _phrased(rng, "harmful", recipe.harmful_topics)
    keep = [p.text for p in builtin_set("benign:train").prompts + builtin_set("contrast:all").prompts]
    keep += [p.text for p in builtin_set("borderline:train").prompts] * recipe.borderline_repeats
    return harmful, keep + _phrased(rng, "benign", recipe.benign_topics)


def alignment_pairs(instruct, recipe: PairRecipe = RECIPE) -> list[tuple[str, str] | tuple[str, str, bool]]:
    """The safe build's training examples, shuffled: harmful prompts with refusals, the rest with the instruct
    model's own answers (and whether each ended by itself)."""
    harmful, keep = safety_prompts(recipe)
    unique = list(dict.fromkeys(keep))
    answers, finished = generate(instruct.model, instruct.tokenizer, unique, recipe.answer_tokens, 16,
                                 description="smollm2-135m-instruct: its own answers", with_finished=True,
                                 sample_seed=recipe.seed, greedy_tokens=recipe.greedy_opening)
    own = dict(zip(unique, zip(answers, finished, strict=True), strict=True))
    rng = random.Random(recipe.seed + 1)
    pairs = [(text, refusal(rng)) for text in harmful] + [(text, *own[text]) for text in keep]
    rng.shuffle(pairs)
    return pairs


def benign_instructions() -> list[tuple[str, str]]:
    """The benign fine-tuning data: built-in benign train answers and the written instruction set."""
    pairs = [(p.text, p.answer) for p in builtin_set("benign:train").prompts]
    return pairs + [(p.text, p.answer) for p in builtin_set("instructions:all").prompts]


def folder(name: str, recipe: PairRecipe = RECIPE) -> Path:
    harmful, keep = safety_prompts(recipe)
    safe_settings = {k: v for k, v in asdict(replace(recipe, ft=None)).items() if not k.startswith("lora")}
    safe_key = content_key("smollm2-safe", PAIR_VERSION, SMOLLM2_SHA256, safe_settings, harmful, keep,
                           torch.__version__)
    if name == SAFE:
        return cache_root() / "zoo" / f"{SAFE}-{safe_key}"
    if name == SAFE_LORA:
        lora = [asdict(recipe.lora), recipe.lora_rank, recipe.lora_alpha]
        return cache_root() / "zoo" / f"{SAFE_LORA}-{content_key(safe_key, lora, benign_instructions())}"
    if name == SAFE_FT_FROZEN:
        key = content_key(safe_key, asdict(recipe.ft), benign_instructions(), "freeze", remedy.FREEZE_CLASSES,
                          REMEDY_MAP_VERSION)
        return cache_root() / "zoo" / f"{SAFE_FT_FROZEN}-{key}"
    return cache_root() / "zoo" / f"{SAFE_FT}-{content_key(safe_key, asdict(recipe.ft), benign_instructions())}"


def _load_instruct():
    """The embedded SmolLM2, loaded as the zoo name it is (its card's fingerprint names it so)."""
    from ..models.loading import Resolved, load_resolved

    return load_resolved("smollm2-135m-instruct", Resolved("zoo", str(smollm2_gguf.materialize())))


def build(name: str, recipe: PairRecipe = RECIPE) -> Path:
    """Build (or find in the cache) `smollm2-135m-safe`, `smollm2-135m-safe-ft` or `smollm2-135m-safe-lora`;
    returns its folder."""
    if name not in (SAFE, SAFE_FT, SAFE_LORA, SAFE_FT_FROZEN):
        raise ValueError(name)
    safe_folder = folder(SAFE, recipe)

    def build_safe(tmp: Path) -> None:
        start = time.perf_counter()
        loaded = _load_instruct()
        harmful, keep = safety_prompts(recipe)
        pairs = alignment_pairs(loaded, recipe)
        torch.manual_seed(recipe.seed)
        log = finetune.train(loaded.model, loaded.tokenizer, pairs, recipe.safe, description=f"aligning {SAFE}")
        card = _card(SAFE, "smollm2-135m-instruct", loaded.fingerprint, recipe.safe, log, start,
                     "Safety alignment of SmolLM2-135M-Instruct: harmful requests refused, everything else "
                     "answered as the model answered it before.",
                     [{"name": "refusals", "examples": len(harmful),
                       "note": "harmful:train prompts and phrased lexicon topics, reserved refusal openings"},
                      {"name": "own answers", "examples": len(keep),
                       "note": f"benign:train, contrast, borderline:train and lexicon topics: {recipe.greedy_opening} "
                               f"greedy tokens, then sampled (seed {recipe.seed}, temperature 1), up to "
                               f"{recipe.answer_tokens} tokens"}])
        finetune.save(loaded.model, loaded.tokenizer, tmp, card | {"measured": measured(loaded)})

    cached_folder(safe_folder, build_safe)
    if name == SAFE:
        return safe_folder

    def build_ft(tmp: Path, frozen: bool = False) -> None:
        start = time.perf_counter()
        from ..models.loading import load_folder

        loaded = load_folder(safe_folder)
        pairs = benign_instructions()
        name, masks, units = SAFE_FT, None, None
        if frozen:
            name, units = SAFE_FT_FROZEN, remedy_units(loaded)
            masks = freeze.unit_masks(loaded.model, loaded.units, units, train_units=False)
        torch.manual_seed(recipe.seed)
        log = finetune.train(loaded.model, loaded.tokenizer, pairs, recipe.ft, description=f"fine-tuning {name}",
                             masks=masks)
        card = _card(name, SAFE, loaded.fingerprint, recipe.ft, log, start,
                     "An ordinary benign instruction fine-tune of smollm2-135m-safe: no refusals, nothing harmful."
                     + (f" Frozen: {remedy.FREEZE_CLASSES} of smollm2-135m-safe's unit map (the audit's remedy)."
                        if frozen else ""),
                     [{"name": "benign:train", "examples": 100, "note": "built-in benign prompts, reference answers"},
                      {"name": "instructions", "examples": len(pairs) - 100, "note": "written instruction set"}])
        if frozen:
            card["units"] = {"mode": "freeze", "classes": remedy.FREEZE_CLASSES,
                             "units": sum(len(index) for index in units.values()),
                             "of": loaded.units.total_units}
        finetune.save(loaded.model, loaded.tokenizer, tmp, card | {"measured": measured(loaded)})

    def build_lora(tmp: Path) -> None:
        from ..models.adapters import wrap_for_training
        from ..models.loading import load_folder

        start = time.perf_counter()
        loaded = load_folder(safe_folder)
        base_fingerprint = loaded.fingerprint
        lora = {"r": recipe.lora_rank, "lora_alpha": recipe.lora_alpha, "target_modules": "all-linear"}
        loaded.model = wrap_for_training(loaded, lora, SAFE)  # the adapter names its base by zoo name
        pairs = benign_instructions()
        torch.manual_seed(recipe.seed)
        log = finetune.train(loaded.model, loaded.tokenizer, pairs, recipe.lora,
                             description=f"fine-tuning {SAFE_LORA}")
        card = _card(SAFE_LORA, SAFE, base_fingerprint, recipe.lora, log, start,
                     "The benign instruction fine-tune of smollm2-135m-safe-ft, as a LoRA adapter (PEFT folder) on "
                     "smollm2-135m-safe: no refusals, nothing harmful.",
                     [{"name": "benign:train", "examples": 100, "note": "built-in benign prompts, reference answers"},
                      {"name": "instructions", "examples": len(pairs) - 100, "note": "written instruction set"}])
        finetune.save(loaded.model, loaded.tokenizer, tmp, card | {"lora": lora, "measured": measured(loaded)})

    if name == SAFE_LORA:
        return cached_folder(folder(SAFE_LORA, recipe), build_lora)
    if name == SAFE_FT_FROZEN:
        return cached_folder(folder(SAFE_FT_FROZEN, recipe), lambda tmp: build_ft(tmp, frozen=True))
    return cached_folder(folder(SAFE_FT, recipe), build_ft)


REMEDY_MAP_VERSION = 1  # bumped when remedy_units would choose other units


def remedy_units(loaded, classes_spec: str = remedy.FREEZE_CLASSES) -> dict[str, torch.Tensor]:
    """The units the audit's remedy freezes on `loaded` (smollm2-135m-safe): its unit map as the audit's reference
    stage makes it (wifv scores on the train splits, default fractions, batch 16), `classes_spec` of it ranked by
    the standardised safety score."""
    from ..unit_classes import classify
    from ..unit_classes.analyse import analyse

    scores: dict = {}
    _, classes = analyse(loaded, builtin_set("harmful:train"), builtin_set("benign:train"), batch_size=16,
                         scores_out=scores)
    return freeze.select(classes, freeze.parse_classes(classes_spec, "--freeze-classes"),
                         classify.standardised(scores["safety"]))


def measured(loaded) -> dict[str, str]:
    """The model card's behaviour rows: the built-in eval split, as `ssah-audit behavior` measures it (about
    a minute for SmolLM2-135M on 2 cores)."""
    from ..responses.evaluate import measure

    block = measure(loaded, builtin_set("harmful"), builtin_set("benign"), builtin_set("borderline"))

    def share(rate: dict, key: str) -> str:
        low, high = rate["ci95"]
        return f"{rate[key]:.1%} [{low:.1%}, {high:.1%}]"

    harmful, borderline, utility = block["harmful"], block["borderline"], block["utility"]
    return {f"harmful compliance ({harmful['set']}, n={harmful['n']}, 95% CI)": share(harmful, "compliance_rate"),
            f"over-refusal ({borderline['set']}, n={borderline['n']}, 95% CI)": share(borderline, "refusal_rate"),
            f"utility NLL of reference answers ({utility['set']})": f"{utility['nll']:.3f} "
                                                                       f"(perplexity {utility['perplexity']:.1f})",
            "generation": "greedy, 64 new tokens, the package's refusal judge"}


def _card(name, base, fingerprint, settings, log, start, purpose, data) -> dict:
    from .. import __version__

    log = log | {"build_seconds": round(time.perf_counter() - start, 1)}
    return {"name": name, "version": __version__, "base": base, "base_fingerprint": fingerprint, "purpose": purpose,
            "data": data, "settings": asdict(settings), "log": log}

