"""Device selection, seeding and provenance for the experiments.

``select_device("auto")`` picks CUDA, then Apple's MPS, then the CPU. ``device_info`` describes
the machine a result was measured on (no host name): the device, its name, the versions of
torch, CUDA and cuDNN, and the CPU threads; ``provenance`` adds the date and the load of the
machine so that a recorded number can be judged later.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def cuda_available() -> bool:
    """Whether a CUDA device can be used (a separate function so tests can replace it)."""
    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    """Whether Apple's Metal (MPS) backend can be used."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(requested: str | torch.device = "auto") -> torch.device:
    """The device to run on.

    Parameters
    ----------
    requested : str or torch.device
        ``"auto"`` (CUDA if available, else MPS, else CPU), or an explicit ``"cuda"``,
        ``"cuda:1"``, ``"mps"``, ``"cpu"`` or a ``torch.device``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If an explicitly requested accelerator is not available or the name is unknown.
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    name = str(requested).strip().lower()
    if name == "auto":
        if cuda_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES[1:]:
        raise ValueError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind == "cuda" and not cuda_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False "
                         f"(this torch is {torch.__version__}); use --device cpu or auto")
    if kind == "mps" and not mps_available():
        raise ValueError("device 'mps' requested but the MPS backend is not available; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_name() -> str:
    """The CPU model, read from /proc/cpuinfo where available."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_info(device: torch.device | str) -> dict:
    """What a measurement on ``device`` depends on; no host name or user name.

    Returns
    -------
    dict
        ``device`` (``"cuda"``, ``"mps"`` or ``"cpu"``), ``device_name``, ``torch``,
        ``cuda`` (the CUDA runtime torch was built with, only when the device is CUDA, else
        None), ``cudnn`` (likewise), ``cpu``, ``cpu_count``, ``torch_threads``, ``python``,
        ``numpy``, ``platform``.
    """
    device = torch.device(device)
    info = {
        "device": device.type,
        "device_name": None,
        "torch": torch.__version__,
        "cuda": None,
        "cudnn": None,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": f"{platform.system()}-{platform.machine()}",
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["device_name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    elif device.type == "mps":
        info["device_name"] = f"Apple MPS ({platform.machine()})"
    else:
        info["device_name"] = info["cpu"]
    return info


def git_revision(root: Path = PROJECT_ROOT) -> str | None:
    """The commit of the working tree (with ``-dirty`` when it has changes), or None."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes slow CPU timings down)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def provenance(device: torch.device | str, wall_time_s: float | None = None, **extra) -> dict:
    """``device_info`` plus the date (UTC, ISO 8601), wall time, git revision and load average."""
    info = device_info(device)
    info.update({
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 2),
        "git": git_revision(),
        "load_average": load_average(),
    })
    info.update(extra)
    return info


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on an accelerator, so that timings measure the work itself."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
