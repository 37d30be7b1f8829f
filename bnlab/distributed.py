"""Batch Normalization when training is distributed (chapter 6), on the CPU of one machine.

Data-parallel training gives each of ``P`` processes a shard of the global batch. A plain BN
layer normalizes each shard with its own statistics, so the network computes another function
than on the whole batch; *synchronized* BN all-reduces per-channel sums so that every process
normalizes with the statistics of the global batch. This module runs both side by side with
``torch.distributed`` over the ``gloo`` backend on the loopback interface (127.0.0.1): no GPU,
no network.

- :func:`run_workers` starts ``world_size`` processes ("spawn"), each in one process group,
  runs a module-level function in each and returns their results by rank; it works from a
  Jupyter kernel, and leaves no process behind on an error, a timeout or an interrupt;
- :class:`SyncBatchNormFunction` is training-mode BN over the global batch, with its backward
  written by hand: one all-reduce of ``2C + 1`` values forward, one of ``2C`` backward;
  :class:`SyncBatchNorm` is the layer around it, with ``nn.BatchNorm2d``'s parameters, buffers
  and ``state_dict`` keys, and running statistics of the global batch;
- :func:`sync_bytes_per_step` counts what one such layer all-reduces per training step;
- the demos run two processes and compare, in the calling process, with single-process BN
  over the concatenated global batch: :func:`demo_local_statistics` (per-process statistics
  differ from the global ones), :func:`demo_sync_matches_global` (synchronized BN equals
  global BN to rounding: outputs, gradients and running statistics), :func:`demo_ddp_buffers`
  (what ``DistributedDataParallel`` does with BN's running statistics). Their workers
  (:func:`local_bn_worker`, :func:`sync_bn_worker`, :func:`ddp_buffers_worker`) compute on
  the shards only; every reference number is computed by the caller.

Shapes: ``x`` is ``(N, C)`` or ``(N, C, *spatial)`` (``(N, C, H, W)`` for images); per-channel
statistics have shape ``(C,)``; ``M`` is the global number of values per channel, the sum over
the processes of ``N * H * W``.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import multiprocessing.connection as _mpc
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "run_workers", "SyncBatchNormFunction", "SyncBatchNorm", "sync_bytes_per_step",
    "demo_local_statistics", "demo_sync_matches_global", "demo_ddp_buffers",
    "local_bn_worker", "sync_bn_worker", "ddp_buffers_worker",
]


# ------------------------------------------------------------------------------ processes

def _loopback_interface() -> str | None:
    """The name of the loopback network interface ("lo" on Linux, "lo0" on macOS), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):  # pragma: no cover - no if_nameindex (some Windows builds)
        return None
    for name in names:
        if name.startswith("lo"):
            return name
    return None  # pragma: no cover


def _plain(value):
    """``value`` with tensors and NumPy arrays turned into (nested) lists, NumPy scalars into numbers.

    Results travel back by pickle; plain lists keep them small, JSON-friendly and free of
    PyTorch's shared-memory tensor transport (which needs the sending process alive).
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()                      # a NumPy scalar's tolist() is its number
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _worker_entry(rank, world_size, fn, args, init_method, timeout, interface, conn):
    """Body of one worker process: join the process group, run ``fn``, send back the outcome.

    Sends ``("ok", value)`` or ``("error", time, exception_line, traceback_text)`` on ``conn``.
    An error is sent *before* the process group is torn down: tearing it down makes the other
    ranks fail in their next collective, and their (secondary) errors must arrive later.
    """
    try:
        if interface is not None:
            os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                                timeout=_dt.timedelta(seconds=max(1.0, float(timeout))))
        value = _plain(fn(rank, world_size, *args))
        dist.destroy_process_group()
        conn.send(("ok", value))
    except BaseException as error:  # noqa: BLE001 - every failure is reported to the parent
        message = str(error).strip().splitlines()
        line = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
        try:
            conn.send(("error", time.time(), line, traceback.format_exc()))
        except Exception:  # pragma: no cover - the parent is gone
            pass
    finally:
        conn.close()


def _stop(processes, grace: float = 2.0) -> None:
    """Terminate (SIGTERM), then kill (SIGKILL) what is left, and join every process."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join()


