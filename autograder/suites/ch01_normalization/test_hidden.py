"""Hidden tests of chapter 1: every exercise against the reference on seeded random cases."""

import numpy as np
import pytest

from autograder.feedback import Mismatch, as_array, cancellation_hint, check_array, check_unchanged, hint_unless_named, unpack
from autograder.mistakes import ch01_normalization as M
from autograder.suitekit import numbers, scalar
from solutions import ch01_normalization as ref


def tol(dtype, expected=None):
    """Tolerances: relative, plus an absolute floor tied to the largest expected value.

    float64: a correct Z is off by about u * |offset| / spread = 1e-10 in every entry at the
    largest offsets (feedback.LARGE_OFFSET), near zero too; 1e-7 of the largest value covers that."""
    rtol, floor = (1e-4, 1e-6) if dtype == np.float32 else (1e-7, 1e-7)
    scale = float(np.max(np.abs(expected))) if expected is not None and np.size(expected) else 1.0
    return dict(rtol=rtol, atol=floor * (scale if np.isfinite(scale) and scale > 0 else 1.0))


def unchanged(before, after, name, hint=""):
    try:
        check_unchanged(before, after, name)
    except Mismatch as err:
        raise Mismatch(f"{err}{hint}") from None


def columns(rng, N, scales, offsets, dtype):
    scales, offsets = np.asarray(scales, dtype=float), np.broadcast_to(np.asarray(offsets, dtype=float), len(scales))
    return (rng.standard_normal((N, len(scales))) * scales + offsets).astype(dtype)


# ------------------------------------------------------------------------- standardize

# (N, per-column scales, per-column offsets, dtype): shapes, scales from 1e-5 to 1e3
# (variance below eps = 1e-8 catches eps in the wrong place), large offsets, N = 2, float32.
STANDARDIZE_CASES = [
    (8, (1.0, 2.0, 0.5, 3.0, 1.0), 0.0, np.float64),
    (2, (1.0, 1.0, 4.0), (0.0, 1.0, -2.0), np.float64),
    (16, (1e-3, 1e-5, 1.0, 1e3), (0.0, 0.0, 5.0, -1e3), np.float64),
    (32, (1.0, 10.0, 1e-2), (1e4, -1e4, 1e4), np.float64),   # offsets up to feedback.LARGE_OFFSET times the spread
    (10, (1.0, 1e-2, 100.0), 0.0, np.float32),
    (64, (3.0, 1.0, 1e-3), (-2.0, 0.0, 0.0), np.float32),
]


def case_id(case):
    return f"{case[0]}x{len(case[1])}-{np.dtype(case[-1]).name}-s{min(case[1]):g}"


@pytest.mark.exercise("standardize")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", STANDARDIZE_CASES, ids=case_id)
def test_standardize_matches_reference(student, rng, case):
    N, scales, offsets, dtype = case
    X = columns(rng, N, scales, offsets, dtype)
    result, after = student.call_checked("standardize", X)
    Z, mean, var = unpack(result, 3, "Z, mean, var")
    exp_Z, exp_mean, exp_var = ref.standardize(X.astype(np.float64))
    mistakes = M.standardize_mistakes(X)
    context = (f"X of shape {X.shape}, {np.dtype(dtype).name}, column scales {', '.join(f'{s:g}' for s in scales)}"
               f", offsets {', '.join(f'{o:g}' for o in np.broadcast_to(offsets, len(scales)))}")
    hint = cancellation_hint(np.broadcast_to(offsets, len(scales)), scales)
    with hint_unless_named(hint):
        check_array(Z, exp_Z, "Z", mistakes=mistakes["Z"], context=context, **tol(dtype, exp_Z))
    if np.shape(mean) == (N,) and N != X.shape[1]:
        raise Mismatch(f"mean has shape ({N},), one value per row: {M.MSG['axis']}")
    # the mean of each column to a fraction of that column's spread
    check_array(mean, exp_mean, "mean", context=context, rtol=tol(dtype)["rtol"],
                atol=tol(dtype)["rtol"] * np.sqrt(exp_var.astype(np.float64)) + 1e-30)
    with hint_unless_named(hint):
        check_array(var, exp_var, "var", mistakes=mistakes["var"], context=context, rtol=tol(dtype)["rtol"], atol=1e-30)
    unchanged(X, after[0], "X")


@pytest.mark.exercise("standardize")
@pytest.mark.points(1)
def test_standardize_constant_feature(student, rng):
    """A constant column has variance 0: Z must be a finite column of zeros, var 0."""
    X = rng.standard_normal((6, 3))
    X[:, 1] = 4.2
    exp_Z, _, exp_var = ref.standardize(X)
    Z, mean, var = unpack(student.call("standardize", X.copy()), 3, "Z, mean, var")
    check_array(Z, exp_Z, "Z", mistakes=M.standardize_mistakes(X)["Z"],
                context="X of shape (6, 3) whose column 1 is constant (4.2)", rtol=1e-7, atol=1e-9)
    check_array(var, exp_var, "var", context="X of shape (6, 3) whose column 1 is constant", rtol=1e-7, atol=1e-20)


