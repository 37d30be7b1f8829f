"""Public checks of chapter 1: properties and closed forms (no reference needed)."""

import numpy as np
import pytest

from autograder.feedback import check_array, check_unchanged, unpack
from autograder.suitekit import numbers, scalar


@pytest.mark.exercise("standardize")
@pytest.mark.points(1)
def test_standardize_public(student, rng):
    X = rng.standard_normal((20, 3)) * [0.1, 5.0, 100.0] + [-3.0, 50.0, 1e3]
    result, after = student.call_checked("standardize", X)
    Z, mean, var = unpack(result, 3, "Z, mean, var")
    check_unchanged(X, after[0], "X")
    check_array(mean, X.mean(axis=0), "mean (compared with X.mean(axis=0))", rtol=1e-12)
    check_array(var, X.var(axis=0), "var (compared with X.var(axis=0), the biased variance)", rtol=1e-10)
    check_array(Z, (X - X.mean(0)) / np.sqrt(X.var(0) + 1e-8), "Z (compared with (X - mean) / sqrt(var + 1e-8))",
                rtol=1e-9, atol=1e-12)


@pytest.mark.exercise("apply_standardization")
@pytest.mark.points(1)
def test_apply_standardization_public(student, rng):
    mean, var = np.array([10.0, -5.0, 0.0]), np.array([1.0, 16.0, 0.04])
    X = rng.standard_normal((5, 3)) + 3.0
    result, after = student.call_checked("apply_standardization", X, mean, var)
    check_array(result, (X - mean) / np.sqrt(var + 1e-8),
                "Z (compared with (X - mean) / sqrt(var + 1e-8) with the given mean and var)", rtol=1e-10)
    for name, before, value in zip(("X", "mean", "var"), (X, mean, var), after):
        check_unchanged(before, value, name)


@pytest.mark.exercise("condition_number")
@pytest.mark.points(1)
def test_condition_number_public(student, rng):
    Q, _ = np.linalg.qr(rng.standard_normal((60, 3)))
    value = scalar(student.call("condition_number", Q * np.array([1.0, 2.0, 4.0])))
    check_array(value, np.array(16.0), "condition_number of orthogonal columns with norms 1, 2, 4 (expected (4/1)^2)",
                rtol=1e-8)
    X = rng.standard_normal((50, 4)) * [1.0, 3.0, 0.5, 10.0] + 2.0
    expected = np.linalg.cond(X.T @ X / len(X))
    check_array(scalar(student.call("condition_number", X.copy())), np.array(expected),
                "condition_number (compared with np.linalg.cond(X.T @ X / N))", rtol=1e-8)


@pytest.mark.exercise("gd_least_squares")
@pytest.mark.points(1)
def test_gd_least_squares_public(student, rng):
    """An orthonormal design (X.T X / N = I): w_t = (1 - (1 - lr)^t) w* from zeros."""
    N, D, lr, steps = 30, 3, 0.3, 8
    Q, _ = np.linalg.qr(rng.standard_normal((N, D)))
    X, y = np.sqrt(N) * Q, rng.standard_normal(N)
    w_star = X.T @ y / N
    L_star = float(y @ y - N * w_star @ w_star) / (2 * N)
    w, losses = unpack(student.call("gd_least_squares", X, y, lr, steps), 2, "w, losses")
    t = np.arange(steps + 1)
    losses = numbers(losses)
    check_array(losses, L_star + 0.5 * (1 - lr) ** (2 * t) * (w_star @ w_star),
                f"losses (steps + 1 = {steps + 1} entries, closed form for X.T X / N = I)", rtol=1e-9)
    check_array(w, w_star * (1 - (1 - lr) ** steps), "w (closed form for X.T X / N = I)", rtol=1e-9)