def run_workers(fn, world_size: int = 2, args: tuple = (), timeout: float = 60.0) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes of one gloo process group.

    Each worker is a fresh Python process (start method "spawn": safe from a Jupyter kernel,
    whose ``__main__`` is no file, and from a process with threads). It joins a
    ``torch.distributed`` process group with the ``gloo`` backend (rendezvous through a
    ``FileStore`` in a fresh temporary directory, so no port to find; connections over the
    loopback interface only), sets one torch thread, calls ``fn`` and destroys the process
    group. Each worker sends its outcome through its own one-way pipe (a ``Pipe`` of the spawn
    context rather than one shared ``Queue``: a worker that dies without a word is then an end
    of file on its pipe, seen at once). Whatever happens (a result from every rank, an error,
    the timeout, ``KeyboardInterrupt`` in the caller), every worker has been terminated or
    killed, and joined, when this function returns or raises.

    Parameters
    ----------
    fn : callable
        A module-level function ``fn(rank, world_size, *args)`` (spawn imports it by its module
        in each worker, so it cannot be defined in a notebook's ``__main__``). Its return value
        must be picklable; tensors and NumPy arrays in it come back as nested lists.
    world_size : int
        Number of processes, ``>= 1``.
    args : tuple
        Further picklable arguments of ``fn``, the same for every rank.
    timeout : float
        Seconds, from the call, for all the workers to start and return (also the process
        group's timeout for one collective).

    Returns
    -------
    list
        The workers' return values, ``world_size`` of them, ordered by rank.

    Raises
    ------
    RuntimeError
        If a worker raises or dies before returning. The message is one line naming the rank
        and the exception; the worker's traceback is attached as a note (printed after that
        line) and as the attribute ``worker_traceback``; ``rank`` holds the rank. Of several
        failures, the one that happened first is reported (a failure on one rank makes the
        others fail in their next collective).
    TimeoutError
        If the workers have not all returned within ``timeout`` seconds.
    """
    world_size = int(world_size)
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not callable(fn):
        raise TypeError(f"fn must be a module-level function, got {fn!r}")
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    notebook = name.startswith("__main__.") and not hasattr(sys.modules["__main__"], "__file__")
    if "<locals>" in name or "<lambda>" in name or notebook:
        raise ValueError(f"fn must be a module-level function of an importable module, not of a "
                         f"notebook (spawn imports it by name in each worker), got {name}")
    deadline = time.monotonic() + float(timeout)
    context = torch.multiprocessing.get_context("spawn")
    store_dir = tempfile.mkdtemp(prefix="bnlab-dist-")
    init_method = (Path(store_dir) / "store").as_uri()
    interface = _loopback_interface()
    processes, readers = [], []

    def failure(rank, line, tb):
        error = RuntimeError(f"rank {rank} of {world_size} failed in {name}: {line}")
        error.rank, error.worker_traceback = rank, tb
        error.add_note(f"Traceback of rank {rank}:\n{tb.rstrip()}")
        return error

    def died(rank):
        processes[rank].join(1.0)
        return (time.time(), f"the process exited with code {processes[rank].exitcode} "
                             "before returning a result", "(no traceback: the process died)")

    try:
        for rank in range(world_size):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker_entry, name=f"bnlab-worker-{rank}", daemon=True,
                args=(rank, world_size, fn, tuple(args), init_method, timeout, interface, writer))
            process.start()
            writer.close()  # the worker holds the only sending end: its death reads as end of file
            processes.append(process)
            readers.append(reader)

        results, pending = {}, set(range(world_size))
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{name} did not return within {timeout:g} s on rank(s) "
                                   f"{sorted(pending)} of {world_size}; all workers were stopped")
            waitables = [readers[r] for r in pending] + [processes[r].sentinel for r in pending]
            _mpc.wait(waitables, timeout=min(left, 1.0))
            errors = {}  # rank -> (time, line, traceback), of every outcome that has arrived
            for rank in sorted(pending):
                if readers[rank].poll():
                    try:
                        outcome = readers[rank].recv()
                    except (EOFError, OSError):
                        errors[rank] = died(rank)
                        continue
                    if outcome[0] == "ok":
                        results[rank] = outcome[1]
                    else:
                        errors[rank] = outcome[1:]
                elif not processes[rank].is_alive():
                    processes[rank].join()
                    if readers[rank].poll():  # a result sent just before exiting: read it next round
                        continue
                    errors[rank] = died(rank)
            pending -= set(results)
            if errors:
                first = min(errors, key=lambda r: errors[r][0])
                raise failure(first, errors[first][1], errors[first][2])
        return [results[rank] for rank in range(world_size)]
    finally:
        _stop(processes)
        for reader in readers:
            reader.close()
        shutil.rmtree(store_dir, ignore_errors=True)


# ------------------------------------------------------------------------------ synchronized BN

def _distributed(group=None) -> bool:
    """Whether a process group is initialized (then BN statistics are all-reduced over ``group``)."""
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """Sum ``tensor`` (any shape, in place) over the processes of ``group``; a no-op in a world of one."""
    if _distributed(group):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (as PyTorch's BN kernels compute), else ``dtype``."""
    return torch.promote_types(dtype, torch.float32)


# The forward statistics are accumulated and all-reduced in float64, whatever the input's dtype.
STATISTICS_DTYPE = torch.float64


def _layout(x: torch.Tensor):
    """Reduction dimensions of BN over ``x`` (N, C, *spatial) and the broadcast shape of a (C,) tensor."""
    if x.dim() < 2:
        raise ValueError(f"BN needs an input of shape (N, C) or (N, C, *spatial), got shape {tuple(x.shape)}")
    dims = [0, *range(2, x.dim())]
    return dims, (1, x.shape[1]) + (1,) * (x.dim() - 2)


class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BN over the global batch of all processes, backward by hand.

    ``SyncBatchNormFunction.apply(x, gamma, beta, eps, group=None, stats=None)``: ``x`` of
    shape (N, C) or (N, C, *spatial) on each process (``N`` may differ between processes, even
    be 0), ``gamma`` and ``beta`` of shape (C,); returns the output, of the shape of ``x``.
    Without an initialized process group it is plain training-mode BN (a world of one).

    **Forward: one all-reduce of 2C + 1 values.** Each process sums its shard per channel,
    ``cat([sum(x), sum(x**2), count])``; the all-reduced sums give the global mean
    ``sum / M`` and the biased global variance ``sum(x**2) / M - mean**2``. That difference
    cancels: its relative error is about ``log2(M) * u * (1 + mean**2 / var)`` in a format of
    unit roundoff ``u``. So the sums are accumulated (and sent) in float64 for every input
    dtype: for float32 activations the statistics stay accurate to float32's precision while
    ``|mean| / std < 2**14`` or so (``u64 * mean**2 / var < u32``); beyond, the variance
    loses digits (it is clamped at 0, never negative). The exact alternatives cost
    communication: two rounds (the sums and count, then the sums of squared deviations from
    the global mean: the same 2C + 1 values, one more latency per layer), or an all-gather of
    every process's mean, variance and count combined by Chan's formula (what
    ``nn.SyncBatchNorm`` does).

    **Backward: one all-reduce of 2C values.** With ``x_hat = (x - mean) / std``,
    ``std = sqrt(var + eps)`` and ``M`` the global count, chapter 3's compact formula needs two
    sums over the *global* batch, ``sum(dy)`` and ``sum(dy * x_hat)``; then on each process

        dx = gamma / (M * std) * (M * dy - sum(dy) - x_hat * sum(dy * x_hat)).

    ``dx`` is the gradient of the *sum* of all processes' losses with respect to this
    process's ``x`` (its output depends on every process's input). ``dgamma = sum(dy * x_hat)``
    and ``dbeta = sum(dy)`` are returned as the *local* sums over this process's shard: summed
    over the processes they are the gradient over the global batch. ``DistributedDataParallel``
    *averages* parameter gradients over the processes (the gradient of the mean of the
    processes' losses), for ``gamma`` and ``beta`` as for the layers before BN, so the
    combination is consistent.

    ``stats``, a dict if given, receives the global ``"mean"`` and ``"var"`` (biased), (C,)
    float64 without gradient, and ``"count"`` (the float ``M``): :class:`SyncBatchNorm` updates
    its running statistics from them. The output and the gradients are computed in ``x``'s
    dtype (float32 for half-precision inputs) and returned in ``x``'s and ``gamma``'s dtypes.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps, group=None, stats=None):
        """x: (N, C, *spatial); gamma, beta: (C,); returns the output, shape of x."""
        dims, shape = _layout(x)
        channels = x.shape[1]
        x64 = x.detach().to(STATISTICS_DTYPE)
        local_count = float(x.numel() // channels) if channels else 0.0
        sums = torch.cat([x64.sum(dim=dims), (x64 * x64).sum(dim=dims), x64.new_full((1,), local_count)])
        _all_reduce_sum(sums, group)                                    # the one all-reduce: 2C + 1 values
        count = float(sums[2 * channels].item())
        if count <= 1:
            raise ValueError(f"BN in training mode needs more than 1 value per channel over the global "
                             f"batch, got {count:g} (input shape {tuple(x.shape)} on this process)")
        mean = sums[:channels] / count
        var = (sums[channels:2 * channels] / count - mean * mean).clamp_(min=0.0)
        compute = _compute_dtype(x.dtype)
        invstd = torch.rsqrt(var + float(eps)).to(compute)
        x_hat = (x.to(compute) - mean.to(compute).view(shape)) * invstd.view(shape)
        out = x_hat * gamma.to(compute).view(shape) + beta.to(compute).view(shape)
        ctx.save_for_backward(x_hat, invstd, gamma)
        ctx.count, ctx.group, ctx.x_dtype = count, group, x.dtype
        if stats is not None:
            stats.update(mean=mean, var=var, count=count)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, dout):
        """dout: shape of x; returns (dx, dgamma, dbeta, None, None, None), dgamma and dbeta local."""
        x_hat, invstd, gamma = ctx.saved_tensors
        dims, shape = _layout(x_hat)
        channels, count = x_hat.shape[1], ctx.count
        dy = dout.to(x_hat.dtype)
        local = torch.cat([dy.sum(dim=dims), (dy * x_hat).sum(dim=dims)])
        dbeta, dgamma = local[:channels].clone(), local[channels:].clone()
        _all_reduce_sum(local, ctx.group)                               # the one all-reduce: 2C values
        sum_dy, sum_dy_xhat = local[:channels].view(shape), local[channels:].view(shape)
        scale = (gamma.to(x_hat.dtype) * invstd / count).view(shape)
        dx = scale * (count * dy - sum_dy - x_hat * sum_dy_xhat)
        return dx.to(ctx.x_dtype), dgamma.to(gamma.dtype), dbeta.to(gamma.dtype), None, None, None


