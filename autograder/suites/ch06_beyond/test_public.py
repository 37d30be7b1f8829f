"""Public checks of chapter 6: PyTorch as the oracle and numerical gradients (no reference needed).

The same checks run in the released notebook (``autograder.inline.check``), from the
command line (``python -m autograder check``) and as part of the graded suite. Expected
values are computed before the student's code runs (in a notebook it runs in the same
process and could modify the arrays it is given).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from autograder.feedback import (LARGE_OFFSET, Mismatch, cancellation_hint, check_array, check_outputs,
                                 check_unchanged, describe, hint_unless_named, unpack)
from autograder.mistakes import ch06_beyond as M
from autograder.sandbox import SubmissionError

EPS = 1e-5


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """Tiny tensors: torch's thread pool only adds overhead."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def torch_ln(x, gamma=None, beta=None, eps=EPS):
    return F.layer_norm(T(x), (x.shape[1],), None if gamma is None else T(gamma), None if beta is None else T(beta),
                        eps=eps).numpy()


def ln_cache(x, gamma, beta, eps=EPS):
    """The cache layernorm_backward receives, made with PyTorch (the keys of the reference's cache)."""
    var = T(x).var(dim=1, unbiased=False).numpy()
    return {"x": x.copy(), "x_hat": torch_ln(x, eps=eps), "mean": x.mean(axis=1), "var": var, "gamma": gamma.copy(),
            "beta": beta.copy(), "eps": float(eps), "inv_std": 1.0 / np.sqrt(var + eps)}


