"""Reference solutions for chapter 4: Batch Normalization in a CNN (PyTorch).

Exercises
---------
BatchNorm2d
    A drop-in replacement for :class:`torch.nn.BatchNorm2d` built from tensor
    operations (``mean``, ``var``, ``sqrt``, ...), with the same parameters,
    buffers, ``state_dict`` keys, outputs and gradients in train and eval mode.
BatchNormFunction
    A :class:`torch.autograd.Function` for training-mode BN on (N, C, H, W)
    tensors whose ``backward`` is the compact closed-form gradient, written by
    hand without autograd.
make_cnn
    The Fashion-MNIST CNN used throughout the chapter, with or without BN.
evaluate
    Test accuracy of a model in eval mode, restoring the model's previous mode.

Conventions: statistics of a (N, C, H, W) tensor are taken per channel over the
N * H * W values of that channel; the *biased* variance normalizes, the
*unbiased* variance (divisor N * H * W - 1) enters ``running_var``; running
statistics follow PyTorch's momentum convention
``new = (1 - momentum) * old + momentum * batch_stat``.
"""

import torch
from torch import nn


class BatchNorm2d(nn.Module):
    """Batch Normalization over the channels of a 4-D input, from tensor operations.

    Same interface and numerics as ``torch.nn.BatchNorm2d(num_features, eps,
    momentum)`` with ``affine=True`` and ``track_running_stats=True``.

    Parameters
    ----------
    num_features : int
        Number of channels C of the expected input of shape (N, C, H, W).
    eps : float, optional
        Added to the variance inside the square root, ``sqrt(var + eps)``.
        Default 1e-5.
    momentum : float or None, optional
        Weight of the new batch statistic in the running averages:
        ``running = (1 - momentum) * running + momentum * batch_stat``.
        ``None`` gives a cumulative (equal-weight) average over all batches
        seen, as in PyTorch. Default 0.1.

    Attributes
    ----------
    weight : nn.Parameter, shape (C,)
        gamma, initialized to ones.
    bias : nn.Parameter, shape (C,)
        beta, initialized to zeros.
    running_mean : buffer, shape (C,)
        Initialized to zeros.
    running_var : buffer, shape (C,)
        Unbiased running variance, initialized to ones.
    num_batches_tracked : buffer, shape (), dtype torch.long
        Number of training-mode forward passes, initialized to 0.

    Notes
    -----
    ``state_dict`` keys are, in this order, ``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked`` -- exactly those
    of ``torch.nn.BatchNorm2d`` -- so state dicts load in both directions.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        """Create the parameters (gamma = 1, beta = 0) and the running buffers.

        Parameters
        ----------
        num_features : int
            Number of channels C.
        eps : float, optional
            Numerical-stability constant inside the square root. Default 1e-5.
        momentum : float or None, optional
            Running-average momentum (PyTorch convention). Default 0.1.
        """
        super().__init__()
        if int(num_features) != num_features or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        # Registration order fixes the state_dict order: parameters first, then buffers.
        self.weight = nn.Parameter(torch.ones(self.num_features))
        self.bias = nn.Parameter(torch.zeros(self.num_features))
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self):
        """Reset ``running_mean`` to 0, ``running_var`` to 1 and ``num_batches_tracked`` to 0.

        Returns
        -------
        None
        """
        with torch.no_grad():
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        """Reset the running statistics and set ``weight`` to 1 and ``bias`` to 0.

        Returns
        -------
        None
        """
        self.reset_running_stats()
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def extra_repr(self):
        """Describe the layer in ``repr(module)``, like ``torch.nn.BatchNorm2d``.

        Returns
        -------
        str
            For example ``"32, eps=1e-05, momentum=0.1"``.
        """
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x):
        """Normalize ``x`` per channel and apply the affine map ``gamma * x_hat + beta``.

        Training mode: normalize with the batch mean and the *biased* batch
        variance over (N, H, W); gradients flow through both statistics; then,
        without recording gradients, update ``running_mean`` with the batch mean,
        ``running_var`` with the *unbiased* batch variance (divisor
        N * H * W - 1), and increment ``num_batches_tracked``.
        Eval mode: normalize with ``running_mean`` and ``running_var``; nothing
        is updated.

        Parameters
        ----------
        x : torch.Tensor, shape (N, C, H, W)
            Floating-point input; C must equal ``num_features``.

        Returns
        -------
        out : torch.Tensor, shape (N, C, H, W)
            ``weight * (x - mean) / sqrt(var + eps) + bias`` with ``weight``,
            ``bias``, ``mean`` and ``var`` broadcast as (1, C, 1, 1).

        Raises
        ------
        ValueError
            If ``x`` is not 4-D, if its channel count differs from
            ``num_features``, or if in training mode a channel has a single
            value (N * H * W == 1), where the variance is undefined.
        """
        if x.dim() != 4:
            raise ValueError(f"expected 4D input of shape (N, C, H, W) (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input with {self.num_features} channels (dimension 1), "
                f"got input of shape {tuple(x.shape)}"
            )
        shape = (1, self.num_features, 1, 1)
        if self.training:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            if count <= 1:
                raise ValueError(
                    "Expected more than 1 value per channel when training, "
                    f"got input size {tuple(x.shape)}"
                )
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), correction=0)  # biased: used to normalize
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                if self.momentum is None:  # cumulative moving average
                    factor = 1.0 / float(self.num_batches_tracked.item())
                else:
                    factor = float(self.momentum)
                unbiased_var = var.detach() * (count / (count - 1))
                self.running_mean.mul_(1.0 - factor).add_(factor * mean.detach().to(self.running_mean.dtype))
                self.running_var.mul_(1.0 - factor).add_(factor * unbiased_var.to(self.running_var.dtype))
        else:
            mean = self.running_mean
            var = self.running_var
        x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        return self.weight.reshape(shape) * x_hat + self.bias.reshape(shape)


class BatchNormFunction(torch.autograd.Function):
    """Training-mode Batch Normalization with a hand-written compact backward pass.

    Use as ``BatchNormFunction.apply(x, gamma, beta, eps)`` with ``x`` of shape
    (N, C, H, W) and ``gamma``, ``beta`` of shape (C,). Statistics are always
    the batch statistics (training mode); running statistics are not tracked.

    ``forward`` saves what ``backward`` needs with ``ctx.save_for_backward``;
    ``backward`` returns one gradient per input of ``forward`` (``None`` for
    ``eps``) from chapter 3's compact formula, with the ``M = N * H * W`` values of
    a channel in the role of chapter 3's ``N`` rows (biased variance).

    Implementation note
    -------------------
    Per channel (sums over N, H, W), with ``inv_std = 1 / sqrt(var + eps)``::

        dbeta  = sum(dout)
        dgamma = sum(dout * x_hat)
        dx     = gamma * inv_std / M * (M * dout - dbeta - x_hat * dgamma)
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        """Normalize ``x`` with its per-channel batch statistics and save what backward needs.

        Parameters
        ----------
        ctx : torch.autograd.function.FunctionCtx
            Context object; ``x_hat``, ``gamma`` and ``inv_std`` are saved on it.
        x : torch.Tensor, shape (N, C, H, W)
            Input.
        gamma : torch.Tensor, shape (C,)
            Scale.
        beta : torch.Tensor, shape (C,)
            Shift.
        eps : float
            Added to the biased variance inside the square root.

        Returns
        -------
        out : torch.Tensor, shape (N, C, H, W)
            ``gamma * (x - mean) / sqrt(var + eps) + beta`` per channel.

        Raises
        ------
        ValueError
            If ``x`` is not 4-D, if ``gamma`` or ``beta`` is not of shape (C,),
            or if a channel has a single value (N * H * W == 1).
        """
        if x.dim() != 4:
            raise ValueError(f"expected 4D input of shape (N, C, H, W) (got {x.dim()}D input)")
        C = x.shape[1]
        if tuple(gamma.shape) != (C,) or tuple(beta.shape) != (C,):
            raise ValueError(
                f"gamma and beta must have shape ({C},), got {tuple(gamma.shape)} and {tuple(beta.shape)}"
            )
        if x.shape[0] * x.shape[2] * x.shape[3] <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
            )
        shape = (1, C, 1, 1)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), correction=0, keepdim=True)
        inv_std = 1.0 / torch.sqrt(var + eps)
        x_hat = (x - mean) * inv_std
        ctx.save_for_backward(x_hat, gamma, inv_std)
        return gamma.reshape(shape) * x_hat + beta.reshape(shape)

    @staticmethod
    def backward(ctx, dout):
        """Compact closed-form gradients of training-mode BN, computed by hand.

        Parameters
        ----------
        ctx : torch.autograd.function.FunctionCtx
            Context holding ``x_hat`` (N, C, H, W), ``gamma`` (C,) and
            ``inv_std`` (1, C, 1, 1) from ``forward``.
        dout : torch.Tensor, shape (N, C, H, W)
            Upstream gradient with respect to the output.

        Returns
        -------
        dx : torch.Tensor, shape (N, C, H, W) or None
            Gradient with respect to ``x`` (None if ``x`` needs no gradient).
        dgamma : torch.Tensor, shape (C,) or None
            ``sum(dout * x_hat)`` over (N, H, W).
        dbeta : torch.Tensor, shape (C,) or None
            ``sum(dout)`` over (N, H, W).
        None
            ``eps`` gets no gradient.
        """
        x_hat, gamma, inv_std = ctx.saved_tensors
        C = x_hat.shape[1]
        M = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
        dbeta = dout.sum(dim=(0, 2, 3))
        dgamma = (dout * x_hat).sum(dim=(0, 2, 3))
        dx = None
        if ctx.needs_input_grad[0]:
            shape = (1, C, 1, 1)
            dx = (gamma.reshape(shape) * inv_std / M) * (
                M * dout - dbeta.reshape(shape) - x_hat * dgamma.reshape(shape)
            )
        if not ctx.needs_input_grad[1]:
            dgamma = None
        if not ctx.needs_input_grad[2]:
            dbeta = None
        return dx, dgamma, dbeta, None


