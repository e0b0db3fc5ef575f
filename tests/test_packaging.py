"""A non-editable install carries the templates and the built-in data (what `pip install .` users get)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_templates_and_data_and_renders_from_them(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("ssah_audit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for template in (ROOT / "templates").glob("*.j2"):
        assert f"ssah_audit/templates/{template.name}" in names, template.name
    for module in (ROOT / "ssah_audit").rglob("*.py"):  # a subpackage missing from pyproject would be lost
        assert module.relative_to(ROOT).as_posix() in names, module
    for data in [*(ROOT / "ssah_audit" / "data" / "builtin").glob("*.json*"),
                 *(ROOT / "ssah_audit" / "data" / "builtin").glob("*.safetensors")]:
        assert f"ssah_audit/data/builtin/{data.name}" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    probe = ("from ssah_audit.reporting.templates import environment, template_folder; "
             "import ssah_audit.data.sets as s;"
             "environment().get_template('inspect.md.j2'); print(str(template_folder()).replace(' ', ''));"
             "print(len(s.builtin_prompts('harmful')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                            capture_output=True, text=True, check=True)
    folder, count = result.stdout.split()
    assert str(target) in folder and int(count) >= 150
