"""Hidden tests of chapter 5: against the reference on seeded models and inputs; noisy BN by its statistics.

The models are built from plain weights by ``autograder.ops.torch_models.build_model`` on
both sides, so the submission and the reference see identical models.
"""

import math
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from autograder.suitekit import once
from autograder.feedback import Mismatch, check_array, unpack, check_unchanged_model
from autograder.mistakes import ch05_covariate_shift as M
from autograder.ops import torch_models as TM
from solutions import ch05_covariate_shift as ref


def seeded(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.ndarray)):
        raise Mismatch(f"{name} should be a float, got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise Mismatch(f"{name} should be a single number, got an array of shape {value.shape} "
                           f"(flatten the gradients before the reductions)")
        value = value.reshape(())
    return float(value)


def check_number(actual, expected, name, mistakes=None, context="", rtol=1e-7, atol=1e-10):
    """Compare one number; ``mistakes()`` gives {message: value} and is only computed when wrong."""
    value = number(actual, name)
    try:
        check_array(np.asarray(value), np.asarray(expected), name, rtol=rtol, atol=atol, context=context)
    except Mismatch:
        if mistakes is None:
            raise
        table = {k: np.asarray(v) for k, v in mistakes().items()}
        check_array(np.asarray(value), np.asarray(expected), name, rtol=rtol, atol=atol, context=context,
                    mistakes=table)


# ----------------------------------------------------------------------------- models


def mlp_layers(rng, sizes=(6, 8, 8, 3), bn=False):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append({"type": "linear", "weight": rng.normal(0, 1 / math.sqrt(n_in), (n_out, n_in)),
                       "bias": rng.normal(0, 0.1, n_out) if (last or not bn) else None})
        if not last:
            if bn:
                layers.append({"type": "bn1d", "weight": rng.uniform(0.5, 1.5, n_out), "bias": rng.normal(0, 0.5, n_out),
                               "running_mean": rng.normal(0, 1, n_out), "running_var": rng.uniform(0.5, 2, n_out)})
            layers.append({"type": "relu" if bn else "tanh"})
    return layers


def cnn_layers(rng, bn=True, c_in=2, c=4, side=5, classes=3):
    def norm(n):
        return {"type": "bn2d", "weight": rng.uniform(0.5, 1.5, n), "bias": rng.normal(0, 0.5, n),
                "running_mean": rng.normal(0, 1, n), "running_var": rng.uniform(0.5, 2, n)}
    layers = [{"type": "conv", "weight": rng.normal(0, 0.3, (c, c_in, 3, 3)),
               "bias": None if bn else rng.normal(0, 0.1, c), "padding": 1}]
    layers += [norm(c)] if bn else []
    layers += [{"type": "relu"}, {"type": "conv", "weight": rng.normal(0, 0.3, (c, c, 3, 3)),
                                  "bias": None if bn else rng.normal(0, 0.1, c), "padding": 1}]
    layers += [norm(c)] if bn else []
    layers += [{"type": "relu"}, {"type": "flatten"},
               {"type": "linear", "weight": rng.normal(0, 0.2, (classes, c * side * side)),
                "bias": rng.normal(0, 0.1, classes)}]
    return layers


def model_case(name):
    """(layers, x, y) of a named case."""
    rng = seeded(name)
    if name.startswith("mlp-bn"):
        return mlp_layers(rng, bn=True), rng.standard_normal((12, 6)) * 2 + 1, rng.integers(0, 3, 12)
    if name.startswith("mlp"):
        return mlp_layers(rng), rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    if name.startswith("cnn-nobn"):
        return cnn_layers(rng, bn=False), rng.standard_normal((6, 2, 5, 5)), rng.integers(0, 3, 6)
    return cnn_layers(rng, bn=True), rng.standard_normal((6, 2, 5, 5)) * 1.5 + 0.5, rng.integers(0, 3, 6)


# ----------------------------------------------------------------------------- ics_metrics


def ics_pairs():
    rng = seeded("ics-pairs")
    pairs = []
    for shape, scale in (((5,), 1.0), ((4, 3), 1e-3), ((3, 2, 3, 3), 1e3), ((8, 6), 1.0), ((2, 2, 3, 3), 1.0)):
        G = rng.standard_normal(shape) * scale
        pairs.append((G, G + rng.standard_normal(shape) * scale * 0.5))
    pairs.append((pairs[0][0], -2.0 * pairs[0][0]))     # opposite directions: cosine -1
    pairs.append((pairs[1][0], pairs[1][0].copy()))     # identical: (0, 1)
    return pairs


