"""Common mistakes of chapter 5 (internal covariate shift, loss landscape, noisy BN), on purpose.

Grader side only. ``ics_metrics_mistakes`` works on arrays; ``measure_ics_variant`` and
``landscape_variant`` are wrong versions of the exercises, run by the suites through the
same harness (``autograder.ops.torch_models``) as the submission.
"""

import copy
import math

import numpy as np
import torch
from torch import nn

from autograder.messages.ch05_covariate_shift import MSG  # noqa: F401 - the texts, shared with the public checks


# ----------------------------------------------------------------------------- ics_metrics


def ics_metrics_mistakes(G, G_prime):
    """``{message: (l2, cosine)}`` of the known ics_metrics bugs."""
    G, Gp = np.asarray(G, dtype=np.float64), np.asarray(G_prime, dtype=np.float64)
    a, b = G.ravel(), Gp.ravel()
    l2 = float(np.linalg.norm(a - b))
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    cos = float(a @ b / (na * nb)) if na and nb else float("nan")
    out = {
        MSG["l2_squared"]: (l2 ** 2, cos),
        MSG["l2_mean"]: (math.sqrt(float(np.mean((a - b) ** 2))), cos),
        MSG["l2_relative"]: (l2 / na if na else float("nan"), cos),
        MSG["cos_dot"]: (l2, float(a @ b)),
        MSG["cos_distance"]: (l2, 1.0 - cos),
    }
    if G.ndim >= 2:
        rows_a, rows_b = G.reshape(G.shape[0], -1), Gp.reshape(Gp.shape[0], -1)
        norms = np.linalg.norm(rows_a, axis=1) * np.linalg.norm(rows_b, axis=1)
        if np.all(norms > 0):
            out[MSG["cos_rows"]] = (l2, float(np.mean((rows_a * rows_b).sum(1) / norms)))
    return out


# ----------------------------------------------------------------------------- measure_ics

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _grads(model, x, y, loss_fn):
    model.zero_grad()
    loss_fn(model(x), y).backward()
    return {name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for name, p in model.named_parameters()}


def measure_ics_variant(model, layer, x, y, loss_fn, lr, variant):
    """A wrong measure_ics: ``variant`` says which parameters take the step, and how."""
    m = copy.deepcopy(model)
    if variant == "eval_mode":
        m.eval()
    weighted = [mod for mod in m.modules() if isinstance(mod, _WEIGHTED)]
    target = weighted[layer].weight
    names = [name for name, _ in m.named_parameters()]
    params = dict(m.named_parameters())
    target_name = next(name for name, p in params.items() if p is target)
    position = names.index(target_name)
    weight_names = {n for n, p in params.items() for mod in weighted if p is mod.weight}
    if variant == "all":
        moving = names
    elif variant == "later_too":
        moving = [n for n in names if n != target_name]
    elif variant == "self_too":
        moving = names[:position + 1]
    elif variant == "weights_only":
        moving = [n for n in names[:position] if n in weight_names]
    else:  # "ascent", "eval_mode": the right parameters
        moving = names[:position]
    sign = 1.0 if variant == "ascent" else -1.0
    g = _grads(m, x, y, loss_fn)
    G = g[target_name]
    with torch.no_grad():
        for n in moving:
            params[n].add_(sign * lr * g[n])
    G2 = _grads(m, x, y, loss_fn)[target_name]
    a, b = G.double().reshape(-1), G2.double().reshape(-1)
    l2 = float((a - b).norm())
    cos = float(a @ b / (a.norm() * b.norm())) if float(a.norm()) and float(b.norm()) else 1.0
    return l2, cos


ICS_VARIANTS = {"all": "ics_all", "later_too": "ics_later_too", "self_too": "ics_self_too",
                "weights_only": "ics_weights_only", "ascent": "ics_ascent", "eval_mode": "ics_eval_mode"}


def ics_mistake_runs(run):
    """``{message: run(namespace)}`` for every wrong measure_ics; ``run`` calls the harness."""
    out = {}
    for variant, key in ICS_VARIANTS.items():
        def wrong(model, layer, x, y, loss_fn, lr, _variant=variant):
            return measure_ics_variant(model, layer, x, y, loss_fn, lr, _variant)
        try:
            out[MSG[key]] = run({"measure_ics": wrong})
        except Exception:  # noqa: BLE001 - a variant that cannot run names nothing
            continue
    return out


# ----------------------------------------------------------------------------- landscape


def landscape_variant(model, x, y, loss_fn, lr, multipliers, variant):
    """A wrong landscape_along_gradient."""
    m = copy.deepcopy(model)
    if variant == "eval_mode":
        m.eval()
    params = [p for p in m.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]

    def loss_and_grad():
        for p in params:
            p.grad = None
        loss = loss_fn(m(x), y)
        loss.backward()
        return float(loss.detach()), [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    loss0, g = loss_and_grad()
    g_norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in g))
    losses, distances, ratios = [], [], []
    for c in multipliers:
        scale = c if variant == "no_lr" else c * lr
        sign = 1.0 if variant == "ascent" else -1.0
        with torch.no_grad():
            for p, p0, gp in zip(params, start, g):
                p.copy_(p0 + sign * scale * gp)
        loss, grad = loss_and_grad()
        if variant == "grad_norm":
            dist = math.sqrt(sum(float(t.double().pow(2).sum()) for t in grad))
        else:
            dist = math.sqrt(sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(grad, g)))
        losses.append(loss - loss0 if variant == "delta" else loss)
        distances.append(dist)
        step = abs(c) * lr * (1.0 if variant == "beta_no_gnorm" else g_norm)
        if variant == "no_lr":
            step = abs(c) * g_norm
        if step > 0:
            ratios.append(dist / step)
    if not ratios:
        beta = float("nan")
    elif variant == "beta_mean":
        beta = float(np.mean(ratios))
    else:
        beta = max(ratios)
    return {"losses": losses, "grad_distances": distances, "beta_smoothness": beta}


LANDSCAPE_VARIANTS = {"grad_norm": "ls_grad_norm", "beta_no_gnorm": "ls_beta_no_gnorm", "beta_mean": "ls_beta_mean",
                      "no_lr": "ls_no_lr", "ascent": "ls_ascent", "delta": "ls_delta", "eval_mode": "ls_eval_mode"}


def landscape_mistake_runs(run):
    """``{message: run(namespace)}`` for every wrong landscape_along_gradient."""
    out = {}
    for variant, key in LANDSCAPE_VARIANTS.items():
        def wrong(model, x, y, loss_fn, lr, multipliers, _variant=variant):
            return landscape_variant(model, x, y, loss_fn, lr, multipliers, _variant)
        try:
            out[MSG[key]] = run({"landscape_along_gradient": wrong})
        except Exception:  # noqa: BLE001
            continue
    return out
