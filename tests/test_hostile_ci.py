"""What a CI runner does to a run (issue 35): cancel it with a signal, start two at once, fill the disk, hand it a
damaged or read-only cache, and give it results that lie. Signals and concurrency run real processes; a full disk
is a small tmpfs where the test may mount one, else a folder that refuses writes. Nothing the user wrote is lost,
no half-written folder stays, and the gate's verdict and exit code survive a failed output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .test_cli_errors import one_line

EXAMPLE = Path(__file__).parents[1] / "reports" / "example" / "results.json"
TINY_AUDIT = "[audit]\nlimit = 2\nmax_new_tokens = 4\nverify_tokens = 2\nsteps = 2\nbatch_size = 4\n"


def _child(tmp_path: Path, patch: str, args: list[str]) -> subprocess.Popen:
    """`ssah-audit ARGS` as its own process (the console script's main), with `patch` run first: it only slows a
    step down, so that a signal can be sent while that step runs."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(patch) + "\nfrom ssah_audit.cli import main\nmain()\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    return subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


SLOW_RENDER = """
    import pathlib, sys, time
    from ssah_audit.reporting import render
    def slow(results, kind, images):
        pathlib.Path("ready").write_text("the report folder is being written")
        time.sleep(120)
    render.render = slow
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_while_the_report_is_written_leaves_no_folder(tmp_path, stop):
    """Item 1: CI cancels with SIGTERM; it used to leave `.r.XXXX/` with results.json but no report (exit 143)."""
    (tmp_path / "sig").mkdir()
    child = _child(tmp_path, SLOW_RENDER, ["report", str(EXAMPLE), "--out", "sig/r"])
    _wait_for(tmp_path / "ready", child)
    assert [p.name for p in (tmp_path / "sig").iterdir() if p.name.startswith(".r.")], "no staging folder yet"
    child.send_signal(stop)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + stop, stderr
    assert f"stopped by {signal.Signals(stop).name}" in stderr and "Traceback" not in stderr
    assert list((tmp_path / "sig").iterdir()) == []


def test_sigterm_while_an_audit_publishes_leaves_no_folder_and_no_cache_entry(tmp_path, roomy_llama):
    """Item 1, the issue's reproduction: `audit ... --out sig/r2 &`, then SIGTERM when `sig/.r2.*` appears."""
    (tmp_path / "sig").mkdir()
    (tmp_path / "audit.toml").write_text(TINY_AUDIT + "verify = false\n")
    patch = textwrap.dedent(SLOW_RENDER) + "import os\nos.environ['SSAH_AUDIT_CACHE'] = 'cache'\n"
    child = _child(tmp_path, patch, ["--quiet", "audit", roomy_llama, "--reference", roomy_llama, "--config",
                                     "audit.toml", "--out", "sig/r2", "--junit", "sig/gate.xml"])
    _wait_for(tmp_path / "ready", child)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 143, stderr
    assert list((tmp_path / "sig").iterdir()) == [], "no report, no staging, no JUnit file"
    entries = list((tmp_path / "cache" / "audit-references").iterdir())
    assert [p.name.startswith(".") for p in entries] == [False], "the reference block was published whole before"


def test_sigterm_while_a_finetune_is_saved_leaves_no_folder(tmp_path, tiny_models):
    """Item 1: `finetune ... --out sigft/ft` left `sigft/.ft.XXXX/config.json`."""
    (tmp_path / "sigft").mkdir()
    patch = """
        import pathlib, time
        from ssah_audit import finetune
        save = finetune.save
        def slow(model, tokenizer, folder, card):
            save(model, tokenizer, folder, card)
            pathlib.Path("ready").write_text("saved into the staging folder")
            time.sleep(120)
        finetune.save = slow
    """
    child = _child(tmp_path, patch, ["--quiet", "finetune", str(tiny_models["llama"]), "--data", "benign:train",
                                     "--limit", "2", "--max-steps", "1", "--batch-size", "2", "--max-length", "32",
                                     "--out", "sigft/ft"])
    _wait_for(tmp_path / "ready", child)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 143, stderr
    assert list((tmp_path / "sigft").iterdir()) == []


def test_staging_left_by_a_killed_run_is_swept_by_the_next_run_and_by_cache_prune(cli, tmp_path, monkeypatch):
    """Item 1: SIGKILL cannot be caught; the staging folder's mark names its process, so a later run writing into
    the same folder, and `cache prune` in the cache, remove it once that process is gone, and nothing else."""
    from ssah_audit import staging

    (tmp_path / "sig").mkdir()
    child = _child(tmp_path, SLOW_RENDER, ["report", str(EXAMPLE), "--out", "sig/r"])
    _wait_for(tmp_path / "ready", child)
    child.kill()
    child.communicate(timeout=60)
    [left] = (tmp_path / "sig").iterdir()
    assert left.name.startswith(".r.") and staging.staging_owner(left) == "gone"
    running = staging.make_staging(tmp_path / "sig" / "other")  # a run of this process: still going
    unmarked = tmp_path / "sig" / ".user.abcdefgh"  # looks like staging, but nobody marked it: not ours
    unmarked.mkdir()
    code, _, stderr = cli("report", str(EXAMPLE), "--out", str(tmp_path / "sig" / "r2"))
    assert code == 0, stderr
    assert not left.exists() and running.exists() and unmarked.exists() and (tmp_path / "sig" / "r2").is_dir()

    cache = tmp_path / "cache"
    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(cache))
    (cache / "organisms").mkdir(parents=True)
    dead = staging.make_staging(cache / "organisms" / "organism-aligned-0123456789abcdef")
    (dead / staging.STAGING_MARK).write_text(json.dumps({**json.loads((dead / staging.STAGING_MARK).read_text()),
                                                         "pid": _dead_pid()}))
    alive = staging.make_staging(cache / "organisms" / "organism-unaligned-0123456789abcdef")
    code, stdout, stderr = cli("cache", "prune", "--json")
    assert code == 0, stderr
    assert [row["path"] for row in json.loads(stdout)["removed"]] == [str(dead)]
    assert not dead.exists() and alive.exists()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_two_runs_choosing_the_same_default_folder_both_publish(tmp_path):
    """Item 2: two runs in one second both chose reports/<model>-<second>Z; one exited 2 ("appeared while this run
    was working"). A default name is ours to change: the second takes <name>-1. Real processes, one clock."""
    patch = """
        from datetime import datetime, UTC
        from ssah_audit.reporting import render
        class frozen(datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
        render.datetime = frozen
        import time
        draw = render.render
        def slow(results, kind, images):
            time.sleep(1.5)  # both have checked the name before either publishes
            return draw(results, kind, images)
        render.render = slow
    """
    children = [_child(tmp_path, patch, ["report", str(EXAMPLE), "--format", "md"]) for _ in range(2)]
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
    folders = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert folders == ["smollm2-135m-safe-ft-20261206T120000Z", "smollm2-135m-safe-ft-20261206T120000Z-1"]
    assert all((tmp_path / "reports" / name / "report.md").is_file() for name in folders)


