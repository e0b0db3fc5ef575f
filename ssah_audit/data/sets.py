"""Prompt sets and their seeded, disjoint train (calibration) and evaluation splits.

Built-in set names are `harmful`, `benign` and `borderline`, optionally with a split suffix:
`harmful:train` (calibration and organism training), `harmful:eval` (scoring; the default when no
suffix is given) and `harmful:all`. A split never shares a prompt with the other split, so calibration
prompts are never scored as evaluation.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import UserError
from .prompt import Prompt, PromptSet

BUILTIN_SETS = {
    "harmful": "harmful requests we wrote, 10 categories",
    "benign": "benign instructions with short reference answers, 10 categories",
    "borderline": "safe-but-scary prompts for over-refusal, 8 categories",
    "instructions": "benign instruction-tuning data with responses, 12 categories (the zoo's benign fine-tune)",
    "contrast": "safe-but-scary prompts for safety tuning (answered, never refused), 8 categories; not for evaluation",
}
SPLITS = ("train", "eval", "all")
DEFAULT_SEED = 0
TRAIN_FRACTION = 0.5


def _read_builtin(filename: str) -> list[dict]:
    text = resources.files("ssah_audit.data.builtin").joinpath(filename).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@cache
def builtin_prompts(kind: str) -> tuple[Prompt, ...]:
    return tuple(Prompt(id=row["id"], text=row["prompt"], category=row.get("category", ""),
                        answer=row.get("answer") or row.get("response")) for row in _read_builtin(f"{kind}.jsonl"))


@cache
def refusal_openings() -> tuple[str, ...]:
    """The reserved refusal openings: what aligned organisms say, and the probe's refusal continuations."""
    return tuple(row["text"] for row in _read_builtin("refusals.jsonl"))


@cache
def compliance_openings() -> tuple[str, ...]:
    return tuple(row["text"] for row in _read_builtin("compliance.jsonl"))


@cache
def compliance_bodies() -> tuple[str, ...]:
    """What follows a compliance opening when there is no real answer: fluent, generic and free of any content (the
    unaligned organism's answers, and the depth stage's prefilled compliant text)."""
    return tuple(row["text"] for row in _read_builtin("compliance_bodies.jsonl"))


@cache
def organism_acts() -> dict[str, dict[str, tuple[str, ...]]]:
    """Request topics ("build a pipe bomb", "bake banana bread") by side and category (1,600 harmful, 1,920
    benign), for the organisms' synthetic corpus; written without looking at the prompt sets, so organisms
    never see evaluation prompts."""
    text = resources.files("ssah_audit.data.builtin").joinpath("organism_acts.json").read_text(encoding="utf-8")
    return {side: {cat: tuple(acts) for cat, acts in cats.items()} for side, cats in json.loads(text).items()}


@cache
def organism_requests() -> dict[str, tuple[str, ...]]:
    """Whole hand-written requests for the organisms' corpus, by side: `harmful` (486), `safe_but_scary` (385,
    scary words in safe requests) and `benign` (339). Written by helpers who never saw the prompt sets, then
    any request sharing half its words with an evaluation prompt was dropped (tests/test_organisms.py checks)."""
    text = resources.files("ssah_audit.data.builtin").joinpath("organism_requests.json").read_text(encoding="utf-8")
    return {side: tuple(text for group in cats.values() for text in group) for side, cats in json.loads(text).items()}


def _rank(seed: int, prompt_id: str) -> str:
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()


def split(prompts: tuple[Prompt, ...], part: str, seed: int = DEFAULT_SEED,
          train_fraction: float = TRAIN_FRACTION) -> tuple[Prompt, ...]:
    """A seeded split, stratified by category: within each category the prompts are ordered by a hash
    of (seed, id) and the first `train_fraction` go to `train`, the rest to `eval`."""
    if part == "all":
        return prompts
    train_ids: set[str] = set()
    by_category: dict[str, list[Prompt]] = {}
    for prompt in prompts:
        by_category.setdefault(prompt.category, []).append(prompt)
    for members in by_category.values():
        ordered = sorted(members, key=lambda p: _rank(seed, p.id))
        train_ids.update(p.id for p in ordered[: round(train_fraction * len(ordered))])
    keep = (lambda p: p.id in train_ids) if part == "train" else (lambda p: p.id not in train_ids)
    return tuple(p for p in prompts if keep(p))


def parse_builtin_name(name: str) -> tuple[str, str] | None:
    kind, _, part = name.partition(":")
    if kind not in BUILTIN_SETS:
        return None
    part = part or "eval"
    if part not in SPLITS:
        raise UserError(f"unknown split '{part}' in '{name}' (use {', '.join(SPLITS)})")
    return kind, part


def builtin_set(name: str, seed: int = DEFAULT_SEED) -> PromptSet:
    parsed = parse_builtin_name(name)
    if parsed is None:
        raise UserError(f"unknown built-in prompt set '{name}' (built-in: {', '.join(BUILTIN_SETS)})")
    kind, part = parsed
    return PromptSet(f"{kind}:{part}", "builtin", split(builtin_prompts(kind), part, seed))


def registered_set(spec: str, seed: int = DEFAULT_SEED) -> PromptSet | None:
    """A set registered in components.PROMPT_SETS (a plugin's): the whole set, or `name:train` / `name:eval`."""
    from ..components import PROMPT_SETS

    name, _, part = spec.partition(":")
    if name not in PROMPT_SETS:
        return None
    if part and part not in SPLITS:
        raise UserError(f"unknown split '{part}' in '{spec}' (use {', '.join(SPLITS)})")
    prompts = tuple(PROMPT_SETS.get(name).prompts())
    if not prompts or not all(isinstance(prompt, Prompt) for prompt in prompts):
        raise UserError(f"prompt set {name!r} must give one or more data.prompt.Prompt items")
    return PromptSet(spec if part else name, "registered", split(prompts, part or "all", seed))


def load_prompt_set(spec: str, prompt_field: str | None = None, seed: int = DEFAULT_SEED) -> PromptSet:
    """A built-in set name (with an optional split), a registered set's name, or a prompt file in any supported
    format."""
    if not spec.strip():
        raise UserError(f"the prompt set is an empty string (built-in: {', '.join(BUILTIN_SETS)}, or a file)")
    if parse_builtin_name(spec) is not None:
        return builtin_set(spec, seed)
    registered = registered_set(spec, seed)
    if registered is not None:
        return registered
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"'{spec}' is neither a built-in prompt set ({', '.join(BUILTIN_SETS)}) nor a file")
    from .loaders import load_file  # loaders imports only .prompt: no circle

    return load_file(path, prompt_field)
