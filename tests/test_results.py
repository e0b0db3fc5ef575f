"""Typed results: one set of records writes results.json, reads it back checked, and is what reports and the
Python API read. Tested on the example report's results.json (a real audit of the embedded SmolLM2 pair)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from ssah_audit.results import SCHEMA_VERSION, AuditResult, Probe, read_results_document

EXAMPLE = Path(__file__).parents[1] / "reports" / "example" / "results.json"


def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def as_version_1(doc: dict) -> dict:
    """A document as version 1 wrote it: each behaviour block's samples one list, harmful first, naming its set."""
    old = copy.deepcopy(doc)
    old["schema_version"] = 1
    for block in (old["behavior"], old["reference"]["behavior"]):
        block["samples"] = [{"set": block[role]["set"], **sample}
                            for role in ("harmful", "borderline") for sample in block["samples"][role]]
    return old


def test_a_results_document_reads_as_typed_records_and_writes_back_unchanged():
    doc = example()
    result = read_results_document(copy.deepcopy(doc), EXAMPLE)
    assert isinstance(result, AuditResult) and result.schema_version == SCHEMA_VERSION
    assert result.gate.passed is doc["gate"]["passed"]
    assert result.behavior.harmful.compliance_rate == doc["behavior"]["harmful"]["compliance_rate"]
    assert [s.prompt for s in result.behavior.samples["harmful"]] == \
        [s["prompt"] for s in doc["behavior"]["samples"]["harmful"]]
    assert result["units"]["per_layer"][0]["mlp"] == result.units.per_layer[0].mlp  # a mapping too, for templates
    # a probe variant's own measurements, which no record names, are kept and written back
    assert result.probe["layer_separation"] == doc["probe"]["layer_separation"]
    assert json.loads(json.dumps(result.to_dict())) == json.loads(json.dumps(doc))


def test_a_version_1_document_is_upgraded_and_renders_the_same_report(cli, tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps(as_version_1(example())))
    new = tmp_path / "new.json"
    new.write_text(EXAMPLE.read_text())
    for name, source in (("from-old", old), ("from-new", new)):
        code, _, stderr = cli("report", str(source), "--out", str(tmp_path / name), "--format", "md,json")
        assert code == 0, stderr
    assert (tmp_path / "from-old" / "report.md").read_text() == (tmp_path / "from-new" / "report.md").read_text()
    upgraded = json.loads((tmp_path / "from-old" / "results.json").read_text())
    assert upgraded["schema_version"] == SCHEMA_VERSION and set(upgraded["behavior"]["samples"]) == {
        "harmful", "borderline"}


@pytest.mark.parametrize("version", [0, 3, "2", None])
def test_a_version_this_release_cannot_read_is_refused_in_one_line(cli, tmp_path, version):
    doc = example()
    doc["schema_version"] = version
    source = tmp_path / "results.json"
    source.write_text(json.dumps(doc))
    code, stdout, stderr = cli("report", str(source), "--out", str(tmp_path / "r"))
    assert code == 2 and f"schema version {version!r}" in stderr and "reads versions 1, 2" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_a_measured_number_stored_as_null_reads_as_nan_and_a_missing_part_is_named():
    doc = example()
    doc["behavior"]["utility"]["nll"] = None
    assert math.isnan(read_results_document(doc, "r.json").behavior.utility.nll)
    probe = dict(example()["probe"])
    del probe["margin"]
    with pytest.raises(Exception, match=r"'probe.margin' is missing"):
        Probe.read(probe, "probe", "r.json")


def test_an_audit_whose_report_folder_appears_meanwhile_keeps_its_result(monkeypatch, tmp_path):
    """`ssah_audit.audit(out=...)` checks the folder before the work; one that appears while it runs (here made by
    a plugin judge during the audit) is left alone, and the measured result comes back on the error."""
    import ssah_audit
    from ssah_audit import reference_cache
    from ssah_audit.components import JUDGES
    from ssah_audit.responses.judges import verdicts

    out = tmp_path / "report"

    class Meddler:
        name, version = "meddler", "0"

        def judge(self, pairs):
            out.mkdir(exist_ok=True)
            (out / "theirs.txt").write_text("someone else's")
            return verdicts(pairs, "rules")

    monkeypatch.setattr(JUDGES, "_items", dict(JUDGES._items))
    monkeypatch.setattr(reference_cache, "cache_root", lambda: tmp_path / "references")
    JUDGES.register("meddler", Meddler())
    with pytest.raises(ssah_audit.ReportNotWritten, match="already exists") as caught:
        ssah_audit.audit("organism-aligned", quick=True, out=out,
                         settings={"limit": 3, "verify": False, "judge": "meddler"})
    assert caught.value.result.behavior.harmful.n == 3 and caught.value.result.provenance.judge.name == "meddler"
    assert [p.name for p in out.iterdir()] == ["theirs.txt"] and (out / "theirs.txt").read_text() == "someone else's"


def test_the_ablation_note_says_which_rows_measured_fewer_prompts():
    """The report's ablation heading names the rows measured on fewer prompts and answers (the audit's UCU and RU
    rows, class_rows_limit), from the rows themselves; a table whose rows all measured every prompt, and an older
    document that recorded no counts, say nothing of it."""
    from ssah_audit.reporting.render import ablation_note

    example = json.loads(EXAMPLE.read_text())["units"]
    note = ablation_note(example)
    assert note.startswith("50 prompts and 50 reference answers spread over their sets; the UCU and RU rows on 25 of "
                           "the prompts and 25 of the answers; greedy, 32 new tokens a row")
    every = {**example, "ablation": {name: {**row, "n": 50, "answers": 50}
                                     for name, row in example["ablation"].items()}}
    assert "rows on" not in ablation_note(every) and ablation_note(every).startswith("50 prompts and 50")
    older = {**example, "evaluation": {"max_new_tokens": 32}}
    assert ablation_note(older).startswith("greedy, 32 new tokens a row")


@pytest.mark.parametrize("where, value", [(("units", "ablation", "UCU", "answers"), -1),
                                          (("behavior", "borderline", "tokens"), "32")])
def test_the_counts_behind_the_ablation_rows_and_the_borderline_rate_are_checked(where, value):
    """A file's ablation row says how many answers its NLL read, and the borderline rate how many tokens a prompt
    generated: a count that is not one is refused, in one line naming it."""
    from ssah_audit.errors import UserError

    doc = example()
    *path, key = where
    block = doc
    for part in path:
        block = block[part]
    block[key] = value
    with pytest.raises(UserError, match=".".join(where)):
        read_results_document(doc, EXAMPLE)
