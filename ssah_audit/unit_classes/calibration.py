"""Calibration data for the two scores: what the model does when it refuses, and when it is useful.

Safety: harmful calibration prompts with refusals, the reference model's own where it refuses (it knows
best what an aligned refusal of this family looks like), otherwise a seeded draw of the built-in refusal
openings. Utility: benign instructions with their reference answers.
"""

from __future__ import annotations

import random

from ..data.prompt import PromptSet
from ..data.sets import refusal_openings
from ..responses.evaluate import judged


def safety_pairs(harmful: PromptSet, reference=None, seed: int = 0, max_new_tokens: int = 48,
                 batch_size: int = 16) -> tuple[list[tuple[str, str]], str]:
    """(prompt, refusal) pairs and a line saying where the refusals came from."""
    texts = [p.text for p in harmful.prompts]
    rng = random.Random(seed)
    built_in = [rng.choice(refusal_openings()) for _ in texts]
    if reference is None:
        return list(zip(texts, built_in, strict=True)), "built-in refusal openings"
    verdicts = judged(reference, texts, max_new_tokens, batch_size, f"{reference.spec}: calibration refusals")
    pairs = [(text, reply if refused else fallback)
             for text, (reply, refused), fallback in zip(texts, verdicts, built_in, strict=True)]
    own = sum(refused for _, refused in verdicts)
    return pairs, f"{reference.spec}'s own refusals for {own} of {len(texts)}, built-in openings for the rest"


def utility_pairs(benign: PromptSet) -> list[tuple[str, str]]:
    return benign.answered("the utility score")
