"""Reference solutions for chapter 2: the Batch Normalization forward pass.

Exercises: ``batchnorm_forward`` (training mode), ``update_running_stats``,
``batchnorm_inference`` (evaluation mode) and ``spatial_batchnorm_forward``
(convolutional BN). Conventions follow PyTorch: the *biased* batch variance is
used to normalize, the *unbiased* (``N - 1``) one to update ``running_var``, and
``new = (1 - momentum) * old + momentum * batch_stat`` with ``momentum = 0.1``.
Every function computes in the floating dtype of its data argument (integers are
converted to ``float64``) and never modifies its inputs.
"""

import numpy as np


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """Batch Normalization forward pass in training mode (Ioffe & Szegedy, Alg. 1).

    Each feature (column) is normalized with the statistics of the mini-batch (the
    ``N`` rows): its mean and its *biased* variance (divide by ``N``), with ``eps``
    added to the variance inside the square root; then scaled by ``gamma`` and
    shifted by ``beta``, as in the chapter's four equations of the forward pass.

    Parameters
    ----------
    x : np.ndarray, shape (N, D)
        Mini-batch of ``N >= 2`` samples with ``D`` features.
    gamma : np.ndarray, shape (D,)
        Scale parameter.
    beta : np.ndarray, shape (D,)
        Shift parameter.
    eps : float, optional
        Constant added to the variance inside the square root.

    Returns
    -------
    out : np.ndarray, shape (N, D)
        Normalized, scaled and shifted output, in the floating dtype of ``x``.
    cache : dict
        Values for the backward pass (arrays in the dtype of ``out``). The cache
        contract, which every backward pass of chapter 3 relies on, is these keys:

        - ``"x"``: shape (N, D), the input;
        - ``"x_hat"``: shape (N, D), the normalized input;
        - ``"mean"``: shape (D,), batch mean;
        - ``"var"``: shape (D,), biased batch variance;
        - ``"gamma"``: shape (D,), the scale parameter;
        - ``"eps"``: float.

        A cache may hold more (this one also keeps ``"xmu"`` = ``x - mean``,
        ``"std"`` = ``sqrt(var + eps)`` and ``"ivar"`` = ``1 / std``), but no
        backward pass may require more.

    Raises
    ------
    ValueError
        If ``x`` is not (N, D), ``gamma``/``beta`` are not (D,), or ``N < 2``: the
        variance of a single sample is 0, so in training mode every output would be
        ``beta`` whatever the input (PyTorch refuses this case too).

    Implementation note
    -------------------
    The four equations, one NumPy line each::

        mean  = x.mean(axis=0)
        var   = ((x - mean) ** 2).mean(axis=0)        # biased: divide by N
        x_hat = (x - mean) / sqrt(var + eps)
        out   = gamma * x_hat + beta
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    x = x.astype(dtype, copy=False)  # a new array only when the dtype changes; x is never written
    if x.ndim != 2:
        raise ValueError(f"batchnorm_forward expects x of shape (N, D), got an array of shape {x.shape}")
    N, D = x.shape
    if N < 2:
        raise ValueError(
            f"batchnorm_forward needs at least 2 samples in training mode, got x of shape {x.shape}: "
            "the variance of a single sample is 0, so the batch statistics carry no information "
            "(use batchnorm_inference with running statistics instead)"
        )
    gamma = np.asarray(gamma).astype(dtype, copy=False)
    beta = np.asarray(beta).astype(dtype, copy=False)
    if gamma.shape != (D,):
        raise ValueError(f"gamma must have shape ({D},) to match x of shape {x.shape}, got shape {gamma.shape}")
    if beta.shape != (D,):
        raise ValueError(f"beta must have shape ({D},) to match x of shape {x.shape}, got shape {beta.shape}")
    eps = float(eps)  # a Python float keeps the dtype of x (NumPy's weak scalars)

    # Statistics are accumulated in float64 (as PyTorch does on the CPU) and stored in
    # the dtype of x; this makes the mean of a constant feature exact, so its output is beta.
    mean = x.mean(axis=0, dtype=np.float64).astype(dtype)          # stage 1: mu
    xmu = x - mean                                                 # stage 2: x - mu
    var = (xmu * xmu).mean(axis=0, dtype=np.float64).astype(dtype)  # stage 3: biased variance
    std = np.sqrt(var + eps)                                       # stage 4: eps inside the sqrt
    ivar = 1.0 / std                                               # stage 5: inverse std
    x_hat = xmu * ivar                                             # stage 6: normalized input
    out = gamma * x_hat + beta                                     # stage 7: scale and shift
    cache = {"x": x, "mean": mean, "xmu": xmu, "var": var, "std": std, "ivar": ivar,
             "x_hat": x_hat, "gamma": gamma, "eps": eps}
    return out, cache


def update_running_stats(running_mean, running_var, x, momentum=0.1):
    """Exponential moving averages of the batch statistics (PyTorch convention).

    Each running statistic moves towards the batch statistic by the fraction
    ``momentum`` of the gap (``momentum`` is the weight of the *new* value), as in
    the chapter's update rule. Note the *unbiased* variance (``N - 1``) of the batch, unlike the biased one used
    to normalize in training mode. (CS231n uses ``momentum`` for the weight of the
    *old* value and the biased variance; PyTorch does not.)

    Parameters
    ----------
    running_mean : np.ndarray, shape (D,)
        Current running mean (PyTorch initializes it to zeros).
    running_var : np.ndarray, shape (D,)
        Current running variance (PyTorch initializes it to ones).
    x : np.ndarray, shape (N, D)
        The mini-batch, ``N >= 2``.
    momentum : float, optional
        Weight of the new batch statistic, in ``[0, 1]``.

    Returns
    -------
    new_mean : np.ndarray, shape (D,)
        Updated running mean, in the floating dtype of ``running_mean``.
    new_var : np.ndarray, shape (D,)
        Updated running variance, same dtype. The inputs are not modified.

    Raises
    ------
    ValueError
        On shape mismatches, ``N < 2`` (the unbiased variance needs two samples), or
        a momentum outside ``[0, 1]``.

    Implementation note
    -------------------
    ::

        new_mean = (1 - momentum) * running_mean + momentum * x.mean(axis=0)
        new_var  = (1 - momentum) * running_var  + momentum * x.var(axis=0, ddof=1)
    """
    running_mean = np.asarray(running_mean)
    running_var = np.asarray(running_var)
    x = np.asarray(x)
    dtype = running_mean.dtype if np.issubdtype(running_mean.dtype, np.floating) else np.dtype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"update_running_stats expects x of shape (N, D), got an array of shape {x.shape}")
    N, D = x.shape
    if N < 2:
        raise ValueError(
            f"update_running_stats needs at least 2 samples, got x of shape {x.shape}: "
            "the unbiased variance divides by N - 1"
        )
    if running_mean.shape != (D,):
        raise ValueError(f"running_mean must have shape ({D},) to match x of shape {x.shape}, "
                         f"got shape {running_mean.shape}")
    if running_var.shape != (D,):
        raise ValueError(f"running_var must have shape ({D},) to match x of shape {x.shape}, "
                         f"got shape {running_var.shape}")
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    batch_mean = x.mean(axis=0, dtype=np.float64)
    batch_var = x.var(axis=0, ddof=1, dtype=np.float64)  # unbiased, as PyTorch
    new_mean = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * batch_mean
    new_var = (1.0 - momentum) * running_var.astype(np.float64) + momentum * batch_var
    return new_mean.astype(dtype), new_var.astype(dtype)


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Batch Normalization in evaluation mode: normalize with the running statistics.

    The forward pass of training mode with the running mean and the running
    variance in place of the batch statistics (``eps`` still inside the square
    root). No batch statistic is used, so each row's output depends on that row only, and
    the layer is an affine map ``out = a * x + b`` per feature.

    Parameters
    ----------
    x : np.ndarray, shape (N, D)
        Inputs; any ``N`` (a single sample is fine).
    gamma : np.ndarray, shape (D,)
        Scale parameter.
    beta : np.ndarray, shape (D,)
        Shift parameter.
    running_mean : np.ndarray, shape (D,)
        Running mean collected during training.
    running_var : np.ndarray, shape (D,)
        Running (unbiased) variance collected during training.
    eps : float, optional
        Constant added to ``running_var`` inside the square root.

    Returns
    -------
    out : np.ndarray, shape (N, D)
        Output, in the floating dtype of ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not (N, D) or a parameter is not of shape (D,).

    Implementation note
    -------------------
    ::

        out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    x = x.astype(dtype, copy=False)
    if x.ndim != 2:
        raise ValueError(f"batchnorm_inference expects x of shape (N, D), got an array of shape {x.shape}")
    D = x.shape[1]
    params = {"gamma": gamma, "beta": beta, "running_mean": running_mean, "running_var": running_var}
    for name, value in params.items():
        value = np.asarray(value).astype(dtype, copy=False)
        if value.shape != (D,):
            raise ValueError(f"{name} must have shape ({D},) to match x of shape {x.shape}, got shape {value.shape}")
        params[name] = value
    std = np.sqrt(params["running_var"] + float(eps))
    return params["gamma"] * (x - params["running_mean"]) / std + params["beta"]


def spatial_batchnorm_forward(x, gamma, beta, eps=1e-5):
    """Batch Normalization for convolutional feature maps (training mode).

    Each channel ``c`` is normalized with the mean and biased variance of all
    ``N * H * W`` values ``x[:, c, :, :]``. Implemented by moving the channel axis
    last, flattening to ``(N * H * W, C)`` (a transpose is needed *before* the
    reshape, otherwise channels get mixed) and calling ``batchnorm_forward``.

    Parameters
    ----------
    x : np.ndarray, shape (N, C, H, W)
        Feature maps, with ``N * H * W >= 2``.
    gamma : np.ndarray, shape (C,)
        Per-channel scale.
    beta : np.ndarray, shape (C,)
        Per-channel shift.
    eps : float, optional
        Constant added to the variance inside the square root.

    Returns
    -------
    out : np.ndarray, shape (N, C, H, W)
        Output, in the floating dtype of ``x``.
    cache : dict
        The cache contract of ``batchnorm_forward`` in the (N, C, H, W) layout:
        ``"x"`` and ``"x_hat"`` of shape (N, C, H, W); ``"mean"``, ``"var"``
        (biased) and ``"gamma"`` of shape (C,); ``"eps"``, a float. This cache
        also keeps ``"xmu"`` (N, C, H, W), ``"std"`` and ``"ivar"`` (C,).

    Raises
    ------
    ValueError
        If ``x`` is not four-dimensional, ``gamma``/``beta`` are not (C,), or
        ``N * H * W < 2`` (one value per channel has zero variance).
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    x = x.astype(dtype, copy=False)
    if x.ndim != 4:
        raise ValueError(f"spatial_batchnorm_forward expects x of shape (N, C, H, W), "
                         f"got an array of shape {x.shape}")
    N, C, H, W = x.shape
    if N * H * W < 2:
        raise ValueError(
            f"spatial_batchnorm_forward needs at least 2 values per channel (N * H * W >= 2), "
            f"got x of shape {x.shape}: the variance of a single value is 0"
        )
    if np.shape(gamma) != (C,):
        raise ValueError(f"gamma must have shape ({C},) to match x of shape {x.shape}, got shape {np.shape(gamma)}")
    if np.shape(beta) != (C,):
        raise ValueError(f"beta must have shape ({C},) to match x of shape {x.shape}, got shape {np.shape(beta)}")
    # (N, C, H, W) -> (N, H, W, C) -> (N*H*W, C): one row per position, one column per channel.
    x_flat = x.transpose(0, 2, 3, 1).reshape(N * H * W, C)
    out_flat, flat_cache = batchnorm_forward(x_flat, gamma, beta, eps)
    out = np.ascontiguousarray(out_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2))
    cache = dict(flat_cache)
    cache["x"] = x
    for key in ("xmu", "x_hat"):
        cache[key] = np.ascontiguousarray(flat_cache[key].reshape(N, H, W, C).transpose(0, 3, 1, 2))
    return out, cache
