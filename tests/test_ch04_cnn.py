"""Tests of solutions/ch04_cnn.py against independent truths (PyTorch's own BN)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from solutions.ch04_cnn import BatchNorm2d, BatchNormFunction, evaluate, make_cnn

DTYPES = [torch.float32, torch.float64]


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def make_pair(C, dtype, seed=0, **kw):
    """Our BatchNorm2d and torch's, with the same random gamma and beta."""
    torch.manual_seed(seed)
    ours = BatchNorm2d(C, **kw).to(dtype)
    ref = nn.BatchNorm2d(C, **kw).to(dtype)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(C, dtype=dtype) + 0.5)
        ref.bias.copy_(torch.randn(C, dtype=dtype))
        ours.weight.copy_(ref.weight)
        ours.bias.copy_(ref.bias)
    return ours, ref


def forward_backward(module, x, dout):
    x = x.clone().requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    out = module(x)
    out.backward(dout)
    return out.detach(), x.grad, module.weight.grad, module.bias.grad


def assert_same_step(ours, ref, x, dout, dtype):
    got = forward_backward(ours, x, dout)
    want = forward_backward(ref, x, dout)
    for name, g, w in zip(["out", "dx", "dweight", "dbias"], got, want):
        assert g.dtype == w.dtype, name
        torch.testing.assert_close(g, w, **tol(dtype), msg=name)


def assert_same_buffers(ours, ref, dtype):
    torch.testing.assert_close(ours.running_mean, ref.running_mean, **tol(dtype))
    torch.testing.assert_close(ours.running_var, ref.running_var, **tol(dtype))
    assert ours.num_batches_tracked.dtype == torch.long
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked)


# --------------------------------------------------------------------------- BatchNorm2d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [{}, {"momentum": 0.3, "eps": 1e-3}, {"momentum": None}])
def test_batchnorm2d_matches_torch_train_then_eval(dtype, kw):
    ours, ref = make_pair(5, dtype, **kw)
    g = torch.Generator().manual_seed(1)
    for step in range(4):  # several steps: running statistics accumulate
        x = 3.0 * torch.randn(6, 5, 4, 3, generator=g, dtype=dtype) + 2.0
        dout = torch.randn(6, 5, 4, 3, generator=g, dtype=dtype)
        assert_same_step(ours, ref, x, dout, dtype)
        assert_same_buffers(ours, ref, dtype)
    assert int(ours.num_batches_tracked) == 4
    ours.eval()
    ref.eval()
    for step in range(2):
        x = 3.0 * torch.randn(2, 5, 3, 3, generator=g, dtype=dtype) - 1.0
        dout = torch.randn(2, 5, 3, 3, generator=g, dtype=dtype)
        assert_same_step(ours, ref, x, dout, dtype)
        assert_same_buffers(ours, ref, dtype)  # eval mode does not update them
    assert int(ours.num_batches_tracked) == 4


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 4), C=st.integers(1, 4), H=st.integers(1, 4), W=st.integers(1, 4),
    log_scale=st.floats(-3, 3), offset=st.floats(-10, 10), seed=st.integers(0, 2**16),
    dtype=st.sampled_from(DTYPES),
)
def test_batchnorm2d_matches_torch_random_shapes(N, C, H, W, log_scale, offset, seed, dtype):
    if N * H * W < 2:
        N = 2
    ours, ref = make_pair(C, dtype, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = 10.0**log_scale * (torch.randn(N, C, H, W, generator=g, dtype=dtype) + offset)
    dout = torch.randn(N, C, H, W, generator=g, dtype=dtype)
    # relative to the output scale: float32 cancellation when |offset| >> 1
    t = tol(dtype)
    t["atol"] = t["atol"] * (1 + abs(offset)) * 10
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(ref, mode)()
        got = forward_backward(ours, x, dout)
        want = forward_backward(ref, x, dout)
        for name, a, b in zip(["out", "dx", "dweight", "dbias"], got, want):
            scale = 1.0 if name != "dx" else float(b.abs().max()) + 1.0
            torch.testing.assert_close(a, b, rtol=t["rtol"], atol=t["atol"] * scale, msg=f"{mode} {name}")
        if dtype == torch.float64:
            assert_same_buffers(ours, ref, dtype)
        else:
            for name in ("running_mean", "running_var"):
                a, b = getattr(ours, name), getattr(ref, name)
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max() + 1), msg=name)


