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
from autograder.messages.ch06_beyond import MSG, backward_crash_hint, fold_crash_hint
from autograder.sandbox import SubmissionError
from autograder.suitekit import bn_autograd

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


# --------------------------------------------------------------------- fingerprints
# The known mistakes, from public information only: PyTorch's own outputs rescaled by
# statistics of the input, PyTorch's layer_norm / batch_norm / group_norm over other axes or
# groups, autograd with a statistic held constant, fuse_conv_bn_weights on transformed inputs.


def _scale_mistakes(x_hat, var, var1, affine):
    """The mistakes that only rescale x_hat per normalized slice: ``var``/``var1`` the biased and
    unbiased variance per slice (shaped to broadcast against x_hat), ``affine`` gamma/beta's map."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {MSG["unbiased"]: affine(x_hat * np.sqrt((var + EPS) / (var1 + EPS))),
                MSG["eps_outside"]: affine(x_hat * np.sqrt(var + EPS) / (np.sqrt(var) + EPS)),
                MSG["no_sqrt"]: affine(x_hat * np.sqrt(var + EPS) / (var + EPS)),
                MSG["no_eps"]: affine(x_hat * np.sqrt(var + EPS) / np.sqrt(var))}


def _affine_mistakes(x_hat, g, b):
    return {MSG["no_affine"]: x_hat, MSG["no_beta"]: g * x_hat, MSG["no_gamma"]: x_hat + b,
            MSG["swapped_affine"]: b * x_hat + g}


def ln_mistakes(x, gamma, beta):
    x_hat = torch_ln(x)
    out = _scale_mistakes(x_hat, x.var(axis=1, keepdims=True), x.var(axis=1, ddof=1, keepdims=True),
                          lambda h: gamma * h + beta)
    out.update(_affine_mistakes(x_hat, gamma, beta))
    out[MSG["ln_batch_axis"]] = F.batch_norm(T(x), None, None, T(gamma), T(beta), training=True, eps=EPS).numpy()
    out[MSG["ln_batch_axis_1d"]] = F.layer_norm(T(x.reshape(1, -1)), (x.size,), eps=EPS).numpy().reshape(x.shape) \
        * gamma + beta
    return out


def ln_grad_mistakes(x, gamma, dout, dx, dgamma, dbeta):
    """LayerNorm normalizes the rows of x: autograd of BN on x.T with a statistic detached gives
    the gradient without that path."""
    N, D = x.shape
    var = x.var(axis=1)

    def rows(upstream, **variant):
        return bn_autograd(x.T, np.ones(N), np.zeros(N), upstream.T, EPS, **variant)[0].T

    g = dout * gamma
    return {
        "dx": {MSG["dx_no_stats"]: rows(g, detach_mean=True, detach_var=True),
               MSG["dx_no_mean"]: rows(g, detach_mean=True), MSG["dx_no_var"]: rows(g, detach_var=True),
               MSG["dx_no_gamma"]: rows(dout),
               MSG["dx_eps_outside"]: dx * (np.sqrt(var + EPS) / (np.sqrt(var) + EPS))[:, None]},
        "dgamma": {MSG["dgamma_over_N"]: dgamma / N, MSG["dgamma_over_D"]: dgamma / D,
                   MSG["dgamma_x"]: (dout * x).sum(axis=0)},
        "dbeta": {MSG["dgamma_over_N"]: dbeta / N, MSG["dgamma_over_D"]: dbeta / D},
    }


def gn_mistakes(x, gamma, beta, G):
    N, C, H, W = x.shape
    g4, b4 = gamma.reshape(1, C, 1, 1), beta.reshape(1, C, 1, 1)

    def affine(h):
        return g4 * h + b4

    def gn(v, groups):
        return F.group_norm(T(np.ascontiguousarray(v)), groups, eps=EPS).numpy()

    x_hat = gn(x, G)
    grouped = x.reshape(N, G, -1)
    out = _scale_mistakes(x_hat.reshape(N, G, -1), grouped.var(axis=2, keepdims=True),
                          grouped.var(axis=2, ddof=1, keepdims=True), lambda h: affine(h.reshape(x.shape)))
    out.update(_affine_mistakes(x_hat, g4, b4))
    order = np.argsort(np.arange(C) % G, kind="stable")  # channel c in group c % G
    interleaved = np.empty_like(x)
    interleaved[:, order] = gn(x[:, order], G)
    last = x.transpose(0, 2, 3, 1).reshape(N, -1, 1)      # groups cut from the NHWC layout
    pooled = grouped.transpose(1, 0, 2).reshape(1, G, -1)  # one group's statistics over the batch too
    out.update({
        MSG["gn_instance"]: affine(gn(x, C)), MSG["gn_layer"]: affine(gn(x, 1)),
        MSG["gn_interleaved"]: affine(interleaved),
        MSG["gn_channels_last"]: affine(gn(last, G).reshape(N, H, W, C).transpose(0, 3, 1, 2)),
        MSG["gn_batch"]: affine(gn(pooled, G).reshape(G, N, -1).transpose(1, 0, 2).reshape(x.shape)),
        MSG["gn_gamma_per_group"]: np.repeat(gamma[:G], C // G).reshape(1, C, 1, 1) * x_hat
        + np.repeat(beta[:G], C // G).reshape(1, C, 1, 1),
    })
    if C % (C // G) == 0:
        out[MSG["gn_group_size"]] = affine(gn(x, C // G))
    return out


def fold_mistakes(weight, bias, gamma, beta, running_mean, running_var):
    """fuse_conv_bn_weights on inputs transformed so that it computes what a mistake computes."""
    C_out = weight.shape[0]

    def fuse(w=weight, b=bias, m=running_mean, v=running_var, g=gamma, be=beta, eps=EPS):
        new_w, new_b = fuse_conv_bn_weights(T(w), None if b is None else T(b), T(m), T(v), eps, T(g), T(be))
        return new_w.detach().numpy(), new_b.detach().numpy()

    var = running_var
    scaled = {  # a wrong scale gamma / sqrt(var + eps), through the variance, eps or gamma given to fuse
        MSG["fold_eps_outside"]: dict(v=(np.sqrt(var) + EPS) ** 2 - EPS),
        MSG["fold_var_as_std"]: dict(v=(var + EPS) ** 2 - EPS),
        MSG["fold_no_eps"]: dict(eps=0.0),
        MSG["fold_inverted"]: dict(g=(var + EPS) / gamma),
        MSG["fold_no_gamma"]: dict(g=np.ones_like(gamma)),
    }
    weights = {message: fuse(**change)[0] for message, change in scaled.items()}
    scale = fuse(w=np.ones((C_out, 1, 1, 1)), b=None)[0].reshape(-1)
    if weight.shape[1] == C_out:
        weights[MSG["fold_input_axis"]] = weight * scale.reshape(1, C_out, 1, 1)
    weights[MSG["fold_weight_unscaled"]] = weight
    biases = {MSG["fold_bias_no_mean"]: fuse(m=np.zeros_like(running_mean))[1],
              MSG["fold_bias_unscaled"]: fuse(g=np.sqrt(var + EPS))[1],
              MSG["fold_bias_no_beta"]: fuse(be=np.zeros_like(beta))[1],
              MSG["fold_bias_mean_sign"]: fuse(m=-running_mean)[1]}
    biases.update({message: fuse(**change)[1] for message, change in scaled.items()})
    biases[MSG["fold_bias_no_gamma"]] = biases.pop(MSG["fold_no_gamma"])
    if bias is not None:
        biases[MSG["fold_bias_ignored"]] = fuse(b=np.zeros_like(bias))[1]
    return {"weight": weights, "bias": biases}


@pytest.mark.exercise("layernorm_forward")
@pytest.mark.points(1)
def test_layernorm_forward_public(student, rng):
    """Rows of very different scales (one with variance below eps) against F.layer_norm; N = 1 too."""
    x = rng.standard_normal((5, 6)) * [[1.0], [5.0], [0.001], [2.0], [1.0]] + [[0.0], [3.0], [1.0], [-2.0], [0.5]]
    gamma, beta = rng.uniform(0.5, 2.0, 6), rng.normal(0.0, 1.0, 6)
    expected, expected_x_hat, expected_one = torch_ln(x, gamma, beta), torch_ln(x), torch_ln(x[:1], gamma, beta)
    mistakes = ln_mistakes(x, gamma, beta)
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
    try:
        result = student.call("layernorm_backward", dout.copy(), ln_cache(x, gamma, beta))
    except SubmissionError as err:
        hint = backward_crash_hint(err.message, cache) if err.kind == "exception" else None
        if hint:
            raise Mismatch(hint, mistake="cache_contract") from None
        raise
    (dx, dgamma, dbeta) = unpack(result, 3, "dx, dgamma, dbeta")
    context = "x of shape (4, 5)"
    for name, value in (("dgamma", dgamma), ("dbeta", dbeta)):
        if isinstance(value, np.ndarray) and value.shape == (4,):
            raise Mismatch(f"{name} has shape (4,), expected (5,) ({context}). {MSG['dgamma_wrong_axis']}",
                           mistake="dgamma_wrong_axis", named=True)
    mistakes = ln_grad_mistakes(x, gamma, dout, xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy())
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
        mistakes = gn_mistakes(x, gamma, beta, groups)
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
        hint = fold_crash_hint(err.message, args[0].shape, args[1] is None) if err.kind == "exception" else None
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
    mistakes = fold_mistakes(*args)
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
