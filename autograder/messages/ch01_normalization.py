"""What chapter 1's feedback says about each known mistake (``{identifier: explanation}``).

Texts only, no formula: the public checks use them with fingerprints computed from public
information (closed forms, NumPy), the hidden tests with ``autograder.mistakes.ch01_normalization``.
"""

MSG = {
    "unbiased": "It matches the unbiased variance (ddof=1, dividing by N - 1); the standardization "
                "of this chapter uses the biased variance, dividing by N (ddof=0), as Batch Normalization does.",
    "eps_outside": "It matches dividing by sqrt(var) + eps (eps outside the square root, or added to the "
                   "standard deviation); divide by sqrt(var + eps).",
    "no_sqrt": "It matches dividing by var + eps: the square root is missing.",
    "no_eps": "It matches dividing by sqrt(var) without eps.",
    "axis": "It matches statistics computed over the wrong axis (one mean per row, i.e. per example); "
            "standardize each column (feature) with statistics over the rows: axis=0.",
    "minmax": "It matches min-max scaling (X - min) / (max - min); this exercise asks for the z-score "
              "(X - mean) / sqrt(var + eps).",
    "not_centered": "It matches X / sqrt(var + eps): the mean is not subtracted.",
    "var_is_std": "It matches the standard deviation; return the variance (the square of the std).",
    "one_pass": "It matches the one-pass formula var = mean(X**2) - mean(X)**2, which loses most of its "
                "digits when the features have a large offset; use mean((X - mean)**2).",
    "eps_constant": "It matches eps = 1e-8 whatever the argument: use the eps that was passed.",
    "test_stats": "It matches standardizing X with its own mean and variance: apply_standardization must "
                  "use the given (training) mean and var, never statistics of the data it transforms.",
    "given_var_as_std": "It matches dividing by var + eps (treating var as a standard deviation): take the "
                        "square root, sqrt(var + eps).",
    "svd": "It matches the ratio of the singular values of X, which is the square root of the answer: "
           "the eigenvalues of X.T @ X / N are the squared singular values of X divided by N.",
    "inverted": "It matches lambda_min / lambda_max; the condition number is lambda_max / lambda_min (>= 1).",
    "centered": "It matches the condition number of the covariance matrix (X centered, as np.cov does); "
                "the Hessian of the least-squares loss is X.T @ X / N with the raw, uncentered X.",
    "gram": "It looks like the eigenvalues of the N x N matrix X @ X.T, which is singular when N > D (its "
            "smallest eigenvalue is 0 up to rounding); use the D x D matrix X.T @ X / N.",
    "no_mean_grad": "It matches a gradient without the 1/N, X.T @ (X w - y); the gradient of "
                    "||X w - y||^2 / (2N) is X.T @ (X w - y) / N.",
    "ascent": "It matches w <- w + lr * grad: gradient descent subtracts the gradient.",
    "loss_no_half": "It matches the loss ||X w - y||^2 / N, without the factor 1/2: L(w) = ||X w - y||^2 / (2N).",
    "loss_sum": "It matches the loss ||X w - y||^2 / 2, without dividing by N: L(w) = ||X w - y||^2 / (2N).",
    "extra_step": "It matches w after steps + 1 updates; run exactly `steps` updates.",
    "losses_count": "losses must have steps + 1 entries: the loss before each update, and after the last one.",
}
