"""Grading the grader of chapter 3: correct submissions get full marks, each common mistake
costs points on its own exercise only and is named in the feedback."""

import textwrap

import pytest

from autograder.cli import format_text
from autograder.messages.ch03_bn_backward import MSG
from grading import GraderTests, failed_tests, grade_sources, notebook, one_per_submission, reference

SLUG = "ch03_bn_backward"
REF = reference(SLUG)
EXERCISES = ["numerical_gradient", "batchnorm_backward", "batchnorm_backward_compact", "spatial_batchnorm_backward"]

# A correct spatial backward that does not call batchnorm_backward_compact (summing over
# N, H and W directly), so that a bug planted in the compact form stays in its exercise.
SPATIAL_ALONE = textwrap.dedent('''
    def spatial_batchnorm_backward(dout, cache):
        N, C, H, W = dout.shape
        m = N * H * W
        xh = cache["x_hat"]
        g = cache["gamma"].reshape(1, C, 1, 1)
        std = np.sqrt(cache["var"] + cache["eps"]).reshape(1, C, 1, 1)
        dbeta = dout.sum(axis=(0, 2, 3))
        dgamma = (dout * xh).sum(axis=(0, 2, 3))
        dx = g / (m * std) * (m * dout - dbeta.reshape(1, C, 1, 1) - xh * dgamma.reshape(1, C, 1, 1))
        return dx, dgamma, dbeta
''')
BASE = REF + "\n\n" + SPATIAL_ALONE


def function_span(source, name):
    start = source.index(f"def {name}(")
    end = source.find("\ndef ", start + 1)
    return start, (len(source) if end < 0 else end)


def patch(old, new, function=None, source=BASE):
    """``source`` with ``old`` replaced by ``new`` once (inside ``function`` when given)."""
    start, end = function_span(source, function) if function else (0, len(source))
    body = source[start:end]
    assert body.count(old) == 1, f"not found exactly once in {function or 'the reference'}: {old!r}"
    return source[:start] + body.replace(old, new) + source[end:]


def override(code, source=BASE):
    return source + "\n\n" + textwrap.dedent(code)


def without(source, name):
    start, end = function_span(source, name)
    return source[:start] + source[end:]


# A correct submission written differently: CS231n-style numerical gradient (perturbing x
# in place and restoring it), a staged backward that recomputes everything from x, a
# compact form with means, and a spatial backward without reshapes.
ALTERNATIVE = textwrap.dedent('''
    import numpy as np


    def numerical_gradient(f, x, dout, h=1e-5):
        grad = np.zeros_like(x, dtype=float)
        it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
        while not it.finished:
            ix = it.multi_index
            old = x[ix]
            x[ix] = old + h
            pos = f(x).copy()
            x[ix] = old - h
            neg = f(x).copy()
            x[ix] = old
            grad[ix] = np.sum((pos - neg) * dout) / (2 * h)
            it.iternext()
        return grad


    def batchnorm_backward(dout, cache):
        x, gamma, eps = cache["x"], cache["gamma"], cache["eps"]
        N = x.shape[0]
        mu = x.mean(axis=0)
        xc = x - mu
        var = np.mean(xc ** 2, axis=0)
        sd = np.sqrt(var + eps)
        inv = 1 / sd
        xn = xc * inv
        dbeta = np.sum(dout, axis=0)
        dgamma = np.sum(dout * xn, axis=0)
        dxn = dout * gamma
        dinv = np.sum(dxn * xc, axis=0)
        dxc1 = dxn * inv
        dsd = -dinv / sd ** 2
        dvar = 0.5 * dsd / sd
        dxc2 = 2 * xc * np.ones_like(dout) * dvar / N
        dx1 = dxc1 + dxc2
        dmu = -np.sum(dx1, axis=0)
        dx2 = np.ones_like(dout) * dmu / N
        return dx1 + dx2, dgamma, dbeta


    def batchnorm_backward_compact(dout, cache):
        xh, g = cache["x_hat"], cache["gamma"]
        inv_std = 1.0 / np.sqrt(cache["var"] + cache["eps"])
        dbeta = dout.sum(0)
        dgamma = (dout * xh).sum(0)
        dx = g * inv_std * (dout - dout.mean(0) - xh * (dout * xh).mean(0))
        return dx, dgamma, dbeta
''') + SPATIAL_ALONE


