"""Streaming unit statistics, scores, classes, the unit-map file and the reversible ablation mask."""

from __future__ import annotations

import pytest
import torch

from ssah_audit.errors import UserError
from ssah_audit.models.prefix import MIN_SHARED
from ssah_audit.models.resolve import load_model
from ssah_audit.models.unit_map import weight_out_in
from ssah_audit.unit_classes import ablate, classify, scores, stats
from ssah_audit.unit_classes.stats import RunningStats

PAIRS = [("How do I boil an egg?", "Boil it."),
         ("Name a colour.", "Blue."),
         ("Write about the sea.", "The sea is wide."),
         ("Say hi.", "Hi! How can I help?")]


def stored_inputs(loaded, exchanges, response_only):
    """Every write-back input of every selected token, one example at a time (no padding at all)."""
    rows = {wb.name: [] for wb in loaded.units.modules()}
    handles = [wb.module.register_forward_pre_hook(lambda m, a, name=wb.name: rows[name].append(a[0][0]))
               for wb in loaded.units.modules()]
    try:
        with torch.inference_mode():
            for ids, n_prompt in exchanges:
                loaded.model(input_ids=torch.tensor([ids]))
                if response_only:
                    for name in rows:
                        rows[name][-1] = rows[name][-1][n_prompt - 1:]  # positions that predict the response
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(chunks).double() for name, chunks in rows.items()}


def fp32_tolerances(x: torch.Tensor) -> tuple[float, float]:
    """Absolute bounds for statistics of activations x that another fp32 forward pass computed.

    The streamed side runs padded batches and the direct side one example at a time: other matmul shapes, other
    kernels and reduction orders, so each activation may differ by a few fp32 ulps (measured on another CPU:
    4e-8 relative). Float64 accumulation adds rounding far below that, so the bound is fp32's: 1e-6 (about 8 ulps)
    relative, 1e-6 of the largest |activation| absolute for sums and means near zero, and for the variance the
    first-order change 2·sd·dx. Selecting positions shifted by one (same count) moved them by 2e-3 absolute and
    30% relative, a thousand times these bounds.
    """
    dx = 1e-6 * float(x.abs().max())
    return dx, 2 * dx * float(x.std(0).max())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("response_only", [False, True])
def test_streaming_statistics_equal_a_direct_computation(tiny_models, family, response_only):
    loaded = load_model(str(tiny_models[family]))
    # a common opening, as a chat template's system prompt gives: each batch encodes it once and counts it per row
    exchanges = stats.encode(loaded.tokenizer, [("Please answer: " + prompt, answer) for prompt, answer in PAIRS])
    assert len({len(ids) for ids, _ in exchanges}) > 1, "different lengths: the batches are padded"
    assert all(ids[:MIN_SHARED] == exchanges[0][0][:MIN_SHARED] for ids, _ in exchanges)
    streamed = stats.collect(loaded.model, loaded.units, exchanges, batch_size=3, response_only=response_only)
    direct = stored_inputs(loaded, exchanges, response_only)
    for name, x in direct.items():
        got = streamed[name]
        assert got.count == x.shape[0], "exactly the selected tokens, no padding"
        mean_tol, var_tol = fp32_tolerances(x)
        torch.testing.assert_close(got.mean, x.mean(0), rtol=1e-6, atol=mean_tol)
        torch.testing.assert_close(got.variance, x.var(0, unbiased=True), rtol=1e-6, atol=var_tol)
        torch.testing.assert_close(got.l2, x.norm(dim=0), rtol=1e-6, atol=mean_tol)


def test_running_merge_is_exact_for_any_split():
    x = torch.randn(37, 5, dtype=torch.float64) * 3 + 10
    running = RunningStats.empty(5)
    for chunk in (x[:1], x[1:20], x[20:20], x[20:]):
        running.add(chunk)
    torch.testing.assert_close(running.variance, x.var(0))
    torch.testing.assert_close(running.mean, x.mean(0))
    weighted, counts = RunningStats.empty(5), torch.tensor([3, 0, 1, 5])  # a shared opening: a row per position
    weighted.add(x[:4], counts)
    weighted.add(x[4:])
    repeated = torch.cat([x[:4].repeat_interleave(counts, dim=0), x[4:]])
    assert weighted.count == len(repeated)
    torch.testing.assert_close(weighted.variance, repeated.var(0))
    torch.testing.assert_close(weighted.l2, repeated.norm(dim=0))


def test_scores_follow_their_definitions(tiny_models):
    loaded = load_model(str(tiny_models["llama"]))
    exchanges = stats.encode(loaded.tokenizer, PAIRS)
    direct = stored_inputs(loaded, exchanges, False)
    wifv = scores.scores(loaded.model, loaded.units, exchanges, "wifv", batch_size=2)
    wanda = scores.scores(loaded.model, loaded.units, exchanges, "wanda", batch_size=2)
    snip = scores.scores(loaded.model, loaded.units, exchanges, "snip", batch_size=2)
    for wb in loaded.units.modules():
        norms = weight_out_in(wb.module).double().norm(dim=0)
        x = direct[wb.name]
        mean_tol, var_tol = fp32_tolerances(x)  # batches of 2 against one example at a time, as above
        torch.testing.assert_close(wifv[wb.name], x.var(0) * norms**2, rtol=1e-6, atol=var_tol * float(norms.max())**2)
        torch.testing.assert_close(wanda[wb.name], x.norm(dim=0) * norms, rtol=1e-6, atol=mean_tol * float(norms.max()))
        assert snip[wb.name].shape == (wb.units,) and (snip[wb.name] >= 0).all()
        assert snip[wb.name].sum() > 0, "the gradient reaches every write-back"
    assert all(p.grad is None for p in loaded.model.parameters()), "snip stores no parameter gradients"


