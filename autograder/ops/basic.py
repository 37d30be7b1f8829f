"""Calling a submission's plain functions (NumPy exercises)."""

import copy

import numpy as np

from . import lookup

__all__ = ["call", "call_checked", "numerical_gradient"]


def call(namespace, name, *args, **kwargs):
    """``name(*args, **kwargs)``: the submission's result."""
    return lookup(namespace, name)(*args, **kwargs)


def call_checked(namespace, name, *args, **kwargs):
    """Call on copies and return the result with the arguments as they are afterwards.

    The grader compares ``inputs_after`` with what it sent: a function must not modify
    its inputs.
    """
    function = lookup(namespace, name)
    args = [copy.deepcopy(a) for a in args]
    result = function(*args, **kwargs)
    return {"result": result, "inputs_after": list(args)}


# Test functions for numerical_gradient: known functions with known gradients.
_FUNCTIONS = {
    "square": lambda x: x ** 2,
    "sin_times_x": lambda x: np.sin(x) * x,
    "row_softmax": lambda x: np.exp(x - x.max(axis=-1, keepdims=True))
    / np.exp(x - x.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True),
    "matmul_fixed": lambda x: x @ np.linspace(-1.0, 1.0, x.shape[-1] * 3).reshape(x.shape[-1], 3),
}


def numerical_gradient(namespace, name, function_name, x, dout, **kwargs):
    """The submission's ``numerical_gradient(f, x, dout)`` for a named test function ``f``.

    Returns the gradient, ``x`` after the call, and how many times ``f`` was called.
    """
    student = lookup(namespace, name)
    inner = _FUNCTIONS[function_name]
    calls = [0]

    def f(value):
        calls[0] += 1
        return inner(np.array(value, dtype=float, copy=True))

    x = np.array(x, copy=True)
    dx = student(f, x, dout, **kwargs)
    return {"dx": dx, "x_after": x, "calls": calls[0]}
