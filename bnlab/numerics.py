"""Tolerances derived from the floating-point format and the size of a computation.

Two correct implementations of the same formula differ only by rounding, and how much they
may differ follows from two numbers: the *unit roundoff* ``u`` of the format (half the gap
between 1 and the next number: ``2**-24`` for float32, ``2**-53`` for float64) and the size
of the reductions. A sum of ``n`` terms computed in blocked or pairwise order, as NumPy and
PyTorch's CPU kernels do, has a relative error (with respect to the sum of the absolute
values of its terms) of at most about ``ceil(log2 n) * u``; in strictly sequential order,
``(n - 1) * u`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §4.2).
Which order a kernel uses depends on the CPU's vector width (``ATEN_CPU_CAPABILITY``) and on
the number of threads, so a comparison must allow for the bound, not for what one machine
happened to produce.

A tolerance is then ``margin * sum_error(dtype, n)``, with a margin that covers the number
of reductions in a chain and their amplification (stated where it is used). One thing no
tolerance covers: a function with kinks (ReLU, max-pooling, argmax) can take another branch
when rounding moves an input across the kink, and its *gradient* then jumps. Compare such
gradients in float64, where a crossing is vanishingly rare.
"""

from __future__ import annotations

import math

import numpy as np


def unit_roundoff(dtype) -> float:
    """``u`` of a floating dtype (NumPy or PyTorch): 2**-24 for float32, 2**-53 for float64."""
    try:
        import torch

        if isinstance(dtype, torch.dtype):
            return torch.finfo(dtype).eps / 2
    except ImportError:  # pragma: no cover - torch is a dependency of the course
        pass
    return float(np.finfo(np.dtype(dtype)).eps) / 2


def sum_error(dtype, n: int) -> float:
    """Relative error bound ``ceil(log2 n) * u`` of a blocked (pairwise) sum of ``n`` terms.

    Relative to the sum of the absolute values of the terms. ``n <= 2`` counts as one
    rounding.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of terms, got {n!r}")
    return max(1, math.ceil(math.log2(n))) * unit_roundoff(dtype)
