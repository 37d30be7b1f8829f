"""Public checks of chapter 1: properties and closed forms (no reference needed).

Known mistakes are named from the same public information: the formulas each check compares
with, changed the way the mistake changes them, and the closed form of gradient descent on an
orthonormal design.
"""

import numpy as np
import pytest

from autograder.feedback import (LARGE_OFFSET, Mismatch, cancellation_hint, check_array, check_outputs,
                                 check_unchanged, hint_unless_named, unpack)
from autograder.messages.ch01_normalization import MSG
from autograder.suitekit import numbers, scalar

EPS = 1e-8


@pytest.mark.exercise("standardize")
@pytest.mark.points(1)
def test_standardize_public(student, rng):
    X = rng.standard_normal((20, 3)) * [0.1, 5.0, 100.0] + [-3.0, 50.0, 1e3]
    result, after = student.call_checked("standardize", X)
    Z, mean, var = unpack(result, 3, "Z, mean, var")
    check_unchanged(X, after[0], "X")
    mu, v, v1 = X.mean(axis=0), X.var(axis=0), X.var(axis=0, ddof=1)
    xc = X - mu
    rows = (X - X.mean(axis=1, keepdims=True)) / np.sqrt(X.var(axis=1, keepdims=True) + EPS)
    z_mistakes = {
        MSG["unbiased"]: xc / np.sqrt(v1 + EPS),
        MSG["eps_outside"]: xc / (np.sqrt(v) + EPS),
        MSG["no_sqrt"]: xc / (v + EPS),
        MSG["no_eps"]: xc / np.sqrt(v),
        MSG["axis"]: rows,
        MSG["minmax"]: (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0)),
        MSG["not_centered"]: X / np.sqrt(v + EPS),
    }
    check_outputs([
        ("Z", Z, xc / np.sqrt(v + EPS), dict(rtol=1e-9, atol=1e-12, mistakes=z_mistakes)),
        ("mean", mean, mu, dict(rtol=1e-12)),
        ("var", var, v, dict(rtol=1e-10, mistakes={MSG["unbiased"]: v1, MSG["var_is_std"]: np.sqrt(v)})),
    ], context="X of shape (20, 3), compared with X.mean(axis=0), X.var(axis=0) and (X - mean) / sqrt(var + 1e-8)")
    # Offsets of LARGE_OFFSET spreads: the two-pass variance keeps about u * LARGE_OFFSET = 1e-10
    # of relative error, the one-pass formula about u * LARGE_OFFSET**2 = 1e-4.
    far = rng.standard_normal((20, 3)) + LARGE_OFFSET
    with hint_unless_named(cancellation_hint(LARGE_OFFSET, 1.0)):
        _, _, var_far = unpack(student.call("standardize", far), 3, "Z, mean, var")
        check_array(var_far, far.var(axis=0), "var (compared with X.var(axis=0))", rtol=1e-7,
                    context=f"X of shape (20, 3), offset {LARGE_OFFSET:g} times its spread")


@pytest.mark.exercise("apply_standardization")
@pytest.mark.points(1)
def test_apply_standardization_public(student, rng):
    mean, var = np.array([10.0, -5.0, 0.0]), np.array([1.0, 16.0, 0.04])
    X = rng.standard_normal((5, 3)) + 3.0
    result, after = student.call_checked("apply_standardization", X, mean, var)
    xc = X - mean
    mistakes = {
        MSG["test_stats"]: (X - X.mean(axis=0)) / np.sqrt(X.var(axis=0) + EPS),
        MSG["test_stats"] + " (Here: with the unbiased variance of X.)":
            (X - X.mean(axis=0)) / np.sqrt(X.var(axis=0, ddof=1) + EPS),
        MSG["eps_outside"]: xc / (np.sqrt(var) + EPS),
        MSG["given_var_as_std"]: xc / (var + EPS),
        MSG["not_centered"]: X / np.sqrt(var + EPS),
        MSG["no_eps"]: xc / np.sqrt(var),
    }
    check_array(result, xc / np.sqrt(var + EPS),
                "Z (compared with (X - mean) / sqrt(var + 1e-8) with the given mean and var)", rtol=1e-10,
                mistakes=mistakes)
    for name, before, value in zip(("X", "mean", "var"), (X, mean, var), after):
        check_unchanged(before, value, name)


