"""Public checks of chapter 4: PyTorch's own BN as the oracle, and properties (no reference needed)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.feedback import Mismatch, check_array, check_outputs, check_unchanged
from autograder.messages.ch04_cnn import MSG
from autograder.suitekit import bn_autograd, once
from autograder.ops import torch_models as TM


EXPECTED_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def step(run, k):
    """Step ``k`` of a bn_module_run, or the error that stopped the run before it."""
    if k >= len(run["steps"]):
        raise Mismatch("your BatchNorm2d failed" + (f" at step {k + 1}" if run["steps"] else "") + ":\n"
                       + run.get("error", "no output"))
    return run["steps"][k]


def grads_of(record, name, what):
    if name not in record["grads"]:
        raise Mismatch(f"{what}: the module has no parameter named {name!r}")
    value = record["grads"][name]
    if value is None:
        raise Mismatch(f"{what}: {name}.grad is None after backward: the output does not depend on {name}")
    return value


# ----------------------------------------------------------------------------- BatchNorm2d


def bn_case():
    rng = np.random.default_rng(4)
    shape = (4, 3, 5, 5)
    steps = [{"mode": "train", "x": rng.standard_normal(shape) * 2 + 1, "dout": rng.standard_normal(shape)},
             {"mode": "train", "x": rng.standard_normal(shape) * 3 - 1, "dout": rng.standard_normal(shape)},
             {"mode": "eval", "x": rng.standard_normal((2, 3, 5, 5)), "dout": rng.standard_normal((2, 3, 5, 5))}]
    parameters = {"weight": rng.uniform(0.5, 2, 3), "bias": rng.normal(0, 1, 3)}
    return dict(init_args=(3,), steps=steps, dtype="float64", parameters=parameters)


def bn_student(student, cache):
    return once(cache, "bn", lambda: student.op("torch_models.bn_module_run", "BatchNorm2d", **bn_case()))


MOMENTUM, EPS = 0.1, 1e-5


def _channel(a):
    return np.asarray(a).reshape(1, -1, 1, 1)


def bn_public_mistakes(case, want):
    """``[per step {output name: {message: value}}]``: what each known bug of a BatchNorm2d gives
    on the public case, from public information only: nn.BatchNorm2d's own outputs rescaled per
    channel, PyTorch's batch_norm / layer_norm applied over other axes, and the running-statistics
    recursions of the bugs."""
    w, b = case["parameters"]["weight"], case["parameters"]["bias"]
    T = torch.tensor
    running = {"reversed": (np.zeros(3), np.ones(3)), "biased": (np.zeros(3), np.ones(3)),
               "frozen": (np.zeros(3), np.ones(3))}
    out = []
    for k, (spec, truth) in enumerate(zip(case["steps"], want["steps"])):
        x, dout = spec["x"], spec["dout"]
        N, C, H, W = x.shape
        mu, var, var1 = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
        m = {name: {} for name in ("out", "dx", "running_mean", "running_var")}
        if spec["mode"] == "train":
            x_hat = (truth["out"] - _channel(b)) / _channel(w)  # nn.BatchNorm2d's own normalized x
            m["out"][MSG["unbiased"]] = _channel(w) * x_hat * _channel(np.sqrt((var + EPS) / (var1 + EPS))) + _channel(b)
            m["out"][MSG["eps_outside"]] = (_channel(w) * x_hat * _channel(np.sqrt(var + EPS) / (np.sqrt(var) + EPS))
                                            + _channel(b))
            m["out"][MSG["no_affine"]] = x_hat
            wide = F.batch_norm(T(x.reshape(N, -1)), None, None, T(np.repeat(w, H * W)), T(np.repeat(b, H * W)),
                                training=True, eps=EPS)
            m["out"][MSG["per_position"]] = wide.numpy().reshape(x.shape)
            m["out"][MSG["per_sample"]] = (_channel(w) * F.layer_norm(T(x), (C, H, W), eps=EPS).numpy()
                                           + _channel(b))
            flat_hat = F.batch_norm(T(x.reshape(-1, C)), None, None, training=True, eps=EPS).numpy()
            m["out"][MSG["reshape"]] = _channel(w) * flat_hat.reshape(x.shape) + _channel(b)
            m["dx"][MSG["detached"]] = _channel(w) * dout / _channel(np.sqrt(var + EPS))
            rules = {"reversed": lambda r, s: MOMENTUM * r + (1 - MOMENTUM) * s,
                     "biased": lambda r, s: (1 - MOMENTUM) * r + MOMENTUM * s,
                     "frozen": lambda r, s: r}
            for name, rule in rules.items():
                r_mean, r_var = running[name]
                running[name] = (rule(r_mean, mu), rule(r_var, var if name == "biased" else var1))
            m["running_mean"][MSG["reversed_momentum"]] = running["reversed"][0]
            m["running_var"][MSG["reversed_momentum"]] = running["reversed"][1]
            m["running_var"][MSG["biased_running_var"]] = running["biased"][1]
            m["running_mean"][MSG["no_running_update"]] = running["frozen"][0]
            m["running_var"][MSG["no_running_update"]] = running["frozen"][1]
        else:
            m["out"][MSG["batch_stats_in_eval"]] = F.batch_norm(T(x), None, None, T(w), T(b), training=True,
                                                                eps=EPS).numpy()
            for name, message in (("reversed", "reversed_momentum"), ("biased", "biased_running_var"),
                                  ("frozen", "no_running_update")):
                r_mean, r_var = running[name]
                m["out"][MSG[message]] = F.batch_norm(T(x), T(r_mean), T(r_var), T(w), T(b), training=False,
                                                      eps=EPS).numpy()
        out.append(m)
    return out


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
def test_batchnorm2d_matches_torch_public(student, cache):
    """Two training steps and one eval step, compared with torch.nn.BatchNorm2d."""
    got = bn_student(student, cache)
    case = bn_case()
    want = TM.bn_module_run({"BatchNorm2d": nn.BatchNorm2d}, "BatchNorm2d", **case)
    mistakes = bn_public_mistakes(case, want)
    tol = dict(rtol=1e-7, atol=1e-9)
    for k, w in enumerate(want["steps"]):
        g = step(got, k)
        what = f"step {k + 1} ({'training' if k < 2 else 'eval'} mode), compared with nn.BatchNorm2d"
        outputs = [("output", g["out"], w["out"], dict(mistakes=mistakes[k]["out"], **tol)),
                   ("the gradient of the input", g["dx"], w["dx"], dict(mistakes=mistakes[k]["dx"], **tol))]
        for name in ("running_mean", "running_var"):
            if name not in g["buffers"]:
                raise Mismatch(f"no buffer named {name!r}: register it with self.register_buffer({name!r}, ...)",
                               mistake="missing_buffer")
            outputs.append((name, g["buffers"][name], w["buffers"][name], dict(mistakes=mistakes[k][name], **tol)))
        check_outputs(outputs, context=what)
        check_outputs([(f"{name}.grad", grads_of(g, name, what), w["grads"][name], tol) for name in ("weight", "bias")],
                      context=what)
        count = g["buffers"].get("num_batches_tracked")
        if count is not None and k < 2 and np.ndim(count) == 0 and int(count) == 0:
            raise Mismatch(f"num_batches_tracked is 0 after {what}. {MSG['no_num_batches']}", mistake="no_num_batches")


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
def test_batchnorm2d_state_dict_public(student, cache):
    got = bn_student(student, cache)
    if got["state_dict_keys"] != EXPECTED_KEYS:
        raise Mismatch(f"state_dict keys are {got['state_dict_keys']}, expected {EXPECTED_KEYS} (those of "
                       f"nn.BatchNorm2d): parameters weight and bias, then buffers registered with register_buffer",
                       mistake="state_dict_keys")


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
def test_batchnorm2d_built_from_tensor_ops_public(student, cache):
    got = bn_student(student, cache)
    step(got, 0)  # the forward pass must run
    if got["batch_norm_calls"]:
        raise Mismatch(f"your BatchNorm2d calls PyTorch's batch norm ({', '.join(got['batch_norm_calls'])}); "
                       f"the exercise is to build it from tensor operations (mean, var, sqrt, ...)", mistake="calls_batch_norm")


# ----------------------------------------------------------------------------- BatchNormFunction


def fn_case():
    rng = np.random.default_rng(5)
    shape = (3, 2, 2, 3)
    return dict(x=rng.standard_normal(shape) * 2 + 1, gamma=rng.uniform(0.5, 2, 2), beta=rng.normal(0, 1, 2),
                eps=1e-5, dout=rng.standard_normal(shape))


def fn_student(student, cache):
    return once(cache, "fn", lambda: student.op("torch_models.function_run", "BatchNormFunction", gradcheck=True,
                                                 **fn_case()))


@pytest.mark.exercise("BatchNormFunction")
@pytest.mark.points(1)
def test_batchnorm_function_matches_f_batch_norm_public(student, cache):
    got = fn_student(student, cache)
    case = fn_case()
    x, gamma, beta = (torch.tensor(case[k], requires_grad=True) for k in ("x", "gamma", "beta"))
    out = F.batch_norm(x, None, None, gamma, beta, training=True, eps=case["eps"])
    dx, dgamma, dbeta = torch.autograd.grad(out, (x, gamma, beta), torch.tensor(case["dout"]))
    tol = dict(rtol=1e-7, atol=1e-9)
    for name in ("x", "gamma", "beta"):
        check_unchanged(case[name], got["inputs_after"][name], name)
    x_np, gamma_np, beta_np, dout_np, eps = (case[k] for k in ("x", "gamma", "beta", "dout", "eps"))
    var, var1 = x_np.var(axis=(0, 2, 3)), x_np.var(axis=(0, 2, 3), ddof=1)
    x_hat = (out.detach().numpy() - _channel(beta_np)) / _channel(gamma_np)
    count, batch = x_np.size // x_np.shape[1], x_np.shape[0]
    dgamma, dbeta = dgamma.numpy(), dbeta.numpy()
    mistakes = {
        "out": {MSG["unbiased"]: _channel(gamma_np) * x_hat * _channel(np.sqrt((var + eps) / (var1 + eps)))
                + _channel(beta_np)},
        "dx": {MSG["dropped_paths"]: bn_autograd(x_np, gamma_np, beta_np, dout_np, eps, detach_mean=True, detach_var=True)[0],
               MSG["dropped_mean_path"]: bn_autograd(x_np, gamma_np, beta_np, dout_np, eps, detach_mean=True)[0],
               MSG["dropped_var_path"]: bn_autograd(x_np, gamma_np, beta_np, dout_np, eps, detach_var=True)[0]},
        "dgamma": {MSG["dparams_mean"]: dgamma / count, MSG["dparams_batch"]: dgamma / batch,
                   MSG["swapped_dparams"]: dbeta},
        "dbeta": {MSG["dparams_mean"]: dbeta / count, MSG["dparams_batch"]: dbeta / batch,
                  MSG["swapped_dparams"]: dgamma},
    }
    check_outputs([(name, got[name], truth, dict(mistakes=mistakes[name], **tol))
                   for name, truth in (("out", out.detach().numpy()), ("dx", dx.numpy()), ("dgamma", dgamma),
                                       ("dbeta", dbeta))],
                  context="x of shape (3, 2, 2, 3), compared with F.batch_norm and autograd through it")


@pytest.mark.exercise("BatchNormFunction")
@pytest.mark.points(1)
def test_batchnorm_function_gradcheck_public(student, cache):
    got = fn_student(student, cache)
    if not got["gradcheck"]["passed"]:
        raise Mismatch("the gradient check (your backward against central differences of your forward, "
                       "float64 inputs of shape (3, 2, 2, 3), as torch.autograd.gradcheck does) fails: "
                       + got["gradcheck"]["message"].splitlines()[0])


@pytest.mark.exercise("BatchNormFunction")
@pytest.mark.points(1)
def test_batchnorm_function_backward_by_hand_public(student, cache):
    got = fn_student(student, cache)
    if got["autograd_calls"]:
        raise Mismatch("your backward calls autograd (torch.autograd.grad or .backward()); "
                       "compute dx, dgamma and dbeta by hand with the compact formula", mistake="autograd_in_backward")
    if got["batch_norm_calls"]:
        raise Mismatch(f"your BatchNormFunction calls PyTorch's batch norm ({', '.join(got['batch_norm_calls'])}); "
                       f"compute the forward pass from tensor operations", mistake="calls_batch_norm")


# ----------------------------------------------------------------------------- make_cnn


def documented_shapes(use_bn, num_classes=10, in_channels=1, width=32):
    """The parameter shapes of the architecture make_cnn's docstring specifies."""
    shapes = []
    for c_in, c_out in ((in_channels, width), (width, width), (width, 2 * width), (2 * width, 2 * width)):
        shapes.append([c_out, c_in, 3, 3])
        shapes += [[c_out], [c_out]] if use_bn else [[c_out]]
    return shapes + [[num_classes, 2 * width * 7 * 7], [num_classes]]


