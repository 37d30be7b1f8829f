"""Operations on PyTorch submissions (chapters 4 and 5).

Harness code only, run inside the sandbox and readable by students: it builds modules,
models and inputs from plain values, calls the submission's classes and functions, and
returns what they produce as plain values. No exercise is solved here; the grader runs
the same operations on the reference (and on known wrong versions) to get what to compare
with.

Every operation returns a dict of arrays, numbers, strings and lists. Model builders
(:func:`build_model`, :func:`build_probe`) are shared with the grader so that both sides
build identical models from the same plain weights.
"""

import contextlib
import functools
import traceback

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import lookup

__all__ = [
    "bn_module_run",
    "function_run",
    "inspect_cnn",
    "evaluate_run",
    "ics_metrics_run",
    "ics_run",
    "landscape_run",
    "noisy_bn_run",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _harness(function):
    """Run an operation with one thread (tiny tensors: threads only cost time) and leave the
    caller's thread count and random state as they were (operations also run in notebooks)."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                return function(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return run


# ----------------------------------------------------------------------------- helpers


def _tensor(value, dtype=None, requires_grad=False):
    t = torch.from_numpy(np.array(value, copy=True))
    if dtype is not None:
        t = t.to(DTYPES.get(dtype, dtype))
    return t.requires_grad_(requires_grad)


def _plain(t):
    """A tensor (or None) as an array the grader can read."""
    if t is None:
        return None
    if torch.is_tensor(t):
        return t.detach().cpu().clone().numpy()
    return t


class _Watch(TorchFunctionMode):
    """Records calls of PyTorch's own batch-norm kernels (``F.batch_norm``, ``torch.batch_norm``, ...)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "") or str(func)
        if "batch_norm" in name and name not in self.calls:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _autograd_counter():
    """Counts calls of ``torch.autograd.grad`` / ``backward`` made by the submission.

    Yields ``(counts, grad)`` where ``grad`` is the original ``torch.autograd.grad``: the
    harness calls that one, so every counted call comes from the submission.
    """
    counts = {"n": 0}
    original_grad = torch.autograd.grad
    original_backward = torch.autograd.backward
    original_tensor_backward = torch.Tensor.backward

    def grad(*args, **kwargs):
        counts["n"] += 1
        return original_grad(*args, **kwargs)

    def backward(*args, **kwargs):
        counts["n"] += 1
        return original_backward(*args, **kwargs)

    def tensor_backward(self, *args, **kwargs):
        counts["n"] += 1
        return original_tensor_backward(self, *args, **kwargs)

    torch.autograd.grad, torch.autograd.backward, torch.Tensor.backward = grad, backward, tensor_backward
    try:
        yield counts, original_grad
    finally:
        torch.autograd.grad = original_grad
        torch.autograd.backward = original_backward
        torch.Tensor.backward = original_tensor_backward


def _state(model):
    """Parameters, buffers and modes of a model, to check that a function left it unchanged."""
    return {
        "parameters": {name: _plain(p) for name, p in model.named_parameters()},
        "buffers": {name: _plain(b) for name, b in model.named_buffers()},
        "modes": [bool(m.training) for m in model.modules()],
    }


def _as_float(value):
    """A returned number as a float (tensors and arrays of one element included), else as is."""
    if torch.is_tensor(value) and value.numel() == 1:
        return float(value.detach().reshape(()))
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
        return float(value.reshape(()))
    if isinstance(value, (np.floating, np.integer)):
        return float(value)
    return value


# ----------------------------------------------------------------------------- chapter 4


@_harness
def bn_module_run(namespace, class_name, init_args=(), init_kwargs=None, steps=(), dtype="float32",
                  parameters=None, buffers=None):
    """Build ``class_name(*init_args, **init_kwargs)`` and run a list of steps on it.

    Each step is ``{"mode": "train" | "eval", "x": array, "dout": array or None}``:
    the module is put in that mode, ``out = module(x)`` and, with ``dout``,
    ``out.backward(dout)`` with fresh gradients. ``parameters`` / ``buffers`` (name ->
    array) are copied into the module first. Returns the module's structure, its initial
    state, and per step the output, the gradients and the buffers afterwards, plus the
    names of PyTorch batch-norm functions the module called. If a step raises, the steps
    before it are returned with ``error``, the exception in words.
    """
    cls = lookup(namespace, class_name)
    watch = _Watch()
    with watch:
        module = cls(*init_args, **(init_kwargs or {}))
    if not isinstance(module, nn.Module):
        raise TypeError(f"{class_name}(...) is not a torch.nn.Module but {type(module).__name__}")
    info = {
        "state_dict_keys": [str(k) for k in module.state_dict().keys()],
        "parameter_names": [name for name, _ in module.named_parameters()],
        "buffer_names": [name for name, _ in module.named_buffers()],
        "initial": {name: _plain(t) for name, t in module.state_dict().items()},
    }
    if dtype == "float64":
        module = module.double()
    records = []
    info["steps"] = records
    info["batch_norm_calls"] = watch.calls
    try:
        params, bufs = dict(module.named_parameters()), dict(module.named_buffers())
        with torch.no_grad():
            for kind, given, have in (("parameter", parameters, params), ("buffer", buffers, bufs)):
                for name, value in (given or {}).items():
                    if name not in have:
                        raise AttributeError(f"{class_name} has no {kind} named {name!r}")
                    have[name].copy_(_tensor(value))
        _run_steps(module, steps, dtype, watch, records)
    except Exception as err:  # noqa: BLE001 - the structure is still worth reporting
        info["error"] = _error_text(err)
    return info


def _error_text(err):
    """The exception with the submission's own frames only, as the worker reports it."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("/")]
    lines = traceback.format_list(frames[-5:]) + traceback.format_exception_only(type(err), err)
    return "".join(lines).rstrip()[-2000:]


def _run_steps(module, steps, dtype, watch, records):
    for step in steps:
        module.train(step["mode"] == "train")
        x = _tensor(step["x"], dtype, requires_grad=True)
        for p in module.parameters():
            p.grad = None
        with watch:
            out = module(x)
        if not torch.is_tensor(out):
            raise TypeError(f"forward returned {type(out).__name__}, expected a tensor")
        record = {"out": _plain(out)}
        if step.get("dout") is not None:
            if not out.requires_grad:
                raise RuntimeError("the output does not require grad: the computation is not "
                                   "recorded by autograd (torch.no_grad or .detach() around the output?)")
            (out * _tensor(step["dout"], out.dtype)).sum().backward()  # scalar: no sympy import
            record["dx"] = _plain(x.grad)
            record["grads"] = {name: _plain(p.grad) for name, p in module.named_parameters()}
        record["buffers"] = {name: _plain(b) for name, b in module.named_buffers()}
        records.append(record)


@_harness
def function_run(namespace, class_name, x, gamma, beta, eps, dout, dtype="float64", gradcheck=False):
    """``class_name.apply(x, gamma, beta, eps)`` and its backward for upstream gradient ``dout``.

    Returns ``out``, ``dx``, ``dgamma``, ``dbeta``; the inputs after the call (to detect
    in-place changes); how many times the submission itself called autograd (``torch.autograd.grad`` / ``backward``) during the backward pass; the
    PyTorch batch-norm functions it called; and, with ``gradcheck``, the result of
    ``torch.autograd.gradcheck`` on the given (float64) inputs.
    """
    function = lookup(namespace, class_name)
    if not hasattr(function, "apply"):
        raise TypeError(f"{class_name} has no apply: it should be a torch.autograd.Function subclass")
    xt = _tensor(x, dtype, requires_grad=True)
    gt = _tensor(gamma, dtype, requires_grad=True)
    bt = _tensor(beta, dtype, requires_grad=True)
    watch = _Watch()
    with watch:
        out = function.apply(xt, gt, bt, eps)
    if not torch.is_tensor(out):
        raise TypeError(f"{class_name}.apply returned {type(out).__name__}, expected a tensor")
    result = {"out": _plain(out), "batch_norm_calls": watch.calls}
    with _autograd_counter() as (counts, grad):
        # A scalar objective: backward with a tensor gradient would import sympy (~1 s) in torch 2.13.
        objective = (out * _tensor(dout, out.dtype)).sum()
        dx, dgamma, dbeta = grad(objective, (xt, gt, bt), allow_unused=True)
    result.update(dx=_plain(dx), dgamma=_plain(dgamma), dbeta=_plain(dbeta), autograd_calls=counts["n"],
                  inputs_after={"x": _plain(xt), "gamma": _plain(gt), "beta": _plain(bt)})
    if gradcheck:
        result["gradcheck"] = _gradient_check(lambda a, b, c: function.apply(a, b, c, eps), (x, gamma, beta), dout)
    return result


def _gradient_check(function, inputs, dout, h=1e-6):
    """Analytic against central-difference gradients of ``sum(function(*inputs) * dout)``, float64.

    Returns ``{"passed": bool, "message": str}`` (what ``torch.autograd.gradcheck`` checks,
    without its start-up cost).
    """
    tensors = [_tensor(v, "float64", requires_grad=True) for v in inputs]
    weight = _tensor(dout, "float64")
    try:
        objective = (function(*tensors) * weight).sum()
        analytic = torch.autograd.grad(objective, tensors, allow_unused=True)
    except Exception as err:  # noqa: BLE001 - the message is the feedback
        return {"passed": False, "message": f"{type(err).__name__}: {str(err)[:300]}"}
    names = ["x", "gamma", "beta"]
    with torch.no_grad():
        for k, t in enumerate(tensors):
            numeric = torch.zeros_like(t)
            flat, out = t.view(-1), numeric.view(-1)
            for i in range(flat.numel()):
                old = float(flat[i])
                flat[i] = old + h
                plus = float((function(*tensors) * weight).sum())
                flat[i] = old - h
                minus = float((function(*tensors) * weight).sum())
                flat[i] = old
                out[i] = (plus - minus) / (2 * h)
            got = analytic[k] if analytic[k] is not None else torch.zeros_like(t)
            error = float((got - numeric).abs().max())
            if error > 1e-5 + 1e-4 * float(numeric.abs().max()):
                return {"passed": False, "message": f"the gradient of {names[k]} differs from central differences "
                                                    f"by up to {error:.3g}"}
    return {"passed": True, "message": ""}
    return result


def _kind(module):
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) or "batchnorm" in type(module).__name__.lower():
        return "bn"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return "pool"
    if isinstance(module, nn.Flatten):
        return "flatten"
    if isinstance(module, nn.Linear):
        return "linear"
    return type(module).__name__


def _describe(module):
    kind = _kind(module)
    item = {"kind": kind, "type": type(module).__name__}
    if kind == "conv":
        item.update(in_channels=module.in_channels, out_channels=module.out_channels,
                    kernel_size=list(module.kernel_size), padding=str(module.padding),
                    stride=list(module.stride), bias=module.bias is not None)
    elif kind == "bn":
        size = getattr(module, "num_features", None)
        if not isinstance(size, int):
            weight = getattr(module, "weight", None)
            size = int(weight.shape[0]) if torch.is_tensor(weight) and weight.dim() == 1 else -1
        item["num_features"] = size
    elif kind == "linear":
        item.update(in_features=module.in_features, out_features=module.out_features,
                    bias=module.bias is not None)
    elif kind == "pool":
        item["kernel_size"] = str(module.kernel_size)
    return item


def deterministic_init(model, seed):
    """Overwrite every floating parameter and running statistic with seeded values.

    Parameters in ``named_parameters`` order: weights with more than one dimension get
    ``N(0, 1) / fan_in ** 0.5``, one-dimensional ones ``N(0, 0.1)`` (plus 1 for a name
    ending in ``weight``, e.g. BN's gamma). Buffers ending in ``running_mean`` get
    ``N(0, 0.1)``, those ending in ``running_var`` ``U(0.5, 1.5)``.
    """
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point():
                continue
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() > 1:
                value = noise / p[0].numel() ** 0.5
            else:
                value = 0.1 * noise + (1.0 if name.endswith("weight") else 0.0)
            p.copy_(value.to(p.dtype))
        for name, b in model.named_buffers():
            if not b.is_floating_point():
                continue
            if name.endswith("running_mean"):
                b.copy_((0.1 * torch.randn(b.shape, generator=g, dtype=torch.float64)).to(b.dtype))
            elif name.endswith("running_var"):
                b.copy_((0.5 + torch.rand(b.shape, generator=g, dtype=torch.float64)).to(b.dtype))


@_harness
def inspect_cnn(namespace, function_name, configs, x_by_channels, seed=0):
    """Build ``make_cnn(**kwargs)`` for each config and describe what was built.

    For each config: the leaf modules in order (kind, type and sizes), the parameter
    names, shapes and count, and the logits on the input with ``in_channels`` channels
    from ``x_by_channels`` (``{str(in_channels): array}``), in float64, after
    :func:`deterministic_init`, in training and in eval mode.
    """
    make = lookup(namespace, function_name)
    results = []
    for kwargs in configs:
        torch.manual_seed(int(seed))
        model = make(**kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{function_name}(...) returned {type(model).__name__}, not an nn.Module")
        leaves = [m for _, m in model.named_modules() if not list(m.children())]
        item = {
            "layers": [_describe(m) for m in leaves],
            "parameter_names": [name for name, _ in model.named_parameters()],
            "parameter_shapes": [list(p.shape) for p in model.parameters()],
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
        }
        model = model.double()
        deterministic_init(model, seed)
        x = _tensor(x_by_channels[str(kwargs.get("in_channels", 1))], "float64")
        with torch.no_grad():
            item["logits_train"] = _plain(model.train()(x))
            item["logits_eval"] = _plain(model.eval()(x))
        results.append(item)
    return results


class _Probe(nn.Module):
    """Identity that records, at every call, the mode it runs in and whether grad is enabled."""

    def __init__(self):
        super().__init__()
        self.log = []

    def forward(self, x):
        self.log.append([bool(self.training), bool(torch.is_grad_enabled()), int(x.shape[0])])
        return x


def build_probe(weights):
    """A small classifier from plain weights: Flatten, Linear, BatchNorm1d, ReLU, probe, Linear.

    ``weights``: ``fc1_weight`` (H, D), ``fc1_bias`` (H,), ``bn_weight``, ``bn_bias``,
    ``bn_running_mean``, ``bn_running_var`` (H,), ``fc2_weight`` (K, H), ``fc2_bias`` (K,).
    """
    H, D = np.shape(weights["fc1_weight"])
    K = np.shape(weights["fc2_weight"])[0]
    with torch.random.fork_rng(devices=[]):  # the layers' initial weights are overwritten anyway
        model = _probe_layers(D, H, K)
    with torch.no_grad():
        for key, value in weights.items():
            layer, attr = key.split("_", 1)
            getattr(getattr(model, layer), attr).copy_(_tensor(value))
    return model


def _probe_layers(D, H, K):
    model = nn.Sequential()
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc1", nn.Linear(D, H))
    model.add_module("bn", nn.BatchNorm1d(H))
    model.add_module("relu", nn.ReLU())
    model.add_module("probe", _Probe())
    model.add_module("fc2", nn.Linear(H, K))
    return model


@_harness
def evaluate_run(namespace, function_name, weights, X, y, batch_size=None, start_mode="train"):
    """The submission's ``evaluate(model, X, y[, batch_size])`` on :func:`build_probe` ``(weights)``.

    The model starts in ``start_mode``. Returns the accuracy returned, and what the model
    saw: per forward call ``[training, grad_enabled, batch_size]``, the modes of all
    modules before and after, the state afterwards and whether any ``.grad`` was set.
    """
    evaluate = lookup(namespace, function_name)
    model = build_probe(weights)
    model.train(start_mode == "train")
    before = _state(model)
    args = [model, _tensor(X, "float32"), _tensor(y).long()]
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    accuracy = evaluate(*args, **kwargs)
    return {
        "accuracy": _as_float(accuracy),
        "log": model.probe.log,
        "before": before,
        "after": _state(model),
        "grads_set": [name for name, p in model.named_parameters() if p.grad is not None],
    }


# ----------------------------------------------------------------------------- chapter 5


@_harness
def ics_metrics_run(namespace, function_name, pairs, dtype=None):
    """``ics_metrics(G, G_prime)`` for each pair, given as tensors; the inputs afterwards."""
    function = lookup(namespace, function_name)
    results, after = [], []
    for G, G_prime in pairs:
        a, b = _tensor(G, dtype), _tensor(G_prime, dtype)
        value = function(a, b)
        if isinstance(value, (tuple, list)):
            value = type(value)(_as_float(v) for v in value)
        results.append(value)
        after.append([_plain(a), _plain(b)])
    return {"results": results, "after": after}


def build_model(layers, dtype="float64"):
    """An ``nn.Sequential`` from a list of plain layer descriptions.

    Each item is ``{"type": ..., ...}``: ``"conv"`` (``weight`` (O, I, k, k), ``bias`` or
    None, ``padding``), ``"linear"`` (``weight``, ``bias`` or None), ``"bn1d"`` / ``"bn2d"``
    (``weight``, ``bias``, ``running_mean``, ``running_var``), ``"relu"``, ``"tanh"``,
    ``"flatten"``, ``"maxpool"`` (``kernel``).
    """
    with torch.random.fork_rng(devices=[]):  # the layers' initial weights are overwritten anyway
        modules = [_layer(spec) for spec in layers]
    model = nn.Sequential(*modules).to(DTYPES[dtype])
    with torch.no_grad():
        for spec, m in zip(layers, modules):
            for key in ("weight", "bias", "running_mean", "running_var"):
                if spec.get(key) is not None:
                    getattr(m, key).copy_(_tensor(spec[key]))
    return model


def _layer(spec):
    """One module of :func:`build_model` (its weights are set by the caller)."""
    kind = spec["type"]
    if kind == "conv":
        out_c, in_c, k, _ = np.shape(spec["weight"])
        m = nn.Conv2d(in_c, out_c, k, padding=spec.get("padding", 0), bias=spec.get("bias") is not None)
    elif kind == "linear":
        out_f, in_f = np.shape(spec["weight"])
        m = nn.Linear(in_f, out_f, bias=spec.get("bias") is not None)
    elif kind in ("bn1d", "bn2d"):
        n = np.shape(spec["weight"])[0]
        m = (nn.BatchNorm1d if kind == "bn1d" else nn.BatchNorm2d)(n)
    elif kind == "relu":
        m = nn.ReLU()
    elif kind == "tanh":
        m = nn.Tanh()
    elif kind == "flatten":
        m = nn.Flatten()
    elif kind == "maxpool":
        m = nn.MaxPool2d(spec.get("kernel", 2))
    else:
        raise ValueError(f"unknown layer type {kind!r}")
    return m


def _loss(name):
    return {"cross_entropy": nn.CrossEntropyLoss(), "mse": nn.MSELoss()}[name]


@_harness
def ics_run(namespace, function_name, layers, x, y, calls, mode="train", loss="cross_entropy"):
    """``measure_ics(model, layer, x, y, loss_fn, lr)`` for each ``(layer, lr)`` in ``calls``.

    Every call gets a freshly built model (:func:`build_model`) in ``mode``. Returns per
    call the result and the model's state before and after.
    """
    measure = lookup(namespace, function_name)
    out = []
    for layer, lr in calls:
        model = build_model(layers).train(mode == "train")
        before = _state(model)
        yt = _tensor(y) if loss == "mse" else _tensor(y).long()
        value = measure(model, int(layer), _tensor(x), yt, _loss(loss), float(lr))
        if isinstance(value, (tuple, list)):
            value = type(value)(_as_float(v) for v in value)
        out.append({"result": value, "before": before, "after": _state(model)})
    return out


@_harness
def landscape_run(namespace, function_name, layers, x, y, lr, multipliers, mode="train", loss="cross_entropy"):
    """``landscape_along_gradient(model, x, y, loss_fn, lr, multipliers)`` on a fresh model.

    Returns the result (numbers as floats) and the model's state before and after.
    """
    function = lookup(namespace, function_name)
    model = build_model(layers).train(mode == "train")
    before = _state(model)
    yt = _tensor(y) if loss == "mse" else _tensor(y).long()
    value = function(model, _tensor(x), yt, _loss(loss), float(lr), [float(c) for c in multipliers])
    if isinstance(value, dict):
        value = {str(k): _as_list(item) for k, item in value.items()}
    return {"result": value, "before": before, "after": _state(model)}


def _as_list(item):
    """Lists, tuples, 1-d tensors and arrays as lists of floats; single numbers as floats."""
    if torch.is_tensor(item) and item.dim() >= 1:
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray) and item.ndim >= 1 and item.dtype.kind in "biuf":
        return [float(v) for v in item.reshape(-1)]
    if isinstance(item, (list, tuple)):
        return [_as_float(v) for v in item]
    return _as_float(item)


@_harness
def noisy_bn_run(namespace, class_name, num_features, init_kwargs, train_xs, eval_x, seed=0, dout=None):
    """Build ``class_name(num_features, **init_kwargs)`` in float64 and run it.

    ``torch.manual_seed(seed)`` first; then one training-mode forward per array of
    ``train_xs`` (outputs returned), a backward of ``dout`` through the last one
    (gradients of the input and the parameters), and two eval-mode forwards of
    ``eval_x``. Also the state_dict keys, the buffers after training, and the PyTorch
    batch-norm functions called (allowed here).
    """
    cls = lookup(namespace, class_name)
    torch.manual_seed(int(seed))
    module = cls(num_features, **(init_kwargs or {}))
    if not isinstance(module, nn.Module):
        raise TypeError(f"{class_name}(...) is not a torch.nn.Module but {type(module).__name__}")
    module = module.double()
    result = {"state_dict_keys": [str(k) for k in module.state_dict().keys()], "train_out": []}
    module.train()
    x = None
    for i, value in enumerate(train_xs):
        x = _tensor(value, "float64", requires_grad=True)
        out = module(x)
        if not torch.is_tensor(out):
            raise TypeError(f"forward returned {type(out).__name__}, expected a tensor")
        result["train_out"].append(_plain(out))
    if dout is not None:
        (out * _tensor(dout, "float64")).sum().backward()
        result["dx"] = _plain(x.grad)
        result["grads"] = {name: _plain(p.grad) for name, p in module.named_parameters()}
    result["buffers"] = {name: _plain(b) for name, b in module.named_buffers()}
    module.eval()
    with torch.no_grad():
        result["eval_out"] = [_plain(module(_tensor(eval_x, "float64"))) for _ in range(2)]
    return result
