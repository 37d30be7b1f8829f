"""Grading the grader of chapter 1: correct submissions get full marks, each common mistake
costs points on its own exercise only and is named in the feedback."""

import textwrap

from grading import RELEASED_TEST_CELL, GraderTests, notebook, one_per_submission, reference, without

SLUG = "ch01_normalization"
REF = reference(SLUG)
EXERCISES = ["standardize", "apply_standardization", "condition_number", "gd_least_squares"]


def patch(old, new, source=REF):
    """The reference with one exact line replaced (the replacement must happen once)."""
    assert source.count(old) == 1, f"not found exactly once in the reference: {old!r}"
    return source.replace(old, new)


def override(code):
    """The reference followed by a new definition that replaces one of its functions."""
    return REF + "\n\n" + textwrap.dedent(code)


# A correct submission written differently: other names, other structure, lists, SVD-free.
ALTERNATIVE = textwrap.dedent('''
    import numpy as np


    def standardize(X, eps=1e-8):
        mu = np.mean(X, axis=0)
        centered = X - mu[np.newaxis, :]
        sigma2 = np.mean(centered ** 2, axis=0)
        return centered / np.sqrt(sigma2 + eps), mu, sigma2


    def apply_standardization(X, mean, var, eps=1e-8):
        scale = 1.0 / np.sqrt(var + eps)
        return (X - mean) * scale


    def condition_number(X):
        lam = np.linalg.eigvalsh(X.T @ X)  # the factor 1/N cancels in the ratio
        if lam.min() <= 0:
            return np.inf
        return lam.max() / lam.min()


    def gd_least_squares(X, y, lr, steps, w0=None):
        n = len(y)
        w = np.zeros(X.shape[1]) if w0 is None else np.array(w0, dtype=float)
        losses = []
        for step in range(steps):
            r = X.dot(w) - y
            losses.append(0.5 * np.mean(r ** 2))
            w = w - lr * X.T.dot(r) / n
        losses.append(0.5 * np.mean((X.dot(w) - y) ** 2))
        return w, losses
''')


CORRECT = {
    "reference.py": REF,
    "alternative.py": ALTERNATIVE,
    # The alternative as a notebook: one cell per function, a magic, and a failing graded cell.
    "alternative.ipynb": notebook([("markdown", "# Chapter 1 exercises"), "%matplotlib inline\nimport numpy as np",
                                   *("def " + chunk.strip() for chunk in ALTERNATIVE.split("\n\n\ndef ")[1:])],
                                  graded=RELEASED_TEST_CELL),
    # X.T @ X without / N has the same condition number: not a mistake.
    "gram_without_n.py": patch("H = X.T @ X / X.shape[0]", "H = X.T @ X"),
}

# name: (source, exercise that must lose points, a phrase the feedback must contain)
BUGGY = {
    # the one-pass variance: right in exact arithmetic, no digits left at an offset of 1e6 spreads
    "one_pass_variance": (
        patch("var = (Xc * Xc).mean(axis=0, dtype=np.float64).astype(dtype)  # biased: divide by N",
              "var = (X * X).mean(axis=0) - mean * mean"),
        "standardize", "one-pass"),
    "std_ddof1": (
        patch("var = (Xc * Xc).mean(axis=0, dtype=np.float64).astype(dtype)  # biased: divide by N",
              "var = X.var(axis=0, ddof=1).astype(dtype)"),
        "standardize", "unbiased variance (ddof=1"),
    "std_eps_outside": (
        patch("Z = Xc / np.sqrt(var + eps)", "Z = Xc / (np.sqrt(var) + eps)"),
        "standardize", "eps outside the square root"),
    "std_rows": (
        override('''
            def standardize(X, eps=1e-8):
                mean = X.mean(axis=1, keepdims=True)
                var = X.var(axis=1, keepdims=True)
                return (X - mean) / np.sqrt(var + eps), mean.ravel(), var.ravel()
        '''),
        "standardize", "wrong axis"),
    "std_minmax": (
        patch("Z = Xc / np.sqrt(var + eps)", "Z = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0))"),
        "standardize", "min-max scaling"),
    "std_inplace": (
        patch("Xc = X - mean", "X -= mean\n    Xc = X"),
        "standardize", "modified its input X in place"),
    "apply_test_stats": (
        patch("return (X - mean) / np.sqrt(var + float(eps))",
              "return (X - X.mean(axis=0)) / np.sqrt(X.var(axis=0) + float(eps))"),
        "apply_standardization", "own mean and variance"),
    "apply_eps_outside": (
        patch("return (X - mean) / np.sqrt(var + float(eps))", "return (X - mean) / (np.sqrt(var) + float(eps))"),
        "apply_standardization", "eps outside the square root"),
    "cond_singular_values": (
        patch("eigenvalues = np.linalg.eigvalsh(H)  # ascending order",
              "eigenvalues = np.linalg.svd(X, compute_uv=False)[::-1]"),
        "condition_number", "singular values of X"),
    "cond_inverted": (
        patch("return float(eigenvalues[-1] / eigenvalues[0])", "return float(eigenvalues[0] / eigenvalues[-1])"),
        "condition_number", "lambda_min / lambda_max"),
    "cond_covariance": (
        patch("H = X.T @ X / X.shape[0]", "H = np.cov(X, rowvar=False)"),
        "condition_number", "covariance matrix"),
    "cond_x_xt": (
        patch("H = X.T @ X / X.shape[0]", "H = X @ X.T / X.shape[0]"),
        "condition_number", "N x N matrix X @ X.T"),
    "gd_grad_without_n": (
        patch("grad = X.T @ residual / N", "grad = X.T @ residual"),
        "gd_least_squares", "without the 1/N"),
    "gd_steps_losses": (
        override('''
            def gd_least_squares(X, y, lr, steps, w0=None):
                w = np.zeros(X.shape[1]) if w0 is None else np.array(w0, dtype=float)
                losses = []
                for _ in range(steps):
                    r = X @ w - y
                    losses.append(r @ r / (2 * len(y)))
                    w = w - lr * X.T @ r / len(y)
                return w, np.array(losses)
        '''),
        "gd_least_squares", "steps + 1 entries"),
    "gd_loss_without_half": (
        patch("losses[t] = residual @ residual / (2 * N)", "losses[t] = residual @ residual / N"),
        "gd_least_squares", "without the factor 1/2"),
    "gd_w0_in_place": (
        override('''
            def gd_least_squares(X, y, lr, steps, w0=None):
                w = np.zeros(X.shape[1]) if w0 is None else w0
                losses = []
                for t in range(steps + 1):
                    r = X @ w - y
                    losses.append(r @ r / (2 * len(y)))
                    if t < steps:
                        w -= lr * X.T @ r / len(y)
                return w, np.array(losses)
        '''),
        "gd_least_squares", "modified its input w0 in place"),
    "gd_one_step_too_many": (
        override('''
            def gd_least_squares(X, y, lr, steps, w0=None):
                w = np.zeros(X.shape[1]) if w0 is None else np.array(w0, dtype=float)
                losses = []
                for _ in range(steps + 1):
                    r = X @ w - y
                    losses.append(r @ r / (2 * len(y)))
                    w = w - lr * X.T @ r / len(y)
                return w, np.array(losses)
        '''),
        "gd_least_squares", "after steps + 1 updates"),
}

MISSING = "condition_number"


class TestGrader(GraderTests):
    slug, exercises, correct = SLUG, EXERCISES, CORRECT
    sources, mistakes = one_per_submission(BUGGY)
    missing = {"missing.py": (MISSING, without(REF, MISSING))}
