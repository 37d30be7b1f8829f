"""Reference solutions for chapter 1: why the scale of the inputs matters.

Exercises: ``standardize``, ``apply_standardization``, ``condition_number`` and
``gd_least_squares``. Every function is self-contained (it uses only NumPy), never
modifies its inputs, and computes in the floating dtype of its data argument
(integer input is converted to ``float64``).
"""

import numpy as np


def standardize(X, eps=1e-8):
    """Standardize every column (feature) of ``X`` to zero mean and unit variance.

    The statistics are computed over the samples (axis 0), with the *biased*
    variance (divide by ``N``), and ``eps`` is added *inside* the square root::

        Z = (X - mean) / sqrt(var + eps)

    Parameters
    ----------
    X : np.ndarray, shape (N, D)
        Data matrix: ``N >= 1`` samples (rows) of ``D`` features (columns).
    eps : float, optional
        Small constant added to the variance for numerical stability (a constant
        column has ``var = 0`` and is mapped to zeros).

    Returns
    -------
    Z : np.ndarray, shape (N, D)
        The standardized data, in the floating dtype of ``X``.
    mean : np.ndarray, shape (D,)
        Per-column mean of ``X``.
    var : np.ndarray, shape (D,)
        Per-column biased variance of ``X`` (``mean((X - mean) ** 2, axis=0)``).

    Raises
    ------
    ValueError
        If ``X`` is not two-dimensional or has no rows.
    """
    X = np.asarray(X)
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)
    X = X.astype(dtype, copy=False)  # a new array only when the dtype changes; X is never written
    if X.ndim != 2:
        raise ValueError(f"standardize expects X of shape (N, D), got an array of shape {X.shape}")
    if X.shape[0] < 1:
        raise ValueError(f"standardize needs at least one sample, got X of shape {X.shape}")
    eps = float(eps)
    # Accumulate the statistics in float64 (as PyTorch does on the CPU), then return
    # them in the dtype of X: this makes the mean of a constant column exact.
    mean = X.mean(axis=0, dtype=np.float64).astype(dtype)
    Xc = X - mean
    var = (Xc * Xc).mean(axis=0, dtype=np.float64).astype(dtype)  # biased: divide by N
    Z = Xc / np.sqrt(var + eps)
    return Z, mean, var


def apply_standardization(X, mean, var, eps=1e-8):
    """Standardize ``X`` with *given* statistics (normally those of the training set).

    Computes ``Z = (X - mean) / sqrt(var + eps)`` column-wise. Fitting the statistics
    on the training data only and applying them unchanged to validation and test data
    avoids leaking information from the held-out data.

    Parameters
    ----------
    X : np.ndarray, shape (N, D)
        Data to transform (any number of rows, ``N >= 0``).
    mean : np.ndarray, shape (D,)
        Per-column mean to subtract (e.g. the ``mean`` returned by ``standardize``).
    var : np.ndarray, shape (D,)
        Per-column biased variance (e.g. the ``var`` returned by ``standardize``).
    eps : float, optional
        Constant added to ``var`` inside the square root.

    Returns
    -------
    Z : np.ndarray, shape (N, D)
        The transformed data, in the floating dtype of ``X``.

    Raises
    ------
    ValueError
        If ``X`` is not two-dimensional or ``mean``/``var`` do not have shape (D,).
    """
    X = np.asarray(X)
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)
    X = X.astype(dtype, copy=False)
    if X.ndim != 2:
        raise ValueError(f"apply_standardization expects X of shape (N, D), got an array of shape {X.shape}")
    D = X.shape[1]
    mean = np.asarray(mean).astype(dtype, copy=False)
    var = np.asarray(var).astype(dtype, copy=False)
    if mean.shape != (D,):
        raise ValueError(f"mean must have shape ({D},) to match X of shape {X.shape}, got shape {mean.shape}")
    if var.shape != (D,):
        raise ValueError(f"var must have shape ({D},) to match X of shape {X.shape}, got shape {var.shape}")
    return (X - mean) / np.sqrt(var + float(eps))


