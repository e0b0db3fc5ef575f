"""The documentation's examples are tests: every ```python block of docs/python-api.md and docs/extending.md runs,
in order, in one namespace per page, in a fresh folder, on the model organisms. An example that no longer works,
or whose assertions no longer hold, fails here. What a page registers is taken back afterwards."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def examples(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


@pytest.fixture
def registries(monkeypatch):
    """Each registry as it was: the docs register components of their own."""
    from ssah_audit import components

    for registry in (components.JUDGES, components.UNIT_SCORES, components.PROBES, components.PROMPT_SETS,
                     components.GATE_CHECKS):
        monkeypatch.setattr(registry, "_items", dict(registry._items))


@pytest.mark.parametrize("page", ["python-api.md", "extending.md"])
def test_the_examples_of_the_docs_run(page, tmp_path, monkeypatch, registries):
    from ssah_audit import reference_cache

    blocks = examples(page)
    assert len(blocks) >= 4, f"{page} lost its examples"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reference_cache, "cache_root", lambda: tmp_path / "references")
    namespace: dict = {"__name__": f"docs_{page.replace('-', '_').removesuffix('.md')}"}
    for index, block in enumerate(blocks):
        code = compile(block, f"{DOCS / page} (example {index + 1})", "exec")
        exec(code, namespace)  # noqa: S102 - the docs' own examples, run as written


def test_the_api_names_what_the_docs_use():
    """Every name the docs call on ssah_audit is exported, and `import ssah_audit` itself loads no model code."""
    import subprocess
    import sys

    used = set()
    for page in ("python-api.md", "extending.md"):
        used |= set(re.findall(r"ssah_audit\.([a-z_]+)\(", (DOCS / page).read_text(encoding="utf-8")))
        used |= {name.strip() for line in re.findall(r"^from ssah_audit import (.+)$",
                                                      (DOCS / page).read_text(encoding="utf-8"), re.M)
                 for name in line.split(",")}
    import ssah_audit

    assert used and all(hasattr(ssah_audit, name) for name in used), sorted(used - set(dir(ssah_audit)))
    loaded = subprocess.run([sys.executable, "-c", "import sys, ssah_audit; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