class SyncBatchNorm(nn.Module):
    """A BN layer whose training-mode statistics are those of the global batch of all processes.

    Input (N, C) or (N, C, *spatial), output of the same shape. Parameters, buffers and
    ``state_dict`` keys are those of ``nn.BatchNorm2d`` (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``), so a BN layer's state loads
    into it and back.

    - Training mode, process group initialized (more than one process in ``process_group``):
      :class:`SyncBatchNormFunction`, then the running statistics move towards the *global*
      mean and the *unbiased* global variance ``var * M / (M - 1)`` (``M`` the global count),
      with ``momentum`` (``None``: cumulative average), as ``nn.SyncBatchNorm`` does; every
      process then holds the same running statistics.
    - Training mode without a process group (or a group of one): exactly ``nn.BatchNorm2d``
      (PyTorch's kernels), as ``nn.SyncBatchNorm`` falls back to them.
    - Eval mode: ``F.batch_norm`` with the running statistics, as ``nn.BatchNorm2d``.

    Every process must call the layer the same number of times in training mode (each call
    is a collective).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 process_group=None):
        super().__init__()
        # The settings, parameters and buffers of nn.BatchNorm2d, in its order (its state_dict keys).
        layer = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.num_features, self.eps, self.momentum = layer.num_features, layer.eps, layer.momentum
        self.process_group = process_group
        for name, parameter in layer.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in layer.named_buffers(recurse=False):
            self.register_buffer(name, buffer)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, synchronized"

    def _synchronized(self) -> bool:
        return _distributed(self.process_group) and dist.get_world_size(self.process_group) > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C) or (N, C, *spatial) with C = num_features; returns the shape of x."""
        _layout(x)
        channels = x.shape[1]
        if channels != self.num_features:
            raise ValueError(f"expected {self.num_features} channels (dimension 1), got shape {tuple(x.shape)}")
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, eps=self.eps)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
        # PyTorch's momentum convention; momentum None is a cumulative average over the batches.
        batches = int(self.num_batches_tracked)
        factor = 1.0 / batches if self.momentum is None else self.momentum
        if not self._synchronized():
            # nn.BatchNorm2d's own computation: batch statistics, running statistics updated inside.
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=True, momentum=factor, eps=self.eps)
        stats = {}
        out = SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps, self.process_group, stats)
        with torch.no_grad():
            count = stats["count"]
            unbiased = stats["var"] * (count / (count - 1.0))
            self.running_mean.lerp_(stats["mean"].to(self.running_mean.dtype), factor)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out


