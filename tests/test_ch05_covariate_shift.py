"""Tests of solutions/ch05_covariate_shift.py against independent computations."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solutions.ch05_covariate_shift import (
    NoisyBatchNorm2d,
    ics_metrics,
    landscape_along_gradient,
    measure_ics,
)


# --------------------------------------------------------------------------- helpers


def tiny_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)
    ).double()


def tiny_cnn(use_bn=True, dropout=False):
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 4, 3, padding=1, bias=not use_bn)]
    layers += [nn.BatchNorm2d(4)] if use_bn else []
    layers += [nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=not use_bn)]
    layers += [nn.BatchNorm2d(4)] if use_bn else []
    layers += [nn.ReLU()] + ([nn.Dropout(0.3)] if dropout else [])
    layers += [nn.Flatten(), nn.Linear(4 * 5 * 5, 3)]
    model = nn.Sequential(*layers).double()
    with torch.no_grad():  # non-trivial BN affine parameters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return model


def mlp_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(10, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (10,), generator=g)


def cnn_data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(6, 2, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    )


def assert_unchanged(model, snap):
    state, modes, grads = snap
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), f"{k} changed"
    assert [m.training for m in model.modules()] == modes
    for p, g in zip(model.parameters(), grads):
        if g is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, g)


def weighted_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def independent_ics(model, layer, x, y, lr):
    """Definition 2.1 with a deep copy and a manual SGD step (the documented choice:
    every parameter registered before the layer's weight moves, BN gamma/beta included)."""
    m = copy.deepcopy(model)
    target = weighted_layers(m)[layer].weight
    params = list(m.parameters())
    earlier = params[: next(i for i, p in enumerate(params) if p is target)]
    m.zero_grad()
    F.cross_entropy(m(x), y).backward()
    G = target.grad.clone()
    with torch.no_grad():
        for p in earlier:
            if p.grad is not None:
                p -= lr * p.grad
    m.zero_grad()
    F.cross_entropy(m(x), y).backward()
    G2 = target.grad.clone()
    l2 = (G - G2).norm().item()
    cos = (G * G2).sum().item() / (G.norm().item() * G2.norm().item())
    return l2, cos


# --------------------------------------------------------------------------- ics_metrics


def test_ics_metrics_analytic_cases():
    a = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert ics_metrics(a, a) == (0.0, 1.0)
    l2, cos = ics_metrics(a, -a)
    assert l2 == pytest.approx(10.0) and cos == pytest.approx(-1.0)
    l2, cos = ics_metrics(a, 3 * a)
    assert l2 == pytest.approx(10.0) and cos == pytest.approx(1.0)
    b = torch.tensor([[0.0, 1.0], [2.0, 0.0]])  # orthogonal to a
    l2, cos = ics_metrics(a, b)
    assert l2 == pytest.approx(math.sqrt(25 + 5)) and cos == pytest.approx(0.0, abs=1e-15)
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    l2, cos = ics_metrics(u, v)
    assert l2 == pytest.approx(1.0) and cos == pytest.approx(1 / math.sqrt(2))


def test_ics_metrics_zero_vectors_and_types():
    z = torch.zeros(3)
    assert ics_metrics(z, z) == (0.0, 1.0)
    l2, cos = ics_metrics(z, torch.tensor([0.0, 3.0, 4.0]))
    assert (l2, cos) == (5.0, 0.0)
    l2, cos = ics_metrics(np.array([1.0, 2.0]), np.array([2.0, 4.0]))
    assert type(l2) is float and type(cos) is float
    assert cos == pytest.approx(1.0) and l2 == pytest.approx(math.sqrt(5))


def test_ics_metrics_random_against_numpy_and_inputs_unchanged():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        A = torch.randn(4, 3, 2, generator=g, dtype=dtype)
        B = torch.randn(4, 3, 2, generator=g, dtype=dtype)
        A0, B0 = A.clone(), B.clone()
        l2, cos = ics_metrics(A, B)
        a, b = A.double().numpy().ravel(), B.double().numpy().ravel()
        assert l2 == pytest.approx(np.linalg.norm(a - b), rel=1e-12)
        assert cos == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-12)
        assert torch.equal(A, A0) and torch.equal(B, B0)


