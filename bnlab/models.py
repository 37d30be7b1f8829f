"""Model helpers for the experiments of chapter 4.

The network itself is the course's ``make_cnn`` (the reference lives in
``solutions/ch04_cnn.py``; a chapter may pass the student's own). This module only changes a
built model:

- :func:`replace_batchnorm` swaps every ``nn.BatchNorm2d`` for another module (the student's
  ``BatchNorm2d``, a module around ``BatchNormFunction``, or a float32 wrapper for mixed
  precision), copying parameters and running statistics;
- :class:`FunctionBatchNorm2d` turns an autograd ``Function`` for training-mode BN into a layer
  with running statistics;
- :class:`Float32BatchNorm` runs a BN layer in float32 inside an autocast region;
- :func:`scale_init` draws the convolution weights from He's initialization times a factor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def replace_batchnorm(model: nn.Module, factory: Callable[[nn.BatchNorm2d], nn.Module],
                      copy_state: bool = True) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``model`` (in place) by ``factory(old_layer)``.

    Parameters
    ----------
    model : nn.Module
        Modified in place; also returned.
    factory : callable
        Called with the old layer, returns the new module.
    copy_state : bool
        Load the old layer's ``state_dict`` into the new module (parameters and running
        statistics), so the swapped model computes the same function. Needs equal keys.

    Returns
    -------
    nn.Module
        ``model``.

    Raises
    ------
    ValueError
        If ``model`` itself is a BatchNorm2d (there is no parent to put the new layer into),
        or if ``copy_state`` is set and the new module's state dict has different keys.
    """
    if isinstance(model, nn.BatchNorm2d):
        raise ValueError("replace_batchnorm replaces layers inside a model; call factory(model) directly")
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            new = factory(child)
            try:
                ref = next(iter(child.parameters()))
                new = new.to(device=ref.device, dtype=ref.dtype)
            except StopIteration:
                pass
            if copy_state:
                old_keys, new_keys = list(child.state_dict()), list(new.state_dict())
                if old_keys != new_keys:
                    raise ValueError(
                        f"cannot copy the state of {name}: nn.BatchNorm2d has keys {old_keys}, "
                        f"the new module {type(new).__name__} has {new_keys}")
                new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(model, name, new)
        else:
            replace_batchnorm(child, factory, copy_state)
    return model


def count_modules(model: nn.Module, kind: type) -> int:
    """How many submodules of ``model`` are instances of ``kind``."""
    return sum(isinstance(m, kind) for m in model.modules())


class FunctionBatchNorm2d(nn.Module):
    """A BN layer whose training-mode computation is an autograd ``Function``.

    Training mode: ``function.apply(x, weight, bias, eps)`` (for example the course's
    ``BatchNormFunction``, whose backward is written by hand), then PyTorch's own kernels
    update the running statistics (momentum 0.1, unbiased running variance). Eval mode:
    PyTorch's BN with the running statistics. Only the training-mode normalization is
    ``function``'s: the layer around it is PyTorch's, so a comparison of the two measures the
    function alone. Parameters, buffers and ``state_dict`` keys are those of ``nn.BatchNorm2d``.
    """

    def __init__(self, num_features: int, function, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.function = function
        # The settings, parameters and buffers of nn.BatchNorm2d, in its order (its state_dict keys).
        layer = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.num_features, self.eps, self.momentum = layer.num_features, layer.eps, layer.momentum
        for name, parameter in layer.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in layer.named_buffers(recurse=False):
            self.register_buffer(name, buffer)

    def extra_repr(self) -> str:
        name = getattr(self.function, "__name__", type(self.function).__name__)
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, function={name}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            out = self.function.apply(x, self.weight, self.bias, self.eps)
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked.item()) if self.momentum is None
                          else float(self.momentum))
                # The ATen operation nn.BatchNorm2d's kernels use: statistics only, no output.
                torch.batch_norm_update_stats(x.detach().to(self.running_mean.dtype), self.running_mean,
                                              self.running_var, factor)
            return out
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class Float32BatchNorm(nn.Module):
    """Run a BN layer in float32 even inside an autocast (bf16/fp16) region.

    Autocast runs convolutions in the low precision but does not list ``batch_norm`` among
    the operations it promotes to float32: BN would receive bfloat16 activations (its
    parameters and running statistics stay float32, and the kernels accumulate in float32,
    but the normalized output is rounded to bfloat16). This wrapper casts the input to
    float32 and disables autocast for the layer, as fast training scripts keep BN in float32.
    ``state_dict`` keys are those of the wrapped layer prefixed by ``bn.``.
    """

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.bn(x.float())


def keep_batchnorm_float32(model: nn.Module) -> nn.Module:
    """Wrap every ``nn.BatchNorm2d`` of ``model`` in :class:`Float32BatchNorm` (in place)."""
    return replace_batchnorm(model, Float32BatchNorm, copy_state=False)


def scale_init(model: nn.Module, scale: float, generator: torch.Generator | None = None) -> nn.Module:
    """Draw every convolution's weight from He's normal initialization times ``scale``.

    ``W ~ scale * N(0, 2 / fan_in)`` with ``fan_in = C_in * kH * kW`` (He et al. 2015, for
    ReLU networks); convolution biases are set to zero. Other layers keep their
    initialization. Without BN a factor ``s`` on each of ``L`` convolutions scales the logits
    by about ``s**L``; with BN the forward pass does not depend on ``s`` at all.

    Returns
    -------
    nn.Module
        ``model``, modified in place.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                std = scale * (2.0 / fan_in) ** 0.5
                noise = torch.randn(module.weight.shape, generator=generator, dtype=module.weight.dtype)
                module.weight.copy_(noise.to(module.weight.device) * std)
                if module.bias is not None:
                    module.bias.zero_()
    return model
