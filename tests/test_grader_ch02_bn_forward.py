"""Grading the grader of chapter 2: correct submissions written in other styles get full marks,
each common mistake costs points on its own exercise only and is named in the feedback."""

import textwrap

import pytest

from grading import GraderTests, failed_tests, grade_sources, Mistake, assert_full_marks, blocks_notebook, one_per_submission, patch_once, reference, without

SLUG = "ch02_bn_forward"
REF = reference(SLUG)
EXERCISES = ["batchnorm_forward", "update_running_stats", "batchnorm_inference", "spatial_batchnorm_forward"]


def override(code):
    """The reference followed by a new definition that replaces one of its functions."""
    return REF + "\n\n" + textwrap.dedent(code)


# A correct submission written as students write it: float sums in the dtype of x (no float64
# accumulation), np.var, multiplication by an inverse standard deviation, a cache with only the
# keys of the contract, a spatial forward of its own (moveaxis), inference as an affine map.
ALTERNATIVE = textwrap.dedent('''
    import numpy as np


    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        if x.shape[0] < 2:
            raise ValueError("need N >= 2")
        mean = x.sum(axis=0) / x.shape[0]
        var = np.var(x, axis=0)
        inv_std = 1.0 / np.sqrt(var + eps)
        x_hat = (x - mean) * inv_std
        cache = {"x": x, "x_hat": x_hat, "mean": mean, "var": var, "gamma": gamma, "eps": eps}
        return gamma * x_hat + beta, cache


    def update_running_stats(running_mean, running_var, x, momentum=0.1):
        n = x.shape[0]
        mean = x.mean(axis=0)
        unbiased = ((x - mean) ** 2).sum(axis=0) / (n - 1)
        return (running_mean + momentum * (mean - running_mean),
                running_var + momentum * (unbiased - running_var))


    def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
        scale = gamma / np.sqrt(running_var + eps)
        return x * scale + (beta - running_mean * scale)


    def spatial_batchnorm_forward(x, gamma, beta, eps=1e-5):
        N, C, H, W = x.shape
        if N * H * W < 2:
            raise ValueError("need at least 2 values per channel")
        rows = np.moveaxis(x, 1, -1).reshape(-1, C)
        out, cache = batchnorm_forward(rows, gamma, beta, eps)
        back = lambda a: np.moveaxis(a.reshape(N, H, W, C), -1, 1)
        return back(out), dict(cache, x=x, x_hat=back(cache["x_hat"]))
''')

CORRECT = {
    "reference.py": REF,
    "alternative.py": ALTERNATIVE,
    "alternative.ipynb": blocks_notebook("# Chapter 2 exercises", ALTERNATIVE),
}

ONE_PASS = '''
    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        if x.shape[0] < 2:
            raise ValueError("need N >= 2")
        mean = x.mean(axis=0)
        var = (x * x).mean(axis=0) - mean * mean
        x_hat = (x - mean) / np.sqrt(var + eps)
        cache = {"x": x, "x_hat": x_hat, "mean": mean, "var": var, "gamma": gamma, "eps": eps}
        return gamma * x_hat + beta, cache
'''

# name: (source, exercise that must lose points, a phrase the feedback must contain)
BUGGY = {
    "one_pass_variance": (override(ONE_PASS), "batchnorm_forward", "catastrophic cancellation"),
    "unbiased": (patch_once("var = (xmu * xmu).mean(axis=0, dtype=np.float64).astype(dtype)",
                            "var = (xmu * xmu).sum(axis=0, dtype=np.float64).astype(dtype) / (N - 1)", REF),
                 "batchnorm_forward", "unbiased variance"),
    "eps_outside": (patch_once("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps", REF),
                    "batchnorm_forward", "eps outside the square root"),
}

# The (N, C, H, W) <-> (N*H*W, C) layout, wrong one way or the other: named in the public
# check and the hidden tests alike.
LAYOUT = {
    "reshape_in_only": (patch_once("x_flat = x.transpose(0, 2, 3, 1).reshape(N * H * W, C)",
                                   "x_flat = x.reshape(N * H * W, C)", REF),
                        "spatial_batchnorm_forward", "without moving the channel axis last (the way back is right)"),
    "reshape_back_only": (patch_once("out = np.ascontiguousarray(out_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2))",
                                     "out = out_flat.reshape(N, C, H, W)", REF),
                          "spatial_batchnorm_forward", "straight to (N, C, H, W)"),
}
BUGGY.update(LAYOUT)

MISSING = "batchnorm_inference"


def calling_forward(mistakes):
    """spatial_batchnorm_forward of the reference calls batchnorm_forward: it may lose points too."""
    return {name: Mistake(*m[:3], frozenset({"spatial_batchnorm_forward"})) for name, m in mistakes.items()}


class TestGrader(GraderTests):
    slug, exercises, correct = SLUG, EXERCISES, CORRECT
    sources, mistakes = one_per_submission(BUGGY)
    mistakes = calling_forward(mistakes)
    missing = {"missing.py": (MISSING, without(REF, MISSING))}

    def test_correct_submissions_get_full_marks(self, reports, submission):
        assert_full_marks(reports[submission], self.exercises, points=(10, 29))   # batchnorm_forward: 29



@pytest.fixture(scope="module")
def public_reports(tmp_path_factory):
    return grade_sources(SLUG, {name: source for name, (source, _, _) in BUGGY.items()},
                         tmp_path_factory.mktemp("public"), public_only=True)


def test_a_failing_callee_is_named_as_the_cause(public_reports):
    """spatial_batchnorm_forward calls batchnorm_forward: its failures point there."""
    failed = failed_tests(public_reports["unbiased"], "spatial_batchnorm_forward")
    assert failed and all(t.output.startswith("spatial_batchnorm_forward calls your batchnorm_forward, which fails")
                          for t in failed), [t.output for t in failed]
    assert all(t.mistake == "calls_failing_exercise" for t in failed)
    layout = failed_tests(public_reports["reshape_back_only"], "spatial_batchnorm_forward")
    assert layout and not any("calls your" in t.output for t in layout)  # batchnorm_forward is right there
