"""bnlab.distributed: synchronized BN over two processes equals BN over the global batch.

Every reference is computed here, in the test process, independently of the workers: PyTorch's
BN layers (``nn.BatchNorm1d``/``2d``, ``F.batch_norm``) on the concatenated batch for outputs
and running statistics, autograd through plain BN written as a formula for the gradients. Each
``run_workers`` call costs a few seconds (two fresh interpreters import torch), so the
comparisons of one kind share one call.

Tolerances (``bnlab.numerics``): a reduction over the ``M`` values of a channel has a relative
error of at most ``e = sum_error(dtype, M)`` (``ceil(log2 M) * u``) with respect to the sum of
the absolute values of its terms. Synchronized BN takes the variance as
``sum(x**2) / M - mean**2``, whose error relative to ``var`` is about ``e * (1 + mean**2 / var)``
<= ``e * (1 + cond**2)`` with ``cond = max|x| / min std``; ``x - mean`` adds ``e * cond``.
Each quantity's bound below propagates these through its formula, times ``MARGIN`` for the
chain of a few reductions and roundings in each of two implementations.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from numpy.testing import assert_allclose
from torch import nn

from bnlab import distributed as bd
from bnlab.numerics import sum_error, unit_roundoff

MARGIN = 8  # a few chained reductions and roundings, in each of two implementations

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the course's environment
    psutil = None


# ------------------------------------------------------------------------------ workers of the tests
# Module level, so that spawn can import them in the workers (as ``test_distributed``).

def _write_pid(pid_dir, rank):
    Path(pid_dir, f"{rank}.pid").write_text(str(os.getpid()))


def _fail_on_rank(rank, world_size, failing_rank, pid_dir):
    """Rank ``failing_rank`` raises; the others wait in a collective that never completes."""
    _write_pid(pid_dir, rank)
    dist.barrier()  # every rank has written its pid
    if rank == failing_rank:
        raise ValueError("planted failure\nsecond line of the message")
    dist.barrier()
    return {"rank": rank}


def _sleep(rank, world_size, seconds, pid_dir=None):
    if pid_dir is not None:
        _write_pid(pid_dir, rank)
    time.sleep(seconds)
    return {"rank": rank}


def _children() -> set[int]:
    """Pids of this process's live descendants (psutil, else /proc)."""
    if psutil is not None:
        return {child.pid for child in psutil.Process().children(recursive=True)
                if child.status() != psutil.STATUS_ZOMBIE}
    me, found = os.getpid(), set()  # pragma: no cover - without psutil
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                found.add(int(entry))
    return found


def _assert_gone(pid_dir) -> int:
    """None of the processes whose pid a worker wrote exists any more (not even a zombie); how many."""
    pids = [int(path.read_text()) for path in Path(pid_dir).glob("*.pid")]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    return len(pids)


