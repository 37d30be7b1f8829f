"""Hidden tests of chapter 6: every exercise against the reference on seeded random cases."""

import numpy as np
import pytest

from autograder.feedback import Mismatch, cancellation_hint, check_array, check_outputs, check_unchanged, hint_unless_named, unpack
from autograder.mistakes import ch06_beyond as M
from autograder.sandbox import SubmissionError
from solutions import ch06_beyond as ref


def tol(dtype, expected=None):
    """rtol by dtype; atol relative to the largest reference value (gradients scale with 1 / std)."""
    rtol, atol = (1e-4, 1e-5) if np.dtype(dtype) == np.float32 else (1e-7, 1e-9)
    if expected is not None and np.size(expected):
        atol *= max(float(np.abs(expected).max()), 1e-30)
    return dict(rtol=rtol, atol=atol)


def f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def _require_dict(cache, keys: str = "") -> None:
    """The cache a forward pass returns must be a dict (the backward passes read its keys)."""
    if isinstance(cache, dict):
        return
    raise Mismatch(f"cache must be a dict{keys}, got {type(cache).__name__}")


# --------------------------------------------------------------------------- LayerNorm forward

# (N, D, scale, offset, dtype): shapes, scales from 1e-3 to 1e3, large offsets, N = 1 and 2.
LN_CASES = [
    (4, 8, 1.0, 0.0, np.float64),
    (1, 6, 1.0, 0.0, np.float64),     # LayerNorm works for a single example
    (2, 3, 1.0, 0.0, np.float64),
    (6, 5, 1e-3, 0.0, np.float64),    # var < eps: catches eps in the wrong place
    (5, 16, 1e3, 5e3, np.float64),
    (3, 10, 1.0, 1e6, np.float64),    # large offset: see feedback.LARGE_OFFSET
    (8, 6, 1.0, 0.0, np.float32),
    (4, 32, 3.0, -2.0, np.float32),
]


def ln_inputs(rng, N, D, scale, offset, dtype):
    rows = rng.uniform(0.5, 2.0, (N, 1))
    x = (rng.standard_normal((N, D)) * rows * scale + offset + rng.normal(0, 2, (N, 1)) * scale).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, D).astype(dtype)
    beta = rng.normal(0.0, 1.0, D).astype(dtype)
    return x, gamma, beta


def ln_ctx(N, D, scale, offset, dtype):
    return f"x of shape ({N}, {D}), {np.dtype(dtype).name}, scale {scale:g}, offset {offset:g}"


def ln_id(case):
    return f"{case[0]}x{case[1]}-{np.dtype(case[4]).name}-s{case[2]:g}-o{case[3]:g}"


@pytest.mark.exercise("layernorm_forward")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", LN_CASES, ids=ln_id)
def test_layernorm_forward_matches_reference(student, rng, case):
    x, gamma, beta = ln_inputs(rng, *case)
    result, after = student.call_checked("layernorm_forward", x, gamma, beta)
    out, cache = unpack(result, 2, "out, cache")
    expected, ref_cache = ref.layernorm_forward(*f64(x, gamma, beta))
    with hint_unless_named(cancellation_hint(case[3], case[2])):
        check_array(out, expected, "out", mistakes=M.layernorm_forward_mistakes(x, gamma, beta),
                    context=ln_ctx(*case), **tol(case[4], expected))
    for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
        check_unchanged(before, value, name)
    _require_dict(cache, " (with keys x, x_hat, mean, var, gamma, eps)")
    for key in ("x_hat", "mean", "var"):
        if key not in cache:
            raise Mismatch(f"cache has no key {key!r}; the backward pass needs it")
        value = cache[key]
        if isinstance(value, np.ndarray) and value.size == ref_cache[key].size:
            value = value.reshape(ref_cache[key].shape)  # (N,) or (N, 1): both fine
        mistakes = None
        if key == "var" and case[1] > 1:
            mistakes = {M.MSG["unbiased"]: x.astype(np.float64).var(1, ddof=1)}
        check_array(value, ref_cache[key], f"cache[{key!r}]", context=ln_ctx(*case), mistakes=mistakes,
                    **tol(case[4], ref_cache[key]))


