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


def _bn_graph(x, gamma, beta, eps, detach_mean=False, detach_var=False, var_path_only=False, unbiased_grad=False):
    """BN's forward pass as a torch graph, optionally with one of the usual backward mistakes
    built in as a forward variant with the same values: a detached statistic is a missing
    gradient path; ``var_path_only`` keeps only the path through the variance; ``unbiased_grad``
    differentiates the variance as if it divided by N - 1."""
    axes = 0 if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    count = x.numel() // x.shape[1]
    mean = x.mean(dim=axes, keepdim=True)
    mean = mean.detach() if detach_mean else mean
    xmu = x - mean
    var = (xmu ** 2).mean(dim=axes, keepdim=True)
    if unbiased_grad:
        scaled = var * count / (count - 1)
        var = scaled + (var - scaled).detach()
    var = var.detach() if detach_var else var
    numerator = xmu.detach() if var_path_only else xmu
    return numerator / (var + eps).sqrt() * gamma.reshape(shape) + beta.reshape(shape)


def bn_autograd(x, gamma, beta, dout, eps=1e-5, **variant):
    """(dx, dgamma, dbeta) of sum(batch_norm(x) * dout) by torch autograd, float64: the oracle
    of the public checks of the backward passes, and with ``variant`` (see :func:`_bn_graph`)
    the gradient a known mistake gives, from public information only."""
    import torch
    import torch.nn.functional as F

    tx, tg, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta))
    out = _bn_graph(tx, tg, tb, eps, **variant) if variant else F.batch_norm(tx, None, None, tg, tb, training=True, eps=eps)
    out.backward(torch.tensor(dout))
    return tx.grad.numpy(), tg.grad.numpy(), tb.grad.numpy()
