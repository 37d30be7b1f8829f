"""Reference solutions for chapter 5: does BN reduce internal covariate shift? (PyTorch).

Exercises
---------
ics_metrics
    l2 distance and cosine similarity between two gradients (Santurkar et al.
    2018, Definition 2.1 and Fig. 3).
measure_ics
    Internal covariate shift of one layer measured through gradients: the
    gradient G of the layer's weight before, and G' after, the earlier layers
    take one SGD step on the same mini-batch.
landscape_along_gradient
    Loss and gradient along the gradient direction: loss variation, gradient
    predictiveness and effective beta-smoothness (Santurkar et al. Sec. 3.2).
NoisyBatchNorm2d
    BN followed by the random, per-step distributional shift of Santurkar et
    al. Algorithm 1 (App. A.2.1), "noisy BN".

All model-probing functions evaluate the model *functionally*
(``torch.func.functional_call``) on copies of its parameters and buffers: the
model's parameters, buffers (BN running statistics included), ``.grad``
attributes and train/eval modes are never touched, and the global random
number generators are left as they were.
"""

import math

import torch
from torch import nn


def ics_metrics(G, G_prime):
    """Distance and cosine similarity between two gradients of the same weight.

    Parameters
    ----------
    G : torch.Tensor or array_like, any shape S
        Gradient before the update of the earlier layers.
    G_prime : torch.Tensor or array_like, shape S
        Gradient after the update (same shape as ``G``).

    Returns
    -------
    l2 : float
        ``||G - G'||_2`` over the flattened tensors (Santurkar et al.'s ICS).
    cosine : float
        ``<G, G'> / (||G||_2 ||G'||_2)`` in [-1, 1]. Zero vectors, where the
        ratio is undefined, are handled as follows (a choice of this course):
        both zero gives 1.0 (identical gradients: no shift); exactly one zero
        gives 0.0 (no shared direction).

    Raises
    ------
    ValueError
        If the shapes differ.

    Notes
    -----
    Both inputs are flattened and converted to float64 before the reductions,
    so the results do not depend on the inputs' float precision beyond their
    rounding. The inputs are not modified.
    """
    G = torch.as_tensor(G).detach()
    G_prime = torch.as_tensor(G_prime).detach()
    if tuple(G.shape) != tuple(G_prime.shape):
        raise ValueError(f"G and G_prime must have the same shape, got {tuple(G.shape)} and {tuple(G_prime.shape)}")
    a = G.reshape(-1).to(dtype=torch.float64)
    b = G_prime.reshape(-1).to(device=a.device, dtype=torch.float64)
    l2 = float(torch.linalg.vector_norm(a - b))
    norm_a = float(torch.linalg.vector_norm(a))
    norm_b = float(torch.linalg.vector_norm(b))
    if norm_a == 0.0 and norm_b == 0.0:
        return l2, 1.0
    if norm_a == 0.0 or norm_b == 0.0:
        return l2, 0.0
    cosine = float(torch.dot(a, b)) / (norm_a * norm_b)
    return l2, min(1.0, max(-1.0, cosine))