def test_ics_metrics_shape_mismatch():
    with pytest.raises(ValueError):
        ics_metrics(torch.zeros(2, 3), torch.zeros(3, 2))


# --------------------------------------------------------------------------- measure_ics


@pytest.mark.parametrize("lr", [0.1, 1.0])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_measure_ics_mlp_matches_independent_computation(layer, lr):
    model = tiny_mlp()
    x, y = mlp_data()
    got = measure_ics(model, layer, x, y, F.cross_entropy, lr)
    want = independent_ics(model, layer, x, y, lr)
    assert got[0] == pytest.approx(want[0], rel=1e-9, abs=1e-14)
    assert got[1] == pytest.approx(want[1], rel=1e-9)
    if layer > 0:
        assert got[0] > 0 and got[1] < 1


@pytest.mark.parametrize("use_bn", [True, False])
@pytest.mark.parametrize("layer", [0, 1, 2, -1])
def test_measure_ics_cnn_matches_independent_computation(use_bn, layer):
    model = tiny_cnn(use_bn).train()
    x, y = cnn_data()
    got = measure_ics(model, layer, x, y, F.cross_entropy, 0.5)
    want = independent_ics(model, layer % 3, x, y, 0.5)
    assert got[0] == pytest.approx(want[0], rel=1e-9, abs=1e-14)
    assert got[1] == pytest.approx(want[1], rel=1e-9)


def test_measure_ics_first_layer_has_no_shift():
    for model, (x, y) in [(tiny_mlp(), mlp_data()), (tiny_cnn(True), cnn_data())]:
        l2, cos = measure_ics(model, 0, x, y, F.cross_entropy, 10.0)
        assert l2 == 0.0
        assert cos == pytest.approx(1.0, abs=1e-12)


def test_measure_ics_bn_parameters_of_earlier_blocks_move():
    """Only BN's beta before layer 1 differs from zero-lr: a shift still appears at layer 1."""
    model = tiny_cnn(True).train()
    x, y = cnn_data()
    # freeze the first convolution: only bn1's gamma/beta can move before layer 1
    model[0].weight.requires_grad_(False)
    l2, _ = measure_ics(model, 1, x, y, F.cross_entropy, 0.5)
    assert l2 > 1e-6
    want = independent_ics(model, 1, x, y, 0.5)
    assert l2 == pytest.approx(want[0], rel=1e-9)


def test_measure_ics_leaves_model_unchanged():
    model = tiny_cnn(True).train()
    x, y = cnn_data()
    model(x)  # running statistics away from their initial values
    F.cross_entropy(model(x), y).backward()  # existing .grad must survive
    model[1].eval()  # mixed modes must survive
    snap = snapshot(model)
    rng = torch.get_rng_state()
    for layer in range(3):
        measure_ics(model, layer, x, y, F.cross_entropy, 0.3)
    assert_unchanged(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)
    model.eval()
    snap = snapshot(model)
    measure_ics(model, 2, x, y, F.cross_entropy, 0.3)
    assert_unchanged(model, snap)


def test_measure_ics_same_randomness_in_both_passes():
    model = tiny_cnn(False, dropout=True).train()
    x, y = cnn_data()
    l2, cos = measure_ics(model, 0, x, y, F.cross_entropy, 1.0)
    assert l2 == 0.0  # same dropout mask in both passes


def test_measure_ics_errors():
    model = tiny_mlp()
    x, y = mlp_data()
    with pytest.raises(IndexError):
        measure_ics(model, 3, x, y, F.cross_entropy, 0.1)
    with pytest.raises(IndexError):
        measure_ics(model, -4, x, y, F.cross_entropy, 0.1)
    with pytest.raises(ValueError):
        measure_ics(nn.Sequential(nn.ReLU()), 0, x, y, F.cross_entropy, 0.1)
    with pytest.raises(ValueError):
        measure_ics(model, 0, x, y, lambda out, t: F.cross_entropy(out, t, reduction="none"), 0.1)


