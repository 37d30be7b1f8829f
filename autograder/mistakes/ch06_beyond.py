"""Common mistakes in LayerNorm (forward and backward), GroupNorm and BN folding.

Every function takes the inputs of the exercise, computes in float64, and returns
``{message: output of that mistake}`` (for ``check_array(..., mistakes=...)``).
"""

import numpy as np

from autograder.messages.ch06_beyond import (MSG, backward_crash_hint, fold_crash_hint,  # noqa: F401
                                              last_line)  # the texts and hints, shared with the public checks


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


# --------------------------------------------------------------------------- LayerNorm


def layernorm_forward_mistakes(x, gamma, beta, eps=1e-5):
    """Outputs of the common bugs of layernorm_forward (x of shape (N, D))."""
    x, gamma, beta = _f64(x, gamma, beta)
    N, D = x.shape
    mean, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    x_hat = (x - mean) / np.sqrt(var + eps)
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        if D > 1:
            var1 = x.var(1, ddof=1, keepdims=True)
            out[MSG["unbiased"]] = gamma * (x - mean) / np.sqrt(var1 + eps) + beta
        out[MSG["eps_outside"]] = gamma * (x - mean) / (np.sqrt(var) + eps) + beta
        out[MSG["no_sqrt"]] = gamma * (x - mean) / (var + eps) + beta
        out[MSG["no_eps"]] = gamma * (x - mean) / np.sqrt(var) + beta
    m0, v0 = x.mean(0), x.var(0)
    out[MSG["ln_batch_axis"]] = gamma * (x - m0) / np.sqrt(v0 + eps) + beta
    out[MSG["ln_batch_axis_1d"]] = gamma * (x - x.mean()) / np.sqrt(x.var() + eps) + beta
    out[MSG["no_affine"]] = x_hat
    out[MSG["no_beta"]] = gamma * x_hat
    out[MSG["no_gamma"]] = x_hat + beta
    out[MSG["swapped_affine"]] = beta * x_hat + gamma
    return out


def _ln_dx(g, x_hat, inv_std, axis=1, mean_path=True, var_path=True):
    """dx of x_hat = (x - mean) * inv_std given dx_hat = g, statistics along ``axis``."""
    n = g.shape[axis]
    inner = n * g
    if mean_path:
        inner = inner - g.sum(axis, keepdims=True)
    if var_path:
        inner = inner - x_hat * (g * x_hat).sum(axis, keepdims=True)
    return inv_std / n * inner


def layernorm_backward_mistakes(dout, cache):
    """Outputs of the common bugs of layernorm_backward, as {"dx": {...}, "dgamma": {...}, "dbeta": {...}}.

    ``cache`` is the reference forward's cache (keys x, x_hat, mean, var, gamma, eps).
    """
    dout, x, x_hat, var, gamma = _f64(dout, cache["x"], cache["x_hat"], cache["var"], cache["gamma"])
    eps = float(cache["eps"])
    N, D = x_hat.shape
    inv_std = (1.0 / np.sqrt(var + eps))[:, None]
    g = dout * gamma
    dx = {
        MSG["dx_no_stats"]: g * inv_std,
        MSG["dx_no_mean"]: _ln_dx(g, x_hat, inv_std, mean_path=False),
        MSG["dx_no_var"]: _ln_dx(g, x_hat, inv_std, var_path=False),
        MSG["dx_no_gamma"]: _ln_dx(dout, x_hat, inv_std),
        MSG["dx_eps_outside"]: _ln_dx(g, x_hat, (1.0 / (np.sqrt(var) + eps))[:, None]),
    }
    if N > 1:
        dx[MSG["dx_bn_axis"]] = _ln_dx(g, x_hat, inv_std, axis=0)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    return {
        "dx": dx,
        "dgamma": {
            MSG["dgamma_over_N"]: dgamma / N,
            MSG["dgamma_over_D"]: dgamma / D,
            MSG["dgamma_wrong_axis"]: (dout * x_hat).sum(1),
            MSG["dgamma_x"]: (dout * x).sum(0),
        },
        "dbeta": {
            MSG["dgamma_over_N"]: dbeta / N,
            MSG["dgamma_over_D"]: dbeta / D,
            MSG["dgamma_wrong_axis"]: dout.sum(1),
        },
    }


# --------------------------------------------------------------------------- GroupNorm


