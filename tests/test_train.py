"""Tests of bnlab.device, bnlab.models and bnlab.train on small synthetic data (no download)."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnlab import device as bdevice
from bnlab import train as btrain
from bnlab.models import (Float32BatchNorm, FunctionBatchNorm2d, count_modules, keep_batchnorm_float32,
                          replace_batchnorm, scale_init)
from bnlab.train import TrainConfig, augment_batch, build_model, lr_at, make_data, train
from solutions.ch04_cnn import BatchNorm2d, BatchNormFunction, make_cnn

torch.set_num_threads(1)


def synthetic_arrays(n_train=240, n_test=120, seed=0, classes=10):
    """uint8 28x28 images whose class is a bright 6x6 square at a class-specific place."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.int64)
        for i, c in enumerate(y):
            r, k = divmod(int(c), 4)
            x[i, 2 + 8 * r:8 + 8 * r, 2 + 6 * k:8 + 6 * k] += 180
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="module")
def data():
    return make_data(*synthetic_arrays(), device="cpu", info={"dataset": "synthetic"})


def small(**kw):
    values = dict(width=4, batch_size=16, epochs=1, lr=0.05, train_eval_size=100, eval_batch_size=64)
    values.update(kw)
    return TrainConfig(**values)


# ------------------------------------------------------------------ device selection


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (True, False, "cuda"),
                                               (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(bdevice, "cuda_available", lambda: cuda)
    monkeypatch.setattr(bdevice, "mps_available", lambda: mps)
    assert bdevice.select_device("auto").type == expected
    assert bdevice.select_device("cpu").type == "cpu"


def test_explicit_unavailable_device_is_an_error(monkeypatch):
    monkeypatch.setattr(bdevice, "cuda_available", lambda: False)
    monkeypatch.setattr(bdevice, "mps_available", lambda: False)
    with pytest.raises(ValueError, match="cuda"):
        bdevice.select_device("cuda")
    with pytest.raises(ValueError, match="mps"):
        bdevice.select_device("mps")
    with pytest.raises(ValueError, match="unknown device"):
        bdevice.select_device("tpu")


def test_device_info_on_cpu_claims_no_gpu():
    info = bdevice.device_info("cpu")
    assert info["device"] == "cpu" and info["cuda"] is None and info["cudnn"] is None
    assert info["torch"] == torch.__version__ and info["device_name"]
    prov = bdevice.provenance("cpu", wall_time_s=1.234)
    assert prov["wall_time_s"] == 1.23
    assert "hostname" not in prov and "host" not in prov
    assert prov["date"].endswith("+00:00")


# ------------------------------------------------------------------ schedules and data


def test_lr_schedules():
    assert lr_at(5, 10, 0.1, "constant") == 0.1
    assert lr_at(0, 10, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_at(5, 10, 0.1, "cosine") == pytest.approx(0.05)
    assert lr_at(10, 10, 0.1, "cosine") == pytest.approx(0.0, abs=1e-12)
    lrs = [lr_at(s, 100, 1.0, "onecycle", warmup_frac=0.2) for s in range(100)]
    assert lrs[19] == pytest.approx(1.0) and lrs[0] == pytest.approx(0.05)
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:20]))          # warm-up increases
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))            # then decays
    assert lrs[-1] < 0.02
    with pytest.raises(ValueError):
        lr_at(0, 10, 0.1, "step")


