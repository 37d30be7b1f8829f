"""Grading the grader of chapter 5: correct submissions get full marks, each common mistake
costs points on its own exercise only and is named in the feedback.

A graded submission costs a few seconds (the sandbox imports torch), so mistakes in
*different* exercises share a submission: each buggy submission holds at most one bug per
exercise, and exercises without a bug must keep full marks.
"""

import textwrap
from pathlib import Path

import nbformat
import pytest

from autograder.runner import grade, grade_many

SLUG = "ch05_covariate_shift"
ROOT = Path(__file__).resolve().parents[1]
REF = (ROOT / "solutions" / f"{SLUG}.py").read_text()
EXERCISES = ["ics_metrics", "measure_ics", "landscape_along_gradient", "NoisyBatchNorm2d"]


def patch(old, new, source=REF):
    """``source`` with one exact text replaced (the text must occur exactly once)."""
    assert source.count(old) == 1, f"not found exactly once: {old!r}"
    return source.replace(old, new)


# A correct submission written differently: deep copies and .backward() instead of functional calls,
# noise drawn with in-place uniform_ / randn_like, float results from .item().
HEADER = "import copy\nimport math\n\nimport torch\nfrom torch import nn\n"

ALT_ICS = textwrap.dedent('''
    def ics_metrics(G, G_prime):
        a = torch.as_tensor(G).flatten().double()
        b = torch.as_tensor(G_prime).flatten().double()
        l2 = torch.linalg.norm(a - b).item()
        na, nb = a.norm().item(), b.norm().item()
        if na == 0 and nb == 0:
            return l2, 1.0
        if na == 0 or nb == 0:
            return l2, 0.0
        return l2, (a @ b).item() / (na * nb)
''')

ALT_MEASURE = textwrap.dedent('''
    def measure_ics(model, layer, x, y, loss_fn, lr):
        m = copy.deepcopy(model)
        target = [mod for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv2d))][layer].weight
        params = list(m.parameters())
        idx = next(i for i, p in enumerate(params) if p is target)
        m.zero_grad()
        loss_fn(m(x), y).backward()
        G = target.grad.clone()
        with torch.no_grad():
            for p in params[:idx]:
                if p.grad is not None:
                    p -= lr * p.grad
        m.zero_grad()
        loss_fn(m(x), y).backward()
        return ics_metrics(G, target.grad)
''')

ALT_LANDSCAPE = textwrap.dedent('''
    def landscape_along_gradient(model, x, y, loss_fn, lr, multipliers):
        m = copy.deepcopy(model)
        params = [p for p in m.parameters() if p.requires_grad]
        start = [p.detach().clone() for p in params]

        def at(step):
            with torch.no_grad():
                for p, p0, d in zip(params, start, step):
                    p.copy_(p0 - d)
            loss = loss_fn(m(x), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            return loss.item(), torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                                           for p, g in zip(params, grads)]).double()

        _, g = at([torch.zeros_like(p) for p in params])
        sizes = [p.numel() for p in params]
        g_parts = [t.view_as(p).to(p.dtype) for t, p in zip(torch.split(g, sizes), params)]
        losses, dists, betas = [], [], []
        for c in multipliers:
            loss, gc = at([c * lr * t for t in g_parts])
            d = (gc - g).norm().item()
            losses.append(loss)
            dists.append(d)
            step = abs(c) * lr * g.norm().item()
            if step > 0:
                betas.append(d / step)
        return {"losses": losses, "grad_distances": dists,
                "beta_smoothness": max(betas) if betas else float("nan")}
''')

ALT_NOISY = textwrap.dedent('''
    class NoisyBatchNorm2d(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1, n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1):
            super().__init__()
            self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
            self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = n_mu, n_sigma, r_mu, r_sigma

        def forward(self, x):
            out = self.bn(x)
            if not self.training:
                return out
            shape = (1, out.shape[1], 1, 1)
            mu = torch.empty(shape, dtype=out.dtype).uniform_(-self.n_mu, self.n_mu)
            sigma = torch.empty(shape, dtype=out.dtype).uniform_(1.0, self.n_sigma)
            m = mu + torch.empty_like(out).uniform_(-self.r_mu, self.r_mu)
            s = sigma + self.r_sigma * torch.randn_like(out)
            return s * out + m
''')

