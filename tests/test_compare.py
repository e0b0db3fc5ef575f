"""Unit-level comparison: drift, drift per class, the transfer matrix, and Markdown escaping of model text."""

from __future__ import annotations

import torch

from ssah_audit.compare import units as compare
from ssah_audit.models.resolve import load_model
from ssah_audit.models.unit_map import weight_out_in
from ssah_audit.reporting.render import md_text
from ssah_audit.unit_classes.classify import CODE


def test_drift_is_relative_column_change_and_only_where_weights_moved(tiny_models):
    ours, theirs = load_model(str(tiny_models["llama"])), load_model(str(tiny_models["llama"]))
    target = ours.units.layers[0].mlp
    with torch.no_grad():
        weight_out_in(target.module)[:, 3] *= 1.5  # column 3 grows by half its norm
        ours.model.get_submodule(target.name.replace("down_proj", "up_proj")).weight[3] *= 2
    drift = compare.unit_drift(ours, theirs)
    assert abs(float(drift["write"][target.name][3]) - 0.5) < 1e-6  # float32 weights
    assert float(drift["write"][target.name].sum()) - float(drift["write"][target.name][3]) == 0
    read = drift["read"][target.name]
    assert read[3] > 0 and float(read.sum() - read[3]) == 0, "gate and up rows are the unit's read-ins"
    assert compare.same_architecture(ours, theirs) is None
    other = load_model(str(tiny_models["gpt2"]))
    assert "different architectures" in compare.same_architecture(ours, other)


def test_transfer_matrix_counts_units_by_their_two_classes():
    ref = {"m": torch.tensor([CODE["SCU"], CODE["SCU"], CODE["RU"], CODE["CU"]], dtype=torch.int8)}
    mine = {"m": torch.tensor([CODE["SCU"], CODE["CU"], CODE["RU"], CODE["CU"]], dtype=torch.int8)}
    matrix = compare.transfer_matrix(ref, mine)
    scu, cu = CODE["SCU"], CODE["CU"]
    assert matrix["counts"][scu][scu] == 1 and matrix["counts"][scu][cu] == 1
    assert matrix["fractions"][scu][scu] == 0.5 and sum(map(sum, matrix["counts"])) == 4


def test_drift_by_class_and_the_scu_ratio():
    drift = {"m": torch.tensor([4.0, 0.0, 1.0, 1.0], dtype=torch.float64)}
    classes = {"m": torch.tensor([CODE["SCU"], CODE["RU"], CODE["CU"], CODE["CU"]], dtype=torch.int8)}
    by_class = compare.drift_by_class(drift, classes)
    assert by_class["SCU"] == 4.0 and by_class["all"] == 1.5 and by_class["UCU"] is None


def test_markdown_text_is_inert():
    text = md_text("<script>x</script> **b** [l](http://e) `c` # h\n| t |")
    assert "<script>" not in text and "&lt;script&gt;" in text
    for raw in ("**b**", "[l](", "`c`", "| t |"):
        assert raw not in text


def test_weights_equal_to_rounding_have_no_drift_ratio(tiny_models):
    """A model against itself moved by fp32 rounding only (as a repair that gives the reference back): the SCU drift
    ratio would be a ratio of noise, so it is None and the gate skips it; a real move gives a ratio."""
    ours, theirs = load_model(str(tiny_models["llama"])), load_model(str(tiny_models["llama"]))
    classes = {wb.name: torch.full((wb.units,), CODE["CU"], dtype=torch.int8) for wb in theirs.units.modules()}
    first = theirs.units.modules()[0].name
    classes[first][:4] = CODE["SCU"]
    with torch.no_grad():
        for parameter in ours.model.parameters():
            parameter.mul_(1 + 1e-7)
    assert compare.compare_units(ours, theirs, classes, classes)["scu_drift_ratio"] is None
    with torch.no_grad():
        weight_out_in(ours.units.modules()[0].module)[:, :4] *= 1.5
    assert compare.compare_units(ours, theirs, classes, classes)["scu_drift_ratio"] > 3