def test_make_data_uses_training_statistics():
    x_train, y_train, x_test, y_test = synthetic_arrays()
    d = make_data(x_train, y_train, x_test, y_test, train_size=100, test_size=50, seed=3)
    assert d.x_train.shape == (100, 1, 28, 28) and d.x_test.shape == (50, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.long
    assert abs(float(d.x_train.mean())) < 1e-5 and float(d.x_train.std()) == pytest.approx(1.0, rel=1e-4)
    assert abs(float(d.x_test.mean())) > 1e-4            # test set normalized with *training* statistics
    assert d.info["train_size"] == 100 and d.info["normalization"]["std"] == pytest.approx(d.std, rel=1e-5)


def test_augment_batch_flips_and_shifts():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    flipped = augment_batch(x, g, max_shift=0, flip=True)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    shifted = augment_batch(x, g, max_shift=1, pad_value=-1.0, flip=False)
    assert shifted.shape == x.shape
    for i in range(2):
        # every kept pixel comes from the image, the rest is the pad value
        vals = shifted[i][shifted[i] != -1.0]
        assert set(vals.tolist()) <= set(x[i].flatten().tolist()) and len(vals) >= 16


# ------------------------------------------------------------------ models


def test_replace_batchnorm_keeps_the_function():
    torch.manual_seed(0)
    model = make_cnn(True, width=4)
    x = torch.randn(8, 1, 28, 28)
    model.train()
    model(x)                                  # non-trivial running statistics
    model.eval()
    ref = model(x)
    swapped = replace_batchnorm(copy.deepcopy(model), lambda bn: BatchNorm2d(bn.num_features, bn.eps, bn.momentum))
    assert count_modules(swapped, nn.BatchNorm2d) == 0 and count_modules(swapped, BatchNorm2d) == 4
    assert not swapped[1].training            # the mode is kept
    torch.testing.assert_close(swapped(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        replace_batchnorm(nn.BatchNorm2d(3), lambda bn: bn)
    with pytest.raises(ValueError, match="keys"):
        replace_batchnorm(copy.deepcopy(model), lambda bn: nn.Identity())


def test_function_batchnorm_matches_torch_in_train_and_eval():
    torch.manual_seed(1)
    ref = nn.BatchNorm2d(3)
    mine = FunctionBatchNorm2d(3, BatchNormFunction)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.normal_()
    mine.load_state_dict(ref.state_dict())
    x1 = (torch.randn(4, 3, 5, 5) * 3 + 1).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    dout = torch.randn(4, 3, 5, 5)
    for _ in range(2):
        (ref(x1) * dout).sum().backward()
        (mine(x2) * dout).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(mine, name), getattr(ref, name))
    ref.eval(), mine.eval()
    torch.testing.assert_close(mine(x1), ref(x1), rtol=1e-5, atol=1e-5)
    assert list(mine.state_dict()) == list(ref.state_dict())


def test_float32_batchnorm_under_autocast():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    keep_batchnorm_float32(model)
    assert isinstance(model[1], Float32BatchNorm)
    seen = {}
    model[1].bn.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0].dtype, out=out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 1, 8, 8))
    assert seen == {"inp": torch.float32, "out": torch.float32}
    assert out.dtype == torch.float32


def test_scale_init_scales_logits_as_s_to_the_fourth_without_bn():
    x = torch.randn(4, 1, 28, 28)
    logits = {}
    for s in (1.0, 2.0):
        torch.manual_seed(0)                      # the same final Linear layer for both
        model = make_cnn(False, width=4)
        scale_init(model, s, torch.Generator().manual_seed(0))
        assert float(model[0].bias.detach().abs().max()) == 0.0
        logits[s] = (model(x) - model[-1].bias).detach()
    torch.testing.assert_close(logits[2.0], 16 * logits[1.0], rtol=1e-4, atol=1e-5)
    model = make_cnn(False, width=32)
    scale_init(model, 0.5, torch.Generator().manual_seed(0))
    w = model[2].weight.detach()                           # conv 32 -> 32, fan_in 288
    assert float(w.std()) == pytest.approx(0.5 * math.sqrt(2 / 288), rel=0.05)
    with pytest.raises(ValueError):
        scale_init(model, 0.0)


