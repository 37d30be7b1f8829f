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


# The keys every BN cache holds (course spec, section 4): a backward pass may read nothing else.
CACHE_CONTRACT = ("x", "x_hat", "mean", "var", "gamma", "eps")


def contract_cache(cache: dict) -> dict:
    """``cache`` reduced to the keys of the contract (a new dict; the arrays are shared)."""
    return {key: cache[key] for key in CACHE_CONTRACT}


def cache_key_error(name: str, error: str, cache: dict) -> str:
    """Feedback for a backward pass that raised ``error`` (a ``KeyError: ...`` line) on ``cache``."""
    extra = sorted(set(cache) - set(CACHE_CONTRACT))
    held = f"this cache holds {', '.join(sorted(cache))}" if extra else "this cache holds exactly those"
    return (f"{name} raised {error}. A cache is only promised the keys {', '.join(CACHE_CONTRACT)} "
            f"(chapter 2's cache contract; {held}): compute anything else from them "
            "(x - mean, sqrt(var + eps), ...), so that your backward pass works with any forward pass "
            "that keeps the contract.")