def measure_ics(model, layer, x, y, loss_fn, lr):
    """Internal covariate shift of one layer, measured through gradients.

    Santurkar et al. (2018), Definition 2.1, for one mini-batch ``(x, y)``::

        G  = grad_{W_i} L(W_1,  ..., W_{i-1},  W_i, ..., W_k; x, y)
        G' = grad_{W_i} L(W_1', ..., W_{i-1}', W_i, ..., W_k; x, y)
        W_j' = W_j - lr * grad_{W_j} L(W_1, ..., W_k; x, y)   (j < i)

    and returns ``ics_metrics(G, G')``: the ICS ``||G - G'||_2`` and the
    cosine between G and G'.

    Choices made here (the paper leaves them open):

    * **Weighted layers.** ``layer`` indexes the list of modules of type
      ``nn.Linear``, ``nn.Conv1d/2d/3d`` or ``nn.ConvTranspose1d/2d/3d``
      (subclasses included) that have a ``weight`` parameter, in the order of
      ``model.modules()`` (registration order, which is the forward order for
      an ``nn.Sequential``). BatchNorm (and other normalization) layers are
      *not* weighted layers: their gamma is not a "W_i". Negative indices count
      from the end, as for Python lists.
    * **What the SGD step moves.** Every trainable parameter (``requires_grad``)
      registered *before* ``layers[layer].weight`` in ``model.parameters()``
      order: the weights and biases of all earlier weighted layers and also
      the affine parameters (gamma, beta) of the BN layers of earlier blocks,
      following Santurkar et al.'s "update all parameters of layers
      1, ..., i-1", a BN layer belonging to the block of the convolution it
      follows. The layer's own bias and everything after it stay fixed.
      Frozen parameters never move; parameters that receive no gradient are
      treated as having gradient zero.
    * **Mode and randomness.** Both forward passes run in the model's current
      mode (call ``model.train()`` first for the paper's setting; in training
      mode BN uses the batch statistics). The global CPU/CUDA random state is
      reset to the same value before each pass, so dropout masks and
      noisy-BN noise drawn from the global generator are identical in both
      passes (noise from a module's own ``torch.Generator`` is not controlled),
      and the global random state is restored afterwards.
    * **The model is unchanged.** The passes use ``torch.func.functional_call``
      with copies of the parameters and buffers: parameters, buffers (running
      statistics, ``num_batches_tracked``), ``.grad`` and modes are untouched.

    Parameters
    ----------
    model : nn.Module
        The network; ``model(x)`` gives the prediction passed to ``loss_fn``.
    layer : int
        Index into the model's ordered list of weighted layers.
    x : torch.Tensor, shape (N, ...)
        Input mini-batch, on the model's device.
    y : torch.Tensor, shape (N, ...)
        Targets, as ``loss_fn`` expects them.
    loss_fn : callable
        ``loss_fn(model(x), y)`` returns a scalar loss tensor.
    lr : float
        Learning rate of the SGD step on the earlier layers.

    Returns
    -------
    l2 : float
        ``||G - G'||_2``.
    cosine : float
        Cosine similarity of G and G' (see :func:`ics_metrics`).

    Raises
    ------
    IndexError
        If ``layer`` is out of range.
    ValueError
        If the model has no weighted layer, if the selected weight does not
        require gradients, or if the loss is not a scalar.
    TypeError
        If ``layer`` is not an integer.
    """
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
             nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    weighted = [m for m in model.modules()
                if isinstance(m, kinds) and isinstance(getattr(m, "weight", None), nn.Parameter)]
    if not weighted:
        raise ValueError("the model has no weighted layer (nn.Linear / nn.Conv* with a weight)")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    if not -len(weighted) <= layer < len(weighted):
        raise IndexError(f"layer {layer} out of range: the model has {len(weighted)} weighted layers")
    target = weighted[layer].weight
    if not target.requires_grad:
        raise ValueError("the weight of the selected layer does not require gradients")

    named = list(model.named_parameters())
    position = next(k for k, (_, p) in enumerate(named) if p is target)
    earlier = [(name, p) for name, p in named[:position] if p.requires_grad]
    buffers = dict(model.named_buffers())
    cuda_devices = sorted({t.get_device() for t in [*model.parameters(), *buffers.values(), x]
                           if torch.is_tensor(t) and t.is_cuda})

    with torch.random.fork_rng(devices=cuda_devices):
        cpu_state = torch.get_rng_state()
        cuda_states = [torch.cuda.get_rng_state(d) for d in cuda_devices]
        grads, earlier_grads = [], []
        for step in range(2):
            torch.set_rng_state(cpu_state)
            for d, state in zip(cuda_devices, cuda_states):
                torch.cuda.set_rng_state(state, d)
            tensors = {name: b.detach().clone() for name, b in buffers.items()}
            tensors.update({name: p for name, p in named})
            if step == 1:  # one SGD step on the earlier parameters only
                for (name, p), g in zip(earlier, earlier_grads):
                    tensors[name] = (p.detach() - lr * g).requires_grad_(True)
            with torch.enable_grad():
                loss = loss_fn(torch.func.functional_call(model, tensors, (x,)), y)
                if loss.numel() != 1:
                    raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
                wrt = [target] + ([tensors[name] for name, _ in earlier] if step == 0 else [])
                result = torch.autograd.grad(loss.reshape(()), wrt, allow_unused=True)
            result = [torch.zeros_like(t) if g is None else g.detach() for t, g in zip(wrt, result)]
            grads.append(result[0])
            if step == 0:
                earlier_grads = result[1:]
    return ics_metrics(grads[0], grads[1])


