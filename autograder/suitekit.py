"""Small helpers shared by the assignments' test suites."""

import numpy as np


def once(cache: dict, key, compute):
    """Run ``compute()`` once per suite run; later calls return (or raise) the same."""
    if key not in cache:
        try:
            cache[key] = (True, compute())
        except Exception as err:  # noqa: BLE001 - re-raised for every test that needs it
            cache[key] = (False, err)
    ok, value = cache[key]
    if not ok:
        raise value.with_traceback(None)  # a fresh traceback: re-raising must not grow it
    return value


def numbers(value):
    """A list of numbers (e.g. losses appended in a loop) as an array; anything else unchanged."""
    def number(v):  # NumPy scalars arrive as 0-d arrays
        return type(v) in (int, float) or (isinstance(v, np.ndarray) and v.size == 1 and v.dtype.kind in "iuf")
    if isinstance(value, (list, tuple)) and all(number(v) for v in value):
        return np.array([float(np.ravel(v)[0]) if isinstance(v, np.ndarray) else float(v) for v in value])
    return value


def scalar(value):
    """A returned number as a 0-d array.

    A single-element array (``np.array([x])``) is taken for the number it holds.
    """
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        return value.reshape(())
    return value