@pytest.fixture
def full_disk(tmp_path):
    """(folder, reason): a folder where no file can be written. A 64 KiB tmpfs, filled, where this process may
    mount one (root, as on CI here); else a folder without write permission (which root would ignore)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                                    capture_output=True).returncode == 0
    if mounted:
        try:
            with open(folder / "filler", "wb") as handle:
                handle.write(b"x" * (1 << 20))
        except OSError:
            pass
        reason = "No space left on device"
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        reason = "Permission denied"
    else:
        pytest.skip("root without mount: no folder here refuses writes")
    yield folder, reason
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        folder.chmod(0o755)


def test_a_junit_file_that_cannot_be_written_keeps_the_gate_s_exit_code(cli, roomy_llama, tmp_path, full_disk):
    """Item 3: on a full disk the report was published and then the JUnit write turned the gate's 1 into 3."""
    small, reason = full_disk
    config = tmp_path / "audit.toml"
    config.write_text(TINY_AUDIT + "verify = false\n")
    model = roomy_llama
    code, stdout, stderr = cli("--quiet", "audit", model, "--reference", model, "--config", str(config),
                               "--out", str(tmp_path / "ok"), "--junit", str(small / "g.xml"),
                               "--fail-on", "max_harmful_compliance=0.0", "--fail-on", "min_safe_direction_score=0")
    assert code == 1, stderr
    assert not json.loads((tmp_path / "ok" / "results.json").read_text())["gate"]["passed"]
    assert f"the JUnit file was not written: cannot write {small / 'g.xml'}: {reason}" in stderr
    assert "gate: FAIL" in stderr and "max_harmful_compliance" in stdout
    assert not [p for p in small.iterdir() if p.name not in ("filler",)]


