"""`ssah-audit cache`: superseded builds and abandoned staging folders go; whatever this version reads stays."""

from __future__ import annotations

import json
import os
import time

import pytest

from ssah_audit import cache_admin
from ssah_audit.zoo import catalogue as zoo


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache with one current build, an older recipe's build, two staging folders and an audit reference."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(root))

    def folder(path, size=1000):
        import torch
        from safetensors.torch import save_file

        path.mkdir(parents=True)
        save_file({"w": torch.zeros(size // 4)}, str(path / "model.safetensors"))
        (path / ".complete").write_text("ok\n")
        return path

    current = folder(zoo.folder("smollm2-135m-safe"))
    old = folder(root / "zoo" / "smollm2-135m-safe-0123456789abcdef", size=5000)
    abandoned = folder(root / "organisms" / ".organism-aligned-0123456789abcdef.tmp1")
    long_ago = time.time() - cache_admin.STAGING_GRACE_SECONDS - 60
    for path in (abandoned, *abandoned.iterdir()):
        os.utime(path, (long_ago, long_ago))
    building = folder(root / "organisms" / ".organism-aligned-fedcba9876543210.tmp2")
    reference = reference_entry(root / "audit-references" / "0123456789abcdef")
    return {"current": current, "old": old, "abandoned": abandoned, "building": building, "reference": reference}


def reference_entry(path):
    """A whole audit reference block, as the audit writes one (the example report's reference measurements)."""
    from pathlib import Path

    import torch

    from ssah_audit import reference_cache

    results = json.loads((Path(__file__).parents[1] / "reports" / "example" / "results.json").read_text())
    tensors = {"classes": {"layers.0.mlp.down_proj": torch.zeros(4, dtype=torch.long)},
               "directions": torch.zeros(3, 8), "safety": {"layers.0.mlp.down_proj": torch.zeros(4)},
               "codes": ["SCU", "UCU", "CU", "RU"], "benign_final": torch.zeros(2, 8)}
    calibration = {"model": "ref", "source": "the reference's own refusals (ref)", "pairs": [["How?", "I can't."]]}
    reference_cache.save(path, results["reference"], tensors, calibration)
    assert reference_cache.problem(path) is None
    return path


def test_cache_list_says_what_is_still_read(cli, cache):
    code, stdout, stderr = cli("cache", "list", "--json")
    assert code == 0, stderr
    status = {row["path"]: row["status"] for row in json.loads(stdout)["entries"]}
    assert status == {str(cache["current"]): "in use", str(cache["old"]): "superseded",
                      str(cache["abandoned"]): "abandoned", str(cache["building"]): "building",
                      str(cache["reference"]): "kept"}


def test_prune_dry_run_removes_nothing(cli, cache):
    code, stdout, stderr = cli("cache", "prune", "--dry-run", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["dry_run"] and {row["path"] for row in doc["removed"]} == {str(cache["old"]), str(cache["abandoned"])}
    assert all(path.exists() for path in cache.values())


def test_prune_removes_only_superseded_and_abandoned(cli, cache):
    code, stdout, stderr = cli("cache", "prune")
    assert code == 0, stderr
    assert "freed" in stdout and "(2 entries)" in stdout
    assert not cache["old"].exists() and not cache["abandoned"].exists()
    assert cache["current"].exists() and cache["building"].exists() and cache["reference"].exists()
    assert zoo.cached_path("smollm2-135m-safe") == cache["current"], "the current build must still load"


def one_line(code: int, stderr: str, expected: str) -> None:
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert expected in stderr


def test_prune_refuses_a_folder_that_is_not_a_cache_and_removes_nothing(cli, tmp_path, monkeypatch):
    """The issue's reproduction: SSAH_AUDIT_CACHE pointed at a home folder."""
    home = tmp_path / "h"
    (home / "projects" / "src").mkdir(parents=True)
    (home / "projects" / "src" / "main.py").write_text("x\n")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("secret\n")
    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(home))
    for command in (["cache", "prune"], ["cache", "list"]):
        code, _, stderr = cli(*command)
        one_line(code, stderr, "is not an ssah-audit cache")
    assert (home / "projects" / "src" / "main.py").read_text() == "x\n"
    assert (home / ".ssh" / "id_rsa").read_text() == "secret\n"
    assert not (home / ".ssah-audit-cache").exists()


def test_an_older_cache_without_the_marker_is_recognised_and_marked(cli, tmp_path, monkeypatch):
    root = tmp_path / "old-cache"
    old = root / "organisms" / "organism-aligned-0123456789abcdef"
    old.mkdir(parents=True)
    (old / ".complete").write_text("ok\n")
    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(root))
    code, stdout, stderr = cli("cache", "prune")
    assert code == 0, stderr
    assert not old.exists() and (root / ".ssah-audit-cache").is_file()


def test_prune_leaves_symlinks_and_names_that_are_not_ours(cli, cache, tmp_path):
    root = cache["current"].parents[1]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work\n")
    links = [root / "zoo" / "smollm2-135m-safe-fedcba9876543210", root / "organisms" / ".organism-aligned-x.tmp"]
    for link in links:
        link.symlink_to(precious, target_is_directory=True)
    (root / "zoo" / "dangling-0123456789abcdef").symlink_to(tmp_path / "nowhere")
    foreign = [root / "zoo" / "my-notes", root / "projects" / "src"]
    for folder in foreign:
        folder.mkdir(parents=True)
        (folder / "main.py").write_text("x\n")
    code, stdout, stderr = cli("cache", "prune")
    assert code == 0, stderr
    assert "(2 entries)" in stdout and not cache["old"].exists()
    assert all(link.is_symlink() for link in links) and (precious / "thesis.txt").is_file()
    assert all((folder / "main.py").is_file() for folder in foreign)
