"""Grading the grader of chapter 6 (LayerNorm, GroupNorm, folding BN).

Correct submissions in several styles must get full marks; each common mistake, planted
in an otherwise correct submission, must cost points on its exercise only, with feedback
that names the mistake; a missing exercise scores 0 and nothing else.

All submissions are graded once, by a module-scoped fixture, and shared by the tests.
"""

import textwrap
from pathlib import Path

import pytest

from autograder.mistakes.ch06_beyond import MSG
from grading import (assert_full_marks, assert_mistake_named, assert_only_missing, failed_tests, grade_release,
                     grade_sources, notebook, public_imports)

SLUG = "ch06_beyond"
ROOT = Path(__file__).resolve().parents[1]
REF = (ROOT / "solutions" / f"{SLUG}.py").read_text()
EXERCISES = ("layernorm_forward", "layernorm_backward", "groupnorm_forward", "fold_batchnorm")


# --------------------------------------------------------------------------- building submissions


def _span(source: str, name: str) -> tuple[int, int]:
    """Where the top-level function ``name`` is defined in ``source``."""
    start = source.index(f"\ndef {name}(") + 1
    end = source.find("\ndef ", start)
    return start, len(source) if end < 0 else end + 1


def patch(name: str, *replacements: tuple[str, str]) -> str:
    """The reference with text replaced inside function ``name`` (each ``old`` exactly once)."""
    start, end = _span(REF, name)
    body = REF[start:end]
    for old, new in replacements:
        assert body.count(old) == 1, f"{old!r} occurs {body.count(old)} times in {name}"
        body = body.replace(old, new)
    return REF[:start] + body + REF[end:]


def override(code: str) -> str:
    """The reference followed by a redefinition (the later definition wins)."""
    return REF + "\n\n" + textwrap.dedent(code)


def without(name: str) -> str:
    start, end = _span(REF, name)
    return REF[:start] + REF[end:]


ALTERNATIVE = '''
import numpy as np


def layernorm_forward(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    sigma2 = np.mean(xc * xc, axis=-1, keepdims=True)
    xhat = xc / np.sqrt(sigma2 + eps)
    y = xhat * gamma[None, :] + beta[None, :]
    return y, dict(x=x, x_hat=xhat, mean=mu, var=sigma2, gamma=gamma, beta=beta, eps=eps)


def layernorm_backward(dout, cache):
    """Staged, along the computational graph."""
    x, x_hat, gamma, eps = cache["x"], cache["x_hat"], cache["gamma"], cache["eps"]
    mean, var = cache["mean"].reshape(-1, 1), cache["var"].reshape(-1, 1)
    D = x.shape[1]
    xc = x - mean
    istd = 1.0 / np.sqrt(var + eps)
    dbeta = dout.sum(0)
    dgamma = (dout * x_hat).sum(0)
    dxhat = dout * gamma
    dxc = dxhat * istd
    dvar = (dxhat * xc).sum(1, keepdims=True) * -0.5 * (var + eps) ** -1.5
    dxc = dxc + dvar * 2.0 * xc / D
    dmean = -dxc.sum(1, keepdims=True)
    return dxc + dmean / D, dgamma, dbeta


def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
    """GroupNorm is LayerNorm of the (N * G, C // G * H * W) rows."""
    N, C, H, W = x.shape
    rows = x.reshape(N * num_groups, -1)
    ones, zeros = np.ones(rows.shape[1], x.dtype), np.zeros(rows.shape[1], x.dtype)
    x_hat = layernorm_forward(rows, ones, zeros, eps)[0].reshape(N, C, H, W)
    return x_hat * gamma[:, None, None] + beta[:, None, None], {"x_hat": x_hat}


def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    s = gamma / np.sqrt(running_var + eps)
    b0 = 0.0 if bias is None else bias
    return np.einsum("o,oikl->oikl", s, weight), beta + (b0 - running_mean) * s
'''

