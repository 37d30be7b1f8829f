"""Tests of solutions.ch03_bn_backward, with torch autograd (float64) as the oracle."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from solutions.ch02_bn_forward import batchnorm_forward, spatial_batchnorm_forward
from solutions.ch03_bn_backward import (
    batchnorm_backward,
    batchnorm_backward_compact,
    numerical_gradient,
    spatial_batchnorm_backward,
)
from numerics import assert_close

SETTINGS = settings(max_examples=40, deadline=None)


EPS = 1e-5
BACKWARDS = [batchnorm_backward, batchnorm_backward_compact]


def torch_bn_grads(x, gamma, beta, dout, eps=EPS):
    """(dx, dgamma, dbeta) of sum(batch_norm(x) * dout) by torch autograd in float64."""
    tx, tg, tb = (torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in (x, gamma, beta))
    out = F.batch_norm(tx, None, None, tg, tb, training=True, eps=eps)
    out.backward(torch.tensor(np.asarray(dout, dtype=np.float64)))
    return tx.grad.numpy(), tg.grad.numpy(), tb.grad.numpy()


def grad_tolerances(x, gamma, dout, dtype, axes=0):
    """Absolute tolerances for (dx, dgamma, dbeta) in the given dtype.

    dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat)): its scale is
    |gamma| / std * |dout|; x_hat is only known to eps_dtype * max|x| / std (cond).
    """
    x64 = np.asarray(x, dtype=np.float64)
    e = np.finfo(dtype).eps
    n = x64.size // x64.shape[1]
    std = np.sqrt(x64.var(axis=axes) + EPS)
    cond = np.abs(x64).max(axis=axes) / std
    dmax = np.abs(dout).max()
    dx_tol = (n + 16) * e * (1.0 + cond) * np.abs(gamma) / std * dmax
    sum_tol = (n + 16) * e * (1.0 + cond) * np.sqrt(n) * n * dmax
    if np.ndim(x) == 4:
        dx_tol = dx_tol[None, :, None, None]
    return dx_tol, sum_tol, (n + 4) * e * n * dmax


def rel_error(a, b):
    return np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))


@st.composite
def bn_problems(draw, min_n=2, max_n=64, max_d=16, dtypes=(np.float64,), offsets=(0.0, 1.0, -50.0, 1e4)):
    """(x, gamma, beta, dout), x (N, D) with per-feature scales in [1e-3, 1e3]."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    dtype = draw(st.sampled_from(dtypes))
    offset = draw(st.sampled_from(offsets))
    log_scale = draw(st.floats(-3.0, 3.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scales = 10.0 ** np.clip(log_scale + rng.uniform(-1.0, 1.0, d), -3.0, 3.0)
    x = offset * rng.choice([-1.0, 1.0], d) + scales * rng.standard_normal((n, d))
    gamma = rng.uniform(0.2, 3.0, d) * rng.choice([-1.0, 1.0], d)
    beta = rng.normal(0.0, 2.0, d)
    dout = rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-2, 2)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, dout))