def sync_bytes_per_step(num_channels: int, dtype: torch.dtype = torch.float32,
                        world_size: int | None = None) -> dict:
    """What one :class:`SyncBatchNorm` layer all-reduces per training step.

    Forward: one all-reduce of ``2C + 1`` values (per-channel sums and sums of squares, and
    the count), in float64 whatever ``dtype`` (see :class:`SyncBatchNormFunction`). Backward:
    one all-reduce of ``2C`` values (``sum(dy)`` and ``sum(dy * x_hat)``) in the compute dtype
    (float32 for float16/bfloat16 activations, else ``dtype``). These are the sizes of the
    buffers. A ring all-reduce over ``P`` processes sends (and receives) about
    ``2 (P - 1) / P`` times the buffer per process, in ``2 (P - 1)`` sequential steps; for
    buffers this small the time is the latency of those steps, not the bytes.

    Parameters
    ----------
    num_channels : int
        ``C``, the layer's number of channels.
    dtype : torch.dtype
        The activations' dtype.
    world_size : int, optional
        ``P``; if given, the result adds the bytes a ring all-reduce sends per process.

    Returns
    -------
    dict
        ``forward_elements`` (2C + 1), ``forward_bytes``, ``forward_dtype``,
        ``backward_elements`` (2C), ``backward_bytes``, ``backward_dtype``, ``total_elements``,
        ``total_bytes``, ``all_reduce_calls`` (2: one forward, one backward); with
        ``world_size`` also ``ring_factor`` (``2 (P - 1) / P``) and
        ``ring_bytes_sent_per_process`` (``ring_factor * total_bytes``).
    """
    channels = int(num_channels)
    if channels < 1:
        raise ValueError(f"num_channels must be positive, got {num_channels!r}")
    forward_dtype, backward_dtype = STATISTICS_DTYPE, _compute_dtype(dtype)
    forward, backward = 2 * channels + 1, 2 * channels
    forward_bytes = forward * torch.empty((), dtype=forward_dtype).element_size()
    backward_bytes = backward * torch.empty((), dtype=backward_dtype).element_size()
    result = {
        "forward_elements": forward, "forward_bytes": forward_bytes,
        "forward_dtype": str(forward_dtype).replace("torch.", ""),
        "backward_elements": backward, "backward_bytes": backward_bytes,
        "backward_dtype": str(backward_dtype).replace("torch.", ""),
        "total_elements": forward + backward, "total_bytes": forward_bytes + backward_bytes,
        "all_reduce_calls": 2,
    }
    if world_size is not None:
        processes = int(world_size)
        if processes < 1:
            raise ValueError(f"world_size must be positive, got {world_size!r}")
        result["ring_factor"] = 2.0 * (processes - 1) / processes
        result["ring_bytes_sent_per_process"] = result["ring_factor"] * result["total_bytes"]
    return result