def ics_runs(student, cache, dtype):
    pairs = ics_pairs()
    if dtype == "float32":
        pairs = [(a.astype(np.float32), b.astype(np.float32)) for a, b in pairs]
    got = once(cache, ("ics", dtype), lambda: student.op("torch_models.ics_metrics_run", "ics_metrics", pairs,
                                                         dtype=dtype))
    want = once(cache["truth"], ("ics-ref", dtype), lambda: TM.ics_metrics_run({"f": ref.ics_metrics}, "f", pairs, dtype=dtype))
    return pairs, got, want


@pytest.mark.exercise("ics_metrics")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ics_metrics_matches_reference(student, cache, dtype):
    pairs, got, want = ics_runs(student, cache, dtype)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == "float32" else dict(rtol=1e-9, atol=1e-12)
    for (G, Gp), g, w in zip(pairs, got["results"], want["results"]):
        l2, cos = unpack(g, 2, "l2, cosine")
        context = f"G of shape {G.shape}, {dtype}, |G| about {np.linalg.norm(G):.3g}"
        mistakes = M.ics_metrics_mistakes(G, Gp)
        check_number(l2, w[0], "l2", lambda: {k: v[0] for k, v in mistakes.items()}, context, **tol)
        check_number(cos, w[1], "cosine", lambda: {k: v[1] for k, v in mistakes.items()}, context, **tol)


@pytest.mark.exercise("ics_metrics")
@pytest.mark.points(1)
def test_ics_metrics_inputs_unchanged(student, cache):
    pairs, got, _ = ics_runs(student, cache, "float64")
    for result in got["results"]:
        unpack(result, 2, "l2, cosine")
    for (G, Gp), (G_after, Gp_after) in zip(pairs, got["after"]):
        for name, before, after in (("G", G, G_after), ("G_prime", Gp, Gp_after)):
            if not np.array_equal(before, after):
                raise Mismatch(f"ics_metrics modified its input {name} in place; work on copies")


@pytest.mark.exercise("ics_metrics")
@pytest.mark.points(2)
def test_ics_metrics_zero_gradients(student, cache):
    """The chapter's convention: both zero gives cosine 1, one zero gives cosine 0."""
    pairs = [(np.zeros((3, 2)), np.zeros((3, 2))), (np.zeros(4), np.array([0.0, 3.0, 4.0, 0.0]))]
    got = student.op("torch_models.ics_metrics_run", "ics_metrics", pairs)
    want = TM.ics_metrics_run({"f": ref.ics_metrics}, "f", pairs)
    for (G, Gp), g, w, what in zip(pairs, got["results"], want["results"], ("both zero", "G zero")):
        l2, cos = unpack(g, 2, "l2, cosine")
        check_number(l2, w[0], f"l2 ({what})")
        if not math.isfinite(number(cos, "cosine")):
            raise Mismatch(f"cosine is {cos} when {what}. {M.MSG['zero_nan']}")
        check_number(cos, w[1], f"cosine ({what}; the chapter's convention: both zero 1, one zero 0)")


# ----------------------------------------------------------------------------- measure_ics

# (case, mode, calls (layer, lr))
ICS_CASES = [
    ("mlp", "train", [(1, 0.5), (2, 0.5), (2, 2.0)]),
    ("cnn-bn", "train", [(1, 0.5), (2, 0.5)]),
    ("mlp-bn", "train", [(1, 1.0), (2, 0.3)]),
]


def ics_case_runs(student, cache, case):
    name, mode, calls = case
    layers, x, y = model_case(name)

    def run(namespace):
        return TM.ics_run(namespace, "measure_ics", layers, x, y, calls, mode=mode)
    got = once(cache, ("ics-run", name), lambda: student.op("torch_models.ics_run", "measure_ics", layers, x, y,
                                                            calls, mode=mode))
    want = once(cache["truth"], ("ics-run-ref", name), lambda: run({"measure_ics": ref.measure_ics}))

    def mistakes():
        return once(cache["truth"], ("ics-run-mistakes", name), lambda: M.ics_mistake_runs(run))
    return got, want, mistakes


