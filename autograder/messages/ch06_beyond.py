"""What chapter 6's feedback says about each known mistake (``{identifier: explanation}``).

Texts only, no formula: the public checks use them with fingerprints computed from public
information (PyTorch's layer_norm, group_norm, autograd and fuse_conv_bn_weights on transformed
inputs), the hidden tests with ``autograder.mistakes.ch06_beyond``.
"""

MSG = {
    # LayerNorm forward
    "ln_batch_axis": "It matches statistics over the batch axis (axis 0): that is BatchNorm. "
                     "LayerNorm normalizes each row (example) with the mean and variance of its D features, axis=1.",
    "ln_batch_axis_1d": "It matches mean and variance computed over all of x at once instead of per row (axis=1).",
    "unbiased": "It matches normalizing with the unbiased variance (ddof=1, the default of torch.var / "
                "tensor.std); normalization divides by the number of values, not that number minus 1.",
    "eps_outside": "It matches dividing by sqrt(var) + eps (eps outside the square root, or added to the "
                   "standard deviation); the normalization divides by sqrt(var + eps).",
    "no_sqrt": "It matches dividing by var + eps: the square root is missing.",
    "no_eps": "It matches dividing by sqrt(var) without eps.",
    "no_affine": "It matches the normalized x_hat without gamma and beta: the output is gamma * x_hat + beta.",
    "no_beta": "It matches gamma * x_hat without beta.",
    "no_gamma": "It matches x_hat + beta without gamma.",
    "swapped_affine": "It matches beta * x_hat + gamma: gamma and beta are swapped.",
    # LayerNorm backward
    "dx_no_mean": "It matches a dx that drops the gradient path through the mean: dx needs the term "
                  "- sum(dx_hat) / D of every row (the mean depends on x).",
    "dx_no_var": "It matches a dx that drops the gradient path through the variance: dx needs the term "
                 "- x_hat * sum(dx_hat * x_hat) / D of every row (the variance depends on x).",
    "dx_no_stats": "It matches dx = dx_hat / sqrt(var + eps): the gradient paths through the mean and the "
                   "variance are both missing (they depend on x too).",
    "dx_bn_axis": "It matches BatchNorm's backward formula, with sums over the batch axis (axis 0); in "
                  "LayerNorm the statistics, hence the sums in dx, run over the features of each row (axis 1).",
    "dx_no_gamma": "It matches a dx computed from dout instead of dx_hat = dout * gamma: gamma is missing.",
    "dx_eps_outside": "It matches 1 / (sqrt(var) + eps): eps belongs inside the square root, "
                      "1 / sqrt(var + eps) (or use cache['inv_std']).",
    "dgamma_over_N": "It matches the sum divided by N (a mean over the batch): the gradients of the N "
                     "examples add up, so do not divide by N.",
    "dgamma_over_D": "It matches the sum divided by D: do not average, the gradients add up.",
    "dgamma_wrong_axis": "It matches a sum over axis 1 (the features of each example): gamma and beta have "
                         "one entry per feature, so sum over the examples, axis 0.",
    "dgamma_x": "It matches sum(dout * x): dgamma uses the normalized x_hat, not x.",
    # GroupNorm
    "gn_instance": "It matches statistics per channel (InstanceNorm, as if num_groups = C): each group "
                   "holds C // num_groups consecutive channels, normalized together.",
    "gn_layer": "It matches statistics over all channels of an example (LayerNorm, as if num_groups = 1): "
                "split the channels into num_groups groups.",
    "gn_interleaved": "It matches groups of interleaved channels (x.reshape(N, C // G, G, H, W), so channel "
                      "c goes to group c % G): reshape to (N, G, C // G, H, W) so that each group holds "
                      "consecutive channels.",
    "gn_channels_last": "It matches groups formed by reshaping an (N, H, W, C) array: each group must be "
                        "C // num_groups consecutive channels at all H * W positions; reshape the (N, C, H, W) "
                        "array directly to (N, G, -1).",
    "gn_group_size": "It matches groups of num_groups channels each (C // num_groups groups): num_groups is "
                     "the number of groups, each of C // num_groups channels.",
    "gn_batch": "It matches statistics that also average over the batch: GroupNorm's statistics are per "
                "example and per group (no batch axis).",
    "gn_gamma_per_group": "It matches gamma and beta applied per group (one value per group): they have one "
                          "value per channel; apply gamma.reshape(1, C, 1, 1) after reshaping back to (N, C, H, W).",
    # Folding
    "fold_input_axis": "It matches the scale applied along the input-channel axis (axis 1) of the weight: "
                       "BN scales the conv's *output* channels, weight * scale.reshape(-1, 1, 1, 1).",
    "fold_eps_outside": "It matches gamma / (sqrt(running_var) + eps): eps belongs inside the square root, "
                        "scale = gamma / sqrt(running_var + eps).",
    "fold_var_as_std": "It matches gamma / (running_var + eps): running_var is a variance, not a standard "
                       "deviation; take its square root, scale = gamma / sqrt(running_var + eps).",
    "fold_no_eps": "It matches gamma / sqrt(running_var) without eps: BN at inference divides by "
                   "sqrt(running_var + eps).",
    "fold_inverted": "It matches the inverse scale sqrt(running_var + eps) / gamma: the folded weight is "
                     "weight * gamma / sqrt(running_var + eps).",
    "fold_weight_unscaled": "It matches the original weight: the weight must be scaled too, "
                            "weight * gamma / sqrt(running_var + eps) per output channel.",
    "fold_no_gamma": "It matches a scale without gamma: scale = gamma / sqrt(running_var + eps).",
    "fold_bias_no_mean": "It matches a bias without the running_mean term: new_bias = (bias - running_mean) "
                         "* scale + beta (BN subtracts running_mean before scaling).",
    "fold_bias_unscaled": "It matches (bias - running_mean) + beta: the difference must be scaled, "
                          "new_bias = (bias - running_mean) * gamma / sqrt(running_var + eps) + beta.",
    "fold_bias_no_gamma": "It matches (bias - running_mean) / sqrt(running_var + eps) + beta: gamma is "
                          "missing; new_bias = (bias - running_mean) * gamma / sqrt(running_var + eps) + beta.",
    "fold_bias_ignored": "It matches a folded bias that ignores the convolution's own bias: new_bias = "
                         "(bias - running_mean) * scale + beta.",
    "fold_bias_no_beta": "It matches (bias - running_mean) * scale without beta: add BN's beta.",
    "fold_bias_mean_sign": "It matches (bias + running_mean) * scale + beta: BN subtracts the running mean.",
}