@pytest.mark.exercise("standardize")
@pytest.mark.points(1)
def test_standardize_eps_argument(student, rng):
    X = columns(rng, 7, (0.5, 0.1, 2.0), (1.0, 0.0, -3.0), np.float64)
    exp_Z, _, _ = ref.standardize(X, eps=1.0)
    Z, _, _ = unpack(student.call("standardize", X.copy(), eps=1.0), 3, "Z, mean, var")
    check_array(Z, exp_Z, "Z", mistakes=M.standardize_mistakes(X, eps=1.0)["Z"],
                context="eps=1.0, X of shape (7, 3)", rtol=1e-7, atol=1e-12)


# ------------------------------------------------------------------------- apply_standardization

# (N_train, N, D, dtype, special): the statistics come from a training set; X is a shifted,
# rescaled test batch (so its own statistics differ). "tiny" gives features with variance
# 0 and below eps in the training set.
APPLY_CASES = [
    (20, 6, 3, np.float64, ""),
    (15, 1, 4, np.float64, ""),
    (12, 5, 4, np.float64, "tiny"),
    (30, 8, 3, np.float32, ""),
]


@pytest.mark.exercise("apply_standardization")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", APPLY_CASES, ids=lambda c: f"{c[1]}x{c[2]}-{np.dtype(c[3]).name}{'-' + c[4] if c[4] else ''}")
def test_apply_standardization_matches_reference(student, rng, case):
    N_train, N, D, dtype, special = case
    scales, offsets = rng.uniform(0.1, 10.0, D), rng.normal(0.0, 20.0, D)
    if special == "tiny":
        scales[:2] = (0.0, 1e-5)  # variance 0 and about 1e-10, below eps
    X_train = columns(rng, N_train, scales, offsets, dtype)
    _, mean, var = ref.standardize(X_train)
    X = columns(rng, N, scales * 1.5, offsets + 2.0 * scales, dtype)
    result, after = student.call_checked("apply_standardization", X, mean, var)
    expected = ref.apply_standardization(X.astype(np.float64), mean.astype(np.float64), var.astype(np.float64))
    context = f"X of shape {X.shape}, {np.dtype(dtype).name}, statistics of a different (training) set"
    if special == "tiny":
        context += " with a constant feature and one of variance 1e-10"
    check_array(result, expected, "Z", mistakes=M.apply_mistakes(X, mean, var), context=context, **tol(dtype, expected))
    for name, before, value in zip(("X", "mean", "var"), (X, mean, var), after):
        unchanged(before, value, name)


@pytest.mark.exercise("apply_standardization")
@pytest.mark.points(1)
def test_apply_standardization_eps_argument(student, rng):
    X = rng.standard_normal((4, 3))
    mean, var = np.array([0.5, -1.0, 0.0]), np.array([0.25, 2.0, 1e-3])
    expected = ref.apply_standardization(X, mean, var, eps=0.5)
    mistakes = M.apply_mistakes(X, mean, var, eps=0.5)
    result = student.call("apply_standardization", X.copy(), mean.copy(), var.copy(), eps=0.5)
    check_array(result, expected, "Z", mistakes=mistakes,
                context="eps=0.5, X of shape (4, 3)", rtol=1e-7, atol=1e-12)


# ------------------------------------------------------------------------- condition_number

# (N, per-column scales, offset, dtype): condition numbers from about 1 to 1e6.
CONDITION_CASES = [
    (50, (1.0, 3.0, 0.5, 10.0), 2.0, np.float64),
    (20, (1.0, 1e3), 0.0, np.float64),
    (30, (1.0, 2.0, 0.5), 10.0, np.float64),
    (3, (1.0, 1.0, 1.0), 0.0, np.float64),
    (12, (2.0, 1.0, 0.5), 1.0, np.float32),
]


@pytest.mark.exercise("condition_number")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", CONDITION_CASES, ids=case_id)
def test_condition_number_matches_reference(student, rng, case):
    N, scales, offset, dtype = case
    X = columns(rng, N, scales, offset, dtype)
    result, after = student.call_checked("condition_number", X)
    result = scalar(result)
    expected = ref.condition_number(X)
    context = f"X of shape {X.shape}, {np.dtype(dtype).name}, column scales {', '.join(f'{s:g}' for s in scales)}"
    if not isinstance(result, np.ndarray) or np.ndim(result) != 0:
        as_array(result, "condition_number(X)", ())  # says what came back instead of a number
    hint = M.condition_hint(X, result) if np.size(result) == 1 else None
    try:
        check_array(result, np.array(expected), "condition_number(X)", mistakes=M.condition_mistakes(X),
                    context=context, rtol=1e-4 if dtype == np.float32 else 1e-6)
    except Mismatch as err:
        if hint and "It matches" not in str(err):
            raise Mismatch(f"condition_number(X) is wrong (inputs: {context}): {float(result):.6g} instead of "
                           f"{expected:.6g}. {hint}") from None
        raise
    unchanged(X, after[0], "X")


