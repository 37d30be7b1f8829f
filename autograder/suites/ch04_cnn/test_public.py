"""Public checks of chapter 4: PyTorch's own BN as the oracle, and properties (no reference needed)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.suitekit import once
from autograder.feedback import Mismatch, check_array
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


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
def test_batchnorm2d_matches_torch_public(student, cache):
    """Two training steps and one eval step, compared with torch.nn.BatchNorm2d."""
    got = bn_student(student, cache)
    want = TM.bn_module_run({"BatchNorm2d": nn.BatchNorm2d}, "BatchNorm2d", **bn_case())
    tol = dict(rtol=1e-7, atol=1e-9)
    for k, w in enumerate(want["steps"]):
        g = step(got, k)
        what = f"step {k + 1} ({'training' if k < 2 else 'eval'} mode), compared with nn.BatchNorm2d"
        check_array(g["out"], w["out"], f"output at {what}", **tol)
        check_array(g["dx"], w["dx"], f"gradient of the input at {what}", **tol)
        for name in ("weight", "bias"):
            check_array(grads_of(g, name, what), w["grads"][name], f"{name}.grad at {what}", **tol)
        for name in ("running_mean", "running_var"):
            if name not in g["buffers"]:
                raise Mismatch(f"no buffer named {name!r}: register it with self.register_buffer({name!r}, ...)")
            check_array(g["buffers"][name], w["buffers"][name], f"{name} after {what}", **tol)


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
def test_batchnorm2d_state_dict_public(student, cache):
    got = bn_student(student, cache)
    if got["state_dict_keys"] != EXPECTED_KEYS:
        raise Mismatch(f"state_dict keys are {got['state_dict_keys']}, expected {EXPECTED_KEYS} (those of "
                       f"nn.BatchNorm2d): parameters weight and bias, then buffers registered with register_buffer")


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
def test_batchnorm2d_built_from_tensor_ops_public(student, cache):
    got = bn_student(student, cache)
    step(got, 0)  # the forward pass must run
    if got["batch_norm_calls"]:
        raise Mismatch(f"your BatchNorm2d calls PyTorch's batch norm ({', '.join(got['batch_norm_calls'])}); "
                       f"the exercise is to build it from tensor operations (mean, var, sqrt, ...)")


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
    check_array(got["out"], out.detach().numpy(), "out (compared with F.batch_norm)", **tol)
    for name, want in (("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)):
        check_array(got[name], want.numpy(), f"{name} (compared with autograd through F.batch_norm)", **tol)


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
                       "compute dx, dgamma and dbeta by hand with the compact formula")
    if got["batch_norm_calls"]:
        raise Mismatch(f"your BatchNormFunction calls PyTorch's batch norm ({', '.join(got['batch_norm_calls'])}); "
                       f"compute the forward pass from tensor operations")


# ----------------------------------------------------------------------------- make_cnn


@pytest.mark.exercise("make_cnn")
@pytest.mark.points(1)
def test_make_cnn_public(student):
    x = np.random.default_rng(6).standard_normal((2, 1, 28, 28))
    got = student.op("torch_models.inspect_cnn", "make_cnn", [{"use_bn": True}, {"use_bn": False}], {"1": x})
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
                raise Mismatch(f"{where} contains a BatchNorm layer")
            continue
        for i, kind in enumerate(kinds):
            if kind == "conv" and kinds[i + 1:i + 3] != ["bn", "relu"]:
                raise Mismatch(f"{where}: convolution {convs.index(item['layers'][i]) + 1} is followed by "
                               f"{kinds[i + 1:i + 3]}, expected BatchNorm then ReLU")
        if any(conv["bias"] for conv in convs):
            raise Mismatch(f"{where}: a convolution followed by BN should have bias=False (BN's beta replaces it)")


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
    check_array(got["accuracy"], np.asarray(accuracy), "the accuracy (a fraction in [0, 1])", rtol=1e-6, atol=1e-9)
    if any(training for training, _, _ in got["log"]):
        raise Mismatch("the model ran in training mode: call model.eval() before predicting")
    if any(grad for _, grad, _ in got["log"]):
        raise Mismatch("the forward passes ran with gradient tracking: wrap them in torch.no_grad()")
    if not got["after"]["modes"][0]:
        raise Mismatch("the model was in training mode before evaluate and is in eval mode afterwards: "
                       "restore its previous mode")