CORRECT = {
    "reference.py": REF,
    "alternative.py": ALTERNATIVE,
    # The alternative as a notebook: one cell per function, a magic, and a failing graded cell.
    "alternative.ipynb": notebook([("markdown", "# Chapter 3 exercises"), "%load_ext autoreload\nimport numpy as np",
                                   *("def " + chunk.strip() for chunk in ALTERNATIVE.split("\ndef ")[1:])],
                                  graded="raise AssertionError('a test cell of the released notebook')"),
}

ONE_SIDED = '''
    def numerical_gradient(f, x, dout, h=1e-5):
        x = np.array(x, dtype=float)
        base = np.sum(f(x.copy()) * dout)
        grad = np.zeros_like(x)
        for ix in np.ndindex(x.shape):
            xp = x.copy()
            xp[ix] += h
            grad[ix] = (np.sum(f(xp) * dout) - base) / h
        return grad
'''

NOT_RESTORED = '''
    def numerical_gradient(f, x, dout, h=1e-5):
        grad = np.zeros_like(x, dtype=float)
        for ix in np.ndindex(x.shape):
            old = x[ix]
            x[ix] = old + h
            pos = np.sum(f(x) * dout)
            x[ix] = old - h
            neg = np.sum(f(x) * dout)
            grad[ix] = (pos - neg) / (2 * h)
        return grad
'''

COUNT_N = SPATIAL_ALONE.replace("m = N * H * W", "m = N")

# name: (source, exercise that must lose points, a phrase the feedback must contain)
BUGGY = {
    "ng_one_sided": (override(ONE_SIDED), "numerical_gradient", "one-sided difference"),
    "ng_no_half": (patch("dx[index] = (values[0] - values[1]) / (2 * h)", "dx[index] = (values[0] - values[1]) / h"),
                   "numerical_gradient", "twice the gradient"),
    "ng_ignores_dout": (patch("values.append(np.sum(out * dout, dtype=np.float64))",
                              "values.append(np.sum(out, dtype=np.float64))"),
                        "numerical_gradient", "ignoring dout"),
    "ng_ignores_h": (patch("h = float(h)", "h = 1e-5"), "numerical_gradient", "use the h that was passed"),
    "ng_x_not_restored": (override(NOT_RESTORED), "numerical_gradient", "does not restore it"),
    "bb_no_mean_path": (patch("dx = dx_from_xmu + dx_from_mu", "dx = dx_from_xmu", "batchnorm_backward"),
                        "batchnorm_backward", "path through the mean"),
    "bb_no_var_path": (patch("dxmu = dxmu_from_xhat + dxmu_from_var", "dxmu = dxmu_from_xhat", "batchnorm_backward"),
                       "batchnorm_backward", "path through the variance"),
    "bb_branch_overwritten": (patch("dxmu = dxmu_from_xhat + dxmu_from_var", "dxmu = dxmu_from_var", "batchnorm_backward"),
                              "batchnorm_backward", "overwritten instead of added"),
    "bb_means_not_sums": (patch("return dx, dgamma, dbeta", "return dx, dgamma / N, dbeta / N", "batchnorm_backward"),
                          "batchnorm_backward", "dgamma and dbeta divided by N"),
    "bb_unbiased": (patch("dxmu_from_var = 2.0 * xmu * dvar / N", "dxmu_from_var = 2.0 * xmu * dvar / (N - 1)",
                          "batchnorm_backward"),
                    "batchnorm_backward", "unbiased variance"),
    "bb_dout_in_place": (patch("dx_hat = dout * gamma", "dout *= gamma\n    dx_hat = dout", "batchnorm_backward"),
                         "batchnorm_backward", "modified its input dout in place"),
    "bc_no_stat_paths": (patch("dx = (gamma / (N * std)) * (N * dout - dbeta - x_hat * dgamma)", "dx = gamma * dout / std",
                               "batchnorm_backward_compact"),
                         "batchnorm_backward_compact", "treats mu and var as constants"),
    "bc_no_gamma": (patch("dx = (gamma / (N * std)) *", "dx = (1.0 / (N * std)) *", "batchnorm_backward_compact"),
                    "batchnorm_backward_compact", "without the factor gamma"),
    "bc_eps_outside": (patch("std = np.sqrt(var + float(eps))", "std = np.sqrt(var) + float(eps)",
                             "batchnorm_backward_compact"),
                       "batchnorm_backward_compact", "eps outside the square root"),
    "bc_unbiased": (patch("N = x_hat.shape[0]", "N = x_hat.shape[0]\n    var = cache['x'].var(axis=0, ddof=1)",
                          "batchnorm_backward_compact"),
                    "batchnorm_backward_compact", "unbiased variance"),
    "bc_means_not_sums": (patch("return dx, dgamma, dbeta", "return dx, dgamma / N, dbeta / N",
                                "batchnorm_backward_compact"),
                          "batchnorm_backward_compact", "dgamma and dbeta divided by N"),
    "bc_unknown_cache_key": (patch('x_hat, var, gamma, eps = cache["x_hat"], cache["var"], cache["gamma"], cache["eps"]',
                                   'x_hat, var, gamma, eps = cache["xhat"], cache["var"], cache["gamma"], cache["eps"]',
                                   "batchnorm_backward_compact"),
                             "batchnorm_backward_compact", "cache contract"),
    "sp_reshape_no_transpose": (
        patch("dx = np.ascontiguousarray(dx_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2))", "dx = dx_flat.reshape(N, C, H, W)",
              "spatial_batchnorm_backward",
              patch("return a.transpose(0, 2, 3, 1).reshape(N * H * W, C)", "return a.reshape(N * H * W, C)",
                    "spatial_batchnorm_backward", REF), ),
        "spatial_batchnorm_backward", "without moving the channel axis last"),
    "sp_back_no_transpose": (
        patch("dx = np.ascontiguousarray(dx_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2))", "dx = dx_flat.reshape(N, C, H, W)",
              "spatial_batchnorm_backward", REF),
        "spatial_batchnorm_backward", "reshape to (N, H, W, C) first"),
    "sp_means_not_sums": (
        patch("return dx, dgamma, dbeta", "return dx, dgamma / (N * H * W), dbeta / (N * H * W)",
              "spatial_batchnorm_backward", REF),
        "spatial_batchnorm_backward", "number of values per channel"),
    "sp_count_n": (override(COUNT_N), "spatial_batchnorm_backward", "N * H * W, belongs"),
}

