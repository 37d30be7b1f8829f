"""Comparisons that explain: which mistake an output matches, or where and by how much it is off.

Tests call :func:`check_array` (and friends) with the reference output and, optionally,
the outputs of known mistakes computed on the same inputs. A failure raises
:class:`Mismatch`, whose message is the student's feedback.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping

import numpy as np


class Mismatch(AssertionError):
    """A wrong answer; the message says what is wrong, in a student's words."""


# The suites' largest offset, in spreads, for float64 inputs. There the one-pass variance
# mean(x**2) - mean(x)**2 has a relative error of about u * LARGE_OFFSET**2 = 1e-16 * 1e12 =
# 1e-4, a thousand times the float64 tolerance, in any order of summation, while the two-pass
# formula keeps an error of about u * LARGE_OFFSET = 1e-10: the one-pass formula fails there
# always (at 1e4 spreads it passed or failed depending on the order of the sums).
LARGE_OFFSET = 1e6

# For inputs whose offset dwarfs their spread: the usual cause of a wrong answer there.
CANCELLATION = (f"The offset of x is large compared with its spread (about {LARGE_OFFSET:.0e} times "
                "here): computing the variance as mean(x**2) - mean(x)**2 (the one-pass formula) loses "
                "every digit to catastrophic cancellation; compute mean((x - mean)**2).").replace("e+0", "e")


def cancellation_hint(offset, spread) -> str | None:
    """:data:`CANCELLATION` for inputs whose offsets reach ``LARGE_OFFSET`` spreads (per column
    when arrays are given), else None: the hint for :func:`hint_unless_named`."""
    ratio = np.max(np.abs(np.asarray(offset, dtype=float)) / np.asarray(spread, dtype=float))
    return CANCELLATION if ratio >= LARGE_OFFSET else None


@contextmanager
def hint_unless_named(hint: str | None):
    """Add ``hint`` to a :class:`Mismatch` raised inside that names no known mistake."""
    try:
        yield
    except Mismatch as err:
        if hint and "It matches" not in str(err):
            raise Mismatch(f"{err} {hint}") from None
        raise


def describe(value) -> str:
    if isinstance(value, dict) and "__unsupported_type__" in value:
        return f"an object of type {value['__unsupported_type__']}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__} ({value!r:.60})"


def as_array(value, name: str, expected_shape: tuple | None = None) -> np.ndarray:
    """``value`` as a float array, or a Mismatch that says what came back instead."""
    if isinstance(value, (bool, int, float)) and expected_shape in (None, ()):
        return np.asarray(value, dtype=float)
    if not isinstance(value, np.ndarray):
        want = f"an array of shape {expected_shape}" if expected_shape is not None else "an array"
        raise Mismatch(f"{name}: expected {want}, got {describe(value)}")
    if value.dtype.kind not in "biuf":
        raise Mismatch(f"{name}: expected real numbers, got dtype {value.dtype}")
    return value


def unpack(value, count: int, names: str):
    """A returned tuple of ``count`` items, or a Mismatch naming what was expected."""
    if not isinstance(value, (tuple, list)) or len(value) != count:
        raise Mismatch(f"expected a tuple of {count} items ({names}), got {describe(value)}")
    return value


def _close(actual, expected, rtol, atol) -> bool:
    return (
        actual.shape == expected.shape
        and bool(np.all(np.isfinite(actual) == np.isfinite(expected)))
        and np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    )


def check_array(
    actual,
    expected: np.ndarray,
    name: str,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    mistakes: Mapping[str, np.ndarray] | None = None,
    context: str = "",
) -> None:
    """Pass if ``actual`` equals ``expected`` within tolerance; otherwise explain.

    Parameters
    ----------
    actual : value returned by the submission
    expected : ndarray, the reference output
    name : what the value is, for messages ("out", "dx", "running_var")
    mistakes : {message: output of that mistake on the same inputs}
        Checked in order when the answer is wrong; the first match is reported.
    context : str, the inputs in words ("x of shape (4, 3), float32")
    """
    expected = np.asarray(expected)
    actual = as_array(actual, name, expected.shape)
    where = f" (inputs: {context})" if context else ""
    if actual.shape != expected.shape:
        hint = ""
        if actual.size == expected.size:
            hint = " Same number of elements: a reshape or transpose is wrong."
        elif actual.shape == expected.shape[::-1]:
            hint = " It is transposed."
        raise Mismatch(f"{name} has shape {actual.shape}, expected {expected.shape}{where}.{hint}")
    if _close(actual, expected, rtol, atol):
        return
    for message, output in (mistakes or {}).items():
        output = np.asarray(output)
        if output.shape == expected.shape and _close(actual, output, rtol, atol) and not _close(output, expected, rtol, atol):
            raise Mismatch(f"{name} is wrong{where}. {message}")
    if not np.all(np.isfinite(actual)) and np.all(np.isfinite(expected)):
        bad = np.argwhere(~np.isfinite(actual))[0]
        raise Mismatch(f"{name} contains {actual[tuple(bad)]} at index {tuple(int(i) for i in bad)}{where}, where the "
                       f"reference is finite: a division by zero, or eps missing?")
    error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    index = tuple(int(i) for i in np.unravel_index(np.nanargmax(error), error.shape))
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    if scale > 0:
        size = f"relative error {float(error[index]) / scale:.2e} of the largest reference value; tolerance rtol={rtol:g}"
    else:
        size = f"absolute error {float(error[index]):.2e}; tolerance atol={atol:g}"
    digits = 6 if float(error[index]) > 1e-5 * max(scale, 1e-300) else 12  # near misses need more digits
    raise Mismatch(
        f"{name} is wrong{where}: the largest difference is at index {index}, "
        f"{actual[index]:.{digits}g} instead of {expected[index]:.{digits}g} ({size})."
    )


def check_unchanged(before, after, name: str) -> None:
    """An input must not be modified by the function."""
    after = as_array(after, name, np.shape(before))
    if after.shape != np.shape(before) or not np.array_equal(after, before, equal_nan=True):
        raise Mismatch(
            f"your function modified its input {name} in place; work on a copy "
            f"(e.g. x = x - mean, not x -= mean)."
        )


def check_unchanged_model(run, function):
    """The model state ``run["before"]`` equals ``run["after"]`` (parameters, buffers, modes)."""
    before, after = run["before"], run["after"]
    for kind in ("parameters", "buffers"):
        for name, value in before[kind].items():
            if name not in after[kind] or not np.array_equal(value, after[kind][name]):
                raise Mismatch(f"{function} changed the model's {kind[:-1]} {name!r}: the model must be unchanged "
                               f"afterwards (work on a copy, or torch.func.functional_call; BN running statistics "
                               f"count too)")
    if before["modes"] != after["modes"]:
        raise Mismatch(f"{function} changed the model's train/eval mode: restore it")