# --------------------------------------------------------------------------- landscape_along_gradient


def test_landscape_lengths_zero_multiplier_and_unchanged_model():
    model = tiny_cnn(True).train()
    x, y = cnn_data()
    model(x)
    F.cross_entropy(model(x), y).backward()
    snap = snapshot(model)
    with torch.no_grad():
        current = F.cross_entropy(copy.deepcopy(model)(x), y).item()
    mults = [0.0, 0.5, 1.0, 2.0, 4.0]
    res = landscape_along_gradient(model, x, y, F.cross_entropy, 0.1, mults)
    assert set(res) == {"losses", "grad_distances", "beta_smoothness"}
    assert len(res["losses"]) == len(res["grad_distances"]) == len(mults)
    assert res["losses"][0] == pytest.approx(current, rel=1e-12)
    assert res["grad_distances"][0] == pytest.approx(0.0, abs=1e-12)
    assert all(isinstance(v, float) for v in res["losses"] + res["grad_distances"])
    assert isinstance(res["beta_smoothness"], float) and res["beta_smoothness"] > 0
    assert_unchanged(model, snap)
    assert landscape_along_gradient(model, x, y, F.cross_entropy, 0.1, [])["losses"] == []
    assert math.isnan(landscape_along_gradient(model, x, y, F.cross_entropy, 0.1, [0])["beta_smoothness"])


def test_landscape_matches_independent_computation():
    model = tiny_mlp()
    x, y = mlp_data()
    lr, mults = 0.2, [0.5, 1.0, 3.0]
    res = landscape_along_gradient(model, x, y, F.cross_entropy, lr, mults)
    m = copy.deepcopy(model)
    F.cross_entropy(m(x), y).backward()
    w0 = [p.detach().clone() for p in m.parameters()]
    g0 = [p.grad.clone() for p in m.parameters()]
    gnorm = torch.sqrt(sum((g**2).sum() for g in g0)).item()
    ratios = []
    for k, c in enumerate(mults):
        with torch.no_grad():
            for p, w, g in zip(m.parameters(), w0, g0):
                p.copy_(w - c * lr * g)
        m.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        dist = torch.sqrt(sum(((p.grad - g) ** 2).sum() for p, g in zip(m.parameters(), g0))).item()
        assert res["losses"][k] == pytest.approx(loss.item(), rel=1e-10)
        assert res["grad_distances"][k] == pytest.approx(dist, rel=1e-9)
        ratios.append(dist / (c * lr * gnorm))
    assert res["beta_smoothness"] == pytest.approx(max(ratios), rel=1e-9)


def test_landscape_quadratic_loss_exact_values():
    """Linear model + MSE: L(theta) is quadratic with constant Hessian H = 2/N A^T A,
    A = [X, 1]. Along -s*g: L = L0 - s|g|^2 + s^2/2 g^T H g and
    grad(theta - s g) - g = -s H g, so beta = |H g| / |g| for every step."""
    torch.manual_seed(0)
    N, D = 20, 4
    X = torch.randn(N, D, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.3, 2.0], dtype=torch.float64)
    t = torch.randn(N, 1, dtype=torch.float64)
    model = nn.Linear(D, 1).double()
    A = torch.cat([X, torch.ones(N, 1, dtype=torch.float64)], dim=1)
    theta = torch.cat([model.weight.detach().ravel(), model.bias.detach()])
    H = 2.0 / N * A.T @ A
    g = 2.0 / N * A.T @ (A @ theta - t.ravel())
    L0 = ((A @ theta - t.ravel()) ** 2).mean()
    lr, mults = 0.05, [0.0, 0.25, 1.0, 2.0, 5.0]
    res = landscape_along_gradient(model, X, t, F.mse_loss, lr, mults)
    Hg, gg, gHg = H @ g, g @ g, g @ H @ g
    for k, c in enumerate(mults):
        s = c * lr
        assert res["losses"][k] == pytest.approx((L0 - s * gg + 0.5 * s * s * gHg).item(), rel=1e-10)
        assert res["grad_distances"][k] == pytest.approx((s * Hg.norm()).item(), rel=1e-9, abs=1e-12)
    beta = (Hg.norm() / g.norm()).item()
    assert res["beta_smoothness"] == pytest.approx(beta, rel=1e-9)
    # and it is bounded by the largest eigenvalue of H (the global smoothness constant)
    assert res["beta_smoothness"] <= torch.linalg.eigvalsh(H).max().item() * (1 + 1e-12)