@pytest.fixture
def no_new_children():
    """The test leaves no process behind: none of multiprocessing's, none at all."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # spawn's helper process, one per session: not a worker
    before = _children()
    yield
    assert multiprocessing.active_children() == []
    assert _children() - before == set()


# ------------------------------------------------------------------------------ independent truths

def _reference(case) -> dict:
    """BN over the concatenated batch: outputs and running statistics from PyTorch's layer,
    gradients from autograd through the formula of plain BN."""
    x, dy = torch.from_numpy(case["x"]), torch.from_numpy(case["dy"])
    weight, bias = torch.from_numpy(case["weight"]), torch.from_numpy(case["bias"])
    layer = (nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm1d)(
        x.shape[1], eps=case["eps"], momentum=case["momentum"]).to(x.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
        out = layer.train()(x)
    dims = [0, *range(2, x.dim())]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, weight, bias))
    mean = xg.mean(dim=dims, keepdim=True)
    var = ((xg - mean) ** 2).mean(dim=dims, keepdim=True)
    formula = (xg - mean) / torch.sqrt(var + case["eps"]) * wg.view(shape) + bg.view(shape)
    formula.backward(dy)
    return {"out": out.numpy(), "dx": xg.grad.numpy(), "dgamma": wg.grad.numpy(), "dbeta": bg.grad.numpy(),
            "running_mean": layer.running_mean.numpy(), "running_var": layer.running_var.numpy(),
            "formula_out": formula.detach().numpy()}


def _tolerances(case) -> dict:
    """Absolute bounds for each compared quantity (see the module docstring)."""
    x, dy = case["x"], case["dy"]
    gamma, beta = np.abs(case["weight"]).max(), np.abs(case["bias"]).max()
    dims = tuple(i for i in range(x.ndim) if i != 1)
    count = x.size // x.shape[1]
    e = MARGIN * sum_error(x.dtype, count)
    var = x.var(axis=dims)
    std = np.sqrt(var + case["eps"])
    x_hat = np.abs((x - x.mean(axis=dims, keepdims=True)) / std.reshape((1, -1) + (1,) * (x.ndim - 2))).max()
    cond = np.abs(x).max() / std.min()
    var_rel = e * (1 + cond ** 2)                     # sum(x**2)/M - mean**2, relative to var
    err_x_hat = e * cond + x_hat * var_rel / 2        # x - mean, and 1/std of relative error var_rel/2
    sum_abs_dy = np.abs(dy).sum(axis=dims).max()
    return {
        "out": gamma * err_x_hat + e * beta,
        # dx = gamma/std (dy - mean(dy) - x_hat mean(dy x_hat)): |dx| <= gamma/std |dy| (1 + x_hat)**2;
        # the relative errors of std, x_hat and the two sums add up to at most 2 err_x_hat + e.
        "dx": gamma / std.min() * np.abs(dy).max() * (1 + x_hat) ** 2 * (2 * err_x_hat + e),
        "dgamma": sum_abs_dy * (err_x_hat + e * x_hat),
        "dbeta": e * sum_abs_dy,
        # running = 0.9 * initial + 0.1 * statistic (the unbiased variance has var's relative error).
        "running_mean": e * np.abs(x).max(),
        "running_var": var_rel * var.max() * count / (count - 1) + e,
    }


def _case(seed, counts, channels, spatial, dtype=np.float64):
    rng = np.random.default_rng(seed)
    shape = (sum(counts), channels, *spatial)
    view = (1, channels) + (1,) * len(spatial)
    x = (rng.standard_normal(shape) * np.linspace(0.5, 2, channels).reshape(view)
         + np.linspace(-1, 3, channels).reshape(view))
    return {"x": x.astype(dtype), "dy": rng.standard_normal(shape).astype(dtype),
            "weight": (1 + 0.5 * rng.standard_normal(channels)).astype(dtype),
            "bias": rng.standard_normal(channels).astype(dtype),
            "counts": list(counts), "eps": 1e-5, "momentum": 0.1}


CASES = {
    "2-D, equal shards": _case(1, (4, 4), 3, ()),
    "2-D, shards of 3 and 5": _case(2, (3, 5), 3, ()),
    "4-D, equal shards": _case(3, (4, 4), 3, (5, 5)),
    "4-D, shards of 3 and 5": _case(4, (3, 5), 2, (4, 3)),
    "3-D, an empty shard": _case(5, (0, 6), 4, (7,)),
}


@pytest.fixture(scope="module")
def synchronized():
    """One run of ``sync_bn_worker`` on two processes over every case: {case name: per-rank results}."""
    ranks = bd.run_workers(bd.sync_bn_worker, 2, args=(list(CASES.values()),), timeout=60)
    return {name: [rank["cases"][i] for rank in ranks] for i, name in enumerate(CASES)}


def _stack(results, key, case):
    return np.concatenate([np.asarray(r[key], dtype=case["x"].dtype).reshape(-1, *case["x"].shape[1:])
                           for r in results])


# ------------------------------------------------------------------------------ synchronized BN

@pytest.mark.parametrize("name", list(CASES))
def test_sync_bn_equals_bn_over_the_global_batch(synchronized, name):
    case, results = CASES[name], synchronized[name]
    truth, tol = _reference(case), _tolerances(case)
    for tolerance in tol.values():  # worst-case bounds of float64 rounding, not loose ones
        assert tolerance < 1e-8
    # The formula and PyTorch's layer agree: the formula is a fair truth for the gradients.
    assert_allclose(truth["formula_out"], truth["out"], rtol=0, atol=tol["out"])
    assert_allclose(_stack(results, "out", case), truth["out"], rtol=0, atol=tol["out"])
    assert_allclose(_stack(results, "dx", case), truth["dx"], rtol=0, atol=tol["dx"])
    # dgamma, dbeta are each rank's local sums: summed over the ranks, the global gradients ...
    assert_allclose(np.sum([r["dgamma"] for r in results], axis=0), truth["dgamma"], rtol=0, atol=tol["dgamma"])
    assert_allclose(np.sum([r["dbeta"] for r in results], axis=0), truth["dbeta"], rtol=0, atol=tol["dbeta"])
    # ... and each rank's dbeta is the sum of its own shard of dy.
    dims = tuple(i for i in range(case["x"].ndim) if i != 1)
    start = 0
    for rank, result in enumerate(results):
        shard = case["dy"][start:start + case["counts"][rank]]
        start += case["counts"][rank]
        assert_allclose(result["dbeta"], shard.sum(axis=dims), rtol=0, atol=tol["dbeta"])
    # The chapter's claim, below the worst-case bounds: every difference is under 1e-10.
    got = {"out": _stack(results, "out", case), "dx": _stack(results, "dx", case),
           "dgamma": np.sum([r["dgamma"] for r in results], axis=0),
           "dbeta": np.sum([r["dbeta"] for r in results], axis=0)}
    assert max(np.abs(got[key] - truth[key]).max() for key in got) < 1e-10


@pytest.mark.parametrize("name", list(CASES))
def test_running_statistics_are_those_of_the_global_batch(synchronized, name):
    case, results = CASES[name], synchronized[name]
    truth, tol = _reference(case), _tolerances(case)
    x = case["x"]
    dims = tuple(i for i in range(x.ndim) if i != 1)
    count = x.size // x.shape[1]
    for result in results:  # every rank holds the same running statistics, the global ones
        assert result["num_batches_tracked"] == 1
        assert_allclose(result["running_mean"], truth["running_mean"], rtol=0, atol=tol["running_mean"])
        assert_allclose(result["running_var"], truth["running_var"], rtol=0, atol=tol["running_var"])
        # The closed form: the unbiased variance with the global count M, momentum 0.1.
        assert_allclose(result["running_var"], 0.9 + 0.1 * x.var(axis=dims) * count / (count - 1),
                        rtol=0, atol=tol["running_var"])
    assert results[0]["running_mean"] == results[1]["running_mean"]
    assert results[0]["running_var"] == results[1]["running_var"]


def test_demo_sync_matches_global_reports_rounding_only():
    result = bd.demo_sync_matches_global()
    assert result["input_shape"] == [8, 3, 5, 5] and result["equal_running_stats_on_ranks"]
    assert result["world_size"] == 2 and result["per_device_batch"] == [4, 4]
    assert set(result["max_abs_diff"]) == {"out", "dx", "dgamma", "dbeta", "running_mean", "running_var"}
    # M = 200 values per channel, |x| / std <= 12 or so, sums of up to 200 terms of size <= 10:
    # float64 rounding stays below 200 * 10 * (1 + 12**2) * MARGIN * sum_error ~ 3e-9 at worst.
    bound = 200 * 10 * (1 + 12 ** 2) * MARGIN * sum_error(torch.float64, 200)
    assert max(result["max_abs_diff"].values()) < bound < 1e-8
    assert max(result["max_abs_diff"].values()) < 1e-10  # what the chapter asserts
    assert max(result["max_rel_diff"].values()) < (1 + 12 ** 2) * MARGIN * sum_error(torch.float64, 200)


# ------------------------------------------------------------------------------ a world of one

def _pair(dtype=torch.float64, channels=3):
    ours, theirs = bd.SyncBatchNorm(channels).to(dtype), nn.BatchNorm2d(channels).to(dtype)
    with torch.no_grad():
        for layer in (ours, theirs):
            layer.weight.copy_(torch.linspace(0.5, 1.5, channels))
            layer.bias.copy_(torch.linspace(-1, 1, channels))
    return ours, theirs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_without_a_process_group_sync_bn_is_nn_batchnorm2d(dtype):
    assert not dist.is_initialized()
    ours, theirs = _pair(dtype)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    generator = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = (torch.randn(4, 3, 5, 5, generator=generator, dtype=torch.float64) * 2 + 1).to(dtype)
        dy = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype)
        outs, grads = [], []
        for layer in (ours, theirs):
            xi = x.clone().requires_grad_(True)
            layer.zero_grad()
            out = layer.train()(xi)
            out.backward(dy)
            outs.append(out.detach())
            grads.append((xi.grad, layer.weight.grad, layer.bias.grad))
        # The same kernels on the same numbers: equal to the last bit, whatever the CPU.
        assert torch.equal(outs[0], outs[1])
        for a, b in zip(*grads):
            assert torch.equal(a, b)
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    x = torch.randn(3, 3, 5, 5, generator=generator, dtype=torch.float64).to(dtype)
    assert torch.equal(ours.eval()(x), theirs.eval()(x))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sync_bn_function_in_a_world_of_one_is_bn(dtype):
    generator = torch.Generator().manual_seed(2)
    x = (torch.randn(6, 4, 3, 3, generator=generator, dtype=torch.float64) * 3 + 2).to(dtype)
    gamma, beta = torch.linspace(0.5, 2, 4, dtype=dtype), torch.linspace(-1, 1, 4, dtype=dtype)
    stats = {}
    out = bd.SyncBatchNormFunction.apply(x, gamma, beta, 1e-5, None, stats)
    expected = F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    x64 = x.double()
    std = x64.var(dim=(0, 2, 3), unbiased=False).sqrt()
    cond, x_hat = float(x64.abs().max() / std.min()), 4.0  # |x_hat| <= sqrt(M - 1) ~ 7, ~3 here
    # M = 54 values per channel; both outputs err by about e * (cond + x_hat) in x's dtype
    # (our statistics are float64, so only x - mean and the rest are rounded in dtype).
    e = MARGIN * sum_error(dtype, 54)
    assert_allclose(out.numpy(), expected.numpy(), rtol=0, atol=e * (2 * (cond + x_hat) + 1))
    assert stats["count"] == 54
    # The statistics are float64 whatever dtype: var to float64 rounding times the cancellation.
    e64 = MARGIN * sum_error(torch.float64, 54)
    assert_allclose(stats["var"].numpy(), x64.var(dim=(0, 2, 3), unbiased=False).numpy(),
                    rtol=e64 * (1 + cond ** 2), atol=0)


def test_float64_statistics_survive_a_large_offset_in_float32():
    """|mean| / std = 1000: E[x**2] - mean**2 in float32 would lose all digits, in float64 none."""
    generator = torch.Generator().manual_seed(4)
    x = (torch.randn(16, 2, 4, 4, generator=generator, dtype=torch.float64) + 1000.0).to(torch.float32)
    stats = {}
    bd.SyncBatchNormFunction.apply(x, torch.ones(2), torch.zeros(2), 1e-5, None, stats)
    truth = x.double().var(dim=(0, 2, 3), unbiased=False)
    ratio = float((x.double().mean(dim=(0, 2, 3)) ** 2 / truth).max())  # about 1e6
    # The float64 cancellation costs e64 * (1 + mean**2 / var) ~ 1e-9 relative: below float32's u.
    bound = MARGIN * sum_error(torch.float64, 256) * (1 + ratio)
    assert bound < unit_roundoff(torch.float32)
    assert_allclose(stats["var"].numpy(), truth.numpy(), rtol=bound, atol=0)
    # The same formula in float32 is off by far more than the variance's own size.
    x32 = x.transpose(0, 1).reshape(2, -1)
    naive = (x32 * x32).mean(dim=1) - x32.mean(dim=1) ** 2
    assert float((naive.double() - truth).abs().max()) > 1e-2 * float(truth.min())


def test_sync_bn_function_gradients_are_those_of_autograd():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, 2, 2, generator=generator, dtype=torch.float64).requires_grad_(True)
    gamma = torch.tensor([0.7, 1.3, -0.4], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, g, b: bd.SyncBatchNormFunction.apply(a, g, b, 1e-5),
                                    (x, gamma, beta))


def test_a_global_batch_of_one_value_per_channel_is_refused():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bd.SyncBatchNormFunction.apply(torch.randn(1, 3), torch.ones(3), torch.zeros(3), 1e-5)


def test_sync_bytes_per_step():
    cost = bd.sync_bytes_per_step(64)
    assert cost == {
        "forward_elements": 129, "forward_bytes": 129 * 8, "forward_dtype": "float64",
        "backward_elements": 128, "backward_bytes": 128 * 4, "backward_dtype": "float32",
        "total_elements": 257, "total_bytes": 129 * 8 + 128 * 4, "all_reduce_calls": 2}
    assert bd.sync_bytes_per_step(3, torch.float64)["total_bytes"] == 13 * 8
    # Half-precision activations: the backward sums travel in float32, the statistics in float64.
    assert bd.sync_bytes_per_step(64, torch.bfloat16) == cost
    ring = bd.sync_bytes_per_step(64, world_size=4)
    assert ring["ring_factor"] == 1.5 and ring["ring_bytes_sent_per_process"] == 1.5 * cost["total_bytes"]
    with pytest.raises(ValueError):
        bd.sync_bytes_per_step(0)


# ------------------------------------------------------------------------------ demos

def test_local_statistics_differ_from_the_global_ones():
    result = bd.demo_local_statistics()
    means, var = np.asarray(result["rank_mean"]), np.asarray(result["rank_var"])
    assert means.shape == var.shape == (2, 4)
    # Sums of 8 * 36 float64 values of size <= 2 + 4 * 2 (offset and four scales), a margin for the chain.
    e = MARGIN * sum_error(np.float64, 8 * 36) * 10
    # Equal shards: the global mean is the average of the rank means ...
    assert_allclose(means.mean(axis=0), result["global_mean"], rtol=0, atol=e)
    # ... and the global variance adds the spread of the rank means to their variances.
    assert_allclose(var.mean(axis=0) + means.var(axis=0), result["global_var"], rtol=0, atol=10 * e)
    # Each rank normalized with its own statistics: another function (the means differ by ~0.1).
    assert result["max_abs_diff_output"] > 1e-2
    running = np.asarray(result["rank_running_mean"])
    assert_allclose(running, 0.1 * means, rtol=0, atol=e)  # one step from 0 with momentum 0.1
    assert np.abs(running[0] - running[1]).max() > 1e-3
    assert_allclose(running.mean(axis=0), result["global_running_mean"], rtol=0, atol=e)


def test_ddp_broadcasts_rank_0_buffers_before_each_forward():
    result = bd.demo_ddp_buffers(steps=3)
    checks = result["checks"]
    # Each step's BN-input mean is a float64 sum of 8 * 36 conv outputs of size <= 10 or so;
    # torch's kernel and the hook sum in other orders; three steps of the moving average.
    tol = 3 * MARGIN * sum_error(np.float64, 8 * 36) * 10
    # What the chapter asserts: with sync, the ranks hold the same running mean, bit for bit
    # (a broadcast copies); without, they differ.
    same, own = result["running_mean"]["True"], result["running_mean"]["False"]
    assert same[0] == same[1] and own[0] != own[1]
    assert len(same[0]) == 4
    # With sync: rank 0's running mean is the moving average of rank 0's batches alone ...
    assert checks["sync: rank 0 vs its local EMA"] < tol
    assert checks["sync: next forward, ranks vs rank 0's local EMA"] < tol
    # ... right after the last step the others hold rank 0's previous buffers moved by their own
    # last batch (they differ), and the next forward hands everyone rank 0's.
    assert checks["sync: after the steps, ranks vs rank 0's previous buffers + own last batch"] < tol
    assert checks["sync: after the steps, difference between ranks"] > 1e-3
    assert checks["sync: next forward, difference between ranks"] == 0.0
    # Not the statistics of the global batch (rank 1's data is shifted).
    assert checks["sync: rank 0 vs global EMA"] > 1e-3
    # Without sync each rank keeps the moving average of its own batches, also afterwards.
    assert checks["no sync: ranks vs their own local EMA"] < tol
    assert checks["no sync: next forward changes nothing"] == 0.0
    assert checks["no sync: next forward, difference between ranks"] > 1e-3


# ------------------------------------------------------------------------------ run_workers

def test_results_travel_as_plain_values():
    # (That results come back ordered by rank, the sharded comparisons above show: each rank
    # returns its own shard, and they are concatenated in the order of the list.)
    value = bd._plain({"tensor": torch.arange(3, dtype=torch.float64), "array": np.full(2, 0.25),
                       "scalar": np.float64(1.5), "nested": (torch.ones(1, 2), [np.int64(3)])})
    assert value == {"tensor": [0.0, 1.0, 2.0], "array": [0.25, 0.25], "scalar": 1.5,
                     "nested": [[[1.0, 1.0]], [3]]}
    assert type(value["scalar"]) is float and type(value["nested"][1][0]) is int


def test_a_failing_worker_is_named_and_no_process_is_left(no_new_children, tmp_path):
    started = time.monotonic()
    with pytest.raises(RuntimeError) as caught:
        bd.run_workers(_fail_on_rank, 2, args=(1, str(tmp_path)), timeout=30)
    message = str(caught.value)
    assert "\n" not in message
    assert "rank 1" in message and "ValueError: planted failure" in message and "_fail_on_rank" in message
    assert caught.value.rank == 1
    assert "raise ValueError" in caught.value.worker_traceback
    assert any("Traceback of rank 1" in note for note in getattr(caught.value, "__notes__", []))
    # Rank 0 waits in a barrier that will never complete: it is stopped, not waited for.
    assert time.monotonic() - started < 20
    assert _assert_gone(tmp_path) == 2


def test_a_hanging_worker_times_out_and_no_process_is_left(no_new_children, tmp_path):
    timeout = 6.0  # time for two interpreters to import torch on a busy machine, then sleep
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not return within 6 s"):
        bd.run_workers(_sleep, 2, args=(120, str(tmp_path)), timeout=timeout)
    # The timeout, then at most the grace period of SIGTERM (2 s) and the joins.
    assert timeout <= time.monotonic() - started < timeout + 4
    _assert_gone(tmp_path)  # those that got as far as writing their pid


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_an_interrupt_stops_the_workers(no_new_children):
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        with pytest.raises(KeyboardInterrupt):
            bd.run_workers(_sleep, 2, args=(120,), timeout=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_fn_must_be_importable_by_name():
    with pytest.raises(ValueError, match="module-level"):
        bd.run_workers(lambda rank, world_size: rank, 2)
