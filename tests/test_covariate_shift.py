"""Tests of bnlab.covariate_shift and bnlab.plots_ch05 (chapter 5's experiments): the training
loop against a hand-written SGD loop, the networks against their definitions, each experiment's
result on synthetic data, the figures and the sentences made from results, and the recordings."""

import copy
import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

matplotlib.use("Agg")

from bnlab import covariate_shift as cs  # noqa: E402
from bnlab import experiments as bexp  # noqa: E402
from bnlab import plots_ch05  # noqa: E402
from bnlab.train import make_data  # noqa: E402
from solutions.ch05_covariate_shift import NoisyBatchNorm2d  # noqa: E402

from tests.test_train import synthetic_arrays  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

TINY_CH05 = {
    "percentiles": dict(train_size=160, test_size=80, steps=20, record_every=10, probe_size=40, loss_points=5),
    "noisy_bn": dict(width=4, steps=10, record_every=5, train_eval_size=40, batch_size=16, loss_points=5, lrs=[0.1],
                     variants=["standard", "bn", "noisy_bn", "standard_noise"]),
    "ics": dict(width=4, steps=6, record_every=3, batch_size=16, dln_steps=6, dln_record_every=3, dln_examples=50,
                loss_points=5),
    "landscape": dict(width=4, steps=6, record_every=3, batch_size=16, multipliers=[0.0, 0.5, 2.0], loss_points=5),
    "gamma_beta": dict(width=4, steps=10, batch_size=16, loss_points=5),
    "depth_growth": dict(growth_width=64, growth_depth=12, growth_batches=[64], trials=1, trim=2, residual_blocks=6,
                         residual_batch=256),
}


@pytest.fixture(scope="module")
def tiny_data():
    return make_data(*synthetic_arrays(n_train=160, n_test=80), device="cpu", info={"dataset": "synthetic"})


@pytest.fixture(scope="module")
def results(tiny_data):
    return {name: bexp.run(name, quick=True, device="cpu", data=None if name == "depth_growth" else tiny_data,
                           **TINY_CH05[name])
            for name in bexp.CHAPTER_NAMES["ch05"]}


# ------------------------------------------------------------------------ the training loop


def test_batches_cover_every_example_once_per_epoch():
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat(list(cs.batches(10, 4, 5, g)))               # 20 indices: two epochs
    assert sorted(drawn[:10].tolist()) == list(range(10)) and sorted(drawn[10:].tolist()) == list(range(10))


def test_sgd_run_is_plain_sgd_and_probes_before_the_update():
    torch.manual_seed(0)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    model = nn.Linear(3, 2)
    twin = copy.deepcopy(model)
    seen = []

    def probe(step, xb, yb):
        seen.append((step, model.weight.detach().clone(), xb.clone()))

    history = cs.sgd_run(model, x, y, steps=7, batch_size=8, lr=0.3, seed=5, probe=probe, every=3)
    # the same steps by hand
    order = cs.batches(40, 8, 8, torch.Generator().manual_seed(5))
    weights, losses = [], []
    for step in range(7):
        idx = next(order)
        weights.append(twin.weight.detach().clone())
        loss = F.cross_entropy(twin(x[idx]), y[idx])
        losses.append(float(loss.detach()))
        twin.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in twin.parameters():
                p -= 0.3 * p.grad
    np.testing.assert_allclose(history["losses"], losses, rtol=1e-4)
    torch.testing.assert_close(model.weight, twin.weight)
    assert [s for s, _, _ in seen] == [0, 3, 6, 7]
    for step, w, _ in seen[:-1]:
        torch.testing.assert_close(w, weights[step])           # measured before that step's update
    assert not history["diverged"]


def test_sgd_run_stops_at_a_non_finite_loss():
    model = nn.Linear(3, 1)
    x, y = torch.randn(20, 3), torch.randn(20, 1)
    mse = lambda prediction, target: (prediction - target).pow(2).mean()
    history = cs.sgd_run(model, x, y, steps=500, batch_size=10, lr=100.0, loss_fn=mse)   # |1 - lr lambda| >> 1
    assert history["diverged"] and history["losses"][-1] is None
    assert history["diverged_at_step"] == len(history["losses"]) - 1


def test_sgd_run_moves_only_the_given_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    frozen = model[0].weight.detach().clone()
    cs.sgd_run(model, torch.randn(20, 3), torch.randint(0, 2, (20,)), steps=3, batch_size=5, lr=0.1,
               params=list(model[1].parameters()))
    torch.testing.assert_close(model[0].weight, frozen)


# ---------------------------------------------------------------------------- the networks


