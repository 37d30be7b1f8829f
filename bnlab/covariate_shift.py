"""The networks and measurements of chapter 5: does BN reduce internal covariate shift?

Each ``exp_*`` function is one experiment of :mod:`bnlab.experiments` (``results/ch05_<name>.json``):

- :func:`exp_percentiles` — Ioffe & Szegedy's Fig. 1: a sigmoid MLP (3 x 100) with and without
  BN, test accuracy and the {15, 50, 85}th percentiles of one last-layer sigmoid's input;
- :func:`exp_noisy_bn` — Santurkar et al.'s noisy BN (Sec. 2.1): standard, BN, noisy-BN and
  standard+noise CNNs, training accuracy and one channel's activation distribution over training;
- :func:`exp_ics` — ICS through gradients (Definition 2.1) in the CNN at two learning rates and in
  the 25-layer deep linear network;
- :func:`exp_landscape` — loss and gradient along the gradient direction (Sec. 3.2);
- :func:`exp_gamma_beta` — Frankle et al.: frozen random weights, only BN's gamma and beta train;
- :func:`exp_depth_growth` — at initialization: the gradient explosion of deep BN networks without
  skip connections (Yang et al.) and the growth of residual activations without BN (Bjorck et al.).

Every training loop here is SGD at a constant learning rate on random mini-batches drawn from
successive permutations of the training set (:func:`sgd_run`); only the gamma/beta experiment
uses momentum.
The measurements that are exercises of the chapter (``measure_ics``, ``landscape_along_gradient``,
``NoisyBatchNorm2d``) come in as hooks, the course's reference by default.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PERCENTILES = (15, 50, 85)
WIDE_PERCENTILES = (5, 15, 50, 85, 95)


REFERENCE_NAMES = {"noisy_bn": "NoisyBatchNorm2d"}   # hook name -> the reference's name, where they differ


def _reference(name: str):
    from solutions import ch04_cnn, ch05_covariate_shift

    name = REFERENCE_NAMES.get(name, name)
    return getattr(ch05_covariate_shift, name, None) or getattr(ch04_cnn, name)


def _hook(hooks: dict, name: str):
    return hooks.get(name) or _reference(name)


def _round(values, digits: int = 5) -> list:
    return [None if v is None or not math.isfinite(v) else round(float(v), digits) for v in values]


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


# ----------------------------------------------------------------------------------- training


def batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """``steps`` index tensors of ``batch_size`` examples out of ``n``, from successive random
    permutations (an epoch's leftover examples start the next batch's permutation)."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


def sgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, lr: float,
            seed: int = 0, loss_fn=F.cross_entropy, probe=None, every: int = 0, params=None,
            momentum: float = 0.0, progress: bool = False, desc: str = "") -> dict:
    """Train ``model`` in place with SGD at a constant learning rate.

    Parameters
    ----------
    model : nn.Module
        Trained in training mode.
    x, y : torch.Tensor, shapes (N, ...) and (N,)
        Training set on the model's device.
    steps, batch_size, lr : int, int, float
    probe : callable, optional
        ``probe(step, xb, yb)`` is called every ``every`` steps (and after the last step, with
        ``step == steps``) *before* the update of that step, on the step's own batch (the last
        call gets the first batch of a next step). It may measure the model but must leave it
        unchanged.
    params : iterable of parameters, optional
        What the optimizer moves (default: every parameter that requires gradients).

    Returns
    -------
    dict
        ``losses`` (one per step, float32 loss of the step's batch before its update; ``None``
        when not finite), ``diverged`` (a non-finite loss stopped the run) and
        ``diverged_at_step``.
    """
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    model.train()
    losses, diverged_at = [], None
    bar = _progress(steps, desc, progress)
    order = batches(x.shape[0], batch_size, steps + 1, generator)
    for step in range(steps + 1):
        idx = next(order).to(x.device)
        xb, yb = x[idx], y[idx]
        if probe is not None and every and (step % every == 0 or step == steps):
            probe(step, xb, yb)
        if step == steps:
            break
        loss = loss_fn(model(xb), yb)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged_at = step
            losses.append(None)
            break
        losses.append(value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return {"losses": _round(losses), "diverged": diverged_at is not None, "diverged_at_step": diverged_at}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, evaluate=None) -> float:
    """Accuracy in evaluation mode (chapter 4's ``evaluate``; the model's mode is restored)."""
    return round(float((evaluate or _reference("evaluate"))(model, x, y, 1000)), 5)