def test_batchnorm2d_state_dict_and_structure():
    ours, ref = BatchNorm2d(7), nn.BatchNorm2d(7)
    assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in ours.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    for k, v in ref.state_dict().items():
        assert ours.state_dict()[k].dtype == v.dtype, k
        assert ours.state_dict()[k].shape == v.shape, k
        torch.testing.assert_close(ours.state_dict()[k], v)
    assert isinstance(ours.weight, nn.Parameter) and isinstance(ours.bias, nn.Parameter)
    assert ours.eps == 1e-5 and ours.momentum == 0.1 and ours.num_features == 7


def test_batchnorm2d_state_dict_loads_both_ways():
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(3)
    ref(torch.randn(8, 3, 4, 4) * 2 + 1)
    ours = BatchNorm2d(3)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 5, 5)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x))
    ours.train()
    ours(torch.randn(8, 3, 4, 4))
    back = nn.BatchNorm2d(3)
    back.load_state_dict(ours.state_dict())
    assert int(back.num_batches_tracked) == 2


def test_batchnorm2d_does_not_call_batch_norm(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("BatchNorm2d must be built from tensor operations, not batch_norm")

    monkeypatch.setattr(F, "batch_norm", forbidden)
    monkeypatch.setattr(torch, "batch_norm", forbidden)
    bn = BatchNorm2d(2)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    bn(x).sum().backward()
    bn.eval()
    bn(x)


def test_batchnorm2d_errors():
    bn = BatchNorm2d(3)
    with pytest.raises(ValueError, match="4D"):
        bn(torch.randn(4, 3, 5))
    with pytest.raises(ValueError, match="4D"):
        bn(torch.randn(2, 4, 3, 5, 5))
    with pytest.raises(ValueError, match="channels"):
        bn(torch.randn(4, 2, 5, 5))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 3, 1, 1))
    assert int(bn.num_batches_tracked) == 0
    bn.eval()
    assert bn(torch.randn(1, 3, 1, 1)).shape == (1, 3, 1, 1)  # fine in eval mode