# A notebook: float64 everywhere (also for float32 inputs), PyTorch tensors returned by
# fold_batchnorm, the definitions spread over cells between prose and a demo cell.
NOTEBOOK_CELLS = [
    ("markdown", "# Chapter 6 exercises"),
    ("code", "import numpy as np\nimport torch"),
    ("code", '''
def layernorm_forward(x, gamma, beta, eps=1e-5):
    x = np.asarray(x, dtype=np.float64)
    m = x.mean(axis=1)[:, None]
    v = x.var(axis=1)[:, None]
    x_hat = (x - m) / np.sqrt(v + eps)
    return gamma * x_hat + beta, {"x": x, "x_hat": x_hat, "mean": m[:, 0], "var": v[:, 0], "gamma": gamma, "eps": eps}
'''),
    ("code", '''
def layernorm_backward(dout, cache):
    x_hat, gamma = cache["x_hat"].astype(np.float64), cache["gamma"].astype(np.float64)
    inv = 1 / np.sqrt(cache["var"].astype(np.float64) + cache["eps"])[:, None]
    g = dout * gamma
    dx = inv * (g - g.mean(1, keepdims=True) - x_hat * (g * x_hat).mean(1, keepdims=True))
    return dx, np.einsum("nd,nd->d", dout, x_hat), dout.sum(axis=0)
'''),
    ("markdown", "GroupNorm: groups of consecutive channels."),
    ("code", '''
def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
    n, c, h, w = x.shape
    v = x.astype(np.float64).reshape(n, num_groups, c // num_groups, h, w)
    mu = v.mean(axis=(2, 3, 4), keepdims=True)
    var = v.var(axis=(2, 3, 4), keepdims=True)
    x_hat = ((v - mu) / np.sqrt(var + eps)).reshape(n, c, h, w)
    return gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1), {"x_hat": x_hat}
'''),
    ("code", '''
def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    w = torch.as_tensor(weight, dtype=torch.float64)
    scale = torch.as_tensor(gamma, dtype=torch.float64) / torch.sqrt(torch.as_tensor(running_var, dtype=torch.float64) + eps)
    b = torch.zeros_like(scale) if bias is None else torch.as_tensor(bias, dtype=torch.float64)
    new_b = (b - torch.as_tensor(running_mean, dtype=torch.float64)) * scale + torch.as_tensor(beta, dtype=torch.float64)
    return w * scale.view(-1, *([1] * (w.dim() - 1))), new_b
'''),
    ("code", "out, _ = layernorm_forward(np.random.randn(4, 3), np.ones(3), np.zeros(3))\nprint(out.std(axis=1))"),
]


CORRECT = {
    "reference": REF,
    "alternative": ALTERNATIVE,
    "notebook": notebook([(kind, src if kind == "markdown" else src.strip()) for kind, src in NOTEBOOK_CELLS]),
}