# ------------------------------------------------------------------------------ workers

def _shard(array, counts, rank):
    """Rows ``[sum(counts[:rank]), sum(counts[:rank + 1]))`` of ``array`` (the rank's shard)."""
    start = int(sum(counts[:rank]))
    return array[start:start + int(counts[rank])]


def _counts(per_device_batch, world_size: int) -> list[int]:
    """Per-rank batch sizes from an int (equal shards) or a sequence of ``world_size`` ints."""
    if isinstance(per_device_batch, (int, np.integer)):
        counts = [int(per_device_batch)] * world_size
    else:
        counts = [int(n) for n in per_device_batch]
    if len(counts) != world_size or min(counts) < 0 or sum(counts) < 1:
        raise ValueError(f"per_device_batch must be a positive int or {world_size} sizes >= 0, "
                         f"got {per_device_batch!r}")
    return counts


def _channel_stats(x: torch.Tensor):
    """Per-channel mean and biased variance of x (N, C, *spatial): two tensors of shape (C,)."""
    dims, _ = _layout(x)
    return x.mean(dim=dims), x.var(dim=dims, unbiased=False)


def local_bn_worker(rank: int, world_size: int, x, counts, momentum: float = 0.1) -> dict:
    """One process of :func:`demo_local_statistics`: plain ``nn.BatchNorm2d`` on its shard.

    ``x`` (NumPy, (M_batch, C, H, W)) is the global batch; the rank takes rows
    ``counts[:rank].sum()`` onwards, ``counts[rank]`` of them. Returns lists: ``batch_mean``,
    ``batch_var`` (biased) (C,), ``out`` (shard shape), ``running_mean``, ``running_var`` (C,).
    """
    shard = torch.from_numpy(np.ascontiguousarray(_shard(np.asarray(x), counts, rank)))
    layer = nn.BatchNorm2d(shard.shape[1], momentum=momentum).to(shard.dtype).train()
    with torch.no_grad():
        out = layer(shard)
    mean, var = _channel_stats(shard)
    return {"batch_mean": mean, "batch_var": var, "out": out,
            "running_mean": layer.running_mean, "running_var": layer.running_var}


def sync_bn_worker(rank: int, world_size: int, cases) -> dict:
    """One process of a synchronized-BN comparison: :class:`SyncBatchNorm` on its shards.

    ``cases`` is a list of dicts, each the global data of one comparison: ``x`` (M_batch, C, ...)
    and ``dy`` (same shape) NumPy arrays, ``weight`` and ``bias`` (C,), ``counts`` (the per-rank
    batch sizes, summing to M_batch), ``eps`` and ``momentum``. For each case the rank builds a
    layer with that weight and bias, runs one training step on its shard (forward, backward
    with its shard of ``dy``) and returns, as lists: ``out`` and ``dx`` (shard shape),
    ``dgamma`` and ``dbeta`` (C,) (its local sums), ``running_mean``, ``running_var`` (C,),
    ``num_batches_tracked``.
    """
    results = []
    for case in cases:
        x = torch.from_numpy(np.ascontiguousarray(_shard(np.asarray(case["x"]), case["counts"], rank)))
        dy = torch.from_numpy(np.ascontiguousarray(_shard(np.asarray(case["dy"]), case["counts"], rank)))
        layer = SyncBatchNorm(x.shape[1], eps=case["eps"], momentum=case["momentum"]).to(x.dtype).train()
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.asarray(case["weight"])))
            layer.bias.copy_(torch.from_numpy(np.asarray(case["bias"])))
        x.requires_grad_(True)
        out = layer(x)
        out.backward(dy)
        results.append({"out": out, "dx": x.grad, "dgamma": layer.weight.grad, "dbeta": layer.bias.grad,
                        "running_mean": layer.running_mean, "running_var": layer.running_var,
                        "num_batches_tracked": int(layer.num_batches_tracked.item())})
    return {"rank": rank, "cases": results}


def _tiny_model(dtype=torch.float64) -> nn.Module:
    """conv(3 -> 4, 3x3) + BN + ReLU + global average pool + linear(4 -> 2); input (N, 3, H, W)."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).to(dtype)


def _buffer_sync_keyword() -> str:
    """DDP's keyword for syncing buffers before each forward (``broadcast_buffers`` before torch 2.13)."""
    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"


