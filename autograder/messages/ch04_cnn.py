"""What chapter 4's feedback says about each known mistake (``{identifier: explanation}``).

Texts only, no code: the public checks use them with fingerprints computed from public
information (PyTorch's own BN and autograd), the hidden tests with ``autograder.mistakes.ch04_cnn``.
"""

MSG = {
    "unbiased": "It matches normalizing with the unbiased variance (torch.var's default, "
                "correction=1): BN normalizes with the biased variance, x.var(dim=(0, 2, 3), unbiased=False).",
    "eps_outside": "It matches dividing by sqrt(var) + eps (eps outside the square root, or added to the "
                   "standard deviation); BN divides by sqrt(var + eps).",
    "per_position": "It matches statistics over the batch axis only (a separate mean for every channel "
                    "*and position*); BatchNorm2d averages each channel over N, H and W: dim=(0, 2, 3).",
    "per_sample": "It matches statistics per sample (over C, H, W, like LayerNorm); BatchNorm2d averages "
                  "each channel over the batch and the positions: dim=(0, 2, 3).",
    "reshape": "It matches x.reshape(-1, C) without moving the channel axis last: that mixes channels; "
               "use dim=(0, 2, 3), or permute to (N, H, W, C) before reshaping.",
    "no_affine": "It matches the normalized x_hat without weight and bias: the output is "
                 "weight * x_hat + bias (gamma and beta, broadcast as (1, C, 1, 1)).",
    "detached": "It matches BN with the batch mean and variance detached from the graph (computed under "
                "torch.no_grad() or with .detach()): in training mode the gradient must flow through the "
                "batch statistics; only the running-statistics update is done without gradient.",
    "reversed_momentum": "It matches running = momentum * running + (1 - momentum) * batch (the CS231n "
                         "convention). PyTorch's momentum weights the new batch statistic: "
                         "(1 - momentum) * running + momentum * batch.",
    "biased_running_var": "It matches a running_var updated with the biased batch variance; PyTorch "
                          "stores the unbiased one (divide by N*H*W - 1) in running_var.",
    "no_running_update": "It matches running statistics that are never updated: in training mode, update "
                         "running_mean and running_var (in place, under torch.no_grad()).",
    "no_num_batches": "num_batches_tracked is not incremented: add 1 at every training-mode forward pass.",
    "batch_stats_in_eval": "It matches normalizing with the statistics of the batch itself: in eval mode "
                           "BN must use running_mean and running_var.",
    # BatchNormFunction
    "dropped_paths": "It matches dx = gamma * dout / sqrt(var + eps): the gradient paths through the "
                     "batch mean and variance are missing (see the compact formula: "
                     "dx = gamma / sqrt(var + eps) / M * (M * dout - sum(dout) - x_hat * sum(dout * x_hat))).",
    "dropped_mean_path": "It matches dx without the path through the mean (the - sum(dout) term).",
    "dropped_var_path": "It matches dx without the path through the variance (the - x_hat * sum(dout * x_hat) term).",
    "dparams_mean": "It matches dgamma / dbeta divided by the number of values per channel (a mean instead "
                    "of a sum): dgamma = sum(dout * x_hat), dbeta = sum(dout) over N, H and W.",
    "dparams_batch": "It matches dgamma / dbeta divided by the batch size N: they are plain sums over N, H and W.",
    "dparams_no_spatial": "It matches dgamma / dbeta summed over N only; sum over N, H and W.",
    "swapped_dparams": "It matches dgamma and dbeta swapped: dgamma = sum(dout * x_hat), dbeta = sum(dout).",
    # evaluate
    "eval_train_mode": "It matches the accuracy with the model in training mode: BN then uses the batch "
                       "statistics. Call model.eval() before predicting.",
    "eval_count": "It matches the number of correct predictions: return the fraction (divide by len(X)).",
    "eval_percent": "It matches the accuracy in percent: return a fraction in [0, 1].",
    "eval_batch_mean": "It matches the mean of the per-batch accuracies, which over-weights the last, "
                       "smaller batch: count the correct predictions over all batches, then divide by len(X).",
    "eval_last_batch": "It matches the accuracy of the last batch only: accumulate over all batches.",
}