def test_landscape_frozen_parameters_do_not_move():
    model = tiny_mlp()
    model[0].weight.requires_grad_(False)
    x, y = mlp_data()
    res = landscape_along_gradient(model, x, y, F.cross_entropy, 0.2, [1.0])
    m = copy.deepcopy(model)
    F.cross_entropy(m(x), y).backward()
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p -= 0.2 * p.grad
        assert res["losses"][0] == pytest.approx(F.cross_entropy(m(x), y).item(), rel=1e-10)


# --------------------------------------------------------------------------- NoisyBatchNorm2d


def test_noisy_bn_eval_equals_batchnorm_eval_and_state_dict():
    torch.manual_seed(0)
    noisy = NoisyBatchNorm2d(4)
    ref = nn.BatchNorm2d(4)
    assert list(noisy.state_dict()) == ["bn." + k for k in ref.state_dict()]
    assert (noisy.n_mu, noisy.n_sigma, noisy.r_mu, noisy.r_sigma) == (0.5, 1.25, 0.1, 0.1)
    # same training updates of the running statistics as plain BN
    for _ in range(3):
        x = torch.randn(8, 4, 5, 5) * 3 + 1
        noisy.train()(x)
        ref.train()(x)
    torch.testing.assert_close(noisy.bn.running_mean, ref.running_mean)
    torch.testing.assert_close(noisy.bn.running_var, ref.running_var)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.normal_()
    noisy.bn.load_state_dict(ref.state_dict())
    noisy.eval()
    ref.eval()
    x = torch.randn(3, 4, 6, 6)
    assert torch.equal(noisy(x), ref(x))
    assert torch.equal(noisy(x), noisy(x))  # no noise in eval mode


