"""Common mistakes of chapter 1: standardization, the condition number, gradient descent.

Every function returns ``{message: output of that mistake}`` on the grader's inputs
(float64). Mistakes that give the reference's answer on every input are not listed: the
condition number of ``X.T @ X`` (without ``/ N``) equals that of ``X.T @ X / N``, since a
common factor cancels in ``lambda_max / lambda_min``, so it is not a mistake at all.
"""

import numpy as np

from autograder.messages.ch01_normalization import MSG  # noqa: F401 - the texts, shared with the public checks


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def standardize_mistakes(X, eps=1e-8):
    """{"Z": {message: Z}, "mean": {...}, "var": {...}} for the common bugs of standardize."""
    X = _f64(X)
    mean, var, var1 = X.mean(0), X.var(0), X.var(0, ddof=1) if len(X) > 1 else X.var(0)
    xc = X - mean
    z = {}
    if len(X) > 1:
        z[MSG["unbiased"]] = xc / np.sqrt(var1 + eps)
    z[MSG["eps_outside"]] = xc / (np.sqrt(var) + eps)
    z[MSG["no_sqrt"]] = xc / (var + eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        z[MSG["no_eps"]] = xc / np.sqrt(var)
        m1, v1 = X.mean(1, keepdims=True), X.var(1, keepdims=True)
        z[MSG["axis"]] = (X - m1) / np.sqrt(v1 + eps)
        lo, hi = X.min(0), X.max(0)
        z[MSG["minmax"]] = (X - lo) / (hi - lo)
    z[MSG["not_centered"]] = X / np.sqrt(var + eps)
    one_pass = (X ** 2).mean(0) - mean ** 2
    with np.errstate(invalid="ignore"):
        z[MSG["one_pass"]] = xc / np.sqrt(one_pass + eps)
    if eps != 1e-8:
        z[MSG["eps_constant"]] = xc / np.sqrt(var + 1e-8)
    v = {MSG["var_is_std"]: np.sqrt(var), MSG["one_pass"]: one_pass}
    if len(X) > 1:
        v[MSG["unbiased"]] = var1
    return {"Z": z, "mean": {}, "var": v}


def apply_mistakes(X, mean, var, eps=1e-8):
    """{message: Z} for the common bugs of apply_standardization."""
    X, mean, var = _f64(X), _f64(mean), _f64(var)
    xc = X - mean
    out = {
        MSG["test_stats"]: (X - X.mean(0)) / np.sqrt(X.var(0) + eps),
        MSG["eps_outside"]: xc / (np.sqrt(var) + eps),
        MSG["given_var_as_std"]: xc / (var + eps),
        MSG["not_centered"]: X / np.sqrt(var + eps),
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        out[MSG["no_eps"]] = xc / np.sqrt(var)
    if len(X) > 1:
        out[MSG["test_stats"] + " (Here: with the unbiased variance of X.)"] = (
            (X - X.mean(0)) / np.sqrt(X.var(0, ddof=1) + eps))
    if eps != 1e-8:
        out[MSG["eps_constant"]] = xc / np.sqrt(var + 1e-8)
    return out


def _ratio(eigenvalues):
    eigenvalues = np.sort(eigenvalues)
    return float(eigenvalues[-1] / eigenvalues[0]) if eigenvalues[0] > 0 else float("inf")


def condition_mistakes(X):
    """{message: value} for the common bugs of condition_number (finite, well-conditioned X)."""
    X = _f64(X)
    H = X.T @ X / len(X)
    kappa = _ratio(np.linalg.eigvalsh(H))
    out = {MSG["svd"]: np.sqrt(kappa), MSG["inverted"]: 1.0 / kappa}
    if len(X) > 1:
        Xc = X - X.mean(0)
        out[MSG["centered"]] = _ratio(np.linalg.eigvalsh(Xc.T @ Xc))
    return out


def condition_hint(X, value) -> str | None:
    """A message for outputs that no exact mistake reproduces (rounding noise), or None."""
    N, D = np.shape(X)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if N > D and (value < 0 or abs(value) > 1e12 or not np.isfinite(value)):
        return MSG["gram"]
    return None


def gd_run(X, y, lr, steps, w0=None, *, grad_scale="mean", sign=-1.0, loss="half_mean", extra=0):
    """Gradient descent with knobs for each bug: returns (w, losses) as a student would."""
    X, y = _f64(X), _f64(y)
    N, D = X.shape
    w = np.zeros(D) if w0 is None else _f64(w0).copy()
    losses = []
    for t in range(steps + 1 + extra):
        r = X @ w - y
        losses.append({"half_mean": r @ r / (2 * N), "mean": r @ r / N, "half_sum": r @ r / 2}[loss])
        if t == steps + extra:
            break
        grad = X.T @ r
        if grad_scale == "mean":
            grad = grad / N
        w = w + sign * lr * grad
    return w, np.array(losses)


def gd_mistakes(X, y, lr, steps, w0=None):
    """{"w": {message: w}, "losses": {message: losses}} for the common bugs of gd_least_squares."""
    w, losses = {}, {}
    for key, kwargs in (("no_mean_grad", dict(grad_scale="sum")), ("ascent", dict(sign=1.0))):
        with np.errstate(all="ignore"):
            w_bad, l_bad = gd_run(X, y, lr, steps, w0, **kwargs)
        if np.all(np.isfinite(l_bad)):
            w[MSG[key]], losses[MSG[key]] = w_bad, l_bad
    losses[MSG["loss_no_half"]] = gd_run(X, y, lr, steps, w0, loss="mean")[1]
    losses[MSG["loss_sum"]] = gd_run(X, y, lr, steps, w0, loss="half_sum")[1]
    w[MSG["extra_step"]] = gd_run(X, y, lr, steps, w0, extra=1)[0]
    return {"w": w, "losses": losses}


def losses_shape_hint(shape, steps) -> str | None:
    if tuple(shape) == (steps,):
        return (f"losses has {steps} entries, one per update; " + MSG["losses_count"]
                + " Did you forget the loss after the last update, or the one at w0?")
    if tuple(shape) == (steps + 2,):
        return f"losses has steps + 2 = {steps + 2} entries; " + MSG["losses_count"]
    return None