@pytest.mark.exercise("layernorm_forward")
@pytest.mark.points(1)
def test_layernorm_forward_constant_row(student, rng):
    """A constant row has variance 0: its output must be beta, finite."""
    x, gamma, beta = ln_inputs(rng, 4, 5, 1.0, 0.0, np.float64)
    x[2] = -3.7
    expected, _ = ref.layernorm_forward(x, gamma, beta)
    out, _ = unpack(student.call("layernorm_forward", x.copy(), gamma.copy(), beta.copy()), 2, "out, cache")
    check_array(out, expected, "out", mistakes=M.layernorm_forward_mistakes(x, gamma, beta),
                context="x of shape (4, 5) whose row 2 is constant", rtol=1e-7, atol=1e-9)


@pytest.mark.exercise("layernorm_forward")
@pytest.mark.points(1)
def test_layernorm_forward_eps_argument(student, rng):
    x, gamma, beta = ln_inputs(rng, 5, 6, 0.01, 0.0, np.float64)
    expected, _ = ref.layernorm_forward(x, gamma, beta, eps=1e-3)
    out, _ = unpack(student.call("layernorm_forward", x.copy(), gamma.copy(), beta.copy(), eps=1e-3), 2, "out, cache")
    mistakes = {"It matches eps = 1e-5: use the eps argument, not a constant.": ref.layernorm_forward(x, gamma, beta)[0]}
    mistakes.update(M.layernorm_forward_mistakes(x, gamma, beta, eps=1e-3))
    check_array(out, expected, "out", mistakes=mistakes, context="eps=1e-3, row std 0.01", rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- LayerNorm backward

LN_BACKWARD_CASES = [
    (4, 6, 1.0, 0.0, np.float64),
    (5, 5, 1.0, 0.5, np.float64),     # square: a sum over the wrong axis has the right shape
    (2, 3, 1.0, 0.0, np.float64),
    (6, 4, 1e-3, 0.0, np.float64),    # var < eps
    (3, 8, 1e3, 5e3, np.float64),
    (1, 7, 1.0, 0.0, np.float64),
    (8, 5, 1.0, 0.0, np.float32),
]


def call_backward(student, dout, cache):
    try:
        return student.call_checked("layernorm_backward", dout, cache)
    except SubmissionError as err:
        hint = M.backward_crash_hint(err.message, cache) if err.kind == "exception" else None
        if hint:
            raise Mismatch(hint, mistake="cache_contract") from None
        raise


@pytest.mark.exercise("layernorm_backward")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", LN_BACKWARD_CASES, ids=ln_id)
def test_layernorm_backward_matches_reference(student, rng, case):
    N, D, scale, offset, dtype = case
    x, gamma, beta = ln_inputs(rng, *case)
    dout = (rng.standard_normal((N, D)) * rng.uniform(0.5, 2.0)).astype(dtype)
    _, cache = ref.layernorm_forward(x, gamma, beta)       # the cache the student's backward gets
    cache64 = {k: v.astype(np.float64) if isinstance(v, np.ndarray) else v for k, v in cache.items()}
    result, after = call_backward(student, dout, cache)
    dx, dgamma, dbeta = unpack(result, 3, "dx, dgamma, dbeta")
    exp_dx, exp_dgamma, exp_dbeta = ref.layernorm_backward(dout.astype(np.float64), cache64)
    mistakes = M.layernorm_backward_mistakes(dout, cache64)
    context = f"dout and cache of shape ({N}, {D}), {np.dtype(dtype).name}, x scale {scale:g}, offset {offset:g}"
    for name, value, expected in (("dgamma", dgamma, exp_dgamma), ("dbeta", dbeta, exp_dbeta)):
        if isinstance(value, np.ndarray) and value.shape == (N,) and N != D:
            raise Mismatch(f"{name} has shape ({N},), expected ({D},) ({context}). {M.MSG['dgamma_wrong_axis']}",
                           mistake="dgamma_wrong_axis", named=True)
    check_outputs([(name, value, expected, dict(mistakes=mistakes[name], **tol(dtype, expected)))
                   for name, value, expected in (("dx", dx, exp_dx), ("dgamma", dgamma, exp_dgamma),
                                                 ("dbeta", dbeta, exp_dbeta))], context=context)
    check_unchanged(dout, after[0], "dout")
    cache_after = after[1] if isinstance(after[1], dict) else {}
    for key, value in ((k, v) for k, v in cache.items() if isinstance(v, np.ndarray)):
        if key not in cache_after:
            raise Mismatch(f"your function removed the key {key!r} from the cache it was given; leave the cache as it is.")
        check_unchanged(value, cache_after[key], f"cache[{key!r}]")


# --------------------------------------------------------------------------- GroupNorm

# (N, C, H, W, num_groups, scale, offset, dtype)
GN_CASES = [
    (2, 6, 4, 4, 3, 1.0, 0.0, np.float64),
    (3, 8, 2, 3, 4, 1.0, 2.0, np.float64),
    (2, 4, 3, 3, 2, 1e-3, 0.0, np.float64),   # var < eps
    (1, 6, 5, 5, 2, 1e3, 5e3, np.float64),    # N = 1, large scale and offset
    (4, 4, 1, 1, 2, 1.0, 0.0, np.float64),    # H = W = 1
    (2, 6, 2, 3, 6, 1.0, 0.0, np.float64),    # num_groups = C: InstanceNorm
    (3, 4, 2, 2, 1, 1.0, 1.0, np.float64),    # num_groups = 1: LayerNorm over (C, H, W)
    (2, 12, 3, 3, 4, 2.0, -1.0, np.float32),
]


def gn_inputs(rng, N, C, H, W, G, scale, offset, dtype):
    channel_scale = rng.uniform(0.5, 2.0, (1, C, 1, 1))
    channel_offset = rng.normal(0.0, 3.0, (1, C, 1, 1))
    x = (rng.standard_normal((N, C, H, W)) * channel_scale * scale + (offset + channel_offset * scale)).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, C).astype(dtype)
    beta = rng.normal(0.0, 1.0, C).astype(dtype)
    return x, gamma, beta