def test_sigmoid_mlp_and_its_sigmoid_inputs():
    torch.manual_seed(0)
    for use_bn in (False, True):
        model = cs.sigmoid_mlp(use_bn).eval()
        linears = [m for m in model if isinstance(m, nn.Linear)]
        assert [tuple(m.weight.shape) for m in linears] == [(100, 784), (100, 100), (100, 100), (10, 100)]
        assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == (3 if use_bn else 0)
        assert all((m.bias is None) == use_bn for m in linears[:-1])
        x = torch.rand(5, 1, 28, 28)
        h = model[0](x)
        for m in list(model)[1:]:
            if isinstance(m, nn.Sigmoid):
                last = h
            h = m(h)
        torch.testing.assert_close(cs.sigmoid_inputs(model, x), last)


def test_variants_of_the_cnn():
    torch.manual_seed(0)
    noisy = cs.make_variant("noisy_bn", 4, {})
    assert sum(isinstance(m, NoisyBatchNorm2d) for m in noisy.modules()) == 4
    assert not any(type(m) is nn.BatchNorm2d for m in noisy.children())
    standard = cs.make_variant("standard", 4, {})
    torch.manual_seed(0)
    noise = cs.make_variant("standard_noise", 4, {})
    # the noise-only network holds the standard network's layers; without noise (eval) it is that network
    convs = [m for m in noise.modules() if isinstance(m, nn.Conv2d)]
    for a, b in zip(convs, [m for m in standard.modules() if isinstance(m, nn.Conv2d)]):
        with torch.no_grad():
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    with torch.no_grad():
        noise[-1].weight.copy_(standard[-1].weight)
        noise[-1].bias.copy_(standard[-1].bias)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(noise.eval()(x), standard.eval()(x))
    assert not torch.allclose(noise.train()(x), standard.train()(x))
    with pytest.raises(ValueError, match="unknown variant"):
        cs.make_variant("bn_twice", 4, {})


def test_deep_linear_network_is_linear_without_bn():
    torch.manual_seed(0)
    model = cs.deep_linear_network(False, depth=5, width=4).double()
    product = torch.eye(4, dtype=torch.float64)
    for m in model:
        product = m.weight @ product
    x = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(model(x), x @ product.T)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in cs.deep_linear_network(True, depth=5, width=4)) == 4


def test_per_layer_factor_of_a_geometric_sequence():
    assert math.isclose(cs.per_layer_factor([1.3 ** (10 - k) for k in range(10)]), 1.3, rel_tol=1e-12)


def test_residual_block_second_moments():
    """Without BN a block doubles the mean square (He-initialized branch); with BN it adds about one."""
    torch.manual_seed(0)
    x = torch.randn(4096, 256)
    for use_bn, expected in ((False, 2.0), (True, 2.0)):
        block = cs.ResidualBlock(256, use_bn).train()
        with torch.no_grad():
            out = block(x)
        ratio = float(out.pow(2).mean() / x.pow(2).mean())
        # 256 x 256 random weights: the ratio's spread over draws is a few percent
        assert abs(ratio - expected) < 0.15, (use_bn, ratio)


# ---------------------------------------------------------------------------- experiments


def test_chapter_5_experiments_are_registered():
    assert bexp.CHAPTER_NAMES["ch05"] == ("percentiles", "noisy_bn", "ics", "landscape", "gamma_beta",
                                          "depth_growth")
    assert bexp.select(["ch05"]) == list(bexp.CHAPTER_NAMES["ch05"])
    for name in bexp.CHAPTER_NAMES["ch05"]:
        assert bexp.result_path(name).name == f"ch05_{name}.json"
        for profile in bexp.PROFILES:
            cfg = bexp.default_config(name, profile)
            assert "schedule" not in cfg and "weight_decay" not in cfg    # plain SGD, nothing inherited
    assert bexp.default_config("percentiles", "record-cpu")["steps"] == 50000       # the paper's 50,000 steps
    assert bexp.default_config("percentiles", "record-cpu")["batch_size"] == 60
    ics = bexp.default_config("ics", "record-cpu")
    assert ics["lrs"] == [0.1, 0.01] and ics["dln_lrs"] == [1e-6, 1e-7] and ics["dln_depth"] == 25


@pytest.mark.parametrize("name", list(TINY_CH05))
def test_result_schema(results, name, tmp_path):
    r = results[name]
    assert r["experiment"] == name and r["profile"] == "quick"
    assert r["provenance"]["wall_time_s"] > 0
    json.dumps(r, allow_nan=False)
    path = bexp.save_result(r, tmp_path)
    assert path.name == f"ch05_{name}.json" and bexp.load_result(name, tmp_path) == json.loads(json.dumps(r))
    assert bexp.summarize(r).count("\n") >= 1


