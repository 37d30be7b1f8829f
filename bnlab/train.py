"""The training loop of chapter 4: SGD with momentum on Fashion-MNIST, on any device.

One call, :func:`train`, builds the course's CNN (with or without BN, optionally with another
BN implementation or another initialization scale), trains it with SGD + momentum under a
constant, cosine or one-cycle learning-rate schedule, and returns a plain dict (JSON-ready):
the loss of every step, train and test accuracy after every epoch (computed like the course's
``evaluate``: eval mode, no gradient, previous mode restored), whether and when the run
diverged (a non-finite loss stops it), the time spent and the images per second.

What a practitioner does on a GPU is done here too, and only there by default:

- the whole data set is held on the device as one float32 tensor (Fashion-MNIST is 188 MB),
  batches are drawn by indexing it, so no DataLoader or host-to-device copy slows a step;
- on CUDA, ``channels_last`` memory format and bfloat16 autocast, with every BN layer kept in
  float32 (:class:`bnlab.models.Float32BatchNorm`), and optionally ``torch.compile``;
- the loss is checked for divergence only every ``sync_every`` steps on an accelerator (a
  check forces the host to wait for the device), after every step on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnlab.device import select_device, synchronize
from bnlab.models import FunctionBatchNorm2d, keep_batchnorm_float32, replace_batchnorm, scale_init

SCHEDULES = ("constant", "cosine", "onecycle")
BN_KINDS = ("torch", "module", "function")


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything one training run depends on (all JSON-serializable).

    Attributes
    ----------
    use_bn : bool
        Build ``make_cnn(use_bn=True)`` (conv -> BN -> ReLU) or the same CNN without BN.
    bn : str
        Which BN implementation: ``"torch"`` (``nn.BatchNorm2d``), ``"module"`` (a module
        class such as the course's ``BatchNorm2d``) or ``"function"`` (an autograd Function
        such as ``BatchNormFunction``, wrapped in :class:`bnlab.models.FunctionBatchNorm2d`).
    lr, momentum, nesterov, weight_decay : SGD hyper-parameters; ``lr`` is the peak rate.
    schedule : str
        ``"constant"``, ``"cosine"`` (from ``lr`` to 0) or ``"onecycle"`` (linear warm-up over
        ``warmup_frac`` of the steps, then linear decay to 0).
    epochs : int
        Passes over the training set.
    max_steps : int or None
        Stop after this many steps (for runs shorter than an epoch).
    batch_size : int
    init_scale : float or None
        Convolution weights drawn from He's initialization times this factor; None keeps
        PyTorch's default initialization.
    width : int
        Channels of the CNN's first block (``make_cnn(width=...)``).
    augment : bool
        Random horizontal flips and translations by up to 2 pixels, done on the device.
    eval_batch_size : int
        Batch size of evaluation.
    train_eval_size : int
        How many training images (the first of the training set) the per-epoch train
        accuracy is computed on.
    channels_last, amp, compile : str or bool
        ``"auto"`` means: on CUDA only. ``amp`` uses bfloat16 autocast.
    sync_every : int or None
        Steps between divergence checks; None: 1 on the CPU, 50 on accelerators.
    seed : int
        Seeds the initialization, the batch order and the augmentation.
    """

    use_bn: bool = True
    bn: str = "torch"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "constant"
    warmup_frac: float = 0.2
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 128
    init_scale: float | None = None
    width: int = 32
    augment: bool = False
    eval_batch_size: int = 1000
    train_eval_size: int = 2000
    channels_last: str | bool = "auto"
    amp: str | bool = "auto"
    compile: str | bool = False
    sync_every: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.bn not in BN_KINDS:
            raise ValueError(f"bn must be one of {BN_KINDS}, got {self.bn!r}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.epochs < 1 and not self.max_steps:
            raise ValueError("epochs must be at least 1 (use max_steps for shorter runs)")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from a dict, ignoring keys that are not fields."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str = "constant",
          warmup_frac: float = 0.2) -> float:
    """The learning rate of step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``base_lr``. ``cosine``: ``base_lr * (1 + cos(pi * step / total)) / 2``.
    ``onecycle``: linear warm-up from ``base_lr / warm`` to ``base_lr`` over the first
    ``warm = max(1, round(warmup_frac * total))`` steps, then linear decay towards 0.
    """
    if schedule == "constant":
        return float(base_lr)
    total = max(int(total_steps), 1)
    if schedule == "cosine":
        return float(base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
    if schedule == "onecycle":
        warm = max(1, int(round(warmup_frac * total)))
        if step < warm:
            return float(base_lr * (step + 1) / warm)
        rest = max(total - warm, 1)
        return float(base_lr * max(0.0, 1.0 - (step - warm) / rest))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def _resolve(flag, device: torch.device) -> bool:
    if flag == "auto":
        return device.type == "cuda"
    return bool(flag)


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Data:
    """Fashion-MNIST (or any 1x28x28 data) as normalized float32 tensors on one device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float
    info: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.x_train.device


_ARRAY_CACHE: dict = {}


def _fashion_mnist_arrays(root=None, verify: bool = True):
    from bnlab.data import SHA256, load_fashion_mnist

    key = (str(root), verify)
    if key not in _ARRAY_CACHE:
        _ARRAY_CACHE[key] = tuple(load_fashion_mnist(root, checksums=SHA256 if verify else None))
    return _ARRAY_CACHE[key]


def make_data(x_train, y_train, x_test, y_test, device="cpu", train_size=None, test_size=None,
              seed: int = 0, info: dict | None = None) -> Data:
    """Normalize uint8 images with the *training* mean and std and put everything on ``device``.

    Parameters
    ----------
    x_train, x_test : array_like of uint8, shape (N, 28, 28) (or (N, C, H, W))
    y_train, y_test : array_like of int, shape (N,)
    train_size, test_size : int or None
        Use a random subset (drawn with ``seed``) of this size; None keeps everything.
    """
    device = torch.device(device)
    rng = np.random.default_rng(seed)

    def subset(x, y, size):
        x, y = np.asarray(x), np.asarray(y)
        if size is not None and size < len(x):
            idx = np.sort(rng.choice(len(x), size=int(size), replace=False))
            x, y = x[idx], y[idx]
        return x, y

    x_train, y_train = subset(x_train, y_train, train_size)
    x_test, y_test = subset(x_test, y_test, test_size)
    # Statistics in float64: a float32 sum of millions of pixels depends on the thread count
    # and the CPU's kernels, and so would every normalized image.
    xt = torch.as_tensor(np.asarray(x_train), dtype=torch.float64) / 255.0
    mean, std = float(xt.mean()), float(xt.std())

    def prep(x):
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32) / 255.0
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return ((x - mean) / std).to(device)

    meta = {"train_size": int(len(x_train)), "test_size": int(len(x_test)), "subset_seed": int(seed),
            "normalization": {"mean": round(mean, 6), "std": round(std, 6)}}
    meta.update(info or {})
    return Data(prep(x_train), torch.as_tensor(y_train, dtype=torch.long).to(device),
                prep(x_test), torch.as_tensor(y_test, dtype=torch.long).to(device), mean, std, meta)


def load_data(device="cpu", train_size=None, test_size=None, seed: int = 0, root=None,
              verify: bool = True) -> Data:
    """Fashion-MNIST on ``device`` (see :func:`make_data`); the decoded files are cached.

    ``root`` is a directory with the four IDX files (default: where ``bnlab.data`` finds
    them); ``verify=False`` skips the SHA-256 check (for small test files).
    """
    x_train, y_train, x_test, y_test = _fashion_mnist_arrays(root, verify)
    return make_data(x_train, y_train, x_test, y_test, device, train_size, test_size, seed,
                     info={"dataset": "fashion-mnist"})


def augment_batch(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2,
                  pad_value: float = 0.0, flip: bool = True) -> torch.Tensor:
    """Random horizontal flip and translation by up to ``max_shift`` pixels, per image.

    Runs on ``x``'s device; the random numbers come from the CPU ``generator``. Pixels shifted
    in are ``pad_value`` (the normalized background).
    """
    B, C, H, W = x.shape
    device = x.device
    if flip:
        mask = (torch.rand(B, generator=generator) < 0.5).to(device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if max_shift > 0:
        s = int(max_shift)
        padded = F.pad(x, (s, s, s, s), value=pad_value)
        dy = torch.randint(0, 2 * s + 1, (B,), generator=generator).to(device)
        dx = torch.randint(0, 2 * s + 1, (B,), generator=generator).to(device)
        rows = (dy[:, None] + torch.arange(H, device=device))[:, :, None]   # (B, H, 1)
        cols = (dx[:, None] + torch.arange(W, device=device))[:, None, :]   # (B, 1, W)
        batch = torch.arange(B, device=device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    return x.contiguous()


# --------------------------------------------------------------------------------------------
# Models


def _reference(name: str):
    """A name from the course's reference solutions, imported only when needed."""
    from solutions import ch04_cnn

    return getattr(ch04_cnn, name)


def build_model(config: TrainConfig, device="cpu", make_cnn=None, bn_module=None, bn_function=None) -> nn.Module:
    """The CNN of ``config`` on ``device`` (seeded with ``config.seed``).

    ``make_cnn``, ``bn_module`` and ``bn_function`` default to the course's reference
    ``make_cnn``, ``BatchNorm2d`` and ``BatchNormFunction``; a chapter passes the student's.
    """
    make_cnn = make_cnn or _reference("make_cnn")
    torch.manual_seed(config.seed)
    model = make_cnn(config.use_bn, width=config.width)
    if config.init_scale is not None:
        scale_init(model, config.init_scale, torch.Generator().manual_seed(config.seed + 1))
    if config.use_bn and config.bn == "module":
        cls = bn_module or _reference("BatchNorm2d")
        replace_batchnorm(model, lambda bn: cls(bn.num_features, eps=bn.eps, momentum=bn.momentum))
    elif config.use_bn and config.bn == "function":
        fn = bn_function or _reference("BatchNormFunction")
        replace_batchnorm(model, lambda bn: FunctionBatchNorm2d(bn.num_features, fn, bn.eps, bn.momentum))
    return model.to(torch.device(device))


def autocast_context(device: torch.device, enabled: bool):
    """bfloat16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------
# Training


def _finite_or_none(values, digits: int = 5) -> list:
    out = []
    for v in values:
        v = float(v)
        out.append(float(f"{v:.{digits}g}") if math.isfinite(v) else None)
    return out


def train(config: TrainConfig | dict, data: Data, device=None, *, make_cnn=None, evaluate=None,
          bn_module=None, bn_function=None, model: nn.Module | None = None, progress: bool = False,
          desc: str | None = None, return_model: bool = False):
    """Train one CNN and return its history as a JSON-ready dict.

    Parameters
    ----------
    config : TrainConfig or dict
    data : Data
        Tensors already on the device to train on.
    device : str, torch.device or None
        Default: ``data``'s device.
    make_cnn, evaluate, bn_module, bn_function : callables, optional
        Default to the course's reference implementations.
    model : nn.Module, optional
        Train this model instead of building one (it is moved to ``device``).
    progress : bool
        Show a tqdm progress bar.
    return_model : bool
        Also return the trained model: ``(history, model)``.

    Returns
    -------
    dict
        ``config``; ``step_loss`` (one float per step, None where not finite); per epoch
        ``epoch_train_acc``, ``epoch_test_acc``, ``epoch_batch_acc`` (running accuracy of the
        training batches), ``epoch_time_s``; ``final_train_acc``, ``final_test_acc`` (None if
        diverged); ``diverged`` and ``diverged_at_step``; ``steps``, ``images``,
        ``train_time_s``, ``eval_time_s``, ``images_per_s`` (training steps only) and the fast
        paths used (``channels_last``, ``amp``, ``compiled``).
    """
    from tqdm.auto import tqdm

    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    device = torch.device(device) if device is not None else data.device
    if data.device != device:
        raise ValueError(f"data is on {data.device} but training on {device}: load the data on the device")
    evaluate = evaluate or _reference("evaluate")
    channels_last = _resolve(config.channels_last, device)
    amp = _resolve(config.amp, device)
    if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        amp = False
    use_compile = _resolve(config.compile, device)
    sync_every = config.sync_every or (1 if device.type == "cpu" else 50)

    if model is None:
        model = build_model(config, device, make_cnn, bn_module, bn_function)
    model = model.to(device)
    if amp:
        keep_batchnorm_float32(model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x_train = data.x_train.contiguous(memory_format=memory_format)
    x_test = data.x_test.contiguous(memory_format=memory_format)
    y_train, y_test = data.y_train, data.y_test

    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov and config.momentum > 0,
                                weight_decay=config.weight_decay)
    net = model
    compiled = False
    if use_compile:
        try:
            net = torch.compile(model)
            compiled = True
        except Exception as err:  # noqa: BLE001 - a missing compiler must not stop training
            warnings.warn(f"torch.compile unavailable ({err}); training eagerly")

    n = x_train.shape[0]
    bs = int(config.batch_size)
    per_epoch = n // bs + (1 if n % bs >= 2 else 0)   # a last batch of one image is dropped
    if per_epoch == 0:
        raise ValueError(f"{n} training images are fewer than 2, nothing to train on")
    total_steps = per_epoch * int(config.epochs)
    if config.max_steps is not None:
        total_steps = min(total_steps, int(config.max_steps))
    n_train_eval = min(int(config.train_eval_size), n)
    generator = torch.Generator().manual_seed(config.seed)
    pad_value = (0.0 - data.mean) / data.std
    ctx = autocast_context(device, amp)

    losses = torch.empty(total_steps, dtype=torch.float32, device=device)
    history = {
        "config": config.to_dict(), "step_loss": [], "epoch_train_acc": [], "epoch_test_acc": [],
        "epoch_batch_acc": [], "epoch_time_s": [], "epoch_images": [], "epoch_end_step": [], "diverged": False,
        "diverged_at_step": None, "channels_last": channels_last, "amp": "bfloat16" if amp else None,
        "compiled": compiled, "device": device.type,
    }
    train_time = eval_time = 0.0
    images = 0
    step = 0
    checked = 0
    bar = tqdm(total=total_steps, desc=desc or ("BN" if config.use_bn else "no BN"), disable=not progress,
               leave=False, mininterval=0.5, dynamic_ncols=True)

    def check_divergence(upto: int) -> bool:
        nonlocal checked
        chunk = losses[checked:upto]
        checked = upto
        bad = ~torch.isfinite(chunk)
        if bool(bad.any()):
            history["diverged"] = True
            history["diverged_at_step"] = int(checked - len(chunk) + int(bad.nonzero()[0, 0]))
            return True
        if len(chunk):
            bar.set_postfix(loss=f"{float(chunk[-1]):.3f}", refresh=False)
        return False

    try:
        epoch = 0
        while step < total_steps and not history["diverged"]:
            epoch += 1
            model.train()
            synchronize(device)
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=generator).to(device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen = 0
            for b in range(per_epoch):
                if step >= total_steps:
                    break
                idx = perm[b * bs:(b + 1) * bs]
                xb, yb = x_train[idx], y_train[idx]
                if config.augment:
                    xb = augment_batch(xb, generator, pad_value=pad_value).contiguous(memory_format=memory_format)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, config.lr, config.schedule, config.warmup_frac)
                try:
                    with ctx:
                        logits = net(xb)
                    loss = F.cross_entropy(logits.float(), yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                except Exception as err:  # noqa: BLE001
                    if compiled and step == 0:
                        warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); training eagerly")
                        net, compiled = model, False
                        history["compiled"] = False
                        with ctx:
                            logits = net(xb)
                        loss = F.cross_entropy(logits.float(), yb)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                    else:
                        raise
                optimizer.step()
                losses[step] = loss.detach()
                correct += (logits.detach().argmax(dim=1) == yb).sum()
                seen += len(yb)
                step += 1
                bar.update(1)
                if step % sync_every == 0 and check_divergence(step):
                    break
            if not history["diverged"]:
                check_divergence(step)
            synchronize(device)
            dt = time.perf_counter() - t0
            train_time += dt
            images += seen
            history["epoch_time_s"].append(round(dt, 4))
            history["epoch_end_step"].append(step)
            history["epoch_images"].append(seen)
            history["epoch_batch_acc"].append(round(int(correct) / max(seen, 1), 5))
            if history["diverged"]:
                history["epoch_train_acc"].append(None)
                history["epoch_test_acc"].append(None)
                break
            t1 = time.perf_counter()
            with ctx:
                test_acc = evaluate(net, x_test, y_test, config.eval_batch_size)
                train_acc = evaluate(net, x_train[:n_train_eval], y_train[:n_train_eval], config.eval_batch_size)
            synchronize(device)
            eval_time += time.perf_counter() - t1
            history["epoch_test_acc"].append(round(float(test_acc), 5))
            history["epoch_train_acc"].append(round(float(train_acc), 5))
    finally:
        bar.close()

    history["step_loss"] = _finite_or_none(losses[:step].cpu().tolist())
    history["steps"] = step
    history["images"] = images
    history["train_time_s"] = round(train_time, 3)
    history["eval_time_s"] = round(eval_time, 3)
    history["images_per_s"] = round(images / train_time, 1) if train_time > 0 else None
    if len(history["epoch_time_s"]) >= 3:  # without the first epoch (warm-up, compilation)
        history["images_per_s_after_first_epoch"] = round(
            sum(history["epoch_images"][1:]) / sum(history["epoch_time_s"][1:]), 1)
    history["final_test_acc"] = None if history["diverged"] else history["epoch_test_acc"][-1]
    history["final_train_acc"] = None if history["diverged"] else history["epoch_train_acc"][-1]
    if return_model:
        return history, model
    return history


def evaluate_in_train_mode(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy computed the *wrong* way: ``model.eval()`` forgotten.

    BN layers normalize every test batch with that batch's own statistics and, as a side
    effect, overwrite their running statistics with test-set statistics (that is part of
    the bug: pass a copy of the model to keep the original). The model's previous mode is
    restored afterwards.
    """
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    try:
        with torch.no_grad():
            predicted = torch.cat([model(xb.to(device)).argmax(dim=1).cpu() for xb in X.split(batch_size)])
    finally:
        for m, mode in modes:
            m.training = mode
    return (predicted == y.cpu()).double().mean().item()


def classifier_sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = 50,
                         seed: int = 0) -> dict:
    """Largest eigenvalue of the Hessian of the cross-entropy with respect to the last layer.

    The last module of ``model`` must be the ``nn.Linear`` classifier. Its input features ``f``
    are computed once (the rest of the network is frozen), then power iteration with
    Hessian-vector products finds ``lambda_max``; :func:`stable_lr_bound` turns it into the
    largest stable learning rate of SGD on a quadratic with this curvature.

    Returns
    -------
    dict
        ``lambda_max`` and ``feature_sq_norm`` (mean of ``||f||^2`` over the batch).
    """
    modules = list(model.children())
    head, last = nn.Sequential(*modules[:-1]), modules[-1]
    if not isinstance(last, nn.Linear):
        raise ValueError("the last module of the model must be the nn.Linear classifier")
    with torch.no_grad():
        feats = head(x).flatten(1).float()
    W0 = last.weight.detach().float().clone()
    b0 = last.bias.detach().float().clone()

    def loss_fn(W, b):
        return F.cross_entropy(feats @ W.T + b, y)

    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(W0.shape, generator=g).to(W0.device), torch.randn(b0.shape, generator=g).to(b0.device)]
    lam = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum((t ** 2).sum() for t in v))
        v = [t / norm for t in v]
        _, hv = torch.autograd.functional.hvp(loss_fn, (W0, b0), tuple(v))
        lam = float(sum((a * h).sum() for a, h in zip(v, hv)))
        v = list(hv)
    return {"lambda_max": lam, "feature_sq_norm": float((feats ** 2).sum(1).mean())}