def ddp_buffers_worker(rank: int, world_size: int, seed: int = 0, steps: int = 3,
                       batch: int = 8, lr: float = 0.1) -> dict:
    """One process of :func:`demo_ddp_buffers`: DDP training of a tiny conv + BN model.

    For each setting of DDP's buffer sync (True, then False) the rank builds the same model
    (seed ``seed``), wraps it in ``DistributedDataParallel`` and runs ``steps`` SGD steps on
    batches (batch, 3, 6, 6) of its own (shifted by ``rank``: the shards are not alike), then
    one forward in eval mode. Returns, per setting (keys ``"True"``, ``"False"``), lists:
    ``batch_means`` (steps, C) (the mean of the BN input of each step, recorded by a hook),
    ``running_mean`` (C,) after the steps and ``running_mean_after_next_forward`` (C,)
    after the eval forward; and ``keyword``, the DDP argument used.
    """
    keyword = _buffer_sync_keyword()
    outcome = {"keyword": keyword}
    for sync in (True, False):
        torch.manual_seed(seed)
        model = _tiny_model()
        bn = model[1]
        means = []
        hook = bn.register_forward_pre_hook(
            lambda module, inputs: means.append(_channel_stats(inputs[0].detach())[0]) if module.training else None)
        ddp = nn.parallel.DistributedDataParallel(model, **{keyword: sync})
        optimizer = torch.optim.SGD(ddp.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(1000 * seed + 7 * rank + 1)
        for _ in range(steps):
            x = torch.randn(batch, 3, 6, 6, generator=generator, dtype=torch.float64) + rank
            target = torch.randn(batch, 2, generator=generator, dtype=torch.float64)
            optimizer.zero_grad()
            loss = ((ddp(x) - target) ** 2).mean()
            loss.backward()
            optimizer.step()
        after_training = bn.running_mean.clone()
        ddp.eval()
        with torch.no_grad():
            ddp(torch.randn(batch, 3, 6, 6, generator=generator, dtype=torch.float64))
        hook.remove()
        outcome[str(sync)] = {"batch_means": torch.stack(means), "running_mean": after_training,
                              "running_mean_after_next_forward": bn.running_mean.clone()}
    return outcome


# ------------------------------------------------------------------------------ demos (parent side)

def _max_abs(a, b) -> float:
    """max |a - b| over all entries (float64)."""
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _max_rel(a, b) -> float:
    """max |a - b| relative to max |b| (norm-wise: entries near zero do not blow it up)."""
    scale = float(np.max(np.abs(np.asarray(b, dtype=np.float64))))
    return _max_abs(a, b) / scale if scale > 0 else _max_abs(a, b)


def _bn_layer(dim: int, channels: int) -> nn.Module:
    """PyTorch's BN layer for inputs of ``dim`` dimensions (2 or 3: 1d, 4: 2d, 5: 3d)."""
    kinds = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
    return kinds[dim](channels)


def _activations(generator, shape, dtype) -> torch.Tensor:
    """Random activations of ``shape`` (N, C, ...) with per-channel offsets (-1 to 2) and scales (0.5 to 2)."""
    channels = shape[1]
    view = (1, channels) + (1,) * (len(shape) - 2)
    shift = torch.linspace(-1.0, 2.0, channels, dtype=torch.float64).view(view)
    scale = torch.linspace(0.5, 2.0, channels, dtype=torch.float64).view(view)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale + shift).to(dtype)


def demo_local_statistics(seed: int = 0, per_device_batch: int = 8, channels: int = 4, size: int = 6) -> dict:
    """Two processes, each with plain ``nn.BatchNorm2d`` (training mode) on its half of one batch.

    The global batch x has shape (2 * per_device_batch, channels, size, size) (float64, random,
    per-channel offsets and scales); rank ``r`` gets rows ``r * per_device_batch`` onwards.
    Single-process BN over the whole batch is computed here, independently of the workers.

    Returns
    -------
    dict
        ``rank_mean``, ``rank_var`` (biased): per rank, lists of C (its batch statistics);
        ``global_mean``, ``global_var`` (biased): lists of C, over the whole batch;
        ``max_abs_diff_output``: max |concatenated per-rank outputs - output of BN on the
        global batch| (nonzero: each rank normalized with its own statistics);
        ``rank_running_mean``: per rank, list of C after the one step (they differ);
        ``global_running_mean``: that of BN on the global batch; ``world_size``,
        ``per_device_batch``; ``seconds``: wall time.
    """
    started = time.perf_counter()
    world_size = 2
    counts = _counts(per_device_batch, world_size)
    x = _activations(torch.Generator().manual_seed(seed), (sum(counts), channels, size, size), torch.float64)
    ranks = run_workers(local_bn_worker, world_size, args=(x.numpy(), counts, 0.1))
    reference = nn.BatchNorm2d(channels).double().train()
    with torch.no_grad():
        out_global = reference(x)
    out_local = np.concatenate([np.asarray(r["out"]) for r in ranks])
    mean, var = _channel_stats(x)
    return {
        "rank_mean": [r["batch_mean"] for r in ranks], "rank_var": [r["batch_var"] for r in ranks],
        "global_mean": mean.tolist(), "global_var": var.tolist(),
        "max_abs_diff_output": _max_abs(out_local, out_global.numpy()),
        "rank_running_mean": [r["running_mean"] for r in ranks],
        "global_running_mean": reference.running_mean.tolist(),
        "world_size": world_size, "per_device_batch": counts,
        "seconds": time.perf_counter() - started,
    }