def _normalize(v, axes, eps, ddof=0, how="correct"):
    mean = v.mean(axis=axes, keepdims=True)
    n = np.prod([v.shape[a] for a in np.atleast_1d(axes)])
    var = ((v - mean) ** 2).sum(axis=axes, keepdims=True) / max(n - ddof, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if how == "eps_outside":
            return (v - mean) / (np.sqrt(var) + eps)
        if how == "no_eps":
            return (v - mean) / np.sqrt(var)
        if how == "no_sqrt":
            return (v - mean) / (var + eps)
        return (v - mean) / np.sqrt(var + eps)


def groupnorm_forward_mistakes(x, gamma, beta, num_groups, eps=1e-5):
    """Outputs of the common bugs of groupnorm_forward (x of shape (N, C, H, W))."""
    x, gamma, beta = _f64(x, gamma, beta)
    N, C, H, W = x.shape
    G = int(num_groups)
    g4, b4 = gamma.reshape(1, C, 1, 1), beta.reshape(1, C, 1, 1)

    def affine(x_hat):
        return g4 * x_hat + b4

    grouped = x.reshape(N, G, -1)
    out = {
        MSG["gn_instance"]: affine(_normalize(x, (2, 3), eps)),
        MSG["gn_layer"]: affine(_normalize(x, (1, 2, 3), eps)),
        MSG["gn_interleaved"]: affine(_normalize(x.reshape(N, C // G, G, H, W), (1, 3, 4), eps).reshape(x.shape)),
        MSG["gn_channels_last"]: affine(
            _normalize(x.transpose(0, 2, 3, 1).reshape(N, G, -1), 2, eps).reshape(N, H, W, C).transpose(0, 3, 1, 2)),
        MSG["gn_group_size"]: affine(_normalize(x.reshape(N, C // G, -1), 2, eps).reshape(x.shape)),
        MSG["gn_batch"]: affine(_normalize(grouped, (0, 2), eps).reshape(x.shape)),
        MSG["unbiased"]: affine(_normalize(grouped, 2, eps, ddof=1).reshape(x.shape)),
        MSG["eps_outside"]: affine(_normalize(grouped, 2, eps, how="eps_outside").reshape(x.shape)),
        MSG["no_sqrt"]: affine(_normalize(grouped, 2, eps, how="no_sqrt").reshape(x.shape)),
        MSG["no_eps"]: affine(_normalize(grouped, 2, eps, how="no_eps").reshape(x.shape)),
    }
    x_hat = _normalize(grouped, 2, eps).reshape(x.shape)
    per_group = (np.repeat(gamma[:G], C // G).reshape(1, C, 1, 1), np.repeat(beta[:G], C // G).reshape(1, C, 1, 1))
    out[MSG["gn_gamma_per_group"]] = per_group[0] * x_hat + per_group[1]
    out[MSG["no_affine"]] = x_hat
    out[MSG["no_beta"]] = g4 * x_hat
    out[MSG["no_gamma"]] = x_hat + b4
    out[MSG["swapped_affine"]] = b4 * x_hat + g4
    return out


# --------------------------------------------------------------------------- folding


def fold_batchnorm_mistakes(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    """Outputs of the common bugs of fold_batchnorm, as {"weight": {...}, "bias": {...}}."""
    weight, bias, gamma, beta, mean, var = _f64(weight, bias, gamma, beta, running_mean, running_var)
    C_out = weight.shape[0]
    has_bias = bias is not None
    b = bias if has_bias else np.zeros(C_out)
    col = (C_out,) + (1,) * (weight.ndim - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(var + eps)
        scales = {
            MSG["fold_eps_outside"]: gamma / (np.sqrt(var) + eps),
            MSG["fold_var_as_std"]: gamma / (var + eps),
            MSG["fold_no_eps"]: gamma / np.sqrt(var),
            MSG["fold_inverted"]: std / gamma,
            MSG["fold_no_gamma"]: 1.0 / std,
        }
    scale = gamma / std
    weights = {message: weight * s.reshape(col) for message, s in scales.items()}
    if weight.ndim >= 2 and weight.shape[1] == C_out:
        weights[MSG["fold_input_axis"]] = weight * scale.reshape((1, C_out) + (1,) * (weight.ndim - 2))
    weights[MSG["fold_weight_unscaled"]] = weight
    biases = {
        MSG["fold_bias_no_mean"]: b * scale + beta,
        MSG["fold_bias_unscaled"]: (b - mean) + beta,
        MSG["fold_bias_no_gamma"]: (b - mean) / std + beta,
        MSG["fold_bias_no_beta"]: (b - mean) * scale,
        MSG["fold_bias_mean_sign"]: (b + mean) * scale + beta,
    }
    if has_bias:
        biases[MSG["fold_bias_ignored"]] = -mean * scale + beta
    # a wrong scale shows in the bias too (the scale without gamma is fold_bias_no_gamma above)
    biases.update({message: (b - mean) * s + beta for message, s in scales.items() if message != MSG["fold_no_gamma"]})
    return {"weight": weights, "bias": biases}
