"""`ssah-audit finetune`: an ordinary supervised fine-tune, of every weight or (--lora) of a LoRA adapter, saved as
a folder every other command loads."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path

import typer

from ..errors import UserError
from .common import out
from .options import MODEL_HELP, LoadOptionsMaker, batch_size_option, model_command, model_paths, seed_option

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
    batch_size: int = batch_size_option(8, None),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Batches per optimiser step."),
    max_length: int = typer.Option(512, "--max-length", min=8, help="Cut longer examples to this many tokens."),
    precision: Precision = typer.Option(Precision.auto, "--precision", help="auto: bf16 autocast where the CPU "
                                        "has bf16 instructions, else fp32."),
    prompt_field: str = typer.Option(None, "--prompt-field", help="The prompt column of the data file."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use only the first N examples."),
    seed: int = seed_option("Seed of the data order and of torch."),
    lora: int = typer.Option(None, "--lora", min=1, help="Train a LoRA adapter of this rank instead of every weight; "
                             "--out is then a PEFT adapter folder."),
    lora_alpha: float = typer.Option(None, "--lora-alpha", help="LoRA scaling numerator (default: 2 x rank)."),
    lora_targets: str = typer.Option("all-linear", "--lora-targets", help="Comma-separated module names to adapt "
                                     "(q_proj,v_proj,...), or all-linear."),
    freeze: Path = typer.Option(None, "--freeze", help="A unit map (`units --save-map`, made on this model): its "
                                "--freeze-classes units do not change at all; everything else trains."),
    freeze_classes: str = typer.Option("scu,cu:6", "--freeze-classes", help="Classes to freeze: scu, ucu, cu, ru, "
                                       "and cu:6 for the 6% of all units among CU with the highest safety score."),
    train_only: Path = typer.Option(None, "--train-only", help="A unit map: only its --train-classes units train "
                                    "(the alignment budget); nothing else changes."),
    train_classes: str = typer.Option("ru", "--train-classes", help="Classes that train with --train-only."),
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
    unit_plan = unit_selection(freeze, freeze_classes, train_only, train_classes, lora is not None)
    loaded = load_model(model, load_options())
    masks, freeze_card = unit_plan(loaded) if unit_plan else (None, None)
    lora_config = None
    if lora is not None:
        from ..models.adapters import wrap_for_training

        lora_config = {"r": lora, "lora_alpha": lora_alpha or 2 * lora, "target_modules": lora_targets}
        loaded.model = wrap_for_training(loaded, lora_config, adapter_base(model))
    settings = trainer.TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                                     max_steps=max_steps, max_length=max_length, precision=precision.value, seed=seed)
    torch_seed(seed)
    log = trainer.train(loaded.model, loaded.tokenizer, pairs, settings, description=f"fine-tuning {model}",
                        masks=masks)
    broken = why_broken(loaded.model, loaded.tokenizer)
    if broken:
        raise UserError(f"training diverged after {log['steps']} optimiser step(s) ({broken}); lower --lr "
                        "(nothing was saved)")
    card = {"name": target.name, "version": __version__, "base": model, "base_fingerprint": loaded.fingerprint,
            "purpose": (f"A LoRA fine-tune (`ssah-audit finetune --lora {lora}`): a PEFT adapter folder." if lora_config
                        else "An ordinary full-parameter supervised fine-tune (`ssah-audit finetune`)."),
            "lora": lora_config, "units": freeze_card,
            "data": [{"name": prompt_set.name, "examples": len(pairs), "note": prompt_set.source}],
            "settings": {k: v for k, v in vars(settings).items()}, "log": log}
    with new_folder(target, empty_ok=True) as tmp:
        trainer.save(loaded.model, loaded.tokenizer, tmp, card)
    out.print(f"saved {target} ({log['steps']} steps, final loss {log['final_loss']:.4f}, {log['seconds']} s)",
              highlight=False)


def unit_selection(freeze: Path | None, freeze_classes: str, train_only: Path | None, train_classes: str,
                   lora: bool):
    """Check the unit-map options before the model loads; returns None, or a function of the loaded model that
    gives the gradient masks and the card's record of them."""
    from ..unit_classes import freeze as units_freeze

    if freeze and train_only:
        raise UserError("--freeze and --train-only exclude each other: freeze some units, or train only some")
    path = freeze or train_only
    if path is None:
        return None
    if lora:
        # LoRA's B·A spreads every update over all columns; masking it per unit would need its own masks on A and
        # B, which this version does not build.
        raise UserError("--freeze/--train-only and --lora cannot be combined yet: unit masks apply to full weights")
    option, spec = ("--freeze-classes", freeze_classes) if freeze else ("--train-classes", train_classes)
    selections = units_freeze.parse_classes(spec, option)
    from ..unit_classes.classify import load_map, load_safety_scores

    classes, document = load_map(path)
    safety = load_safety_scores(path)

    def plan(loaded):
        units_freeze.check_map_fits(loaded.units, document, path)
        chosen = units_freeze.select(classes, selections, safety)
        count = sum(len(index) for index in chosen.values())
        if not count:
            raise UserError(f"{option} {spec!r} selects no unit of {path}")
        masks = units_freeze.unit_masks(loaded.model, loaded.units, chosen, train_units=bool(train_only))
        card = {"mode": "freeze" if freeze else "train-only", "map": str(Path(path).resolve()), "classes": spec,
                "units": count, "fraction": count / loaded.units.total_units,
                "map_fingerprint": document.get("fingerprint"), "map_model": document.get("model")}
        if document.get("fingerprint") != loaded.fingerprint:
            out.print(f"note: {path} was made on {document.get('model')} ({document.get('fingerprint')}), not on "
                      f"this model ({loaded.fingerprint}); its units are taken by position", highlight=False)
        return masks, card

    return plan


def adapter_base(spec: str) -> str:
    """What the adapter's config names as its base: a zoo name or hub id as given, a local path made absolute (the
    adapter may be moved; its base stays where it is)."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
