"""Common mistakes in the BN forward pass, running statistics and inference."""

import numpy as np

MSG = {
    "unbiased": "It matches normalizing with the unbiased variance (ddof=1, the default of "
                "torch.var / x.std in some libraries); Algorithm 1 divides by N, not N - 1.",
    "eps_outside": "It matches dividing by sqrt(var) + eps (eps outside the square root, or added "
                   "to the standard deviation); BN divides by sqrt(var + eps).",
    "no_sqrt": "It matches dividing by var + eps: the square root is missing.",
    "cache_unbiased_var": "It is the unbiased variance (ddof=1); the cache holds the biased one, the "
                          "variance the forward pass normalizes with.",
    "no_eps": "It matches dividing by sqrt(var) without eps.",
    "axis": "It matches statistics computed over the wrong axis (per sample instead of per "
            "feature): average over the batch, axis 0.",
    "no_affine": "It matches the normalized x_hat without gamma and beta: the output is "
                 "gamma * x_hat + beta.",
    "no_beta": "It matches gamma * x_hat without beta.",
    "no_gamma": "It matches x_hat + beta without gamma.",
    "swapped_affine": "It matches beta * x_hat + gamma: gamma and beta are swapped.",
    "reversed_momentum": "It matches momentum * old + (1 - momentum) * batch: the CS231n convention. "
                         "PyTorch's momentum weights the *new* batch statistic: "
                         "(1 - momentum) * old + momentum * batch.",
    "biased_running_var": "It matches a running variance updated with the biased batch variance; "
                          "PyTorch stores the unbiased one (divide by N - 1).",
    "batch_stats_in_eval": "It matches normalizing with the statistics of the batch itself: in "
                           "evaluation mode BN must use running_mean and running_var.",
    "reshape_no_transpose": "It matches x.reshape(-1, C) without moving the channel axis last: "
                            "transpose (N, C, H, W) to (N, H, W, C) before reshaping to (N*H*W, C).",
    "reshape_in_no_transpose": "It matches x.reshape(-1, C) without moving the channel axis last (the "
                               "way back is right): each column then mixes channels and positions. Transpose "
                               "(N, C, H, W) to (N, H, W, C) before reshaping to (N*H*W, C).",
    "reshape_back_no_transpose": "It matches reshaping the (N*H*W, C) result straight to (N, C, H, W): "
                                 "reshape to (N, H, W, C) first, then transpose to (N, C, H, W).",
    "per_position": "It matches statistics over the batch axis only (a separate mean for every "
                    "channel *and position*); convolutional BN averages over N, H and W.",
    "instance_norm": "It matches statistics over H and W for each example separately (that is instance "
                     "normalization); BN also averages over the batch axis N.",
}


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