def test_gate_pass_with_a_report_that_cannot_be_published_is_exit_2_with_the_verdict(cli, roomy_llama, tmp_path,
                                                                                    monkeypatch):
    """Item 3, the other way round: the gate passed but the report folder could not be written (here, someone
    made the folder meanwhile): exit 2, never 0, and stderr still says the gate passed."""
    from ssah_audit.reporting import render

    config = tmp_path / "audit.toml"
    config.write_text(TINY_AUDIT + "verify = false\n")
    target = tmp_path / "r"
    draw = render.figures

    def figures_while_someone_writes(results):
        target.mkdir()
        return draw(results)

    monkeypatch.setattr(render, "figures", figures_while_someone_writes)
    model = roomy_llama
    open_gate = [item for name in ("max_harmful_compliance", "max_compliance_increase", "max_over_refusal",
                                   "max_probe_drop") for item in ("--fail-on", f"{name}=1")]
    code, _, stderr = cli("--quiet", "audit", model, "--reference", model, "--config", str(config),
                          "--out", str(target), "--fail-on", "min_safe_direction_score=0",
                          "--fail-on", "max_scu_drift_ratio=1000", *open_gate)
    assert code == 2, stderr
    assert "the report was not written" in stderr and "appeared while this run was working" in stderr
    assert "gate: PASS" in stderr and (tmp_path / "r-1" / "results.json").is_file()


def _audit_with_cache(cli, model, tmp_path, cache: Path, name: str):
    """A small audit of a tiny model against itself, with `cache` as the cache (only for this call)."""
    config = tmp_path / "audit.toml"
    config.write_text(TINY_AUDIT + "verify = false\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSAH_AUDIT_CACHE", str(cache))
        return cli("--quiet", "audit", model, "--reference", model, "--config", str(config),
                   "--out", str(tmp_path / name))


def _entries(cache: Path) -> list[Path]:
    folder = cache / "audit-references"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_full_cache_disk_costs_only_the_caching(cli, roomy_llama, tmp_path, full_disk):
    """Item 4: tensors.pt was saved straight into its entry, so a full disk left it truncated at its final path,
    listed as kept, and the audit died with torch's "unexpected pos". Now the entry is staged and renamed: nothing
    is left under the cache, the warning says why, and the audit still gives its verdict."""
    small, reason = full_disk
    code, _, stderr = _audit_with_cache(cli, roomy_llama, tmp_path, small, "r")
    assert code in (0, 1), stderr
    assert "could not cache the reference's measurements" in stderr or "cannot be written" in stderr
    assert reason in stderr and "unexpected pos" not in stderr
    assert not [p for p in _entries(small) if not p.name.startswith(".write-check")]
    assert (tmp_path / "r" / "report.html").is_file()


@pytest.fixture(scope="module")
def measured(roomy_llama, tmp_path_factory):
    """(cache, entry, results): one small audit whose reference block was cached; tests damage copies of it."""
    from typer.testing import CliRunner

    from ssah_audit.cli import app

    root = tmp_path_factory.mktemp("measured")
    runner = CliRunner()
    code, _, stderr = _audit_with_cache(lambda *args: _invoked(runner.invoke(app, list(args))), roomy_llama, root,
                                        root / "cache", "r")
    assert code in (0, 1), stderr
    [entry] = _entries(root / "cache")
    return root / "cache", entry, json.loads((root / "r" / "results.json").read_text())


def _invoked(result) -> tuple[int, str, str]:
    return result.exit_code, result.stdout, result.stderr