def ics_ctx(case, k):
    name, mode, calls = case
    kind = {"mlp": "an MLP (Linear, Tanh)", "cnn-bn": "a CNN with BatchNorm2d",
            "mlp-bn": "an MLP with BatchNorm1d"}[name]
    return (f"{kind} in {mode} mode, layer={calls[k][0]}, lr={calls[k][1]}; measure_ics returns "
            f"ics_metrics(G, G'), so check that ics_metrics passes first")


@pytest.mark.exercise("measure_ics")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", ICS_CASES, ids=[c[0] for c in ICS_CASES])
def test_measure_ics_matches_reference(student, cache, case):
    got, want, mistakes = ics_case_runs(student, cache, case)
    for k, (g, w) in enumerate(zip(got, want)):
        l2, cos = unpack(g["result"], 2, "l2, cosine")
        for index, name, value in ((0, "l2", l2), (1, "cosine", cos)):
            def table(index=index, k=k):
                return {msg: run[k]["result"][index] for msg, run in mistakes().items()}
            check_number(value, w["result"][index], name, table, ics_ctx(case, k), rtol=1e-6, atol=1e-10)


@pytest.mark.exercise("measure_ics")
@pytest.mark.points(2)
def test_measure_ics_leaves_model_unchanged(student, cache):
    for case in ICS_CASES:
        got, _, _ = ics_case_runs(student, cache, case)
        for run in got:
            unpack(run["result"], 2, "l2, cosine")
            check_unchanged_model(run, "measure_ics")


@pytest.mark.exercise("measure_ics")
@pytest.mark.points(1)
def test_measure_ics_first_layer(student, cache):
    layers, x, y = model_case("cnn-bn-first")
    runs = student.op("torch_models.ics_run", "measure_ics", layers, x, y, [(0, 5.0)], mode="train")
    l2, cos = unpack(runs[0]["result"], 2, "l2, cosine")
    if abs(number(l2, "l2")) > 1e-12 or abs(number(cos, "cosine") - 1) > 1e-9:
        raise Mismatch(f"measure_ics gives (l2, cosine) = ({l2}, {cos}) for layer 0: no layer comes before it, "
                       f"so G' = G and the answer is (0, 1)")


# ----------------------------------------------------------------------------- landscape_along_gradient

LANDSCAPE_CASES = [
    ("mlp", 0.2, [0.5, 1.0, 2.0, 4.0]),
    ("cnn-bn", 0.5, [0.0, 0.25, 1.0, 3.0]),
]


def landscape_case_runs(student, cache, case):
    name, lr, multipliers = case
    layers, x, y = model_case(name)

    def run(namespace):
        return TM.landscape_run(namespace, "landscape_along_gradient", layers, x, y, lr, multipliers)
    got = once(cache, ("ls", name), lambda: student.op("torch_models.landscape_run", "landscape_along_gradient",
                                                       layers, x, y, lr, multipliers))
    want = once(cache["truth"], ("ls-ref", name), lambda: run({"landscape_along_gradient": ref.landscape_along_gradient}))

    def mistakes():
        return once(cache["truth"], ("ls-mistakes", name), lambda: M.landscape_mistake_runs(run))
    return got, want, mistakes


def result_of(run, key, count=None):
    result = run["result"]
    if not isinstance(result, dict) or key not in result:
        raise Mismatch(f"landscape_along_gradient should return a dict with the key {key!r}")
    value = result[key]
    if count is not None and (not isinstance(value, (list, tuple)) or len(value) != count):
        raise Mismatch(f"result[{key!r}] should be a list of {count} floats, one per multiplier")
    return value


def ls_ctx(case):
    name, lr, multipliers = case
    kind = {"mlp": "an MLP (Linear, Tanh)", "cnn-bn": "a CNN with BatchNorm2d in training mode"}[name]
    return f"{kind}, lr={lr}, multipliers={multipliers}"


