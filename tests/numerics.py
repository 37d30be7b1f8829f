"""Numerical assertions shared by the tests of the reference solutions."""

import numpy as np

def assert_close(actual, desired, atol, err_msg=""):
    """|actual - desired| <= atol elementwise, with an array (broadcast) tolerance."""
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, f"{err_msg}: shape {actual.shape} != {desired.shape}"
    atol = np.broadcast_to(np.asarray(atol, dtype=np.float64), desired.shape)
    err = np.abs(actual - desired)
    bad = ~(err <= atol)
    if bad.any():
        ratio = np.where(bad, np.nan_to_num(err / atol, nan=np.inf), 0.0)
        i = np.unravel_index(np.argmax(ratio), ratio.shape)
        raise AssertionError(
            f"{err_msg}: {bad.sum()} of {bad.size} elements differ; worst at {i}: "
            f"actual {actual[i]!r}, desired {desired[i]!r}, |diff| {err[i]:.3g} > tol {atol[i]:.3g}"
        )

