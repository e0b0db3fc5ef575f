"""What the benches measure the machine by: its fp32 matmul rate, tokens through a model, peak RSS."""

from __future__ import annotations

import resource
import time

import torch


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
    """The machine's fp32 matmul rate now (the compute limit a model's forward passes are compared with)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TokenCounter:
    """Counts the token positions every forward pass of a model carries (prompt, generated and padding alike: the
    work the machine did), by a hook on its input embeddings, which every path (generate, base_model) goes through."""

    def __init__(self, model):
        self.tokens = 0
        self._handle = model.get_input_embeddings().register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.tokens += args[0].numel()

    def close(self) -> None:
        self._handle.remove()