@pytest.mark.exercise("landscape_along_gradient")
@pytest.mark.points(2)
@pytest.mark.parametrize("key", ["losses", "grad_distances"])
@pytest.mark.parametrize("case", LANDSCAPE_CASES, ids=[c[0] for c in LANDSCAPE_CASES])
def test_landscape_lists_match_reference(student, cache, case, key):
    got, want, mistakes = landscape_case_runs(student, cache, case)
    values = result_of(got, key, len(case[2]))
    for k, (g, w) in enumerate(zip(values, want["result"][key])):
        def table(k=k):
            return {msg: run["result"][key][k] for msg, run in mistakes().items()}
        check_number(g, w, f"{key}[{k}] (multiplier {case[2][k]})", table, ls_ctx(case), rtol=1e-6, atol=1e-10)


@pytest.mark.exercise("landscape_along_gradient")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", LANDSCAPE_CASES, ids=[c[0] for c in LANDSCAPE_CASES])
def test_landscape_beta_smoothness(student, cache, case):
    got, want, mistakes = landscape_case_runs(student, cache, case)
    value = result_of(got, "beta_smoothness")

    def table():
        return {msg: run["result"]["beta_smoothness"] for msg, run in mistakes().items()}
    check_number(value, want["result"]["beta_smoothness"], "beta_smoothness", table, ls_ctx(case), rtol=1e-6)


@pytest.mark.exercise("landscape_along_gradient")
@pytest.mark.points(2)
def test_landscape_leaves_model_unchanged(student, cache):
    for case in LANDSCAPE_CASES:
        got, _, _ = landscape_case_runs(student, cache, case)
        for key in ("losses", "grad_distances", "beta_smoothness"):
            result_of(got, key)
        check_unchanged_model(got, "landscape_along_gradient")


# ----------------------------------------------------------------------------- NoisyBatchNorm2d

C_NOISY, STEPS = 8, 20
EPS = 1e-5


