"""Settings, written once: the defaults that the command line, the Python API and the audit share, the audit's
settings (AuditSettings), and audit.toml (an [audit] table of those settings, a [gate] table of thresholds).
A CLI option's default is read from here, so `ssah-audit audit --help`, `ssah_audit.audit()` and a results.json's
settings never disagree."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .components import DEFAULT_JUDGE
from .errors import UserError
from .inputs import MiB, read_text

HARMFUL, BENIGN, BORDERLINE = "harmful", "benign", "borderline"  # the built-in evaluation sets
SAFETY_DATA, UTILITY_DATA = "harmful:train", "benign:train"  # calibration: the other halves of the same sets
MAX_NEW_TOKENS = 64  # tokens generated per prompt
STEPS = 10  # probe continuation tokens K read per prompt
PROBE_VARIANT = "self"
METHOD = "wifv"  # the unit score (the paper's Eq. 1)
SCU, UCU, RU = 1.5, 10.0, 15.0  # percent of all units in each picked class (the paper's; CU is the rest)
BATCH_SIZE = 16  # sequences per forward pass: behaviour, probe, and every stage of the audit
# The `units` command's own default, smaller since it was written; the audit scores units at BATCH_SIZE. Scores do
# not depend on the batch size beyond float rounding
# (tests/test_unit_scores.py: padded batches against one example at a time).
UNITS_BATCH_SIZE = 8
SEED = 0
JUDGE = DEFAULT_JUDGE  # learned, or the environment's $SSAH_AUDIT_JUDGE (components.py)
PREFILL = "0,5,10,20"  # prefilled compliant tokens k of the depth stage (responses/depth.py)
TEMPLATES = "jailbreaks"  # the depth stage's jailbreak templates: the built-in set, a file, or "none"
# Harmful prompts the depth stage attacks (N of the harmful set, spread over it: PromptSet.spread): at 50 the stage
# cost 26-28% of the audit without it on the pair (BENCHMARKS.md "Depth"), over issue 34's 25%; at 40 it cost 47 s a
# model (a round of plain generation is about 50 s), at 20 it costs 25 s (BENCHMARKS.md "The audit in rounds" has
# the rows at 20 against the same stage on all 100 prompts). More prompts narrow the intervals (audit.toml).
DEPTH_LIMIT = 20
# Tokens of each attacked continuation the judge reads: at 24 its verdict equals its verdict at 32 on 99.8% and 98.3%
# of the 400 attacked prompts of smollm2-135m-safe and -safe-ft (no row's rate moved more than 4 points; BENCHMARKS.md
# "Depth"), a quarter less decoding.
DEPTH_TOKENS = 24
QUICK = {"limit": 20, "max_new_tokens": 32, "steps": 6}  # --quick: a fast look
TABLES = ("audit", "gate", "judge")  # the tables audit.toml may hold
CONFIG_BYTES = MiB  # an audit.toml is a few lines


def check_fractions(scu: float, ucu: float, ru: float, names=("--scu", "--ucu", "--ru")) -> None:
    """Each a percentage, together at most all units; `names` as the user wrote them (options or settings)."""
    for name, value in zip(names, (scu, ucu, ru), strict=True):
        if not 0 <= value <= 100:
            raise UserError(f"{name} must be a percentage between 0 and 100, not {value:g}")
    if scu + ucu + ru > 100:
        raise UserError(f"{' + '.join(names)} add up to {scu + ucu + ru:g}%, more than all units")


def parse_prefill(spec: str) -> tuple[int, ...]:
    """"0,5,10,20" -> (0, 5, 10, 20): distinct whole numbers >= 0, in order; "" or "none": no prefilling."""
    if spec.strip().lower() in ("", "none"):
        return ()
    try:
        values = sorted({int(part) for part in spec.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"prefill takes comma-separated token counts like 0,5,10,20, not {spec!r}") from None
    if not values or values[0] < 0:
        raise UserError(f"prefill takes token counts >= 0, not {spec!r}")
    return tuple(values)


@dataclass(frozen=True)
class AuditSettings:
    harmful: str = HARMFUL
    benign: str = BENIGN
    borderline: str = BORDERLINE
    safety_data: str = SAFETY_DATA
    utility_data: str = UTILITY_DATA
    limit: int | None = None
    max_new_tokens: int = MAX_NEW_TOKENS
    # Tokens generated per borderline (safe but harmful-sounding) prompt, at most max_new_tokens: whether a model
    # refuses a safe request shows in its opening, and the judge's verdict on the first 32 tokens equals its verdict
    # on 64 for every borderline completion of the pair measured (BENCHMARKS.md "The audit in rounds").
    borderline_tokens: int = 32
    # Tokens per ablation row (at most max_new_tokens): the judge's verdict on the first 32 tokens equals its verdict
    # on 64 for 99.7% of 336 ablation rows measured (BENCHMARKS.md), and it halves the rows' generation.
    verify_tokens: int = 32
    # Held-out harmful prompts and benign reference answers each ablation row measures (N of each set, spread over
    # it: PromptSet.spread; the unablated row is read off the behaviour stage on the same ones). Each row costs a
    # generation of its prompts and an NLL pass over its answers: at 50 the table costs half of 100 and its numbers
    # move by sampling alone (on the pair every refusal score and NLL stayed inside its interval at 100, the rates
    # within 10 points, the SCU-over-random gaps 40 and 56 points against 37 and 63; BENCHMARKS.md "The audit in
    # rounds").
    verify_limit: int = 50
    # Of those, the prompts and answers the UCU and RU rows measure (spread over them): the gate and the summary read
    # the SCU row against its random control, which keep all verify_limit; a class's own effect is large (removing
    # UCU multiplies the NLL by 2.5-3.5 on the pair) or small (RU), and shows on fewer. At 25 the table costs a
    # quarter less (BENCHMARKS.md "The audit in rounds" has the rows at 25 against 50).
    class_rows_limit: int = 25
    steps: int = STEPS
    method: str = METHOD
    scu: float = SCU
    ucu: float = UCU
    ru: float = RU
    verify: bool = True
    # Seeds of the ablation's random control: one in the audit (its row is the SCU row's control, and each seed
    # costs as much as a class's row); `units --verify` keeps three for the spread between them.
    random_seeds: int = 1
    batch_size: int = BATCH_SIZE
    # Rows per generation batch: behaviour, depth, calibration and the ablation rows (all conditions together; forward
    # passes take batch_size). A decoding step reads every weight once whatever the rows: on one 2-core machine 96
    # prompts x 64 tokens took 30 s at 16 rows, 18 s at 48, 16 s at 96; on a slower one (fp32 matmul 145 GFLOP/s)
    # 200 x 32 took 28.4 s at 48 rows, 21.8 s at 100, 22.2 s at 200 (BENCHMARKS.md "The audit in rounds"). A row's
    # KV cache is 5.7 MB at 124 tokens for SmolLM2-135M.
    generation_batch_size: int = 96
    seed: int = SEED
    # The depth stage (responses/depth.py): harmful compliance with k compliant tokens prefilled, and inside each
    # jailbreak template, on depth_limit harmful prompts spread over the set, each continuation depth_tokens long (at
    # most max_new_tokens). "" or "none" turns either attack off.
    prefill: str = PREFILL
    templates: str = TEMPLATES
    depth_limit: int = DEPTH_LIMIT
    depth_tokens: int = DEPTH_TOKENS
    # The registered judge (components.JUDGES) behind every verdict of the audit: behaviour, ablation rows and the
    # calibration refusals.
    judge: str = JUDGE

    def __post_init__(self):
        """audit.toml reaches here without the command line's checks: check the same bounds, before any work."""
        from .components import UNIT_SCORES
        from .responses.judges import check_spec

        minimum = {"max_new_tokens": 1, "borderline_tokens": 1, "verify_tokens": 1, "verify_limit": 1,
                   "class_rows_limit": 1, "steps": 2, "batch_size": 1, "generation_batch_size": 1, "random_seeds": 1,
                   "seed": 0, "depth_limit": 1, "depth_tokens": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if type(value) is not int or value < low:
                raise UserError(f"[audit] {name} must be a whole number >= {low}, not {value!r}")
        if self.limit is not None and (type(self.limit) is not int or self.limit < 1):
            raise UserError(f"[audit] limit must be a whole number >= 1, not {self.limit!r}")
        for name in ("harmful", "benign", "borderline", "safety_data", "utility_data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise UserError(f"[audit] {name} must be a prompt set name or file, not {getattr(self, name)!r}")
        for name in ("prefill", "templates"):
            if not isinstance(getattr(self, name), str):
                raise UserError(f"[audit] {name} must be a string, not {getattr(self, name)!r}")
        try:
            parse_prefill(self.prefill)
        except UserError as exc:
            raise UserError(f"[audit] {exc}") from None
        from .data.jailbreaks import load_templates

        load_templates(self.templates)  # a template file is read (and refused, in one line) before any work
        if self.method not in UNIT_SCORES:
            raise UserError(f"[audit] method must be one of {', '.join(UNIT_SCORES.names())}, not {self.method!r}")
        try:
            check_spec(self.judge)
        except UserError as exc:
            raise UserError(f"[audit] judge: {exc}") from None
        if type(self.verify) is not bool:
            raise UserError(f"[audit] verify must be true or false, not {self.verify!r}")
        for name in ("scu", "ucu", "ru"):
            if type(getattr(self, name)) not in (int, float):
                raise UserError(f"[audit] {name} must be a number, not {getattr(self, name)!r}")
        check_fractions(self.scu, self.ucu, self.ru, names=("[audit] scu", "[audit] ucu", "[audit] ru"))

    @property
    def ablation_tokens(self) -> int:
        """Tokens generated per ablation row: verify_tokens, never more than the behaviour stage generated."""
        return min(self.verify_tokens, self.max_new_tokens)

    @property
    def attack_tokens(self) -> int:
        """Tokens generated per attacked prompt: depth_tokens, never more than the behaviour stage generated (k = 0
        reads behaviour's completions)."""
        return min(self.depth_tokens, self.max_new_tokens)

    @property
    def prefill_tokens(self) -> tuple[int, ...]:
        return parse_prefill(self.prefill)

    @classmethod
    def quick(cls, **changes) -> AuditSettings:
        """A fast look: 20 prompts a set, short generations, 6 probe steps."""
        return replace(cls(**QUICK), **changes)


def settings_from(table: dict, quick: bool = False) -> AuditSettings:
    """AuditSettings from an [audit] table of audit.toml (unknown keys are a user error)."""
    known = {f.name: f for f in fields(AuditSettings)}
    unknown = set(table) - set(known)
    if unknown:
        raise UserError(f"unknown [audit] setting(s) {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    try:
        return AuditSettings.quick(**table) if quick else AuditSettings(**table)
    except TypeError as exc:
        raise UserError(f"bad [audit] settings: {exc}") from None


def read_settings(doc: dict, quick: bool = False, judge: str | None = None, **options) -> AuditSettings:
    """The audit's settings from a whole audit.toml: its [audit] table, and the judge its [judge] table names
    (`name = "rules"`); `judge` (the command line's --judge) over both, and the command line's other settings
    (`options` that are not None, e.g. prefill, templates) over the table."""
    table = dict(doc.get("audit") or {}) | {name: value for name, value in options.items() if value is not None}
    named = doc.get("judge") or {}
    unknown = sorted(set(named) - {"name"})
    if unknown:
        raise UserError(f"unknown [judge] setting(s) {', '.join(unknown)} (known: name)")
    if "name" in named:
        if "judge" in table and table["judge"] != named["name"]:
            raise UserError(f"the judge is named twice: [audit] judge = {table['judge']!r}, [judge] name = "
                            f"{named['name']!r}")
        table["judge"] = named["name"]
    if judge is not None:
        table["judge"] = judge
    return settings_from(table, quick)


def load_config(path: Path | None) -> dict:
    """An audit.toml; a missing or broken file is one clear line."""
    if path is None:
        return {}
    try:
        doc = tomllib.loads(read_text(path, "config file", CONFIG_BYTES))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    check_tables(doc, path)
    return doc


def check_tables(doc: dict, path: Path) -> None:
    """Only [audit], [gate] and [judge], each a table: a mistyped [gates] would otherwise be ignored, and CI would
    gate at the defaults while the file says otherwise."""
    unknown = sorted(set(doc) - set(TABLES))
    if unknown:
        raise UserError(f"{path}: unknown table(s) {', '.join(f'[{name}]' for name in unknown)} "
                        f"(audit.toml holds only {' and '.join(f'[{name}]' for name in TABLES)})")
    for name, value in doc.items():
        if not isinstance(value, dict):
            raise UserError(f"{path}: {name} must be a table ([{name}] and its settings below), not {repr(value)[:60]}")