def gn_id(case):
    return "x".join(map(str, case[:4])) + f"-G{case[4]}-{np.dtype(case[7]).name}-s{case[5]:g}"


@pytest.mark.exercise("groupnorm_forward")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", GN_CASES, ids=gn_id)
def test_groupnorm_forward_matches_reference(student, rng, case):
    N, C, H, W, G, scale, offset, dtype = case
    x, gamma, beta = gn_inputs(rng, *case)
    result, after = student.call_checked("groupnorm_forward", x, gamma, beta, G)
    out, cache = unpack(result, 2, "out, cache")
    expected, _ = ref.groupnorm_forward(*f64(x, gamma, beta), G)
    context = f"x of shape {x.shape}, {np.dtype(dtype).name}, num_groups={G}, scale {scale:g}, offset {offset:g}"
    check_array(out, expected, "out", mistakes=M.groupnorm_forward_mistakes(x, gamma, beta, G), context=context,
                **tol(dtype, expected))
    for name, before, value in zip(("x", "gamma", "beta"), (x, gamma, beta), after):
        check_unchanged(before, value, name)
    _require_dict(cache)


@pytest.mark.exercise("groupnorm_forward")
@pytest.mark.points(1)
def test_groupnorm_forward_constant_group(student, rng):
    """A group whose values are all equal has variance 0: its output must be beta, finite."""
    x, gamma, beta = gn_inputs(rng, 2, 6, 3, 3, 3, 1.0, 0.0, np.float64)
    x[1, 2:4] = 0.8
    expected, _ = ref.groupnorm_forward(x, gamma, beta, 3)
    out, _ = unpack(student.call("groupnorm_forward", x.copy(), gamma.copy(), beta.copy(), 3), 2, "out, cache")
    check_array(out, expected, "out", mistakes=M.groupnorm_forward_mistakes(x, gamma, beta, 3),
                context="x of shape (2, 6, 3, 3), num_groups=3, group 1 of example 1 constant", rtol=1e-7, atol=1e-9)