# ---------------------------------------------------------- numerical_gradient


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from([(3,), (2, 3), (2, 2, 3)]))
def test_numerical_gradient_of_square(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    dout = rng.normal(size=shape)
    x_before, dout_before = x.copy(), dout.copy()
    dx = numerical_gradient(lambda z: z**2, x, dout)
    np.testing.assert_array_equal(x, x_before, err_msg="numerical_gradient changed x")
    np.testing.assert_array_equal(dout, dout_before)
    assert dx.shape == x.shape and dx.dtype == np.float64
    np.testing.assert_allclose(dx, 2 * x * dout, rtol=1e-7, atol=1e-9)


def test_numerical_gradient_of_matrix_product():
    rng = np.random.default_rng(0)
    X, A = rng.normal(size=(4, 3)), rng.normal(size=(3, 5))
    dout = rng.normal(size=(4, 5))
    np.testing.assert_allclose(numerical_gradient(lambda Z: Z @ A, X, dout), dout @ A.T, rtol=1e-8, atol=1e-10)
    # with respect to the right factor: d sum((X @ B) * dout) / dB = X.T @ dout
    np.testing.assert_allclose(numerical_gradient(lambda B: X @ B, A, dout), X.T @ dout, rtol=1e-8, atol=1e-10)
    # a non-linear matrix function: f(X) = tanh(X) @ A -> (dout @ A.T) * (1 - tanh(X)^2)
    np.testing.assert_allclose(numerical_gradient(lambda Z: np.tanh(Z) @ A, X, dout),
                               (dout @ A.T) * (1 - np.tanh(X) ** 2), rtol=1e-7, atol=1e-9)


def test_numerical_gradient_with_aliasing_and_mutating_functions():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4))
    dout = rng.normal(size=(3, 4))
    x_before = x.copy()
    # f returns its argument itself (a view of x): the gradient is dout.
    np.testing.assert_allclose(numerical_gradient(lambda z: z, x, dout), dout, rtol=1e-8)
    np.testing.assert_allclose(numerical_gradient(lambda z: z[:, ::-1], x, dout[:, ::-1]), dout, rtol=1e-8)

    # f modifies its argument in place and returns it: f(x) = 2 x.
    def doubles_in_place(z):
        z *= 2.0
        return z

    np.testing.assert_allclose(numerical_gradient(doubles_in_place, x, dout), 2 * dout, rtol=1e-8)
    np.testing.assert_array_equal(x, x_before, err_msg="numerical_gradient changed x")