def make_cnn(use_bn, num_classes=10, in_channels=1, width=32):
    """Build the chapter's Fashion-MNIST CNN, with or without Batch Normalization.

    Architecture (an ``nn.Sequential``; ``w = width``; every convolution is
    3x3 with padding 1)::

        conv(in_channels, w)  [-> BN(w)]  -> ReLU
        conv(w, w)            [-> BN(w)]  -> ReLU -> MaxPool 2x2      28 -> 14
        conv(w, 2w)           [-> BN(2w)] -> ReLU
        conv(2w, 2w)          [-> BN(2w)] -> ReLU -> MaxPool 2x2      14 -> 7
        Flatten -> Linear(2w * 7 * 7, num_classes)

    With ``use_bn`` every convolution is followed by ``nn.BatchNorm2d`` and has
    ``bias=False`` (BN's beta makes a bias redundant); without it there is no
    BN layer anywhere and every convolution has ``bias=True``. The final
    ``Linear`` always has a bias. PyTorch's default initialization is used.
    With the defaults the network has about 9.7e4 parameters.

    Parameters
    ----------
    use_bn : bool
        Insert BN after every convolution.
    num_classes : int, optional
        Number of output logits. Default 10.
    in_channels : int, optional
        Channels of the input images. Default 1 (grayscale).
    width : int, optional
        Channels of the first two convolutions; the last two have ``2 * width``.
        Default 32.

    Returns
    -------
    model : nn.Sequential
        Maps input of shape (N, in_channels, 28, 28) to logits of shape
        (N, num_classes).
    """
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    layers = []
    channels = [(in_channels, width), (width, width), (width, 2 * width), (2 * width, 2 * width)]
    for i, (c_in, c_out) in enumerate(channels):
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=not use_bn))
        if use_bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU())
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
    layers.append(nn.Flatten())
    layers.append(nn.Linear(2 * width * 7 * 7, num_classes))
    return nn.Sequential(*layers)