def numerical_grad(f, value, dout, h=1e-6):
    """Centered differences of sum(f() * dout) with respect to every entry of ``value`` (perturbed in place)."""
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        old = value[index]
        value[index] = old + h
        plus = float((f() * dout).sum())
        value[index] = old - h
        minus = float((f() * dout).sum())
        value[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.exercise("layernorm_forward")
@pytest.mark.points(1)
def test_layernorm_forward_public(student, rng):
    """Rows of very different scales (one with variance below eps) against F.layer_norm; N = 1 too."""
    x = rng.standard_normal((5, 6)) * [[1.0], [5.0], [0.001], [2.0], [1.0]] + [[0.0], [3.0], [1.0], [-2.0], [0.5]]
    gamma, beta = rng.uniform(0.5, 2.0, 6), rng.normal(0.0, 1.0, 6)
    expected, expected_x_hat, expected_one = torch_ln(x, gamma, beta), torch_ln(x), torch_ln(x[:1], gamma, beta)
    mistakes = M.layernorm_forward_mistakes(x, gamma, beta)
    result, after = student.call_checked("layernorm_forward", x, gamma, beta)
    out, cache = unpack(result, 2, "out, cache")
    check_array(out, expected, "out (compared with torch.nn.functional.layer_norm)", rtol=1e-6, atol=1e-8,
                mistakes=mistakes, context="x of shape (5, 6), row 2 of std 0.001")
    for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
        check_unchanged(before, value, name)
    if not isinstance(cache, dict) or not {"x", "x_hat", "mean", "var", "gamma", "eps"} <= set(cache):
        raise Mismatch("cache must be a dict with at least the keys x, x_hat, mean, var, gamma, eps")
    check_array(cache["x_hat"], expected_x_hat, "cache['x_hat'] (compared with F.layer_norm without gamma and beta)",
                rtol=1e-6, atol=1e-8)
    # Rows offset by LARGE_OFFSET times their spread: a two-pass variance keeps about
    # u * LARGE_OFFSET = 1e-10 of relative error, the one-pass formula about 1e-4.
    far = rng.standard_normal((3, 6)) + LARGE_OFFSET
    with hint_unless_named(cancellation_hint(LARGE_OFFSET, 1.0)):
        out_far, _ = unpack(student.call("layernorm_forward", far, gamma, beta), 2, "out, cache")
        check_array(out_far, torch_ln(far, gamma, beta), "out (compared with torch.nn.functional.layer_norm)",
                    rtol=1e-6, atol=1e-8, context=f"rows offset by {LARGE_OFFSET:g} times their spread")
    one, _ = unpack(student.call("layernorm_forward", x[:1].copy(), gamma.copy(), beta.copy()), 2, "out, cache")
    check_array(one, expected_one, "out for a batch of one example (LayerNorm does not depend on the batch)",
                rtol=1e-6, atol=1e-8)


@pytest.mark.exercise("layernorm_backward")
@pytest.mark.points(1)
def test_layernorm_backward_public(student, rng):
    """dx, dgamma, dbeta against PyTorch's autograd and against numerical gradients."""
    x = rng.standard_normal((4, 5)) * 2.0 + 1.0
    gamma, beta = rng.uniform(0.5, 2.0, 5), rng.normal(0.0, 1.0, 5)
    dout = rng.standard_normal((4, 5))  # random: with dout = ones, the true dx would be 0
    cache = ln_cache(x, gamma, beta)
    xt, gt, bt = (T(a).clone().requires_grad_() for a in (x, gamma, beta))
    F.layer_norm(xt, (5,), gt, bt, eps=EPS).backward(T(dout))
    x_num, gamma_num = x.copy(), gamma.copy()
    num_dx = numerical_grad(lambda: torch_ln(x_num, gamma, beta), x_num, dout)
    num_dgamma = numerical_grad(lambda: torch_ln(x, gamma_num, beta), gamma_num, dout)
    mistakes = M.layernorm_backward_mistakes(dout, cache)
    try:
        result = student.call("layernorm_backward", dout.copy(), ln_cache(x, gamma, beta))
    except SubmissionError as err:
        hint = M.backward_crash_hint(err.message, cache) if err.kind == "exception" else None
        if hint:
            raise Mismatch(hint, mistake="cache_contract") from None
        raise
    dx, dgamma, dbeta = unpack(result, 3, "dx, dgamma, dbeta")
    context = "x of shape (4, 5)"
    for name, value in (("dgamma", dgamma), ("dbeta", dbeta)):
        if isinstance(value, np.ndarray) and value.shape == (4,):
            raise Mismatch(f"{name} has shape (4,), expected (5,) ({context}). {M.MSG['dgamma_wrong_axis']}",
                           mistake="dgamma_wrong_axis", named=True)
    check_outputs([(name, value, truth.numpy(), dict(rtol=1e-6, atol=1e-8, mistakes=mistakes[name]))
                   for name, value, truth in (("dx", dx, xt.grad), ("dgamma", dgamma, gt.grad), ("dbeta", dbeta, bt.grad))],
                  context=f"{context}, compared with PyTorch's autograd of F.layer_norm")
    check_array(dx, num_dx, "dx (compared with a numerical gradient, centered differences)", rtol=1e-5, atol=1e-6)
    check_array(dgamma, num_dgamma, "dgamma (compared with a numerical gradient)", rtol=1e-5, atol=1e-6)


@pytest.mark.exercise("groupnorm_forward")
@pytest.mark.points(1)
def test_groupnorm_forward_public(student, rng):
    """Against F.group_norm, with 3 and with 2 groups of 6 channels of different offsets."""
    x = rng.standard_normal((2, 6, 3, 4)) * 2.0 + rng.normal(0.0, 3.0, (1, 6, 1, 1))
    gamma, beta = rng.uniform(0.5, 2.0, 6), rng.normal(0.0, 1.0, 6)
    for groups in (3, 2):
        expected = F.group_norm(T(x), groups, T(gamma), T(beta), eps=EPS).numpy()
        mistakes = M.groupnorm_forward_mistakes(x, gamma, beta, groups)
        result, after = student.call_checked("groupnorm_forward", x, gamma, beta, groups)
        out, _ = unpack(result, 2, "out, cache")
        check_array(out, expected, f"out with num_groups={groups} (compared with torch.nn.functional.group_norm)",
                    rtol=1e-6, atol=1e-8, mistakes=mistakes, context=f"x of shape (2, 6, 3, 4), num_groups={groups}")
        for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
            check_unchanged(before, value, name)


def bn_params(rng, C):
    gamma, beta = rng.uniform(0.5, 2.0, C), rng.normal(0.0, 1.0, C)
    running_mean, running_var = rng.normal(0.0, 1.0, C), rng.uniform(0.1, 3.0, C)
    running_var[0] = 2e-6  # below eps
    return gamma, beta, running_mean, running_var


def call_fold(student, args):
    """fold_batchnorm(*args) on copies, with a hint when it fails on a shape or on bias=None."""
    try:
        return student.call_checked("fold_batchnorm", *args)
    except SubmissionError as err:
        hint = M.fold_crash_hint(err.message, args[0].shape, args[1] is None) if err.kind == "exception" else None
        if hint:
            raise Mismatch(hint, mistake="fold_wrong_axis" if "axis 0" in hint else "fold_bias_none") from None
        raise


@pytest.mark.exercise("fold_batchnorm")
@pytest.mark.points(1)
def test_fold_batchnorm_public(student, rng):
    """Against torch.nn.utils.fusion.fuse_conv_bn_weights."""
    weight, bias = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    gamma, beta, running_mean, running_var = bn_params(rng, 4)
    args = (weight, bias, gamma, beta, running_mean, running_var)
    want_w, want_b = (p.detach().numpy() for p in fuse_conv_bn_weights(
        T(weight), T(bias), T(running_mean), T(running_var), EPS, T(gamma), T(beta)))
    mistakes = M.fold_batchnorm_mistakes(*args)
    result, after = call_fold(student, args)
    new_weight, new_bias = unpack(result, 2, "new_weight, new_bias")
    context = "weight of shape (4, 3, 3, 3), running_var[0] = 2e-6 < eps"
    check_array(new_weight, want_w, "new_weight (compared with fuse_conv_bn_weights)", rtol=1e-7,
                mistakes=mistakes["weight"], context=context)
    check_array(new_bias, want_b, "new_bias (compared with fuse_conv_bn_weights)", rtol=1e-7,
                mistakes=mistakes["bias"], context=context)
    names = ("weight", "bias", "gamma", "beta", "running_mean", "running_var")
    for name, before, value in zip(names, args, after):
        check_unchanged(before, value, name)


def as_float_array(value, shape, name):
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape) or value.dtype.kind not in "iuf":
        raise Mismatch(f"{name}: expected an array of shape {tuple(shape)}, got {describe(value)}")
    return value.astype(np.float64)


@pytest.mark.exercise("fold_batchnorm")
@pytest.mark.points(1)
def test_fold_batchnorm_conv_without_bias_public(student, rng):
    """conv2d(x, new_weight, new_bias) must equal BN (eval mode) of a convolution without bias."""
    x = rng.standard_normal((2, 3, 6, 6))
    weight = rng.standard_normal((5, 3, 3, 3))
    gamma, beta, running_mean, running_var = bn_params(rng, 5)
    expected = F.batch_norm(F.conv2d(T(x), T(weight)), T(running_mean), T(running_var), T(gamma), T(beta),
                            training=False, eps=EPS).numpy()
    result, _ = call_fold(student, (weight, None, gamma, beta, running_mean, running_var))
    new_weight, new_bias = unpack(result, 2, "new_weight, new_bias")
    new_weight = as_float_array(new_weight, weight.shape, "new_weight")
    new_bias = as_float_array(new_bias, (5,), "new_bias (an array even when bias is None)")
    folded = F.conv2d(T(x), T(new_weight), T(new_bias)).numpy()
    check_array(folded, expected, "conv2d(x, new_weight, new_bias) (compared with BN in eval mode after the "
                "convolution)", rtol=1e-6, atol=1e-8, context="a convolution without bias (bias=None)")
