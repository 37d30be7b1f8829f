"""Public checks of chapter 3: analytic gradients and PyTorch autograd as the oracles."""

import numpy as np
import pytest
import torch

from autograder.feedback import Mismatch, check_array, check_outputs, check_unchanged, unpack
from autograder.messages.ch03_bn_backward import MSG
from autograder.sandbox import SubmissionError
from autograder.suitekit import CACHE_CONTRACT, bn_autograd as torch_grads, cache_key_error


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """Tiny tensors: torch's thread pool only adds overhead."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def bn_cache(x, gamma, eps=1e-5):
    """A cache with exactly the keys of chapter 2's contract (rows are samples; NCHW: per channel)."""
    axes = 0 if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    x_hat = (x - mean.reshape(shape)) / np.sqrt(var + eps).reshape(shape)
    cache = {"x": x, "x_hat": x_hat, "mean": mean, "var": var, "gamma": gamma, "eps": eps}
    assert tuple(cache) == CACHE_CONTRACT
    return cache


def public_mistakes(x, gamma, beta, dout, eps=1e-5):
    """{"dx": {...}, "dgamma": {...}, "dbeta": {...}}: the usual mistakes, computed from public
    information only (autograd of BN with a statistic detached, the oracle rescaled...)."""
    dx, dgamma, dbeta = torch_grads(x, gamma, beta, dout, eps)
    count = x.size // x.shape[1]
    dx_m = {
        MSG["no_mean_path"]: torch_grads(x, gamma, beta, dout, eps, detach_mean=True)[0],
        MSG["no_var_path"]: torch_grads(x, gamma, beta, dout, eps, detach_var=True)[0],
        MSG["no_stat_paths"]: torch_grads(x, gamma, beta, dout, eps, detach_mean=True, detach_var=True)[0],
        MSG["no_gamma"]: torch_grads(x, np.ones_like(gamma), beta, dout, eps)[0],
        MSG["missing_1_over_n"]: count * dx,
        MSG["var_path_only"]: torch_grads(x, gamma, beta, dout, eps, var_path_only=True)[0],
        MSG["unbiased"]: torch_grads(x, gamma, beta, dout, eps, unbiased_grad=True)[0],
    }
    # The backward pass alone dividing by sqrt(var) + eps: the oracle's dx (proportional to
    # 1 / sqrt(var + eps) per feature) rescaled.
    sums = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    var = x.var(axis=sums)
    dx_m[MSG["eps_outside"]] = dx * (np.sqrt(var + eps) / (np.sqrt(var) + eps)).reshape(shape)
    dgamma_m = {MSG["div_nhw" if x.ndim == 4 else "div_n"]: dgamma / count, MSG["swapped"]: dbeta,
                MSG["dgamma_x"]: (dout * x).sum(axis=sums)}
    dbeta_m = {MSG["div_nhw" if x.ndim == 4 else "div_n"]: dbeta / count, MSG["swapped"]: dgamma}
    if x.ndim == 4:
        C = x.shape[1]
        dgamma_m[MSG["div_n"]], dbeta_m[MSG["div_n"]] = dgamma / x.shape[0], dbeta / x.shape[0]
        # (N, C, H, W) reshaped to (-1, C) without moving the channel axis last
        x_hat = (x - x.mean(axis=sums, keepdims=True)) / np.sqrt(var + eps).reshape(shape)
        dgamma_m[MSG["reshape_no_transpose"]] = (dout.reshape(-1, C) * x_hat.reshape(-1, C)).sum(0)
        dbeta_m[MSG["reshape_no_transpose"]] = dout.reshape(-1, C).sum(0)
        dx_m[MSG["reshape_back_no_transpose"]] = dx.transpose(0, 2, 3, 1).reshape(x.shape)
    return {"dx": dx_m, "dgamma": dgamma_m, "dbeta": dbeta_m}