def subsample(values: list, points: int) -> dict:
    """About ``points`` evenly spaced entries of a per-step curve, with their step numbers."""
    steps = np.unique(np.linspace(0, len(values) - 1, min(points, len(values))).round().astype(int))
    return {"steps": steps.tolist(), "values": [values[k] for k in steps]}


# --------------------------------------------------------------- Ioffe & Szegedy's Fig. 1


def sigmoid_mlp(use_bn: bool, hidden: int = 100, layers: int = 3, in_features: int = 784,
                num_classes: int = 10, init_std: float = 0.1) -> nn.Sequential:
    """Flatten -> ``layers`` x (Linear [-> BatchNorm1d] -> Sigmoid) -> Linear.

    Weights from N(0, init_std^2) ("small random Gaussian values"), biases zero; no bias in the
    linear layers followed by BN (its beta replaces it).
    """
    modules, d = [nn.Flatten()], in_features
    for _ in range(layers):
        linear = nn.Linear(d, hidden, bias=not use_bn)
        modules += [linear, *([nn.BatchNorm1d(hidden)] if use_bn else []), nn.Sigmoid()]
        d = hidden
    modules.append(nn.Linear(d, num_classes))
    for m in modules:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return nn.Sequential(*modules)


def sigmoid_inputs(model: nn.Module, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """The inputs of the sigmoids of hidden layer ``layer`` (negative from the last) for the batch
    ``x``, in the model's current mode, under ``no_grad``: shape (N, hidden)."""
    sigmoids = [m for m in model.modules() if isinstance(m, nn.Sigmoid)]
    captured = []
    handle = sigmoids[layer].register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return captured[0]


def exp_percentiles(cfg, data, device, hooks, progress):
    """Fig. 1 of Ioffe & Szegedy on Fashion-MNIST: both networks, the same batches."""
    # pixels in [0, 1] as in the paper's 28x28 inputs, not standardized
    x_train = (data.x_train * data.std + data.mean).flatten(1)
    x_test = (data.x_test * data.std + data.mean).flatten(1)
    probe_x = x_test[:cfg["probe_size"]]
    runs = []
    for use_bn in (False, True):
        torch.manual_seed(cfg["seed"])
        model = sigmoid_mlp(use_bn, cfg["hidden"], cfg["layers"], init_std=cfg["init_std"]).to(device)
        trace = {"step": [], "test_acc": [], "percentiles": []}

        def probe(step, xb, yb, model=model, trace=trace):
            # the input the sigmoid sees in training: BN with the statistics of the probe images (a copy
            # of the network, so its running statistics stay untouched). Evaluation mode would use the
            # running statistics, which start at (0, 1) and would show the unnormalized input early on.
            z = sigmoid_inputs(copy.deepcopy(model).train(), probe_x)[:, cfg["unit"]].double().cpu().numpy()
            model.eval()
            trace["step"].append(step)
            trace["test_acc"].append(accuracy(model, x_test, data.y_test, hooks.get("evaluate")))
            trace["percentiles"].append(_round(np.percentile(z, PERCENTILES), 4))
            model.train()

        h = sgd_run(model, x_train, data.y_train, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                    seed=cfg["seed"], probe=probe, every=cfg["record_every"], progress=progress,
                    desc=f"sigmoid MLP {'BN' if use_bn else 'no BN'}")
        runs.append({"use_bn": use_bn, **trace, "loss": subsample(h["losses"], cfg["loss_points"]),
                     "diverged": h["diverged"], "final_test_acc": trace["test_acc"][-1]})
    return {"runs": runs, "percentiles": list(PERCENTILES),
            "note": f"input of sigmoid {cfg['unit']} of the last hidden layer on the first {probe_x.shape[0]} test "
                    f"images, in training mode (BN with the statistics of those images; running statistics "
                    f"untouched), before the update of each recorded step; test accuracy in evaluation mode; "
                    f"pixels in [0, 1]; plain SGD at lr {cfg['lr']}, batch {cfg['batch_size']}"}


# --------------------------------------------------------------------- the CNN variants


VARIANTS = ("standard", "bn", "noisy_bn", "standard_noise")
VARIANT_NAMES = {"standard": "standard", "bn": "BN", "noisy_bn": "noisy BN", "standard_noise": "standard + noise"}


def _noise_only(num_features: int) -> nn.Module:
    """Santurkar et al.'s noise without BN: the reference ``NoisyBatchNorm2d`` with its BN part
    replaced by the identity (what "adding the same noise to the standard network" means). It needs
    the course's solutions, so the student kit runs the other variants only."""
    layer = _reference("NoisyBatchNorm2d")(num_features)
    layer.bn = nn.Identity()
    return layer


def make_variant(kind: str, width: int, hooks: dict) -> nn.Module:
    """Chapter 4's CNN as ``standard`` (no BN), ``bn``, ``noisy_bn`` (every BN layer a
    ``NoisyBatchNorm2d``) or ``standard_noise`` (the noise after every convolution, no BN)."""
    from bnlab.models import replace_batchnorm

    if kind not in VARIANTS:
        raise ValueError(f"unknown variant {kind!r}; choose one of {', '.join(VARIANTS)}")
    make_cnn = _hook(hooks, "make_cnn")
    if kind == "standard":
        return make_cnn(False, width=width)
    if kind == "bn":
        return make_cnn(True, width=width)
    if kind == "noisy_bn":
        noisy = _hook(hooks, "noisy_bn")
        return replace_batchnorm(make_cnn(True, width=width), lambda bn: noisy(bn.num_features), copy_state=False)
    model = make_cnn(False, width=width)

    def add_noise(module):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d):
                setattr(module, name, nn.Sequential(child, _noise_only(child.out_channels)))
            else:
                add_noise(child)

    add_noise(model)
    return model


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """The layers with a weight matrix or kernel (``nn.Linear``, ``nn.Conv2d``), in order."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def relu_inputs(model: nn.Module, block: int):
    """A context that captures the input of the ``block``-th ``nn.ReLU`` of ``model`` at every
    forward call: ``with relu_inputs(model, 2) as captured: ...`` (a list, detached)."""
    import contextlib

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]

    @contextlib.contextmanager
    def capture():
        captured = []
        handle = relus[block].register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].detach()))
        try:
            yield captured
        finally:
            handle.remove()

    return capture()


def _probe_keeping_state(model, probe):
    def wrapped(step, xb, yb):
        saved = copy.deepcopy(model.state_dict())
        try:
            probe(step, xb, yb)
        finally:
            model.load_state_dict(saved)
            model.zero_grad(set_to_none=True)

    return wrapped


def exp_noisy_bn(cfg, data, device, hooks, progress):
    """Santurkar et al. Sec. 2.1: does a network whose layer inputs shift on purpose still train?"""
    runs = []
    x_eval, y_eval = data.x_train[:cfg["train_eval_size"]], data.y_train[:cfg["train_eval_size"]]
    for lr in cfg["lrs"]:
        for kind in cfg["variants"]:
            torch.manual_seed(cfg["seed"])
            model = make_variant(kind, cfg["width"], hooks).to(device)
            trace = {"step": [], "train_acc": [], "activation_percentiles": []}
            with relu_inputs(model, cfg["activation_block"]) as captured:
                def probe(step, xb, yb, model=model, trace=trace, captured=captured):
                    trace["step"].append(step)
                    trace["train_acc"].append(accuracy(model, x_eval, y_eval, hooks.get("evaluate")))
                    captured.clear()
                    with torch.no_grad():
                        model(xb)                  # training mode: what the next layer sees at this step
                    a = captured[-1][:, cfg["channel"]].double().cpu().numpy().ravel()
                    trace["activation_percentiles"].append(_round(np.percentile(a, WIDE_PERCENTILES), 4))
                    captured.clear()

                h = sgd_run(model, data.x_train, data.y_train, steps=cfg["steps"], batch_size=cfg["batch_size"],
                            lr=lr, seed=cfg["seed"], probe=_probe_keeping_state(model, probe),
                            every=cfg["record_every"], progress=progress, desc=f"{VARIANT_NAMES[kind]} lr={lr:g}")
            diverged = h["diverged"]
            runs.append({"variant": kind, "lr": lr, **trace, "loss": subsample(h["losses"], cfg["loss_points"]),
                         "diverged": diverged, "diverged_at_step": h["diverged_at_step"],
                         "final_train_acc": None if diverged else trace["train_acc"][-1],
                         "mean_train_acc": None if diverged else round(float(np.mean(trace["train_acc"])), 5),
                         "final_test_acc": None if diverged else accuracy(model, data.x_test, data.y_test,
                                                                          hooks.get("evaluate"))})
    return {"runs": runs, "percentiles": list(WIDE_PERCENTILES),
            "note": f"activations: input of ReLU {cfg['activation_block']} (after BN and the noise), channel "
                    f"{cfg['channel']}, over the (N, H, W) values of the step's training batch in training mode "
                    f"(fresh noise); training accuracy in evaluation mode on {x_eval.shape[0]} training images at "
                    f"every recorded step (mean_train_acc: their mean, a measure of speed); plain SGD, batch "
                    f"{cfg['batch_size']}"}


# ------------------------------------------------------------------- ICS through gradients


def deep_linear_network(use_bn: bool, depth: int = 25, width: int = 10) -> nn.Sequential:
    """``depth`` bias-free ``width x width`` linear layers (Glorot-normal weights), with a
    ``BatchNorm1d`` after every layer but the last when ``use_bn``."""
    modules = []
    for k in range(depth):
        linear = nn.Linear(width, width, bias=False)
        nn.init.xavier_normal_(linear.weight)
        modules.append(linear)
        if use_bn and k < depth - 1:
            modules.append(nn.BatchNorm1d(width))
    return nn.Sequential(*modules)


def half_squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum((prediction - target)^2) / 2`` over the whole batch (the DLN's full-batch loss)."""
    return 0.5 * (prediction - target).pow(2).sum()


