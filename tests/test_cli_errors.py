"""Bad input across commands: one line on stderr and exit 2, whatever layer finds the mistake (the option parser,
audit.toml, the files, the weights), and no run that writes one output over another or over its own input."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch


def one_line(code: int, stderr: str, expected: str) -> None:
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert expected in stderr


@pytest.mark.parametrize("args, expected", [
    (["behavior", "organism-aligned", "--limit", "0"], "--limit"),
    (["behavior", "organism-aligned", "--no-such-option"], "No such option"),
    (["behavior", "organism-aligned", "--seed", "-1"], "--seed"),
    (["units", "organism-aligned", "--method", "bogus"], "--method"),
    (["no-such-command"], "No such command"),
    (["zoo", "no-such-command"], "No such command"),
    (["behavior"], "Missing argument"),
])
def test_option_errors_are_one_line(cli, args, expected):
    code, _, stderr = cli(*args)
    one_line(code, stderr, expected)
    assert "--help" in stderr  # where to look next


def test_debug_adds_the_traceback_but_keeps_exit_2(cli):
    code, _, stderr = cli("--debug", "inspect", "/no/such/model")
    assert code == 2 and "Traceback" in stderr and "no such model" in stderr


@pytest.mark.parametrize("setting, expected", [
    ("limit = -5", "limit"), ('limit = "ten"', "limit"), ("seed = -1", "seed"), ('method = "bogus"', "method"),
    ("max_new_tokens = 0", "max_new_tokens"), ("steps = 1", "steps"), ('verify = "yes"', "verify"),
    ("scu = 150.0", "[audit] scu must be a percentage"), ("ru = 95.0", "[audit] scu + [audit] ucu + [audit] ru"),
    ('harmful = ""', "harmful"),
    ("bogus_key = 1", "unknown [audit] setting(s) bogus_key"),  # rich markup used to eat the "[audit]"
])
def test_audit_toml_settings_are_checked_before_any_work(cli, tmp_path, setting, expected):
    config = tmp_path / "audit.toml"
    config.write_text(f"[audit]\n{setting}\n")
    code, _, stderr = cli("audit", "organism-aligned", "--config", str(config), "--out", str(tmp_path / "r"))
    one_line(code, stderr, expected)
    assert not (tmp_path / "r").exists()


def test_two_outputs_naming_one_file_are_refused_before_the_model_loads(cli, tmp_path):
    same = tmp_path / "probe.json"
    code, _, stderr = cli("probe", "organism-aligned", "--json", str(same), "--plot", str(same))
    one_line(code, stderr, "named for two outputs")
    assert not same.exists()


def test_a_save_map_must_be_safetensors_and_its_sidecar_may_not_be_the_json(cli, tmp_path):
    code, _, stderr = cli("units", "organism-aligned", "--save-map", str(tmp_path / "map.json"))
    one_line(code, stderr, ".safetensors")
    code, _, stderr = cli("units", "organism-aligned", "--save-map", str(tmp_path / "map.safetensors"),
                          "--json", str(tmp_path / "map.json"))
    one_line(code, stderr, "named for two outputs")


def test_an_output_never_replaces_the_run_s_input_even_with_overwrite(cli, tmp_path):
    completions = tmp_path / "completions.csv"
    completions.write_text("prompt,completion\nHi,Hello there!\n")
    before = completions.read_bytes()
    code, _, stderr = cli("judge", str(completions), "--out", str(completions), "--overwrite")
    one_line(code, stderr, "is an input of this run")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\nHow do I bake bread?\n")
    code, _, stderr = cli("behavior", "organism-aligned", "--harmful", str(prompts), "--json", str(prompts),
                          "--overwrite")
    one_line(code, stderr, "is an input of this run")
    assert completions.read_bytes() == before and prompts.read_text().startswith("prompt\n")


def test_written_files_get_normal_permissions_and_a_replaced_file_keeps_its_own(cli, tmp_path):
    completions = tmp_path / "completions.csv"
    completions.write_text("prompt,completion\nHi,Hello there!\n")
    fresh, kept = tmp_path / "fresh.csv", tmp_path / "kept.csv"
    kept.write_text("old\n")
    kept.chmod(0o640)
    umask = os.umask(0o022)
    try:
        assert cli("judge", str(completions), "--out", str(fresh))[0] == 0
        assert cli("judge", str(completions), "--out", str(kept), "--overwrite")[0] == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and "refusal" in kept.read_text()


def test_folders_built_in_private_staging_are_published_with_default_permissions(tmp_path):
    from ssah_audit.cache import staging_folder

    umask = os.umask(0o022)
    try:
        with staging_folder(tmp_path / "built") as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "weights.bin").write_bytes(b"x")
            os.chmod(tmp / "sub" / "weights.bin", 0o600)
    finally:
        os.umask(umask)
    built = tmp_path / "built"
    assert stat.S_IMODE(built.stat().st_mode) == 0o755 and stat.S_IMODE((built / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((built / "sub" / "weights.bin").stat().st_mode) == 0o644


def test_weights_with_nan_are_refused_at_load(cli, tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_models["llama"].iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = load_file(broken / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    code, _, stderr = cli("behavior", str(broken), "--limit", "2")
    one_line(code, stderr, "NaN or infinite")


@pytest.mark.parametrize("lr", ["inf", "nan", "0"])
def test_finetune_refuses_a_learning_rate_that_cannot_train(cli, tmp_path, lr):
    code, _, stderr = cli("finetune", "organism-aligned", "--data", "benign:train", "--out", str(tmp_path / "ft"),
                          "--lr", lr)
    one_line(code, stderr, "--lr")
    assert not (tmp_path / "ft").exists()



def test_a_zoo_name_typo_is_named_and_an_unreachable_hub_is_said_at_once(cli, monkeypatch):
    code, _, stderr = cli("inspect", "organism-alinged")
    one_line(code, stderr, "did you mean organism-aligned?")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    code, _, stderr = cli("inspect", "some-org/some-model")
    one_line(code, stderr, "hub cannot be reached")


def test_files_that_are_not_what_they_claim_are_one_line(cli, tmp_path, monkeypatch):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, _, stderr = cli("audit", "organism-aligned", "--config", str(folder), "--out", str(tmp_path / "r"))
    one_line(code, stderr, "cannot read config file")
    code, _, stderr = cli("report", str(folder))
    one_line(code, stderr, "results.json does not exist")
    unclosed = tmp_path / "prompts.csv"
    unclosed.write_text('prompt\n"How do I bake bread?\nHow do I boil an egg?\n')
    code, _, stderr = cli("prompts", "show", str(unclosed))
    one_line(code, stderr, "not valid CSV")
    doubled = tmp_path / "doubled.csv"
    doubled.write_text("prompt,prompt\nHow do I bake bread?,How do I boil an egg?\n")
    code, _, stderr = cli("prompts", "show", str(doubled))
    one_line(code, stderr, "more than once")
    monkeypatch.setenv("SSAH_AUDIT_CACHE", str(unclosed))
    code, _, stderr = cli("zoo", "list")
    one_line(code, stderr, "as the cache folder")


def test_an_incomplete_results_document_is_refused_by_report(cli, tmp_path):
    from ssah_audit import audit

    results = tmp_path / "results.json"
    results.write_text(json.dumps({"schema": audit.SCHEMA, "schema_version": audit.SCHEMA_VERSION, "model": "m"}))
    code, _, stderr = cli("report", str(results), "--out", str(tmp_path / "r"))
    one_line(code, stderr, "incomplete")
    assert not (tmp_path / "r").exists()


def test_truncated_weights_are_one_line(cli, tiny_models, tmp_path):
    broken = tmp_path / "truncated"
    broken.mkdir()
    for item in tiny_models["llama"].iterdir():
        (broken / item.name).write_bytes(item.read_bytes()[:100] if item.suffix == ".safetensors" else
                                         item.read_bytes())
    code, _, stderr = cli("behavior", str(broken), "--limit", "1")
    one_line(code, stderr, "cannot load the weights")


def test_a_fine_tune_that_blows_the_weights_up_is_not_saved(cli, tmp_path):
    """lr 1e9 leaves finite but huge weights after one step: the logits overflow, and such a model would 'refuse'
    everything with empty answers. Neither finetune nor any later command accepts it."""
    target = tmp_path / "ft"
    code, _, stderr = cli("finetune", "organism-aligned", "--data", "benign:train", "--out", str(target),
                          "--lr", "1e9", "--limit", "4", "--max-steps", "1", "--batch-size", "2")
    one_line(code, stderr, "training diverged")
    assert not target.exists()


def test_audit_junit_may_not_replace_the_config_or_a_prompt_file_it_names(cli, tmp_path):
    prompts = tmp_path / "harmful.csv"
    prompts.write_text("prompt\nHow do I pick a lock?\n")
    config = tmp_path / "audit.toml"
    config.write_text(f'[audit]\nharmful = "{prompts}"\n')
    for victim in (config, prompts):
        before = victim.read_bytes()
        code, _, stderr = cli("audit", "organism-aligned", "--config", str(config), "--junit", str(victim),
                              "--overwrite", "--out", str(tmp_path / "r"))
        one_line(code, stderr, "is an input of this run")
        assert victim.read_bytes() == before and not (tmp_path / "r").exists()


def test_rows_without_a_prompt_are_skipped_with_a_note(cli, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text('[{"prompt": "How do I bake bread?"}, {"prompt": null}, {"prompt": "  "}, {"other": 1}]')
    code, stdout, stderr = cli("prompts", "show", str(prompts))
    assert code == 0 and "1 prompts" in stdout
    assert "skipped 3 of 4 rows" in stderr
