"""Tests of solutions.ch02_bn_forward, with torch.nn.functional.batch_norm as the oracle."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from solutions.ch02_bn_forward import (
    batchnorm_forward,
    batchnorm_inference,
    spatial_batchnorm_forward,
    update_running_stats,
)
from numerics import assert_close

SETTINGS = settings(max_examples=40, deadline=None)


EPS = 1e-5


def as_t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def torch_batch_norm(x, gamma, beta, running_mean=None, running_var=None,
                     training=True, momentum=0.1, eps=EPS):
    """float64 oracle; returns (out, new_running_mean, new_running_var) as NumPy arrays."""
    rm = None if running_mean is None else as_t(running_mean)
    rv = None if running_var is None else as_t(running_var)
    out = F.batch_norm(as_t(x), rm, rv, as_t(gamma), as_t(beta),
                       training=training, momentum=momentum, eps=eps)
    return (out.numpy(), None if rm is None else rm.numpy(), None if rv is None else rv.numpy())


def forward_tolerance(x, gamma, beta, axis=0, eps=EPS):
    """Rounding-error bound for gamma * (x - mean) / sqrt(var + eps) + beta in the dtype of x.

    The mean of large-offset data is only known to about eps_dtype * |x|, which is
    amplified by 1 / std; `cond` measures that, per feature.
    """
    x64 = x.astype(np.float64)
    e = np.finfo(x.dtype).eps
    n = x64.size // x64.shape[1]  # values per feature / channel
    keep = (0, 2, 3) if x.ndim == 4 else 0
    std = np.sqrt(x64.var(axis=keep) + eps)
    cond = np.abs(x64).max(axis=keep) / std
    tol = (n + 8) * e * (np.abs(gamma) * (1.0 + cond) + np.abs(beta))
    return tol[None, :, None, None] if x.ndim == 4 else tol


@st.composite
def bn_batches(draw, min_n=2, max_n=64, max_d=16, dtypes=(np.float32, np.float64)):
    """(x, gamma, beta): x (N, D) with per-feature scales in [1e-3, 1e3] and optional large
    offsets; gamma, beta (D,), all of one dtype."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    dtype = draw(st.sampled_from(dtypes))
    offset = draw(st.sampled_from([0.0, 1.0, -50.0, 1e4]))
    log_scale = draw(st.floats(-3.0, 3.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scales = 10.0 ** np.clip(log_scale + rng.uniform(-1.0, 1.0, d), -3.0, 3.0)
    x = offset * rng.choice([-1.0, 1.0], d) + scales * rng.standard_normal((n, d))
    gamma = rng.uniform(0.2, 3.0, d) * rng.choice([-1.0, 1.0], d)
    beta = rng.normal(0.0, 2.0, d)
    return x.astype(dtype), gamma.astype(dtype), beta.astype(dtype)


# ----------------------------------------------------------- batchnorm_forward


@SETTINGS
@given(bn_batches())
def test_batchnorm_forward_matches_torch(batch):
    x, gamma, beta = batch
    copies = [a.copy() for a in batch]
    out, cache = batchnorm_forward(x, gamma, beta)
    for before, after, name in zip(copies, batch, ["x", "gamma", "beta"]):
        np.testing.assert_array_equal(after, before, err_msg=f"batchnorm_forward modified {name}")
    assert out.dtype == x.dtype and out.shape == x.shape
    ref, _, _ = torch_batch_norm(x, gamma, beta)
    assert_close(out, ref, forward_tolerance(x, gamma, beta), "out differs from torch batch_norm")


@SETTINGS
@given(bn_batches())
def test_batchnorm_forward_cache(batch):
    x, gamma, beta = batch
    n, d = x.shape
    out, cache = batchnorm_forward(x, gamma, beta, eps=1e-3)
    assert {"x", "x_hat", "mean", "var", "gamma", "eps"} <= set(cache)
    for key in ("x", "x_hat"):
        assert cache[key].shape == (n, d) and cache[key].dtype == x.dtype, key
    for key in ("mean", "var", "gamma"):
        assert cache[key].shape == (d,) and cache[key].dtype == x.dtype, key
    assert cache["eps"] == 1e-3
    np.testing.assert_array_equal(cache["x"], x)
    np.testing.assert_array_equal(cache["gamma"], gamma)
    x64 = x.astype(np.float64)
    e = np.finfo(x.dtype).eps
    assert_close(cache["mean"], x64.mean(axis=0), (n + 2) * e * np.abs(x64).max(axis=0),   # a sum of n terms
                 "cache['mean'] differs from the column mean")
    var_ref = x64.var(axis=0)  # biased, not ddof=1
    var_tol = (n + 8) * e * (var_ref + np.abs(x64).max(axis=0) * np.sqrt(var_ref))
    assert_close(cache["var"], var_ref, var_tol, "cache['var'] is not the biased batch variance")
    # out = gamma * x_hat + beta
    assert_close(out, gamma * cache["x_hat"] + beta,
                 4 * e * (np.abs(gamma * cache["x_hat"]) + np.abs(beta)), "out != gamma * x_hat + beta")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_forward_two_samples(dtype):
    """N = 2: x_hat = +-sqrt(v / (v + eps)) with v = ((x1 - x2) / 2)^2."""
    x = np.array([[1.0, -3.0, 5.0, 1e4], [3.0, 5.0, 5.001, 1e4 + 1.0]], dtype=dtype)
    gamma = np.array([1.0, 2.0, -1.0, 0.5], dtype=dtype)
    beta = np.array([0.0, 1.0, 0.5, -2.0], dtype=dtype)
    out, cache = batchnorm_forward(x, gamma, beta)
    x64 = x.astype(np.float64)
    v = ((x64[1] - x64[0]) / 2) ** 2
    x_hat = np.array([-1.0, 1.0])[:, None] * np.sqrt(v / (v + EPS))
    rtol = 1e-12 if dtype == np.float64 else 2e-3  # x[:, 2] and x[:, 3] are ill-conditioned in float32
    np.testing.assert_allclose(out, gamma * x_hat + beta, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(out, torch_batch_norm(x, gamma, beta)[0], rtol=rtol, atol=rtol)


@SETTINGS
@given(
    st.sampled_from([np.float32, np.float64]),
    st.integers(2, 64),
    st.floats(-1e4, 1e4, width=32),
    st.integers(0, 2**32 - 1),
)
def test_batchnorm_forward_constant_feature_outputs_beta(dtype, n, value, seed):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.standard_normal(n), np.full(n, value)]).astype(dtype)
    gamma = np.array([1.5, -2.0], dtype=dtype)
    beta = np.array([0.3, 0.7], dtype=dtype)
    out, cache = batchnorm_forward(x, gamma, beta)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(cache["x_hat"]))
    np.testing.assert_allclose(out[:, 1], beta[1], rtol=0, atol=1e-6)
    if dtype == np.float32:  # float32 statistics are accumulated in float64: exact
        np.testing.assert_array_equal(out[:, 1], beta[1])
    # the constant column is beta exactly; the other column is off by a few ulp of x_hat
    # times gamma / sqrt(var + eps): 8 u |gamma| max|x| / sqrt(eps) covers both dtypes
    u = np.finfo(dtype).eps / 2
    atol = 8 * u * np.abs(gamma).max() * max(1.0, np.abs(x.astype(np.float64)).max()) / np.sqrt(1e-5)
    np.testing.assert_allclose(out, torch_batch_norm(x, gamma, beta)[0], rtol=0, atol=atol)