OTHER_CONFIG = {"use_bn": True, "num_classes": 5, "in_channels": 3, "width": 8}


@pytest.mark.exercise("make_cnn")
@pytest.mark.points(1)
def test_make_cnn_public(student):
    x = np.random.default_rng(6).standard_normal((2, 1, 28, 28))
    x3 = np.random.default_rng(6).standard_normal((2, 3, 28, 28))
    got = student.op("torch_models.inspect_cnn", "make_cnn", [{"use_bn": True}, {"use_bn": False}, OTHER_CONFIG],
                     {"1": x, "3": x3})
    for use_bn, item in zip((True, False), got):
        where = f"make_cnn(use_bn={use_bn})"
        for mode in ("train", "eval"):
            logits = item[f"logits_{mode}"]
            if not isinstance(logits, np.ndarray) or logits.shape != (2, 10):
                raise Mismatch(f"{where} maps input of shape (2, 1, 28, 28) to "
                               f"{getattr(logits, 'shape', type(logits).__name__)}, expected logits of shape (2, 10)")
        kinds = [layer["kind"] for layer in item["layers"]]
        convs = [layer for layer in item["layers"] if layer["kind"] == "conv"]
        if not convs:
            raise Mismatch(f"{where} has no nn.Conv2d layer")
        if not use_bn:
            if "bn" in kinds:
                raise Mismatch(f"{where} contains a BatchNorm layer", mistake="cnn_bn_without_use_bn")
            continue
        for i, kind in enumerate(kinds):
            if kind == "conv" and kinds[i + 1:i + 3] != ["bn", "relu"]:
                raise Mismatch(f"{where}: convolution {convs.index(item['layers'][i]) + 1} is followed by "
                               f"{kinds[i + 1:i + 3]}, expected BatchNorm then ReLU", mistake="cnn_layer_order")
        if any(conv["bias"] for conv in convs):
            raise Mismatch(f"{where}: a convolution followed by BN should have bias=False (BN's beta replaces it)",
                           mistake="cnn_bias_with_bn")
    other = got[2]
    where = "make_cnn(" + ", ".join(f"{k}={v}" for k, v in OTHER_CONFIG.items()) + ")"
    want = documented_shapes(**OTHER_CONFIG)
    convs = [layer for layer in other["layers"] if layer["kind"] == "conv"]
    widths = [layer.get("out_channels") for layer in convs]
    if widths != [8, 8, 16, 16]:
        raise Mismatch(f"{where}: the convolutions have {widths} output channels; the docstring's architecture has "
                       f"[8, 8, 16, 16] (width, width, 2 * width, 2 * width)", mistake="cnn_width")
    if other["parameter_shapes"] != want:
        raise Mismatch(f"{where} has parameters of shapes {other['parameter_shapes']}; the chapter's network has "
                       f"{want} (3x3 convolutions with padding 1, as the docstring specifies)", mistake="cnn_architecture")


