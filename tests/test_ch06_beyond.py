"""Tests of solutions/ch06_beyond.py against PyTorch (F.layer_norm, F.group_norm,
autograd, torch.nn.utils.fusion and real convolutions)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from solutions.ch06_beyond import fold_batchnorm, groupnorm_forward, layernorm_backward, layernorm_forward

DTYPES = [np.float32, np.float64]
SETTINGS = settings(max_examples=40, deadline=None)


def tol(dtype, x, gamma, axes, eps=1e-5):
    """Tolerance from the conditioning of (x - mean) / sqrt(var + eps): rounding errors
    of order ulp(|x|) are amplified by 1 / sqrt(var + eps) (in PyTorch's kernels and ours)."""
    x64 = x.astype(np.float64)
    cond = (np.abs(x64).max(axis=axes) / np.sqrt(x64.var(axis=axes) + eps)).max()
    amp = 1.0 + cond * np.abs(gamma).max()
    ulp = np.finfo(dtype).eps
    return dict(rtol=100 * ulp, atol=100 * ulp * amp)


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# --------------------------------------------------------------------------- LayerNorm


@SETTINGS
@given(
    N=st.integers(1, 6), D=st.integers(1, 10), log_scale=st.floats(-3, 3),
    offset=st.floats(-5, 5), seed=st.integers(0, 2**16), dtype=st.sampled_from(DTYPES),
)
def test_layernorm_forward_matches_torch(N, D, log_scale, offset, seed, dtype):
    rng = np.random.default_rng(seed)
    x = (10.0**log_scale * (rng.standard_normal((N, D)) + offset)).astype(dtype)
    gamma = rng.standard_normal(D).astype(dtype)
    beta = rng.standard_normal(D).astype(dtype)
    copies = [a.copy() for a in (x, gamma, beta)]
    out, cache = layernorm_forward(x, gamma, beta)
    want = F.layer_norm(T(x), (D,), T(gamma), T(beta), eps=1e-5).numpy()
    assert out.shape == (N, D) and out.dtype == dtype
    np.testing.assert_allclose(out, want, **tol(dtype, x, gamma, axes=1))
    for a, b in zip((x, gamma, beta), copies):
        np.testing.assert_array_equal(a, b)
    assert {"x", "x_hat", "mean", "var", "gamma", "eps"} <= set(cache)
    assert cache["mean"].shape == (N,) and cache["var"].shape == (N,)
    np.testing.assert_allclose(cache["var"], x.astype(np.float64).var(axis=1), rtol=1e-3 if dtype == np.float32 else 1e-10,
                               atol=1e-30)


def test_layernorm_forward_eps_and_single_row():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    out, _ = layernorm_forward(x, np.ones(4), np.zeros(4), eps=0.5)
    want = (x - x.mean()) / np.sqrt(x.var() + 0.5)
    np.testing.assert_allclose(out, want, rtol=1e-14)
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-14)


@SETTINGS
@given(N=st.integers(1, 5), D=st.integers(1, 8), log_scale=st.floats(-2, 2), seed=st.integers(0, 2**16))
def test_layernorm_backward_matches_autograd(N, D, log_scale, seed):
    rng = np.random.default_rng(seed)
    x = 10.0**log_scale * rng.standard_normal((N, D)) + rng.standard_normal()
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    dout = rng.standard_normal((N, D))
    out, cache = layernorm_forward(x, gamma, beta)
    dout_copy = dout.copy()
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    np.testing.assert_array_equal(dout, dout_copy)
    xt, gt, bt = (T(a).requires_grad_(True) for a in (x, gamma, beta))
    F.layer_norm(xt, (D,), gt, bt, eps=1e-5).backward(T(dout))
    scale = np.abs(xt.grad.numpy()).max() + 1
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-7, atol=1e-9 * scale)
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), rtol=1e-9, atol=1e-10)
    assert dx.shape == (N, D) and dgamma.shape == (D,) and dbeta.shape == (D,)


