"""`ssah-audit finetune`: an ordinary full-parameter supervised fine-tune, saved as a folder every other command
loads."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path

import typer

from ..errors import UserError
from .common import handles_errors, out
from .options import MODEL_HELP, LoadOptionsMaker, model_paths, with_model_options

Precision = StrEnum("Precision", ["auto", "fp32", "bf16"])  # finetune.use_bf16 decides what auto means


@handles_errors
@with_model_options
def finetune(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str = typer.Option(..., "--data", help="Instruction data with responses: Alpaca JSON, or CSV/JSON/JSONL "
                             "with prompt and response columns, or a built-in set with answers (benign:train)."),
    out_dir: Path = typer.Option(..., "--out", help="A new folder for the fine-tuned model (never overwritten)."),
    epochs: int = typer.Option(1, "--epochs", min=1),
    lr: float = typer.Option(2e-5, "--lr", min=0.0, help="Peak learning rate (linear warm-up, cosine decay)."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimiser steps."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Batches per optimiser step."),
    max_length: int = typer.Option(512, "--max-length", min=8, help="Cut longer examples to this many tokens."),
    precision: Precision = typer.Option(Precision.auto, "--precision", help="auto: bf16 autocast where the CPU "
                                        "has bf16 instructions, else fp32."),
    prompt_field: str = typer.Option(None, "--prompt-field", help="The prompt column of the data file."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use only the first N examples."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data order and of torch."),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Full-parameter supervised fine-tuning on instruction data (loss on response tokens, chat template).

    Saves a normal Hugging Face folder (safetensors, tokenizer, chat template) with a model card and the
    training log, loadable by every other command.
    """
    from .. import __version__
    from .. import finetune as trainer
    from ..data.sets import load_prompt_set
    from ..models.loading import why_broken
    from ..models.resolve import load_model
    from ..outputs import check_new_folder, new_folder

    if not math.isfinite(lr) or lr <= 0:
        raise UserError(f"--lr must be a positive finite number, not {lr}")
    target = check_new_folder(out_dir, empty_ok=True)
    for folder in (path for path in model_paths(model) if path.is_dir()):
        if folder.resolve() == target.resolve() or folder.resolve() in target.resolve().parents:
            raise UserError(f"--out {target} is inside the model folder {folder}; write the fine-tune elsewhere")
    prompt_set = load_prompt_set(data, prompt_field).limit(limit)
    pairs = [(p.text, p.answer) for p in prompt_set.prompts if p.answer]
    if not pairs:
        raise UserError(f"{data} has no responses to train on (it needs an output/response/answer column)")
    loaded = load_model(model, load_options())
    settings = trainer.TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                                     max_steps=max_steps, max_length=max_length, precision=precision.value, seed=seed)
    torch_seed(seed)
    log = trainer.train(loaded.model, loaded.tokenizer, pairs, settings, description=f"fine-tuning {model}")
    broken = why_broken(loaded.model, loaded.tokenizer)
    if broken:
        raise UserError(f"training diverged after {log['steps']} optimiser step(s) ({broken}); lower --lr "
                        "(nothing was saved)")
    card = {"name": target.name, "version": __version__, "base": model, "base_fingerprint": loaded.fingerprint,
            "purpose": "An ordinary full-parameter supervised fine-tune (`ssah-audit finetune`).",
            "data": [{"name": prompt_set.name, "examples": len(pairs), "note": prompt_set.source}],
            "settings": {k: v for k, v in vars(settings).items()}, "log": log}
    with new_folder(target, empty_ok=True) as tmp:
        trainer.save(loaded.model, loaded.tokenizer, tmp, card)
    out.print(f"saved {target} ({log['steps']} steps, final loss {log['final_loss']:.4f}, {log['seconds']} s)",
              highlight=False)


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