def call_backward(student, name, dout, cache):
    """``name(dout, cache)``: (dx, dgamma, dbeta); neither dout nor the cache may change."""
    try:
        result, (dout_after, cache_after) = student.call_checked(name, dout, cache)
    except SubmissionError as err:
        last = err.message.strip().splitlines()[-1] if err.message.strip() else ""
        if last.startswith("KeyError"):
            raise Mismatch(cache_key_error(name, last, cache), mistake="cache_contract") from None
        raise
    check_unchanged(dout, dout_after, "dout")
    for key, value in cache.items():
        if isinstance(value, np.ndarray):
            check_unchanged(value, cache_after.get(key) if isinstance(cache_after, dict) else None, f"cache[{key!r}]")
    return unpack(result, 3, "dx, dgamma, dbeta")


def check_grads(result, expected, what, mistakes):
    """Every gradient compared with torch autograd; a known mistake is named first."""
    check_outputs([(name, value, truth, dict(rtol=1e-6, atol=1e-9 * np.abs(truth).max(), mistakes=mistakes[name]))
                   for name, value, truth in zip(("dx", "dgamma", "dbeta"), result, expected)],
                  context=f"{what}, compared with torch autograd")


@pytest.mark.exercise("numerical_gradient")
@pytest.mark.points(1)
def test_numerical_gradient_public(student, rng):
    """f(x) = sin(x) * x, whose gradient is (cos(x) * x + sin(x)) * dout; x must be unchanged."""
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    expected = (np.cos(x) * x + np.sin(x)) * dout
    answer = student.op("basic.numerical_gradient", "numerical_gradient", "sin_times_x", x, dout)
    after = answer["x_after"]
    if not (isinstance(after, np.ndarray) and after.shape == x.shape and np.allclose(after, x, rtol=1e-14, atol=0)):
        raise Mismatch(MSG["x_changed"], mistake="x_changed")
    f, h = (lambda v: np.sin(v) * v), 1e-5  # elementwise: each difference quotient is one vectorized expression
    mistakes = {
        MSG["one_sided"]: (f(x + h) - f(x)) / h * dout,
        MSG["backward_diff"]: (f(x) - f(x - h)) / h * dout,
        MSG["no_half"]: (f(x + h) - f(x - h)) / h * dout,
        MSG["no_division"]: (f(x + h) - f(x - h)) * dout,
        MSG["ignores_dout"]: np.cos(x) * x + np.sin(x),
    }
    check_array(answer["dx"], expected, "dx of sum(sin(x) * x * dout) (compared with the analytic gradient)",
                rtol=1e-6, atol=1e-8, mistakes=mistakes)


@pytest.mark.exercise("batchnorm_backward")
@pytest.mark.points(1)
def test_batchnorm_backward_public(student, rng):
    x = rng.standard_normal((8, 3)) * [1.0, 0.01, 3.0] + [0.0, 1.0, -2.0]
    gamma, beta, dout = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, -1.0]), rng.standard_normal((8, 3))
    expected = torch_grads(x, gamma, beta, dout)
    check_grads(call_backward(student, "batchnorm_backward", dout, bn_cache(x, gamma)), expected, "x of shape (8, 3)",
                public_mistakes(x, gamma, beta, dout))


@pytest.mark.exercise("batchnorm_backward_compact")
@pytest.mark.points(1)
def test_batchnorm_backward_compact_public(student, rng):
    x = rng.standard_normal((8, 3)) * [1.0, 0.01, 3.0] + [0.0, 1.0, -2.0]
    gamma, beta, dout = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, -1.0]), rng.standard_normal((8, 3))
    expected = torch_grads(x, gamma, beta, dout)
    check_grads(call_backward(student, "batchnorm_backward_compact", dout, bn_cache(x, gamma)), expected,
                "x of shape (8, 3)", public_mistakes(x, gamma, beta, dout))


@pytest.mark.exercise("spatial_batchnorm_backward")
@pytest.mark.points(1)
def test_spatial_batchnorm_backward_public(student, rng):
    x = rng.standard_normal((3, 4, 2, 5)) * 2 + 1
    gamma, beta = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.0, 1.0, -1.0, 0.5])
    dout = rng.standard_normal(x.shape)
    expected = torch_grads(x, gamma, beta, dout)
    check_grads(call_backward(student, "spatial_batchnorm_backward", dout, bn_cache(x, gamma)), expected,
                "x of shape (3, 4, 2, 5)", public_mistakes(x, gamma, beta, dout))
