"""`hf:PATH`: a user's own refusal classifier, a local Hugging Face sequence-classification folder, as a judge.

Each (prompt, completion) pair is one text pair to the classifier (the completion is cut first when the pair is
longer than the model reads); the refusal probability is the softmax of the label that means refusal. That label is
the one `id2label` names with "refus" in it, or the one named after a `#` (`hf:PATH#LABEL`). No remote code runs:
a folder that needs it is refused, as for the audited models. Accuracy cannot be measured here for a user's
classifier: `ssah-audit judge FILE --judge hf:PATH --label-column L` measures it on the user's own labels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..errors import UserError

PREFIX = "hf:"
BATCH = 16
MAX_TOKENS = 512  # at most this many tokens a pair, whatever the model could read


@dataclass
class HFClassifierJudge:
    """A loaded classifier; `name` is its spec, `version` a digest of its config and weights' names and sizes."""

    name: str
    version: str
    model: object = field(repr=False)
    tokenizer: object = field(repr=False)
    refusal_index: int
    max_tokens: int
    validation: str | None = None

    def judge(self, pairs):
        import torch

        from .verdict import Verdict

        verdicts = []
        with torch.inference_mode():
            for start in range(0, len(pairs), BATCH):
                batch = pairs[start:start + BATCH]
                encoded = self.tokenizer([p for p, _ in batch], [c for _, c in batch], truncation="longest_first",
                                         max_length=self.max_tokens, padding=True, return_tensors="pt")
                logits = self.model(**encoded).logits.float()
                probabilities = torch.softmax(logits, dim=-1)[:, self.refusal_index].tolist()
                verdicts += [Verdict(p > 0.5, p, f"{self.name}: p(refusal) {p:.2f}") for p in probabilities]
        return verdicts


def folder_of(spec: str) -> Path:
    """The model folder "hf:PATH[#LABEL]" names, refused in one line unless it holds a config.json (checked as the
    command line is read; the classifier itself loads when the work starts)."""
    folder = Path(spec.removeprefix(PREFIX).partition("#")[0]).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(f"judge {spec}: {folder} is not a model folder (no config.json)")
    return folder


check = folder_of  # the judge slot's check of a spec (judges.SPECS)


@cache
def load(spec: str) -> HFClassifierJudge:
    """The judge `spec` ("hf:PATH" or "hf:PATH#LABEL") names, loaded once per process."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    folder, label = folder_of(spec), spec.partition("#")[2]
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        labels = {int(i): str(name) for i, name in (config.id2label or {}).items()}
        index = _refusal_index(spec, labels, label)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False).eval()
    except UserError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"judge {spec}: cannot load a sequence classifier from {folder}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if tokenizer.pad_token is None:  # decoder classifiers (Llama, Qwen) often have none: pad with the end token
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    limit = min(MAX_TOKENS, getattr(config, "max_position_embeddings", None) or MAX_TOKENS,
                tokenizer.model_max_length or MAX_TOKENS)
    return HFClassifierJudge(spec, digest(folder), model, tokenizer, index, limit)


def _refusal_index(spec: str, labels: dict[int, str], wanted: str) -> int:
    if wanted:
        found = [i for i, name in labels.items() if name == wanted]
    else:
        found = [i for i, name in labels.items() if "refus" in name.lower()]
    if len(found) != 1:
        raise UserError(f"judge {spec}: cannot tell which label means refusal (labels: "
                        f"{', '.join(labels.values()) or 'none'}); name it: hf:PATH#LABEL")
    return found[0]


def digest(folder: Path) -> str:
    """The config's bytes and every file's name and size: a changed classifier is another version."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for item in sorted(folder.iterdir()):
        if item.is_file():
            digest.update(f"{item.name}:{item.stat().st_size}".encode())
    return digest.hexdigest()[:12]