def test_batchnorm2d_to_double_and_reset():
    bn = BatchNorm2d(2).double()
    assert bn.weight.dtype == bn.running_var.dtype == torch.float64
    assert bn.num_batches_tracked.dtype == torch.long
    bn(torch.randn(4, 2, 3, 3, dtype=torch.float64) + 5)
    bn.reset_running_stats()
    assert torch.equal(bn.running_mean, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(bn.running_var, torch.ones(2, dtype=torch.float64))
    assert int(bn.num_batches_tracked) == 0


def test_batchnorm2d_running_stats_not_in_graph():
    bn = BatchNorm2d(2)
    bn(torch.randn(4, 2, 3, 3, requires_grad=True))
    assert not bn.running_mean.requires_grad and not bn.running_var.requires_grad
    assert bn.running_mean.grad_fn is None and bn.running_var.grad_fn is None


# --------------------------------------------------------------------------- BatchNormFunction


@pytest.mark.parametrize("shape", [(3, 2, 2, 2), (2, 3, 1, 3), (5, 1, 1, 1)])
def test_batchnorm_function_gradcheck(shape):
    torch.manual_seed(0)
    C = shape[1]
    x = (torch.randn(*shape, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    gamma = (torch.rand(C, dtype=torch.float64) + 0.5).requires_grad_(True)
    beta = torch.randn(C, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: BatchNormFunction.apply(a, b, c, 1e-5), (x, gamma, beta))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [1e-5, 1e-1])
def test_batchnorm_function_matches_f_batch_norm(dtype, eps):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 5, 2, dtype=dtype) * 3 - 2
    gamma = torch.rand(3, dtype=dtype) + 0.5
    beta = torch.randn(3, dtype=dtype)
    dout = torch.randn(4, 3, 5, 2, dtype=dtype)

    def run(fn):
        leaves = [t.clone().requires_grad_(True) for t in (x, gamma, beta)]
        out = fn(*leaves)
        out.backward(dout)
        return [out.detach()] + [t.grad for t in leaves]

    got = run(lambda a, b, c: BatchNormFunction.apply(a, b, c, eps))
    want = run(lambda a, b, c: F.batch_norm(a, None, None, b, c, training=True, eps=eps))
    for name, g, w in zip(["out", "dx", "dgamma", "dbeta"], got, want):
        torch.testing.assert_close(g, w, **tol(dtype), msg=name)


def test_batchnorm_function_respects_needs_input_grad_and_eps_none():
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    gamma = torch.ones(2)
    beta = torch.zeros(2)
    out = BatchNormFunction.apply(x, gamma, beta, 1e-5)
    out.backward(torch.randn_like(out))
    assert x.grad is not None and gamma.grad is None and beta.grad is None
    # the backward itself, called directly: returns 4 values, the last None
    ctx_out = torch.randn(4, 2, 3, 3)
    y = BatchNormFunction.apply(x, gamma.clone().requires_grad_(), beta.clone().requires_grad_(), 1e-5)
    grads = torch.autograd.grad(y, [x], ctx_out)
    assert grads[0].shape == x.shape
    # dx has zero mean per channel (Santurkar et al. Thm 4.1 projection)
    torch.testing.assert_close(grads[0].mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-6, rtol=0)


def test_batchnorm_function_errors():
    with pytest.raises(ValueError):
        BatchNormFunction.apply(torch.randn(4, 3), torch.ones(3), torch.zeros(3), 1e-5)
    with pytest.raises(ValueError):
        BatchNormFunction.apply(torch.randn(4, 3, 2, 2), torch.ones(2), torch.zeros(3), 1e-5)
    with pytest.raises(ValueError):
        BatchNormFunction.apply(torch.randn(1, 3, 1, 1), torch.ones(3), torch.zeros(3), 1e-5)


def test_batchnorm_function_trains_same_network_as_torch_bn():
    """A conv net using BatchNormFunction gets the same gradients as with nn.BatchNorm2d."""

    class FnBN(nn.Module):
        def __init__(self, bn):
            super().__init__()
            self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

        def forward(self, x):
            return BatchNormFunction.apply(x, self.weight, self.bias, self.eps)

    torch.manual_seed(0)
    ref = make_cnn(True, width=4).double()
    ours = copy.deepcopy(ref)
    for i, m in enumerate(ours):
        if isinstance(m, nn.BatchNorm2d):
            ours[i] = FnBN(m)
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    F.cross_entropy(ref(x), y).backward()
    F.cross_entropy(ours(x), y).backward()
    for (n, p), q in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=n)


# --------------------------------------------------------------------------- make_cnn


@pytest.mark.parametrize("use_bn", [True, False])
def test_make_cnn_shapes_and_structure(use_bn):
    torch.manual_seed(0)
    model = make_cnn(use_bn)
    assert isinstance(model, nn.Sequential)
    model.eval()
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    model.train()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    mods = list(model)
    convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert len(convs) >= 2
    if use_bn:
        assert len(bns) == len(convs)
        for i in convs:
            assert mods[i].bias is None, "a convolution followed by BN needs no bias"
            assert isinstance(mods[i + 1], nn.BatchNorm2d)
            assert mods[i + 1].num_features == mods[i].out_channels
    else:
        assert bns == []
        for i in convs:
            assert mods[i].bias is not None
    assert isinstance(mods[-1], nn.Linear) and mods[-1].out_features == 10


