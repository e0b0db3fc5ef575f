"""A prompt and a named set of prompts: the one type that built-in sets, prompt files and every measurement share
(its own module so that the built-in sets and the file loaders can both import it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UserError


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    category: str = ""
    answer: str | None = None  # a reference answer (benign sets, Alpaca)
    target: str | None = None  # a compliance opening of the data set's own (AdvBench's "Sure, here is ...")
    label: str | None = None  # the data set's own label, e.g. XSTest's safe/unsafe


@dataclass(frozen=True)
class PromptSet:
    name: str
    source: str  # "builtin", "registered" (components.PROMPT_SETS) or "<format> file <path>"
    prompts: tuple[Prompt, ...]

    def __len__(self) -> int:
        return len(self.prompts)

    def limit(self, n: int | None) -> PromptSet:
        return self if n is None else replace(self, prompts=self.prompts[:n])

    def spread(self, n: int | None) -> tuple[PromptSet, list[int]]:
        """(the set's n prompts at evenly spaced positions, their indices): all of them when n is None or at least
        the set. Why not the first n: a set grouped by category (the built-in harmful set runs ten categories of
        ten in turn) keeps its mix; its first 20 prompts were weapons and malware alone, and the pair's fine-tune
        complied with 68% of the first 50 against 57% of all 100."""
        indices = spread_indices(len(self.prompts), n)
        return replace(self, prompts=tuple(self.prompts[i] for i in indices)), indices

    def safe_only(self) -> PromptSet:
        """For over-refusal: a set whose prompts carry safe/unsafe labels (XSTest) keeps its safe ones."""
        if not any(p.label == "safe" for p in self.prompts):
            return self
        return replace(self, name=f"{self.name}[safe]", prompts=tuple(p for p in self.prompts if p.label == "safe"))

    def answered(self, needed_for: str) -> list[tuple[str, str]]:
        """(prompt, reference answer) pairs, the one definition behind every utility NLL: the behaviour stage and
        the ablation table's utility column must measure the same pairs."""
        pairs = [(self.prompts[i].text, self.prompts[i].answer) for i in self.answered_indices()]
        if not pairs:
            raise UserError(f"prompt set '{self.name}' has no reference answers (needed for {needed_for})")
        return pairs

    def answered_indices(self) -> list[int]:
        """Which prompts have a reference answer, in order: `answered`'s k-th pair is prompt answered_indices()[k]
        (the audit maps the ablation's benign prompts to the behaviour stage's NLL pairs with it)."""
        return [i for i, prompt in enumerate(self.prompts) if prompt.answer]

    def categories(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for prompt in self.prompts:
            counts[prompt.category] = counts.get(prompt.category, 0) + 1
        return counts


def spread_indices(total: int, n: int | None) -> list[int]:
    """n of range(total) at evenly spaced positions, in order (all of them when n is None or at least total)."""
    if n is None or n >= total:
        return list(range(total))
    return [i * total // n for i in range(n)]