def test_numerical_gradient_of_batchnorm_with_uniform_dout_is_zero():
    """A sum loss is a useless check: the BN output always sums to N * beta."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3))
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    dx = numerical_gradient(lambda z: batchnorm_forward(z, gamma, beta)[0], x, np.ones((5, 3)))
    np.testing.assert_allclose(dx, 0.0, atol=1e-8)


def test_numerical_gradient_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        numerical_gradient(lambda z: z.sum(axis=0), np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="h must be positive"):
        numerical_gradient(lambda z: z, np.ones(3), np.ones(3), h=0.0)


def test_numerical_gradient_integer_input():
    dx = numerical_gradient(lambda z: z**3, np.array([1, 2, 3]), np.ones(3))
    assert dx.dtype == np.float64
    np.testing.assert_allclose(dx, [3.0, 12.0, 27.0], rtol=1e-8)


# -------------------------------------------- batchnorm_backward (+ compact)


@SETTINGS
@given(bn_problems())
def test_backward_matches_torch_autograd(problem):
    x, gamma, beta, dout = problem
    _, cache = batchnorm_forward(x, gamma, beta)
    ref = torch_bn_grads(x, gamma, beta, dout)
    dx_tol, sum_tol, beta_tol = grad_tolerances(x, gamma, dout, x.dtype)
    for backward in BACKWARDS:
        dx, dgamma, dbeta = backward(dout, cache)
        name = backward.__name__
        assert dx.shape == x.shape and dgamma.shape == gamma.shape and dbeta.shape == beta.shape
        assert_close(dx, ref[0], dx_tol, f"{name}: dx differs from torch autograd")
        assert_close(dgamma, ref[1], sum_tol, f"{name}: dgamma differs from torch autograd")
        assert_close(dbeta, ref[2], beta_tol, f"{name}: dbeta differs from torch autograd")


@SETTINGS
@given(bn_problems(dtypes=(np.float32,), offsets=(0.0, 1.0, -50.0)))
def test_backward_float32_against_float64_torch(problem):
    x, gamma, beta, dout = problem
    _, cache = batchnorm_forward(x, gamma, beta)
    ref = torch_bn_grads(x, gamma, beta, dout)
    dx_tol, sum_tol, beta_tol = grad_tolerances(x, gamma, dout, np.float32)
    for backward in BACKWARDS:
        dx, dgamma, dbeta = backward(dout, cache)
        assert dx.dtype == dgamma.dtype == dbeta.dtype == np.float32, backward.__name__
        assert_close(dx, ref[0], dx_tol, f"{backward.__name__}: float32 dx")
        assert_close(dgamma, ref[1], sum_tol, f"{backward.__name__}: float32 dgamma")
        assert_close(dbeta, ref[2], beta_tol, f"{backward.__name__}: float32 dbeta")


@SETTINGS
@given(bn_problems())
def test_staged_and_compact_agree_and_leave_inputs_alone(problem):
    x, gamma, beta, dout = problem
    _, cache = batchnorm_forward(x, gamma, beta)
    cache_before = copy.deepcopy(cache)
    dout_before = dout.copy()
    staged = batchnorm_backward(dout, cache)
    compact = batchnorm_backward_compact(dout, cache)
    np.testing.assert_array_equal(dout, dout_before, err_msg="backward modified dout")
    for key, value in cache_before.items():
        np.testing.assert_array_equal(cache[key], value, err_msg=f"backward modified cache[{key!r}]")
    dx_tol, sum_tol, beta_tol = grad_tolerances(x, gamma, dout, x.dtype)
    assert_close(staged[0], compact[0], dx_tol, "staged and compact dx differ")
    np.testing.assert_allclose(staged[1], compact[1], rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(staged[2], compact[2])


@SETTINGS
@given(bn_problems())
def test_dx_has_zero_mean_and_is_orthogonal_to_x_hat(problem):
    """Santurkar et al. Thm 4.1: per feature, sum(dx) = 0 and sum(dx * x_hat) = 0
    (exactly so up to the eps in sqrt(var + eps) -- which does not change the first)."""
    x, gamma, beta, dout = problem
    _, cache = batchnorm_forward(x, gamma, beta)
    x_hat, var = cache["x_hat"], cache["var"]
    # The natural magnitude of dx is |gamma| / std * |dout| (dx itself may vanish: N = 2).
    scale = np.abs(gamma) / np.sqrt(var + EPS) * np.abs(dout).max() * x.shape[0]
    for backward in BACKWARDS:
        dx, _, _ = backward(dout, cache)
        np.testing.assert_allclose(dx.sum(axis=0) / scale, 0.0, atol=1e-8, err_msg=backward.__name__)
        # With eps > 0, sum(x_hat^2) = N var / (var + eps), not N: the exact identity is
        # sum(dx * x_hat) = gamma / std * sum(dout * x_hat) * (1 - sum(x_hat^2) / N).
        std = np.sqrt(var + EPS)
        residual = gamma / std * (dout * x_hat).sum(axis=0) * (1.0 - (x_hat**2).sum(axis=0) / x.shape[0])
        # rounding: x_hat is known to about u * cond (cond = max|x| / std), and N terms are summed
        cond = np.abs(x).max(axis=0) / std
        atol = (x.shape[0] + 16) * np.finfo(x.dtype).eps * (1.0 + cond)
        assert_close((dx * x_hat).sum(axis=0) / scale, residual / scale, atol, backward.__name__)


def test_dx_orthogonal_to_x_hat_when_var_dominates_eps():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 100.0, size=(32, 4))
    dout = rng.normal(size=(32, 4))
    _, cache = batchnorm_forward(x, rng.normal(size=4), rng.normal(size=4))
    for backward in BACKWARDS:
        dx, _, _ = backward(dout, cache)
        scale = np.abs(cache["gamma"] / np.sqrt(cache["var"] + EPS)).max() * np.abs(dout).max() * 32
        np.testing.assert_allclose((dx * cache["x_hat"]).sum(axis=0) / scale, 0.0, atol=1e-10)
        np.testing.assert_allclose(dx.sum(axis=0) / scale, 0.0, atol=1e-12)


@SETTINGS
@given(bn_problems(max_n=6, max_d=3, offsets=(0.0, 5.0)))
def test_backward_matches_numerical_gradient(problem):
    x, gamma, beta, dout = problem
    # well-conditioned for differences: unit spread per feature (the truncation error of centered
    # differences grows like (h / std)**2), offsets kept
    x = (x - x.mean(axis=0)) / x.std(axis=0) + np.sign(x.mean(axis=0)) * np.minimum(np.abs(x.mean(axis=0)), 5.0)
    _, cache = batchnorm_forward(x, gamma, beta)
    num_dx = numerical_gradient(lambda z: batchnorm_forward(z, gamma, beta)[0], x, dout)
    num_dgamma = numerical_gradient(lambda g: batchnorm_forward(x, g, beta)[0], gamma, dout)
    num_dbeta = numerical_gradient(lambda b: batchnorm_forward(x, gamma, b)[0], beta, dout)
    scale = np.abs(dout).max() * np.abs(gamma).max() / np.sqrt(x.var(axis=0) + EPS).min()
    for backward in BACKWARDS:
        dx, dgamma, dbeta = backward(dout, cache)
        np.testing.assert_allclose(dx, num_dx, rtol=1e-5, atol=1e-7 * scale, err_msg=backward.__name__)
        np.testing.assert_allclose(dgamma, num_dgamma, rtol=1e-5, atol=1e-7 * np.abs(dout).sum())
        np.testing.assert_allclose(dbeta, num_dbeta, rtol=1e-5, atol=1e-7 * np.abs(dout).sum())


@pytest.mark.parametrize("backward", BACKWARDS)
def test_dgamma_dbeta_are_sums_not_means(backward):
    rng = np.random.default_rng(4)
    x, dout = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    _, cache = batchnorm_forward(x, np.ones(3), np.zeros(3))
    _, dgamma, dbeta = backward(dout, cache)
    np.testing.assert_allclose(dbeta, dout.sum(axis=0), rtol=1e-14)
    np.testing.assert_allclose(dgamma, (dout * cache["x_hat"]).sum(axis=0), rtol=1e-14)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_uniform_dout_gives_zero_dx(backward):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 3))
    _, cache = batchnorm_forward(x, rng.normal(size=3), rng.normal(size=3))
    dx, _, dbeta = backward(np.ones((8, 3)), cache)
    np.testing.assert_allclose(dx, 0.0, atol=1e-12)
    np.testing.assert_allclose(dbeta, 8.0)


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("value", [0.0, 2.5, 1e4 + 0.5])
def test_backward_constant_feature(backward, value):
    """var = 0: x_hat = 0 and dx = gamma / sqrt(eps) * (dout - mean(dout)), finite."""
    rng = np.random.default_rng(6)
    x = np.column_stack([rng.normal(size=6), np.full(6, value)])
    gamma, beta, dout = rng.normal(size=2), rng.normal(size=2), rng.normal(size=(6, 2))
    _, cache = batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dout, cache)
    assert np.all(np.isfinite(dx))
    expected = gamma[1] / np.sqrt(EPS) * (dout[:, 1] - dout[:, 1].mean())
    np.testing.assert_allclose(dx[:, 1], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dgamma[1], 0.0, atol=1e-6)
    ref = torch_bn_grads(x, gamma, beta, dout)
    np.testing.assert_allclose(dx, ref[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_backward_two_samples(backward):
    x = np.array([[1.0, -2.0, 7.0], [4.0, 2.0, 7.5]])
    gamma, beta = np.array([1.0, -0.5, 2.0]), np.zeros(3)
    dout = np.array([[0.3, -1.0, 2.0], [1.2, 0.4, -0.7]])
    _, cache = batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dout, cache)
    ref = torch_bn_grads(x, gamma, beta, dout)
    for a, b in zip((dx, dgamma, dbeta), ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_backward_rejects_wrong_dout_shape(backward):
    _, cache = batchnorm_forward(np.random.default_rng(7).normal(size=(4, 3)), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"dout must have shape \(4, 3\).*\(3, 4\)"):
        backward(np.ones((3, 4)), cache)


# -------------------------------------------------- spatial_batchnorm_backward


@st.composite
def spatial_problems(draw, dtypes=(np.float64,)):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if n * h * w < 2:
        h = 2
    dtype = draw(st.sampled_from(dtypes))
    offset = draw(st.sampled_from([0.0, 1.0, 1e4] if dtype == np.float64 else [0.0, 1.0]))
    log_scale = draw(st.floats(-3.0, 3.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scales = 10.0 ** np.clip(log_scale + rng.uniform(-1.0, 1.0, c), -3.0, 3.0)
    x = offset + scales[None, :, None, None] * rng.standard_normal((n, c, h, w))
    gamma = rng.uniform(0.2, 3.0, c) * rng.choice([-1.0, 1.0], c)
    beta = rng.normal(0.0, 2.0, c)
    dout = rng.standard_normal((n, c, h, w))
    return tuple(a.astype(dtype) for a in (x, gamma, beta, dout))


@SETTINGS
@given(spatial_problems(dtypes=(np.float32, np.float64)))
def test_spatial_backward_matches_torch_autograd(problem):
    x, gamma, beta, dout = problem
    _, cache = spatial_batchnorm_forward(x, gamma, beta)
    cache_before = copy.deepcopy(cache)
    dout_before = dout.copy()
    dx, dgamma, dbeta = spatial_batchnorm_backward(dout, cache)
    np.testing.assert_array_equal(dout, dout_before, err_msg="spatial backward modified dout")
    for key, value in cache_before.items():
        np.testing.assert_array_equal(cache[key], value, err_msg=f"spatial backward modified cache[{key!r}]")
    assert dx.shape == x.shape and dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    assert dx.dtype == x.dtype
    ref = torch_bn_grads(x, gamma, beta, dout)
    dx_tol, sum_tol, beta_tol = grad_tolerances(x, gamma, dout, x.dtype, axes=(0, 2, 3))
    assert_close(dx, ref[0], dx_tol, "spatial dx differs from torch autograd")
    assert_close(dgamma, ref[1], sum_tol, "spatial dgamma differs from torch autograd")
    assert_close(dbeta, ref[2], beta_tol, "spatial dbeta differs from torch autograd")
    # per channel: zero sum over (N, H, W), up to the rounding of dx (dx_tol, which grows with the
    # channel's condition max|x| / std) summed over the channel's values
    m = dx.size // dx.shape[1]
    assert_close(dx.sum(axis=(0, 2, 3)), np.zeros(dx.shape[1]), m * dx_tol.reshape(-1) + (m + 2) * np.finfo(x.dtype).eps
                 * np.abs(dx.astype(np.float64)).sum(axis=(0, 2, 3)), "spatial dx does not sum to zero per channel")


def test_spatial_backward_matches_numerical_gradient():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 3, 2, 3))
    gamma, beta, dout = rng.normal(size=3), rng.normal(size=3), rng.normal(size=x.shape)
    _, cache = spatial_batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = spatial_batchnorm_backward(dout, cache)
    num_dx = numerical_gradient(lambda z: spatial_batchnorm_forward(z, gamma, beta)[0], x, dout)
    num_dgamma = numerical_gradient(lambda g: spatial_batchnorm_forward(x, g, beta)[0], gamma, dout)
    assert rel_error(dx, num_dx) < 1e-6
    assert rel_error(dgamma, num_dgamma) < 1e-7
    np.testing.assert_allclose(dbeta, dout.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_spatial_backward_two_values_per_channel():
    x = np.array([[[[1.0, 3.0]], [[-2.0, 5.0]]]])  # (1, 2, 1, 2)
    gamma, beta = np.array([1.5, -1.0]), np.array([0.0, 1.0])
    dout = np.array([[[[0.5, -2.0]], [[1.0, 0.25]]]])
    _, cache = spatial_batchnorm_forward(x, gamma, beta)
    for a, b in zip(spatial_batchnorm_backward(dout, cache), torch_bn_grads(x, gamma, beta, dout)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_spatial_backward_rejects_wrong_dout_shape():
    _, cache = spatial_batchnorm_forward(np.random.default_rng(9).normal(size=(2, 3, 4, 5)), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3, 4, 5\).*\(2, 3, 5, 4\)"):
        spatial_batchnorm_backward(np.ones((2, 3, 5, 4)), cache)


# --------------------------------------------------------------------------- the cache contract

CONTRACT = ("x", "x_hat", "mean", "var", "gamma", "eps")

# A forward pass as a student may write it: it keeps the contract and nothing more.
CONTRACT_FORWARD = '''
import numpy as np


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    if x.shape[0] < 2:
        raise ValueError("batchnorm_forward needs N >= 2 in training mode")
    mean = x.mean(axis=0)
    var = x.var(axis=0)
    x_hat = (x - mean) / np.sqrt(var + eps)
    return gamma * x_hat + beta, {"x": x, "x_hat": x_hat, "mean": mean, "var": var, "gamma": gamma, "eps": eps}


def spatial_batchnorm_forward(x, gamma, beta, eps=1e-5):
    N, C, H, W = x.shape
    out, cache = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, eps)
    back = lambda a: np.ascontiguousarray(a.reshape(N, H, W, C).transpose(0, 3, 1, 2))
    return back(out), dict(cache, x=x, x_hat=back(cache["x_hat"]))
'''


def contract_only(cache):
    return {key: cache[key] for key in CONTRACT}


CONTRACT_PAIRS = [(batchnorm_forward, backward, (7, 4)) for backward in BACKWARDS] + [
    (spatial_batchnorm_forward, spatial_batchnorm_backward, (3, 4, 2, 5))]


@pytest.mark.parametrize("forward, backward, shape", CONTRACT_PAIRS, ids=lambda v: getattr(v, "__name__", "x"))
def test_backward_needs_only_the_contract_keys(forward, backward, shape):
    rng = np.random.default_rng(11)
    x, gamma, beta = rng.normal(3.0, 2.0, shape), rng.uniform(0.5, 2, 4), rng.normal(size=4)
    dout = rng.standard_normal(x.shape)
    _, cache = forward(x, gamma, beta)
    expected = torch_bn_grads(x, gamma, beta, dout)
    for got, want in zip(backward(dout, contract_only(cache)), expected):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_chapter_3_runs_with_a_forward_that_keeps_only_the_contract():
    """Chapter 3 asks students to paste their own chapter 2 forward pass: one that returns
    exactly the contract keys must carry the whole chapter (every cell, every check)."""
    from pathlib import Path

    import matplotlib

    from autograder import notebooks as nbgen

    matplotlib.use("Agg")
    chapter = Path(__file__).resolve().parents[1] / "chapters" / "ch03_bn_backward.md"
    nb = nbgen.generate(chapter, "instructor")
    cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    pasted = [cell for cell in cells if cell.metadata.get("nbgrader", {}).get("grade_id") == "ch02_forward_pass"]
    assert len(pasted) == 1
    pasted[0].source = CONTRACT_FORWARD
    namespace = {"__name__": "__main__"}
    for number, cell in enumerate(cells, 1):
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        exec(compile(source, f"chapter 3, code cell {number}", "exec"), namespace)
    _, cache = namespace["batchnorm_forward"](np.ones((2, 3)) * [[1.0], [2.0]], np.ones(3), np.zeros(3))
    assert tuple(cache) == CONTRACT                          # the chapter really ran on the contract alone