def signed_input(N=16, H=4, W=4):
    """Per channel, half the values +1 and half -1 (so BN maps them to +-1/sqrt(1 + eps));
    channel 0 is constant (BN maps it to 0, and the output there is the shift m alone)."""
    rng = seeded("noisy-input")
    base = np.where(np.arange(N * H * W) < N * H * W // 2, 1.0, -1.0)
    x = np.stack([rng.permutation(base) for _ in range(C_NOISY)]).reshape(C_NOISY, N, H, W).transpose(1, 0, 2, 3)
    x = np.ascontiguousarray(x)
    x[:, 0] = 0.3
    return x


def noisy_runs(student, cache, kwargs_key="default"):
    kwargs = {"default": {}, "custom": {"n_mu": 1.0, "n_sigma": 2.0, "r_mu": 0.3, "r_sigma": 0.0}}[kwargs_key]
    x = signed_input()
    rng = seeded("noisy-eval")
    eval_x = rng.standard_normal((3, C_NOISY, 4, 4))
    dout = rng.standard_normal(size=x.shape)
    return once(cache, ("noisy", kwargs_key), lambda: student.op(
        "torch_models.noisy_bn_run", "NoisyBatchNorm2d", C_NOISY, kwargs, [x] * STEPS, eval_x, seed=1, dout=dout))


def noise_estimates(got):
    """Per step and channel: mu_hat, sigma_hat (channels 1..), the shift m of the constant channel 0,
    and the residual standard deviation around sigma * bn(x) + mu."""
    x = signed_input()
    c = 1 / math.sqrt(1 + EPS)
    plus = x > 0
    mus, sigmas, resid, shifts = [], [], [], []
    for out in got["train_out"]:
        if not isinstance(out, np.ndarray) or out.shape != x.shape:
            raise Mismatch(f"the training-mode output should have the input's shape {x.shape}, got "
                           f"{getattr(out, 'shape', type(out).__name__)}")
        for j in range(1, C_NOISY):
            hi, lo = out[:, j][plus[:, j]], out[:, j][~plus[:, j]]
            sigma, mu = (hi.mean() - lo.mean()) / (2 * c), (hi.mean() + lo.mean()) / 2
            mus.append(mu)
            sigmas.append(sigma)
            resid.append(np.concatenate([hi - (sigma * c + mu), lo - (-sigma * c + mu)]).std())
        shifts.append(out[:, 0].ravel())
    return np.array(mus).reshape(STEPS, -1), np.array(sigmas).reshape(STEPS, -1), np.array(resid), shifts


@pytest.mark.exercise("NoisyBatchNorm2d")
@pytest.mark.points(2)
def test_noisy_bn_eval_mode_is_batchnorm(student, cache):
    got = noisy_runs(student, cache)
    bn = nn.BatchNorm2d(C_NOISY).double()
    x = torch.tensor(signed_input())
    for _ in range(STEPS):
        bn(x)
    rng = seeded("noisy-eval")
    with torch.no_grad():
        want = bn.eval()(torch.tensor(rng.standard_normal((3, C_NOISY, 4, 4)))).numpy()
    first, second = got["eval_out"]
    if not np.array_equal(first, second):
        raise Mismatch("two eval-mode calls on the same input differ: the noise is applied in eval mode too; "
                       "in eval mode NoisyBatchNorm2d is plain BN")
    check_array(first, want, "the eval-mode output (compared with nn.BatchNorm2d after the same training steps: "
                "running statistics of the BN input, no noise)", rtol=1e-7, atol=1e-9)


@pytest.mark.exercise("NoisyBatchNorm2d")
@pytest.mark.points(2)
def test_noisy_bn_channel_shift(student, cache):
    """mu_j ~ U(-n_mu, n_mu) with n_mu = 0.5, one per channel and step."""
    mus, _, _, _ = noise_estimates(noisy_runs(student, cache))
    lo, hi, spread = mus.min(), mus.max(), mus.std()
    where = f"estimated per-channel shifts mu_j over {mus.size} channel-steps: min {lo:.3f}, max {hi:.3f}, std {spread:.3f}"
    if spread < 0.05:
        raise Mismatch(f"no per-channel random shift ({where}): after BN, add mu_j ~ U(-n_mu, n_mu) (n_mu = 0.5), "
                       f"drawn per channel at every step")
    if lo > -0.1:
        raise Mismatch(f"the shifts are never clearly negative ({where}): mu_j ~ U(-n_mu, n_mu), not U(0, n_mu)")
    if lo < -0.55 or hi > 0.55:
        raise Mismatch(f"the shifts leave [-0.5, 0.5] ({where}): mu_j ~ U(-n_mu, n_mu) with n_mu = 0.5 (uniform, "
                       f"not normal)")
    # the mean of n draws of U(-0.5, 0.5) has standard deviation 0.29 / sqrt(n) (0.024 for the
    # 140 draws here): 0.12 is 5 of them, so a correct layer fails with probability below 1e-6
    if not 0.2 < spread < 0.38 or abs(mus.mean()) > 0.12:
        raise Mismatch(f"the shifts do not look uniform on [-0.5, 0.5] ({where}; expected std 0.29, mean 0)")


@pytest.mark.exercise("NoisyBatchNorm2d")
@pytest.mark.points(2)
def test_noisy_bn_channel_scale(student, cache):
    """sigma_j ~ U(1, n_sigma) with n_sigma = 1.25, one per channel and step."""
    _, sigmas, _, _ = noise_estimates(noisy_runs(student, cache))
    lo, hi, mean = sigmas.min(), sigmas.max(), sigmas.mean()
    where = f"estimated per-channel scales sigma_j: min {lo:.3f}, max {hi:.3f}, mean {mean:.3f}"
    if sigmas.std() < 0.02:
        raise Mismatch(f"no per-channel random scale ({where}): multiply the BN output by s with mean "
                       f"sigma_j ~ U(1, n_sigma) (n_sigma = 1.25), drawn per channel at every step")
    if lo < 0.95 or hi > 1.3:
        raise Mismatch(f"the scales leave [1, 1.25] ({where}): sigma_j ~ U(1, n_sigma), n_sigma = 1.25")
    if not 1.08 < mean < 1.17:
        raise Mismatch(f"the scales do not look uniform on [1, 1.25] ({where}; expected mean 1.125)")


@pytest.mark.exercise("NoisyBatchNorm2d")
@pytest.mark.points(2)
def test_noisy_bn_per_element_noise(student, cache):
    """m ~ U(mu_j - r_mu, mu_j + r_mu) and s ~ N(sigma_j, r_sigma) for every element, r_mu = r_sigma = 0.1."""
    _, _, resid, shifts = noise_estimates(noisy_runs(student, cache))
    width = np.mean([s.max() - s.min() for s in shifts])
    sd_m = np.mean([s.std() for s in shifts])
    expected_resid = math.sqrt(0.01 / (1 + EPS) + 0.01 / 3)
    if width < 0.02 and resid.mean() < 0.02:
        raise Mismatch("the noise is the same for every element of a channel: draw m and s for every (n, h, w), "
                       "around the channel's mu_j and sigma_j (r_mu = r_sigma = 0.1)")
    if not 0.17 < width < 0.21 or not 0.045 < sd_m < 0.07:
        raise Mismatch(f"where BN outputs 0, the output (the shift m) spreads over {width:.3f} with std {sd_m:.3f} "
                       f"within a step; m ~ U(mu_j - r_mu, mu_j + r_mu) with r_mu = 0.1 gives a width of 0.2 and a "
                       f"std of 0.058 (uniform, r_mu is the half-width)")
    if not 0.85 * expected_resid < resid.mean() < 1.15 * expected_resid:
        raise Mismatch(f"around sigma_j * bn(x) + mu_j the output varies with std {resid.mean():.4f}, expected "
                       f"{expected_resid:.4f} = sqrt(r_sigma^2 * bn(x)^2 + r_mu^2 / 3) with r_sigma = 0.1 the "
                       f"standard deviation of s")


@pytest.mark.exercise("NoisyBatchNorm2d")
@pytest.mark.points(1)
def test_noisy_bn_redrawn_every_step(student, cache):
    mus, sigmas, _, _ = noise_estimates(noisy_runs(student, cache))
    if mus.std(axis=0).mean() < 0.1 or sigmas.std(axis=0).mean() < 0.02:
        raise Mismatch("mu_j and sigma_j stay the same from step to step: redraw them at every training-mode "
                       "forward pass")


@pytest.mark.exercise("NoisyBatchNorm2d")
@pytest.mark.points(1)
def test_noisy_bn_constants_are_arguments(student, cache):
    """NoisyBatchNorm2d(C, n_mu=1.0, n_sigma=2.0, r_mu=0.3, r_sigma=0.0)."""
    mus, sigmas, resid, shifts = noise_estimates(noisy_runs(student, cache, "custom"))
    width = np.mean([s.max() - s.min() for s in shifts])
    problems = []
    if not (mus.min() < -0.7 and mus.max() > 0.7 and mus.min() > -1.05 and mus.max() < 1.05):
        problems.append(f"shifts mu_j in [{mus.min():.2f}, {mus.max():.2f}] instead of about [-1, 1] (n_mu)")
    if not (sigmas.min() > 0.95 and sigmas.max() < 2.05 and 1.35 < sigmas.mean() < 1.65):
        problems.append(f"scales sigma_j in [{sigmas.min():.2f}, {sigmas.max():.2f}] with mean {sigmas.mean():.2f} "
                        f"instead of uniform on [1, 2] (n_sigma)")
    if not 0.5 < width < 0.62:
        problems.append(f"per-element shifts spread over {width:.2f} instead of 0.6 (2 * r_mu)")
    if not 0.75 * 0.3 / math.sqrt(3) < resid.mean() < 1.25 * 0.3 / math.sqrt(3):
        problems.append(f"per-element noise std {resid.mean():.3f} instead of {0.3 / math.sqrt(3):.3f} "
                        f"(r_mu = 0.3, r_sigma = 0)")
    if problems:
        raise Mismatch("with NoisyBatchNorm2d(8, n_mu=1.0, n_sigma=2.0, r_mu=0.3, r_sigma=0.0): "
                       + "; ".join(problems) + ". Use the constructor's arguments, not fixed constants.")


@pytest.mark.exercise("NoisyBatchNorm2d")
@pytest.mark.points(1)
def test_noisy_bn_gradients(student, cache):
    got = noisy_runs(student, cache)
    dx = got.get("dx")
    if not isinstance(dx, np.ndarray) or dx.shape != signed_input().shape or not np.all(np.isfinite(dx)):
        raise Mismatch("after backward through a training-mode output, the input's gradient should be a finite "
                       "array of the input's shape")
    if np.abs(dx).max() == 0:
        raise Mismatch("the input's gradient is zero: the gradient must flow through s * bn(x) to the input")
    grads = got.get("grads", {})
    if not grads or any(g is None for g in grads.values()):
        raise Mismatch(f"after backward the parameters {[k for k, g in grads.items() if g is None] or '(none)'} have "
                       f"no gradient: NoisyBatchNorm2d needs BN's weight and bias, trained through the noisy output")
