"""Loading smollm2-135m-instruct: GGUF de-quantisation vs the cached safetensors folder vs config-only.

Prints wall times, the speed-up the cache buys, and peak resident memory. Run: .venv/bin/python bench/loading.py
"""

from __future__ import annotations

import os
import resource
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.2f} s")
    return result, seconds


def main() -> None:
    from transformers.utils import logging

    from ssah_audit.models.resolve import load_model
    from ssah_audit.zoo import smollm2_gguf

    logging.disable_progress_bar()
    gguf = smollm2_gguf.fetch_smollm2_gguf()  # uses the user's cache; downloads once
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["SSAH_AUDIT_CACHE"] = scratch  # a cold cache: the GGUF is de-quantised again
        _, cold = timed("load .gguf, cold cache (de-quantise + save)", lambda: load_model(str(gguf)))
        _, warm = timed("load .gguf, warm cache (safetensors folder)", lambda: load_model(str(gguf)))
        _, meta = timed("inspect (config only, meta device)", lambda: load_model(str(gguf), weights=False))
    print(f"cache speed-up: {cold / warm:.0f}x; config-only vs full load: {warm / meta:.1f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
