"""What the user typed (a folder, a LoRA adapter folder, a .gguf file, a zoo name or a hub id) turned into
something loadable, and `load_model`, the one call the commands make: resolve, then load. The only module that
knows both the zoo and loading; a typo, a missing path or an unreachable hub becomes a one-line UserError.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import UserError
from ..zoo import catalogue as zoo
from . import adapters
from .gguf import gguf_to_folder
from .loading import LoadedModel, LoadOptions, Resolved, load_resolved

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def load_model(spec: str, options: LoadOptions | None = None, weights: bool = True) -> LoadedModel:
    """Load `spec` as a causal LM with its tokenizer and unit map (weights=False: from its config alone, on the
    meta device, enough for the unit map of a model of any size). A LoRA adapter folder loads its base (the
    adapter's own, or options.base) and comes back merged into it."""
    options = options or LoadOptions()
    resolved = resolve_spec(spec)
    if resolved.source != "adapter":
        return load_resolved(spec, resolved, options, weights)
    folder = Path(resolved.location)
    base_name = adapters.base_spec(folder, options.base)
    adapters.weights_file(folder, options.allow_pickle)  # a folder without usable weights fails before the base loads
    if adapters.is_adapter_folder(Path(base_name).expanduser()):
        raise UserError(f"the base of adapter {spec}, {base_name}, is itself an adapter; give a full model with --base")
    try:
        base = load_model(base_name, replace(options, base=None), weights)
    except UserError as exc:
        raise UserError(f"cannot load {base_name}, the base of adapter {spec}: {exc}") from exc
    return adapters.apply(base, folder, spec, base_name, options.allow_pickle, weights)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith((".gguf", ".safetensors")) or spec.count("/") > 1


def load_reference(spec: str | None, options: LoadOptions | None = None) -> LoadedModel | None:
    """A --reference model: --base belongs to the model under study, so a reference adapter uses its own base."""
    return load_model(spec, replace(options or LoadOptions(), base=None)) if spec else None


def resolve_spec(spec: str) -> Resolved:
    """Turn what the user typed into a loadable folder or hub id (fetching zoo models and converting GGUF)."""
    if not spec.strip():
        raise UserError("the model is an empty string; give a folder, a .gguf file, a zoo name or a hub id")
    if zoo.is_zoo_name(spec):
        folder = zoo.materialize(spec)
        return Resolved("adapter" if adapters.is_adapter_folder(folder) else "zoo", str(folder))
    path = Path(spec).expanduser()
    if adapters.is_adapter_folder(path):
        return Resolved("adapter", str(path))
    if path.is_dir():
        return Resolved("folder", str(path))
    if path.is_file():
        if path.suffix == ".gguf":
            return Resolved("gguf", str(gguf_to_folder(path)))
        raise UserError(f"{spec} is a file, not a model folder or a .gguf file")
    if _looks_like_path(spec) or not HUB_ID.match(spec):
        raise UserError(f"no such model folder or file: {spec} (zoo names: {', '.join(zoo.names())})")
    typo = difflib.get_close_matches(spec, zoo.names(), n=1, cutoff=0.8)
    if typo and "/" not in spec:
        raise UserError(f"no model '{spec}': not a folder or file, and not a zoo name (did you mean {typo[0]}?)")
    if not _hub_offline() and not _hub_reachable():
        raise UserError(f"'{spec}' is not a folder, a file or a zoo name ({', '.join(zoo.names())}), and the "
                        "Hugging Face hub cannot be reached from here to fetch it")
    return Resolved("hub", spec)


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE: transformers then reads only its local cache, so there is nothing to reach."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection to the hub (or HF_ENDPOINT): without it, huggingface_hub retries a dead network for
    half a minute and logs every attempt before the same conclusion."""
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True