def _ics_trace(model, measure_ics, layers, loss_fn, lr):
    trace = {"step": [], "l2": {str(k): [] for k in layers}, "cosine": {str(k): [] for k in layers},
             "grad_norm": {str(k): [] for k in layers}}
    weights = weighted_layers(model)

    def probe(step, xb, yb):
        trace["step"].append(step)
        for k in layers:
            l2, cosine = measure_ics(model, k, xb, yb, loss_fn, lr)
            trace["l2"][str(k)].append(round(float(l2), 6))
            trace["cosine"][str(k)].append(round(float(cosine), 6))
            # ||G|| beside ||G - G'||: the scale the distance is measured against
            grad = torch.autograd.grad(loss_fn(model(xb), yb), weights[k].weight)[0]
            trace["grad_norm"][str(k)].append(round(float(grad.double().norm()), 6))

    return trace, probe


def exp_ics(cfg, data, device, hooks, progress):
    """Definition 2.1 of Santurkar et al. in the CNN (two learning rates) and the deep linear network."""
    measure_ics = _hook(hooks, "measure_ics")
    cnn = []
    for use_bn in (False, True):
        for lr in cfg["lrs"]:
            torch.manual_seed(cfg["seed"])
            model = make_variant("bn" if use_bn else "standard", cfg["width"], hooks).to(device)
            trace, probe = _ics_trace(model, measure_ics, cfg["layers"], F.cross_entropy, lr)
            h = sgd_run(model, data.x_train, data.y_train, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=lr,
                        seed=cfg["seed"], probe=_probe_keeping_state(model, probe), every=cfg["record_every"],
                        progress=progress, desc=f"ICS {'BN' if use_bn else 'standard'} lr={lr:g}")
            cnn.append({"use_bn": use_bn, "lr": lr, **trace, "loss": subsample(h["losses"], cfg["loss_points"]),
                        "diverged": h["diverged"],
                        "final_test_acc": None if h["diverged"] else accuracy(model, data.x_test, data.y_test,
                                                                            hooks.get("evaluate"))})
    # the deep linear network: full-batch gradient descent on a random linear regression
    g = torch.Generator().manual_seed(cfg["seed"])
    width = cfg["dln_width"]
    x = torch.randn(cfg["dln_examples"], width, generator=g, dtype=torch.float64).to(device)
    target_map = torch.randn(width, width, generator=g, dtype=torch.float64).to(device)
    y = x @ target_map.T
    dln = []
    for use_bn in (False, True):
        for lr in cfg["dln_lrs"]:
            torch.manual_seed(cfg["seed"])
            model = deep_linear_network(use_bn, cfg["dln_depth"], width).double().to(device)
            trace, probe = _ics_trace(model, measure_ics, cfg["dln_layers"], half_squared_error, lr)
            h = sgd_run(model, x, y, steps=cfg["dln_steps"], batch_size=x.shape[0], lr=lr, seed=cfg["seed"],
                        loss_fn=half_squared_error, probe=_probe_keeping_state(model, probe),
                        every=cfg["dln_record_every"], progress=progress,
                        desc=f"DLN {'BN' if use_bn else 'standard'} lr={lr:g}")
            dln.append({"use_bn": use_bn, "lr": lr, **trace, "loss": subsample(h["losses"], cfg["loss_points"]),
                        "diverged": h["diverged"]})
    return {"cnn": cnn, "dln": dln,
            "note": "l2 = ||G - G'||_2 and cosine(G, G') of the weight of the given weighted layers (0-based, "
                    "conv1..conv4 then the classifier for the CNN), measured on the step's batch before its "
                    f"update, in training mode; CNN: plain SGD, batch {cfg['batch_size']}; DLN: "
                    f"{cfg['dln_depth']} layers {width}x{width}, {cfg['dln_examples']} examples y = A x, loss "
                    "sum((f(x) - y)^2)/2, full-batch gradient descent, float64"}