# name -> (exercise, a phrase the feedback must contain, source)
BUGGY = {
    # ---------------------------------------------------------------- layernorm_forward
    "ln_one_pass_variance": ("layernorm_forward", "catastrophic cancellation", patch(
        "layernorm_forward", ("var = ((x - mean[:, None]) ** 2).mean(axis=1)", "var = (x * x).mean(axis=1) - mean ** 2"))),
    "ln_batch_axis": ("layernorm_forward", "that is BatchNorm", override('''
        def layernorm_forward(x, gamma, beta, eps=1e-5):
            mean, var = x.mean(axis=0), x.var(axis=0)
            x_hat = (x - mean) / np.sqrt(var + eps)
            return gamma * x_hat + beta, {"x": x, "x_hat": x_hat, "mean": mean, "var": var, "gamma": gamma, "eps": eps}
    ''')),
    "ln_unbiased": ("layernorm_forward", MSG["unbiased"][:40], patch(
        "layernorm_forward", ("var = ((x - mean[:, None]) ** 2).mean(axis=1)", "var = x.var(axis=1, ddof=1)"))),
    "ln_eps_outside": ("layernorm_forward", "eps outside the square root", patch(
        "layernorm_forward", ("inv_std = 1.0 / np.sqrt(var + eps)", "inv_std = 1.0 / (np.sqrt(var) + eps)"))),
    "ln_no_affine": ("layernorm_forward", "without gamma and beta", patch(
        "layernorm_forward", ("out = gamma * x_hat + beta", "out = x_hat"))),
    "ln_in_place": ("layernorm_forward", "modified its input x in place", override('''
        def layernorm_forward(x, gamma, beta, eps=1e-5):
            mean = x.mean(axis=1, keepdims=True)
            x -= mean
            var = (x ** 2).mean(axis=1, keepdims=True)
            x_hat = x / np.sqrt(var + eps)
            return gamma * x_hat + beta, {"x": x, "x_hat": x_hat, "mean": mean, "var": var, "gamma": gamma, "eps": eps}
    ''')),
    # ---------------------------------------------------------------- layernorm_backward
    "lnb_divided_by_N": ("layernorm_backward", "do not divide by N", patch(
        "layernorm_backward", ("dgamma = (dout * x_hat).sum(axis=0)", "dgamma = (dout * x_hat).mean(axis=0)"),
        ("dbeta = dout.sum(axis=0)", "dbeta = dout.mean(axis=0)"))),
    "lnb_wrong_axis": ("layernorm_backward", "sum over the examples, axis 0", patch(
        "layernorm_backward", ("dgamma = (dout * x_hat).sum(axis=0)", "dgamma = (dout * x_hat).sum(axis=1)"),
        ("dbeta = dout.sum(axis=0)", "dbeta = dout.sum(axis=1)"))),
    "lnb_no_mean_path": ("layernorm_backward", "drops the gradient path through the mean", patch(
        "layernorm_backward", ("D * g - g.sum(axis=1, keepdims=True) - x_hat", "D * g - x_hat"))),
    "lnb_no_var_path": ("layernorm_backward", "drops the gradient path through the variance", patch(
        "layernorm_backward", (" - x_hat * (g * x_hat).sum(axis=1, keepdims=True)", ""))),
    "lnb_no_stat_paths": ("layernorm_backward", "are both missing", override('''
        def layernorm_backward(dout, cache):
            dx = dout * cache["gamma"] / np.sqrt(cache["var"][:, None] + cache["eps"])
            return dx, (dout * cache["x_hat"]).sum(axis=0), dout.sum(axis=0)
    ''')),
    "lnb_bn_axis": ("layernorm_backward", "BatchNorm's backward formula", override('''
        def layernorm_backward(dout, cache):
            x_hat, inv_std = cache["x_hat"], cache["inv_std"][:, None]
            N = dout.shape[0]
            g = dout * cache["gamma"]
            dx = inv_std / N * (N * g - g.sum(axis=0) - x_hat * (g * x_hat).sum(axis=0))
            return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)
    ''')),
    "lnb_no_gamma": ("layernorm_backward", "gamma is missing", patch(
        "layernorm_backward", ('g = dout * cache["gamma"]', "g = dout"))),
    "lnb_eps_outside": ("layernorm_backward", "eps belongs inside the square root", patch(
        "layernorm_backward", ('if "inv_std" in cache:', "if False:"),
        ('inv_std = 1.0 / np.sqrt(cache["var"] + cache["eps"])',
         'inv_std = 1.0 / (np.sqrt(cache["var"]) + cache["eps"])'))),
    "lnb_own_cache_keys": ("layernorm_backward", "looked up a key the cache does not have", override('''
        def layernorm_backward(dout, cache):
            x_hat, std = cache["x_hat"], cache["std"]
            g = dout * cache["gamma"]
            dx = (g - g.mean(1, keepdims=True) - x_hat * (g * x_hat).mean(1, keepdims=True)) / std[:, None]
            return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)
    ''')),
    # ---------------------------------------------------------------- groupnorm_forward
    "gn_instance_norm": ("groupnorm_forward", "InstanceNorm", patch(
        "groupnorm_forward", ("G = int(num_groups)\n", "G = C\n"))),
    "gn_layer_norm": ("groupnorm_forward", "LayerNorm, as if num_groups = 1", patch(
        "groupnorm_forward", ("G = int(num_groups)\n", "G = 1\n"))),
    "gn_interleaved": ("groupnorm_forward", "groups of interleaved channels", override('''
        def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
            N, C, H, W = x.shape
            xg = x.reshape(N, C // num_groups, num_groups, H, W)
            mean = xg.mean(axis=(1, 3, 4), keepdims=True)
            var = xg.var(axis=(1, 3, 4), keepdims=True)
            x_hat = ((xg - mean) / np.sqrt(var + eps)).reshape(N, C, H, W)
            return gamma.reshape(1, C, 1, 1) * x_hat + beta.reshape(1, C, 1, 1), {"x_hat": x_hat}
    ''')),
    "gn_group_size": ("groupnorm_forward", "groups of num_groups channels each", patch(
        "groupnorm_forward", ("xg = x.reshape(N, G, (C // G) * H * W)", "xg = x.reshape(N, C // G, G * H * W)"))),
    "gn_gamma_per_group": ("groupnorm_forward", "applied per group", override('''
        def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
            N, C, H, W = x.shape
            G = num_groups
            xg = x.reshape(N, G, -1)
            mean = xg.mean(axis=2, keepdims=True)
            var = xg.var(axis=2, keepdims=True)
            x_hat = (xg - mean) / np.sqrt(var + eps)
            out = gamma[:G].reshape(1, G, 1) * x_hat + beta[:G].reshape(1, G, 1)
            return out.reshape(N, C, H, W), {"x_hat": x_hat.reshape(N, C, H, W)}
    ''')),
    "gn_unbiased": ("groupnorm_forward", MSG["unbiased"][:40], patch(
        "groupnorm_forward", ("var = ((xg - mean[:, :, None]) ** 2).mean(axis=2)", "var = xg.var(axis=2, ddof=1)"))),
    "gn_eps_outside": ("groupnorm_forward", "eps outside the square root", patch(
        "groupnorm_forward", ("inv_std = 1.0 / np.sqrt(var + eps)", "inv_std = 1.0 / (np.sqrt(var) + eps)"))),
    # ---------------------------------------------------------------- fold_batchnorm
    "fold_input_axis": ("fold_batchnorm", "weight * scale.reshape(-1, 1, 1, 1)", patch(
        "fold_batchnorm", ("scale.reshape((C_out,) + (1,) * (weight.ndim - 1))",
                           "scale.reshape((1, C_out) + (1,) * (weight.ndim - 2))"))),
    "fold_bias_no_mean": ("fold_batchnorm", "without the running_mean term", patch(
        "fold_batchnorm", ('(vectors["bias"] - vectors["running_mean"]) * scale', 'vectors["bias"] * scale'))),
    "fold_bias_unscaled": ("fold_batchnorm", "the difference must be scaled", patch(
        "fold_batchnorm", ('(vectors["bias"] - vectors["running_mean"]) * scale', '(vectors["bias"] - vectors["running_mean"])'))),
    "fold_bias_no_gamma": ("fold_batchnorm", "(bias - running_mean) / sqrt(running_var + eps) + beta", patch(
        "fold_batchnorm", ('(vectors["bias"] - vectors["running_mean"]) * scale',
                           '(vectors["bias"] - vectors["running_mean"]) / np.sqrt(denom)'))),
    "fold_eps_outside": ("fold_batchnorm", "gamma / (sqrt(running_var) + eps)", patch(
        "fold_batchnorm", ('scale = vectors["gamma"] / np.sqrt(denom)',
                           'scale = vectors["gamma"] / (np.sqrt(vectors["running_var"]) + eps)'))),
    "fold_var_as_std": ("fold_batchnorm", "running_var is a variance, not a standard deviation", patch(
        "fold_batchnorm", ('scale = vectors["gamma"] / np.sqrt(denom)', 'scale = vectors["gamma"] / denom'))),
    "fold_bias_none_crash": ("fold_batchnorm", "failed with bias=None", override('''
        def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
            scale = gamma / np.sqrt(running_var + eps)
            return weight * scale[:, None, None, None], (bias - running_mean) * scale + beta
    ''')),
    "fold_in_place": ("fold_batchnorm", "modified its input weight in place", override('''
        def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
            scale = gamma / np.sqrt(running_var + eps)
            weight *= scale[:, None, None, None]
            b = np.zeros_like(gamma) if bias is None else bias
            return weight, (b - running_mean) * scale + beta
    ''')),
}