def signed_input(N=64, C=16, H=8, W=8, seed=0):
    """Per channel exactly half +1 and half -1: bn(x) = x / sqrt(1 + eps)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.ones(N * H * W, dtype=torch.float64)
    base[: N * H * W // 2] = -1
    cols = [base[torch.randperm(N * H * W, generator=g)] for _ in range(C)]
    return torch.stack(cols).reshape(C, N, H, W).permute(1, 0, 2, 3).contiguous()


def test_noisy_bn_without_per_element_noise_is_a_per_channel_affine_map():
    x = signed_input()
    noisy = NoisyBatchNorm2d(16, r_mu=0.0, r_sigma=0.0).double().train()
    out = noisy(x)
    plus, minus = x > 0, x < 0
    for j in range(16):
        hi, lo = out[:, j][plus[:, j]], out[:, j][minus[:, j]]
        assert torch.allclose(hi, hi[0]) and torch.allclose(lo, lo[0])  # s, m constant per channel
        sigma, mu = (hi[0] - lo[0]) / 2, (hi[0] + lo[0]) / 2
        assert 1.0 - 1e-5 <= sigma <= 1.25 + 1e-5
        assert -0.5 - 1e-5 <= mu <= 0.5 + 1e-5


def test_noisy_bn_noise_statistics():
    x = signed_input()
    noisy = NoisyBatchNorm2d(16, generator=torch.Generator().manual_seed(3)).double().train()
    plus = (x > 0).double()
    half = plus.sum(dim=(0, 2, 3))  # values per sign and channel
    mus, sigmas, resid = [], [], []
    for _ in range(40):  # mu, sigma are redrawn at every step
        out = noisy(x).detach()
        hi = (out * plus).sum(dim=(0, 2, 3)) / half  # mean output where bn(x) = +1
        lo = (out * (1 - plus)).sum(dim=(0, 2, 3)) / half  # ... and where bn(x) = -1
        sigma, mu = (hi - lo) / 2, (hi + lo) / 2
        mus.append(mu)
        sigmas.append(sigma)
        dev = (out - (sigma + mu).reshape(1, -1, 1, 1)) * plus
        resid.append(torch.sqrt((dev**2).sum(dim=(0, 2, 3)) / half))
    mus, sigmas = torch.cat(mus).numpy(), torch.cat(sigmas).numpy()
    resid = torch.cat(resid).numpy()
    # per-channel shift ~ U(-0.5, 0.5), scale ~ U(1, 1.25) (estimation error ~0.003)
    assert mus.min() >= -0.6 and mus.max() <= 0.6
    assert sigmas.min() >= 0.9 and sigmas.max() <= 1.35
    assert mus.min() < -0.4 and mus.max() > 0.4
    assert sigmas.min() < 1.05 and sigmas.max() > 1.2
    assert abs(mus.mean()) < 0.05 and abs(mus.std() - 0.5 / math.sqrt(3)) < 0.04
    assert abs(sigmas.mean() - 1.125) < 0.015 and abs(sigmas.std() - 0.25 / math.sqrt(12)) < 0.015
    # per-element noise: var = r_sigma^2 * a^2 + r_mu^2 / 3 with a = +-1
    assert np.mean(resid) == pytest.approx(math.sqrt(0.01 + 0.01 / 3), rel=0.05)


def test_noisy_bn_uniform_shift_support():
    """A constant channel has bn(x) = 0, so the output is m ~ U(mu - r_mu, mu + r_mu)."""
    noisy = NoisyBatchNorm2d(3, generator=torch.Generator().manual_seed(0)).train()
    x = torch.ones(32, 3, 8, 8)
    for _ in range(5):
        out = noisy(x)
        for j in range(3):
            v = out[:, j]
            assert v.max() - v.min() <= 0.2 + 1e-6
            assert v.max() - v.min() > 0.19
            assert -0.6 - 1e-6 <= v.min() and v.max() <= 0.6 + 1e-6
            assert v.mean().abs() <= 0.5 + 0.01


def test_noisy_bn_reproducible_with_generator_and_fresh_each_step():
    x = torch.randn(4, 3, 5, 5)
    a = NoisyBatchNorm2d(3, generator=torch.Generator().manual_seed(7))
    b = NoisyBatchNorm2d(3, generator=torch.Generator().manual_seed(7))
    c = NoisyBatchNorm2d(3, generator=torch.Generator().manual_seed(8))
    rng = torch.get_rng_state()
    ya1, yb1, yc1 = a(x), b(x), c(x)
    assert torch.equal(ya1, yb1)
    assert not torch.allclose(ya1, yc1)
    ya2 = a(x)
    assert not torch.allclose(ya1, ya2)  # redrawn at every step
    assert torch.equal(ya2, b(x))
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is not used
    torch.manual_seed(5)
    d1 = NoisyBatchNorm2d(3)(x)
    torch.manual_seed(5)
    d2 = NoisyBatchNorm2d(3)(x)
    assert torch.equal(d1, d2)


def test_noisy_bn_gradients_flow_through_bn_not_noise():
    noisy = NoisyBatchNorm2d(2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    out = noisy(x)
    out.sum().backward()
    assert x.grad is not None and noisy.bn.weight.grad is not None and noisy.bn.bias.grad is not None
    assert torch.isfinite(x.grad).all()
    assert out.shape == x.shape and out.dtype == x.dtype


def test_noisy_bn_errors():
    with pytest.raises(ValueError):
        NoisyBatchNorm2d(3, n_sigma=0.9)
    with pytest.raises(ValueError):
        NoisyBatchNorm2d(3, r_mu=-0.1)