# -------------------------------------------------------------------------- the landscape


def exp_landscape(cfg, data, device, hooks, progress):
    """Santurkar et al. Sec. 3.2: loss and gradient along the gradient, with and without BN."""
    landscape = _hook(hooks, "landscape_along_gradient")
    runs = []
    for use_bn in (False, True):
        torch.manual_seed(cfg["seed"])
        model = make_variant("bn" if use_bn else "standard", cfg["width"], hooks).to(device)
        trace = {"step": [], "loss_min": [], "loss_max": [], "grad_distance_min": [], "grad_distance_max": [],
                 "beta_smoothness": []}

        def probe(step, xb, yb, model=model, trace=trace):
            r = landscape(model, xb, yb, F.cross_entropy, cfg["lr"], cfg["multipliers"])
            finite = [v for v in r["losses"] if math.isfinite(v)]
            trace["step"].append(step)
            trace["loss_min"].append(round(min(finite), 5) if finite else None)
            trace["loss_max"].append(round(max(finite), 5) if finite else None)
            dist = [v for v in r["grad_distances"] if math.isfinite(v)]
            trace["grad_distance_min"].append(round(min(dist), 5) if dist else None)
            trace["grad_distance_max"].append(round(max(dist), 5) if dist else None)
            beta = r["beta_smoothness"]
            trace["beta_smoothness"].append(round(beta, 5) if math.isfinite(beta) else None)

        h = sgd_run(model, data.x_train, data.y_train, steps=cfg["steps"], batch_size=cfg["batch_size"],
                    lr=cfg["lr"], seed=cfg["seed"], probe=_probe_keeping_state(model, probe),
                    every=cfg["record_every"], progress=progress, desc=f"landscape {'BN' if use_bn else 'standard'}")
        runs.append({"use_bn": use_bn, **trace, "loss": subsample(h["losses"], cfg["loss_points"]),
                     "diverged": h["diverged"],
                     "final_test_acc": None if h["diverged"] else accuracy(model, data.x_test, data.y_test,
                                                                         hooks.get("evaluate"))})
    return {"runs": runs, "multipliers": list(cfg["multipliers"]),
            "note": f"at every recorded step, on that step's batch in training mode: the points w - c lr g for c in "
                    f"{list(cfg['multipliers'])}, lr {cfg['lr']}; losses, ||grad L(w_c) - g|| and their max ratio "
                    f"to ||c lr g|| (effective beta-smoothness); plain SGD, batch {cfg['batch_size']}"}