MISSING = {"missing_fold": ("fold_batchnorm", without("fold_batchnorm"))}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Every submission of this file, graded once (all in one session of the grader)."""
    sources = {**CORRECT, **{k: v[2] for k, v in BUGGY.items()}, **{k: v[1] for k, v in MISSING.items()}}
    return grade_sources(SLUG, sources, tmp_path_factory.mktemp("ch06_submissions"))


# --------------------------------------------------------------------------- tests


def test_mistake_submissions_apply():
    """Every planted bug changed the reference (a silent no-op would prove nothing)."""
    for name, (_, _, source) in BUGGY.items():
        assert source != REF, name


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_submission_gets_full_marks(reports, name):
    assert_full_marks(reports[name], EXERCISES)


def test_points_per_exercise(reports):
    totals = reports["reference"].by_exercise()
    for exercise, (_, max_score) in totals.items():
        assert 10 <= max_score <= 25, (exercise, max_score)


@pytest.mark.parametrize("name", sorted(BUGGY))
def test_mistake_is_named(reports, name):
    exercise, phrase, _ = BUGGY[name]
    report = reports[name]
    failed = failed_tests(report)
    assert failed, name
    assert {t.exercise for t in failed} == {exercise}, [(t.name, t.output) for t in failed]
    assert_mistake_named(report, exercise, phrase)


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_exercise_scores_zero(reports, name):
    exercise, _ = MISSING[name]
    assert_only_missing(reports[name], exercise)
    assert all(f"does not define {exercise!r}" in t.output for t in failed_tests(reports[name]))


@pytest.fixture(scope="module")
def public_reports(tmp_path_factory):
    return grade_sources(SLUG, {k: v[2] for k, v in BUGGY.items()}, tmp_path_factory.mktemp("ch06_public"),
                         public_only=True)


# What the public checks cannot tell from public information, and why.
NOT_PUBLIC = {
    "lnb_bn_axis": "LayerNorm's x_hat and scale with BN's sums over the batch is no gradient autograd computes",
}


def test_what_the_public_checks_cannot_name_is_listed_honestly(public_reports):
    named = [n for n in NOT_PUBLIC
             if any(BUGGY[n][1] in t.output for t in failed_tests(public_reports[n], BUGGY[n][0]))]
    assert named == [], f"named publicly after all: remove them from NOT_PUBLIC: {named}"


def test_public_checks_import_no_reference_and_no_fingerprints():
    imported = public_imports(SLUG)
    assert not any(m.split(".")[0] == "solutions" or m.startswith("autograder.mistakes") for m in imported), imported


@pytest.mark.parametrize("name", sorted(set(BUGGY) - set(NOT_PUBLIC)))
def test_public_checks_name_what_the_grader_names(public_reports, name):
    """Every other planted mistake is named by the checks students run too, with a specific tag."""
    exercise, phrase, _ = BUGGY[name]
    named = [t for t in failed_tests(public_reports[name], exercise) if phrase in t.output]
    assert named, [t.output for t in failed_tests(public_reports[name], exercise)]
    assert named[0].mistake not in ("wrong_value", "exception", ""), named[0].mistake


# --------------------------------------------------------------------------- the released notebook


@pytest.fixture(scope="module")
def released_reports(tmp_path_factory):
    """The chapter's own release filled in with the reference, with one planted mistake, and with an
    exercise left as its stub."""
    return grade_release(SLUG, tmp_path_factory, {
        "released_correct": ({}, ()),
        "released_unbiased": ({"var = ((x - mean[:, None]) ** 2).mean(axis=1)": "var = x.var(axis=1, ddof=1)"}, ()),
        "released_stub_fold": ({}, ("fold_batchnorm",)),
    })


def test_the_released_notebook_filled_in_gets_full_marks(released_reports):
    assert_full_marks(released_reports["released_correct"], EXERCISES)


def test_the_released_notebook_runs_without_errors(released_reports):
    """Its chapter cells import the course library (bnlab), as the student's kernel did: no false
    "error while running your code" in the feedback."""
    report = released_reports["released_correct"]
    assert not [m for m in report.messages if m.startswith("error while running your code")], report.messages


def test_the_released_notebook_with_a_mistake_is_named(released_reports):
    assert_mistake_named(released_reports["released_unbiased"], "layernorm_forward", MSG["unbiased"][:40])


def test_the_released_stub_scores_zero_on_its_exercise_only(released_reports):
    report = released_reports["released_stub_fold"]
    scores = report.by_exercise()
    assert scores["fold_batchnorm"][0] == 0
    assert all(score == total for name, (score, total) in scores.items() if name != "fold_batchnorm")
    assert any("not implemented" in t.output for t in failed_tests(report, "fold_batchnorm"))