def _sync_case(generator, counts, channels, size, dtype) -> dict:
    """The global data of one comparison: x and dy (M_batch, C[, size, size]), weight and bias (C,)."""
    shape = (sum(counts), channels) if size is None else (sum(counts), channels, size, size)
    numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype
    return {
        "x": _activations(generator, shape, dtype).numpy(),
        "dy": torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype).numpy(),
        "weight": (1.0 + 0.5 * torch.randn(channels, generator=generator, dtype=torch.float64)).numpy().astype(numpy_dtype),
        "bias": torch.randn(channels, generator=generator, dtype=torch.float64).numpy().astype(numpy_dtype),
        "counts": list(counts), "eps": 1e-5, "momentum": 0.1,
    }


def _global_reference(case) -> dict:
    """PyTorch's BN in this process on the concatenated batch: out, dx, dgamma, dbeta, running stats."""
    x = torch.from_numpy(case["x"]).clone().requires_grad_(True)
    layer = _bn_layer(x.dim(), x.shape[1]).to(x.dtype).train()
    layer.eps, layer.momentum = case["eps"], case["momentum"]
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(case["weight"]))
        layer.bias.copy_(torch.from_numpy(case["bias"]))
    out = layer(x)
    out.backward(torch.from_numpy(case["dy"]))
    return {"out": out.detach().numpy(), "dx": x.grad.numpy(), "dgamma": layer.weight.grad.numpy(),
            "dbeta": layer.bias.grad.numpy(), "running_mean": layer.running_mean.numpy(),
            "running_var": layer.running_var.numpy()}


def demo_sync_matches_global(seed: int = 0, per_device_batch=4, channels: int = 3, size: int | None = 5,
                             dtype: torch.dtype = torch.float64) -> dict:
    """Synchronized BN on two processes against single-process BN on the concatenated batch.

    Each rank applies :class:`SyncBatchNorm` to its shard of a global batch x
    (M_batch, channels, size, size), or (M_batch, channels) for ``size=None``, and
    back-propagates its shard of a random upstream gradient. Outputs and input gradients are
    concatenated over the ranks, ``dgamma`` and ``dbeta`` summed over the ranks, the running
    statistics are rank 0's. The reference is PyTorch's BN (``nn.BatchNorm2d``, or ``1d`` for
    (N, C)) in this process: forward and autograd backward on the whole batch, same weight,
    bias and upstream gradient.

    Parameters
    ----------
    per_device_batch : int or sequence of two ints
        The per-rank batch sizes (unequal sizes are allowed: the counts are all-reduced).
    dtype : torch.dtype
        float64 by default: the differences are then of the order of 1e-15.

    Returns
    -------
    dict
        ``max_abs_diff`` and ``max_rel_diff`` (max |a - b| / max |b|): dicts of floats over
        ``out``, ``dx``, ``dgamma``, ``dbeta``, ``running_mean``, ``running_var``;
        ``equal_running_stats_on_ranks`` (every rank holds the same running statistics, bit for
        bit); ``world_size``, ``per_device_batch`` (list of the two sizes), ``dtype``,
        ``input_shape`` (of the global batch); ``seconds``: wall time.
    """
    started = time.perf_counter()
    world_size = 2
    counts = _counts(per_device_batch, world_size)
    case = _sync_case(torch.Generator().manual_seed(seed), counts, channels, size, dtype)
    ranks = run_workers(sync_bn_worker, world_size, args=([case],))
    got = [r["cases"][0] for r in ranks]
    shape = case["x"].shape[1:]
    combined = {
        "out": np.concatenate([np.asarray(g["out"]).reshape(-1, *shape) for g in got]),
        "dx": np.concatenate([np.asarray(g["dx"]).reshape(-1, *shape) for g in got]),
        "dgamma": np.sum([g["dgamma"] for g in got], axis=0),
        "dbeta": np.sum([g["dbeta"] for g in got], axis=0),
        "running_mean": np.asarray(got[0]["running_mean"]), "running_var": np.asarray(got[0]["running_var"]),
    }
    reference = _global_reference(case)
    return {
        "max_abs_diff": {key: _max_abs(combined[key], reference[key]) for key in combined},
        "max_rel_diff": {key: _max_rel(combined[key], reference[key]) for key in combined},
        "equal_running_stats_on_ranks": all(g["running_mean"] == got[0]["running_mean"]
                                            and g["running_var"] == got[0]["running_var"] for g in got),
        "world_size": world_size, "per_device_batch": counts, "dtype": str(dtype).replace("torch.", ""),
        "input_shape": list(case["x"].shape),
        "seconds": time.perf_counter() - started,
    }