def test_percentiles_result(results):
    runs = results["percentiles"]["results"]["runs"]
    assert [r["use_bn"] for r in runs] == [False, True]
    for r in runs:
        assert r["step"] == [0, 10, 20] and len(r["percentiles"]) == 3
        assert all(lo <= mid <= hi for lo, mid, hi in r["percentiles"])


def test_noisy_bn_result(results):
    runs = {r["variant"]: r for r in results["noisy_bn"]["results"]["runs"]}
    assert set(runs) == set(cs.VARIANTS)
    for r in runs.values():
        assert r["step"] == [0, 5, 10]
        assert all(sorted(q) == q for q in r["activation_percentiles"])


def test_the_probes_leave_the_training_unchanged(tiny_data):
    """A run with measurements trains exactly like one without (running statistics included)."""
    kwargs = dict(steps=6, batch_size=16, lr=0.1, seed=3)
    torch.manual_seed(0)
    a = cs.make_variant("bn", 4, {})
    b = copy.deepcopy(a)
    trace, probe = cs._ics_trace(a, cs._reference("measure_ics"), [1], F.cross_entropy, 0.1)
    cs.sgd_run(a, tiny_data.x_train, tiny_data.y_train, probe=cs._probe_keeping_state(a, probe), every=2, **kwargs)
    cs.sgd_run(b, tiny_data.x_train, tiny_data.y_train, **kwargs)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
    assert len(trace["step"]) == 4


def test_ics_result(results):
    res = results["ics"]["results"]
    assert [(r["use_bn"], r["lr"]) for r in res["cnn"]] == [(False, 0.1), (False, 0.01), (True, 0.1), (True, 0.01)]
    assert [(r["use_bn"], r["lr"]) for r in res["dln"]] == [(False, 1e-6), (False, 1e-7), (True, 1e-6), (True, 1e-7)]
    for r in res["cnn"] + res["dln"]:
        for key in r["cosine"]:
            assert all(-1 <= c <= 1 for c in r["cosine"][key]) and all(d >= 0 for d in r["l2"][key])


def test_landscape_result(results):
    for r in results["landscape"]["results"]["runs"]:
        assert len(r["step"]) == 3
        assert all(lo <= hi for lo, hi in zip(r["loss_min"], r["loss_max"]))
        # multiplier 0 is the current point: its gradient distance is 0
        assert all(d == 0 for d in r["grad_distance_min"])


def test_gamma_beta_result(results):
    runs = {r["trained"]: r for r in results["gamma_beta"]["results"]["runs"]}
    assert runs["bn_only"]["trainable_parameters"] == 12 * 4
    assert runs["all"]["trainable_parameters"] == runs["all"]["total_parameters"]
    assert runs["classifier_only"]["trainable_parameters"] == 8 * 7 * 7 * 10 + 10


def test_depth_growth_result(results):
    res = results["depth_growth"]["results"]
    assert results["depth_growth"]["config"]["data"] is None
    assert math.isclose(res["yang_factor"], math.sqrt(math.pi / (math.pi - 1)))
    for r in res["residual"]:
        assert len(r["second_moment"]) == 7


def test_run_passes_the_students_tools(tiny_data):
    calls = []

    def my_measure_ics(*args):
        calls.append("ics")
        return cs._reference("measure_ics")(*args)

    r = bexp.run("ics", device="cpu", data=tiny_data, measure_ics=my_measure_ics, **TINY_CH05["ics"])
    assert calls and r["config"]["implementations"]["measure_ics"].endswith("my_measure_ics")
    assert r["config"]["implementations"]["make_cnn"] == "reference (solutions.ch04_cnn)"
    with pytest.raises(ValueError, match="does not use"):
        bexp.run("landscape", device="cpu", data=tiny_data, measure_ics=my_measure_ics, **TINY_CH05["landscape"])


# ----------------------------------------------------------------- figures and sentences


@pytest.mark.parametrize("plot, name", [("plot_percentiles", "percentiles"), ("plot_noisy_bn", "noisy_bn"),
                                        ("plot_ics_cnn", "ics"), ("plot_ics_dln", "ics"),
                                        ("plot_landscape", "landscape"), ("plot_gamma_beta", "gamma_beta"),
                                        ("plot_depth_growth", "depth_growth")])
def test_figures(results, plot, name):
    import matplotlib.pyplot as plt

    fig = getattr(plots_ch05, plot)(results[name])
    assert len(fig.axes) >= 2
    plt.close(fig)


