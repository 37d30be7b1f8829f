"""Grading the grader of chapter 5: correct submissions get full marks, each common mistake
costs points on its own exercise only and is named in the feedback.

Bugs share submissions as in chapter 4, one per exercise at most (``grading.bug_groups``);
the exercises of a submission without a bug of their own keep full marks, but measure_ics,
which calls the submission's ics_metrics, may lose points with it (``DEPENDS``).
"""

import textwrap

import pytest

from grading import (GraderSessionTests, assert_full_marks, assert_mistake_named, blocks_notebook, bug_groups,
                     failed_tests, grade_release, grouped, patch_once, reference, without)

SLUG = "ch05_covariate_shift"
REF = reference(SLUG)
EXERCISES = ["ics_metrics", "measure_ics", "landscape_along_gradient", "NoisyBatchNorm2d"]


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


CORRECT = {
    "reference.py": REF,
    "alternative.py": ALTERNATIVE,
    # A notebook: imports with a magic, one cell per definition, and a graded test cell to skip.
    "alternative.ipynb": blocks_notebook("# Chapter 5 exercises", ALTERNATIVE),
}


def alt(exercise, *pairs):
    """One exercise of the alternative with replacements (appended after the reference)."""
    source = PARTS[exercise]
    for old, new in pairs:
        source = patch_once(old, new, source)
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


def _groups():
    """Submissions holding one bug of each exercise at most. measure_ics calls the submission's
    ics_metrics, so the ics_metrics bugs go into submissions whose measure_ics has no bug of its own."""
    exercise_of = {name: exercise for name, (exercise, _, _) in BUGS.items()}
    shift = sum(exercise == "measure_ics" for exercise in exercise_of.values())
    return bug_groups(exercise_of, delay={"ics_metrics": shift})


# An exercise that calls another one may lose points with it.
DEPENDS = {"measure_ics": "ics_metrics"}


GROUPS = _groups()
MISSING = "landscape_along_gradient"


class TestGrader(GraderSessionTests):
    slug, exercises, correct = SLUG, EXERCISES, CORRECT
    sources, mistakes = grouped(REF, BUGS, GROUPS, DEPENDS)
    missing = {"missing.py": (MISSING, without(REF, MISSING))}
    # Telling these apart needs what the exercise computes (G' after the step of the earlier
    # layers, or the noise's distribution over many draws): the public checks test properties.
    not_public = {
        "ics_weights_only": "G' after a step of the earlier weights alone is measure_ics itself",
        "ics_gradient_ascent": "likewise G' after a step up the gradient",
        "ics_eval_mode": "the public model has no BN, so eval and training mode agree on it",
        **{name: "a distribution of the noise, estimated by the hidden tests from many draws" for name in (
            "noisy_mu_positive", "noisy_sigma_from_zero", "noisy_r_sigma_as_variance", "noisy_shift_normal",
            "noisy_per_channel_only", "noisy_drawn_once", "noisy_fixed_constants")},
        "noisy_noise_before_bn": "the public check sees eval mode differ from BN (running statistics of noisy "
                                 "inputs); that there is no shift after BN is the noise's estimated distribution",
    }


# --------------------------------------------------------------------------- the released notebook


@pytest.fixture(scope="module")
def released_reports(tmp_path_factory):
    """The chapter's own release filled in with the reference, with one planted mistake, and with an
    exercise left as its stub."""
    return grade_release(SLUG, tmp_path_factory, {
        "released_correct": ({}, ()),
        "released_sigma_from_zero": ({"sigma = 1 + torch.rand(C, **kw) * (self.n_sigma - 1)":
                                      "sigma = torch.rand(C, **kw) * self.n_sigma"}, ()),
        "released_stub_landscape": ({}, ("landscape_along_gradient",)),
    })


def test_the_released_notebook_filled_in_gets_full_marks(released_reports):
    assert_full_marks(released_reports["released_correct"], EXERCISES)


def test_the_released_notebook_runs_without_errors(released_reports):
    """Its chapter cells import the course library (bnlab), as the student's kernel did: no false
    "error while running your code" in the feedback."""
    report = released_reports["released_correct"]
    assert not [m for m in report.messages if m.startswith("error while running your code")], report.messages


def test_the_released_notebook_with_a_mistake_is_named(released_reports):
    assert_mistake_named(released_reports["released_sigma_from_zero"], "NoisyBatchNorm2d", "sigma_j ~ U(1, n_sigma)")


def test_the_released_stub_scores_zero_on_its_exercise_only(released_reports):
    report = released_reports["released_stub_landscape"]
    scores = report.by_exercise()
    assert scores["landscape_along_gradient"][0] == 0
    assert all(score == total for name, (score, total) in scores.items() if name != "landscape_along_gradient")
    assert any("not implemented" in t.output for t in failed_tests(report, "landscape_along_gradient"))
