"""One behaviour measurement of a model: harmful compliance, over-refusal, utility, refusal score. Returns plain
JSON data (results.Behavior's shape); the comparison with a reference is compare/behavior.py."""

from __future__ import annotations

import time

from ..batching import check_characters
from ..data.prompt import PromptSet
from .generate import generate
from .judges import refusals
from .metrics import answer_nll, rate, refusal_score_recorder, summary


def judged(loaded, prompts: list[str], max_new_tokens: int, batch_size: int, description: str,
           scores_out: list | None = None) -> list[tuple[str, bool]]:
    """Greedy completions of `prompts` with the judge's verdict: (completion, refused) in prompt order.
    `scores_out`, when given, receives each prompt's refusal score (metrics.refusal_log_odds), read from the
    generation's first step: the same next-token distribution `refusal_scores` would run another pass for."""
    first_step = None
    if scores_out is not None:
        scores_out[:] = [0.0] * len(prompts)
        first_step = refusal_score_recorder(scores_out, loaded.tokenizer)
    completions = generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens, batch_size,
                           description=description, first_step=first_step)
    return list(zip(completions, refusals(list(zip(prompts, completions, strict=True))), strict=True))


def _judged(loaded, prompt_set: PromptSet, max_new_tokens: int, batch_size: int,
            scores_out: list | None = None) -> list[dict]:
    prompts = [p.text for p in prompt_set.prompts]
    verdicts = judged(loaded, prompts, max_new_tokens, batch_size, f"{loaded.spec}: {prompt_set.name}", scores_out)
    return [{"prompt": p, "completion": c, "refusal": r}
            for p, (c, r) in zip(prompts, verdicts, strict=True)]


def measure(loaded, harmful: PromptSet, benign: PromptSet, borderline: PromptSet, max_new_tokens: int = 64,
            batch_size: int = 16, seed: int = 0, generation_batch_size: int | None = None,
            details_out: dict | None = None, borderline_tokens: int | None = None) -> dict:
    """Behaviour blocks of one model (see `ssah-audit behavior --help` for the document's shape).
    `generation_batch_size`: rows per generation batch, when not `batch_size` (see AuditSettings). `details_out`,
    when given, receives what the document keeps only as means: "refusal_scores" (per harmful prompt) and
    "nll_per_answer" (metrics.answer_nll's), from which the audit reads its ablation table's unablated row on some
    of the prompts and answers (auditing.dense_row). `borderline_tokens`: tokens generated per borderline prompt,
    when not `max_new_tokens` (the audit's: whether a model refuses a safe request shows in its opening)."""
    check_characters(loaded, harmful, benign, borderline)
    answered = benign.answered("utility NLL")
    start = time.perf_counter()
    rows = generation_batch_size or batch_size
    scores: list[float] = []  # the harmful prompts' refusal scores, from their generation's first step
    harmful_samples = _judged(loaded, harmful, max_new_tokens, rows, scores)
    borderline_tokens = min(borderline_tokens or max_new_tokens, max_new_tokens)
    borderline_samples = _judged(loaded, borderline, borderline_tokens, rows)
    generation_seconds = time.perf_counter() - start
    complied = rate([not s["refusal"] for s in harmful_samples], seed)
    refused = rate([s["refusal"] for s in borderline_samples], seed)
    utility = answer_nll(loaded.model, loaded.tokenizer, answered, batch_size)
    if details_out is not None:
        details_out.update(refusal_scores=scores, nll_per_answer=utility["per_answer"])
    return {
        "model": loaded.spec,
        "fingerprint": loaded.fingerprint,
        "harmful": complied.as_dict("compliance_rate") | {"set": harmful.name},
        "borderline": refused.as_dict("refusal_rate") | {"set": borderline.name, "tokens": borderline_tokens},
        "utility": {"nll": utility["nll"], "perplexity": utility["perplexity"], "tokens": utility["tokens"],
                    "set": benign.name},
        "refusal_score": summary(scores) | {"set": harmful.name},
        "samples": {"harmful": harmful_samples, "borderline": borderline_samples},
        "seconds": {"generation": round(generation_seconds, 2), "total": round(time.perf_counter() - start, 2)},
    }
