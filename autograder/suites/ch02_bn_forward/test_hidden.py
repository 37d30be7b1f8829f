"""Hidden tests of chapter 2: every exercise against the reference on seeded random cases."""

import numpy as np
import pytest

from autograder.feedback import Mismatch, cancellation_hint, check_array, check_unchanged, hint_unless_named, unpack
from autograder.mistakes import ch02_bn_forward as M
from solutions import ch02_bn_forward as ref

# (N, D, scale, offset, dtype): shapes, scales from 1e-3 to 1e3, a large offset, N=2.
CASES = [
    (8, 5, 1.0, 0.0, np.float64),
    (2, 3, 1.0, 0.0, np.float64),
    (16, 4, 1e-3, 0.0, np.float64),   # var < eps: catches eps in the wrong place
    (32, 6, 1e3, 5e3, np.float64),
    (5, 7, 1.0, 1e6, np.float64),     # large offset: see feedback.LARGE_OFFSET
    (10, 3, 1.0, 0.0, np.float32),
    (64, 2, 3.0, -2.0, np.float32),
]


def tol(dtype, expected=None):
    """rtol by dtype (u = 6e-8 in float32: 1e-4 covers reductions of up to 64 values with a margin of
    about 100; 1e-7 in float64 leaves room for offsets of 1e6 times the spread, see feedback.LARGE_OFFSET);
    atol the same fraction of the largest expected value, for entries near zero."""
    rtol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-7
    scale = float(np.abs(expected).max()) if expected is not None and np.size(expected) else 1.0
    return dict(rtol=rtol, atol=rtol * (scale if np.isfinite(scale) and scale > 0 else 1.0))


def bn_inputs(rng, N, D, scale, offset, dtype):
    x = (rng.standard_normal((N, D)) * scale + offset).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, D).astype(dtype)
    beta = rng.normal(0.0, 1.0, D).astype(dtype)
    return x, gamma, beta


def ctx(N, D, scale, offset, dtype):
    return f"x of shape ({N}, {D}), {np.dtype(dtype).name}, scale {scale:g}, offset {offset:g}"


@pytest.mark.exercise("batchnorm_forward")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-{np.dtype(c[4]).name}-s{c[2]:g}")
def test_batchnorm_forward_matches_reference(student, rng, case):
    x, gamma, beta = bn_inputs(rng, *case)
    result, after = student.call_checked("batchnorm_forward", x, gamma, beta)
    out, cache = unpack(result, 2, "out, cache")
    expected, ref_cache = ref.batchnorm_forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64))
    with hint_unless_named(cancellation_hint(case[3], case[2])):
        check_array(out, expected, "out", mistakes=M.forward_mistakes(x, gamma, beta), context=ctx(*case),
                    **tol(case[4], expected))
    for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
        check_unchanged(before, value, name)
    if not isinstance(cache, dict):
        raise Mismatch(f"cache must be a dict (with keys x, x_hat, mean, var, gamma, eps), got {type(cache).__name__}")
    for key in ("x_hat", "mean", "var"):
        if key not in cache:
            raise Mismatch(f"cache has no key {key!r}; the backward pass (chapter 3) needs it")
        with hint_unless_named(cancellation_hint(case[3], case[2])):
            check_array(cache[key], ref_cache[key], f"cache[{key!r}]", context=ctx(*case),
                        mistakes={M.MSG["unbiased"]: x.astype(np.float64).var(0, ddof=1)} if key == "var" else None,
                        **tol(case[4], ref_cache[key] if key != "mean" else np.sqrt(ref_cache["var"])))


@pytest.mark.exercise("batchnorm_forward")
@pytest.mark.points(1)
def test_batchnorm_forward_constant_feature(student, rng):
    """A constant feature has variance 0: the output must be beta, finite."""
    x = rng.standard_normal((6, 3))
    x[:, 1] = 4.2
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([0.1, -0.7, 0.3])
    out, _ = unpack(student.call("batchnorm_forward", x, gamma, beta), 2, "out, cache")
    expected, _ = ref.batchnorm_forward(x, gamma, beta)
    mistakes = {M.MSG["no_eps"]: M.normalize(x, x.mean(0), x.var(0), 0, gamma, beta, "no_eps")}
    mistakes.update(M.forward_mistakes(x, gamma, beta))
    check_array(out, expected, "out", mistakes=mistakes,
                context="x of shape (6, 3) whose column 1 is constant", rtol=1e-7, atol=1e-9)


@pytest.mark.exercise("batchnorm_forward")
@pytest.mark.points(1)
def test_batchnorm_forward_eps_argument(student, rng):
    x, gamma, beta = bn_inputs(rng, 6, 4, 0.01, 0.0, np.float64)
    out, _ = unpack(student.call("batchnorm_forward", x, gamma, beta, eps=1e-3), 2, "out, cache")
    expected, _ = ref.batchnorm_forward(x, gamma, beta, eps=1e-3)
    mistakes = {"It matches eps = 1e-5: use the eps argument, not a constant.": ref.batchnorm_forward(x, gamma, beta)[0]}
    mistakes.update(M.forward_mistakes(x, gamma, beta, eps=1e-3))
    check_array(out, expected, "out", mistakes=mistakes, context="eps=1e-3, feature std 0.01", rtol=1e-7, atol=1e-9)


@pytest.mark.exercise("batchnorm_forward")
@pytest.mark.points(1)
def test_batchnorm_forward_rejects_single_sample(student):
    from autograder.sandbox import SubmissionError
    try:
        student.call("batchnorm_forward", np.ones((1, 3)), np.ones(3), np.zeros(3))
    except SubmissionError as err:
        if "ValueError" in err.message:
            return
        raise Mismatch(f"with N = 1 batchnorm_forward should raise ValueError, it raised: {err.message.splitlines()[-1]}")
    raise Mismatch("with N = 1 batchnorm_forward should raise ValueError (the variance of one sample is 0); it returned a value")