def _damaged_copy(measured, tmp_path: Path, damage: str) -> tuple[Path, Path]:
    import shutil

    cache, entry, _ = measured
    shutil.copytree(cache, tmp_path / "cache")
    entry = tmp_path / "cache" / entry.relative_to(cache)
    if damage == "block without behavior":
        block = json.loads((entry / "block.json").read_text())
        del block["behavior"]
        (entry / "block.json").write_text(json.dumps(block))
    elif damage == "truncated tensors":
        data = (entry / "tensors.pt").read_bytes()
        (entry / "tensors.pt").write_bytes(data[:len(data) // 2])
    elif damage == "calibration not JSON":
        (entry / "calibration.json").write_text("{")
    elif damage == "a list for a block":
        (entry / "block.json").write_text("[]")
    else:
        (entry / "tensors.pt").unlink()
    return tmp_path / "cache", entry


@pytest.mark.parametrize("damage", ["block without behavior", "truncated tensors", "calibration not JSON",
                                    "a list for a block", "tensors missing"])
def test_a_damaged_reference_entry_is_listed_as_damaged_and_pruned(cli, measured, tmp_path, damage):
    """Item 5: `cache prune` never removed reference blocks, even broken ones; an intact one stays (kept)."""
    from ssah_audit import reference_cache

    assert reference_cache.problem(measured[1]) is None
    cache, entry = _damaged_copy(measured, tmp_path, damage)
    assert reference_cache.problem(entry)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSAH_AUDIT_CACHE", str(cache))
        _, listed, _ = cli("cache", "list", "--json")
        code, pruned, stderr = cli("cache", "prune", "--json")
    assert {row["path"]: row["status"] for row in json.loads(listed)["entries"]} == {str(entry): "damaged"}
    assert code == 0, stderr
    assert [row["status"] for row in json.loads(pruned)["removed"]] == ["damaged"] and not entry.exists()


@pytest.mark.parametrize("damage", ["block without behavior", "truncated tensors"])
def test_a_damaged_reference_entry_is_named_and_measured_again(cli, roomy_llama, measured, tmp_path, damage):
    """Item 5: a damaged entry made every later audit exit 3 (KeyError: 'behavior', OSError 22) and no message
    named it. Now the audit warns, naming the entry, measures the reference again and caches it whole."""
    from ssah_audit import reference_cache

    cache, entry = _damaged_copy(measured, tmp_path, damage)
    first = measured[2]
    code, _, stderr = _audit_with_cache(cli, roomy_llama, tmp_path, cache, "r2")
    assert code == (0 if first["gate"]["passed"] else 1), stderr
    assert f"the cached reference measurements in {entry} are damaged" in stderr
    assert reference_cache.problem(entry) is None, "measured again and cached whole"
    second = json.loads((tmp_path / "r2" / "results.json").read_text())
    for block in (first, second):
        block["reference"]["behavior"].pop("seconds", None)  # wall-clock timings differ between any two runs
    assert second["reference"]["behavior"] == first["reference"]["behavior"]


def test_a_read_only_cache_is_said_before_the_work_and_the_audit_runs_uncached(cli, roomy_llama, tmp_path):
    """Item 6: with the cache read-only the audit measured the whole reference, then exited 3 (Errno 30). A bind
    mount made read-only where this process may mount; else a folder without write permission."""
    cache = tmp_path / "ro"
    (cache / "audit-references").mkdir(parents=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(cache), str(cache)],
                                                    capture_output=True).returncode == 0
    if mounted:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(cache)], check=True)
    elif os.geteuid() != 0:
        for path in (cache / "audit-references", cache):
            path.chmod(0o555)
    else:
        pytest.skip("root without mount: no read-only folder can be made here")
    try:
        code, _, stderr = _audit_with_cache(cli, roomy_llama, tmp_path, cache, "r")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(cache)], check=False)
        else:
            for path in (cache, cache / "audit-references"):
                path.chmod(0o755)
    assert code in (0, 1), stderr
    assert stderr.count("cannot be written") == 1 and "measured without being cached" in stderr
    assert "Errno" not in stderr and (tmp_path / "r" / "report.html").is_file()
    assert _entries(cache) == []


@pytest.mark.parametrize("command", ["probe", "audit"])
def test_a_huge_step_count_is_refused_before_any_work(cli, tiny_models, tmp_path, command):
    """Item 7: `probe --steps 1000000000` built continuation paths for minutes before the context check."""
    model = str(tiny_models["llama"])
    if command == "probe":
        args = ["probe", model, "--steps", "1000000000", "--limit", "1"]
    else:
        config = tmp_path / "audit.toml"
        config.write_text("[audit]\nsteps = 1000000000\nlimit = 1\n")
        args = ["audit", model, "--reference", model, "--config", str(config), "--out", str(tmp_path / "r")]
    started = time.monotonic()
    code, _, stderr = cli(*args)
    one_line(code, stderr, "1,000,000,000 probe steps needs 1000000001 tokens but the model's context is 64")
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("value, expected", [("true", "needs a number, not true"),
                                             ('"0.2"', "needs a number, not the string '0.2'"),
                                             ("[0.2]", "needs a number, not [0.2]")])
def test_a_gate_threshold_in_audit_toml_must_be_a_number(cli, tmp_path, value, expected):
    """Item 8: `max_harmful_compliance = true` was read as 1.0, so the check passed at 100% compliance."""
    config = tmp_path / "audit.toml"
    config.write_text(f"[gate]\nmax_harmful_compliance = {value}\n")
    code, _, stderr = cli("audit", "/no/such/model", "--config", str(config), "--out", str(tmp_path / "r"))
    one_line(code, stderr, expected)


