"""Public checks of chapter 5: properties, NumPy and PyTorch as oracles (no reference needed)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from autograder.feedback import Mismatch, check_array, check_unchanged_model, unpack
from autograder.messages.ch05_covariate_shift import MSG
from autograder.ops import torch_models as TM


def number(value, name):
    """A returned scalar as a float, or a Mismatch that says what came back."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.ndarray)):
        raise Mismatch(f"{name} should be a float, got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise Mismatch(f"{name} should be a single number, got an array of shape {value.shape}")
        value = value.reshape(())
    return float(value)


def mlp_layers(rng, sizes=(6, 8, 8, 3)):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append({"type": "linear", "weight": rng.normal(0, 1 / math.sqrt(n_in), (n_out, n_in)),
                       "bias": rng.normal(0, 0.1, n_out)})
        if i < len(sizes) - 2:
            layers.append({"type": "tanh"})
    return layers


def cnn_bn_layers(rng, c_in=2, c=4, side=5, classes=3):
    def bn(n):
        return {"type": "bn2d", "weight": rng.uniform(0.5, 1.5, n), "bias": rng.normal(0, 0.5, n),
                "running_mean": np.zeros(n), "running_var": np.ones(n)}
    return [
        {"type": "conv", "weight": rng.normal(0, 0.3, (c, c_in, 3, 3)), "bias": None, "padding": 1}, bn(c),
        {"type": "relu"},
        {"type": "conv", "weight": rng.normal(0, 0.3, (c, c, 3, 3)), "bias": None, "padding": 1}, bn(c),
        {"type": "relu"}, {"type": "flatten"},
        {"type": "linear", "weight": rng.normal(0, 0.1, (classes, c * side * side)), "bias": rng.normal(0, 0.1, classes)},
    ]


# ----------------------------------------------------------------------------- ics_metrics


@pytest.mark.exercise("ics_metrics")
@pytest.mark.points(1)
def test_ics_metrics_public(student):
    rng = np.random.default_rng(10)
    pairs = [(rng.standard_normal((4, 3)), rng.standard_normal((4, 3))),
             (np.array([3.0, 4.0]), np.array([6.0, 8.0])),
             (rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2)))]
    zeros = [(np.zeros((2, 3)), np.zeros((2, 3))), (np.zeros(4), np.array([1.0, -2.0, 0.5, 3.0]))]
    got = student.op("torch_models.ics_metrics_run", "ics_metrics", pairs + zeros)
    for (G, Gp), result in zip(pairs, got["results"]):
        l2, cos = unpack(result, 2, "l2, cosine")
        a, b = G.ravel(), Gp.ravel()
        distance, cosine = np.linalg.norm(a - b), a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        rows = np.mean([r @ q / np.linalg.norm(r) / np.linalg.norm(q) for r, q in zip(G, Gp)]) if G.ndim == 2 else None
        where = f"G of shape {G.shape}"
        check_array(number(l2, "l2"), distance, f"l2 ({where}; NumPy: np.linalg.norm(G - G'))", rtol=1e-9,
                    mistakes={MSG["l2_squared"]: distance ** 2, MSG["l2_mean"]: distance / np.sqrt(a.size),
                              MSG["l2_relative"]: distance / np.linalg.norm(a)})
        cos_mistakes = {MSG["cos_dot"]: a @ b, MSG["cos_distance"]: 1 - cosine}
        if rows is not None:
            cos_mistakes[MSG["cos_rows"]] = rows
        check_array(number(cos, "cosine"), cosine, f"cosine ({where}; NumPy: G.G' / (|G| |G'|) over all entries)",
                    rtol=1e-9, mistakes=cos_mistakes)
    for (G, Gp), result, want in zip(zeros, got["results"][len(pairs):], (1.0, 0.0)):
        cos = number(unpack(result, 2, "l2, cosine")[1], "cosine")
        if not math.isfinite(cos):
            raise Mismatch(f"cosine of G of shape {G.shape} (zero) and G' ({'zero' if not Gp.any() else 'not zero'}) "
                           f"is {cos}. {MSG['zero_nan']}", mistake="zero_nan")
        check_array(cos, np.asarray(want), f"cosine of a zero G and a {'zero' if not Gp.any() else 'nonzero'} G' "
                    "(the chapter's convention: both zero 1, one zero 0)", atol=1e-12)


# ----------------------------------------------------------------------------- measure_ics


@pytest.mark.exercise("measure_ics")
@pytest.mark.points(1)
def test_measure_ics_properties_public(student):
    """Layer 0 has no earlier layer; lr = 0 moves nothing; the shift grows about linearly with small lr."""
    rng = np.random.default_rng(11)
    layers = mlp_layers(rng)
    x, y = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    calls = [(0, 0.5), (2, 0.0), (2, 1e-3), (2, 2e-3), (1, 0.5)]
    runs = student.op("torch_models.ics_run", "measure_ics", layers, x, y, calls, mode="train")
    values = []
    for (layer, lr), run in zip(calls, runs):
        l2, cos = unpack(run["result"], 2, "l2, cosine")
        values.append((number(l2, "l2"), number(cos, "cosine")))
        check_unchanged_model(run, "measure_ics")
    if abs(values[1][0]) > 1e-12 or abs(values[1][1] - 1) > 1e-9:
        raise Mismatch(f"measure_ics gives (l2, cosine) = {values[1]} with lr = 0; nothing moves, G' = G, so "
                       f"expected (0, 1)")
    if abs(values[0][0]) > 1e-12 or abs(values[0][1] - 1) > 1e-9:
        raise Mismatch(f"measure_ics gives (l2, cosine) = {values[0]} for layer 0 with lr = 0.5; no layer comes "
                       f"before layer 0, so G' = G and the answer is (0, 1). Something else moved: "
                       f"{MSG['ics_all']} Or: {MSG['ics_self_too']}", mistake="ics_moves_non_earlier_layers")
    ratio = values[3][0] / values[2][0] if values[2][0] else float("inf")
    if not 1.9 < ratio < 2.1:
        raise Mismatch(f"doubling a small lr (1e-3 to 2e-3) multiplies the l2 shift of layer 2 by {ratio:.3g}, "
                       f"expected about 2 (G' - G is about proportional to the step of the earlier layers)")
    if not (values[4][0] > 0 and -1 <= values[4][1] < 1):
        raise Mismatch(f"for layer 1 with lr = 0.5, (l2, cosine) = {values[4]}: expected l2 > 0 and a cosine below 1")