@pytest.mark.parametrize("bn", ["module", "function"])
def test_build_model_with_other_bn_computes_the_same_at_init(bn):
    cfg = small(bn=bn)
    ref = build_model(small(), "cpu")
    other = build_model(cfg, "cpu")
    kind = BatchNorm2d if bn == "module" else FunctionBatchNorm2d
    assert count_modules(other, kind) == 4 and count_modules(other, nn.BatchNorm2d) == 0
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(other(x), ref(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ training


def test_train_returns_a_complete_history(data):
    h = train(small(epochs=2), data)
    per_epoch = math.ceil(240 / 16)
    assert h["steps"] == 2 * per_epoch == len(h["step_loss"])
    assert h["epoch_end_step"] == [per_epoch, 2 * per_epoch]
    assert len(h["epoch_test_acc"]) == len(h["epoch_train_acc"]) == len(h["epoch_time_s"]) == 2
    assert all(0.0 <= a <= 1.0 for a in h["epoch_test_acc"] + h["epoch_train_acc"])
    assert h["final_test_acc"] == h["epoch_test_acc"][-1]
    assert h["diverged"] is False and h["diverged_at_step"] is None
    assert h["images"] == 2 * 240 and h["images_per_s"] > 0
    assert h["channels_last"] is False and h["amp"] is None and h["compiled"] is False
    assert h["config"]["use_bn"] is True


def test_training_learns_the_synthetic_task(data):
    h = train(small(epochs=3, lr=0.05), data)
    assert h["final_test_acc"] > 0.5, h["epoch_test_acc"]
    assert np.mean(h["step_loss"][-5:]) < np.mean(h["step_loss"][:5])


def test_training_is_seeded(data):
    a = train(small(seed=7, max_steps=5), data)
    b = train(small(seed=7, max_steps=5), data)
    c = train(small(seed=8, max_steps=5), data)
    assert a["step_loss"] == b["step_loss"] and a["step_loss"] != c["step_loss"]
    assert a["steps"] == 5


@pytest.mark.parametrize("sync_every", [1, 4])
def test_divergence_stops_the_run(data, sync_every):
    h = train(small(use_bn=False, lr=1e6, epochs=3, sync_every=sync_every), data)
    assert h["diverged"] is True
    assert isinstance(h["diverged_at_step"], int) and h["steps"] < 3 * 15
    assert h["step_loss"][h["diverged_at_step"]] is None             # non-finite -> None (valid JSON)
    assert all(v is None or math.isfinite(v) for v in h["step_loss"])
    assert h["final_test_acc"] is None and h["epoch_test_acc"][-1] is None
    assert h["steps"] - h["diverged_at_step"] <= sync_every


def test_train_with_custom_bn_hooks(data):
    calls = []

    def my_evaluate(model, X, y, batch_size=1000):
        calls.append(len(X))
        from solutions.ch04_cnn import evaluate
        return evaluate(model, X, y, batch_size)

    h, model = train(small(bn="module", max_steps=3), data, evaluate=my_evaluate, bn_module=BatchNorm2d,
                     return_model=True)
    assert calls == [120, 100] and count_modules(model, BatchNorm2d) == 4
    assert h["steps"] == 3


def test_evaluate_in_train_mode_is_the_bug(data):
    model = build_model(small(), "cpu")
    model.eval()
    before = model[1].running_mean.clone()
    acc = btrain.evaluate_in_train_mode(model, data.x_test, data.y_test, 32)
    assert 0.0 <= acc <= 1.0
    assert not model.training and not model[1].training           # mode restored
    assert not torch.equal(model[1].running_mean, before)          # running statistics overwritten


def test_time_training_steps_interleaves(data):
    models = {"a": build_model(small(), "cpu"), "b": build_model(small(use_bn=False), "cpu")}
    out = btrain.time_training_steps(models, data.x_train[:8], data.y_train[:8], steps=1, repeats=2, warmup=1)
    assert set(out) == {"a", "b"}
    for v in out.values():
        assert len(v["all_s"]) == 2 and v["median_s"] > 0 and v["images_per_s"] > 0


def test_config_validation():
    with pytest.raises(ValueError):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError):
        TrainConfig(bn="cudnn")
    with pytest.raises(ValueError):
        TrainConfig(batch_size=0)
    cfg = TrainConfig.from_dict({"lr": 0.3, "lrs": [1, 2], "use_bn": False})
    assert cfg.lr == 0.3 and cfg.use_bn is False


def test_gpu_fast_paths_run_on_cpu(data):
    """channels_last and bfloat16 autocast (the CUDA path) also run on the CPU when forced."""
    h, model = train(small(channels_last=True, amp=True, max_steps=4), data, return_model=True)
    assert h["channels_last"] is True and h["amp"] == "bfloat16"
    assert count_modules(model, Float32BatchNorm) == 4                # BN kept in float32
    assert all(v is not None for v in h["step_loss"]) and 0 <= h["final_test_acc"] <= 1
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_auto_fast_paths_are_off_on_cpu(data):
    h = train(small(max_steps=2), data)
    assert h["channels_last"] is False and h["amp"] is None and h["compiled"] is False


def test_a_failing_compile_falls_back_to_eager(data, monkeypatch):
    def broken_compile(model, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("no compiler here")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        h = train(small(compile=True, max_steps=3), data)
    assert h["compiled"] is False and h["steps"] == 3


def _sgd_on_quadratic(lam: float, lr: float, momentum: float, nesterov: bool, steps: int = 3000) -> float:
    """|w| after ``steps`` steps of torch.optim.SGD on lam / 2 * w**2 from w = 1 (float64)."""
    w = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum, nesterov=nesterov)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * lam * w ** 2).sum().backward()
        opt.step()
        if not abs(w.item()) < 1e12:
            break
    return abs(w.item())


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.5, True), (0.99, True)])
def test_stable_lr_bound_is_where_torch_sgd_starts_to_diverge(momentum, nesterov):
    lam = 37.0
    bound = btrain.stable_lr_bound(lam, momentum, nesterov)
    assert _sgd_on_quadratic(lam, 0.97 * bound, momentum, nesterov) < 1e-3
    assert _sgd_on_quadratic(lam, 1.03 * bound, momentum, nesterov) > 1e3
    if momentum == 0.9:
        expected = 3.8 / lam if not nesterov else 3.8 / (2.8 * lam)
        assert bound == pytest.approx(expected, rel=1e-12)