# ----------------------------------------------------------- training only gamma and beta


def exp_gamma_beta(cfg, data, device, hooks, progress):
    """Frankle et al.: random, frozen convolutions and classifier; only BN's affine parameters train."""
    runs = []
    for trained in cfg["trained"]:
        torch.manual_seed(cfg["seed"])
        model = make_variant("bn", cfg["width"], hooks).to(device)
        bn_layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if trained == "all":
            params = list(model.parameters())
        elif trained == "bn_only":
            params = [p for m in bn_layers for p in m.parameters()]
        elif trained == "classifier_only":
            params = list(weighted_layers(model)[-1].parameters())
        else:
            raise ValueError(f"unknown choice of trained parameters {trained!r}")
        keep = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        h = sgd_run(model, data.x_train, data.y_train, steps=cfg["steps"], batch_size=cfg["batch_size"],
                    lr=cfg["lrs"][trained], momentum=cfg["momentum"], seed=cfg["seed"], params=params,
                    progress=progress, desc=f"train {trained}")
        gammas = torch.cat([m.weight.detach().abs().flatten().cpu() for m in bn_layers]).double()
        runs.append({"trained": trained, "trainable_parameters": int(sum(p.numel() for p in params)),
                     "total_parameters": int(sum(p.numel() for p in model.parameters())),
                     "lr": cfg["lrs"][trained], "loss": subsample(h["losses"], cfg["loss_points"]),
                     "diverged": h["diverged"],
                     "final_test_acc": None if h["diverged"] else accuracy(model, data.x_test, data.y_test,
                                                                         hooks.get("evaluate")),
                     "small_gamma_fraction": round(float((gammas < cfg["small_gamma"]).double().mean()), 5),
                     "gamma_abs_percentiles": _round(np.percentile(gammas.numpy(), WIDE_PERCENTILES), 4)})
    return {"runs": runs, "chance": 0.1,
            "note": f"chapter 4's BN CNN (width {cfg['width']}); frozen parameters keep their random initialization; "
                    f"SGD with momentum {cfg['momentum']}, batch {cfg['batch_size']}, {cfg['steps']} steps; "
                    f"small_gamma_fraction: share of BN channels with |gamma| < {cfg['small_gamma']} after training"}