def test_snip_equals_the_first_order_change_of_the_loss(tiny_models):
    """Σ x_j ∂L/∂x_j for one unit equals d/dε L(scale x_j by 1 + ε) at ε = 0 (finite differences)."""
    loaded = load_model(str(tiny_models["llama"]))
    exchanges = stats.encode(loaded.tokenizer, PAIRS[:2])
    model = loaded.model.double()
    snip = stats.saliency(model, loaded.units, exchanges, batch_size=2)
    target = loaded.units.layers[1].mlp
    unit = int(snip[target.name].abs().argmax())

    def loss(eps):
        current = {}

        def scale(module, args):  # unit `unit` scaled by 1 + eps where the response is predicted
            x = args[0].clone()
            x[0, current["n_prompt"] - 1:, unit] *= 1 + eps
            return (x,)

        handle = target.module.register_forward_pre_hook(scale)
        try:
            total = 0.0
            with torch.no_grad():
                for ids, n_prompt in exchanges:
                    current["n_prompt"] = n_prompt
                    logits = model(input_ids=torch.tensor([ids])).logits[0]
                    labels = torch.tensor(ids[n_prompt:])
                    total += torch.nn.functional.cross_entropy(logits[n_prompt - 1:-1], labels, reduction="sum")
            return float(total)
        finally:
            handle.remove()

    numeric = (loss(1e-3) - loss(-1e-3)) / 2e-3  # float32 inside the model makes smaller steps noisy
    assert float(snip[target.name][unit]) == pytest.approx(numeric, rel=2e-3)


def fake_scores(sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    return {f"m{i}": torch.rand(n, generator=generator, dtype=torch.float64) * (i + 1) for i, n in enumerate(sizes)}


@pytest.mark.parametrize("fractions", [classify.Fractions(), classify.Fractions(3, 20, 30),
                                       classify.Fractions(0, 0, 0)])
def test_classes_partition_the_units_with_the_asked_fractions(fractions):
    sizes = [64, 256, 64, 256]
    safety, utility = fake_scores(sizes, 1), fake_scores(sizes, 2)
    classes = classify.classify(safety, utility, fractions)
    assert [len(classes[f"m{i}"]) for i in range(4)] == sizes
    total = sum(sizes)
    counts = {name: sum(int((c == classify.CODE[name]).sum()) for c in classes.values()) for name in classify.CLASSES}
    assert sum(counts.values()) == total
    for name, percent in (("SCU", fractions.scu), ("UCU", fractions.ucu), ("RU", fractions.ru)):
        assert counts[name] == round(total * percent / 100)
    assert classify.fractions_of(classes)["CU"] == pytest.approx(counts["CU"] / total)


def test_scu_are_the_units_most_specific_to_safety():
    safety = {"a": torch.tensor([1.0, 1, 1, 9, 1, 1, 1, 1, 1, 1.5])}
    utility = {"a": torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 1, 9, 1.5])}
    classes = classify.classify(safety, utility, classify.Fractions(10, 10, 0))["a"]
    assert int(classes[3]) == classify.CODE["SCU"] and int(classes[8]) == classify.CODE["UCU"]
    assert classify.safety_ranking(safety, utility)[0] == ("a", 3)


@pytest.mark.parametrize("bad", [dict(scu=-1), dict(ru=101), dict(scu=50, ucu=40, ru=20)])
def test_impossible_fractions_are_a_user_error(bad):
    with pytest.raises(UserError):
        classify.Fractions(**bad)