def condition_number(X):
    """Condition number of the least-squares Hessian ``H = X.T @ X / N``.

    ``H`` is symmetric positive semi-definite, so its eigenvalues are real and
    non-negative; the condition number is ``lambda_max / lambda_min``. It controls
    how fast gradient descent converges on ``||X w - y||^2 / (2N)``.

    Parameters
    ----------
    X : np.ndarray, shape (N, D)
        Design matrix with ``N >= 1`` rows.

    Returns
    -------
    kappa : float
        ``lambda_max / lambda_min`` of ``X.T @ X / N`` (computed in float64 with
        ``np.linalg.eigvalsh``); ``inf`` when the smallest eigenvalue is ``<= 0``
        (the Hessian is singular).

    Raises
    ------
    ValueError
        If ``X`` is not two-dimensional or has no rows.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"condition_number expects X of shape (N, D), got an array of shape {X.shape}")
    if X.shape[0] < 1:
        raise ValueError(f"condition_number needs at least one sample, got X of shape {X.shape}")
    H = X.T @ X / X.shape[0]
    eigenvalues = np.linalg.eigvalsh(H)  # ascending order
    if eigenvalues[0] <= 0:
        return float("inf")
    return float(eigenvalues[-1] / eigenvalues[0])


def gd_least_squares(X, y, lr, steps, w0=None):
    """Plain (full-batch) gradient descent on the least-squares loss.

    Minimizes ``L(w) = ||X w - y||^2 / (2N)``, whose gradient is
    ``X.T @ (X w - y) / N``, with the update ``w <- w - lr * grad``.

    Parameters
    ----------
    X : np.ndarray, shape (N, D)
        Design matrix with ``N >= 1`` rows.
    y : np.ndarray, shape (N,)
        Targets.
    lr : float
        Learning rate (step size).
    steps : int
        Number of gradient steps, ``>= 0``.
    w0 : np.ndarray, shape (D,), optional
        Starting point; ``None`` means zeros. It is not modified.

    Returns
    -------
    w : np.ndarray, shape (D,)
        The weights after ``steps`` updates, in the floating dtype of ``X``.
    losses : np.ndarray, shape (steps + 1,)
        ``losses[t]`` is the loss before update ``t`` (``losses[0]`` at ``w0``), and
        ``losses[steps]`` the loss after the last update.

    Raises
    ------
    ValueError
        If the shapes of ``X``, ``y`` and ``w0`` do not match, or ``steps < 0``.
    """
    X = np.asarray(X)
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)
    X = X.astype(dtype, copy=False)
    if X.ndim != 2:
        raise ValueError(f"gd_least_squares expects X of shape (N, D), got an array of shape {X.shape}")
    N, D = X.shape
    if N < 1:
        raise ValueError(f"gd_least_squares needs at least one sample, got X of shape {X.shape}")
    y = np.asarray(y).astype(dtype, copy=False)
    if y.shape != (N,):
        raise ValueError(f"y must have shape ({N},) to match X of shape {X.shape}, got shape {y.shape}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    steps = int(steps)
    lr = float(lr)  # a Python float keeps the dtype of w (NumPy's weak scalars)
    if w0 is None:
        w = np.zeros(D, dtype=dtype)
    else:
        w = np.array(w0, dtype=dtype)  # a copy: w0 is never modified
        if w.shape != (D,):
            raise ValueError(f"w0 must have shape ({D},) to match X of shape {X.shape}, got shape {w.shape}")
    losses = np.empty(steps + 1, dtype=dtype)
    for t in range(steps + 1):
        residual = X @ w - y
        losses[t] = residual @ residual / (2 * N)
        if t == steps:
            break
        grad = X.T @ residual / N
        w = w - lr * grad
    return w, losses