RUNNING_CASES = [(8, 4, 0.1, np.float64), (2, 3, 0.1, np.float64), (32, 5, 0.3, np.float64), (16, 3, 0.1, np.float32)]


@pytest.mark.exercise("update_running_stats")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", RUNNING_CASES, ids=lambda c: f"{c[0]}x{c[1]}-m{c[2]}-{np.dtype(c[3]).name}")
def test_update_running_stats_matches_reference(student, rng, case):
    N, D, momentum, dtype = case
    running_mean = rng.normal(0, 1, D).astype(dtype)
    running_var = rng.uniform(0.5, 2, D).astype(dtype)
    x = (rng.standard_normal((N, D)) * 2 + 1).astype(dtype)
    result, after = student.call_checked("update_running_stats", running_mean, running_var, x, momentum=momentum)
    new_mean, new_var = unpack(result, 2, "new_mean, new_var")
    exp_mean, exp_var = ref.update_running_stats(running_mean.astype(float), running_var.astype(float), x.astype(float), momentum)
    mistakes = M.running_mistakes(running_mean.astype(float), running_var.astype(float), x, momentum)
    context = f"x of shape ({N}, {D}), momentum={momentum}"
    check_array(new_mean, exp_mean, "new_mean", mistakes=mistakes["mean"], context=context, **tol(dtype, exp_mean))
    check_array(new_var, exp_var, "new_var", mistakes=mistakes["var"], context=context, **tol(dtype, exp_var))
    for name, before, value in zip(("running_mean", "running_var", "x"), (running_mean, running_var, x), after):
        check_unchanged(before, value, name)


@pytest.mark.exercise("update_running_stats")
@pytest.mark.points(1)
def test_update_running_stats_converges_like_pytorch(student, rng):
    """Ten steps from PyTorch's initial buffers (zeros, ones)."""
    mean, var = np.zeros(3), np.ones(3)
    exp_mean, exp_var = mean, var
    for step in range(10):
        x = rng.standard_normal((8, 3)) * [1.0, 2.0, 0.5] + [0.0, 3.0, -1.0]
        mean, var = unpack(student.call("update_running_stats", mean, var, x), 2, "new_mean, new_var")
        exp_mean, exp_var = ref.update_running_stats(exp_mean, exp_var, x)
    check_array(mean, exp_mean, "running_mean after 10 steps", rtol=1e-7)
    check_array(var, exp_var, "running_var after 10 steps", rtol=1e-7)


INFERENCE_CASES = [(5, 4, np.float64), (1, 3, np.float64), (7, 2, np.float32)]


@pytest.mark.exercise("batchnorm_inference")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", INFERENCE_CASES, ids=lambda c: f"{c[0]}x{c[1]}-{np.dtype(c[2]).name}")
def test_batchnorm_inference_matches_reference(student, rng, case):
    N, D, dtype = case
    x = (rng.standard_normal((N, D)) * 2 + 0.5).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, D).astype(dtype), rng.normal(0, 1, D).astype(dtype)
    running_mean = rng.normal(0, 1, D).astype(dtype)
    running_var = rng.uniform(1e-4, 3, D).astype(dtype)
    running_var[0] = 2e-6  # smaller than eps: catches eps outside the square root
    args = (x, gamma, beta, running_mean, running_var)
    result, after = student.call_checked("batchnorm_inference", *args)
    expected = ref.batchnorm_inference(*(a.astype(np.float64) for a in args))
    mistakes = M.inference_mistakes(*(a.astype(np.float64) for a in args)) if N > 1 else {
        k: v for k, v in M.inference_mistakes(*(a.astype(np.float64) for a in args)).items() if k != M.MSG["batch_stats_in_eval"]}
    check_array(result, expected, "out", mistakes=mistakes, context=f"x of shape ({N}, {D})", **tol(dtype, expected))
    for name, before, value in zip(("x", "gamma", "beta", "running_mean", "running_var"), args, after):
        check_unchanged(before, value, name)


SPATIAL_CASES = [(4, 3, 5, 5, 1.0, np.float64), (2, 2, 1, 1, 1.0, np.float64), (3, 4, 2, 6, 1e-3, np.float64),
                 (2, 5, 3, 3, 10.0, np.float32)]


@pytest.mark.exercise("spatial_batchnorm_forward")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", SPATIAL_CASES, ids=lambda c: "x".join(map(str, c[:4])) + f"-{np.dtype(c[5]).name}")
def test_spatial_batchnorm_forward_matches_reference(student, rng, case):
    N, C, H, W, scale, dtype = case
    x = (rng.standard_normal((N, C, H, W)) * scale + rng.normal(0, 3, (1, C, 1, 1)) * scale).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, C).astype(dtype), rng.normal(0, 1, C).astype(dtype)
    result, after = student.call_checked("spatial_batchnorm_forward", x, gamma, beta)
    out, cache = unpack(result, 2, "out, cache")
    expected, _ = ref.spatial_batchnorm_forward(x.astype(float), gamma.astype(float), beta.astype(float))
    check_array(out, expected, "out", mistakes=M.spatial_mistakes(x, gamma, beta),
                context=f"x of shape {x.shape}, {np.dtype(dtype).name}", **tol(dtype, expected))
    for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
        check_unchanged(before, value, name)
    if not isinstance(cache, dict):
        raise Mismatch(f"cache must be a dict, got {type(cache).__name__}")
