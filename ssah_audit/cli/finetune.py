"""`ssah-audit finetune`: an ordinary supervised fine-tune, of every weight or (--lora) of a LoRA adapter, saved as
a folder every other command loads."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path

import typer

from ..errors import UserError
from .common import out
from .options import MODEL_HELP, LoadOptionsMaker, model_command, model_paths

Precision = StrEnum("Precision", ["auto", "fp32", "bf16"])  # finetune.use_bf16 decides what auto means


@model_command
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
    lora: int = typer.Option(None, "--lora", min=1, help="Train a LoRA adapter of this rank instead of every weight; "
                             "--out is then a PEFT adapter folder."),
    lora_alpha: float = typer.Option(None, "--lora-alpha", help="LoRA scaling numerator (default: 2 x rank)."),
    lora_targets: str = typer.Option("all-linear", "--lora-targets", help="Comma-separated module names to adapt "
                                     "(q_proj,v_proj,...), or all-linear."),
    *,
    load_options: LoadOptionsMaker,
) -> None:
    """Supervised fine-tuning on instruction data (loss on response tokens, chat template): every weight, or a
    LoRA adapter with --lora.

    Saves a normal Hugging Face folder (safetensors, tokenizer, chat template), or a PEFT adapter folder, with a
    model card and the training log, loadable by every other command.
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
    if lora is None and (lora_alpha is not None or lora_targets != "all-linear"):
        raise UserError("--lora-alpha and --lora-targets shape a LoRA adapter; give its rank with --lora")
    loaded = load_model(model, load_options())
    lora_config = None
    if lora is not None:
        from ..models.adapters import wrap_for_training

        lora_config = {"r": lora, "lora_alpha": lora_alpha or 2 * lora, "target_modules": lora_targets}
        loaded.model = wrap_for_training(loaded, lora_config, adapter_base(model))
    settings = trainer.TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                                     max_steps=max_steps, max_length=max_length, precision=precision.value, seed=seed)
    torch_seed(seed)
    log = trainer.train(loaded.model, loaded.tokenizer, pairs, settings, description=f"fine-tuning {model}")
    broken = why_broken(loaded.model, loaded.tokenizer)
    if broken:
        raise UserError(f"training diverged after {log['steps']} optimiser step(s) ({broken}); lower --lr "
                        "(nothing was saved)")
    card = {"name": target.name, "version": __version__, "base": model, "base_fingerprint": loaded.fingerprint,
            "purpose": (f"A LoRA fine-tune (`ssah-audit finetune --lora {lora}`): a PEFT adapter folder." if lora_config
                        else "An ordinary full-parameter supervised fine-tune (`ssah-audit finetune`)."),
            "lora": lora_config,
            "data": [{"name": prompt_set.name, "examples": len(pairs), "note": prompt_set.source}],
            "settings": {k: v for k, v in vars(settings).items()}, "log": log}
    with new_folder(target, empty_ok=True) as tmp:
        trainer.save(loaded.model, loaded.tokenizer, tmp, card)
    out.print(f"saved {target} ({log['steps']} steps, final loss {log['final_loss']:.4f}, {log['seconds']} s)",
              highlight=False)


def adapter_base(spec: str) -> str:
    """What the adapter's config names as its base: a zoo name or hub id as given, a local path made absolute (the
    adapter may be moved; its base stays where it is)."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