# ---------------------------------------------------------------- growth at initialization


def plain_mlp(depth: int, width: int, use_bn: bool, num_classes: int = 10) -> nn.Sequential:
    """``depth`` x (Linear [-> BatchNorm1d] -> ReLU) -> Linear, He-normal weights, no skips."""
    modules = []
    for _ in range(depth):
        linear = nn.Linear(width, width, bias=not use_bn)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
        modules += [linear, *([nn.BatchNorm1d(width)] if use_bn else []), nn.ReLU()]
    modules.append(nn.Linear(width, num_classes))
    return nn.Sequential(*modules)


class ResidualBlock(nn.Module):
    """``x + f(x)`` with ``f = Linear -> [BN ->] ReLU -> Linear [-> BN]`` (He-normal first weight,
    unit-gain second weight, so that without BN ``f`` keeps the second moment of its input)."""

    def __init__(self, width: int, use_bn: bool):
        super().__init__()
        first, second = nn.Linear(width, width, bias=False), nn.Linear(width, width, bias=False)
        nn.init.kaiming_normal_(first.weight, nonlinearity="relu")
        nn.init.kaiming_normal_(second.weight, nonlinearity="linear")
        bn = (lambda: [nn.BatchNorm1d(width)]) if use_bn else (lambda: [])
        self.branch = nn.Sequential(first, *bn(), nn.ReLU(), second, *bn())

    def forward(self, x):
        return x + self.branch(x)


def per_layer_factor(norms) -> float:
    """exp of minus the least-squares slope of log(norms) against the layer index: how much a
    quantity grows per layer toward the input (for gradients) or the output (pass reversed)."""
    logs = np.log(np.asarray(norms, dtype=float))
    slope = np.polyfit(np.arange(len(logs)), logs, 1)[0]
    return float(np.exp(-slope))


