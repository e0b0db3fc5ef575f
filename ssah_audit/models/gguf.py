"""GGUF files (quantised llama.cpp checkpoints) de-quantised once into a cached safetensors folder."""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import struct
from pathlib import Path

import torch

from ..cache import cache_root, cached_folder, sha256_file
from ..errors import UserError
from .loading import first_line

VALUE_WIDTHS = {0: 1, 1: 1, 7: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 10: 8, 11: 8, 12: 8}  # the fixed-size metadata types
STRING, ARRAY, UINT32 = 8, 9, 4
MAX_DIMS = 8  # ggml has 4


def gguf_to_folder(gguf_path: Path) -> Path:
    """De-quantise a GGUF file once into a cached safetensors folder (loads then take about a second)."""
    check_gguf(gguf_path)
    digest = sha256_file(gguf_path)
    target = cache_root() / "gguf" / digest[:16]

    def convert(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
        except (ValueError, OSError, KeyError, struct.error) as exc:
            raise UserError(f"cannot load {gguf_path} as a GGUF causal LM: {first_line(exc)}") from exc
        # The weights are already de-quantised floats; drop the GGUF marker so save_pretrained accepts them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "ssah_source.json").write_text(json.dumps({"gguf": gguf_path.name, "sha256": digest}))

    return cached_folder(target, convert)


class _Cut(Exception):
    """The file ends before something its header declares."""


class _Walk:
    """A cursor over the file that checks every declared length against the bytes left before it moves."""

    def __init__(self, blob):
        self.blob, self.pos = blob, 0

    def need(self, size: int, what: str) -> None:
        left = len(self.blob) - self.pos
        if size > left:
            raise _Cut(f"{what} at byte {self.pos:,} needs {size:,} bytes, but {left:,} are left")

    def skip(self, size: int, what: str) -> int:
        self.need(size, what)
        self.pos += size
        return self.pos - size

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack_from(fmt, self.blob, self.skip(struct.calcsize(fmt), what))

    def string(self, what: str) -> str:
        (size,) = self.unpack("<Q", f"the length of {what}")
        start = self.skip(size, what)
        return bytes(self.blob[start:start + min(size, 64)]).decode("utf-8", "replace")  # never the declared size

    def value(self, kind: int, what: str) -> None:
        if kind in VALUE_WIDTHS:
            self.skip(VALUE_WIDTHS[kind], what)
        elif kind == STRING:
            self.string(what)
        elif kind == ARRAY:
            item, count = self.unpack("<IQ", what)
            if item in VALUE_WIDTHS:
                self.skip(count * VALUE_WIDTHS[item], what)
            elif item == STRING:
                self.need(8 * count, what)  # each string needs its 8-byte length: fail before a long loop
                for _ in range(count):
                    self.string(what)
            else:
                raise ValueError(f"{what} is an array of metadata type {item}, which GGUF readers do not read")
        else:
            raise ValueError(f"{what} has the unknown metadata type {kind}")


def check_gguf(path: Path) -> None:
    """Walk a GGUF file's header, metadata and tensor table, and check that its tensor data is all there, before
    anything else reads it: transformers' reader meets a file cut short with a bare struct.error (exit 3), and
    takes a declared length on trust. Nothing here is allocated from a declared length."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle, (mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size
                                          else contextlib.nullcontext(b"")) as blob:
            if bytes(blob[:4]) != b"GGUF"[:size]:
                raise UserError(f"{path} is not a GGUF file: it does not begin with the bytes GGUF")
            _walk(_Walk(blob), path)
    except _Cut as exc:
        raise UserError(f"{path} is not a complete GGUF file: {exc}") from None
    except ValueError as exc:
        raise UserError(f"{path} is not a valid GGUF file: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {first_line(exc)}") from exc


def _walk(walk: _Walk, path: Path) -> None:
    from gguf.constants import GGML_QUANT_SIZES

    walk.skip(4, "the magic bytes")
    version, tensors, keys = walk.unpack("<IQQ", "the header")
    if version not in (2, 3):
        raise UserError(f"{path} is GGUF version {version}; only versions 2 and 3 are read")
    alignment = 32
    for index in range(keys):
        key = walk.string(f"metadata key {index}")
        (kind,) = walk.unpack("<I", f"the type of metadata {key}")
        if key == "general.alignment" and kind == UINT32:
            (alignment,) = walk.unpack("<I", key)
        else:
            walk.value(kind, f"metadata {key}")
    ends = []
    for index in range(tensors):
        name = walk.string(f"the name of tensor {index}")
        (dims,) = walk.unpack("<I", f"the rank of tensor {name}")
        if dims > MAX_DIMS:
            raise ValueError(f"tensor {name} has {dims:,} dimensions")
        shape = walk.unpack(f"<{dims}Q", f"the shape of tensor {name}")
        kind, offset = walk.unpack("<IQ", f"the type of tensor {name}")
        block, block_bytes = GGML_QUANT_SIZES.get(kind, (1, 0))  # a type not known here: transformers says so
        ends.append(offset + math.prod(shape) // block * block_bytes)
    if alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"its alignment {alignment} is not a power of two")
    if ends:
        walk.pos = -(-walk.pos // alignment) * alignment  # the data begins at the next multiple of the alignment
        walk.skip(max(ends), "the tensor data")
