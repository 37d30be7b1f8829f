"""Reference solutions for chapter 6: beyond Batch Normalization (NumPy).

Exercises
---------
layernorm_forward, layernorm_backward
    Layer Normalization of (N, D) inputs: statistics per row (per example)
    instead of per column (per feature).
groupnorm_forward
    Group Normalization of (N, C, H, W) inputs: statistics per example and
    per group of C / G consecutive channels; matches
    ``torch.nn.functional.group_norm``.
fold_batchnorm
    Fold an eval-mode BN layer into the preceding convolution.

Conventions: biased variances; ``sqrt(var + eps)``; results have the
floating-point dtype of the main input (``x`` or ``weight``; float64 for
integer input); inputs are never modified.
"""

import numpy as np


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """Layer Normalization, forward pass.

    Each row (example) is normalized with its own mean and biased variance over
    its D features, then scaled and shifted per feature::

        x_hat[n, d] = (x[n, d] - mean[n]) / sqrt(var[n] + eps)
        out[n, d]   = gamma[d] * x_hat[n, d] + beta[d]

    Unlike BN, the same computation is used in training and at inference, and
    it works for N = 1.

    Parameters
    ----------
    x : np.ndarray, shape (N, D)
        Input.
    gamma : np.ndarray, shape (D,)
        Per-feature scale.
    beta : np.ndarray, shape (D,)
        Per-feature shift.
    eps : float, optional
        Added to the variance inside the square root. Default 1e-5.

    Returns
    -------
    out : np.ndarray, shape (N, D)
        Normalized, scaled and shifted input, in the dtype of ``x``.
    cache : dict
        ``x`` (N, D), ``x_hat`` (N, D), ``mean`` (N,), ``var`` (N,) (biased),
        ``gamma`` (D,), ``beta`` (D,), ``eps`` (float), ``inv_std`` (N,).

    Raises
    ------
    ValueError
        If ``x`` is not 2-D with D >= 1, or ``gamma`` / ``beta`` is not of
        shape (D,), or ``eps`` is negative.
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    x = np.array(x, dtype=dtype)  # a copy: the cache never aliases the caller's array
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (N, D) with D >= 1, got {x.shape}")
    D = x.shape[1]
    gamma = np.array(gamma, dtype=dtype)
    beta = np.array(beta, dtype=dtype)
    if gamma.shape != (D,) or beta.shape != (D,):
        raise ValueError(f"gamma and beta must have shape ({D},), got {gamma.shape} and {beta.shape}")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    mean = x.mean(axis=1)
    var = ((x - mean[:, None]) ** 2).mean(axis=1)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean[:, None]) * inv_std[:, None]
    out = gamma * x_hat + beta
    cache = {"x": x, "x_hat": x_hat, "mean": mean, "var": var, "inv_std": inv_std,
             "gamma": gamma, "beta": beta, "eps": float(eps)}
    return out, cache


def layernorm_backward(dout, cache):
    """Layer Normalization, backward pass (compact closed form, per row).

    Chapter 3's compact backward formula applied to the transposed problem: the
    statistics are per row, so the sums of ``dx`` run over the D features of a
    row, while ``dgamma`` and ``dbeta`` (per feature) sum over the rows.

    Parameters
    ----------
    dout : np.ndarray, shape (N, D)
        Upstream gradient with respect to ``out``.
    cache : dict
        From :func:`layernorm_forward`; uses ``x_hat``, ``gamma`` and ``var``
        and ``eps`` (or ``inv_std``).

    Returns
    -------
    dx : np.ndarray, shape (N, D)
    dgamma : np.ndarray, shape (D,)
    dbeta : np.ndarray, shape (D,)

    Raises
    ------
    ValueError
        If ``dout`` does not have the shape of ``cache["x_hat"]``.

    Implementation note
    -------------------
    With ``g = dout * gamma`` (the gradient with respect to ``x_hat``) and sums
    over the D features of each row::

        dx     = inv_std / D * (D * g - sum(g) - x_hat * sum(g * x_hat))
        dgamma = sum over rows of dout * x_hat
        dbeta  = sum over rows of dout
    """
    x_hat = cache["x_hat"]
    dout = np.asarray(dout)
    if dout.shape != x_hat.shape:
        raise ValueError(f"dout must have shape {x_hat.shape}, got {dout.shape}")
    dout = dout.astype(x_hat.dtype, copy=False)
    if "inv_std" in cache:
        inv_std = cache["inv_std"]
    else:
        inv_std = 1.0 / np.sqrt(cache["var"] + cache["eps"])
    D = x_hat.shape[1]
    g = dout * cache["gamma"]
    dx = (inv_std / D)[:, None] * (
        D * g - g.sum(axis=1, keepdims=True) - x_hat * (g * x_hat).sum(axis=1, keepdims=True)
    )
    dgamma = (dout * x_hat).sum(axis=0)
    dbeta = dout.sum(axis=0)
    return dx, dgamma, dbeta


def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
    """Group Normalization, forward pass (Wu & He 2018).

    The C channels are split into ``num_groups`` groups of ``C // num_groups``
    consecutive channels; each example's group is normalized with the mean and
    biased variance over its ``(C // num_groups) * H * W`` values; then a
    per-channel scale and shift is applied. ``num_groups = 1`` is LayerNorm
    over (C, H, W); ``num_groups = C`` is InstanceNorm (with affine).

    Parameters
    ----------
    x : np.ndarray, shape (N, C, H, W)
        Input.
    gamma : np.ndarray, shape (C,)
        Per-channel scale.
    beta : np.ndarray, shape (C,)
        Per-channel shift.
    num_groups : int
        Number of groups G; must divide C.
    eps : float, optional
        Added to the variance inside the square root. Default 1e-5.

    Returns
    -------
    out : np.ndarray, shape (N, C, H, W)
        In the dtype of ``x``; equals
        ``torch.nn.functional.group_norm(x, num_groups, gamma, beta, eps)``.
    cache : dict
        ``x`` (N, C, H, W), ``x_hat`` (N, C, H, W), ``mean`` (N, G), ``var``
        (N, G) (biased), ``gamma`` (C,), ``beta`` (C,), ``eps`` (float),
        ``num_groups`` (int), ``inv_std`` (N, G).

    Raises
    ------
    ValueError
        If ``x`` is not 4-D, ``num_groups`` is not a positive integer dividing
        C, ``gamma`` / ``beta`` is not of shape (C,), or ``eps`` is negative.
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    x = np.array(x, dtype=dtype)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {x.shape}")
    N, C, H, W = x.shape
    if isinstance(num_groups, bool) or int(num_groups) != num_groups or num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups!r}")
    G = int(num_groups)
    if C % G != 0:
        raise ValueError(f"num_groups ({G}) must divide the number of channels ({C})")
    gamma = np.array(gamma, dtype=dtype)
    beta = np.array(beta, dtype=dtype)
    if gamma.shape != (C,) or beta.shape != (C,):
        raise ValueError(f"gamma and beta must have shape ({C},), got {gamma.shape} and {beta.shape}")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    xg = x.reshape(N, G, (C // G) * H * W)
    mean = xg.mean(axis=2)
    var = ((xg - mean[:, :, None]) ** 2).mean(axis=2)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = ((xg - mean[:, :, None]) * inv_std[:, :, None]).reshape(N, C, H, W)
    out = gamma.reshape(1, C, 1, 1) * x_hat + beta.reshape(1, C, 1, 1)
    cache = {"x": x, "x_hat": x_hat, "mean": mean, "var": var, "gamma": gamma, "beta": beta,
             "eps": float(eps), "num_groups": G, "inv_std": inv_std}
    return out, cache


def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    """Fold an eval-mode BN layer into the preceding convolution.

    In eval mode ``bn(conv(x)) = scale * (W * x + b - running_mean) + beta``
    with ``scale = gamma / sqrt(running_var + eps)`` per output channel, which
    is again a convolution: one whose weight and bias you find by
    expanding that expression (``b = 0`` when the convolution has no bias). The
    result must match ``torch.nn.utils.fusion.fuse_conv_bn_weights``. Valid only for inference:
    in training mode BN uses batch statistics.

    Parameters
    ----------
    weight : np.ndarray, shape (C_out, C_in, kH, kW)
        Convolution weight. Any weight with the output channels first works
        the same way (e.g. a linear layer's (C_out, C_in) or a Conv1d's).
    bias : np.ndarray of shape (C_out,), or None
        Convolution bias; ``None`` for a convolution without bias.
    gamma, beta : np.ndarray, shape (C_out,)
        BN scale and shift.
    running_mean, running_var : np.ndarray, shape (C_out,)
        BN running statistics.
    eps : float, optional
        BN's eps. Default 1e-5.

    Returns
    -------
    new_weight : np.ndarray, shape (C_out, C_in, kH, kW)
        Folded weight, a new array in the dtype of ``weight``.
    new_bias : np.ndarray, shape (C_out,)
        Folded bias (always present), same dtype.

    Raises
    ------
    ValueError
        If ``weight`` has fewer than 2 dimensions, if any of the per-channel
        arrays is not of shape (C_out,), or if ``running_var + eps`` is not
        positive.

    Implementation note
    -------------------
    ::

        new_weight[o] = weight[o] * scale[o]
        new_bias[o]   = (b[o] - running_mean[o]) * scale[o] + beta[o]
    """
    weight = np.asarray(weight)
    dtype = weight.dtype if np.issubdtype(weight.dtype, np.floating) else np.float64
    weight = weight.astype(dtype, copy=False)
    if weight.ndim < 2:
        raise ValueError(f"weight must have shape (C_out, C_in, kH, kW), got {weight.shape}")
    C_out = weight.shape[0]
    bias = np.zeros(C_out, dtype=dtype) if bias is None else np.asarray(bias, dtype=dtype)
    vectors = {"bias": bias, "gamma": gamma, "beta": beta,
               "running_mean": running_mean, "running_var": running_var}
    vectors = {name: np.asarray(v, dtype=dtype) for name, v in vectors.items()}
    for name, v in vectors.items():
        if v.shape != (C_out,):
            raise ValueError(f"{name} must have shape ({C_out},), got {v.shape}")
    denom = vectors["running_var"] + eps
    if not np.all(denom > 0):
        raise ValueError("running_var + eps must be positive")
    scale = vectors["gamma"] / np.sqrt(denom)
    new_weight = weight * scale.reshape((C_out,) + (1,) * (weight.ndim - 1))
    new_bias = (vectors["bias"] - vectors["running_mean"]) * scale + vectors["beta"]
    return new_weight, new_bias
