"""What chapter 2's feedback says about each known mistake (``{identifier: explanation}``).

Texts only, no formula: the public checks use them with fingerprints computed from public
information (PyTorch's batch_norm and its outputs rescaled), the hidden tests with
``autograder.mistakes.ch02_bn_forward``.
"""

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
