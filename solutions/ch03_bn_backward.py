"""Reference solutions for chapter 3: the Batch Normalization backward pass.

Exercises: ``numerical_gradient`` (centered differences), ``batchnorm_backward``
(staged, along the computational graph), ``batchnorm_backward_compact`` (closed
form) and ``spatial_batchnorm_backward``. The backward functions take a ``cache``
of the forward functions of chapter 2 and read only the keys of its contract,
``x``, ``x_hat``, ``mean``, ``var`` (biased), ``gamma`` and ``eps``, so any forward
pass that keeps the contract works with them. They return ``(dx, dgamma, dbeta)``
in the dtype of the cached arrays. Note that
``dgamma`` and ``dbeta`` are sums over the batch, never divided by ``N``.
"""

import numpy as np


def numerical_gradient(f, x, dout, h=1e-5):
    """Numerical gradient of ``sum(f(x) * dout)`` with respect to ``x``.

    Uses centered differences, one element at a time::

        dx[i] = (sum(f(x + h e_i) * dout) - sum(f(x - h e_i) * dout)) / (2 h)

    which has an error of order ``h**2``. Use float64 inputs and a *random*
    ``dout`` (with ``dout = ones`` the gradient of a BN output w.r.t. its input is
    exactly zero, and a check would prove nothing).

    Parameters
    ----------
    f : callable
        Function of one array, returning an array of the shape of ``dout``. It is
        always called on a fresh perturbed copy, so it may even modify its argument.
    x : np.ndarray, any shape
        Point at which to differentiate. It is unchanged afterwards.
    dout : np.ndarray, shape of ``f(x)``
        Upstream gradient (the weights of the scalar ``sum(f(x) * dout)``).
    h : float, optional
        Step size, ``> 0``.

    Returns
    -------
    dx : np.ndarray, shape of ``x``
        The numerical gradient, in the floating dtype of ``x`` (float64 for integer
        ``x``); the sums are accumulated in float64.

    Raises
    ------
    ValueError
        If ``h <= 0`` or ``f`` returns an array whose shape differs from ``dout``'s.
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    base = np.array(x, dtype=dtype)  # a private copy: the caller's x is never touched
    dout = np.asarray(dout)
    h = float(h)
    if not h > 0:
        raise ValueError(f"h must be positive, got {h}")
    dx = np.zeros(base.shape, dtype=np.float64)
    for index in np.ndindex(base.shape):
        values = []
        for step in (h, -h):
            shifted = base.copy()  # fresh copy: f may return a view of it or modify it
            shifted[index] += step
            out = np.asarray(f(shifted))
            if out.shape != dout.shape:
                raise ValueError(f"f(x) has shape {out.shape} but dout has shape {dout.shape}; they must match")
            # Reduce to a scalar at once, before anything else can change `out`.
            values.append(np.sum(out * dout, dtype=np.float64))
        dx[index] = (values[0] - values[1]) / (2 * h)
    return dx.astype(dtype)


def batchnorm_backward(dout, cache):
    """Backward pass of training-mode Batch Normalization, stage by stage.

    Back-propagates ``dout`` through the stages of ``batchnorm_forward``::

        1. mu    = mean(x, axis=0)
        2. xmu   = x - mu
        3. var   = mean(xmu ** 2, axis=0)
        4. std   = sqrt(var + eps)
        5. ivar  = 1 / std
        6. x_hat = xmu * ivar
        7. out   = gamma * x_hat + beta

    in reverse order, adding the gradients of every branch that reaches a node
    (``xmu`` feeds stages 3 and 6, ``x`` feeds stages 1 and 2).

    Parameters
    ----------
    dout : np.ndarray, shape (N, D)
        Upstream gradient of the loss with respect to ``out``.
    cache : dict
        A cache of ``batchnorm_forward``. Only the keys of the cache contract are
        used: ``"x"`` (N, D), ``"x_hat"`` (N, D), ``"mean"`` (D,), ``"var"`` (D,),
        the biased variance, ``"gamma"`` (D,) and ``"eps"`` (float). The intermediate values
        of stages 2, 4 and 5 (``x - mean``, ``sqrt(var + eps)``, its inverse) are
        recomputed from them: one cheap pass each, no batch statistic recomputed.

    Returns
    -------
    dx : np.ndarray, shape (N, D)
        Gradient with respect to ``x``.
    dgamma : np.ndarray, shape (D,)
        Gradient with respect to ``gamma``: ``sum(dout * x_hat, axis=0)``.
    dbeta : np.ndarray, shape (D,)
        Gradient with respect to ``beta``: ``sum(dout, axis=0)``.

    Raises
    ------
    ValueError
        If ``dout`` does not have the shape of the cached ``x_hat``.
    """
    x, x_hat, mean, var, gamma = cache["x"], cache["x_hat"], cache["mean"], cache["var"], cache["gamma"]
    dout = np.asarray(dout)
    if dout.shape != x_hat.shape:
        raise ValueError(f"dout must have shape {x_hat.shape} (the shape of x), got shape {dout.shape}")
    dout = dout.astype(x_hat.dtype, copy=False)
    N = x_hat.shape[0]
    # The forward values of stages 2, 4 and 5, from the contract keys.
    xmu = x - mean
    std = np.sqrt(var + float(cache["eps"]))
    ivar = 1.0 / std

    # Stage 7: out = gamma * x_hat + beta (gamma and beta are broadcast over the N rows,
    # so their gradients are sums over the batch).
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma

    # Stage 6: x_hat = xmu * ivar (ivar is broadcast over the rows: sum).
    divar = (dx_hat * xmu).sum(axis=0)
    dxmu_from_xhat = dx_hat * ivar

    # Stage 5: ivar = 1 / std.
    dstd = -divar / (std * std)

    # Stage 4: std = sqrt(var + eps).
    dvar = 0.5 * dstd / std

    # Stage 3: var = mean(xmu ** 2, axis=0) = sum(xmu ** 2, axis=0) / N.
    dxmu_from_var = 2.0 * xmu * dvar / N

    # Stage 2: xmu = x - mu; xmu reaches the output through two branches: add them.
    dxmu = dxmu_from_xhat + dxmu_from_var
    dx_from_xmu = dxmu
    dmu = -dxmu.sum(axis=0)

    # Stage 1: mu = mean(x, axis=0): every x[i] receives dmu / N.
    dx_from_mu = np.broadcast_to(dmu / N, x_hat.shape)

    # x reaches the output through stages 1 and 2: add both branches.
    dx = dx_from_xmu + dx_from_mu
    return dx, dgamma, dbeta


def batchnorm_backward_compact(dout, cache):
    """Backward pass of training-mode Batch Normalization in closed form.

    The closed form the chapter derives: no intermediate gradient of the graph
    (``dx_hat``, ``dvar``, ``dmean``) is formed, only whole-batch sums per feature.

    Parameters
    ----------
    dout : np.ndarray, shape (N, D)
        Upstream gradient of the loss with respect to ``out``.
    cache : dict
        A cache of ``batchnorm_forward``; this function uses the contract keys
        ``"x_hat"`` (N, D), ``"var"`` (D,), ``"gamma"`` (D,) and ``"eps"`` (float).

    Returns
    -------
    dx : np.ndarray, shape (N, D)
        Gradient with respect to ``x``.
    dgamma : np.ndarray, shape (D,)
        Gradient with respect to ``gamma``.
    dbeta : np.ndarray, shape (D,)
        Gradient with respect to ``beta``.

    Raises
    ------
    ValueError
        If ``dout`` does not have the shape of the cached ``x_hat``.

    Implementation note
    -------------------
    With ``dbeta = sum(dout)``, ``dgamma = sum(dout * x_hat)`` (sums over the batch)
    and ``std = sqrt(var + eps)``::

        dx = gamma / (N * std) * (N * dout - dbeta - x_hat * dgamma)

    i.e. the upstream gradient scaled by ``gamma / std`` with its per-feature mean
    and its projection on ``x_hat`` removed.
    """
    x_hat, var, gamma, eps = cache["x_hat"], cache["var"], cache["gamma"], cache["eps"]
    dout = np.asarray(dout)
    if dout.shape != x_hat.shape:
        raise ValueError(f"dout must have shape {x_hat.shape} (the shape of x), got shape {dout.shape}")
    dout = dout.astype(x_hat.dtype, copy=False)
    N = x_hat.shape[0]
    std = np.sqrt(var + float(eps))
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx = (gamma / (N * std)) * (N * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def spatial_batchnorm_backward(dout, cache):
    """Backward pass of convolutional (spatial) Batch Normalization.

    Moves the channel axis last, flattens to ``(N * H * W, C)`` exactly as the
    forward pass did, applies ``batchnorm_backward_compact`` and restores the
    (N, C, H, W) layout.

    Parameters
    ----------
    dout : np.ndarray, shape (N, C, H, W)
        Upstream gradient of the loss with respect to ``out``.
    cache : dict
        A cache of ``spatial_batchnorm_forward``. Only the keys of the cache
        contract are used: ``"x"`` and ``"x_hat"`` of shape (N, C, H, W),
        ``"mean"``, ``"var"`` (biased) and ``"gamma"`` of shape (C,), ``"eps"``
        (float).

    Returns
    -------
    dx : np.ndarray, shape (N, C, H, W)
        Gradient with respect to ``x``.
    dgamma : np.ndarray, shape (C,)
        Gradient with respect to ``gamma`` (summed over N, H and W).
    dbeta : np.ndarray, shape (C,)
        Gradient with respect to ``beta`` (summed over N, H and W).

    Raises
    ------
    ValueError
        If ``dout`` does not have the shape of the cached ``x_hat``.
    """
    x_hat = cache["x_hat"]
    dout = np.asarray(dout)
    if x_hat.ndim != 4 or dout.shape != x_hat.shape:
        raise ValueError(f"dout must have shape {x_hat.shape} (the shape of x, (N, C, H, W)), "
                         f"got shape {dout.shape}")
    N, C, H, W = x_hat.shape

    def to_rows(a):
        # (N, C, H, W) -> (N, H, W, C) -> (N*H*W, C)
        return a.transpose(0, 2, 3, 1).reshape(N * H * W, C)

    flat_cache = {key: (to_rows(value) if np.ndim(value) == 4 else value) for key, value in cache.items()}
    dx_flat, dgamma, dbeta = batchnorm_backward_compact(to_rows(dout), flat_cache)
    dx = np.ascontiguousarray(dx_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2))
    return dx, dgamma, dbeta