def landscape_along_gradient(model, x, y, loss_fn, lr, multipliers):
    """Loss and gradient along the gradient direction (Santurkar et al. Sec. 3.2).

    Let ``w`` be all trainable parameters of ``model`` (every parameter with
    ``requires_grad``, BN gamma/beta included) and ``g = grad L(w)`` on the
    mini-batch ``(x, y)``. For each multiplier ``c`` the step
    ``delta_c = c * lr * g`` is taken and, at ``w_c = w - delta_c``::

        losses[k]         = L(w_c)                                (loss landscape)
        grad_distances[k] = ||grad L(w_c) - g||_2                 (gradient predictiveness)
        beta_smoothness   = max_k ||grad L(w_c) - g||_2 / ||delta_c||_2

    Norms are taken over all trainable parameters concatenated (computed in
    float64). Santurkar et al. use multipliers in [1/2, 4] for their VGG.

    Choices made here: all passes run in the model's current mode (in
    training mode BN uses batch statistics, as in the paper); the global
    CPU/CUDA random state is reset to the same value before every pass (same
    dropout masks / global-generator noise at every point) and restored
    afterwards; steps of length zero (``c == 0`` or ``g == 0``) are left out of
    the maximum, and ``beta_smoothness`` is ``nan`` when no step has positive
    length. The model is evaluated with ``torch.func.functional_call`` on
    copies of its parameters and buffers, so it is unchanged afterwards
    (parameters, buffers, ``.grad``, modes).

    Parameters
    ----------
    model : nn.Module
        The network; ``model(x)`` is passed to ``loss_fn``.
    x : torch.Tensor, shape (N, ...)
        Input mini-batch, on the model's device.
    y : torch.Tensor, shape (N, ...)
        Targets.
    loss_fn : callable
        ``loss_fn(model(x), y)`` returns a scalar loss tensor.
    lr : float
        Learning rate; the step for multiplier ``c`` is ``c * lr * g``.
    multipliers : sequence of float, length K
        Step multipliers ``c``; ``0`` gives the current point.

    Returns
    -------
    result : dict
        ``"losses"``: list of K floats, ``L(w - c * lr * g)``;
        ``"grad_distances"``: list of K floats, ``||grad L(w - c * lr * g) - g||_2``;
        ``"beta_smoothness"``: float, the maximum ratio defined above.

    Raises
    ------
    ValueError
        If the model has no trainable parameter or the loss is not a scalar.
    """
    multipliers = [float(c) for c in multipliers]
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameter")
    buffers = dict(model.named_buffers())
    cuda_devices = sorted({t.get_device() for t in [*model.parameters(), *buffers.values(), x]
                           if torch.is_tensor(t) and t.is_cuda})

    with torch.random.fork_rng(devices=cuda_devices):
        cpu_state = torch.get_rng_state()
        cuda_states = [torch.cuda.get_rng_state(d) for d in cuda_devices]
        g = None
        losses, distances, ratios = [], [], []
        for c in [None] + multipliers:  # None: the current point, to get g
            torch.set_rng_state(cpu_state)
            for d, state in zip(cuda_devices, cuda_states):
                torch.cuda.set_rng_state(state, d)
            tensors = {name: b.detach().clone() for name, b in buffers.items()}
            if c is None:
                point = [p.detach().clone().requires_grad_(True) for _, p in named]
            else:
                point = [(p.detach() - (c * lr) * gp).requires_grad_(True) for (_, p), gp in zip(named, g)]
            tensors.update({name: t for (name, _), t in zip(named, point)})
            with torch.enable_grad():
                loss = loss_fn(torch.func.functional_call(model, tensors, (x,)), y)
                if loss.numel() != 1:
                    raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
                grad = torch.autograd.grad(loss.reshape(()), point, allow_unused=True)
            grad = [torch.zeros_like(t) if gp is None else gp.detach() for t, gp in zip(point, grad)]
            if c is None:
                g = grad
                g_norm = math.sqrt(sum(float(gp.double().pow(2).sum()) for gp in g))
                continue
            dist = math.sqrt(sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(grad, g)))
            losses.append(float(loss.detach()))
            distances.append(dist)
            step = abs(c) * lr * g_norm
            if step > 0:
                ratios.append(dist / step)
    beta = max(ratios) if ratios else float("nan")
    return {"losses": losses, "grad_distances": distances, "beta_smoothness": beta}