def test_unit_map_file_round_trips(tmp_path):
    classes = classify.classify(fake_scores([8, 32], 3), fake_scores([8, 32], 4), classify.Fractions(10, 10, 10))
    path = tmp_path / "map.safetensors"
    sidecar = classify.save_map(path, classes, {"method": "wifv", "fingerprint": "abc"})
    loaded, document = classify.load_map(path)
    assert sidecar.exists() and document["method"] == "wifv" and document["fingerprint"] == "abc"
    assert list(loaded) == list(classes)
    for name in classes:
        assert loaded[name].dtype == torch.int8 and torch.equal(loaded[name], classes[name])
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable unit map"):
        classify.load_map(path)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_ablation_zeroes_the_chosen_columns_and_restores_them_bit_for_bit(tiny_models, family):
    loaded = load_model(str(tiny_models[family]))
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    chosen = ablate.random_units(loaded.units, 10, seed=0)
    assert ablate.count(chosen) == 10
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        dense = loaded.model(input_ids=ids).logits
    with ablate.ablated(loaded.units, chosen):
        for wb in loaded.units.modules():
            if len(chosen[wb.name]):
                assert (weight_out_in(wb.module)[:, chosen[wb.name]] == 0).all()
        with torch.no_grad():
            assert not torch.equal(loaded.model(input_ids=ids).logits, dense)
    with pytest.raises(RuntimeError), ablate.ablated(loaded.units, chosen):
        raise RuntimeError("a measurement that fails inside")
    for name, parameter in loaded.model.named_parameters():
        assert torch.equal(parameter, before[name]), name


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_row_ablation_runs_each_row_as_if_its_columns_were_zeroed(tiny_models, family):
    """One batch, three conditions (none, 10 random units, 30 others): each row's logits equal that row run alone
    with its units' columns zeroed, within fp32 rounding of another batch shape (atol 1e-5 on logits of order 1);
    the hooks are gone after the block."""
    loaded = load_model(str(tiny_models[family]))
    conditions = [{}, ablate.random_units(loaded.units, 10, seed=0), ablate.random_units(loaded.units, 30, seed=1)]
    ids = torch.tensor([[1, 2, 3, 4, 5]] * 3)
    with torch.no_grad():
        dense = loaded.model(input_ids=ids[:1]).logits
        with ablate.row_ablation(loaded.units, conditions) as select:
            select([0, 1, 2])
            mixed = loaded.model(input_ids=ids).logits
        for row, chosen in enumerate(conditions):
            with ablate.ablated(loaded.units, chosen):
                alone = loaded.model(input_ids=ids[:1]).logits
            assert torch.allclose(mixed[row], alone[0], atol=1e-5), row
        assert not torch.allclose(mixed[1], mixed[0], atol=1e-3)
        assert torch.equal(loaded.model(input_ids=ids[:1]).logits, dense)


def test_shared_batches_generate_what_each_condition_generates_alone(tiny_models):
    """verify.measure_conditions' generation (every condition in each batch, rows sorted by length) gives each
    prompt, under each condition, the greedy completion it gets with that condition's columns zeroed."""
    from ssah_audit.responses.generate import generate

    loaded = load_model(str(tiny_models["llama"]))
    prompts = ["How do I boil an egg?", "Say hi.", "Explain photosynthesis briefly.", "Name a colour."]
    conditions = [{}, ablate.random_units(loaded.units, 20, seed=0), ablate.random_units(loaded.units, 60, seed=1)]
    which = [k for k in range(len(conditions)) for _ in prompts]
    with ablate.row_ablation(loaded.units, conditions) as select:
        shared = generate(loaded.model, loaded.tokenizer, prompts * 3, 12, batch_size=6,
                          before_batch=lambda chunk: select([which[i] for i in chunk]))
    for k, chosen in enumerate(conditions):
        with ablate.ablated(loaded.units, chosen):
            alone = generate(loaded.model, loaded.tokenizer, prompts, 12, batch_size=4)
        assert shared[k * len(prompts):(k + 1) * len(prompts)] == alone, k
    assert shared[:len(prompts)] != shared[len(prompts):2 * len(prompts)]


def test_a_condition_measured_on_some_prompts_gives_what_those_prompts_give_alone(tiny_models):
    """verify.measure_conditions' `subsets` (the audit's UCU and RU rows on class_rows_limit prompts and answers):
    a condition measured on some prompts and answers, beside one measured on all, gives the completions and row
    those prompts and answers give measured alone."""
    from ssah_audit.unit_classes import verify

    loaded = load_model(str(tiny_models["llama"]))
    prompts = ["How do I boil an egg?", "Say hi.", "Explain photosynthesis briefly.", "Name a colour.",
               "Count to three.", "What is rain?"]
    benign = [("What is two plus two?", "Four."), ("Name a fruit.", "An apple, for one."),
              ("Greet me.", "Hello there, nice to meet you."), ("What colour is the sky?", "Blue on a clear day.")]
    conditions = {"all": {}, "some": ablate.random_units(loaded.units, 20, seed=0)}
    completions, alone_completions = {}, {}
    table = verify.measure_conditions(loaded, conditions, prompts, benign, 8, 4, completions_out=completions,
                                      subsets={"some": ([1, 4], [0, 2])})
    alone = verify.measure_conditions(loaded, {"some": conditions["some"]}, [prompts[1], prompts[4]],
                                      [benign[0], benign[2]], 8, 4, completions_out=alone_completions)
    assert completions["some"] == alone_completions["some"] and len(completions["all"]) == 6
    assert table["some"] == pytest.approx(alone["some"], rel=1e-6)
    assert (table["some"]["n"], table["some"]["answers"]) == (2, 2)
    assert (table["all"]["n"], table["all"]["answers"]) == (6, 4)


def test_random_control_is_seeded_and_spans_all_modules(tiny_models):
    loaded = load_model(str(tiny_models["llama"]))
    first, again = ablate.random_units(loaded.units, 40, 5), ablate.random_units(loaded.units, 40, 5)
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = ablate.random_units(loaded.units, 40, 6)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    for wb in loaded.units.modules():
        assert (first[wb.name] < wb.units).all()
