"""Operations the grader may ask of a sandboxed submission.

This package is copied into the sandbox, so it holds no reference solution: only ways to
call a student's code and to turn what it returns into plain values (``to_wire``). An
operation is named ``"module.function"`` for a function listed in ``__all__`` of
``ops/<module>.py``; modules load on first use (PyTorch only when an operation needs it).
The grader imports the same modules to build identical inputs (models, seeds) for the
reference.
"""

import importlib

import numpy as np

__all__ = ["OPERATIONS", "to_wire", "MissingName", "lookup"]


class MissingName(LookupError):
    """The submission does not define a name the test needs."""


def lookup(namespace: dict, name: str):
    try:
        return namespace[name]
    except KeyError:
        raise MissingName(f"the submission does not define {name!r}") from None


def _unsupported(value) -> dict:
    kind = type(value)
    return {"__unsupported_type__": f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"}


def to_wire(value, depth: int = 0):
    """Plain values only: base ndarrays, Python scalars, str, and lists/tuples/dicts of them.

    Tensors become arrays; anything else becomes ``{"__unsupported_type__": name}`` so the
    grader can say what came back instead of what was expected.
    """
    if depth > 20:
        return _unsupported(value)
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.ndarray):
        array = np.ndarray.__array__(value)
        return array if array.dtype.kind in "biufc" else _unsupported(value)
    if isinstance(value, np.generic):
        return to_wire(np.asarray(value), depth + 1)
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return to_wire(value.detach().cpu().numpy(), depth + 1)
    if type(value) in (list, tuple):
        return type(value)(to_wire(v, depth + 1) for v in value)
    if type(value) is dict:
        return {str(k): to_wire(v, depth + 1) for k, v in value.items()}
    return _unsupported(value)


class _Registry:
    def __getitem__(self, name):
        if not isinstance(name, str) or name.count(".") != 1:
            raise KeyError(f"unknown operation {name!r}")
        module_name, function_name = name.split(".")
        module = importlib.import_module(f"{__name__}.{module_name}")
        if function_name not in getattr(module, "__all__", ()):
            raise KeyError(f"unknown operation {name!r}")
        return getattr(module, function_name)


OPERATIONS = _Registry()
