"""Tests of solutions.ch01_normalization against analytic results."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solutions.ch01_normalization import (
    apply_standardization,
    condition_number,
    gd_least_squares,
    standardize,
)

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def data_matrices(draw, min_n=2, max_n=64, max_d=16, dtypes=(np.float32, np.float64)):
    """(N, D) matrices with per-feature scales in [1e-3, 1e3] and optional large offsets."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    dtype = draw(st.sampled_from(dtypes))
    offset = draw(st.sampled_from([0.0, 1.0, -50.0, 1e4]))
    log_scale = draw(st.floats(-3.0, 3.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scales = 10.0 ** np.clip(log_scale + rng.uniform(-1.0, 1.0, d), -3.0, 3.0)
    x = offset * rng.choice([-1.0, 1.0], d) + scales * rng.standard_normal((n, d))
    return x.astype(dtype)


def orthonormal_columns(rng, n, d):
    """An (n, d) matrix Q with Q.T @ Q = I (n >= d)."""
    q, _ = np.linalg.qr(rng.standard_normal((n, d)))
    return q


def design_with_hessian(rng, n, s):
    """X of shape (n, len(s)) with X.T @ X / n = diag(s**2) exactly (up to rounding)."""
    return np.sqrt(n) * orthonormal_columns(rng, n, len(s)) * s


# ---------------------------------------------------------------- standardize


@SETTINGS
@given(data_matrices())
def test_standardize_matches_float64_formula(X):
    X_before = X.copy()
    Z, mean, var = standardize(X)
    np.testing.assert_array_equal(X, X_before, err_msg="standardize modified its input")
    assert Z.dtype == X.dtype and mean.dtype == X.dtype and var.dtype == X.dtype
    assert Z.shape == X.shape and mean.shape == (X.shape[1],) and var.shape == (X.shape[1],)

    X64 = X.astype(np.float64)
    mean_ref = X64.mean(axis=0)
    var_ref = X64.var(axis=0)  # biased
    e = np.finfo(X.dtype).eps
    n = X.shape[0]
    np.testing.assert_allclose(mean, mean_ref, rtol=4 * e, atol=4 * e * np.abs(X64).max())
    # var = mean((x - mean)^2): its error is governed by the error of the mean.
    std_ref = np.sqrt(var_ref)
    var_tol = (n + 8) * e * (var_ref + np.abs(X64).max(axis=0) * std_ref) + 1e-300
    assert np.all(np.abs(var - var_ref) <= var_tol), "biased variance is wrong"

    Z_ref = (X64 - mean_ref) / np.sqrt(var_ref + 1e-8)
    cond = np.abs(X64).max(axis=0) / np.sqrt(var_ref + 1e-8)
    tol = (n + 8) * e * (1.0 + cond)
    assert np.all(np.abs(Z - Z_ref) <= tol), (
        f"max |Z - Z_ref| = {np.abs(Z - Z_ref).max()}, expected (X - mean) / sqrt(var + eps)"
    )


@SETTINGS
@given(data_matrices(dtypes=(np.float64,)))
def test_standardized_columns_have_zero_mean_and_unit_variance(X):
    Z, _, var = standardize(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-6)
    # Exactly: var(Z) = var / (var + eps), which is 1 up to eps / var.
    np.testing.assert_allclose(Z.var(axis=0), var / (var + 1e-8), rtol=1e-6)
    assert np.all(Z.var(axis=0) <= 1.0 + 1e-12)


def test_standardize_eps_inside_the_square_root():
    X = np.array([[0.0], [2e-4]])  # mean 1e-4, biased var 1e-8
    Z, mean, var = standardize(X, eps=1e-8)
    np.testing.assert_allclose(mean, [1e-4])
    np.testing.assert_allclose(var, [1e-8])
    np.testing.assert_allclose(Z[:, 0], [-1e-4 / np.sqrt(2e-8), 1e-4 / np.sqrt(2e-8)], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [0.0, 3.0, -1e4 - 0.123, 1e4 + 0.123])
def test_standardize_constant_column_gives_zeros(dtype, value):
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.standard_normal(37), np.full(37, value)]).astype(dtype)
    Z, mean, var = standardize(X)
    assert np.all(np.isfinite(Z))
    # The mean of a constant float32 column is exact (float64 accumulation); in float64
    # it may be off by a few ulps of `value`, which leaves |Z| far below 1e-6.
    assert var[1] <= (64 * np.finfo(dtype).eps * abs(value)) ** 2
    np.testing.assert_allclose(Z[:, 1], 0.0, atol=1e-6)
    if dtype == np.float32:
        np.testing.assert_array_equal(Z[:, 1], 0.0)


