"""Hidden tests of chapter 4: every exercise against nn.BatchNorm2d and the reference on seeded cases.

Each sandbox call runs a whole case (several forward/backward steps) and is shared by the
tests that look at different parts of it (outputs, gradients, running statistics, eval
mode), through the module-scoped ``cache``.
"""

import zlib

import numpy as np
import pytest
import torch
from torch import nn

from autograder.suitekit import once
from autograder.feedback import check_array, check_unchanged, Mismatch
from autograder.mistakes import ch04_cnn as M
from autograder.ops import torch_models as TM
from solutions import ch04_cnn as ref


EXPECTED_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def step(run, k):
    """Step ``k`` of a bn_module_run, or the error that stopped the run before it."""
    if k >= len(run["steps"]):
        raise Mismatch("your BatchNorm2d failed" + (f" at step {k + 1}" if run["steps"] else "") + ":\n"
                       + run.get("error", "no output"))
    return run["steps"][k]


def check(actual, expected, name, mistakes=None, **kwargs):
    """check_array, computing the known mistakes (``mistakes()``) only when the answer is wrong."""
    try:
        check_array(actual, expected, name, **kwargs)
    except Mismatch:
        if mistakes is None:
            raise
        check_array(actual, expected, name, mistakes=mistakes(), **kwargs)


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-7, atol=1e-9)


