"""Public checks of chapter 2: properties and PyTorch as the oracle (no reference needed).

The same checks run in the released notebook (``autograder.inline.check``), from the
command line (``python -m autograder check``) and as part of the graded suite.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autograder.feedback import (LARGE_OFFSET, Mismatch, cancellation_hint, check_array, check_unchanged,
                                 hint_unless_named, unpack)
from autograder.messages.ch02_bn_forward import MSG
from autograder.sandbox import SubmissionError

torch.set_num_threads(1)
EPS = 1e-5


def _per_column(values, x):
    """Per-feature values shaped to broadcast against ``x``: (1, D), or (1, C, 1, 1) for NCHW."""
    return np.asarray(values).reshape((1, -1) if x.ndim == 2 else (1, -1, 1, 1))


def rescaled(x, x_hat, gamma, beta, var, eps=EPS):
    """{message: output} of the mistakes that only change the per-feature scale of x_hat (taken
    from PyTorch's output), from the batch variance ``var``: the public fingerprints of the
    usual scale mistakes, without any BN written here."""
    def out(factor, g=gamma, b=beta):
        return _per_column(g, x) * x_hat * _per_column(factor, x) + _per_column(b, x)

    count = x.size // x.shape[1]
    unbiased = var * count / (count - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            MSG["unbiased"]: out(np.sqrt((var + eps) / (unbiased + eps))),
            MSG["eps_outside"]: out(np.sqrt(var + eps) / (np.sqrt(var) + eps)),
            MSG["no_eps"]: out(np.sqrt(var + eps) / np.sqrt(var)),
            MSG["no_sqrt"]: out(np.sqrt(var + eps) / (var + eps)),
            MSG["no_affine"]: out(np.ones_like(var), 1.0, 0.0),
            MSG["swapped_affine"]: out(np.ones_like(var), beta, gamma),
        }


def torch_bn_train(x, gamma, beta, eps=EPS):
    return F.batch_norm(torch.from_numpy(x), None, None, torch.from_numpy(gamma),
                        torch.from_numpy(beta), training=True, eps=eps).numpy()


@pytest.mark.exercise("batchnorm_forward")
@pytest.mark.points(2)
@pytest.mark.parametrize("N, D", [(4, 5), (64, 3)])
def test_batchnorm_forward_against_pytorch(student, N, D):
    rng = np.random.default_rng(2024 + N)
    x = rng.normal(loc=10.0, scale=3.0, size=(N, D))
    x[:, -1] = 7.0 + 1e-3 * rng.standard_normal(N)       # a nearly constant feature
    gamma, beta = rng.uniform(0.5, 2.0, size=D), rng.normal(size=D)
    result, after = student.call_checked("batchnorm_forward", x, gamma, beta, eps=EPS)
    out, cache = unpack(result, 2, "out, cache")
    for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
        check_unchanged(before, value, name)
    mu, var = x.mean(axis=0), x.var(axis=0)
    x_hat = torch_bn_train(x, np.ones(D), np.zeros(D))
    mistakes = rescaled(x, x_hat, gamma, beta, var)
    mistakes[MSG["axis"]] = F.layer_norm(torch.from_numpy(x), (D,), eps=EPS).numpy() * gamma + beta  # per row
    check_array(out, torch_bn_train(x, gamma, beta), "out (compared with torch.nn.functional.batch_norm)",
                rtol=1e-7, atol=1e-9, mistakes=mistakes, context=f"x of shape {x.shape}")
    if not isinstance(cache, dict):
        raise Mismatch(f"cache must be a dict, got {type(cache).__name__}")
    for key in ("x", "x_hat", "mean", "var", "gamma", "eps"):
        if key not in cache:
            raise Mismatch(f"cache is missing the key {key!r} (the backward pass of chapter 3 needs it)")
    check_array(cache["mean"], mu, "cache['mean'] (the per-feature batch mean, shape (D,))", rtol=1e-10)
    check_array(cache["var"], var, "cache['var'] (the BIASED per-feature batch variance, shape (D,))", rtol=1e-8,
                mistakes={MSG["cache_unbiased_var"]: x.var(axis=0, ddof=1)})
    x_hat = np.asarray(cache["x_hat"])
    check_array(x_hat.mean(axis=0), np.zeros(D), "the column means of cache['x_hat'] (must be 0)", atol=1e-9)
    check_array(x_hat.var(axis=0), var / (var + EPS), "the column variances of cache['x_hat'] (must be var / (var + eps))",
                rtol=1e-8)
    # Offsets of LARGE_OFFSET spreads: a correct (two-pass) variance keeps an error of about
    # u * LARGE_OFFSET = 1e-10 relative, the one-pass formula about u * LARGE_OFFSET**2 = 1e-4.
    spread = 3.0
    far = rng.standard_normal((N, D)) * spread + LARGE_OFFSET * spread
    with hint_unless_named(cancellation_hint(LARGE_OFFSET * spread, spread)):
        out_far, _ = unpack(student.call("batchnorm_forward", far, gamma, beta, eps=EPS), 2, "out, cache")
        check_array(out_far, torch_bn_train(far, gamma, beta), "out (compared with torch.nn.functional.batch_norm)",
                    rtol=1e-7, atol=1e-9, context=f"x of shape {far.shape}, offset {LARGE_OFFSET:g} times its spread")


@pytest.mark.exercise("batchnorm_forward")
@pytest.mark.points(1)
def test_batchnorm_forward_rejects_one_example(student):
    try:
        student.call("batchnorm_forward", np.ones((1, 3)), np.ones(3), np.zeros(3))
    except SubmissionError as err:
        if "ValueError" in err.message:
            return
        raise Mismatch(f"a batch of one example (N=1) must raise ValueError; it raised {err.message.splitlines()[-1]}")
    raise Mismatch("a batch of one example (N=1) must raise ValueError: x - mean would be 0 and the output "
                   "would be beta, whatever the input.")


@pytest.mark.exercise("update_running_stats")
@pytest.mark.points(2)
@pytest.mark.parametrize("momentum, N", [(0.1, 5), (0.3, 2), (0.1, 64)])
def test_update_running_stats_against_pytorch(student, momentum, N):
    rng = np.random.default_rng(7 + N)
    D = 3
    torch_bn = torch.nn.BatchNorm1d(D, momentum=momentum).double()       # training mode
    run_mean, run_var = np.zeros(D), np.ones(D)                          # PyTorch's initial values
    for step in range(4):
        xb = rng.normal(loc=[1.0, -2.0, 5.0], scale=[0.5, 2.0, 3.0], size=(N, D))
        with torch.no_grad():
            torch_bn(torch.from_numpy(xb))
        result, after = student.call_checked("update_running_stats", run_mean, run_var, xb, momentum=momentum)
        new_mean, new_var = unpack(result, 2, "new_mean, new_var")
        for name, before, value in zip(("running_mean", "running_var", "x"), (run_mean, run_var, xb), after):
            check_unchanged(before, value, name)
        context = f"step {step + 1}, momentum={momentum}, x of shape {xb.shape}"
        check_array(new_mean, torch_bn.running_mean.numpy(), "new_mean (compared with nn.BatchNorm1d)", rtol=1e-9,
                    context=context, mistakes={
                        MSG["reversed_momentum"]:
                            momentum * run_mean + (1 - momentum) * xb.mean(axis=0)})
        check_array(new_var, torch_bn.running_var.numpy(), "new_var (compared with nn.BatchNorm1d)", rtol=1e-9,
                    context=context, mistakes={
                        MSG["reversed_momentum"]:
                            momentum * run_var + (1 - momentum) * xb.var(axis=0, ddof=1),
                        MSG["biased_running_var"]:
                            (1 - momentum) * run_var + momentum * xb.var(axis=0)})
        run_mean, run_var = torch_bn.running_mean.numpy().copy(), torch_bn.running_var.numpy().copy()


@pytest.mark.exercise("batchnorm_inference")
@pytest.mark.points(2)
def test_batchnorm_inference_against_pytorch(student):
    rng = np.random.default_rng(11)
    N, D = 6, 4
    x = rng.normal(loc=5.0, scale=4.0, size=(N, D))       # test data: NOT distributed like the running stats
    gamma, beta = rng.uniform(0.5, 2.0, D), rng.normal(size=D)
    run_mean = rng.normal(size=D)
    run_var = np.array([0.5, 2.0, 3.0, 1e-6])              # the last feature is nearly constant
    args = (x, gamma, beta, run_mean, run_var)
    out, after = student.call_checked("batchnorm_inference", *args, eps=EPS)
    for name, before, value in zip(("x", "gamma", "beta", "running_mean", "running_var"), args, after):
        check_unchanged(before, value, name)
    ref = F.batch_norm(*(torch.from_numpy(a) for a in (x, run_mean, run_var, gamma, beta)), training=False, eps=EPS).numpy()
    x_hat = F.batch_norm(*(torch.from_numpy(a) for a in (x, run_mean, run_var)), training=False, eps=EPS).numpy()
    mistakes = {k: v for k, v in rescaled(x, x_hat, gamma, beta, run_var).items() if k != MSG["unbiased"]}
    mistakes[MSG["batch_stats_in_eval"]] = torch_bn_train(x, gamma, beta)
    check_array(out, ref, "out (compared with F.batch_norm in evaluation mode)", rtol=1e-7, atol=1e-9, mistakes=mistakes)
    single = student.call("batchnorm_inference", x[2:3], gamma, beta, run_mean, run_var, eps=EPS)
    check_array(single, ref[2:3], "the output for a batch of one example (in evaluation mode each example's output "
                "must not depend on the rest of the batch)", rtol=1e-7, atol=1e-9)


@pytest.mark.exercise("spatial_batchnorm_forward")
@pytest.mark.points(2)
def test_spatial_batchnorm_forward_against_pytorch(student):
    rng = np.random.default_rng(3)
    N, C, H, W = 3, 4, 5, 6
    x = (np.array([-5.0, 0.0, 5.0, 20.0]).reshape(1, C, 1, 1)
         + np.array([0.5, 1.0, 2.0, 4.0]).reshape(1, C, 1, 1) * rng.standard_normal((N, C, H, W)))
    gamma, beta = rng.uniform(0.5, 2.0, C), rng.normal(size=C)
    result, after = student.call_checked("spatial_batchnorm_forward", x, gamma, beta, eps=EPS)
    out, cache = unpack(result, 2, "out, cache")
    for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
        check_unchanged(before, value, name)
    ref = torch_bn_train(x, gamma, beta)
    T = torch.from_numpy
    var = x.var(axis=(0, 2, 3))
    mistakes = rescaled(x, torch_bn_train(x, np.ones(C), np.zeros(C)), gamma, beta, var)
    flat_hat = F.batch_norm(T(x.reshape(-1, C)), None, None, training=True, eps=EPS).numpy()  # (-1, C), no transpose
    right_hat = F.batch_norm(T(x.transpose(0, 2, 3, 1).reshape(-1, C)), None, None, training=True, eps=EPS).numpy()
    mistakes.update({
        MSG["reshape_no_transpose"]: (flat_hat * gamma + beta).reshape(N, C, H, W),
        MSG["reshape_in_no_transpose"]: (flat_hat * gamma + beta).reshape(N, H, W, C).transpose(0, 3, 1, 2),
        MSG["reshape_back_no_transpose"]: (right_hat * gamma + beta).reshape(N, C, H, W),
        MSG["per_position"]: F.batch_norm(T(x.reshape(N, -1)), None, None, T(np.repeat(gamma, H * W)),
                                          T(np.repeat(beta, H * W)), training=True, eps=EPS).numpy().reshape(x.shape),
        MSG["instance_norm"]: _per_column(gamma, x) * F.instance_norm(T(x), eps=EPS).numpy() + _per_column(beta, x),
    })
    check_array(out, ref, "out (compared with torch.nn.BatchNorm2d in training mode)", rtol=1e-7, atol=1e-9,
                mistakes=mistakes, context=f"x of shape {x.shape}")
    if not isinstance(cache, dict) or not {"mean", "var"} <= set(cache):
        raise Mismatch("cache must be a dict with at least the keys mean and var")
    check_array(cache["mean"], x.mean(axis=(0, 2, 3)), "cache['mean'] (per-channel means over N, H, W)", rtol=1e-10)
    check_array(cache["var"], x.var(axis=(0, 2, 3)), "cache['var'] (per-channel biased variances over N, H, W)", rtol=1e-8)