def exp_depth_growth(cfg, data, device, hooks, progress):
    """At initialization, on Gaussian inputs: per-layer gradient norms of deep plain MLPs with and
    without BN (Yang et al.), activation scale through residual blocks with and without BN (Bjorck et al.)."""
    g = torch.Generator().manual_seed(cfg["seed"])
    width, depth = cfg["growth_width"], cfg["growth_depth"]
    gradients = []
    for use_bn in (False, True):
        for batch in cfg["growth_batches"]:
            norms = []
            for trial in range(cfg["trials"]):
                torch.manual_seed(cfg["seed"] + trial)
                model = plain_mlp(depth, width, use_bn).to(device).train()
                x = torch.randn(batch, width, generator=g).to(device)
                y = torch.randint(0, 10, (batch,), generator=g).to(device)
                F.cross_entropy(model(x), y).backward()
                norms.append([float(m.weight.grad.double().norm()) for m in weighted_layers(model)[:-1]])
            mean_log = np.log(np.asarray(norms)).mean(axis=0)
            trim = cfg["trim"]
            gradients.append({"use_bn": use_bn, "batch_size": batch,
                              "grad_norms": _round(np.exp(mean_log), 6),
                              "factor_per_layer": round(per_layer_factor(np.exp(mean_log)[trim:depth - trim]), 4)})
    residual = []
    for use_bn in (False, True):
        torch.manual_seed(cfg["seed"])
        blocks = [ResidualBlock(width, use_bn).to(device).train() for _ in range(cfg["residual_blocks"])]
        x = torch.randn(cfg["residual_batch"], width, generator=g).to(device)
        second_moments = [float(x.double().pow(2).mean())]
        with torch.no_grad():
            for block in blocks:
                x = block(x)
                second_moments.append(float(x.double().pow(2).mean()))
        residual.append({"use_bn": use_bn, "second_moment": _round(second_moments, 6)})
    return {"gradients": gradients, "residual": residual, "yang_factor": math.sqrt(math.pi / (math.pi - 1)),
            "note": f"plain MLPs: {depth} layers of width {width} (Linear [-> BN] -> ReLU, He-normal) and a linear "
                    f"classifier, training mode, Gaussian inputs, random labels, cross-entropy; grad_norms: "
                    f"geometric mean over {cfg['trials']} draws of ||dL/dW_l|| per layer; factor_per_layer: growth "
                    f"toward the input fitted on layers {trim}..{depth - trim - 1}; residual: mean square of x after "
                    f"each of {cfg['residual_blocks']} blocks x + f(x) on {cfg['residual_batch']} Gaussian inputs"}


# ------------------------------------------------------------------------------ summaries


def _acc(value) -> str:
    return "diverged" if value is None else f"{100 * value:.1f}%"


def _summary_percentiles(res):
    return [f"  {'BN' if r['use_bn'] else 'no BN'}: test acc {_acc(r['final_test_acc'])}, sigmoid input "
            f"percentiles first {r['percentiles'][0]} last {r['percentiles'][-1]}" for r in res["runs"]]


def _summary_noisy(res):
    return [f"  {VARIANT_NAMES[r['variant']]} lr={r['lr']:g}: train acc {_acc(r['final_train_acc'])} (mean over "
            f"training {_acc(r['mean_train_acc'])}), test acc {_acc(r['final_test_acc'])}" for r in res["runs"]]


def _summary_ics(res):
    lines = []
    for part in ("cnn", "dln"):
        for r in res[part]:
            cos = {k: round(float(np.median(v)), 3) for k, v in r["cosine"].items()}
            lines.append(f"  {part} {'BN' if r['use_bn'] else 'standard'} lr={r['lr']:g}: median cosine(G, G') "
                         f"by layer {cos}")
    return lines


def _summary_landscape(res):
    return [f"  {'BN' if r['use_bn'] else 'standard'}: test acc {_acc(r['final_test_acc'])}, median beta-smoothness "
            f"{np.median([b for b in r['beta_smoothness'] if b is not None]):.3g}" for r in res["runs"]]


def _summary_gamma_beta(res):
    return [f"  train {r['trained']} ({r['trainable_parameters']} of {r['total_parameters']} parameters): test acc "
            f"{_acc(r['final_test_acc'])}" for r in res["runs"]]


def _summary_growth(res):
    lines = [f"  plain MLP {'BN' if r['use_bn'] else 'no BN'} batch {r['batch_size']}: gradient x"
             f"{r['factor_per_layer']} per layer toward the input" for r in res["gradients"]]
    lines.append(f"  (Yang et al.: sqrt(pi/(pi-1)) = {res['yang_factor']:.4f})")
    lines += [f"  residual {'BN' if r['use_bn'] else 'no BN'}: mean square {r['second_moment'][0]:.3g} -> "
              f"{r['second_moment'][-1]:.3g} after {len(r['second_moment']) - 1} blocks" for r in res["residual"]]
    return lines


SUMMARIES = {"percentiles": _summary_percentiles, "noisy_bn": _summary_noisy, "ics": _summary_ics,
             "landscape": _summary_landscape, "gamma_beta": _summary_gamma_beta, "depth_growth": _summary_growth}