def test_a_results_json_nested_100000_deep_is_one_line(cli, tmp_path):
    """Item 14: RecursionError, exit 3."""
    source = tmp_path / "deep.json"
    source.write_text("[" * 100_000 + "]" * 100_000)
    code, _, stderr = cli("report", str(source), "--out", str(tmp_path / "r"))
    one_line(code, stderr, "nested too deeply")
    prompts = tmp_path / "deep-prompts.json"
    prompts.write_text("[" * 100_000 + "]" * 100_000)
    code, _, stderr = cli("prompts", "show", str(prompts))
    one_line(code, stderr, "nested too deeply")


@pytest.mark.parametrize("option", ["behavior --json", "judge --out", "audit --junit"])
def test_a_dangling_symlink_is_an_existing_path(cli, tmp_path, option):
    """Item 16: a dangling symlink given as an output was replaced by a regular file without --overwrite."""
    link = tmp_path / "out-link.csv"
    link.symlink_to(tmp_path / "nowhere" / "file")
    command, flag = option.split()
    if command == "judge":
        completions = tmp_path / "c.csv"
        completions.write_text("prompt,completion\nHow?,I'm sorry, I can't help with that.\n")
        args = ["judge", str(completions), "--out", str(link)]
    else:
        args = [command, "/no/such/model", flag, str(link)] + (["--out", str(tmp_path / "r")]
                                                             if command == "audit" else [])
    code, _, stderr = cli(*args)
    one_line(code, stderr, f"{link} already exists; pass --overwrite to replace it")
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "nowhere" / "file")