def seeded(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


# ----------------------------------------------------------------------------- BatchNorm2d

# (id, shape, scale, offset, dtype, momentum, eps, eval batch size)
BN_CASES = [
    ("4x3x5x5-constant-channel", (4, 3, 5, 5), 1.0, 0.0, "float64", 0.1, 1e-5, 2),
    ("2x2x1x1", (2, 2, 1, 1), 1.0, 0.0, "float64", 0.1, 1e-5, 1),
    ("3x4x2x3-var-below-eps", (3, 4, 2, 3), 1e-3, 0.0, "float64", 0.1, 1e-5, 2),
    ("5x3x4x4-scale1e3-offset5e3", (5, 3, 4, 4), 1e3, 5e3, "float64", 0.3, 1e-5, 3),
    ("4x3x3x3-float32-eps1e-3", (4, 3, 3, 3), 1.0, 2.0, "float32", 0.2, 1e-3, 2),
]
BN_IDS = [c[0] for c in BN_CASES]


def bn_kwargs(case):
    name, shape, scale, offset, dtype, momentum, eps, n_eval = case
    rng = seeded(name)
    C = shape[1]

    def sample(n):
        return rng.standard_normal((n, *shape[1:])) * scale + (rng.normal(0, 1, (1, C, 1, 1)) * scale + offset)

    x1 = sample(shape[0])
    if "constant" in name:
        x1[:, 1] = 0.7  # variance 0: the output of that channel is beta
    steps = [{"mode": "train", "x": x1, "dout": rng.standard_normal(shape)},
             {"mode": "train", "x": sample(shape[0]), "dout": rng.standard_normal(shape)},
             {"mode": "eval", "x": sample(n_eval), "dout": rng.standard_normal((n_eval, *shape[1:]))}]
    parameters = {"weight": rng.uniform(0.5, 2, C), "bias": rng.normal(0, 1, C)}
    return dict(init_args=(C,), init_kwargs={"momentum": momentum, "eps": eps}, steps=steps, dtype=dtype,
                parameters=parameters)


def bn_runs(student, cache, case):
    """(student's run, nn.BatchNorm2d's run, lazy {message: run} of the known mistakes)."""
    kwargs = bn_kwargs(case)
    got = once(cache, ("bn", case[0]), lambda: student.op("torch_models.bn_module_run", "BatchNorm2d", **kwargs))
    want = once(cache["truth"], ("bn-torch", case[0]),
                lambda: TM.bn_module_run({"BatchNorm2d": nn.BatchNorm2d}, "BatchNorm2d", **kwargs))

    def mistakes():
        return once(cache["truth"], ("bn-mistakes", case[0]),
                    lambda: M.bn_mistake_runs(lambda ns: TM.bn_module_run(ns, "BatchNorm2d", **kwargs)))
    return got, want, mistakes


def step_of(runs, k, *path):
    """{message: runs[...]["steps"][k][path...]} for lazily computed mistake runs."""
    def pick():
        out = {}
        for message, run in runs().items():
            if k >= len(run["steps"]):
                continue
            value = run["steps"][k]
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                out[message] = value
        return out
    return pick


def ctx(case, k=None):
    name, shape, scale, offset, dtype, momentum, eps, _ = case
    where = f"x of shape {shape}, {dtype}, scale {scale:g}, offset {offset:g}, momentum={momentum}, eps={eps:g}"
    if k is not None:
        where += f"; step {k + 1}, {'training' if k < 2 else 'eval'} mode"
    return where


def integer(value):
    """A returned one-element integer array as an int (None if it is something else)."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        return int(value.reshape(()))
    return None


def student_grad(record, name):
    if name not in record["grads"]:
        raise Mismatch(f"the module has no parameter named {name!r}")
    if record["grads"][name] is None:
        raise Mismatch(f"{name}.grad is None after backward: the output does not depend on {name}"
                       + (" (gamma)" if name == "weight" else " (beta)"))
    return record["grads"][name]


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
@pytest.mark.parametrize("case", BN_CASES, ids=BN_IDS)
def test_batchnorm2d_training_output(student, cache, case):
    got, want, mistakes = bn_runs(student, cache, case)
    for k in (0, 1):
        check(step(got, k)["out"], want["steps"][k]["out"], "the output", mistakes=step_of(mistakes, k, "out"),
              context=ctx(case, k), **tol(case[4]))


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
@pytest.mark.parametrize("case", BN_CASES, ids=BN_IDS)
def test_batchnorm2d_training_gradients(student, cache, case):
    got, want, mistakes = bn_runs(student, cache, case)
    for k in (0, 1):
        g, w = step(got, k), want["steps"][k]
        check(g["dx"], w["dx"], "the gradient of the input", mistakes=step_of(mistakes, k, "dx"),
              context=ctx(case, k), **tol(case[4]))
        for name in ("weight", "bias"):
            check(student_grad(g, name), w["grads"][name], f"{name}.grad",
                  mistakes=step_of(mistakes, k, "grads", name), context=ctx(case, k), **tol(case[4]))


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
@pytest.mark.parametrize("case", BN_CASES, ids=BN_IDS)
def test_batchnorm2d_running_statistics(student, cache, case):
    got, want, mistakes = bn_runs(student, cache, case)
    for k in (0, 1, 2):
        g, w = step(got, k)["buffers"], want["steps"][k]["buffers"]
        for name in ("running_mean", "running_var"):
            if name not in g:
                raise Mismatch(f"no buffer named {name!r}: register it with self.register_buffer({name!r}, ...)")
            what = f"{name} after step {k + 1}" + (" (an eval-mode step must not change it)" if k == 2 else "")
            check(g[name], w[name], what, mistakes=step_of(mistakes, k, "buffers", name),
                  context=ctx(case), **tol(case[4]))
        count, expected = integer(g.get("num_batches_tracked")), integer(w["num_batches_tracked"])
        if count != expected:
            raise Mismatch(f"num_batches_tracked is {count} after step {k + 1}, expected {expected}. "
                           f"{M.MSG['no_num_batches']}")


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
@pytest.mark.parametrize("case", BN_CASES, ids=BN_IDS)
def test_batchnorm2d_eval_mode(student, cache, case):
    got, want, mistakes = bn_runs(student, cache, case)
    g, w = step(got, 2), want["steps"][2]
    check(g["out"], w["out"], "the eval-mode output", mistakes=step_of(mistakes, 2, "out"),
          context=ctx(case, 2), **tol(case[4]))
    check(g["dx"], w["dx"], "the eval-mode gradient of the input", mistakes=step_of(mistakes, 2, "dx"),
          context=ctx(case, 2), **tol(case[4]))


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
def test_batchnorm2d_structure_and_initial_state(student, cache):
    got, _, _ = bn_runs(student, cache, BN_CASES[0])
    if got["state_dict_keys"] != EXPECTED_KEYS:
        raise Mismatch(f"state_dict keys are {got['state_dict_keys']}, expected {EXPECTED_KEYS} (those of "
                       f"nn.BatchNorm2d): parameters weight and bias, then buffers registered with register_buffer")
    if got["parameter_names"] != ["weight", "bias"]:
        raise Mismatch(f"the parameters are {got['parameter_names']}, expected ['weight', 'bias'] (nn.Parameter); "
                       f"running statistics are buffers, not parameters")
    C = BN_CASES[0][1][1]
    initial = got["initial"]
    for name, value in (("weight", np.ones(C)), ("bias", np.zeros(C)), ("running_mean", np.zeros(C)),
                        ("running_var", np.ones(C))):
        check_array(initial[name], value, f"the initial {name} (as in nn.BatchNorm2d)", rtol=0, atol=0)
    count = initial["num_batches_tracked"]
    if not isinstance(count, np.ndarray) or count.size != 1 or count.dtype != np.int64 or integer(count) != 0:
        raise Mismatch(f"the initial num_batches_tracked should be torch.tensor(0, dtype=torch.long), got "
                       f"{getattr(count, 'dtype', type(count).__name__)} {count!r}")


@pytest.mark.exercise("BatchNorm2d")
@pytest.mark.points(1)
def test_batchnorm2d_built_from_tensor_ops(student, cache):
    calls = set()
    for case in BN_CASES[:2]:
        got = bn_runs(student, cache, case)[0]
        step(got, 0)  # the forward pass must run
        calls.update(got["batch_norm_calls"])
    if calls:
        raise Mismatch(f"your BatchNorm2d calls PyTorch's batch norm ({', '.join(sorted(calls))}); the exercise "
                       f"is to build it from tensor operations (mean, var, sqrt, ...)")


# ----------------------------------------------------------------------------- BatchNormFunction

# (id, shape, scale, offset, dtype, eps)
FN_CASES = [
    ("4x3x3x3", (4, 3, 3, 3), 1.0, 0.0, "float64", 1e-5),
    ("2x2x1x1", (2, 2, 1, 1), 1.0, 0.0, "float64", 1e-5),
    ("3x4x2x2-var-below-eps", (3, 4, 2, 2), 1e-3, 0.0, "float64", 1e-5),
    ("5x2x3x3-scale1e2-offset1e3-eps1e-3", (5, 2, 3, 3), 1e2, 1e3, "float64", 1e-3),
    ("4x3x4x4-float32", (4, 3, 4, 4), 1.0, 1.0, "float32", 1e-5),
]
FN_IDS = [c[0] for c in FN_CASES]


def fn_kwargs(case):
    name, shape, scale, offset, dtype, eps = case
    rng = seeded("fn-" + name)
    C = shape[1]
    x = rng.standard_normal(shape) * scale + rng.normal(0, 1, (1, C, 1, 1)) * scale + offset
    if dtype == "float32":
        x = x.astype(np.float32).astype(np.float64)
    return dict(x=x, gamma=rng.uniform(0.5, 2, C), beta=rng.normal(0, 1, C), eps=eps,
                dout=rng.standard_normal(shape), dtype=dtype)


def fn_runs(student, cache, case):
    kwargs = fn_kwargs(case)
    got = once(cache, ("fn", case[0]), lambda: student.op("torch_models.function_run", "BatchNormFunction", **kwargs))
    want = once(cache["truth"], ("fn-ref", case[0]),
                lambda: TM.function_run({"BatchNormFunction": ref.BatchNormFunction}, "BatchNormFunction", **kwargs))

    def mistakes(index):
        def pick():
            runs = M.function_mistakes(kwargs["x"], kwargs["gamma"], kwargs["beta"], kwargs["eps"], kwargs["dout"])
            return {message: outputs[index] for message, outputs in runs.items()}
        return pick
    return got, want, mistakes


def fn_ctx(case):
    name, shape, scale, offset, dtype, eps = case
    return f"x of shape {shape}, {dtype}, scale {scale:g}, offset {offset:g}, eps={eps:g}"


@pytest.mark.exercise("BatchNormFunction")
@pytest.mark.points(1)
@pytest.mark.parametrize("case", FN_CASES, ids=FN_IDS)
def test_batchnorm_function_forward(student, cache, case):
    got, want, mistakes = fn_runs(student, cache, case)
    check(got["out"], want["out"], "out", mistakes=mistakes(0), context=fn_ctx(case), **tol(case[4]))
    kwargs = fn_kwargs(case)
    for name in ("x", "gamma", "beta"):
        before = np.asarray(kwargs[name]).astype(np.float32 if case[4] == "float32" else np.float64)
        check_unchanged(before, got["inputs_after"][name], name)


@pytest.mark.exercise("BatchNormFunction")
@pytest.mark.points(1)
@pytest.mark.parametrize("case", FN_CASES, ids=FN_IDS)
def test_batchnorm_function_backward(student, cache, case):
    got, want, mistakes = fn_runs(student, cache, case)
    for index, name in ((1, "dx"), (2, "dgamma"), (3, "dbeta")):
        if got[name] is None:
            raise Mismatch(f"{name} is None: backward must return (dx, dgamma, dbeta, None)")
        check(got[name], want[name], name, mistakes=mistakes(index), context=fn_ctx(case), **tol(case[4]))


@pytest.mark.exercise("BatchNormFunction")
@pytest.mark.points(2)
def test_batchnorm_function_backward_by_hand(student, cache):
    got, _, _ = fn_runs(student, cache, FN_CASES[0])
    if got["autograd_calls"]:
        raise Mismatch("your backward calls autograd (torch.autograd.grad or .backward()); compute dx, dgamma "
                       "and dbeta by hand with the compact formula")


@pytest.mark.exercise("BatchNormFunction")
@pytest.mark.points(1)
def test_batchnorm_function_built_from_tensor_ops(student, cache):
    got, _, _ = fn_runs(student, cache, FN_CASES[0])
    if got["batch_norm_calls"]:
        raise Mismatch(f"your BatchNormFunction calls PyTorch's batch norm ({', '.join(got['batch_norm_calls'])}); "
                       f"compute the forward pass from tensor operations")


# ----------------------------------------------------------------------------- make_cnn

CNN_CONFIGS = [
    {"use_bn": True},
    {"use_bn": False},
    {"use_bn": True, "num_classes": 5, "in_channels": 3, "width": 8},
    {"use_bn": False, "num_classes": 4, "in_channels": 2, "width": 4},
]


def cnn_inputs():
    rng = seeded("cnn")
    return {str(c): rng.standard_normal((2, c, 28, 28)) for c in (1, 2, 3)}


def cnn_runs(student, cache):
    got = once(cache, "cnn", lambda: student.op("torch_models.inspect_cnn", "make_cnn", CNN_CONFIGS, cnn_inputs(),
                                                seed=3))
    want = once(cache["truth"], "cnn-ref", lambda: TM.inspect_cnn({"make_cnn": ref.make_cnn}, "make_cnn", CNN_CONFIGS,
                                                         cnn_inputs(), seed=3))
    return got, want


def call_text(config):
    return "make_cnn(" + ", ".join(f"{k}={v}" for k, v in config.items()) + ")"


@pytest.mark.exercise("make_cnn")
@pytest.mark.points(2)
def test_make_cnn_output_shapes(student, cache):
    got, _ = cnn_runs(student, cache)
    for config, item in zip(CNN_CONFIGS, got):
        want = (2, config.get("num_classes", 10))
        for mode in ("train", "eval"):
            logits = item[f"logits_{mode}"]
            if not isinstance(logits, np.ndarray) or logits.shape != want:
                raise Mismatch(f"{call_text(config)} maps input of shape (2, {config.get('in_channels', 1)}, 28, 28) "
                               f"in {mode} mode to {getattr(logits, 'shape', type(logits).__name__)}, "
                               f"expected logits of shape {want}")


@pytest.mark.exercise("make_cnn")
@pytest.mark.points(3)
def test_make_cnn_bn_placement_and_conv_bias(student, cache):
    got, _ = cnn_runs(student, cache)
    for config, item in zip(CNN_CONFIGS, got):
        where = call_text(config)
        layers = item["layers"]
        kinds = [layer["kind"] for layer in layers]
        convs = [i for i, k in enumerate(kinds) if k == "conv"]
        if not convs:
            raise Mismatch(f"{where} has no nn.Conv2d layer")
        if not config["use_bn"]:
            if "bn" in kinds:
                raise Mismatch(f"{where} contains a BatchNorm layer; without use_bn there is no BN anywhere")
            if not all(layers[i]["bias"] for i in convs):
                raise Mismatch(f"{where}: without BN the convolutions need their bias (bias=True)")
            continue
        for n, i in enumerate(convs, start=1):
            follow = kinds[i + 1:i + 3]
            if follow != ["bn", "relu"]:
                raise Mismatch(f"{where}: convolution {n} is followed by {follow}, expected BatchNorm then ReLU")
            if layers[i + 1]["num_features"] != layers[i]["out_channels"]:
                raise Mismatch(f"{where}: the BN after convolution {n} has {layers[i + 1]['num_features']} features, "
                               f"the convolution {layers[i]['out_channels']} output channels")
            if layers[i]["bias"]:
                raise Mismatch(f"{where}: convolution {n} is followed by BN and should have bias=False "
                               f"(BN subtracts the mean, and beta replaces the bias)")
        if kinds.count("bn") != len(convs):
            raise Mismatch(f"{where} has {kinds.count('bn')} BN layers for {len(convs)} convolutions")


@pytest.mark.exercise("make_cnn")
@pytest.mark.points(1)
def test_make_cnn_options(student, cache):
    got, _ = cnn_runs(student, cache)
    for config, item in zip(CNN_CONFIGS, got):
        where = call_text(config)
        convs = [layer for layer in item["layers"] if layer["kind"] == "conv"]
        linears = [layer for layer in item["layers"] if layer["kind"] == "linear"]
        if not convs or convs[0]["in_channels"] != config.get("in_channels", 1):
            raise Mismatch(f"{where}: the first convolution should take {config.get('in_channels', 1)} input channels")
        if convs[0]["out_channels"] != config.get("width", 32):
            raise Mismatch(f"{where}: the first convolution should have width={config.get('width', 32)} output "
                           f"channels, it has {convs[0]['out_channels']}")
        if not linears or linears[-1]["out_features"] != config.get("num_classes", 10):
            raise Mismatch(f"{where}: the last nn.Linear should have num_classes={config.get('num_classes', 10)} outputs")


@pytest.mark.exercise("make_cnn")
@pytest.mark.points(3)
def test_make_cnn_is_the_chapters_network(student, cache):
    """Same layers, same parameter shapes and, with the same weights, the same logits as the chapter's CNN."""
    got, want = cnn_runs(student, cache)
    for config, g, w in zip(CNN_CONFIGS, got, want):
        where = call_text(config)
        g_kinds = [layer["kind"] for layer in g["layers"]]
        w_kinds = [layer["kind"] for layer in w["layers"]]
        if g_kinds != w_kinds:
            raise Mismatch(f"{where} has the layers {g_kinds}; the chapter's network has {w_kinds}")
        if g["parameter_shapes"] != w["parameter_shapes"]:
            raise Mismatch(f"{where} has parameters of shapes {g['parameter_shapes']}; the chapter's network has "
                           f"{w['parameter_shapes']} ({w['n_parameters']} parameters)")
        for mode in ("train", "eval"):
            check_array(g[f"logits_{mode}"], w[f"logits_{mode}"],
                        f"the logits of {where} in {mode} mode, with the same weights as the chapter's network "
                        f"(are kernel sizes, padding and pooling as in the chapter?)", rtol=1e-6, atol=1e-8)


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
    return weights, X, y


# (id, N, batch_size (None: the default), start mode)
EVAL_CASES = [("30-examples-batch7-from-train", 30, 7, "train"),
              ("1100-examples-default-batch-from-eval", 1100, None, "eval")]


def eval_runs(student, cache, case):
    name, N, batch_size, start = case
    weights, X, y = probe_case(seeded("eval-" + name), N)
    kwargs = dict(batch_size=batch_size, start_mode=start)
    got = once(cache, ("eval", name), lambda: student.op("torch_models.evaluate_run", "evaluate", weights, X, y, **kwargs))
    want = once(cache["truth"], ("eval-ref", name), lambda: TM.evaluate_run({"evaluate": ref.evaluate}, "evaluate", weights, X, y,
                                                                   **kwargs))

    def mistakes():
        return M.evaluate_mistakes(lambda: TM.build_probe(weights), X, y, batch_size or 1000)
    return got, want, mistakes


def eval_ctx(case):
    name, N, batch_size, start = case
    return f"{N} examples, batch_size={batch_size if batch_size else 'default'}, model in {start} mode before"


@pytest.mark.exercise("evaluate")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_evaluate_accuracy(student, cache, case):
    got, want, mistakes = eval_runs(student, cache, case)
    accuracy = got["accuracy"]
    if not isinstance(accuracy, (float, int)) or isinstance(accuracy, bool):
        raise Mismatch(f"evaluate should return the accuracy as a Python float, got "
                       f"{accuracy if isinstance(accuracy, dict) else type(accuracy).__name__}")
    check(accuracy, np.asarray(want["accuracy"]), "the accuracy", mistakes=mistakes, context=eval_ctx(case),
          rtol=1e-6, atol=1e-9)


@pytest.mark.exercise("evaluate")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_evaluate_eval_mode_and_no_grad(student, cache, case):
    got, _, _ = eval_runs(student, cache, case)
    if not got["log"]:
        raise Mismatch("evaluate never called the model")
    if any(training for training, _, _ in got["log"]):
        raise Mismatch(f"the model ran in training mode ({eval_ctx(case)}): call model.eval() before predicting, "
                       f"otherwise BN uses batch statistics (and updates its running statistics)")
    if any(grad for _, grad, _ in got["log"]):
        raise Mismatch("the forward passes ran with gradient tracking: wrap them in torch.no_grad() "
                       "(it saves the memory of the graph)")
    for name, value in got["before"]["buffers"].items():
        if not np.array_equal(value, got["after"]["buffers"][name]):
            raise Mismatch(f"evaluate changed the model's buffer {name}: evaluation must not update BN statistics")
    for name, value in got["before"]["parameters"].items():
        if not np.array_equal(value, got["after"]["parameters"][name]):
            raise Mismatch(f"evaluate changed the model's parameter {name}")


@pytest.mark.exercise("evaluate")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_evaluate_restores_mode(student, cache, case):
    got, _, _ = eval_runs(student, cache, case)
    if not got["log"]:
        raise Mismatch("evaluate never called the model")
    if got["after"]["modes"] != got["before"]["modes"]:
        before = "training" if got["before"]["modes"][0] else "eval"
        after = "training" if got["after"]["modes"][0] else "eval"
        raise Mismatch(f"the model was in {before} mode before evaluate and is in {after} mode afterwards: "
                       f"remember model.training and restore it (model.train(was_training)), also on errors "
                       f"(try/finally)")


@pytest.mark.exercise("evaluate")
@pytest.mark.points(1)
@pytest.mark.parametrize("case", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_evaluate_batches(student, cache, case):
    got, _, _ = eval_runs(student, cache, case)
    name, N, batch_size, _ = case
    sizes = [n for _, _, n in got["log"]]
    limit = batch_size or 1000
    if max(sizes, default=0) > limit:
        raise Mismatch(f"a forward pass got {max(sizes)} examples with batch_size={batch_size or 'the default, 1000'}: "
                       f"predict in batches of at most batch_size examples")
    if sum(sizes) != N:
        raise Mismatch(f"the model saw {sum(sizes)} examples in total for {N} inputs: every example exactly once")
