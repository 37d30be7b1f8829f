"""Public checks of chapter 3: analytic gradients and PyTorch autograd as the oracles."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autograder.feedback import Mismatch, check_array, unpack
from autograder.sandbox import SubmissionError
from autograder.suitekit import CACHE_CONTRACT, cache_key_error


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


def torch_grads(x, gamma, beta, dout, eps=1e-5):
    """(dx, dgamma, dbeta) of sum(batch_norm(x) * dout) by torch autograd, float64."""
    tx, tg, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta))
    F.batch_norm(tx, None, None, tg, tb, training=True, eps=eps).backward(torch.tensor(dout))
    return tx.grad.numpy(), tg.grad.numpy(), tb.grad.numpy()


def call_backward(student, name, dout, cache):
    try:
        return unpack(student.call(name, dout, cache), 3, "dx, dgamma, dbeta")
    except SubmissionError as err:
        last = err.message.strip().splitlines()[-1] if err.message.strip() else ""
        if last.startswith("KeyError"):
            raise Mismatch(cache_key_error(name, last, cache)) from None
        raise


def check_grads(result, expected, what):
    dx, dgamma, dbeta = result
    for value, truth, name in zip((dx, dgamma, dbeta), expected, ("dx", "dgamma", "dbeta")):
        check_array(value, truth, f"{name} ({what}, compared with torch autograd)", rtol=1e-6,
                    atol=1e-9 * np.abs(truth).max())


@pytest.mark.exercise("numerical_gradient")
@pytest.mark.points(1)
def test_numerical_gradient_public(student, rng):
    """f(x) = sin(x) * x, whose gradient is (cos(x) * x + sin(x)) * dout; x must be unchanged."""
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    expected = (np.cos(x) * x + np.sin(x)) * dout
    answer = student.op("basic.numerical_gradient", "numerical_gradient", "sin_times_x", x, dout)
    after = answer["x_after"]
    if not (isinstance(after, np.ndarray) and after.shape == x.shape and np.allclose(after, x, rtol=1e-14, atol=0)):
        raise Mismatch("x is different after the call: your function perturbs x in place and does not restore "
                       "it. Save x[i] before perturbing and put the saved value back (or work on a copy).")
    check_array(answer["dx"], expected,
                "dx of sum(sin(x) * x * dout) (compared with the analytic gradient)", rtol=1e-6, atol=1e-8)


@pytest.mark.exercise("batchnorm_backward")
@pytest.mark.points(1)
def test_batchnorm_backward_public(student, rng):
    x = rng.standard_normal((8, 3)) * [1.0, 0.01, 3.0] + [0.0, 1.0, -2.0]
    gamma, beta, dout = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, -1.0]), rng.standard_normal((8, 3))
    expected = torch_grads(x, gamma, beta, dout)
    check_grads(call_backward(student, "batchnorm_backward", dout, bn_cache(x, gamma)), expected, "x of shape (8, 3)")


@pytest.mark.exercise("batchnorm_backward_compact")
@pytest.mark.points(1)
def test_batchnorm_backward_compact_public(student, rng):
    x = rng.standard_normal((8, 3)) * [1.0, 0.01, 3.0] + [0.0, 1.0, -2.0]
    gamma, beta, dout = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, -1.0]), rng.standard_normal((8, 3))
    expected = torch_grads(x, gamma, beta, dout)
    check_grads(call_backward(student, "batchnorm_backward_compact", dout, bn_cache(x, gamma)), expected,
                "x of shape (8, 3)")


@pytest.mark.exercise("spatial_batchnorm_backward")
@pytest.mark.points(1)
def test_spatial_batchnorm_backward_public(student, rng):
    x = rng.standard_normal((3, 4, 2, 5)) * 2 + 1
    gamma, beta = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.0, 1.0, -1.0, 0.5])
    dout = rng.standard_normal(x.shape)
    expected = torch_grads(x, gamma, beta, dout)
    check_grads(call_backward(student, "spatial_batchnorm_backward", dout, bn_cache(x, gamma)), expected,
                "x of shape (3, 4, 2, 5)")
