"""The judge slot: every verdict the audit, the gate and the ablations read comes from a judge, called on a batch of
(prompt, completion) pairs. A judge is named by a spec: a registered name (components.JUDGES: `learned`,
learned_judge.py, the default, and `rules`, judge.py, are built in; a user's own judge registers under its name),
or a place after a prefix (SPECS): `hf:PATH`, a local sequence classifier (hf_judge.py), `guard:PATH`, a local
causal guard or judge model asked whether the answer refuses (guard_judge.py), or `learned:PATH`, the learned judge
refitted on a user's labels (learned_judge.fit), or `endpoint:URL`, an OpenAI-compatible chat server
(endpoint_judge.py)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ..components import DEFAULT_JUDGE, JUDGES
from ..errors import UserError
from . import judge as rules
from .verdict import Verdict

# Judges named by a prefix and a place (a folder, a server), by the prefix: each module's check(spec) checks the
# spec without loading anything (as the command line is read), its load(spec) loads the judge once per process.
# Named, not imported, as the registry names the built-in judges: nothing of a model loads until a spec asks.
SPECS = {"hf:": "ssah_audit.responses.hf_judge", "learned:": "ssah_audit.responses.learned_judge",
         "guard:": "ssah_audit.responses.guard_judge", "endpoint:": "ssah_audit.responses.endpoint_judge"}

# The judge that measurements without a judge of their own use: the audit sets it from its settings for the whole
# run (`using`), so behaviour, the ablation rows and the calibration refusals all read the same judge.
_ACTIVE: ContextVar[str] = ContextVar("ssah_audit_judge", default=DEFAULT_JUDGE)
# Within `using`, the verdicts given so far by (prompt, completion): an audit asks about one pair more than once (an
# ablation row that says what the unablated model said, a short completion cut to the ablation rows' length), and a
# judge is a function of its pair, so a pair is judged once per run.
_SEEN: ContextVar[dict | None] = ContextVar("ssah_audit_verdicts", default=None)


@dataclass(frozen=True)
class RulesJudge:
    """The rule-based judge (judge.py): no probability, the rule that decided as the reason."""

    name: str = "rules"
    version: str = "1"
    validation: str = ("XSTest v2 human labels: accuracy 0.963 on the 900 rows its rules were written on, 0.893 on "
                       "1,350 rows of three models it never saw (BENCHMARKS.md, refusal judge)")

    def judge(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        return [Verdict(result.refusal, None, result.reason)
                for result in (rules.judge(prompt, completion) for prompt, completion in pairs)]


RULES = RulesJudge()


def _kind(spec: str):
    found = next((module for prefix, module in SPECS.items() if isinstance(spec, str) and spec.startswith(prefix)),
                 None)
    return None if found is None else importlib.import_module(found)


def check_spec(spec: str) -> str:
    """A judge spec checked without loading anything: a registered name, or PREFIX:PATH naming a judge's folder."""
    if isinstance(spec, str) and spec in JUDGES:
        return spec
    if (kind := _kind(spec)) is not None:
        kind.check(spec)
        return spec
    raise UserError(f"unknown judge {spec!r} (known: {', '.join(JUDGES.names())}; or hf:PATH, a local sequence "
                    "classifier; guard:PATH, a local guard or judge model asked yes or no; learned:PATH, a judge "
                    "refitted by judge-fit; or endpoint:URL, an OpenAI-compatible chat server)")


def resolve(spec: str):
    """The judge a spec names: a registered judge, or one read from a folder (loaded once)."""
    check_spec(spec)
    return JUDGES.get(spec) if spec in JUDGES else _kind(spec).load(spec)


@contextmanager
def using(judge: str) -> Iterator[None]:
    """Within this block, `verdicts` and `refusals` without a judge named use `judge` (a spec, see `resolve`)."""
    found = resolve(judge)  # an unknown name or an unreadable classifier is refused before any work
    if hasattr(found, "prepare"):  # a judge that loads a model loads it now, so that it cannot fail after the work
        found.prepare()
    token, seen = _ACTIVE.set(judge), _SEEN.set({})
    try:
        yield
    finally:
        _SEEN.reset(seen)
        _ACTIVE.reset(token)


def describe(name: str) -> dict:
    """The judge on record (results.json's provenance, the reference cache key): its name, version, and how it
    was validated where it says (a judge's optional `validation` text)."""
    judge = resolve(name)
    return {"name": name, "version": str(judge.version), "validation": getattr(judge, "validation", None)}


def active() -> str:
    return _ACTIVE.get()


def verdicts(pairs: list[tuple[str, str]], judge: str | None = None) -> list[Verdict]:
    """The verdicts of `judge` (default: the active one, see `using`), one per pair, checked: a judge that answers
    for fewer or more pairs than it was given would shift every verdict onto the wrong completion."""
    judge = judge or active()
    seen = _SEEN.get() if judge == active() else None
    seen = {} if seen is None else seen
    wanted = list(dict.fromkeys(pair for pair in map(tuple, pairs) if pair not in seen))  # each new pair once
    found = list(resolve(judge).judge(wanted)) if wanted else []
    if len(found) != len(wanted) or not all(isinstance(v, Verdict) for v in found):
        raise TypeError(f"judge {judge!r} must return one responses.verdict.Verdict per pair ({len(wanted)}), "
                        f"not {len(found)} values")
    seen.update(zip(wanted, found, strict=True))
    return [seen[tuple(pair)] for pair in pairs]


def refusals(pairs: list[tuple[str, str]], judge: str | None = None) -> list[bool]:
    return [verdict.refusal for verdict in verdicts(pairs, judge)]