def test_batchnorm_forward_identity_is_recoverable():
    """gamma = sqrt(var + eps), beta = mean gives back x (Ioffe & Szegedy, Sec. 3)."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, size=(16, 4))
    out, _ = batchnorm_forward(x, np.sqrt(x.var(axis=0) + EPS), x.mean(axis=0))
    np.testing.assert_allclose(out, x, rtol=1e-12, atol=1e-12)


def test_batchnorm_forward_normalizes_with_biased_variance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3))  # small N makes unbiased vs biased obvious
    out, _ = batchnorm_forward(x, np.ones(3), np.zeros(3), eps=0.0)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1.0, rtol=1e-12)


def test_batchnorm_forward_integers_become_float64():
    out, cache = batchnorm_forward(np.array([[1, 2], [3, 6]]), np.array([1, 1]), np.array([0, 0]))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[-1.0, -1.0], [1.0, 1.0]], atol=1e-5)


def test_batchnorm_forward_float32_stays_float32_with_float64_parameters():
    x = np.random.default_rng(2).standard_normal((8, 3)).astype(np.float32)
    out, cache = batchnorm_forward(x, np.ones(3), np.zeros(3))
    assert out.dtype == np.float32 and cache["x_hat"].dtype == np.float32


def test_batchnorm_forward_rejects_a_single_sample():
    with pytest.raises(ValueError, match=r"at least 2 samples.*variance"):
        batchnorm_forward(np.ones((1, 3)), np.ones(3), np.zeros(3))


@pytest.mark.parametrize(
    "x, gamma, beta, pattern",
    [
        (np.ones(4), np.ones(4), np.zeros(4), r"\(N, D\).*\(4,\)"),
        (np.ones((2, 3, 4)), np.ones(3), np.zeros(3), r"\(N, D\).*\(2, 3, 4\)"),
        (np.ones((4, 3)), np.ones(4), np.zeros(3), r"gamma must have shape \(3,\).*\(4,\)"),
        (np.ones((4, 3)), np.ones(3), np.zeros((1, 3)), r"beta must have shape \(3,\).*\(1, 3\)"),
    ],
)
def test_batchnorm_forward_rejects_bad_shapes(x, gamma, beta, pattern):
    with pytest.raises(ValueError, match=pattern):
        batchnorm_forward(x, gamma, beta)


# -------------------------------------------------------- update_running_stats


@SETTINGS
@given(bn_batches(), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_update_running_stats_matches_torch_buffers(batch, momentum, seed):
    x, _, _ = batch
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    running_mean = rng.normal(0.0, 3.0, d).astype(x.dtype)
    running_var = rng.uniform(0.1, 5.0, d).astype(x.dtype)
    before = (running_mean.copy(), running_var.copy(), x.copy())
    new_mean, new_var = update_running_stats(running_mean, running_var, x, momentum=momentum)
    for b, a, name in zip(before, (running_mean, running_var, x), ["running_mean", "running_var", "x"]):
        np.testing.assert_array_equal(a, b, err_msg=f"update_running_stats modified {name}")
    assert new_mean.dtype == x.dtype and new_var.dtype == x.dtype
    assert new_mean.shape == (d,) and new_var.shape == (d,)
    _, ref_mean, ref_var = torch_batch_norm(x, np.ones(d), np.zeros(d), running_mean, running_var,
                                            training=True, momentum=momentum)
    # new = (1 - m) * old + m * mean(x) may cancel; mean(x) itself carries up to (n + 2) e max|x|
    # (a sum of n terms in any order), scaled by m.
    e, n = np.finfo(x.dtype).eps, x.shape[0]
    x64 = x.astype(np.float64)
    mean_tol = (4 * e * ((1 - momentum) * np.abs(running_mean) + momentum * np.abs(x64.mean(0)) + np.abs(ref_mean))
                + momentum * (n + 2) * e * np.abs(x64).max(0))
    assert_close(new_mean, ref_mean, mean_tol, "running mean differs from torch")
    np.testing.assert_allclose(new_var, ref_var, rtol=1e-4 if x.dtype == np.float32 else 1e-9)


def test_update_running_stats_several_batches_like_torch_module():
    rng = np.random.default_rng(3)
    bn = torch.nn.BatchNorm1d(5, dtype=torch.float64)  # momentum 0.1, buffers 0 and 1
    running_mean, running_var = np.zeros(5), np.ones(5)
    for _ in range(7):
        x = rng.normal(2.0, 3.0, size=(6, 5))
        bn(torch.tensor(x))
        running_mean, running_var = update_running_stats(running_mean, running_var, x)
    np.testing.assert_allclose(running_mean, bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(running_var, bn.running_var.numpy(), rtol=1e-12)


def test_update_running_stats_convention():
    """PyTorch: momentum weighs the *new* statistic; running_var uses N - 1."""
    x = np.array([[0.0], [2.0]])  # mean 1, biased var 1, unbiased var 2
    new_mean, new_var = update_running_stats(np.array([10.0]), np.array([10.0]), x, momentum=0.25)
    np.testing.assert_allclose(new_mean, [0.75 * 10 + 0.25 * 1])
    np.testing.assert_allclose(new_var, [0.75 * 10 + 0.25 * 2])


@pytest.mark.parametrize(
    "rm, rv, x, momentum, pattern",
    [
        (np.zeros(3), np.ones(3), np.ones((1, 3)), 0.1, "at least 2 samples"),
        (np.zeros(2), np.ones(3), np.ones((4, 3)), 0.1, r"running_mean must have shape \(3,\)"),
        (np.zeros(3), np.ones((3, 1)), np.ones((4, 3)), 0.1, r"running_var must have shape \(3,\)"),
        (np.zeros(3), np.ones(3), np.ones(3), 0.1, r"\(N, D\)"),
        (np.zeros(3), np.ones(3), np.ones((4, 3)), 1.5, "momentum"),
    ],
)
def test_update_running_stats_rejects_bad_arguments(rm, rv, x, momentum, pattern):
    with pytest.raises(ValueError, match=pattern):
        update_running_stats(rm, rv, x, momentum=momentum)


# --------------------------------------------------------- batchnorm_inference


@SETTINGS
@given(bn_batches(min_n=1), st.integers(0, 2**32 - 1))
def test_batchnorm_inference_matches_torch_eval(batch, seed):
    x, gamma, beta = batch
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    x64 = x.astype(np.float64)
    running_mean = (x64.mean(axis=0) + rng.normal(0.0, 1.0, d) * x64.std(axis=0)).astype(x.dtype)
    running_var = (x64.var(axis=0) * rng.uniform(0.5, 2.0, d) + 1e-6).astype(x.dtype)
    before = [a.copy() for a in (x, gamma, beta, running_mean, running_var)]
    out = batchnorm_inference(x, gamma, beta, running_mean, running_var)
    for b, a in zip(before, (x, gamma, beta, running_mean, running_var)):
        np.testing.assert_array_equal(a, b, err_msg="batchnorm_inference modified an input")
    assert out.dtype == x.dtype and out.shape == x.shape
    ref, rm_after, _ = torch_batch_norm(x, gamma, beta, running_mean, running_var, training=False)
    np.testing.assert_array_equal(rm_after, running_mean)  # eval mode never updates buffers
    e = np.finfo(x.dtype).eps
    std = np.sqrt(running_var.astype(np.float64) + EPS)
    cond = (np.abs(x64).max(axis=0) + np.abs(running_mean.astype(np.float64))) / std
    tol = 16 * e * (np.abs(gamma) * (1.0 + cond) + np.abs(beta))
    assert_close(out, ref, tol, "eval-mode output differs from torch batch_norm(training=False)")


def test_batchnorm_inference_is_per_sample_affine():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 3))
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    out = batchnorm_inference(x, gamma, beta, rm, rv)
    for i in range(10):  # no batch statistics: each row on its own gives the same result
        np.testing.assert_allclose(batchnorm_inference(x[i:i + 1], gamma, beta, rm, rv), out[i:i + 1], rtol=1e-14)
    a = gamma / np.sqrt(rv + EPS)
    np.testing.assert_allclose(out, a * x + (beta - a * rm), rtol=1e-12, atol=1e-12)


def test_batchnorm_inference_does_not_use_batch_statistics():
    x = np.array([[10.0], [12.0]])
    out = batchnorm_inference(x, np.ones(1), np.zeros(1), np.zeros(1), np.ones(1), eps=0.0)
    np.testing.assert_allclose(out, x)


@pytest.mark.parametrize("which", range(4))
def test_batchnorm_inference_rejects_bad_parameter_shapes(which):
    names = ["gamma", "beta", "running_mean", "running_var"]
    params = [np.ones(3) for _ in names]
    params[which] = np.ones(2)
    with pytest.raises(ValueError, match=rf"{names[which]} must have shape \(3,\)"):
        batchnorm_inference(np.ones((4, 3)), *params)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        batchnorm_inference(np.ones(3), *[np.ones(3)] * 4)


# --------------------------------------------------- spatial_batchnorm_forward


@st.composite
def spatial_batches(draw, dtypes=(np.float32, np.float64)):
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    if n * h * w < 2:
        w = 2
    dtype = draw(st.sampled_from(dtypes))
    offset = draw(st.sampled_from([0.0, 1.0, 1e4]))
    log_scale = draw(st.floats(-3.0, 3.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scales = 10.0 ** np.clip(log_scale + rng.uniform(-1.0, 1.0, c), -3.0, 3.0)
    x = offset + scales[None, :, None, None] * rng.standard_normal((n, c, h, w))
    gamma = rng.uniform(0.2, 3.0, c) * rng.choice([-1.0, 1.0], c)
    beta = rng.normal(0.0, 2.0, c)
    return x.astype(dtype), gamma.astype(dtype), beta.astype(dtype)


@SETTINGS
@given(spatial_batches())
def test_spatial_batchnorm_forward_matches_torch(batch):
    x, gamma, beta = batch
    copies = [a.copy() for a in batch]
    out, cache = spatial_batchnorm_forward(x, gamma, beta)
    for before, after in zip(copies, batch):
        np.testing.assert_array_equal(after, before, err_msg="spatial_batchnorm_forward modified an input")
    assert out.dtype == x.dtype and out.shape == x.shape
    ref, _, _ = torch_batch_norm(x, gamma, beta)
    assert_close(out, ref, forward_tolerance(x, gamma, beta), "out differs from torch batch_norm on NCHW")

    c = x.shape[1]
    for key in ("mean", "var", "gamma"):
        assert cache[key].shape == (c,), key
    assert cache["x_hat"].shape == x.shape and cache["x"].shape == x.shape
    x64 = x.astype(np.float64)
    e = np.finfo(x.dtype).eps
    m = x.shape[0] * x.shape[2] * x.shape[3]        # a sum of m terms, in any order: (m + 2) e max|x|
    assert_close(cache["mean"], x64.mean(axis=(0, 2, 3)), (m + 2) * e * np.abs(x64).max(axis=(0, 2, 3)),
                 "cache['mean'] differs from the per-channel mean")


def test_spatial_batchnorm_forward_per_channel_statistics():
    """Channels with very different statistics must not be mixed (reshape without transpose)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5, 6)) * np.array([1.0, 10.0, 0.1])[None, :, None, None]
    x += np.array([0.0, 100.0, -5.0])[None, :, None, None]
    out, cache = spatial_batchnorm_forward(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-10)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), cache["var"] / (cache["var"] + EPS), rtol=1e-10)
    np.testing.assert_allclose(cache["var"], x.var(axis=(0, 2, 3)), rtol=1e-10)


@pytest.mark.parametrize("shape", [(1, 2, 1, 2), (2, 3, 1, 1), (1, 1, 2, 1)])
def test_spatial_batchnorm_forward_smallest_valid_inputs(shape):
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) ** 2
    c = shape[1]
    out, _ = spatial_batchnorm_forward(x, np.full(c, 2.0), np.full(c, 0.5))
    np.testing.assert_allclose(out, torch_batch_norm(x, np.full(c, 2.0), np.full(c, 0.5))[0], rtol=1e-12)


def test_spatial_batchnorm_forward_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"N \* H \* W >= 2"):
        spatial_batchnorm_forward(np.ones((1, 3, 1, 1)), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(4, 3\)"):
        spatial_batchnorm_forward(np.ones((4, 3)), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        spatial_batchnorm_forward(np.ones((2, 3, 2, 2)), np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"beta must have shape \(3,\)"):
        spatial_batchnorm_forward(np.ones((2, 3, 2, 2)), np.ones(3), np.zeros((3, 1)))
