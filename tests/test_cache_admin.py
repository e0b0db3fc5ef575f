"""`ssah-audit cache`: superseded builds and abandoned staging folders go; whatever this version reads stays."""

from __future__ import annotations

import json
import os
import time

import pytest

from ssah_audit import cache_admin
from ssah_audit.models import zoo


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache with one current build, an older recipe's build, two staging folders and an audit reference."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(root))

    def folder(path, size=1000):
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"x" * size)
        (path / ".complete").write_text("ok\n")
        return path

    current = folder(zoo.folder("smollm2-135m-safe"))
    old = folder(root / "zoo" / "smollm2-135m-safe-0123456789abcdef", size=5000)
    abandoned = folder(root / "organisms" / ".organism-aligned-0123456789abcdef.tmp1")
    long_ago = time.time() - cache_admin.STAGING_GRACE_SECONDS - 60
    for path in (abandoned, *abandoned.iterdir()):
        os.utime(path, (long_ago, long_ago))
    building = folder(root / "organisms" / ".organism-aligned-fedcba9876543210.tmp2")
    reference = folder(root / "audit-references" / "0123456789abcdef")
    return {"current": current, "old": old, "abandoned": abandoned, "building": building, "reference": reference}


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