def test_layernorm_backward_float32_and_properties():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    # eps = 0: x_hat has exactly unit variance per row, so orthogonality is exact
    out, cache = layernorm_forward(x, np.ones(6, np.float32), np.zeros(6, np.float32), eps=0.0)
    dx, dgamma, dbeta = layernorm_backward(rng.standard_normal((4, 6)).astype(np.float32), cache)
    assert dx.dtype == np.float32
    # dx of each row has zero mean and is orthogonal to x_hat (BN's property, transposed)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose((dx * cache["x_hat"]).sum(axis=1), 0, atol=1e-5)


def test_layernorm_errors():
    with pytest.raises(ValueError):
        layernorm_forward(np.ones(4), np.ones(4), np.zeros(4))
    with pytest.raises(ValueError):
        layernorm_forward(np.ones((2, 4)), np.ones(3), np.zeros(4))
    with pytest.raises(ValueError):
        layernorm_forward(np.ones((2, 4)), np.ones(4), np.zeros((1, 4)))
    _, cache = layernorm_forward(np.random.randn(2, 4), np.ones(4), np.zeros(4))
    with pytest.raises(ValueError):
        layernorm_backward(np.ones((4, 2)), cache)


# --------------------------------------------------------------------------- GroupNorm


@SETTINGS
@given(
    N=st.integers(1, 3), G=st.integers(1, 4), per_group=st.integers(1, 3), H=st.integers(1, 4),
    W=st.integers(1, 4), log_scale=st.floats(-3, 3), offset=st.floats(-5, 5),
    seed=st.integers(0, 2**16), dtype=st.sampled_from(DTYPES),
)
def test_groupnorm_forward_matches_torch(N, G, per_group, H, W, log_scale, offset, seed, dtype):
    C = G * per_group
    if N * per_group * H * W == 1:
        # F.group_norm refuses a single value per group when N = 1 (a check borrowed
        # from BatchNorm); groupnorm_forward gives x_hat = 0 there, like for N > 1.
        W = 2
    rng = np.random.default_rng(seed)
    x = (10.0**log_scale * (rng.standard_normal((N, C, H, W)) + offset)).astype(dtype)
    gamma = rng.standard_normal(C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    copies = [a.copy() for a in (x, gamma, beta)]
    out, cache = groupnorm_forward(x, gamma, beta, G)
    want = F.group_norm(T(x), G, T(gamma), T(beta), eps=1e-5).numpy()
    assert out.shape == x.shape and out.dtype == dtype
    np.testing.assert_allclose(out, want, **tol(dtype, x.reshape(N, G, -1), gamma, axes=2))
    for a, b in zip((x, gamma, beta), copies):
        np.testing.assert_array_equal(a, b)
    assert cache["mean"].shape == (N, G) and cache["var"].shape == (N, G)
    assert {"x", "x_hat", "mean", "var", "gamma", "eps"} <= set(cache)


def test_groupnorm_single_value_groups():
    x = np.arange(12.0).reshape(2, 6, 1, 1)
    out, cache = groupnorm_forward(x, np.full(6, 2.0), np.arange(6.0), 6)
    np.testing.assert_array_equal(cache["x_hat"], 0.0)
    np.testing.assert_array_equal(out, np.broadcast_to(np.arange(6.0).reshape(1, 6, 1, 1), x.shape))
    want = F.group_norm(T(x), 6, T(np.full(6, 2.0)), T(np.arange(6.0))).numpy()
    np.testing.assert_array_equal(out, want)


def test_groupnorm_special_cases():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 4, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    # G = C: InstanceNorm
    out, _ = groupnorm_forward(x, gamma, beta, 6)
    want = F.instance_norm(T(x), weight=T(gamma), bias=T(beta), eps=1e-5).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
    # G = 1: LayerNorm over (C, H, W)
    out, _ = groupnorm_forward(x, np.ones(6), np.zeros(6), 1)
    ln, _ = layernorm_forward(x.reshape(3, -1), np.ones(120), np.zeros(120))
    np.testing.assert_allclose(out, ln.reshape(x.shape), rtol=1e-12, atol=1e-12)
    # group statistics: every (example, group) block of x_hat has mean 0 and variance var/(var+eps)
    out, cache = groupnorm_forward(x, np.ones(6), np.zeros(6), 3)
    blocks = cache["x_hat"].reshape(3, 3, -1)
    np.testing.assert_allclose(blocks.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(blocks.var(axis=2), cache["var"] / (cache["var"] + 1e-5), rtol=1e-10)


def test_groupnorm_errors():
    x = np.ones((2, 6, 3, 3))
    with pytest.raises(ValueError, match="divide"):
        groupnorm_forward(x, np.ones(6), np.zeros(6), 4)
    with pytest.raises(ValueError):
        groupnorm_forward(x, np.ones(6), np.zeros(6), 0)
    with pytest.raises(ValueError):
        groupnorm_forward(np.ones((2, 6, 3)), np.ones(6), np.zeros(6), 2)
    with pytest.raises(ValueError):
        groupnorm_forward(x, np.ones(3), np.zeros(6), 3)


# --------------------------------------------------------------------------- fold_batchnorm


def random_bn_params(C, rng, dtype=np.float64):
    return (
        (rng.random(C) + 0.5).astype(dtype),
        rng.standard_normal(C).astype(dtype),
        rng.standard_normal(C).astype(dtype),
        (rng.random(C) * 2 + 0.1).astype(dtype),
    )


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_fold_batchnorm_matches_fuse_conv_bn_weights(with_bias, eps):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 3, 3, 2))
    b = rng.standard_normal(5) if with_bias else None
    gamma, beta, rm, rv = random_bn_params(5, rng)
    inputs = [a.copy() for a in (W, gamma, beta, rm, rv)]
    new_w, new_b = fold_batchnorm(W, b, gamma, beta, rm, rv, eps=eps)
    want_w, want_b = fuse_conv_bn_weights(
        T(W), None if b is None else T(b), T(rm), T(rv), eps, T(gamma), T(beta)
    )
    np.testing.assert_allclose(new_w, want_w.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(new_b, want_b.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert new_w.shape == W.shape and new_b.shape == (5,)
    for a, c in zip((W, gamma, beta, rm, rv), inputs):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_fold_batchnorm_gives_same_conv_outputs(bias, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=bias, groups=groups).double()
    bn = nn.BatchNorm2d(6).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
    bn.train()
    for _ in range(5):  # realistic running statistics
        bn(conv(torch.randn(8, 4, 9, 9, dtype=torch.float64) * 3 + 1))
    conv.eval()
    bn.eval()
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        want = bn(conv(x))
    new_w, new_b = fold_batchnorm(
        conv.weight.detach().numpy(), None if conv.bias is None else conv.bias.detach().numpy(),
        bn.weight.detach().numpy(), bn.bias.detach().numpy(),
        bn.running_mean.numpy(), bn.running_var.numpy(), eps=bn.eps,
    )
    got = F.conv2d(x, T(new_w), T(new_b), stride=2, padding=1, groups=groups)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_fold_batchnorm_float32_and_linear_weights():
    rng = np.random.default_rng(3)
    gamma, beta, rm, rv = random_bn_params(4, rng, np.float32)
    W = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    new_w, new_b = fold_batchnorm(W, None, gamma, beta, rm, rv)
    assert new_w.dtype == np.float32 and new_b.dtype == np.float32
    Wl = rng.standard_normal((4, 7))
    bl = rng.standard_normal(4)
    g64, b64, m64, v64 = (a.astype(np.float64) for a in (gamma, beta, rm, rv))
    new_w, new_b = fold_batchnorm(Wl, bl, g64, b64, m64, v64)
    want_w, want_b = fuse_linear_bn_weights(T(Wl), T(bl), T(m64), T(v64), 1e-5, T(g64), T(b64))
    np.testing.assert_allclose(new_w, want_w.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(new_b, want_b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_fold_batchnorm_errors():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 2, 1, 1))
    good = [np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)]
    for k in range(4):
        bad = list(good)
        bad[k] = np.ones(4)
        with pytest.raises(ValueError):
            fold_batchnorm(W, None, *bad)
    with pytest.raises(ValueError):
        fold_batchnorm(W, np.ones(2), *good)
    with pytest.raises(ValueError):
        fold_batchnorm(np.ones(3), None, *good)
    with pytest.raises(ValueError):
        fold_batchnorm(W, None, np.ones(3), np.zeros(3), np.zeros(3), -np.ones(3))