def test_make_cnn_parameter_count_and_options():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    w = 32
    conv = 9 * (1 * w + w * w + w * 2 * w + 2 * w * 2 * w)
    head = 2 * w * 7 * 7 * 10 + 10
    assert count(make_cnn(False)) == conv + head + (w + w + 2 * w + 2 * w)
    assert count(make_cnn(True)) == conv + head + 2 * (w + w + 2 * w + 2 * w)
    assert 5e4 < count(make_cnn(True)) < 5e5
    m = make_cnn(True, num_classes=7, in_channels=3, width=8)
    assert m(torch.randn(2, 3, 28, 28)).shape == (2, 7)
    assert count(make_cnn(True, width=8)) < count(make_cnn(True, width=16))


@pytest.mark.parametrize("use_bn", [True, False])
def test_make_cnn_can_overfit_a_small_batch(use_bn):
    torch.manual_seed(0)
    model = make_cnn(use_bn, width=8)
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses
    assert evaluate(model, x, y) > 0.9


# --------------------------------------------------------------------------- evaluate


def identity_classifier():
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
        model.bias.zero_()
    return model


def known_data():
    X = torch.eye(3).repeat(4, 1)  # 12 examples, predicted class = position of the 1
    y = torch.arange(3).repeat(4)
    y[[0, 4, 5]] = (y[[0, 4, 5]] + 1) % 3  # 3 wrong labels
    return X, y


@pytest.mark.parametrize("batch_size", [1, 5, 12, 1000])
def test_evaluate_known_accuracy(batch_size):
    X, y = known_data()
    acc = evaluate(identity_classifier(), X, y, batch_size=batch_size)
    assert isinstance(acc, float)
    assert acc == pytest.approx(9 / 12, abs=1e-12)


def test_evaluate_accepts_numpy_and_casts_to_model_dtype():
    X, y = known_data()
    model = identity_classifier().double()
    assert evaluate(model, X.numpy().astype(np.float32), y.numpy()) == pytest.approx(0.75)


@pytest.mark.parametrize("start_training", [True, False])
def test_evaluate_uses_eval_mode_no_grad_and_restores_mode(start_training):
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return x

    model = nn.Sequential(identity_classifier(), Probe())
    model.train(start_training)
    X, y = known_data()
    evaluate(model, X, y, batch_size=4)
    assert seen == [(False, False)] * 3
    assert all(m.training == start_training for m in model.modules())


def test_evaluate_restores_mixed_modes_and_on_exception():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(identity_classifier(), nn.BatchNorm1d(3), Boom())
    model.train()
    model[1].eval()  # a frozen BN inside a training model
    with pytest.raises(RuntimeError, match="boom"):
        evaluate(model, *known_data())
    assert [m.training for m in model.modules()] == [True, True, False, True]
    model2 = nn.Sequential(identity_classifier(), nn.BatchNorm1d(3))
    model2.train()
    model2[1].eval()
    evaluate(model2, *known_data())
    assert [m.training for m in model2.modules()] == [True, True, False]


def test_evaluate_uses_running_statistics():
    """In eval mode BN subtracts running_mean = (0, 0, 5): class 2 is never predicted."""
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.0, 0.0, 5.0]))
    model = nn.Sequential(bn, identity_classifier())
    X, y = known_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # rows with a 1 in column 2 are predicted as class 0; only one of them has label 0
    assert evaluate(model, X, y) == pytest.approx(7 / 12)
    # batch statistics (the forgotten model.eval() bug) would give 9 / 12
    with torch.no_grad():
        assert (model.train()(X).argmax(1) == y).float().mean().item() == pytest.approx(9 / 12)
    model.load_state_dict(before)
    model.train()
    assert evaluate(model, X, y) == pytest.approx(7 / 12)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_evaluate_errors():
    model = identity_classifier()
    X, y = known_data()
    with pytest.raises(ValueError):
        evaluate(model, X, y[:-1])
    with pytest.raises(ValueError):
        evaluate(model, X[:0], y[:0])
    with pytest.raises(ValueError):
        evaluate(model, X, y, batch_size=0)
