"""What chapter 3's feedback says about each known mistake (``{identifier: explanation}``).

Texts only, no formula: the public checks use them with fingerprints computed from public
information (PyTorch autograd), the hidden tests with ``autograder.mistakes.ch03_bn_backward``.
"""

MSG = {
    "one_sided": "It matches the one-sided difference (f(x + h) - f(x)) / h, whose error is of order h; "
                 "use centered differences (f(x + h) - f(x - h)) / (2h), whose error is of order h**2.",
    "backward_diff": "It matches the one-sided difference (f(x) - f(x - h)) / h; use centered differences "
                     "(f(x + h) - f(x - h)) / (2h).",
    "no_half": "It matches (f(x + h) - f(x - h)) / h, twice the gradient: divide the centered difference by 2h.",
    "no_division": "It matches f(x + h) - f(x - h) without dividing by 2h.",
    "ignores_dout": "It matches the gradient of sum(f(x)), ignoring dout: differentiate sum(f(x) * dout).",
    "default_h": "It matches h = 1e-5 whatever the argument: use the h that was passed.",
    "x_changed": "x is different after the call: your function perturbs x in place and does not restore it "
                 "exactly. Save x[i] before perturbing and put the saved value back (or work on a copy).",
    "no_mean_path": "It matches dx without the gradient path through the mean mu (dmu is missing or not added "
                    "to dx): x feeds both x - mu and mu, so dx sums both branches.",
    "no_var_path": "It matches dx without the gradient path through the variance (dvar is missing or not "
                   "added): x - mu feeds both x_hat and var, so its gradient sums both branches.",
    "no_stat_paths": "It matches dx = gamma * dout / sqrt(var + eps), which treats mu and var as constants: "
                     "the gradient paths through the mean and the variance are both missing.",
    "var_path_only": "It matches dx with only the branch through the variance: the gradient of x - mu from "
                     "x_hat (dx_hat / std) was overwritten instead of added to the one from var.",
    "div_n": "It matches dgamma and dbeta divided by N (a mean over the batch instead of a sum): gamma and "
             "beta are shared by all rows, so their gradients are sums.",
    "div_nhw": "It matches dgamma and dbeta divided by the number of values per channel (N * H * W): they "
               "are sums, not means.",
    "no_gamma": "It matches dx without the factor gamma: dx_hat = dout * gamma.",
    "eps_outside": "It matches dividing by sqrt(var) + eps (eps outside the square root); the forward pass "
                   "divides by sqrt(var + eps), so the backward pass must too.",
    "no_eps": "It matches dividing by sqrt(var) without eps.",
    "unbiased": "It matches the unbiased variance (N - 1) somewhere in the backward pass; BN normalizes "
                "with the biased variance (divide by N), and its derivative has 2 (x - mu) / N.",
    "unbiased_xhat": "It matches x_hat and the scale recomputed with the unbiased variance (ddof=1); use the "
                     "cached biased variance (divide by N).",
    "missing_1_over_n": "It matches dx multiplied by N: a factor 1/N is missing (the mean and the variance "
                        "each divide by N).",
    "dgamma_x": "It matches dgamma = sum(dout * x); the output is gamma * x_hat + beta, so dgamma = "
                "sum(dout * x_hat).",
    "swapped": "It matches dgamma and dbeta swapped.",
    "reshape_no_transpose": "It matches reshaping (N, C, H, W) to (-1, C) without moving the channel axis "
                            "last: transpose to (N, H, W, C) before reshaping, and back after.",
    "reshape_back_no_transpose": "It matches reshaping the (N*H*W, C) result straight to (N, C, H, W): "
                                 "reshape to (N, H, W, C) first, then transpose to (N, C, H, W).",
    "count_n": "It matches the formula with N (the batch size) where the number of values per channel, "
               "N * H * W, belongs: every statistic is a mean over N, H and W.",
}
