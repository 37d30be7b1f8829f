"""Public checks of chapter 2: properties and PyTorch as the oracle (no reference needed)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autograder.feedback import Mismatch, check_array, check_unchanged, unpack


def torch_bn(x, gamma, beta, eps=1e-5):
    return F.batch_norm(torch.tensor(x), None, None, torch.tensor(gamma), torch.tensor(beta),
                        training=True, eps=eps).numpy()


@pytest.mark.exercise("batchnorm_forward")
@pytest.mark.points(1)
def test_batchnorm_forward_public(student, rng):
    x = rng.standard_normal((10, 4)) * [1.0, 5.0, 0.001, 2.0] + [0.0, 3.0, 1.0, -2.0]
    gamma, beta = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.0, -1.0, 0.5, 2.0])
    result, after = student.call_checked("batchnorm_forward", x, gamma, beta)
    out, cache = unpack(result, 2, "out, cache")
    check_array(out, torch_bn(x, gamma, beta), "out (compared with torch.nn.functional.batch_norm)", rtol=1e-6, atol=1e-8)
    for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
        check_unchanged(before, value, name)
    if not isinstance(cache, dict) or not {"x", "x_hat", "mean", "var", "gamma", "eps"} <= set(cache):
        raise Mismatch("cache must be a dict with at least the keys x, x_hat, mean, var, gamma, eps")
    x_hat = np.asarray(cache["x_hat"])
    check_array(x_hat.mean(axis=0), np.zeros(4), "the per-feature mean of cache['x_hat']", atol=1e-8)


@pytest.mark.exercise("update_running_stats")
@pytest.mark.points(1)
def test_update_running_stats_public(student, rng):
    """Ten steps of nn.BatchNorm1d's buffers, from zeros and ones."""
    bn = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(10):
        x = rng.standard_normal((6, 3)) * [1.0, 2.0, 0.5] + [0.0, 3.0, -1.0]
        bn(torch.tensor(x))
        mean, var = unpack(student.call("update_running_stats", mean, var, x), 2, "new_mean, new_var")
    check_array(mean, bn.running_mean.numpy(), "running_mean after 10 steps (compared with nn.BatchNorm1d)", rtol=1e-7)
    check_array(var, bn.running_var.numpy(), "running_var after 10 steps (compared with nn.BatchNorm1d)", rtol=1e-7)


@pytest.mark.exercise("batchnorm_inference")
@pytest.mark.points(1)
def test_batchnorm_inference_public(student, rng):
    x = rng.standard_normal((5, 3))
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.1, 0.0, -0.3])
    running_mean, running_var = np.array([0.5, -1.0, 0.0]), np.array([2.0, 0.5, 1e-6])
    out = student.call("batchnorm_inference", x, gamma, beta, running_mean, running_var)
    expected = F.batch_norm(torch.tensor(x), torch.tensor(running_mean), torch.tensor(running_var),
                            torch.tensor(gamma), torch.tensor(beta), training=False).numpy()
    check_array(out, expected, "out (compared with F.batch_norm in evaluation mode)", rtol=1e-7)
    one = student.call("batchnorm_inference", x[:1], gamma, beta, running_mean, running_var)
    check_array(one, expected[:1], "out for a batch of one example (evaluation mode must not use batch statistics)", rtol=1e-7)


@pytest.mark.exercise("spatial_batchnorm_forward")
@pytest.mark.points(1)
def test_spatial_batchnorm_forward_public(student, rng):
    x = rng.standard_normal((3, 4, 5, 2)) * 2 + 1
    gamma, beta = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.0, 1.0, -1.0, 0.5])
    out, _ = unpack(student.call("spatial_batchnorm_forward", x, gamma, beta), 2, "out, cache")
    check_array(out, torch_bn(x, gamma, beta), "out (compared with torch.nn.functional.batch_norm on NCHW)", rtol=1e-6)