# ----------------------------------------------------------------------------- landscape_along_gradient


@pytest.mark.exercise("landscape_along_gradient")
@pytest.mark.points(1)
def test_landscape_properties_public(student):
    rng = np.random.default_rng(12)
    layers = cnn_bn_layers(rng)
    x, y = rng.standard_normal((6, 2, 5, 5)), rng.integers(0, 3, 6)
    multipliers = [0.0, 0.5, 1.0, 2.0]
    run = student.op("torch_models.landscape_run", "landscape_along_gradient", layers, x, y, 0.1, multipliers)
    result = run["result"]
    if not isinstance(result, dict) or not {"losses", "grad_distances", "beta_smoothness"} <= set(result):
        raise Mismatch("landscape_along_gradient should return a dict with the keys losses, grad_distances "
                       "and beta_smoothness")
    for key in ("losses", "grad_distances"):
        if not isinstance(result[key], (list, tuple)) or len(result[key]) != len(multipliers):
            raise Mismatch(f"result[{key!r}] should be a list of {len(multipliers)} floats, one per multiplier")
    model = TM.build_model(layers).train()
    loss = nn.CrossEntropyLoss()(model(torch.tensor(x)), torch.tensor(y))
    g_norm = float(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]).norm())
    loss0 = float(loss.detach())
    check_array(number(result["losses"][0], "losses[0]"), np.asarray(loss0),
                "losses[0] (multiplier 0: the loss at the current weights, training mode)", rtol=1e-9,
                mistakes={MSG["ls_delta"]: np.asarray(0.0)})
    check_array(number(result["grad_distances"][0], "grad_distances[0]"), np.asarray(0.0),
                "grad_distances[0] (multiplier 0: no step, same gradient)", atol=1e-12,
                mistakes={MSG["ls_grad_norm"]: np.asarray(g_norm)})
    if not number(result["losses"][1], "losses[1]") < loss0:
        raise Mismatch(f"a small step along -grad (multiplier 0.5, lr 0.1) should lower the loss, and it rose. "
                       f"{MSG['ls_ascent']}", mistake="ls_ascent")
    beta = number(result["beta_smoothness"], "beta_smoothness")
    if not (math.isfinite(beta) and beta > 0):
        raise Mismatch(f"beta_smoothness = {beta}: expected a positive finite number (steps of zero length "
                       f"are left out of the maximum)")
    # beta from the submission's own distances: max over c != 0 of ||grad L(w_c) - g|| / ||c lr g||.
    distances = [number(d, "grad_distances[i]") for d in result["grad_distances"]]
    ratios = [d / (abs(c) * 0.1 * g_norm) for c, d in zip(multipliers, distances) if c]
    check_array(beta, np.asarray(max(ratios)), "beta_smoothness (the largest ratio of your grad_distances to the "
                "step lengths ||c * lr * g||)", rtol=1e-6,
                mistakes={MSG["ls_beta_mean"]: np.asarray(np.mean(ratios)),
                          MSG["ls_beta_no_gnorm"]: np.asarray(max(r * g_norm for r in ratios))})
    check_unchanged_model(run, "landscape_along_gradient")


# ----------------------------------------------------------------------------- NoisyBatchNorm2d


@pytest.mark.exercise("NoisyBatchNorm2d")
@pytest.mark.points(1)
def test_noisy_bn_public(student):
    """Eval mode is plain BN (running statistics, no noise); training mode draws fresh noise."""
    rng = np.random.default_rng(13)
    xs = [rng.standard_normal((6, 3, 4, 4)) * 2 + 1 for _ in range(3)]
    xs.append(xs[-1])
    eval_x = rng.standard_normal((2, 3, 4, 4))
    got = student.op("torch_models.noisy_bn_run", "NoisyBatchNorm2d", 3, {}, xs, eval_x, seed=0)
    bn = nn.BatchNorm2d(3).double()
    for x in xs:
        bn(torch.tensor(x))
    with torch.no_grad():
        want = bn.eval()(torch.tensor(eval_x)).numpy()
    for out in got["train_out"]:
        if not isinstance(out, np.ndarray) or out.shape != xs[0].shape:
            raise Mismatch(f"the training-mode output should have the input's shape {xs[0].shape}")
    if np.allclose(got["train_out"][-1], got["train_out"][-2]):
        raise Mismatch("two training-mode calls on the same input gave the same output: the noise must be "
                       "redrawn at every call")
    if not np.array_equal(got["eval_out"][0], got["eval_out"][1]):
        raise Mismatch("two eval-mode calls on the same input differ: the noise is applied in eval mode too; "
                       "in eval mode NoisyBatchNorm2d is plain BN", mistake="noisy_in_eval_mode")
    check_array(got["eval_out"][0], want, "the eval-mode output (compared with nn.BatchNorm2d after the same "
                "training steps)", rtol=1e-7, atol=1e-9)