def test_standardize_integers_become_float64():
    X = np.arange(12).reshape(4, 3)
    Z, mean, var = standardize(X)
    assert Z.dtype == np.float64
    np.testing.assert_allclose(mean, [4.5, 5.5, 6.5])
    np.testing.assert_allclose(var, [11.25] * 3)


@pytest.mark.parametrize("X", [np.ones(5), np.ones((2, 3, 4)), np.ones((0, 3))], ids=["1d", "3d", "empty"])
def test_standardize_rejects_bad_shapes(X):
    with pytest.raises(ValueError, match="shape"):
        standardize(X)


# ------------------------------------------------------ apply_standardization


@SETTINGS
@given(data_matrices())
def test_apply_standardization_with_training_stats_equals_standardize(X):
    Z, mean, var = standardize(X)
    mean_before, var_before, X_before = mean.copy(), var.copy(), X.copy()
    Z2 = apply_standardization(X, mean, var)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(mean, mean_before)
    np.testing.assert_array_equal(var, var_before)
    assert Z2.dtype == X.dtype
    np.testing.assert_allclose(Z2, Z, rtol=0, atol=8 * np.finfo(X.dtype).eps * (1 + np.abs(Z).max()))


def test_apply_standardization_uses_the_given_statistics_not_the_test_batch():
    rng = np.random.default_rng(1)
    X_train = rng.normal(5.0, 2.0, size=(200, 3))
    X_test = rng.normal(6.0, 3.0, size=(50, 3))
    _, mean, var = standardize(X_train)
    Z_test = apply_standardization(X_test, mean, var, eps=1e-8)
    np.testing.assert_allclose(Z_test, (X_test - mean) / np.sqrt(var + 1e-8), rtol=1e-12)
    # The test set is shifted, so its standardized mean is clearly not zero.
    assert np.all(np.abs(Z_test.mean(axis=0)) > 0.1)
    # A single row can be transformed on its own (no batch statistics involved).
    np.testing.assert_allclose(apply_standardization(X_test[:1], mean, var), Z_test[:1], rtol=1e-12)


def test_apply_standardization_rejects_bad_shapes():
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"mean must have shape \(3,\)"):
        apply_standardization(X, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"var must have shape \(3,\)"):
        apply_standardization(X, np.zeros(3), np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        apply_standardization(np.ones(3), np.zeros(3), np.ones(3))


# ------------------------------------------------------------ condition_number


@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.floats(-2.0, 2.0), min_size=1, max_size=8),
)
def test_condition_number_of_scaled_orthonormal_features(seed, log_scales):
    rng = np.random.default_rng(seed)
    s = 10.0 ** np.array(log_scales)
    n = len(s) + int(rng.integers(0, 50))
    X = design_with_hessian(rng, n, s)
    kappa = condition_number(X)
    assert isinstance(kappa, float)
    np.testing.assert_allclose(kappa, (s.max() / s.min()) ** 2, rtol=1e-7)


def test_condition_number_is_scale_invariant_and_not_modifying():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100, 4)) * np.array([1.0, 10.0, 100.0, 0.1])
    X_before = X.copy()
    kappa = condition_number(X)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_allclose(condition_number(7.0 * X), kappa, rtol=1e-9)
    # Standardizing the badly scaled features fixes most of the conditioning.
    assert condition_number(standardize(X)[0]) < 2.0 < 1e3 < kappa


def test_condition_number_singular_is_inf_or_huge():
    assert condition_number(np.zeros((5, 3))) == float("inf")
    assert condition_number(np.array([[1.0, 0.0], [2.0, 0.0]])) == float("inf")
    rng = np.random.default_rng(3)
    assert condition_number(rng.standard_normal((3, 6))) > 1e10  # rank 3 < D = 6


def test_condition_number_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        condition_number(np.ones(4))


# ------------------------------------------------------------ gd_least_squares


def least_squares_loss(X, y, w):
    r = X @ w - y
    return r @ r / (2 * len(y))