def _ratio(eigenvalues):
    eigenvalues = np.sort(eigenvalues)
    return eigenvalues[-1] / eigenvalues[0]


@pytest.mark.exercise("condition_number")
@pytest.mark.points(1)
def test_condition_number_public(student, rng):
    Q, _ = np.linalg.qr(rng.standard_normal((60, 3)))
    X = rng.standard_normal((50, 4)) * [1.0, 3.0, 0.5, 10.0] + 2.0
    cases = [(Q * np.array([1.0, 2.0, 4.0]), "condition_number of orthogonal columns with norms 1, 2, 4 (expected (4/1)^2)"),
             (X, "condition_number (compared with np.linalg.cond(X.T @ X / N))")]
    for A, what in cases:
        got = scalar(student.call("condition_number", A.copy()))
        value = float(np.asarray(got).reshape(())) if isinstance(got, (int, float, np.ndarray)) and np.size(got) == 1 else 0
        if not 0 <= value <= 1e12:  # inf, nan, negative or huge: a singular matrix's eigenvalues
            raise Mismatch(f"{what}: got {value:g}. {MSG['gram']}", mistake="gram")
        expected = np.linalg.cond(A.T @ A / len(A))
        centered = A - A.mean(axis=0)
        check_array(got, np.array(expected), what, rtol=1e-8,
                    mistakes={MSG["svd"]: np.sqrt(expected), MSG["inverted"]: 1 / expected,
                              MSG["centered"]: _ratio(np.linalg.eigvalsh(centered.T @ centered))})


@pytest.mark.exercise("gd_least_squares")
@pytest.mark.points(1)
def test_gd_least_squares_public(student, rng):
    """An orthonormal design (X.T X / N = I): from zeros, w_t - w* = -(1 - lr)^t w*, so
    w_t = (1 - (1 - lr)^t) w* and L(w_t) = L* + (1 - lr)^(2t) |w*|^2 / 2. A mistake changes the
    factor (1 - lr) or the loss's scale, so its outputs have closed forms too."""
    N, D, lr, steps = 30, 3, 0.3, 8
    Q, _ = np.linalg.qr(rng.standard_normal((N, D)))
    X, y = np.sqrt(N) * Q, rng.standard_normal(N)
    w_star = X.T @ y / N
    L_star = float(y @ y - N * w_star @ w_star) / (2 * N)
    w0 = np.zeros(D)  # the default start, passed explicitly: it must not change
    result, after = student.call_checked("gd_least_squares", X, y, lr, steps, w0)
    for name, before, value in zip(("X", "y", "w0"), (X, y, w0), (after[0], after[1], after[4])):
        check_unchanged(before, value, name)
    w, losses = unpack(result, 2, "w, losses")
    t = np.arange(steps + 1)

    def run(factor, t=t):
        """(w_t, L(w_t)) when each update multiplies w - w* by ``factor``."""
        return np.outer(1 - factor ** t, w_star), L_star + 0.5 * factor ** (2 * t) * (w_star @ w_star)

    w_ok, l_ok = run(1 - lr)
    w_sum, l_sum = run(1 - lr * N)   # the gradient without 1/N: N times too large
    w_up, l_up = run(1 + lr)         # gradient ascent
    losses = numbers(losses)
    if np.shape(losses) == (steps,):
        raise Mismatch(f"losses has {steps} entries, one per update; {MSG['losses_count']} Did you forget the loss "
                       f"after the last update, or the one at w0?", mistake="losses_count")
    check_outputs([
        ("losses", losses, l_ok, dict(rtol=1e-9, mistakes={
            MSG["no_mean_grad"]: l_sum, MSG["ascent"]: l_up, MSG["loss_no_half"]: 2 * l_ok, MSG["loss_sum"]: N * l_ok})),
        ("w", w, w_ok[-1], dict(rtol=1e-9, mistakes={
            MSG["no_mean_grad"]: w_sum[-1], MSG["ascent"]: w_up[-1],
            MSG["extra_step"]: (1 - (1 - lr) ** (steps + 1)) * w_star})),
    ], context=f"steps + 1 = {steps + 1} losses; closed form for X.T X / N = I")