# ----------------------------------------------------------------------------- evaluate


def probe_case(rng, N, D=16, H=8, K=3):
    weights = {
        "fc1_weight": rng.normal(0, 1 / np.sqrt(D), (H, D)), "fc1_bias": rng.normal(0, 0.1, H),
        "bn_weight": rng.uniform(0.5, 2, H), "bn_bias": rng.normal(0, 0.5, H),
        "bn_running_mean": rng.normal(0, 1.5, H), "bn_running_var": rng.uniform(0.2, 3, H),
        "fc2_weight": rng.normal(0, 1, (K, H)), "fc2_bias": rng.normal(0, 0.1, K),
    }
    X = rng.standard_normal((N, 1, 4, 4)).astype(np.float32)
    model = TM.build_probe(weights).eval()
    with torch.no_grad():
        pred = model(torch.tensor(X)).argmax(1).numpy()
    y = np.where(rng.random(N) < 0.7, pred, rng.integers(0, K, N))
    accuracy = float(np.mean(pred == y))
    return weights, X, y, accuracy


@pytest.mark.exercise("evaluate")
@pytest.mark.points(1)
def test_evaluate_public(student):
    weights, X, y, accuracy = probe_case(np.random.default_rng(7), 20)
    got = student.op("torch_models.evaluate_run", "evaluate", weights, X, y, batch_size=8, start_mode="train")
    # The known mistakes, from the same public probe: predictions in training mode, and the
    # counts of correct predictions per batch of 8.
    model = TM.build_probe(weights).train()
    with torch.no_grad():
        pred_train = np.concatenate([model(torch.tensor(X[i:i + 8])).argmax(1).numpy() for i in range(0, len(X), 8)])
        pred = TM.build_probe(weights).eval()(torch.tensor(X)).argmax(1).numpy()
    hits = [np.mean(pred[i:i + 8] == y[i:i + 8]) for i in range(0, len(X), 8)]
    mistakes = {MSG["eval_train_mode"]: float(np.mean(pred_train == y)), MSG["eval_count"]: accuracy * len(X),
                MSG["eval_percent"]: 100 * accuracy, MSG["eval_batch_mean"]: float(np.mean(hits)),
                MSG["eval_last_batch"]: float(hits[-1])}
    check_array(got["accuracy"], np.asarray(accuracy), "the accuracy (a fraction in [0, 1])", rtol=1e-6, atol=1e-9,
                mistakes={k: np.asarray(v) for k, v in mistakes.items()})
    if any(training for training, _, _ in got["log"]):
        raise Mismatch("the model ran in training mode: call model.eval() before predicting", mistake="eval_train_mode")
    if any(grad for _, grad, _ in got["log"]):
        raise Mismatch("the forward passes ran with gradient tracking: wrap them in torch.no_grad()",
                       mistake="eval_no_grad")
    if not got["after"]["modes"][0]:
        raise Mismatch("the model was in training mode before evaluate and is in eval mode afterwards: "
                       "restore its previous mode", mistake="eval_mode_not_restored")