def test_stable_lr_bound_rejects_bad_input():
    with pytest.raises(ValueError, match="lambda_max"):
        btrain.stable_lr_bound(0.0)
    with pytest.raises(ValueError, match="momentum"):
        btrain.stable_lr_bound(1.0, momentum=1.0)


def test_layer_statistics_measure_what_they_say():
    """Shapes and names; the update ratio of plain SGD is lr * std(grad) / std(w), with the
    gradient computed independently on the same batch; dead fractions are shares."""
    from bnlab.train import layer_statistics
    from solutions.ch04_cnn import make_cnn

    data = make_data(*synthetic_arrays(n_train=64, n_test=8), device="cpu")
    x, y = data.x_train, data.y_train
    torch.manual_seed(0)
    model = make_cnn(True, width=4)
    twin = copy.deepcopy(model)
    stats = layer_statistics(model, x, y, steps=3, lr=0.1, batch_size=16, momentum=0.0, seed=3)
    assert stats["layers"] == ["2", "5", "9", "12"] and len(stats["weights"]) == 5
    for key, width in (("activation_std", 4), ("dead_fraction", 4), ("activation_grad_std", 4),
                       ("update_ratio", 5)):
        assert np.asarray(stats[key]).shape == (3, width), key
    assert all(0 <= f <= 1 for row in stats["dead_fraction"] for f in row)
    idx = torch.randint(0, x.shape[0], (16,), generator=torch.Generator().manual_seed(3))
    twin.train()
    torch.nn.functional.cross_entropy(twin(x[idx]), y[idx]).backward()
    weights = [m.weight for m in twin.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    expected = [float(0.1 * w.grad.std() / w.detach().std()) for w in weights]
    np.testing.assert_allclose(stats["update_ratio"][0], expected, rtol=1e-4)
    with pytest.raises(ValueError, match="nn.ReLU"):
        layer_statistics(torch.nn.Linear(3, 2), x.flatten(1)[:, :3], y)
