"""Hidden tests of chapter 3: every exercise against the reference on seeded random cases.

The backward passes receive the cache of the reference forward pass (chapter 2), so a
submission is graded on its backward pass alone.
"""

import numpy as np
import pytest

from autograder.feedback import Mismatch, check_array, check_outputs, unpack
from autograder.mistakes import ch03_bn_backward as M
from autograder.ops.basic import _FUNCTIONS
from autograder.sandbox import SubmissionError
from autograder.suitekit import cache_key_error, contract_cache
from solutions import ch02_bn_forward as fwd
from solutions import ch03_bn_backward as ref


def tol(dtype, expected):
    rtol, floor = (1e-4, 1e-5) if dtype == np.float32 else (1e-7, 1e-9)
    scale = float(np.abs(expected).max()) if np.size(expected) else 1.0
    return dict(rtol=rtol, atol=floor * (scale if np.isfinite(scale) and scale > 0 else 1.0))


def unchanged(before, after, name):
    """Like check_unchanged, for arrays and for the cache dict."""
    if isinstance(before, dict):
        if not isinstance(after, dict) or set(after) != set(before):
            raise Mismatch(f"your function changed the keys of the {name} dict; do not modify the cache")
        for key, value in before.items():
            unchanged(value, after[key], f"{name}[{key!r}]")
        return
    if isinstance(before, np.ndarray):
        if not isinstance(after, np.ndarray) or after.shape != before.shape or not np.array_equal(after, before):
            raise Mismatch(f"your function modified its input {name} in place; work on a copy "
                           f"(e.g. d = d * gamma, not d *= gamma).")
    elif after != before:
        raise Mismatch(f"your function modified {name}; do not modify the cache")


def call_backward(student, name, dout, cache):
    """``name(dout, cache)`` in the sandbox: (dx, dgamma, dbeta), with inputs checked unchanged."""
    try:
        result, after = student.call_checked(name, dout, cache)
    except SubmissionError as err:
        last = err.message.strip().splitlines()[-1] if err.message.strip() else ""
        if last.startswith("KeyError"):
            raise Mismatch(cache_key_error(name, last, cache), mistake="cache_contract") from None
        raise
    dx, dgamma, dbeta = unpack(result, 3, "dx, dgamma, dbeta")
    return (dx, dgamma, dbeta), after


def check_grads(result, expected, mistakes, dtype, context, dout, cache):
    """All three gradients compared; a named mistake first, and a dx that is wrong only
    because the compact formula used the submission's own wrong dgamma or dbeta said so."""
    check_outputs([(name, value, truth, dict(mistakes=mistakes[name], **tol(dtype, truth)))
                   for name, value, truth in zip(("dx", "dgamma", "dbeta"), result, expected)],
                  context=context, derived={"dx": (("dgamma", "dbeta"), M.dx_given(dout, cache))})


# ------------------------------------------------------------------------- numerical_gradient

# (test function of autograder/ops/basic.py, shape of x, h or None for the default)
GRADIENT_CASES = [
    ("square", (3, 4), None),
    ("sin_times_x", (5,), 1e-3),
    ("row_softmax", (4, 5), 1e-4),
    ("matmul_fixed", (2, 3, 4), 1e-2),
]


def run_numerical_gradient(student, rng, function, shape, h):
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(np.shape(_FUNCTIONS[function](x)))
    kwargs = {} if h is None else {"h": h}
    f = _FUNCTIONS[function]
    expected = ref.numerical_gradient(f, x, dout, **kwargs)
    mistakes = M.numerical_gradient_mistakes(f, x, dout, h or 1e-5)
    answer = student.op("basic.numerical_gradient", "numerical_gradient", function, x, dout.copy(), **kwargs)
    context = f"f = {function}, x of shape {shape}" + ("" if h is None else f", h = {h:g}")
    after = answer["x_after"]
    # x restored by arithmetic (x[i] += h ... x[i] -= h) may differ by rounding: accepted.
    if not (isinstance(after, np.ndarray) and after.shape == x.shape and np.allclose(after, x, rtol=1e-14, atol=0)):
        raise Mismatch(M.MSG["x_changed"] + f" (inputs: {context})")
    check_array(answer["dx"], expected, "dx", mistakes=mistakes,
                context=context, rtol=1e-7, atol=1e-8 * max(1.0, np.abs(expected).max()))


@pytest.mark.exercise("numerical_gradient")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", GRADIENT_CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}")
def test_numerical_gradient_matches_reference(student, rng, case):
    run_numerical_gradient(student, rng, *case)


@pytest.mark.exercise("numerical_gradient")
@pytest.mark.points(1)
def test_numerical_gradient_h_argument(student, rng):
    """With h = 0.1 the centered difference of sin(x) * x differs visibly from h = 1e-5."""
    run_numerical_gradient(student, rng, "sin_times_x", (2, 3), 0.1)


# ------------------------------------------------------------------------- batchnorm backward

# (N, D, scale, offset, dtype): shapes, scales (var below eps = 1e-5 catches eps in the
# wrong place), a large offset, N = 2, float32.
CASES = [
    (8, 5, 1.0, 0.0, np.float64),
    (2, 3, 0.01, 0.0, np.float64),
    (16, 4, 1e-3, 0.0, np.float64),
    (32, 6, 1e3, 5e3, np.float64),
    (10, 3, 1.0, 0.0, np.float32),
    (64, 2, 3.0, -2.0, np.float32),
]


def bn_problem(rng, N, D, scale, offset, dtype):
    x = (rng.standard_normal((N, D)) * scale + offset).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, D).astype(dtype)
    beta = rng.normal(0.0, 1.0, D).astype(dtype)
    dout = rng.standard_normal((N, D)).astype(dtype)
    _, cache = fwd.batchnorm_forward(x, gamma, beta)
    return dout, cache