@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=6),
    st.floats(0.05, 1.9),
    st.integers(0, 30),
    st.booleans(),
)
def test_gd_closed_form_on_diagonal_hessian(seed, log_scales, lr_times_smax2, steps, use_w0):
    """With X.T X / N = diag(s^2): (w_t - w*)_i = (1 - lr s_i^2)^t (w_0 - w*)_i and
    L(w_t) = L(w*) + sum_i s_i^2 (1 - lr s_i^2)^(2t) (w_0 - w*)_i^2 / 2."""
    rng = np.random.default_rng(seed)
    s = 10.0 ** np.array(log_scales)
    n = len(s) + 3 + int(rng.integers(0, 40))
    X = design_with_hessian(rng, n, s)
    y = rng.standard_normal(n)
    w0 = rng.standard_normal(len(s)) if use_w0 else None
    w0_before = None if w0 is None else w0.copy()
    lr = lr_times_smax2 / s.max() ** 2

    w, losses = gd_least_squares(X, y, lr, steps, w0=w0)

    if use_w0:
        np.testing.assert_array_equal(w0, w0_before, err_msg="gd_least_squares modified w0")
    start = np.zeros(len(s)) if w0 is None else w0
    w_star = X.T @ y / n / s**2
    loss_star = least_squares_loss(X, y, w_star)
    t = np.arange(steps + 1)[:, None]
    factors = (1.0 - lr * s**2) ** t  # (steps + 1, D)
    expected_losses = loss_star + 0.5 * np.sum(s**2 * (factors * (start - w_star)) ** 2, axis=1)
    expected_w = w_star + factors[-1] * (start - w_star)

    assert losses.shape == (steps + 1,) and w.shape == (len(s),)
    scale = max(1.0, np.abs(expected_losses).max())
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-8, atol=1e-10 * scale)
    np.testing.assert_allclose(w, expected_w, rtol=1e-7, atol=1e-9 * (1 + np.abs(w_star).max()))
    np.testing.assert_allclose(losses[-1], least_squares_loss(X, y, w), rtol=1e-10, atol=1e-14)
    # 0 < lr < 2 / s_max^2: the loss never increases.
    assert np.all(np.diff(losses) <= 1e-12 * scale)


def test_gd_zero_steps_and_default_start():
    X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    y = np.array([1.0, -1.0, 2.0])
    w, losses = gd_least_squares(X, y, lr=0.01, steps=0)
    np.testing.assert_array_equal(w, [0.0, 0.0])
    np.testing.assert_allclose(losses, [y @ y / 6])
    w1, losses1 = gd_least_squares(X, y, lr=0.01, steps=1)
    np.testing.assert_allclose(w1, 0.01 * X.T @ y / 3)
    np.testing.assert_allclose(losses1, [y @ y / 6, least_squares_loss(X, y, w1)])


def test_gd_diverges_above_two_over_lambda_max():
    rng = np.random.default_rng(4)
    X = design_with_hessian(rng, 20, np.array([1.0, 3.0]))
    y = rng.standard_normal(20)
    _, losses = gd_least_squares(X, y, lr=2.5 / 9.0, steps=20)
    assert losses[-1] > 100 * losses[0]


def test_gd_badly_scaled_features_converge_slowly():
    """The point of chapter 1: the same problem, standardized, converges much faster."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 2)) * np.array([1.0, 20.0])
    y = X @ np.array([2.0, -0.1]) + 0.1 * rng.standard_normal(200)
    Z, _, _ = standardize(X)
    best_raw = least_squares_loss(X, y, np.linalg.lstsq(X, y, rcond=None)[0])
    best_std = least_squares_loss(Z, y, np.linalg.lstsq(Z, y, rcond=None)[0])
    lam_raw = np.linalg.eigvalsh(X.T @ X / 200).max()
    lam_std = np.linalg.eigvalsh(Z.T @ Z / 200).max()
    _, raw = gd_least_squares(X, y, lr=1.0 / lam_raw, steps=50)
    _, std = gd_least_squares(Z, y, lr=1.0 / lam_std, steps=50)
    assert std[-1] - best_std < 1e-8
    assert raw[-1] - best_raw > 1e-2


def test_gd_rejects_bad_shapes():
    X = np.ones((4, 2))
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        gd_least_squares(X, np.ones(3), 0.1, 5)
    with pytest.raises(ValueError, match=r"w0 must have shape \(2,\)"):
        gd_least_squares(X, np.ones(4), 0.1, 5, w0=np.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gd_least_squares(np.ones(4), np.ones(4), 0.1, 5)
    with pytest.raises(ValueError, match="steps"):
        gd_least_squares(X, np.ones(4), 0.1, -1)


def test_gd_keeps_float32():
    X = np.eye(3, dtype=np.float32)
    w, losses = gd_least_squares(X, np.ones(3, dtype=np.float32), np.float64(0.5), 3)
    assert w.dtype == np.float32 and losses.dtype == np.float32
