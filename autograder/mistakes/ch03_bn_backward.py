"""Common mistakes of chapter 3: numerical gradients and the BN backward pass.

Every ``*_mistakes`` function returns ``{message: output of that mistake}`` computed in
float64 on the grader's inputs (for the backward passes: ``{"dx": {...}, "dgamma": {...},
"dbeta": {...}}``). They read only the keys of the cache contract
(``autograder.suitekit.CACHE_CONTRACT``).
"""

import numpy as np


MSG = {
    "one_sided": "It matches the one-sided difference (f(x + h) - f(x)) / h, whose error is of order h; "
                 "use centered differences (f(x + h) - f(x - h)) / (2h), whose error is of order h**2.",
    "backward_diff": "It matches the one-sided difference (f(x) - f(x - h)) / h; use centered differences "
                     "(f(x + h) - f(x - h)) / (2h).",
    "no_half": "It matches (f(x + h) - f(x - h)) / h, twice the gradient: divide the centered difference by 2h.",
    "no_division": "It matches f(x + h) - f(x - h) without dividing by 2h.",
    "ignores_dout": "It matches the gradient of sum(f(x)), ignoring dout: differentiate sum(f(x) * dout).",
    "default_h": "It matches h = 1e-5 whatever the argument: use the h that was passed.",
    "x_changed": "x is different after the call: your function perturbs x in place and does not restore it "
                 "exactly. Save x[i] before perturbing and put the saved value back (or work on a copy).",
    "no_mean_path": "It matches dx without the gradient path through the mean mu (dmu is missing or not added "
                    "to dx): x feeds both x - mu and mu, so dx sums both branches.",
    "no_var_path": "It matches dx without the gradient path through the variance (dvar is missing or not "
                   "added): x - mu feeds both x_hat and var, so its gradient sums both branches.",
    "no_stat_paths": "It matches dx = gamma * dout / sqrt(var + eps), which treats mu and var as constants: "
                     "the gradient paths through the mean and the variance are both missing.",
    "var_path_only": "It matches dx with only the branch through the variance: the gradient of x - mu from "
                     "x_hat (dx_hat / std) was overwritten instead of added to the one from var.",
    "div_n": "It matches dgamma and dbeta divided by N (a mean over the batch instead of a sum): gamma and "
             "beta are shared by all rows, so their gradients are sums.",
    "div_nhw": "It matches dgamma and dbeta divided by the number of values per channel (N * H * W): they "
               "are sums, not means.",
    "no_gamma": "It matches dx without the factor gamma: dx_hat = dout * gamma.",
    "eps_outside": "It matches dividing by sqrt(var) + eps (eps outside the square root); the forward pass "
                   "divides by sqrt(var + eps), so the backward pass must too.",
    "no_eps": "It matches dividing by sqrt(var) without eps.",
    "unbiased": "It matches the unbiased variance (N - 1) somewhere in the backward pass; BN normalizes "
                "with the biased variance (divide by N), and its derivative has 2 (x - mu) / N.",
    "unbiased_xhat": "It matches x_hat and the scale recomputed with the unbiased variance (ddof=1); use the "
                     "cached biased variance (divide by N).",
    "missing_1_over_n": "It matches dx multiplied by N: a factor 1/N is missing (the mean and the variance "
                        "each divide by N).",
    "dgamma_x": "It matches dgamma = sum(dout * x); the output is gamma * x_hat + beta, so dgamma = "
                "sum(dout * x_hat).",
    "swapped": "It matches dgamma and dbeta swapped.",
    "reshape_no_transpose": "It matches reshaping (N, C, H, W) to (-1, C) without moving the channel axis "
                            "last: transpose to (N, H, W, C) before reshaping, and back after.",
    "reshape_back_no_transpose": "It matches reshaping the (N*H*W, C) result straight to (N, C, H, W): "
                                 "reshape to (N, H, W, C) first, then transpose to (N, C, H, W).",
    "count_n": "It matches the formula with N (the batch size) where the number of values per channel, "
               "N * H * W, belongs: every statistic is a mean over N, H and W.",
}


# ------------------------------------------------------------------------- numerical gradient

def _differences(f, x, dout, h, kind):
    x = np.asarray(x, dtype=np.float64)
    dout = np.asarray(dout, dtype=np.float64)
    dx = np.zeros_like(x)
    base = None
    if kind in ("forward", "backward"):
        base = float(np.sum(f(x.copy()) * dout))
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        if kind == "forward":
            dx[index] = (np.sum(f(plus) * dout) - base) / h
        elif kind == "backward":
            dx[index] = (base - np.sum(f(minus) * dout)) / h
        else:
            diff = np.sum(f(plus) * dout) - np.sum(f(minus) * dout)
            dx[index] = {"centered": diff / (2 * h), "no_half": diff / h, "no_division": diff}[kind]
    return dx


def numerical_gradient_mistakes(f, x, dout, h=1e-5):
    """{message: dx} for the common bugs of numerical_gradient."""
    out = {
        MSG["one_sided"]: _differences(f, x, dout, h, "forward"),
        MSG["backward_diff"]: _differences(f, x, dout, h, "backward"),
        MSG["no_half"]: _differences(f, x, dout, h, "no_half"),
        MSG["no_division"]: _differences(f, x, dout, h, "no_division"),
        MSG["ignores_dout"]: _differences(f, x, np.ones_like(np.asarray(dout, dtype=float)), h, "centered"),
    }
    if h != 1e-5:
        out[MSG["default_h"]] = _differences(f, x, dout, 1e-5, "centered")
        out[MSG["default_h"] + " " + MSG["one_sided"]] = _differences(f, x, dout, 1e-5, "forward")
    return out


# ------------------------------------------------------------------------- batchnorm backward