def evaluate(model, X, y, batch_size=1000):
    """Classification accuracy of ``model`` on ``(X, y)``, computed in eval mode.

    The model is switched to eval mode (BN uses its running statistics,
    dropout is off), predictions are made batch by batch under
    ``torch.no_grad()``, and the previous mode of the model and of each of
    its submodules is restored afterwards, also when an exception is raised.
    Batches are moved to the device of the model's parameters (and
    floating-point inputs are cast to their dtype).

    Parameters
    ----------
    model : nn.Module
        Maps a batch of shape (B, ...) to logits of shape (B, num_classes).
    X : torch.Tensor or array_like, shape (N, ...)
        Inputs, e.g. (N, 1, 28, 28).
    y : torch.Tensor or array_like, shape (N,)
        Integer class labels.
    batch_size : int, optional
        Number of examples per forward pass. Default 1000.

    Returns
    -------
    accuracy : float
        Fraction of examples whose arg-max logit equals the label, in [0, 1].

    Raises
    ------
    ValueError
        If ``X`` is empty, if ``X`` and ``y`` have different lengths, or if
        ``batch_size`` is not a positive integer.
    """
    X = torch.as_tensor(X)
    y = torch.as_tensor(y)
    if X.dim() == 0 or X.shape[0] == 0:
        raise ValueError("X must contain at least one example")
    if y.dim() != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    tensors = list(model.parameters()) + list(model.buffers())
    device = tensors[0].device if tensors else X.device
    float_params = [p for p in model.parameters() if p.is_floating_point()]
    dtype = float_params[0].dtype if float_params else None
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        correct = 0
        with torch.no_grad():
            for start in range(0, X.shape[0], batch_size):
                xb = X[start:start + batch_size].to(device)
                if dtype is not None and xb.is_floating_point():
                    xb = xb.to(dtype)
                yb = y[start:start + batch_size].to(device)
                pred = model(xb).argmax(dim=1)
                correct += int((pred == yb).sum().item())
    finally:
        for module, mode in modes:  # restore every submodule's own mode
            module.training = mode
    return correct / X.shape[0]