@pytest.mark.exercise("groupnorm_forward")
@pytest.mark.points(1)
def test_groupnorm_forward_eps_argument(student, rng):
    x, gamma, beta = gn_inputs(rng, 2, 4, 3, 2, 2, 0.01, 0.0, np.float64)
    expected, _ = ref.groupnorm_forward(x, gamma, beta, 2, eps=1e-3)
    out, _ = unpack(student.call("groupnorm_forward", x.copy(), gamma.copy(), beta.copy(), 2, eps=1e-3), 2,
                    "out, cache")
    mistakes = {"It matches eps = 1e-5: use the eps argument, not a constant.": ref.groupnorm_forward(x, gamma, beta, 2)[0]}
    mistakes.update(M.groupnorm_forward_mistakes(x, gamma, beta, 2, eps=1e-3))
    check_array(out, expected, "out", mistakes=mistakes, context="eps=1e-3, std 0.01", rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- folding BN into a convolution

# (C_out, C_in, kH, kW, with_bias, eps, dtype)
FOLD_CASES = [
    (4, 3, 3, 3, True, 1e-5, np.float64),
    (5, 5, 3, 3, True, 1e-5, np.float64),    # C_in = C_out: scaling the wrong axis keeps the shape
    (6, 6, 1, 1, False, 1e-5, np.float64),   # no bias
    (8, 4, 3, 3, False, 1e-3, np.float64),   # no bias, eps argument
    (3, 2, 5, 5, True, 1e-5, np.float32),
    (4, 4, 3, 3, True, 1e-5, np.float32),
]


def fold_inputs(rng, C_out, C_in, kH, kW, with_bias, dtype):
    weight = (rng.standard_normal((C_out, C_in, kH, kW)) * rng.uniform(0.05, 2.0)).astype(dtype)
    bias = rng.normal(0.0, 1.0, C_out).astype(dtype) if with_bias else None
    gamma = (rng.uniform(0.5, 2.0, C_out) * rng.choice([-1.0, 1.0], C_out)).astype(dtype)
    beta = rng.normal(0.0, 1.0, C_out).astype(dtype)
    running_mean = rng.normal(0.0, 3.0, C_out).astype(dtype)
    running_var = (10.0 ** rng.uniform(-3, 2, C_out)).astype(dtype)
    running_var[0] = 2e-6  # smaller than eps: catches eps outside the square root
    return weight, bias, gamma, beta, running_mean, running_var


def fold_id(case):
    return "x".join(map(str, case[:4])) + ("-bias" if case[4] else "-nobias") + f"-eps{case[5]:g}-{np.dtype(case[6]).name}"


def call_fold(student, args, eps):
    """fold_batchnorm(*args, eps=eps) on copies, with a hint when it fails on a shape or on bias=None."""
    try:
        return student.call_checked("fold_batchnorm", *args, eps=eps)
    except SubmissionError as err:
        hint = M.fold_crash_hint(err.message, args[0].shape, args[1] is None) if err.kind == "exception" else None
        if hint:
            raise Mismatch(hint, mistake="fold_wrong_axis" if "axis 0" in hint else "fold_bias_none") from None
        raise


@pytest.mark.exercise("fold_batchnorm")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", FOLD_CASES, ids=fold_id)
def test_fold_batchnorm_matches_reference(student, rng, case):
    C_out, C_in, kH, kW, with_bias, eps, dtype = case
    args = fold_inputs(rng, C_out, C_in, kH, kW, with_bias, dtype)
    result, after = call_fold(student, args, eps)
    new_weight, new_bias = unpack(result, 2, "new_weight, new_bias")
    exp_weight, exp_bias = ref.fold_batchnorm(*f64(*args), eps=eps)
    mistakes = M.fold_batchnorm_mistakes(*args, eps=eps)
    context = (f"weight of shape {args[0].shape}, {np.dtype(dtype).name}, bias {'given' if with_bias else 'None'}, "
               f"eps={eps:g}, running_var[0] = 2e-6 < eps")
    if new_bias is None:
        raise Mismatch(f"new_bias is None ({context}): return the folded bias as an array even when the "
                       f"convolution has no bias (it is -running_mean * scale + beta).")
    check_array(new_weight, exp_weight, "new_weight", mistakes=mistakes["weight"], context=context,
                **tol(dtype, exp_weight))
    check_array(new_bias, exp_bias, "new_bias", mistakes=mistakes["bias"], context=context, **tol(dtype, exp_bias))
    names = ("weight", "bias", "gamma", "beta", "running_mean", "running_var")
    for name, before, value in zip(names, args, after):
        if before is not None:
            check_unchanged(before, value, name)
