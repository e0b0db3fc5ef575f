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
    from ssah_audit import auditing as audit

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


def _copy_model(source, target):
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json"])
def test_no_output_replaces_the_model_s_own_files_even_with_overwrite(cli, tiny_models, tmp_path, victim):
    model = _copy_model(tiny_models["llama"], tmp_path / "m")
    before = (model / victim).read_bytes()
    for command in (["behavior", "--json"], ["probe", "--plot"], ["units", "--json"]):
        code, _, stderr = cli(command[0], str(model), command[1], str(model / victim), "--overwrite", "--limit", "1")
        one_line(code, stderr, "is an input of this run")
    code, _, stderr = cli("behavior", "organism-aligned", "--reference", str(model), "--json", str(model / victim),
                          "--overwrite")
    one_line(code, stderr, "is an input of this run")
    code, _, stderr = cli("audit", str(model), "--junit", str(model / victim), "--overwrite",
                          "--out", str(tmp_path / "r"))
    one_line(code, stderr, "is an input of this run")
    assert (model / victim).read_bytes() == before and not (tmp_path / "r").exists()


def test_no_output_replaces_a_gguf_model(cli, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF not really")
    code, _, stderr = cli("probe", str(gguf), "--json", str(gguf), "--overwrite")
    one_line(code, stderr, "is an input of this run")
    assert gguf.read_bytes() == b"GGUF not really"


def test_finetune_never_writes_inside_the_model_folder(cli, tiny_models, tmp_path):
    model = _copy_model(tiny_models["llama"], tmp_path / "m")
    code, _, stderr = cli("finetune", str(model), "--data", "benign:train", "--out", str(model / "ft"))
    one_line(code, stderr, "inside the model folder")
    assert not (model / "ft").exists()


@pytest.fixture(params=["renameat2", "mkdir fallback"])
def publishing(request, monkeypatch):
    """outputs.new_folder, with the atomic rename and with the fallback for systems without it."""
    from ssah_audit import outputs

    if request.param == "mkdir fallback":
        monkeypatch.setattr(outputs, "_renameat2_noreplace", lambda src, dst: False)
    return outputs


@pytest.mark.parametrize("intruder", ["a folder with a file", "an empty folder"])
def test_a_folder_that_appears_at_the_target_during_the_run_is_left_alone(publishing, tmp_path, intruder):
    from ssah_audit.errors import UserError

    target = tmp_path / "X"
    with pytest.raises(UserError) as caught:
        with publishing.new_folder(target) as tmp:
            (tmp / "results.json").write_text("{}\n")
            target.mkdir()
            if intruder == "a folder with a file":
                (target / "f").write_text("x\n")
    message = str(caught.value)
    assert "\n" not in message and f"{target}-1" in message
    assert sorted(p.name for p in target.iterdir()) == (["f"] if intruder == "a folder with a file" else [])
    assert (tmp_path / "X-1" / "results.json").read_text() == "{}\n"


def test_report_out_created_during_rendering_survives_and_the_report_is_kept(cli, tmp_path, monkeypatch):
    """The issue's reproduction: `report R.json --out X &`, then `mkdir X && echo x > X/f` while it runs."""
    from pathlib import Path

    from ssah_audit.reporting import render

    target = tmp_path / "X"
    draw = render.figures

    def figures_while_the_user_writes(results):
        target.mkdir()
        (target / "f").write_text("x\n")
        return draw(results)

    monkeypatch.setattr(render, "figures", figures_while_the_user_writes)
    example = Path(__file__).parents[1] / "reports" / "example" / "results.json"
    code, _, stderr = cli("report", str(example), "--out", str(target))
    one_line(code, stderr, "left as it is")
    assert (target / "f").read_text() == "x\n" and sorted(p.name for p in target.iterdir()) == ["f"]
    assert (tmp_path / "X-1" / "report.html").is_file()


def test_finetune_may_fill_an_empty_folder_it_was_given(cli, tiny_models, tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    code, _, stderr = cli("--quiet", "finetune", str(tiny_models["llama"]), "--data", "benign:train", "--limit", "2",
                          "--max-steps", "1", "--batch-size", "2", "--max-length", "32", "--out", str(target))
    assert code == 0, stderr
    assert (target / "config.json").is_file() and not list(tmp_path.glob(".empty.*"))


@pytest.mark.parametrize("args, expected", [
    (["audit", "/no/such/model", "--out", "/proc/x"], "cannot write /proc/x"),
    (["audit", "/no/such/model", "--junit", "/proc/junit.xml"], "cannot write /proc/junit.xml"),
    (["behavior", "/no/such/model", "--json", "/proc/b.json"], "cannot write /proc/b.json"),
    (["finetune", "/no/such/model", "--data", "benign:train", "--out", "/proc/ft"], "cannot write /proc/ft"),
])
def test_an_output_that_cannot_be_written_is_refused_before_the_model_is_looked_at(cli, tmp_path, monkeypatch,
                                                                                   args, expected):
    """The model does not exist: an error about the output proves it was checked first."""
    monkeypatch.chdir(tmp_path)  # the default reports/ folder
    code, _, stderr = cli(*args)
    one_line(code, stderr, expected)


def test_a_junit_file_where_the_report_folder_goes_is_refused_before_the_run(cli, tmp_path):
    same = tmp_path / "X"
    code, _, stderr = cli("audit", "/no/such/model", "--out", str(same), "--junit", str(same))
    one_line(code, stderr, "named for two outputs")
    assert not same.exists()


@pytest.mark.parametrize("how", ["--fail-on", "[gate]"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_gate_threshold_must_be_finite(cli, tmp_path, how, value):
    args = ["--fail-on", f"max_scu_drift_ratio={value}"]
    if how == "[gate]":
        config = tmp_path / "audit.toml"
        config.write_text(f"[gate]\nmax_scu_drift_ratio = {value}\n")
        args = ["--config", str(config)]
    code, _, stderr = cli("audit", "/no/such/model", "--out", str(tmp_path / "r"), *args)
    one_line(code, stderr, "finite number")


def test_results_json_is_strict_json_even_with_a_value_that_is_not_finite(cli, tmp_path):
    from pathlib import Path

    results = json.loads((Path(__file__).parents[1] / "reports" / "example" / "results.json").read_text())
    results["comparison"]["units"]["scu_drift_ratio"] = float("nan")
    results["gate"]["checks"][5].update(value=float("nan"), status="fail")  # as the audit gates a NaN: it fails
    results["behavior"]["utility"]["nll"] = float("inf")
    source = tmp_path / "nan.json"
    source.write_text(json.dumps(results))
    code, _, stderr = cli("report", str(source), "--out", str(tmp_path / "r"), "--format", "json")
    assert code == 0, stderr

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    written = json.loads((tmp_path / "r" / "results.json").read_text(), parse_constant=refuse)
    assert written["comparison"]["units"]["scu_drift_ratio"] is None and written["behavior"]["utility"]["nll"] is None
    # and the strict document (null where a measured value was not finite) renders again, "nan" in its place
    code, _, stderr = cli("report", str(tmp_path / "r" / "results.json"), "--out", str(tmp_path / "again"),
                          "--format", "md")
    assert code == 0, stderr
    assert "| nan (" in (tmp_path / "again" / "report.md").read_text()


@pytest.mark.parametrize("as_json", [False, True])
def test_prompts_show_into_a_reader_that_stops_early_exits_0_quietly(tmp_path, as_json):
    """`ssah-audit prompts show ... | head -1`: more output than a pipe holds, the reader gone after one line."""
    import subprocess
    import sys

    prompts = tmp_path / "big.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"prompt {i} " + "x" * 200}) + "\n" for i in range(3000)))
    command = [sys.executable, "-m", "ssah_audit.cli", "prompts", "show", str(prompts), "--limit", "3000"]
    reader = subprocess.Popen(command + (["--json"] if as_json else []), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()
    assert reader.wait(timeout=120) == 0
    assert reader.stderr.read() == b""


def test_prompts_show_prints_terminal_escape_sequences_escaped(cli, tmp_path):
    prompts = tmp_path / "escapes.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi \x1b[31mred\x1b]0;title\x07 \u202eevil\nnext", "category": "c\x1b[2J"})
                       + "\n")
    code, stdout, stderr = cli("prompts", "show", str(prompts))
    assert code == 0, stderr
    assert "\x1b" not in stdout and "\x07" not in stdout and "\u202e" not in stdout
    assert "hi \\x1b[31mred\\x1b]0;title\\x07 \\u202eevil\\nnext" in stdout and "c\\x1b[2J" in stdout