def demo_ddp_buffers(seed: int = 0, steps: int = 3) -> dict:
    """What ``DistributedDataParallel`` does with BN's running statistics, on two processes.

    DDP averages the *gradients* of the processes; BN's running statistics are buffers, not
    gradients. What DDP does with them (torch 2.13, ``torch/nn/parallel/distributed.py``):
    with buffer sync on (``broadcast_buffers=True``, the default; the same switch is called
    ``forward_sync_buffers`` from torch 2.13, which deprecates the old name), ``_pre_forward``
    calls ``_sync_buffers`` at the *start* of a forward, which broadcasts rank 0's buffers to
    every rank (``authoritative_rank = 0``, unless uneven inputs are joined). It does so
    whenever the *previous* forward ran with gradients enabled (``require_forward_param_sync``:
    the first forward, every forward of ordinary training, and the first forward after it even
    in eval mode under ``no_grad``; not the second of two ``no_grad`` forwards, not inside
    ``no_sync()``). The forward then updates each rank's copy with its own local batch. So:

    - rank 0's running statistics are the moving average of rank 0's local batches alone
      (it is the source of every broadcast): neither global nor an average over the ranks;
    - right after the last training step the other ranks differ from rank 0: they hold rank
      0's buffers from before that step, moved by ``momentum`` towards their own last batch;
    - at the next forward (evaluation, say) every rank receives rank 0's buffers again, so
      all evaluate with rank 0's statistics, bit for bit; a checkpoint from rank 0 holds them.

    With buffer sync off each rank keeps the moving average of its own batches. (The models
    start equal either way: same seed; ``broadcast_buffers=False`` would also skip the
    broadcast at construction, ``forward_sync_buffers=False`` does not.) Only synchronized BN
    gives running statistics of the global batch.

    Each rank trains the tiny model of :func:`ddp_buffers_worker` (conv + BN + ...) for
    ``steps`` SGD steps on batches of its own (rank 1's inputs shifted by +1), then runs one
    forward in eval mode under ``no_grad``. The workers also record each step's BN-input mean;
    this function recomputes the moving averages from them (``m <- 0.9 m + 0.1 mean`` from 0).

    Returns
    -------
    dict
        ``running_mean``: ``{"True": [rank 0's, rank 1's], "False": [...]}``, lists of C, the
        BN layer's running mean as the next forward sees it (read after the eval forward,
        which with sync on began with the broadcast): equal across ranks for ``"True"``,
        different for ``"False"``; ``running_mean_after_steps``: the same right after the
        last training step (the ranks differ in both settings); ``rank_local_ema`` (per
        setting, per rank, from its own batch means) and ``global_ema`` (from the
        global-batch means: the running mean synchronized BN would have); ``checks``: max
        differences of the behaviour described above (rounding-sized, except those named
        "difference" or "vs global"); ``keyword``: the DDP argument used; ``world_size``,
        ``steps``; ``seconds``: wall time.
    """
    started = time.perf_counter()
    world_size, momentum = 2, 0.1
    ranks = run_workers(ddp_buffers_worker, world_size, args=(seed, steps))

    def ema(means):
        value, history = np.zeros(np.asarray(means).shape[1:]), []
        for mean in np.asarray(means):
            value = (1 - momentum) * value + momentum * mean
            history.append(value)
        return np.asarray(history)

    result = {"running_mean": {}, "running_mean_after_steps": {}, "rank_local_ema": {}, "global_ema": {}}
    checks = {}
    for sync in ("True", "False"):
        runs = [r[sync] for r in ranks]
        local = [ema(run["batch_means"]) for run in runs]
        after = [np.asarray(run["running_mean"]) for run in runs]
        nxt = [np.asarray(run["running_mean_after_next_forward"]) for run in runs]
        global_ema = ema(np.mean([run["batch_means"] for run in runs], axis=0))  # equal shard sizes
        result["running_mean"][sync] = [run["running_mean_after_next_forward"] for run in runs]
        result["running_mean_after_steps"][sync] = [run["running_mean"] for run in runs]
        result["rank_local_ema"][sync] = [h[-1].tolist() for h in local]
        result["global_ema"][sync] = global_ema[-1].tolist()
        if sync == "True":
            before_last = local[0][-2] if steps > 1 else np.zeros_like(local[0][-1])
            predicted = [(1 - momentum) * before_last + momentum * np.asarray(run["batch_means"])[-1]
                         for run in runs]
            checks["sync: rank 0 vs its local EMA"] = _max_abs(after[0], local[0][-1])
            checks["sync: after the steps, ranks vs rank 0's previous buffers + own last batch"] = max(
                _max_abs(a, p) for a, p in zip(after, predicted))
            checks["sync: after the steps, difference between ranks"] = _max_abs(after[0], after[1])
            checks["sync: next forward, ranks vs rank 0's local EMA"] = max(_max_abs(n, local[0][-1]) for n in nxt)
            checks["sync: next forward, difference between ranks"] = _max_abs(nxt[0], nxt[1])
            checks["sync: rank 0 vs global EMA"] = _max_abs(after[0], global_ema[-1])
        else:
            checks["no sync: ranks vs their own local EMA"] = max(_max_abs(a, h[-1]) for a, h in zip(after, local))
            checks["no sync: next forward changes nothing"] = max(_max_abs(a, n) for a, n in zip(after, nxt))
            checks["no sync: next forward, difference between ranks"] = _max_abs(nxt[0], nxt[1])
    result.update(checks=checks, keyword=ranks[0]["keyword"], world_size=world_size, steps=steps,
                  seconds=time.perf_counter() - started)
    return result
