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
    """A wrong answer; the message says what is wrong, in a student's words.

    ``mistake`` is a stable identifier of what went wrong, for reports that count them: the
    key of a known mistake in ``autograder.mistakes.<chapter>.MSG`` when the answer matches
    one (``named`` is then True), else a generic kind (``wrong_value``, ``wrong_shape``,
    ``not_finite``, ``wrong_type``, ``modified_input``...).
    """

    def __init__(self, message: str = "", mistake: str | None = None, named: bool | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message  # for a known mistake: its explanation alone
        found = mistake_id(message) if mistake is None or named is None else None  # one scan of the texts
        self.mistake = mistake or found or "wrong_value"
        self.named = bool(found) if named is None else named


_MISTAKE_IDS: dict[str, str] = {}


def mistake_id(message: str) -> str | None:
    """The identifier of the known mistake whose explanation ``message`` contains, if any."""
    if not _MISTAKE_IDS:
        import importlib
        import pkgutil

        from . import messages  # the texts alone: no fingerprint, no PyTorch import

        for info in pkgutil.iter_modules(messages.__path__):
            module = importlib.import_module(f"{messages.__name__}.{info.name}")
            for key, text in getattr(module, "MSG", {}).items():
                _MISTAKE_IDS.setdefault(text, key)
    found = [(len(text), key) for text, key in _MISTAKE_IDS.items() if text and text in message]
    return max(found)[1] if found else None


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
        if hint and not (err.named or "It matches" in str(err)):
            mistake = "one_pass_variance" if hint == CANCELLATION else err.mistake
            raise Mismatch(f"{err} {hint}", mistake=mistake, named=False) from None
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
        raise Mismatch(f"{name}: expected {want}, got {describe(value)}", mistake="wrong_type")
    if value.dtype.kind not in "biuf":
        raise Mismatch(f"{name}: expected real numbers, got dtype {value.dtype}", mistake="wrong_type")
    return value


def unpack(value, count: int, names: str):
    """A returned tuple of ``count`` items, or a Mismatch naming what was expected."""
    if not isinstance(value, (tuple, list)) or len(value) != count:
        raise Mismatch(f"expected a tuple of {count} items ({names}), got {describe(value)}", mistake="wrong_type")
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
        raise Mismatch(f"{name} has shape {actual.shape}, expected {expected.shape}{where}.{hint}", mistake="wrong_shape")
    if _close(actual, expected, rtol, atol):
        return
    for message, output in (mistakes or {}).items():
        output = np.asarray(output)
        if output.shape == expected.shape and _close(actual, output, rtol, atol) and not _close(output, expected, rtol, atol):
            raise Mismatch(f"{name} is wrong{where}. {message}", mistake=mistake_id(message) or "known_mistake",
                           named=True, detail=message)
    if not np.all(np.isfinite(actual)) and np.all(np.isfinite(expected)):
        bad = np.argwhere(~np.isfinite(actual))[0]
        raise Mismatch(f"{name} contains {actual[tuple(bad)]} at index {tuple(int(i) for i in bad)}{where}, where the "
                       f"reference is finite: a division by zero, or eps missing?", mistake="not_finite")
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


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def check_outputs(outputs, *, context: str = "", derived: Mapping | None = None) -> None:
    """Check every output of one call, then report the root cause first.

    Parameters
    ----------
    outputs : list of (name, actual, expected, options)
        ``options`` are :func:`check_array`'s keywords (``mistakes``, ``rtol``, ``atol``).
    derived : {name: (inputs, function)}
        Outputs computed from others: ``function(*actual values of inputs)`` is what output
        ``name`` would be if it were right given the submission's own ``inputs``. A wrong
        output that equals it is reported as a consequence ("dx follows from your dgamma and
        dbeta"), not as a mistake of its own.

    A wrong output that matches a known mistake is named first (outputs with the same
    mistake together); then the outputs that follow from it; then the other differences.
    """
    failures: dict[str, Mismatch] = {}
    options = {name: opts for name, _, _, opts in outputs}
    actual_of = {name: actual for name, actual, _, _ in outputs}
    for name, actual, expected, opts in outputs:
        try:
            check_array(actual, expected, name, context=context, **opts)
        except Mismatch as err:
            failures[name] = err
    if not failures:
        return
    named: dict[str, list[str]] = {}
    for name, err in failures.items():
        if err.named:
            named.setdefault(err.detail, []).append(name)
    where = f" (inputs: {context})" if context else ""
    lines = [f"{_names(names)} {'is' if len(names) == 1 else 'are'} wrong{where}. {message}"
             for message, names in named.items()]
    consequences, others = [], []
    for name, err in failures.items():
        if err.named:
            continue
        inputs, function = (derived or {}).get(name, ((), None))
        wrong_inputs = [i for i in inputs if i in failures]
        if function is not None and wrong_inputs:
            try:
                expected = function(*(np.asarray(actual_of[i], dtype=np.float64) for i in inputs))
                check_array(actual_of[name], expected, name, **{k: v for k, v in options[name].items() if k != "mistakes"})
                consequences.append(f"{name} is wrong only because it uses your {_names(wrong_inputs)}: "
                                    f"fix {'it' if len(wrong_inputs) == 1 else 'them'} first.")
                continue
            except (Mismatch, ValueError, TypeError):
                pass
        others.append(str(err))
    if lines and others:
        others = [f"Also: {text}" for text in others]
    first = next((failures[n] for names in named.values() for n in names), next(iter(failures.values())))
    raise Mismatch("\n".join(lines + consequences + others), mistake=first.mistake, named=bool(named))


def check_unchanged(before, after, name: str) -> None:
    """An input must not be modified by the function."""
    after = as_array(after, name, np.shape(before))
    if after.shape != np.shape(before) or not np.array_equal(after, before, equal_nan=True):
        raise Mismatch(
            f"your function modified its input {name} in place; work on a copy "
            f"(e.g. x = x - mean, not x -= mean).", mistake="modified_input"
        )


def check_unchanged_model(run, function):
    """The model state ``run["before"]`` equals ``run["after"]`` (parameters, buffers, modes)."""
    before, after = run["before"], run["after"]
    for kind in ("parameters", "buffers"):
        for name, value in before[kind].items():
            if name not in after[kind] or not np.array_equal(value, after[kind][name]):
                raise Mismatch(f"{function} changed the model's {kind[:-1]} {name!r}: the model must be unchanged "
                               f"afterwards (work on a copy, or torch.func.functional_call; BN running statistics "
                               f"count too)", mistake="model_changed")
    if before["modes"] != after["modes"]:
        raise Mismatch(f"{function} changed the model's train/eval mode: restore it", mistake="model_mode_changed")