def _compact(dout, x_hat, std, gamma, count=None):
    """The closed form over axis 0 of (M, D) arrays: returns (dx, dgamma, dbeta)."""
    M = dout.shape[0] if count is None else count
    dbeta = dout.sum(0)
    dgamma = (dout * x_hat).sum(0)
    dx = gamma / (M * std) * (M * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def backward_mistakes_rows(dout, cache):
    """{"dx": {...}, "dgamma": {...}, "dbeta": {...}} for (N, D) arrays and a float64 cache."""
    dout = np.asarray(dout, dtype=np.float64)
    x_hat, var, gamma, eps = (np.asarray(cache[k], dtype=np.float64) for k in ("x_hat", "var", "gamma", "eps"))
    x = np.asarray(cache["x"], dtype=np.float64)
    xmu = x - np.asarray(cache["mean"], dtype=np.float64)
    eps = float(eps)
    N = dout.shape[0]
    std = np.sqrt(var + eps)
    dbeta, dgamma = dout.sum(0), (dout * x_hat).sum(0)
    dxhat = dout * gamma
    mean_dxhat, proj = dxhat.mean(0), (dxhat * x_hat).mean(0)
    dx_ok = (dxhat - mean_dxhat - x_hat * proj) / std
    # the staged graph, with one branch missing or overwritten
    dvar = -0.5 * (dxhat * xmu).sum(0) / std ** 3
    dxmu_var = 2.0 * xmu * dvar / N
    dx = {
        MSG["no_mean_path"]: (dxhat - x_hat * proj) / std,
        MSG["no_var_path"]: (dxhat - mean_dxhat) / std,
        MSG["no_stat_paths"]: dxhat / std,
        MSG["var_path_only"]: dxmu_var - dxmu_var.mean(0),
        MSG["no_gamma"]: (dout - dout.mean(0) - x_hat * (dout * x_hat).mean(0)) / std,
        MSG["missing_1_over_n"]: N * dx_ok,
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        std_out = np.sqrt(var) + eps
        dx[MSG["eps_outside"]] = _compact(dout, x_hat, std_out, gamma)[0]
        dx[MSG["no_eps"]] = _compact(dout, x_hat, np.sqrt(var), gamma)[0]
        if N > 1:
            var1 = var * N / (N - 1)
            dx[MSG["unbiased"]] = (dxhat - mean_dxhat - x_hat * (dxhat * x_hat).sum(0) / (N - 1)) / std
            dx[MSG["unbiased"] + " (Here: in the scale 1 / sqrt(var + eps).)"] = _compact(dout, x_hat, np.sqrt(var1 + eps), gamma)[0]
            x_hat1 = xmu / np.sqrt(var1 + eps)
            dx_u, dgamma_u, _ = _compact(dout, x_hat1, np.sqrt(var1 + eps), gamma)
            dx[MSG["unbiased_xhat"]] = dx_u
    dgamma_m = {
        MSG["div_n"]: dgamma / N,
        MSG["dgamma_x"]: (dout * x).sum(0),
        MSG["swapped"]: dbeta,
    }
    dbeta_m = {MSG["div_n"]: dbeta / N, MSG["swapped"]: dgamma}
    if N > 1:
        dgamma_m[MSG["unbiased_xhat"]] = dgamma_u
    return {"dx": dx, "dgamma": dgamma_m, "dbeta": dbeta_m}


def spatial_backward_mistakes(dout, cache):
    """The same for (N, C, H, W) arrays and the cache of spatial_batchnorm_forward."""
    dout = np.asarray(dout, dtype=np.float64)
    N, C, H, W = dout.shape

    def rows(a):
        return np.asarray(a, dtype=np.float64).transpose(0, 2, 3, 1).reshape(-1, C)

    def back(a):
        return a.reshape(N, H, W, C).transpose(0, 3, 1, 2)

    flat = {k: (rows(v) if np.ndim(v) == 4 else v) for k, v in cache.items()}
    m = backward_mistakes_rows(rows(dout), flat)
    out = {
        "dx": {k: back(v) for k, v in m["dx"].items()},
        "dgamma": dict(m["dgamma"]),
        "dbeta": dict(m["dbeta"]),
    }
    # divided by N * H * W is "div_n" of the flattened problem; divided by the batch size:
    for key, value in (("dgamma", m["dgamma"][MSG["div_n"]] * (H * W)),
                       ("dbeta", m["dbeta"][MSG["div_n"]] * (H * W))):
        out[key] = {MSG["div_nhw"] if k == MSG["div_n"] else k: v for k, v in out[key].items()}
        out[key][MSG["div_n"]] = value
    x_hat, var, gamma, eps = rows(cache["x_hat"]), np.asarray(cache["var"], float), np.asarray(cache["gamma"], float), float(cache["eps"])
    std = np.sqrt(var + eps)
    d = rows(dout)
    out["dx"][MSG["count_n"]] = back(_compact(d, x_hat, std, gamma, count=N)[0])
    # reshape to (-1, C) without transposing (both ways), and back without transposing
    wrong = lambda a: np.asarray(a, dtype=np.float64).reshape(-1, C)  # noqa: E731
    dx_w, dgamma_w, dbeta_w = _compact(wrong(dout), wrong(cache["x_hat"]), std, gamma)
    out["dx"][MSG["reshape_no_transpose"]] = dx_w.reshape(N, C, H, W)
    out["dgamma"][MSG["reshape_no_transpose"]] = dgamma_w
    out["dbeta"][MSG["reshape_no_transpose"]] = dbeta_w
    dx_ok = _compact(d, x_hat, std, gamma)[0]
    out["dx"][MSG["reshape_back_no_transpose"]] = dx_ok.reshape(N, C, H, W)
    return out