class NoisyBatchNorm2d(nn.Module):
    """BN followed by Santurkar et al.'s random distributional shift ("noisy BN").

    Santurkar et al. (2018), Sec. 2.1 and Algorithm 1 (App. A.2.1): after BN,
    in training mode, at every step and for every channel ``j``::

        mu_j    ~ U(-n_mu, n_mu)          sigma_j ~ U(1, n_sigma)
        for every sample n and position (h, w):
            m ~ U(mu_j - r_mu, mu_j + r_mu)      s ~ N(sigma_j, r_sigma)
            out[n, j, h, w] = s * bn(x)[n, j, h, w] + m

    so each channel's output distribution gets a random mean shift of about
    ``mu_j`` and a random scale of about ``sigma_j`` that change every step,
    while BN still normalizes the input.

    Choices made here (the paper leaves them open):

    * A "step" is one training-mode forward call: ``mu`` and ``sigma`` are
      redrawn at every call, ``m`` and ``s`` for every element.
    * A "unit" of a convolutional layer is a channel; height and width count
      as batch dimensions (as the paper states), so ``m`` and ``s`` are drawn
      independently for every (n, h, w).
    * ``r_sigma`` is the *standard deviation* of the normal distribution of
      ``s`` (the paper writes ``N(sigma, r_sigma)``).
    * The noise is a constant of the step: gradients flow through
      ``s * bn(x)`` to the BN input and parameters, not into the noise.
    * The BN part is a plain ``nn.BatchNorm2d``; its running statistics are
      those of the clean BN output, so eval mode is exactly ``nn.BatchNorm2d``
      in eval mode (no noise).
    * Randomness comes from ``generator`` when one is given (noise drawn on the
      generator's device, then moved to the input's device), otherwise from the
      global generator on the input's device.

    Parameters
    ----------
    num_features : int
        Number of channels C of the input of shape (N, C, H, W).
    eps : float, optional
        BN's eps. Default 1e-5.
    momentum : float, optional
        BN's running-average momentum (PyTorch convention). Default 0.1.
    n_mu : float, optional
        Range of the per-channel mean shift ``mu_j``. Default 0.5.
    n_sigma : float, optional
        Upper end of the per-channel scale ``sigma_j``, at least 1. Default 1.25.
    r_mu : float, optional
        Half-width of the per-element uniform shift around ``mu_j``. Default 0.1.
    r_sigma : float, optional
        Standard deviation of the per-element scale around ``sigma_j``. Default 0.1.
    generator : torch.Generator or None, optional
        Source of the noise, for reproducibility. Default None (global RNG).

    Attributes
    ----------
    bn : nn.BatchNorm2d
        The BN layer. ``state_dict`` keys are therefore ``bn.weight``,
        ``bn.bias``, ``bn.running_mean``, ``bn.running_var`` and
        ``bn.num_batches_tracked`` (the noise has no state; the generator is
        not part of the ``state_dict``).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, n_mu=0.5, n_sigma=1.25,
                 r_mu=0.1, r_sigma=0.1, generator=None):
        """Create the BN layer and store the noise constants.

        Parameters
        ----------
        num_features : int
            Number of channels C.
        eps : float, optional
            BN's eps. Default 1e-5.
        momentum : float, optional
            BN's momentum. Default 0.1.
        n_mu, n_sigma, r_mu, r_sigma : float, optional
            Noise constants of Algorithm 1; defaults 0.5, 1.25, 0.1, 0.1.
        generator : torch.Generator or None, optional
            Random number generator for the noise. Default None.

        Raises
        ------
        ValueError
            If ``n_mu``, ``r_mu`` or ``r_sigma`` is negative or ``n_sigma < 1``.
        """
        super().__init__()
        if n_mu < 0 or r_mu < 0 or r_sigma < 0:
            raise ValueError("n_mu, r_mu and r_sigma must be non-negative")
        if n_sigma < 1:
            raise ValueError(f"n_sigma must be at least 1, got {n_sigma}")
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.n_mu = float(n_mu)
        self.n_sigma = float(n_sigma)
        self.r_mu = float(r_mu)
        self.r_sigma = float(r_sigma)
        self.generator = generator

    def extra_repr(self):
        """Show the noise constants in ``repr(module)``.

        Returns
        -------
        str
            For example ``"n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1"``.
        """
        return f"n_mu={self.n_mu}, n_sigma={self.n_sigma}, r_mu={self.r_mu}, r_sigma={self.r_sigma}"

    def forward(self, x):
        """Apply BN, then (training mode only) the random shift and scale.

        Parameters
        ----------
        x : torch.Tensor, shape (N, C, H, W)
            Input.

        Returns
        -------
        out : torch.Tensor, shape (N, C, H, W)
            Training mode: ``s * bn(x) + m`` with fresh noise ``s``, ``m`` of
            shape (N, C, H, W) (see the class docstring). Eval mode: ``bn(x)``.
        """
        a = self.bn(x)
        if not self.training:
            return a
        N, C, H, W = a.shape
        device = self.generator.device if self.generator is not None else a.device
        kw = {"generator": self.generator, "device": device, "dtype": a.dtype}
        mu = (2 * torch.rand(C, **kw) - 1) * self.n_mu
        sigma = 1 + torch.rand(C, **kw) * (self.n_sigma - 1)
        m = mu.reshape(1, C, 1, 1) + (2 * torch.rand(N, C, H, W, **kw) - 1) * self.r_mu
        s = sigma.reshape(1, C, 1, 1) + self.r_sigma * torch.randn(N, C, H, W, **kw)
        return s.to(a.device) * a + m.to(a.device)
