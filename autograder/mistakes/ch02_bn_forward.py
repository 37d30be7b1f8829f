"""Common mistakes in the BN forward pass, running statistics and inference."""

import numpy as np

from autograder.messages.ch02_bn_forward import MSG  # noqa: F401 - the texts, shared with the public checks


def normalize(x, mean, var, eps, gamma, beta, how="correct"):
    if how == "eps_outside":
        x_hat = (x - mean) / (np.sqrt(var) + eps)
    elif how == "no_sqrt":
        x_hat = (x - mean) / (var + eps)
    elif how == "no_eps":
        with np.errstate(divide="ignore", invalid="ignore"):
            x_hat = (x - mean) / np.sqrt(var)
    else:
        x_hat = (x - mean) / np.sqrt(var + eps)
    return gamma * x_hat + beta


def forward_mistakes(x, gamma, beta, eps=1e-5):
    """Outputs of the common bugs of batchnorm_forward, float64."""
    x = np.asarray(x, dtype=np.float64)
    mean, var, var1 = x.mean(0), x.var(0), x.var(0, ddof=1)
    x_hat = (x - mean) / np.sqrt(var + eps)
    out = {
        MSG["unbiased"]: normalize(x, mean, var1, eps, gamma, beta),
        MSG["eps_outside"]: normalize(x, mean, var, eps, gamma, beta, "eps_outside"),
        MSG["no_sqrt"]: normalize(x, mean, var, eps, gamma, beta, "no_sqrt"),
        MSG["no_eps"]: normalize(x, mean, var, eps, gamma, beta, "no_eps"),
        MSG["no_affine"]: x_hat,
        MSG["no_beta"]: gamma * x_hat,
        MSG["no_gamma"]: x_hat + beta,
        MSG["swapped_affine"]: beta * x_hat + gamma,
    }
    m1, v1 = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    out[MSG["axis"]] = gamma * (x - m1) / np.sqrt(v1 + eps) + beta
    return out


def running_mistakes(running_mean, running_var, x, momentum=0.1):
    x = np.asarray(x, dtype=np.float64)
    mean, var, var1 = x.mean(0), x.var(0), x.var(0, ddof=1)
    m = momentum
    return {
        "mean": {MSG["reversed_momentum"]: m * running_mean + (1 - m) * mean},
        "var": {
            MSG["reversed_momentum"]: m * running_var + (1 - m) * var1,
            MSG["biased_running_var"]: (1 - m) * running_var + m * var,
            MSG["reversed_momentum"] + " " + MSG["biased_running_var"]: m * running_var + (1 - m) * var,
        },
    }


def inference_mistakes(x, gamma, beta, running_mean, running_var, eps=1e-5):
    x = np.asarray(x, dtype=np.float64)
    return {
        MSG["batch_stats_in_eval"]: normalize(x, x.mean(0), x.var(0), eps, gamma, beta),
        MSG["eps_outside"]: normalize(x, running_mean, running_var, eps, gamma, beta, "eps_outside"),
        MSG["no_sqrt"]: normalize(x, running_mean, running_var, eps, gamma, beta, "no_sqrt"),
        MSG["no_affine"]: normalize(x, running_mean, running_var, eps, 1.0, 0.0),
    }


def spatial_mistakes(x, gamma, beta, eps=1e-5):
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    g, b = gamma.reshape(1, C, 1, 1), beta.reshape(1, C, 1, 1)
    out = {}
    def bn_rows(flat):
        return (flat - flat.mean(0)) / np.sqrt(flat.var(0) + eps) * gamma + beta

    wrong = bn_rows(x.reshape(-1, C))  # no transpose before flattening
    out[MSG["reshape_no_transpose"]] = wrong.reshape(N, C, H, W)
    out[MSG["reshape_in_no_transpose"]] = wrong.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    right = bn_rows(x.transpose(0, 2, 3, 1).reshape(-1, C))
    out[MSG["reshape_back_no_transpose"]] = right.reshape(N, C, H, W)  # no transpose on the way back
    mean, var = x.mean(0, keepdims=True), x.var(0, keepdims=True)
    out[MSG["per_position"]] = g * (x - mean) / np.sqrt(var + eps) + b
    mean, var = x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True)
    var1 = x.var((0, 2, 3), keepdims=True, ddof=1)
    out[MSG["unbiased"]] = g * (x - mean) / np.sqrt(var1 + eps) + b
    out[MSG["eps_outside"]] = g * (x - mean) / (np.sqrt(var) + eps) + b
    out[MSG["no_affine"]] = (x - mean) / np.sqrt(var + eps)
    mean, var = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True)
    out[MSG["instance_norm"]] = g * (x - mean) / np.sqrt(var + eps) + b
    return out