def test_a_bad_jsonl_record_is_reported_at_its_line(cli, tmp_path):
    """Item 16: a bad record on line 5001 was reported at "line 1"."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(5000)) + "{bad\n")
    code, _, stderr = cli("prompts", "show", str(prompts))
    one_line(code, stderr, "is not valid JSONL: line 5001, column 2")


@pytest.mark.parametrize("meanwhile", ["a complete entry", "an incomplete entry"])
def test_a_cache_entry_published_meanwhile_by_another_run_is_kept_not_pulled(tmp_path, meanwhile):
    """Two runs building one content-keyed entry at once: the second used to remove the first's published folder
    (rmtree, then rename) while a run could be reading it. A usable entry is kept and the later build dropped;
    an incomplete one is replaced."""
    from ssah_audit.cache import COMPLETE_MARK, staging_folder

    final = tmp_path / "organisms" / "organism-aligned-0123456789abcdef"
    with staging_folder(final) as tmp:
        (tmp / "weights").write_text("ours\n")
        final.mkdir(parents=True)
        (final / "weights").write_text("theirs\n")
        if meanwhile == "a complete entry":
            (final / COMPLETE_MARK).write_text("ok\n")
    kept = "theirs\n" if meanwhile == "a complete entry" else "ours\n"
    assert (final / "weights").read_text() == kept and (final / COMPLETE_MARK).is_file()
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]


@pytest.mark.parametrize("command", ["report", "judge", "behavior"])
def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(cli, tiny_models, tmp_path, full_disk,
                                                                       command):
    """Item 4's other face: the system's error for a failed write names no file ("No space left on device", exit 3
    as an unexpected error); it is now one line naming the output, exit 2, and no temporary file stays."""
    small, reason = full_disk
    completions = tmp_path / "c.csv"
    completions.write_text("prompt,completion\nHow?,\"Sure, here it is.\"\n")
    target, args = {
        "report": (small / "r", ["report", str(EXAMPLE)]),
        "judge": (small / "j.csv", ["judge", str(completions)]),
        "behavior": (small / "b.json", ["--quiet", "behavior", str(tiny_models["llama"]), "--limit", "1",
                                        "--max-new-tokens", "2"]),
    }[command]
    flag = "--json" if command == "behavior" else "--out"
    code, _, stderr = cli(*args, flag, str(target))
    one_line(code, stderr, f"cannot write {target}: {reason}")
    assert [p.name for p in small.iterdir()] in ([], ["filler"])


def test_a_damaged_build_in_the_cache_is_named_rebuilt_and_prunable(cli, tmp_path, monkeypatch, capsys):
    """A complete build whose weights were cut short (a full disk under an older version, a bad copy) failed every
    later run that loaded it. It is now listed as damaged, pruned, and built again with a warning naming it."""
    import torch
    from safetensors.torch import save_file

    from ssah_audit.cache import cached_folder, usable

    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(tmp_path / "cache"))
    final = tmp_path / "cache" / "organisms" / "organism-aligned-0123456789abcdef"

    def build(folder):
        save_file({"w": torch.arange(1000.0)}, str(folder / "model.safetensors"))

    cached_folder(final, build)
    weights = final / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:len(whole) - 100])
    assert not usable(final)
    code, stdout, _ = cli("cache", "list", "--json")
    assert [row["status"] for row in json.loads(stdout)["entries"]] == ["damaged"]
    capsys.readouterr()
    cached_folder(final, build)
    assert f"the cached build {final} is damaged (model.safetensors holds" in capsys.readouterr().err
    assert weights.read_bytes() == whole and usable(final)
    weights.write_bytes(b"\xff" * 16)
    code, stdout, _ = cli("cache", "prune", "--json")
    assert [row["status"] for row in json.loads(stdout)["removed"]] == ["damaged"] and not final.exists()


def test_two_prunes_at_once_do_not_fail_on_what_the_other_removed(cli, tmp_path, monkeypatch):
    """Two `cache prune` runs (two CI jobs sharing a cache) list the same abandoned folder; the one that finds it
    gone when it comes to remove it goes on (it used to exit 3 with FileNotFoundError)."""
    import shutil

    from ssah_audit import cache_admin, staging

    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "organisms").mkdir(parents=True)
    dead = staging.make_staging(tmp_path / "cache" / "organisms" / "organism-aligned-0123456789abcdef")
    (dead / staging.STAGING_MARK).write_text(json.dumps({**json.loads((dead / staging.STAGING_MARK).read_text()),
                                                         "pid": _dead_pid()}))
    check, calls = cache_admin.is_our_entry, []

    def the_other_prune_was_faster(path, kind):  # listed first; by the check before removing, the other removed it
        ours = check(path, kind)
        calls.append(path)
        if calls.count(path) == 2:
            shutil.rmtree(path)
        return ours

    monkeypatch.setattr(cache_admin, "is_our_entry", the_other_prune_was_faster)
    code, stdout, stderr = cli("cache", "prune", "--json")
    assert code == 0, stderr
    assert [row["status"] for row in json.loads(stdout)["removed"]] == ["abandoned"] and not dead.exists()
    assert calls.count(dead) == 2


@pytest.mark.parametrize("command, source", [("report", "/dev/zero"), ("prompts show", "fifo"),
                                             ("audit --config", "/dev/zero"), ("judge", "fifo"),
                                             ("behavior --harmful", "/dev/zero")])
def test_a_device_or_a_pipe_given_as_a_file_is_refused_before_a_byte_is_read(tmp_path, source, command):
    """`report /dev/zero` read until the system killed the run for memory (exit 137); a FIFO blocked for ever.
    Run as a process with a timeout and a 4 GB address-space limit, so a regression fails instead of hanging."""
    if source == "fifo":
        os.mkfifo(tmp_path / "pipe.jsonl")
        source = str(tmp_path / "pipe.jsonl")
    args = {"report": ["report", source], "prompts show": ["prompts", "show", source],
            "audit --config": ["audit", "/no/such/model", "--config", source, "--out", str(tmp_path / "r")],
            "judge": ["judge", source, "--out", str(tmp_path / "j.csv")],
            "behavior --harmful": ["behavior", "/no/such/model", "--harmful", source]}[command]
    patch = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
    child = _child(tmp_path, patch, args)
    _, stderr = child.communicate(timeout=120)
    one_line(child.returncode, stderr, "is not a regular file (a device, a pipe or a socket)")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_a_model_folder_holding_a_device_or_a_pipe_is_refused(tiny_models, tmp_path, name):
    """A model folder whose config.json, tokenizer or weights is /dev/zero (a symlink) or a FIFO: transformers would
    read it for ever. Refused in one line before anything reads it; run as a process with a timeout."""
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_models["llama"], folder)
    (folder / name).unlink(missing_ok=True)
    if name == "tokenizer.json":
        os.mkfifo(folder / name)
    else:
        (folder / name).symlink_to("/dev/zero")
    child = _child(tmp_path, "", ["inspect", str(folder)] if name != "model.safetensors" else
                   ["behavior", str(folder), "--limit", "1"])
    _, stderr = child.communicate(timeout=120)
    one_line(child.returncode, stderr, f"{folder / name} is not a regular file (a device, a pipe or a socket)")
