"""Common mistakes of chapter 3: numerical gradients and the BN backward pass.

Every ``*_mistakes`` function returns ``{message: output of that mistake}`` computed in
float64 on the grader's inputs (for the backward passes: ``{"dx": {...}, "dgamma": {...},
"dbeta": {...}}``). They read only the keys of the cache contract
(``autograder.suitekit.CACHE_CONTRACT``).
"""

import numpy as np


from autograder.messages.ch03_bn_backward import MSG  # noqa: F401 - the texts, shared with the public checks


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


def dx_given(dout, cache):
    """``f(dgamma, dbeta)``: dx as the compact formula computes it from the given dgamma and
    dbeta, for (N, D) or (N, C, H, W) arrays. A submission whose dx equals it for its own
    wrong dgamma or dbeta is wrong in dx only through them."""
    dout = np.asarray(dout, dtype=np.float64)
    shape = (1, -1) if dout.ndim == 2 else (1, -1, 1, 1)
    count = dout.size // dout.shape[1]
    x_hat = np.asarray(cache["x_hat"], dtype=np.float64)
    std = np.sqrt(np.asarray(cache["var"], dtype=np.float64) + float(cache["eps"])).reshape(shape)
    gamma = np.asarray(cache["gamma"], dtype=np.float64).reshape(shape)
    return lambda dgamma, dbeta: gamma / (count * std) * (
        count * dout - np.reshape(dbeta, shape) - x_hat * np.reshape(dgamma, shape))


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
