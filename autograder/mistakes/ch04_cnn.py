"""Common mistakes of chapter 4 (BN in a CNN, PyTorch), reproduced on purpose.

Grader side only. ``BuggyBatchNorm2d(bug)`` is a BN module with one known bug; the
suites run it through the same harness (``autograder.ops.torch_models``) as the
submission and name the bug whose outputs match. ``function_mistakes`` does the same for
``BatchNormFunction`` (forward and hand-written backward), ``evaluate_mistakes`` for
``evaluate``.
"""

import functools

import numpy as np
import torch
from torch import nn

from autograder.messages.ch04_cnn import MSG  # noqa: F401 - the texts, shared with the public checks


class BuggyBatchNorm2d(nn.Module):
    """BatchNorm2d with one named bug (``bug=None``: no bug). Grader side only."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, bug=None):
        super().__init__()
        self.bug, self.eps, self.momentum = bug, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _stats(self, x):
        """Mean and variance broadcastable to x, by the bug's rule."""
        bug = self.bug
        unbiased = bug == "unbiased"
        if bug == "per_position":
            return x.mean(0, keepdim=True), x.var(0, keepdim=True, unbiased=False)
        if bug == "per_sample":
            return x.mean((1, 2, 3), keepdim=True), x.var((1, 2, 3), keepdim=True, unbiased=False)
        if bug == "reshape":
            N, C, H, W = x.shape
            flat = x.reshape(-1, C)
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            return mean, var  # applied on the flat view
        mean = x.mean((0, 2, 3), keepdim=True)
        var = x.var((0, 2, 3), keepdim=True, unbiased=unbiased)
        return mean, var

    def forward(self, x):
        bug, C = self.bug, x.shape[1]
        shape = (1, C, 1, 1)
        if self.training or bug == "batch_stats_in_eval":
            if bug == "reshape":
                mean, var = self._stats(x)
                flat = x.reshape(-1, C)
                x_hat = ((flat - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)
            else:
                mean, var = self._stats(x)
                if bug == "detached":
                    mean, var = mean.detach(), var.detach()
                if bug == "eps_outside":
                    x_hat = (x - mean) / (torch.sqrt(var) + self.eps)
                else:
                    x_hat = (x - mean) / torch.sqrt(var + self.eps)
            if self.training:
                with torch.no_grad():
                    m = self.momentum
                    batch_mean = x.mean((0, 2, 3)).detach()
                    batch_var = x.var((0, 2, 3), unbiased=bug != "biased_running_var").detach()
                    if bug == "reversed_momentum":
                        self.running_mean.mul_(m).add_((1 - m) * batch_mean)
                        self.running_var.mul_(m).add_((1 - m) * batch_var)
                    elif bug != "no_running_update":
                        self.running_mean.mul_(1 - m).add_(m * batch_mean)
                        self.running_var.mul_(1 - m).add_(m * batch_var)
                    if bug not in ("no_running_update", "no_num_batches"):
                        self.num_batches_tracked.add_(1)
        else:
            denom = (torch.sqrt(self.running_var) + self.eps) if bug == "eps_outside" else \
                torch.sqrt(self.running_var + self.eps)
            x_hat = (x - self.running_mean.reshape(shape)) / denom.reshape(shape)
        if bug == "no_affine":
            return x_hat
        return self.weight.reshape(shape) * x_hat + self.bias.reshape(shape)


BN_BUGS = ["unbiased", "eps_outside", "per_position", "per_sample", "reshape", "no_affine", "detached",
           "reversed_momentum", "biased_running_var", "no_running_update", "batch_stats_in_eval"]


def bn_mistake_runs(run):
    """``{message: result of the harness on BuggyBatchNorm2d(bug)}`` for every known bug.

    ``run(namespace)`` runs ``autograder.ops.torch_models.bn_module_run`` on a namespace
    whose ``BatchNorm2d`` is the buggy class; a bug whose run fails is left out.
    """
    out = {}
    for bug in BN_BUGS:
        cls = functools.partial(BuggyBatchNorm2d, bug=bug)
        try:
            out[MSG[bug]] = run({"BatchNorm2d": cls})
        except Exception:  # noqa: BLE001 - a mistake that cannot run on this case names nothing
            continue
    return out


# ----------------------------------------------------------------------------- BatchNormFunction


def function_mistakes(x, gamma, beta, eps, dout):
    """``{message: (out, dx, dgamma, dbeta)}`` of the known BatchNormFunction bugs, float64."""
    x, gamma, beta, dout = (np.asarray(a, dtype=np.float64) for a in (x, gamma, beta, dout))
    N, C, H, W = x.shape
    M = N * H * W
    g, b = gamma.reshape(1, C, 1, 1), beta.reshape(1, C, 1, 1)
    axes = (0, 2, 3)
    mean = x.mean(axes, keepdims=True)
    var = x.var(axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv
    out = g * x_hat + b
    dbeta = dout.sum(axes)
    dgamma = (dout * x_hat).sum(axes)
    db, dg = dbeta.reshape(1, C, 1, 1), dgamma.reshape(1, C, 1, 1)
    dx = g * inv / M * (M * dout - db - x_hat * dg)

    def compact(x_hat_, inv_):
        dg_ = (dout * x_hat_).sum(axes).reshape(1, C, 1, 1)
        return g * inv_ / M * (M * dout - db - x_hat_ * dg_)

    var1 = x.var(axes, keepdims=True, ddof=1)
    inv1 = 1.0 / np.sqrt(var1 + eps)
    x_hat1 = (x - mean) * inv1
    inv_e = 1.0 / (np.sqrt(var) + eps)
    x_hat_e = (x - mean) * inv_e
    return {
        MSG["dropped_paths"]: (out, g * inv * dout, dgamma, dbeta),
        MSG["dropped_mean_path"]: (out, g * inv / M * (M * dout - x_hat * dg), dgamma, dbeta),
        MSG["dropped_var_path"]: (out, g * inv / M * (M * dout - db), dgamma, dbeta),
        MSG["dparams_mean"]: (out, dx, dgamma / M, dbeta / M),
        MSG["dparams_batch"]: (out, dx, dgamma / N, dbeta / N),
        MSG["swapped_dparams"]: (out, dx, dbeta, dgamma),
        MSG["unbiased"]: (g * x_hat1 + b, compact(x_hat1, inv1), (dout * x_hat1).sum(axes), dbeta),
        MSG["eps_outside"]: (g * x_hat_e + b, compact(x_hat_e, inv_e), (dout * x_hat_e).sum(axes), dbeta),
        MSG["no_affine"]: (x_hat, dx, dgamma, dbeta),
    }


# ----------------------------------------------------------------------------- evaluate


def evaluate_mistakes(model_factory, X, y, batch_size):
    """``{message: accuracy}`` of known evaluate bugs; ``model_factory()`` builds a fresh model."""
    X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y)).long()
    n = X.shape[0]

    def per_batch(train):
        model = model_factory()
        model.train(train)
        counts = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                pred = model(X[start:start + batch_size]).argmax(1)
                counts.append((int((pred == y[start:start + batch_size]).sum()), int(pred.shape[0])))
        return counts

    train_counts = per_batch(True)
    eval_counts = per_batch(False)
    correct = sum(c for c, _ in eval_counts)
    out = {
        MSG["eval_train_mode"]: sum(c for c, _ in train_counts) / n,
        MSG["eval_count"]: float(correct),
        MSG["eval_percent"]: 100.0 * correct / n,
    }
    if len(eval_counts) > 1:
        out[MSG["eval_batch_mean"]] = float(np.mean([c / k for c, k in eval_counts]))
        out[MSG["eval_last_batch"]] = eval_counts[-1][0] / eval_counts[-1][1]
    return out