PARTS = {"ics_metrics": ALT_ICS, "measure_ics": ALT_MEASURE, "landscape_along_gradient": ALT_LANDSCAPE,
         "NoisyBatchNorm2d": ALT_NOISY}
ALTERNATIVE = HEADER + "".join(PARTS.values())


def notebook(source):
    """A notebook: imports with a magic, one cell per definition, and a graded test cell to skip."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# Chapter 5 exercises"))
    chunks = source.split("\n\n\n")
    nb.cells.append(nbformat.v4.new_code_cell("%matplotlib inline\n" + chunks[0]))
    for chunk in chunks[1:]:
        nb.cells.append(nbformat.v4.new_code_cell(chunk.strip()))
    graded = nbformat.v4.new_code_cell("assert False, 'a test cell of the released notebook'")
    graded.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "check", "points": 1,
                                   "locked": True, "schema_version": 3}
    nb.cells.append(graded)
    return nbformat.writes(nb)


CORRECT = {
    "reference.py": REF,
    "alternative.py": ALTERNATIVE,
    "alternative.ipynb": notebook(ALTERNATIVE),
}


def alt(exercise, *pairs):
    """One exercise of the alternative with replacements (appended after the reference)."""
    source = PARTS[exercise]
    for old, new in pairs:
        source = patch(old, new, source)
    return HEADER + source


# name: (exercise, {"patch": [(old, new)] on the reference} or {"append": code}, a phrase of the feedback)
BUGS = {
    # ics_metrics
    "ics_l2_squared": ("ics_metrics", {"append": alt("ics_metrics", ("l2 = torch.linalg.norm(a - b).item()",
                                                                     "l2 = torch.linalg.norm(a - b).item() ** 2"))},
                       "squared distance"),
    "ics_dot_product": ("ics_metrics", {"append": alt("ics_metrics", ("return l2, (a @ b).item() / (na * nb)",
                                                                      "return l2, (a @ b).item()"))},
                        "dot product"),
    "ics_cosine_distance": ("ics_metrics", {"append": alt("ics_metrics", ("return l2, (a @ b).item() / (na * nb)",
                                                                          "return l2, 1 - (a @ b).item() / (na * nb)"))},
                            "cosine distance"),
    "ics_zero_nan": ("ics_metrics", {"append": alt("ics_metrics", (
        "    if na == 0 and nb == 0:\n        return l2, 1.0\n    if na == 0 or nb == 0:\n        return l2, 0.0\n"
        "    return l2, (a @ b).item() / (na * nb)",
        "    return l2, (torch.dot(a, b) / (a.norm() * b.norm())).item()"))},
        "zero gradient gives nan"),
    # measure_ics
    "ics_step_all_layers": ("measure_ics", {"append": alt("measure_ics", ("for p in params[:idx]:", "for p in params:"))},
                            "*all* layers"),
    "ics_step_self_too": ("measure_ics", {"append": alt("measure_ics", ("for p in params[:idx]:",
                                                                       "for p in params[:idx + 1]:"))},
                          "measured layer's weight too"),
    "ics_weights_only": ("measure_ics", {"append": alt("measure_ics", (
        "for p in params[:idx]:",
        "for p in [mod.weight for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv2d))][:layer]:"))},
        "only the weights of the earlier layers"),
    "ics_model_not_restored": ("measure_ics", {"append": alt("measure_ics", ("m = copy.deepcopy(model)", "m = model"))},
                               "changed the model's"),
    "ics_gradient_ascent": ("measure_ics", {"patch": [("tensors[name] = (p.detach() - lr * g)",
                                                       "tensors[name] = (p.detach() + lr * g)")]},
                            "step *up* the gradient"),
    "ics_eval_mode": ("measure_ics", {"append": alt("measure_ics", ("m = copy.deepcopy(model)",
                                                                    "m = copy.deepcopy(model).eval()"))},
                      "measuring in eval mode"),
    # landscape_along_gradient
    "ls_gradient_norm": ("landscape_along_gradient", {"append": alt("landscape_along_gradient",
                                                                    ("d = (gc - g).norm().item()", "d = gc.norm().item()"))},
                         "||grad L(w_c)||"),
    "ls_beta_mean": ("landscape_along_gradient", {"patch": [("beta = max(ratios) if ratios",
                                                             "beta = sum(ratios) / len(ratios) if ratios")]},
                     "the maximum"),
    "ls_beta_without_gradient_norm": ("landscape_along_gradient", {"patch": [("step = abs(c) * lr * g_norm",
                                                                              "step = abs(c) * lr")]},
                                      "dividing by c * lr"),
    "ls_ascent": ("landscape_along_gradient", {"patch": [("point = [(p.detach() - (c * lr) * gp)",
                                                          "point = [(p.detach() + (c * lr) * gp)")]},
                  "steps up the gradient"),
    "ls_model_not_restored": ("landscape_along_gradient", {"append": alt("landscape_along_gradient",
                                                                         ("m = copy.deepcopy(model)", "m = model"))},
                              "changed the model's"),
    "ls_loss_differences": ("landscape_along_gradient", {"append": alt(
        "landscape_along_gradient",
        ("_, g = at([torch.zeros_like(p) for p in params])", "loss0, g = at([torch.zeros_like(p) for p in params])"),
        ("losses.append(loss)", "losses.append(loss - loss0)"))},
        "loss differences"),
    # NoisyBatchNorm2d
    "noisy_in_eval_mode": ("NoisyBatchNorm2d", {"patch": [("        if not self.training:\n            return a\n", "")]},
                           "noise is applied in eval mode"),
    "noisy_mu_positive": ("NoisyBatchNorm2d", {"append": alt("NoisyBatchNorm2d", ("uniform_(-self.n_mu, self.n_mu)",
                                                                                 "uniform_(0.0, self.n_mu)"))},
                          "not U(0, n_mu)"),
    "noisy_sigma_from_zero": ("NoisyBatchNorm2d", {"append": alt("NoisyBatchNorm2d", ("uniform_(1.0, self.n_sigma)",
                                                                                     "uniform_(0.0, self.n_sigma)"))},
                              "sigma_j ~ U(1, n_sigma)"),
    "noisy_r_sigma_as_variance": ("NoisyBatchNorm2d", {"patch": [("+ self.r_sigma * torch.randn(N, C, H, W, **kw)",
                                                                  "+ self.r_sigma ** 0.5 * torch.randn(N, C, H, W, **kw)")]},
                                  "the standard deviation of s"),
    "noisy_shift_normal": ("NoisyBatchNorm2d", {"append": alt("NoisyBatchNorm2d", (
        "m = mu + torch.empty_like(out).uniform_(-self.r_mu, self.r_mu)", "m = mu + self.r_mu * torch.randn_like(out)"))},
        "r_mu is the half-width"),
    "noisy_per_channel_only": ("NoisyBatchNorm2d", {"append": alt(
        "NoisyBatchNorm2d",
        ("m = mu + torch.empty_like(out).uniform_(-self.r_mu, self.r_mu)", "m = mu"),
        ("s = sigma + self.r_sigma * torch.randn_like(out)", "s = sigma"))},
        "same for every element"),
    "noisy_drawn_once": ("NoisyBatchNorm2d", {"append": alt(
        "NoisyBatchNorm2d",
        ("self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = n_mu, n_sigma, r_mu, r_sigma",
         "self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = n_mu, n_sigma, r_mu, r_sigma\n"
         "        self.mu = torch.empty(1, num_features, 1, 1).uniform_(-n_mu, n_mu)\n"
         "        self.sigma = torch.empty(1, num_features, 1, 1).uniform_(1.0, n_sigma)"),
        ("mu = torch.empty(shape, dtype=out.dtype).uniform_(-self.n_mu, self.n_mu)", "mu = self.mu.to(out.dtype)"),
        ("sigma = torch.empty(shape, dtype=out.dtype).uniform_(1.0, self.n_sigma)", "sigma = self.sigma.to(out.dtype)"))},
        "stay the same from step to step"),
    "noisy_fixed_constants": ("NoisyBatchNorm2d", {"append": alt(
        "NoisyBatchNorm2d",
        ("self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = n_mu, n_sigma, r_mu, r_sigma",
         "self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = 0.5, 1.25, 0.1, 0.1"))},
        "Use the constructor's arguments"),
    "noisy_noise_before_bn": ("NoisyBatchNorm2d", {"append": alt(
        "NoisyBatchNorm2d",
        ("out = self.bn(x)\n        if not self.training:\n            return out",
         "out = x\n        if not self.training:\n            return self.bn(out)"),
        ("return s * out + m", "return self.bn(s * out + m)"))},
        "no per-channel random shift"),
}


def build(names):
    source, appended = REF, []
    for name in names:
        how = BUGS[name][1]
        for old, new in how.get("patch", []):
            source = patch(old, new, source)
        if "append" in how:
            appended.append(how["append"])
    return "\n\n".join([source, *appended])


def _groups():
    """Submissions holding one bug of each exercise at most. measure_ics calls the submission's
    ics_metrics, so the ics_metrics bugs go into submissions whose measure_ics has no bug of its own."""
    by_exercise = {}
    for name, (exercise, _, _) in BUGS.items():
        by_exercise.setdefault(exercise, []).append(name)
    shift = len(by_exercise["measure_ics"])
    width = max(shift + len(by_exercise["ics_metrics"]), *(len(v) for v in by_exercise.values()))
    slots = {exercise: ([None] * shift + names if exercise == "ics_metrics" else names)
             for exercise, names in by_exercise.items()}
    return [tuple(v[i] for v in slots.values() if i < len(v) and v[i]) for i in range(width)]


# An exercise that calls another one may lose points with it.
DEPENDS = {"measure_ics": "ics_metrics"}


GROUPS = _groups()
GROUP_OF = {name: group for group in GROUPS for name in group}
MISSING = "landscape_along_gradient"


def _without(source, name):
    start = source.index(f"def {name}(")
    ends = [i for i in (source.find("\ndef ", start + 1), source.find("\nclass ", start + 1)) if i >= 0]
    return source[:start] + (source[min(ends):] if ends else "")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    sources = dict(CORRECT)
    sources.update({"+".join(group) + ".py": build(group) for group in GROUPS})
    sources["missing.py"] = _without(REF, MISSING)
    out = {}
    for name, source in sources.items():
        path = folder / name
        path.write_text(source)
        out[name] = grade(SLUG, path)
    out["folder"] = folder
    return out


def failures(report, exercise):
    return "\n".join(t.output for t in report.tests if t.exercise == exercise and t.status == "failed")


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_submissions_get_full_marks(reports, name):
    report = reports[name]
    failed = [(t.name, t.output) for t in report.tests if t.status != "passed"]
    assert report.score == report.max_score and not failed, failed
    assert set(report.by_exercise()) == set(EXERCISES)
    assert 10 <= min(total for _, total in report.by_exercise().values())
    assert max(total for _, total in report.by_exercise().values()) <= 25


@pytest.mark.parametrize("name", list(BUGS))
def test_each_mistake_is_caught_and_named(reports, name):
    exercise, _, phrase = BUGS[name]
    group = GROUP_OF[name]
    report = reports["+".join(group) + ".py"]
    scores = report.by_exercise()
    assert scores[exercise][0] < scores[exercise][1]
    buggy = {BUGS[n][0] for n in group}
    buggy |= {user for user, used in DEPENDS.items() if used in buggy}
    for other, (score, total) in scores.items():
        if other not in buggy:
            assert score == total, (other, failures(report, other))
    text = failures(report, exercise)
    assert phrase in text, text


def test_missing_exercise_scores_zero_on_that_exercise_only(reports):
    report = reports["missing.py"]
    for exercise, (score, total) in report.by_exercise().items():
        assert score == (0 if exercise == MISSING else total), exercise
    assert f"does not define {MISSING!r}" in failures(report, MISSING)


def test_public_tests_need_no_reference():
    public = (ROOT / "autograder" / "suites" / SLUG / "test_public.py").read_text()
    assert "solutions" not in public and "mistakes" not in public


def test_one_session_grades_each_submission_on_its_own(reports):
    """grade-all runs many submissions in one pytest session: nothing may leak between them."""
    names = ["+".join(GROUPS[0]) + ".py", "reference.py", "+".join(GROUPS[1]) + ".py"]
    together = grade_many(SLUG, {name: reports["folder"] / name for name in names})
    for name in names:
        alone = [(t.name, t.score, t.output) for t in reports[name].tests]
        assert [(t.name, t.score, t.output) for t in together[name].tests] == alone, name