def stable_lr_bound(lambda_max: float, momentum: float = 0.0, nesterov: bool = False) -> float:
    """The largest stable learning rate of PyTorch's SGD on a quadratic of curvature ``lambda_max``.

    PyTorch's momentum is ``v <- beta v + g``, then ``w <- w - lr v`` (heavy ball) or
    ``w <- w - lr (g + beta v)`` (``nesterov=True``). On ``lambda/2 w^2`` both are linear
    recursions in ``(v, w)``; their characteristic polynomial
    ``z^2 - (1 + beta - a (1 + beta [nesterov])) z + beta (1 - a [nesterov])`` with ``a = lr lambda``
    has a root at ``z = -1`` first, which gives

    - heavy ball: ``lr < 2 (1 + beta) / lambda_max``;
    - Nesterov:   ``lr < 2 (1 + beta) / ((1 + 2 beta) lambda_max)``;

    both ``2 / lambda_max`` for ``beta = 0``.
    """
    if not lambda_max > 0:
        raise ValueError(f"lambda_max must be positive, got {lambda_max!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    bound = 2 * (1 + momentum) / lambda_max
    return bound / (1 + 2 * momentum) if nesterov else bound


def time_training_steps(models: dict, x: torch.Tensor, y: torch.Tensor, steps: int = 5, repeats: int = 5,
                        warmup: int = 2, lr: float = 0.01) -> dict:
    """Median seconds per SGD step of each model on one fixed batch, measured interleaved.

    The models take turns (``repeats`` rounds of ``steps`` steps each), so that a slow-down of
    the machine during the measurement (other processes) affects all of them alike.

    Returns
    -------
    dict
        name -> {"median_s", "min_s", "all_s", "images_per_s"} (per step).
    """
    device = x.device
    opts = {name: torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for name, m in models.items()}

    def step(name):
        model, opt = models[name], opts[name]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for name, model in models.items():
        model.train()
        for _ in range(warmup):
            step(name)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name in models:
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step(name)
            synchronize(device)
            times[name].append((time.perf_counter() - t0) / steps)
    out = {}
    for name, ts in times.items():
        med = float(np.median(ts))
        out[name] = {"median_s": round(med, 6), "min_s": round(float(min(ts)), 6),
                     "all_s": [round(t, 6) for t in ts], "images_per_s": round(x.shape[0] / med, 1)}
    return out



def layer_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 100, lr: float = 0.05,
                     batch_size: int = 64, momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0) -> dict:
    """What happens inside ``model`` while SGD trains it: per layer, the spread of the
    activations and of their gradients, and the size of each update relative to the weights.

    The layers are the model's ``nn.ReLU`` modules (activations, in order of depth) and the
    weights of its ``nn.Conv2d`` and ``nn.Linear`` modules. ``steps`` SGD steps (constant ``lr``,
    PyTorch's momentum) are taken on batches of ``batch_size`` drawn with ``seed``.

    Returns
    -------
    dict of lists
        ``activation_std``, ``dead_fraction`` (share of exactly-zero ReLU outputs) and
        ``activation_grad_std``: shape (steps, n_relu), measured in each step's forward and
        backward pass (step 0 is the network at initialization); ``update_ratio``: shape
        (steps, n_weights), ``std(w_after - w_before) / std(w_before)`` of each step;
        ``loss``: shape (steps,); ``layers``, ``weights``: the names of the modules.
    """
    relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    weights = [(name, m.weight) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not relus or not weights:
        raise ValueError("layer_statistics needs a model with nn.ReLU modules and Conv2d/Linear weights")
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured.append(output)

    hooks = [m.register_forward_hook(keep) for _, m in relus]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    out = {key: [] for key in ("activation_std", "dead_fraction", "activation_grad_std", "update_ratio", "loss")}
    model.train()
    try:
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (batch_size,), generator=generator).to(x.device)
            captured.clear()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            before = [w.detach().clone() for _, w in weights]
            optimizer.step()
            out["loss"].append(loss.item())
            out["activation_std"].append([float(a.detach().std()) for a in captured])
            out["dead_fraction"].append([float((a.detach() == 0).float().mean()) for a in captured])
            out["activation_grad_std"].append([float(a.grad.std()) for a in captured])
            out["update_ratio"].append([float((w.detach() - b).std() / b.std()) for (_, w), b in zip(weights, before)])
    finally:
        for h in hooks:
            h.remove()
    out["layers"] = [name for name, _ in relus]
    out["weights"] = [name for name, _ in weights]
    return out


__all__ = [
    "TrainConfig", "Data", "lr_at", "make_data", "load_data", "augment_batch", "build_model", "train",
    "evaluate_in_train_mode", "time_training_steps", "classifier_sharpness", "stable_lr_bound", "layer_statistics",
    "autocast_context", "select_device",
]