@pytest.mark.exercise("condition_number")
@pytest.mark.points(1)
def test_condition_number_singular(student, rng):
    """A repeated feature makes X.T X / N singular: the answer is inf (or astronomically large)."""
    X = rng.standard_normal((10, 3))
    X[:, 2] = X[:, 0]
    for data, what in ((X, "X of shape (10, 3) whose columns 0 and 2 are equal"),
                       (rng.standard_normal((2, 4)), "X of shape (2, 4): fewer samples than features")):
        value = as_array(scalar(student.call("condition_number", data)), "condition_number(X)", ())
        if value.shape != () or not (value == np.inf or (np.isfinite(value) and value > 1e12)):
            raise Mismatch(
                f"condition_number(X) for a singular X.T @ X / N ({what}) should be inf (or larger than "
                f"1e12), got {value!r}. The smallest eigenvalue is 0 up to rounding, so it may come out "
                f"slightly negative: return inf when it is <= 0.")


# ------------------------------------------------------------------------- gd_least_squares

# (N, per-column scales, lr * lambda_max, steps, start from a given w0, dtype)
GD_CASES = [
    (20, (1.0, 2.0, 0.5), 0.5, 10, False, np.float64),
    (15, (1.0, 1.0), 1.0, 25, True, np.float64),
    (40, (1.0, 10.0, 0.3, 3.0), 1.5, 8, True, np.float64),
    (10, (1.0, 2.0, 0.5), 0.5, 6, False, np.float32),
]


@pytest.mark.exercise("gd_least_squares")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", GD_CASES, ids=lambda c: f"{c[0]}x{len(c[1])}-steps{c[3]}-{np.dtype(c[5]).name}{'-w0' if c[4] else ''}")
def test_gd_least_squares_matches_reference(student, rng, case):
    N, scales, lr_factor, steps, use_w0, dtype = case
    X = columns(rng, N, scales, 0.5, dtype)
    y = (X.astype(np.float64) @ rng.standard_normal(len(scales)) + rng.normal(0, 0.3, N)).astype(dtype)
    X64 = X.astype(np.float64)
    lr = float(lr_factor / np.linalg.eigvalsh(X64.T @ X64 / N)[-1])
    args = [X, y, lr, steps]
    if use_w0:
        args.append(rng.standard_normal(len(scales)).astype(dtype))
    result, after = student.call_checked("gd_least_squares", *args)
    w, losses = unpack(result, 2, "w, losses")
    losses = numbers(losses)
    exp_w, exp_losses = ref.gd_least_squares(X64, y.astype(np.float64), lr, steps, *(a.astype(np.float64) for a in args[4:]))
    mistakes = M.gd_mistakes(X, y, lr, steps, *args[4:])
    context = (f"X of shape {X.shape}, {np.dtype(dtype).name}, lr = {lr_factor:g} / lambda_max = {lr:.4g}, "
               f"steps = {steps}" + (", a given w0" if use_w0 else ", w0 = None"))
    if isinstance(losses, np.ndarray):
        hint = M.losses_shape_hint(losses.shape, steps)
        if hint:
            raise Mismatch(hint + f" (inputs: {context})")
    check_array(losses, exp_losses, "losses", mistakes=mistakes["losses"], context=context, **tol(dtype, exp_losses))
    check_array(w, exp_w, "w", mistakes=mistakes["w"], context=context, **tol(dtype, exp_w))
    for name, before, value in zip(("X", "y", "lr", "steps", "w0"), args, after):
        if isinstance(before, np.ndarray):
            unchanged(before, value, name, " (w = w0 does not copy: start from w = w0.copy() or np.array(w0, dtype=float).)"
                      if name == "w0" else "")


@pytest.mark.exercise("gd_least_squares")
@pytest.mark.points(1)
def test_gd_least_squares_zero_steps(student, rng):
    """steps = 0: w is w0 and losses is [L(w0)]."""
    X, y, w0 = rng.standard_normal((6, 2)), rng.standard_normal(6), np.array([0.5, -1.5])
    result, after = student.call_checked("gd_least_squares", X, y, 0.1, 0, w0)
    w, losses = unpack(result, 2, "w, losses")
    losses = numbers(losses)
    exp_w, exp_losses = ref.gd_least_squares(X, y, 0.1, 0, w0)
    if isinstance(losses, np.ndarray):
        hint = M.losses_shape_hint(losses.shape, 0)
        if hint or losses.shape == ():
            raise Mismatch(f"with steps = 0, losses must be an array of one entry, [L(w0)]; got shape {losses.shape}. "
                           + M.MSG["losses_count"])
    check_array(losses, exp_losses, "losses", mistakes=M.gd_mistakes(X, y, 0.1, 0, w0)["losses"],
                context="steps = 0", rtol=1e-9)
    check_array(w, exp_w, "w", context="steps = 0: w must equal w0", rtol=1e-12)
    unchanged(w0, after[4], "w0", " (w = w0 does not copy: start from w = w0.copy().)")