# --------------------------------------------------------------------------- crashes


def last_line(message: str) -> str:
    """The exception line (``TypeError: ...``) of a traceback reported by the sandbox."""
    lines = message.strip().splitlines()
    return lines[-1] if lines else message


def backward_crash_hint(message: str, cache_keys) -> str | None:
    """Feedback when layernorm_backward raised: a cache key of the student's own forward."""
    error = last_line(message)
    if error.startswith("KeyError"):
        return (f"layernorm_backward looked up a key the cache does not have ({error}). The grader passes the "
                f"cache of the reference layernorm_forward, with the keys {', '.join(sorted(cache_keys))}.")
    return None


def fold_crash_hint(message: str, weight_shape, bias_is_none: bool) -> str | None:
    """Feedback when fold_batchnorm raised: the scale broadcast along the wrong axis, or bias=None."""
    error = last_line(message)
    if "broadcast" in error:
        return (f"fold_batchnorm failed for a weight of shape {tuple(weight_shape)} ({error}). The scale "
                f"gamma / sqrt(running_var + eps) has one value per output channel: multiply the weight along "
                f"axis 0, weight * scale.reshape(-1, 1, 1, 1), not along the input channels.")
    if bias_is_none:
        return ("fold_batchnorm failed with bias=None (a convolution without bias, as before a BN layer): treat a "
                f"missing bias as zeros. The error: {error}")
    return None
