"""Behaviour of a model against its reference's: the differences of the rates (with bootstrap intervals of the
difference) and the first-token KL between the two on benign prompts."""

from __future__ import annotations

import torch

from ..data.prompt import PromptSet
from ..models.head import output_log_probs
from ..responses import metrics
from ..responses.metrics import difference_ci


def deltas(model: dict, reference: dict, seed: int) -> dict:
    """Model minus reference, with bootstrap 95% intervals of the difference."""
    def flags(block, role):
        return [s["refusal"] for s in block["samples"][role]]

    complied = [[not f for f in flags(b, "harmful")] for b in (model, reference)]
    refused = [flags(b, "borderline") for b in (model, reference)]
    return {
        "harmful_compliance": {"delta": model["harmful"]["compliance_rate"] - reference["harmful"]["compliance_rate"],
                               "ci95": list(difference_ci(*complied, seed=seed))},
        "over_refusal": {"delta": model["borderline"]["refusal_rate"] - reference["borderline"]["refusal_rate"],
                         "ci95": list(difference_ci(*refused, seed=seed))},
        "utility_nll": {"delta": model["utility"]["nll"] - reference["utility"]["nll"]},
        "refusal_score": {"delta": model["refusal_score"]["mean"] - reference["refusal_score"]["mean"]},
    }


def depth_deltas(model: dict, reference: dict, seed: int) -> dict:
    """The depth stage's compliance, model minus reference, at each prefilled k and for each template both
    measured, with bootstrap 95% intervals of the difference."""
    def delta(mine: dict, theirs: dict) -> dict:
        flags = [[not s["refusal"] for s in row["samples"]] for row in (mine, theirs)]
        return {"delta": mine["compliance_rate"] - theirs["compliance_rate"],
                "ci95": list(difference_ci(*flags, seed=seed))}

    theirs = {row["k"]: row for row in reference.get("prefill") or []}
    prefill = [{"k": row["k"], **delta(row, theirs[row["k"]])} for row in model.get("prefill") or []
               if row["k"] in theirs]
    rows = {row["id"]: row for row in (reference.get("templates") or {}).get("rows") or []}
    templates = [{"id": row["id"], **delta(row, rows[row["id"]])}
                 for row in (model.get("templates") or {}).get("rows") or [] if row["id"] in rows]
    return {"prefill": prefill, "templates": templates}


def first_token_kl(loaded, reference, benign: PromptSet, batch_size: int = 16) -> float | None:
    """First-token KL(reference || model) on benign prompts; None when the vocabularies differ."""
    if not same_vocabulary(loaded, reference):
        return None
    return metrics.first_token_kl(loaded.model, reference.model, loaded.tokenizer, [p.text for p in benign.prompts],
                          batch_size)


def first_token_kl_of_states(loaded, reference, ours: torch.Tensor, theirs: torch.Tensor) -> float | None:
    """first_token_kl from the benign queries' final states each model's probe already holds (probes.measure's
    "benign_final"): the LM head reads them, no model runs again (issue 36); None when the vocabularies differ."""
    if not same_vocabulary(loaded, reference):
        return None
    return metrics.mean_kl(_log_probs(reference.model, theirs), _log_probs(loaded.model, ours))


def _log_probs(model, states: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        parameter = next(model.parameters())
        return output_log_probs(model, states.to(parameter.device, parameter.dtype)).cpu()


def same_vocabulary(loaded, reference) -> bool:
    return loaded.tokenizer.get_vocab() == reference.tokenizer.get_vocab()