def _synthetic_noisy(bn, noisy, standard):
    run = lambda kind, acc, shift: {"variant": kind, "lr": 0.1, "step": [0, 1, 2], "train_acc": [0.1, acc, acc],
                                    "final_train_acc": acc, "final_test_acc": acc, "mean_train_acc": acc,
                                    "activation_percentiles": [[-2, -1, 0, 1, 2], [-2, -1, shift, 1, 2],
                                                               [-2, -1, 0, 1, 2]]}
    return {"results": {"runs": [run("standard", standard, 0.1), run("bn", bn, 0.01), run("noisy_bn", noisy, 0.5)]}}


def test_describe_noisy_bn_reads_the_numbers():
    text = plots_ch05.describe_noisy_bn(_synthetic_noisy(0.9, 0.85, 0.7))
    assert "BN 90.0%, noisy BN 85.0%, standard 70.0%" in text and "keeps 75% of that advantage" in text
    assert "the most stable is BN, the least noisy BN" in text
    assert "cannot test the claim" in plots_ch05.describe_noisy_bn(_synthetic_noisy(0.6, 0.6, 0.7))


def test_a_network_at_chance_is_not_called_stable():
    """Its activations stand still because it does not train: it is named, and left out of the ranking."""
    text = plots_ch05.describe_noisy_bn(_synthetic_noisy(0.9, 0.85, 0.11))
    assert "(standard, at chance)" in text and "of the networks that train, the most stable is BN" in text
    assert "the most stable is standard" not in text


def _synthetic_ics(cos_std, cos_bn, rel_std, rel_bn):
    def run(use_bn, cos, rel):
        return {"use_bn": use_bn, "lr": 0.1, "step": [0, 1],
                "l2": {"1": [rel, rel]}, "grad_norm": {"1": [1.0, 1.0]}, "cosine": {"1": [cos, cos]}}
    return {"config": {"layers": [1], "dln_layers": [1]},
            "results": {"cnn": [run(False, cos_std, rel_std), run(True, cos_bn, rel_bn)],
                        "dln": [run(False, cos_std, rel_std), run(True, cos_bn, rel_bn)]}}


def test_describe_ics_verdicts():
    text = plots_ch05.describe_ics(_synthetic_ics(0.99, 0.2, 0.1, 0.5))
    assert "larger with BN in every measured layer" in text and "As in the paper" in text
    text = plots_ch05.describe_ics(_synthetic_ics(0.99, 0.98, 0.5, 0.1))
    assert "smaller with BN in every measured layer" in text and "does not show the paper's contrast" in text


def test_describe_landscape_ratios():
    def run(use_bn, scale):
        return {"use_bn": use_bn, "step": [0], "loss_min": [1.0], "loss_max": [1.0 + scale],
                "grad_distance_min": [0.0], "grad_distance_max": [2 * scale], "beta_smoothness": [3 * scale],
                "final_test_acc": 0.5}
    text = plots_ch05.describe_landscape({"results": {"runs": [run(False, 10.0), run(True, 0.5)],
                                                      "multipliers": [0.5, 4.0]}})
    assert "10 without BN and 0.5 with BN" in text and "20.0× more without" in text


def test_describe_depth_growth_predictions():
    res = {"gradients": [{"use_bn": True, "batch_size": 8, "factor_per_layer": 1.2, "grad_norms": [8.0, 4.0, 2.0]}],
           "residual": [{"use_bn": False, "second_moment": [1.0, 2.0, 4.0]},
                        {"use_bn": True, "second_moment": [1.0, 2.0, 3.0]}],
           "yang_factor": math.sqrt(math.pi / (math.pi - 1))}
    text = plots_ch05.describe_depth_growth({"results": res})
    assert "1.200 (batch 8)" in text and "ratio of 4 between" in text
    assert "(prediction 2^l: 4)" in text and "(prediction 1 + l: 3)" in text


# ------------------------------------------------------------------------ the recordings


RECORDED_CH05 = {name: ROOT / "results" / f"ch05_{name}.json" for name in bexp.CHAPTER_NAMES["ch05"]}


@pytest.mark.parametrize("name", list(RECORDED_CH05))
def test_recorded_ch05_results(name):
    path = RECORDED_CH05[name]
    if not path.is_file():
        pytest.skip(f"{path.name} not recorded")
    r = json.loads(path.read_text())
    assert r["experiment"] == name and r["profile"] in bexp.PROFILES
    if r["profile"] == "record-cpu":
        assert r["provenance"]["device"] == "cpu" and r["provenance"]["cuda"] is None
    expected = bexp.default_config(name, r["profile"])
    assert {k: r["config"][k] for k in expected} == expected          # recorded with the configuration shipped
    getattr(plots_ch05, {"percentiles": "describe_percentiles", "noisy_bn": "describe_noisy_bn",
                         "ics": "describe_ics", "landscape": "describe_landscape", "gamma_beta": "describe_gamma_beta",
                         "depth_growth": "describe_depth_growth"}[name])(r)