MISSING = "spatial_batchnorm_backward"


class TestGrader(GraderTests):
    slug, exercises, correct = SLUG, EXERCISES, CORRECT
    sources, mistakes = one_per_submission(BUGGY)
    missing = {"missing.py": (MISSING, without(REF, MISSING))}
    not_public = {
        "ng_ignores_h": "the public check calls numerical_gradient with its default h",
        "bc_unbiased": "x_hat recomputed with the unbiased variance is no gradient of any BN autograd computes",
        "sp_count_n": "the compact formula with N for N*H*W is likewise specific to that formula",
    }


# dgamma and dbeta as means, then used by the compact formula for dx: dx is wrong too, but
# only through them.
MEANS_USED_IN_DX = patch("dgamma = (dout * x_hat).sum(axis=0)\n", "dgamma = (dout * x_hat).mean(axis=0)\n",
                         "batchnorm_backward_compact")


@pytest.fixture(scope="module")
def propagated(tmp_path_factory):
    return grade_sources(SLUG, {"means.py": MEANS_USED_IN_DX}, tmp_path_factory.mktemp("propagated"))["means.py"]


def test_a_mistake_that_propagates_is_named_at_its_root(propagated):
    """dgamma / N used in dx: the feedback names dgamma's mistake first and says dx follows."""
    hidden = [t for t in failed_tests(propagated, "batchnorm_backward_compact") if "matches_reference" in t.name]
    assert hidden
    for test in hidden:
        first, second = test.output.splitlines()[:2]
        assert first.startswith("dgamma is wrong") and MSG["div_n"] in first, test.output
        assert second == "dx is wrong only because it uses your dgamma: fix it first.", test.output
        assert test.mistake == "div_n"
    public = [t for t in failed_tests(propagated, "batchnorm_backward_compact") if t.name.endswith("_public")]
    assert public and public[0].output.startswith("dgamma is wrong") and public[0].mistake == "div_n"


def test_the_same_feedback_is_said_once_with_its_cases(propagated):
    text = format_text(propagated)
    section = text.split("batchnorm_backward_compact  [")[1].split("\n\n")[0]
    assert section.count(MSG["div_n"]) == 2  # once for the public check, once for the 8 hidden tests
    assert "(the same in all 8 tests above)" in section