def ctx(N, D, scale, offset, dtype):
    return f"x of shape ({N}, {D}), {np.dtype(dtype).name}, scale {scale:g}, offset {offset:g}, random dout"


def case_id(c):
    return f"{c[0]}x{c[1]}-{np.dtype(c[4]).name}-s{c[2]:g}"


def backward_case(student, name, rng, case):
    dout, cache = bn_problem(rng, *case)
    result, after = call_backward(student, name, dout, cache)
    cache64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in cache.items()}
    expected = ref.batchnorm_backward_compact(dout.astype(np.float64), cache64)
    check_grads(result, expected, M.backward_mistakes_rows(dout, cache64), case[4], ctx(*case), dout, cache64)
    unchanged(dout, after[0], "dout")
    unchanged(cache, after[1], "cache")


def constant_case(student, name, rng):
    """A constant feature: var = 0, std = sqrt(eps); the gradient must be finite."""
    x = rng.standard_normal((6, 3))
    x[:, 1] = 4.2
    gamma, beta, dout = np.array([1.0, 2.0, 3.0]), np.zeros(3), rng.standard_normal((6, 3))
    _, cache = fwd.batchnorm_forward(x, gamma, beta)
    result, _ = call_backward(student, name, dout, cache)
    expected = ref.batchnorm_backward_compact(dout, cache)
    check_grads(result, expected, M.backward_mistakes_rows(dout, cache), np.float64,
                "x of shape (6, 3) whose column 1 is constant (variance 0)", dout, cache)


def contract_case(student, name, rng):
    """A cache with only the keys of the contract (x, x_hat, mean, var, gamma, eps), as any
    forward pass that keeps chapter 2's contract may return."""
    dout, cache = bn_problem(rng, 12, 4, 2.0, 1.0, np.float64)
    cache = contract_cache(cache)
    result, _ = call_backward(student, name, dout, cache)
    check_grads(result, ref.batchnorm_backward_compact(dout, cache), M.backward_mistakes_rows(dout, cache),
                np.float64, "x of shape (12, 4), a cache with only the keys of the contract", dout, cache)


@pytest.mark.exercise("batchnorm_backward")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_batchnorm_backward_matches_reference(student, rng, case):
    backward_case(student, "batchnorm_backward", rng, case)


@pytest.mark.exercise("batchnorm_backward")
@pytest.mark.points(1)
def test_batchnorm_backward_constant_feature(student, rng):
    constant_case(student, "batchnorm_backward", rng)


@pytest.mark.exercise("batchnorm_backward_compact")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_batchnorm_backward_compact_matches_reference(student, rng, case):
    backward_case(student, "batchnorm_backward_compact", rng, case)


@pytest.mark.exercise("batchnorm_backward_compact")
@pytest.mark.points(1)
def test_batchnorm_backward_compact_constant_feature(student, rng):
    constant_case(student, "batchnorm_backward_compact", rng)


@pytest.mark.exercise("batchnorm_backward")
@pytest.mark.points(1)
def test_batchnorm_backward_contract_cache(student, rng):
    contract_case(student, "batchnorm_backward", rng)


@pytest.mark.exercise("batchnorm_backward_compact")
@pytest.mark.points(1)
def test_batchnorm_backward_compact_contract_cache(student, rng):
    contract_case(student, "batchnorm_backward_compact", rng)


# ------------------------------------------------------------------------- spatial

SPATIAL_CASES = [
    (4, 3, 5, 5, 1.0, np.float64),
    (2, 2, 1, 1, 0.01, np.float64),
    (3, 4, 2, 6, 1e-3, np.float64),
    (2, 5, 3, 3, 10.0, np.float32),
]


@pytest.mark.exercise("spatial_batchnorm_backward")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", SPATIAL_CASES, ids=lambda c: "x".join(map(str, c[:4])) + f"-{np.dtype(c[5]).name}")
def test_spatial_batchnorm_backward_matches_reference(student, rng, case):
    N, C, H, W, scale, dtype = case
    x = (rng.standard_normal((N, C, H, W)) * scale + rng.normal(0, 3, (1, C, 1, 1)) * scale).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, C).astype(dtype), rng.normal(0, 1, C).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    _, cache = fwd.spatial_batchnorm_forward(x, gamma, beta)
    result, after = call_backward(student, "spatial_batchnorm_backward", dout, cache)
    cache64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in cache.items()}
    expected = ref.spatial_batchnorm_backward(dout.astype(np.float64), cache64)
    check_grads(result, expected, M.spatial_backward_mistakes(dout, cache64), dtype,
                f"x of shape {x.shape}, {np.dtype(dtype).name}, scale {scale:g}, random dout", dout, cache64)
    unchanged(dout, after[0], "dout")
    unchanged(cache, after[1], "cache")


@pytest.mark.exercise("spatial_batchnorm_backward")
@pytest.mark.points(1)
def test_spatial_batchnorm_backward_contract_cache(student, rng):
    """A spatial cache with only the keys of the contract, in the (N, C, H, W) layout."""
    x = rng.standard_normal((3, 4, 3, 2)) * 2.0 + rng.normal(0, 3, (1, 4, 1, 1))
    gamma, beta, dout = rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.standard_normal(x.shape)
    cache = contract_cache(fwd.spatial_batchnorm_forward(x, gamma, beta)[1])
    result, _ = call_backward(student, "spatial_batchnorm_backward", dout, cache)
    check_grads(result, ref.spatial_batchnorm_backward(dout, cache), M.spatial_backward_mistakes(dout, cache),
                np.float64, "x of shape (3, 4, 3, 2), a cache with only the keys of the contract", dout, cache)
